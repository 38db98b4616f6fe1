package storagenode

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/challenge"
	fnet "github.com/fincrypt/fincrypt/net"
	"github.com/quic-go/quic-go"
)

// liveMediator answers live-piece requests over real QUIC with what
// answer returns (a lying mediator may answer with fewer entries).
func liveMediator(t *testing.T, answer func(req *fnet.LiveRequest) fnet.Message) *Contact {
	t.Helper()
	medID, _ := fnet.GenerateIdentity()
	self, _ := fnet.GenerateIdentity()
	tr, err := fnet.Listen(medID, "127.0.0.1:0", fnet.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tr.Serve(ctx, fnet.HandlerFunc(func(ctx context.Context, peer fnet.NodeID, s *quic.Stream) {
			m, err := fnet.ReadMessage(s)
			if err != nil {
				return
			}
			fnet.WriteMessage(s, answer(m.(*fnet.LiveRequest)))
		}))
	}()
	t.Cleanup(func() { cancel(); tr.Close(); <-done })
	d, err := fnet.NewDialer(self, fnet.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	dctx, dcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer dcancel()
	conn, err := d.Dial(dctx, tr.Address())
	if err != nil {
		t.Fatal(err)
	}
	return &Contact{log: quiet, mediator: tr.Address(), conn: conn, ok: true, timeout: 20 * time.Second}
}

// Orphans: a piece the mediator does not call live is marked, kept for the
// whole grace period to the nanosecond, deleted after it, and unmarked if
// it is live again; a reply that does not answer for every piece asked
// about (a lying or broken mediator) changes nothing.
func TestCollectorGraceAndBadReplies(t *testing.T) {
	s, ids := scrubStore(t, t.TempDir(), 1000, 2000, 3000)
	defer s.Close()
	var mu sync.Mutex
	live := map[challenge.PieceID]bool{ids[0]: true}
	short := false
	c := liveMediator(t, func(req *fnet.LiveRequest) fnet.Message {
		mu.Lock()
		defer mu.Unlock()
		rep := &fnet.LiveReply{Live: make([]bool, len(req.Pieces))}
		for i, p := range req.Pieces {
			rep.Live[i] = live[p]
		}
		if short {
			rep.Live = rep.Live[1:]
		}
		return rep
	})
	g := newCollector(quiet, s, c)
	t0 := time.Unix(1_000_000, 0)
	g.now = func() time.Time { return t0 }
	const grace = time.Hour
	ctx := context.Background()
	if n, err := g.Collect(ctx, grace); n != 0 || err != nil {
		t.Fatalf("first pass: %d deleted, %v", n, err)
	}
	for i, id := range ids {
		info, err := s.Stat(id)
		if err != nil || info.OrphanedAt.IsZero() != (i == 0) || (i > 0 && !info.OrphanedAt.Equal(t0)) {
			t.Fatalf("piece %d after the first pass: %+v %v", i, info, err)
		}
	}
	// ids[1] is live again; ids[2] stays orphaned.
	mu.Lock()
	live[ids[1]] = true
	short = true
	mu.Unlock()
	g.now = func() time.Time { return t0.Add(2 * grace) }
	if n, err := g.Collect(ctx, grace); n != 0 || !errors.Is(err, fnet.ErrMalformed) {
		t.Fatalf("pass over a reply missing an entry: %d deleted, %v; want none and malformed", n, err)
	}
	for _, id := range ids {
		if _, err := s.Stat(id); err != nil {
			t.Fatalf("a pass over a bad reply deleted a piece: %v", err)
		}
	}
	mu.Lock()
	short = false
	mu.Unlock()
	g.now = func() time.Time { return t0.Add(grace - time.Nanosecond) }
	if n, err := g.Collect(ctx, grace); n != 0 || err != nil {
		t.Fatalf("pass a nanosecond before the grace ends: %d deleted, %v", n, err)
	}
	if info, err := s.Stat(ids[1]); err != nil || !info.OrphanedAt.IsZero() {
		t.Fatalf("a piece live again is still marked orphaned: %+v %v", info, err)
	}
	g.now = func() time.Time { return t0.Add(grace) }
	if n, err := g.Collect(ctx, grace); n != 1 || err != nil {
		t.Fatalf("pass at the end of the grace: %d deleted, %v; want 1", n, err)
	}
	if _, err := s.Stat(ids[2]); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the orphan outlived its grace: %v", err)
	}
	for _, id := range ids[:2] {
		if _, err := s.Stat(id); err != nil {
			t.Fatalf("a live piece was deleted: %v", err)
		}
	}
}
