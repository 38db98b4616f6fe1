package mediator

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/challenge"
	fnet "github.com/fincrypt/fincrypt/net"
)

// lookupFailingStore is a Store whose piece lookups fail.
type lookupFailingStore struct {
	Store
	err error
}

func (s lookupFailingStore) LookupPiece(context.Context, fnet.NodeID, challenge.PieceID) (PieceRef, bool, error) {
	return PieceRef{}, false, s.err
}

// TestAssignReturnsStoreError: a store error while matching pieces to
// nodes is the placement's error, not taken for "this node holds the
// piece" (which would report too few nodes).
func TestAssignReturnsStoreError(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	p, err := New(log, nil, Config{Dir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	boom := errors.New("lookup failed")
	orig := p.core.store
	p.core.store = lookupFailingStore{Store: orig, err: boom}
	defer func() { p.core.store = orig }()
	cand := []*Node{{ID: fnet.NodeID{1}}, {ID: fnet.NodeID{2}}}
	got, err := p.core.assign(context.Background(), cand, []challenge.PieceID{{1}, {2}})
	if !errors.Is(err, boom) {
		t.Fatalf("assign with a failing store: %v, %v; want the store's error", got, err)
	}
}

// repriceFailingStore is a Store whose NodePieces or PutNode fail.
type repriceFailingStore struct {
	Store
	pieces, put error
}

func (s repriceFailingStore) NodePieces(ctx context.Context, node fnet.NodeID, fn func(PieceRef) error) error {
	if s.pieces != nil {
		return s.pieces
	}
	return s.Store.NodePieces(ctx, node, fn)
}

func (s repriceFailingStore) PutNode(ctx context.Context, n *Node) error {
	if s.put != nil {
		return s.put
	}
	return s.Store.PutNode(ctx, n)
}

// TestRepriceReturnsStoreErrors: a price cut whose repricing fails, and a
// price notice whose end cannot be stored, return the store's error
// rather than reporting the new price applied.
func TestRepriceReturnsStoreErrors(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	p, err := New(log, nil, Config{Dir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()
	orig := p.core.store
	defer func() { p.core.store = orig }()
	now := time.Now()
	boom := errors.New("store failed")

	p.core.store = repriceFailingStore{Store: orig, pieces: boom}
	p.core.mu.Lock()
	err = p.core.notePrice(ctx, &Node{ID: fnet.NodeID{1}}, 10, 5, false, now)
	p.core.mu.Unlock()
	if !errors.Is(err, boom) {
		t.Fatalf("a price cut whose repricing failed: %v, want the store's error", err)
	}

	n := &Node{ID: fnet.NodeID{2}, Price: 10, RepriceAt: now.Add(-time.Minute)}
	if err := orig.PutNode(ctx, n); err != nil {
		t.Fatal(err)
	}
	p.core.store = repriceFailingStore{Store: orig, put: boom}
	if err := p.core.applyReprice(ctx, n.ID, now); !errors.Is(err, boom) {
		t.Fatalf("a price notice's end not stored: %v, want the store's error", err)
	}
}
