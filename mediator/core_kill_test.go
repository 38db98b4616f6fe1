package mediator

import (
	"errors"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/challenge"
	fnet "github.com/fincrypt/fincrypt/net"
)

// TestGoneExactlyAtOfflineAfter: a node silent for exactly OfflineAfter
// (counted from the later of its last heartbeat and the mediator's
// start) is not gone yet; a nanosecond later it is.
func TestGoneExactlyAtOfflineAfter(t *testing.T) {
	w := newWorld(t, 0)
	seen := w.now().Add(time.Hour) // after the start: counts from here
	n := &Node{LastSeen: seen}
	if w.c.gone(n, seen.Add(w.c.cfg.OfflineAfter)) {
		t.Error("gone exactly OfflineAfter after its last heartbeat")
	}
	if !w.c.gone(n, seen.Add(w.c.cfg.OfflineAfter+1)) {
		t.Error("not gone past OfflineAfter")
	}
}

// TestReservationBudget: the escrow budget bounds only the cost of an
// account's further uncommitted placements. The first is always taken
// (n == 0), whatever its cost; with one pending, a second whose total
// cost passes the budget is refused, even for a budget of 0; no budget
// (-1) refuses nothing.
func TestReservationBudget(t *testing.T) {
	w := newWorld(t, 0)
	acct := w.account()
	r := reservation{account: acct, size: 10, expires: w.now().Add(time.Hour), cost: 50}
	seg := func(b byte) SegmentID { return SegmentID{b} }
	if err := w.c.reserve(seg(1), r, 10); err != nil {
		t.Fatalf("first placement, cost above the budget: %v", err)
	}
	if err := w.c.reserve(seg(2), r, 0); !errors.Is(err, ErrAccountQuota) {
		t.Fatalf("second placement with a budget of 0: %v", err)
	}
	if err := w.c.reserve(seg(2), r, 99); !errors.Is(err, ErrAccountQuota) {
		t.Fatalf("second placement costing 100 of 99: %v", err)
	}
	if err := w.c.reserve(seg(2), r, 100); err != nil {
		t.Fatalf("second placement costing 100 of 100: %v", err)
	}
	if err := w.c.reserve(seg(3), r, -1); err != nil {
		t.Fatalf("no budget: %v", err)
	}
}

// TestReservationWithFewerPiecesThanNodes: a reservation may name fewer
// piece ids than nodes (records written before the ids were kept): it
// is reserved, looked up and dropped without reading past its pieces,
// and it holds a piece only on the node at that piece's index.
func TestReservationWithFewerPiecesThanNodes(t *testing.T) {
	w := newWorld(t, 0)
	a, b := fnet.NodeID{1}, fnet.NodeID{2}
	p1, p2 := challenge.PieceID{1}, challenge.PieceID{2}
	r := reservation{account: w.account(), nodes: []fnet.NodeID{a, b}, pieces: []challenge.PieceID{p1},
		size: 1, expires: w.now().Add(time.Hour)}
	if err := w.c.reserve(SegmentID{1}, r, -1); err != nil {
		t.Fatal(err)
	}
	if !r.holds(a, p1) || r.holds(b, p1) || r.holds(b, p2) || r.holds(a, p2) {
		t.Error("holds: want only node a with piece 1")
	}
	if !w.c.reservedPiece(a, p1, SegmentID{9}) || w.c.reservedPiece(b, p1, SegmentID{9}) {
		t.Error("reservedPiece: want only node a with piece 1")
	}
	w.c.unreserve(SegmentID{1})
	if w.c.reservedPiece(a, p1, SegmentID{9}) {
		t.Error("piece still reserved after unreserve")
	}
	full := reservation{account: w.account(), nodes: []fnet.NodeID{a, b}, pieces: []challenge.PieceID{p1, p2}}
	if !full.holds(b, p2) || full.holds(a, p2) || full.holds(b, p1) {
		t.Error("holds with every piece: want piece i on node i only")
	}
}
