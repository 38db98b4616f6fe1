package mediator

// Tests of placement.go's Place (docs/TESTING.md, "mediator, eighth
// session").

import (
	"context"
	"testing"

	fnet "github.com/fincrypt/fincrypt/net"
)

// TestPricedPiecesAtMostNMinusK: with enough vetted nodes on distinct
// subnets, price chooses N-K pieces of a segment and the rest go to nodes
// drawn at random: five operators who undercut everyone get at least N-K
// pieces of every segment, but not all N of every one (docs/SECURITY.md).
func TestPricedPiecesAtMostNMinusK(t *testing.T) {
	prices := []uint64{1, 1, 1, 1, 1, 1000, 1000, 1000, 1000, 1000}
	w := newWorld(t, len(prices), prices...)
	w.c.rng = newLockedRand(7)
	ctx := context.Background()
	nodes, err := w.store.ListNodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cheap := map[string]bool{}
	for _, n := range nodes {
		n.Passed = w.c.cfg.Placement.VettingChallenges // vetted
		if err := w.store.PutNode(ctx, n); err != nil {
			t.Fatal(err)
		}
		if n.Price == 1 {
			cheap[n.ID.String()] = true
		}
	}
	s := w.c.cfg.Scheme
	acct := w.account()
	allCheap := 0
	const placements = 20
	for range placements {
		pl, err := w.c.Place(ctx, acct, &fnet.PlacementRequest{PieceSize: 1000, Pieces: distinctIDs(s.N)})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, tg := range pl.Targets {
			if cheap[tg.Ticket.Node.String()] {
				n++
			}
		}
		if n < s.N-s.K {
			t.Fatalf("placement with %d pieces on the cheapest nodes, want at least N-K = %d", n, s.N-s.K)
		}
		if n == s.N {
			allCheap++
		}
		if err := w.c.Release(ctx, acct, SegmentID(pl.Segment)); err != nil {
			t.Fatal(err)
		}
	}
	if allCheap == placements {
		t.Fatalf("all %d placements put every piece on the five cheapest nodes: price chose more than N-K pieces", placements)
	}
}
