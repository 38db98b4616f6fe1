package mediator

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/challenge"
	"github.com/fincrypt/fincrypt/erasure"
	fnet "github.com/fincrypt/fincrypt/net"
)

// TestRepairScanLosesAnOnlineDisqualifiedNodesPieces: the pieces of a
// disqualified node are lost at the next scan even while the node stays
// online (its word is not taken), and rebuilt elsewhere.
func TestRepairScanLosesAnOnlineDisqualifiedNodesPieces(t *testing.T) {
	w := newWorld(t, 7)
	ctx := context.Background()
	id, _ := w.storeSegment(w.account(), 3000)
	bad := w.segment(id).Pieces[0].Node
	n, err := w.store.GetNode(ctx, bad)
	if err != nil {
		t.Fatal(err)
	}
	n.Disqualified = w.now()
	if err := w.store.PutNode(ctx, n); err != nil {
		t.Fatal(err)
	}
	if !w.c.online(n, w.now()) {
		t.Fatal("the node is not online: the test does not test what it says")
	}
	rr, err := w.c.RepairScan(ctx)
	if err != nil || rr.MarkedLost != 1 {
		t.Fatalf("scan: %+v %v, want the disqualified node's piece marked lost", rr, err)
	}
	if p := w.segment(id).Pieces[0]; p.Node == bad && p.State == PieceHealthy {
		t.Fatalf("piece 0 still healthy on the disqualified node: %+v", p)
	}
}

// TestRevivalCountsThePassedChallenges: pieces revived when their node
// returns count as challenges passed on that node, like a round's.
func TestRevivalCountsThePassedChallenges(t *testing.T) {
	w := newWorld(t, 5)
	ctx := context.Background()
	id, _ := w.storeSegment(w.account(), 3000)
	for _, n := range w.mem.nodes {
		n.down = true
	}
	w.advance(w.c.cfg.OfflineAfter + time.Minute)
	if rr, err := w.c.RepairScan(ctx); err != nil || rr.MarkedLost != 5 {
		t.Fatalf("every node gone: %+v %v", rr, err)
	}
	passed := map[fnet.NodeID]uint64{}
	for _, p := range w.segment(id).Pieces {
		w.mem.nodes[p.Node].down = false
		n, err := w.store.GetNode(ctx, p.Node)
		if err != nil {
			t.Fatal(err)
		}
		passed[p.Node] = n.Passed
	}
	w.heartbeat()
	if rr, err := w.c.RepairScan(ctx); err != nil || rr.Revived != 5 {
		t.Fatalf("scan with every node back: %+v %v, want 5 revived", rr, err)
	}
	for node, before := range passed {
		n, err := w.store.GetNode(ctx, node)
		if err != nil {
			t.Fatal(err)
		}
		if n.Passed != before+1 {
			t.Errorf("node %s: %d challenges passed, want %d", node, n.Passed, before+1)
		}
	}
}

// TestRepairWaveRoomAndNodeList: a wave counts each node's in-flight
// claims until each is released (one released leaves the other's bytes),
// and reads the node list again once it is a heartbeat interval old, not
// before.
func TestRepairWaveRoomAndNodeList(t *testing.T) {
	w := newWorld(t, 3)
	ctx := context.Background()
	list, err := w.store.ListNodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wave := newRepairWave(w.c, list, w.now())
	node := list[0].ID
	k1, k2 := nodePiece{node, [32]byte{1}}, nodePiece{node, [32]byte{2}}
	if !wave.claim(k1, 100) || !wave.claim(k2, 100) || wave.claim(k1, 100) {
		t.Fatal("claims: want the first two taken, the same one again refused")
	}
	if got := wave.reserved()[node]; got != 200 {
		t.Fatalf("two claims of 100 bytes: %d reserved", got)
	}
	wave.unclaim(k1, 100)
	if got := wave.reserved()[node]; got != 100 {
		t.Fatalf("one claim released: %d reserved, want 100", got)
	}
	wave.unclaim(k2, 100)
	if got := wave.reserved()[node]; got != 0 {
		t.Fatalf("both released: %d reserved", got)
	}

	w.addNode("10.0.9.1:7000", 100)
	w.advance(w.c.cfg.HeartbeatInterval / 2)
	if got, _, err := wave.nodes(ctx); err != nil || len(got) != 3 {
		t.Fatalf("half an interval on: %d nodes %v, want the 3 listed at the start", len(got), err)
	}
	w.advance(w.c.cfg.HeartbeatInterval - w.c.cfg.HeartbeatInterval/2)
	if got, byID, err := wave.nodes(ctx); err != nil || len(got) != 4 || len(byID) != 4 {
		t.Fatalf("an interval on: %d nodes %v, want the 4 now registered", len(got), err)
	}
}

// storeSegmentAs stores a segment under scheme s (not the configured one).
func (w *world) storeSegmentAs(acct fnet.AccountID, s erasure.Scheme, size int) SegmentID {
	w.t.Helper()
	ctx := context.Background()
	coder, err := erasure.New(s)
	if err != nil {
		w.t.Fatal(err)
	}
	pieces, err := coder.Encode(bytes.Repeat([]byte{byte(s.N)}, size))
	if err != nil {
		w.t.Fatal(err)
	}
	pl, stored := w.placePieces(ctx, acct, &fnet.PlacementRequest{K: uint8(s.K), N: uint8(s.N)}, pieces)
	if err := w.c.Commit(ctx, acct, &fnet.CommitRequest{Segment: pl.Segment, Pieces: stored}); err != nil {
		w.t.Fatal(err)
	}
	return SegmentID(pl.Segment)
}

// TestRepairMostEndangeredFirstAcrossSchemes: the queue's order is the
// spare pieces above K, whatever the scheme: a 4-of-8 segment down to 4
// pieces (none spare) is repaired before a 2-of-5 segment down to 3 (one
// spare), though it has more pieces left.
func TestRepairMostEndangeredFirstAcrossSchemes(t *testing.T) {
	w := newWorld(t, 14)
	w.c.cfg.RepairWorkers = 1
	acct := w.account()
	small := w.storeSegmentAs(acct, erasure.Scheme{K: 2, N: 5}, 3000)
	wide := w.storeSegmentAs(acct, erasure.Scheme{K: 4, N: 8}, 6000)
	w.losePieces(small, 0, 1)
	w.losePieces(wide, 0, 1, 2, 3)
	owner := map[challenge.PieceID]SegmentID{}
	for _, id := range []SegmentID{small, wide} {
		for _, p := range w.segment(id).Pieces {
			owner[p.ID] = id
		}
	}
	slow := newSlowNodes(w.mem, 0)
	w.c.nodes = slow
	rr, err := w.c.RepairScan(context.Background())
	if err != nil || rr.Repaired != 6 || rr.Failed != 0 {
		t.Fatalf("scan: %+v %v, want the 6 lost pieces rebuilt", rr, err)
	}
	if len(slow.puts) == 0 || owner[slow.puts[0]] != wide {
		t.Fatal("the 2-of-5 segment with a spare piece was repaired before the 4-of-8 one with none")
	}
}
