package storagenode

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	fnet "github.com/fincrypt/fincrypt/net"
)

// An orphaned piece uploaded again (a repair or a client placing the same
// piece on this node) is wanted again: the upload is acknowledged as
// "already held", so the piece must not be deleted by a collection pass
// whose answer from the mediator predates the new placement, and its
// orphan mark goes (the grace starts over). The old collector deleted it
// from the stale answer: a piece lost right after its upload was
// acknowledged.
func TestCollectorKeepsAPieceUploadedAgain(t *testing.T) {
	s, ids := scrubStore(t, t.TempDir(), 1000, 2000)
	defer s.Close()
	data, id := randPiece(t, 100, 1000) // scrubStore's first piece
	if id != ids[0] {
		t.Fatal("test setup: not scrubStore's piece")
	}
	var mu sync.Mutex
	var during func()
	c := liveMediator(t, func(req *fnet.LiveRequest) fnet.Message {
		mu.Lock()
		f := during
		mu.Unlock()
		if f != nil {
			f() // the upload lands while the answer is on its way
		}
		return &fnet.LiveReply{Live: make([]bool, len(req.Pieces))} // none live
	})
	g := newCollector(quiet, s, c)
	t0 := time.Unix(1_000_000, 0)
	g.now = func() time.Time { return t0 }
	const grace = time.Hour
	ctx := context.Background()
	if n, err := g.Collect(ctx, grace); n != 0 || err != nil {
		t.Fatalf("first pass: %d deleted, %v", n, err)
	}
	for _, id := range ids {
		if info, err := s.Stat(id); err != nil || !info.OrphanedAt.Equal(t0) {
			t.Fatalf("after the first pass: %+v %v, want orphaned", info, err)
		}
	}
	var putErr error
	mu.Lock()
	during = func() {
		putErr = s.Put(ctx, id, 1000, fnet.AccountID{5}, bytes.NewReader(data))
	}
	mu.Unlock()
	g.now = func() time.Time { return t0.Add(2 * grace) }
	n, err := g.Collect(ctx, grace)
	if putErr != nil {
		t.Fatalf("the upload of a held piece: %v", putErr)
	}
	if err != nil || n != 1 {
		t.Fatalf("pass after the grace: %d deleted, %v; want 1 (the piece not uploaded again)", n, err)
	}
	info, err := s.Stat(ids[0])
	if err != nil {
		t.Fatalf("a piece whose upload was just acknowledged was collected: %v", err)
	}
	if !info.OrphanedAt.IsZero() {
		t.Fatalf("a piece uploaded again is still marked orphaned since %v", info.OrphanedAt)
	}
	if _, err := s.Stat(ids[1]); err == nil {
		t.Fatal("the orphan not uploaded again outlived its grace")
	}
	if p, err := s.Open(ids[0]); err != nil {
		t.Fatalf("the piece uploaded again: %v", err)
	} else {
		p.Close()
	}
}
