package storagenode

import (
	"context"
	"sync"
	"testing"
	"time"

	fnet "github.com/fincrypt/fincrypt/net"
)

// Run collects only under a policy with both a grace period and a GC
// interval: a mediator that sent no grace (or no interval) gets no live
// list request and nothing is marked or deleted; once it sends both, the
// pieces it does not call live are marked orphaned, and none is deleted
// before the grace ends.
func TestCollectorRunFollowsPolicy(t *testing.T) {
	s, ids := scrubStore(t, t.TempDir(), 1000, 2000)
	defer s.Close()
	var mu sync.Mutex
	asked := 0
	c := liveMediator(t, func(req *fnet.LiveRequest) fnet.Message {
		mu.Lock()
		asked++
		mu.Unlock()
		return &fnet.LiveReply{Live: make([]bool, len(req.Pieces))}
	})
	requests := func() int {
		mu.Lock()
		defer mu.Unlock()
		return asked
	}
	g := newCollector(quiet, s, c)
	// Run reads the policy, then waits (a second while there is no
	// usable policy) before it collects: each run below gets one and a
	// half seconds.
	for _, p := range []fnet.NodePolicy{
		{GracePeriod: 0, GCInterval: 10 * time.Millisecond},
		{GracePeriod: time.Hour, GCInterval: 0},
	} {
		c.setPolicy(p)
		ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
		err := g.Run(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if n := requests(); n != 0 {
			t.Fatalf("policy grace %v, interval %v: %d live list requests, want none", p.GracePeriod, p.GCInterval, n)
		}
		for _, id := range ids {
			if info, err := s.Stat(id); err != nil || !info.OrphanedAt.IsZero() {
				t.Fatalf("policy grace %v, interval %v: piece %+v, %v; want it held, unmarked", p.GracePeriod, p.GCInterval, info, err)
			}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	go func() { done <- g.Run(ctx) }()
	c.setPolicy(fnet.NodePolicy{GracePeriod: time.Hour, GCInterval: 20 * time.Millisecond})
	deadline := time.Now().Add(30 * time.Second)
	for {
		marked := 0
		for _, id := range ids {
			info, err := s.Stat(id)
			if err != nil {
				t.Fatalf("a piece deleted before its grace ended: %v", err)
			}
			if !info.OrphanedAt.IsZero() {
				marked++
			}
		}
		if marked == len(ids) && requests() >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("under a policy: %d of %d pieces marked orphaned after %d requests in 30 s", marked, len(ids), requests())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if used, n := s.Usage(); n != 2 || used != 3000 {
		t.Fatalf("usage %d bytes in %d pieces, want both held", used, n)
	}
}

// Under a usable policy the collector asks the mediator once per GC
// interval, not at the one-second poll it uses while it has no policy: a
// mediator that sets an interval of an hour gets no live list request in
// the first seconds (each request lists every held piece).
func TestCollectorRunWaitsTheGCInterval(t *testing.T) {
	s, _ := scrubStore(t, t.TempDir(), 1000)
	defer s.Close()
	var mu sync.Mutex
	asked := 0
	c := liveMediator(t, func(req *fnet.LiveRequest) fnet.Message {
		mu.Lock()
		asked++
		mu.Unlock()
		return &fnet.LiveReply{Live: make([]bool, len(req.Pieces))}
	})
	c.setPolicy(fnet.NodePolicy{GracePeriod: time.Hour, GCInterval: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 2500*time.Millisecond)
	defer cancel()
	if err := newCollector(quiet, s, c).Run(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if asked != 0 {
		t.Fatalf("GC interval of an hour: %d live list requests in 2.5 s, want none", asked)
	}
}
