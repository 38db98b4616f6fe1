package mediator

// Tests of repair (repair.go, repair_queue.go) written against the mutants
// that lived under the older tests (docs/TESTING.md, "mediator, eighth
// session"): what a repair reads, where a rebuilt piece goes when a target
// fails, and what is counted when a repair fails in whole or in part.

import (
	"context"
	"fmt"
	"sync"
	"testing"

	fnet "github.com/fincrypt/fincrypt/net"
)

// faultyNodes is a NodeClient that refuses every put on the nodes in
// refuse (as a node with a full disk does) and counts the gets and puts
// each node was sent.
type faultyNodes struct {
	NodeClient
	mu     sync.Mutex
	refuse map[fnet.NodeID]bool
	forget map[fnet.NodeID]bool // the put is acknowledged, nothing kept
	gets   map[fnet.NodeID]int
	puts   map[fnet.NodeID]int
}

func newFaultyNodes(inner NodeClient, refuse ...fnet.NodeID) *faultyNodes {
	f := &faultyNodes{NodeClient: inner, refuse: map[fnet.NodeID]bool{}, forget: map[fnet.NodeID]bool{}, gets: map[fnet.NodeID]int{}, puts: map[fnet.NodeID]int{}}
	for _, id := range refuse {
		f.refuse[id] = true
	}
	return f
}

func (f *faultyNodes) Get(ctx context.Context, addr fnet.Address, t fnet.SignedTicket) ([]byte, error) {
	f.mu.Lock()
	f.gets[addr.ID]++
	f.mu.Unlock()
	return f.NodeClient.Get(ctx, addr, t)
}

func (f *faultyNodes) Put(ctx context.Context, addr fnet.Address, t fnet.SignedTicket, data []byte) error {
	f.mu.Lock()
	f.puts[addr.ID]++
	refuse, forget := f.refuse[addr.ID], f.forget[addr.ID]
	f.mu.Unlock()
	if refuse {
		return &fnet.RemoteError{Code: fnet.CodeInternal, Message: "no space left on device"}
	}
	if forget {
		return nil
	}
	return f.NodeClient.Put(ctx, addr, t, data)
}

func (f *faultyNodes) total(m map[fnet.NodeID]int) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// losePieces drops the given pieces of a segment from their nodes and
// marks them lost in the contract.
func (w *world) losePieces(id SegmentID, idx ...int) {
	w.t.Helper()
	seg := w.segment(id)
	for _, i := range idx {
		w.mem.dropPiece(seg.Pieces[i].Node, seg.Pieces[i].ID)
		seg.Pieces[i].State = PieceLost
	}
	if err := w.store.UpdateSegment(context.Background(), seg); err != nil {
		w.t.Fatal(err)
	}
}

// TestRepairReadsExactlyK: rebuilding a lost piece reads K pieces, no
// more (each read is a whole piece over the network), and the scan counts
// every contract it looked at, healthy or not.
func TestRepairReadsExactlyK(t *testing.T) {
	w := newWorld(t, 7)
	w.c.cfg.RepairThreshold = w.c.cfg.Scheme.N
	f := newFaultyNodes(w.mem)
	w.c.nodes = f
	acct := w.account()
	sick, _ := w.storeSegment(acct, 3000)
	w.storeSegment(acct, 3000)
	w.storeSegment(acct, 3000)
	w.losePieces(sick, 4)
	rr, err := w.c.RepairScan(context.Background())
	if err != nil || rr.Repaired != 1 || rr.Failed != 0 || rr.Segments != 3 {
		t.Fatalf("scan %+v %v, want 3 segments scanned and 1 piece repaired", rr, err)
	}
	if got := f.total(f.gets); got != w.c.cfg.Scheme.K {
		t.Fatalf("the repair of one piece read %d pieces, want K = %d", got, w.c.cfg.Scheme.K)
	}
}

// TestRepairPassesOverAFailingTarget: a target that refuses the rebuilt
// piece, or takes it and then does not answer the challenge that verifies
// it, does not get the piece in its contract; the next target does, in
// the same scan.
func TestRepairPassesOverAFailingTarget(t *testing.T) {
	for _, mode := range []string{"refuses the put", "does not answer the verification", "acknowledges the put and keeps nothing"} {
		t.Run(mode, func(t *testing.T) {
			w := newWorld(t, 5)
			w.c.cfg.RepairThreshold = w.c.cfg.Scheme.N
			acct := w.account()
			var segs []SegmentID
			for range 6 {
				id, _ := w.storeSegment(acct, 2000)
				segs = append(segs, id)
			}
			// Two nodes join after: the only ones that can take a rebuilt
			// piece. The failing one is the cheaper, tried first.
			bad := w.addNode("10.0.5.1:7000", 50).ID()
			good := w.addNode("10.0.6.1:7000", 60).ID()
			f := newFaultyNodes(w.mem)
			switch mode {
			case "refuses the put":
				f.refuse[bad] = true
			case "does not answer the verification":
				w.mem.nodes[bad].mute = true
			default:
				f.forget[bad] = true
			}
			w.c.nodes = f
			for _, id := range segs {
				w.losePieces(id, 1)
			}
			w.heartbeat()
			rr, err := w.c.RepairScan(context.Background())
			if err != nil || rr.Repaired != len(segs) || rr.Failed != 0 {
				t.Fatalf("scan %+v %v, want all %d segments repaired", rr, err, len(segs))
			}
			for _, id := range segs {
				if p := w.segment(id).Pieces[1]; p.Node != good || p.State != PieceHealthy {
					t.Fatalf("segment %s: rebuilt piece %+v, want it healthy on the node that took it", id, p)
				}
			}
			if f.puts[bad] == 0 {
				t.Fatal("the failing node was never tried: the test does not test what it says")
			}
		})
	}
}

// TestRepairFailureIsCountedAndKeepsThePieceLost: when no target takes a
// rebuilt piece, the repair is counted failed (the next scan retries it)
// and the piece stays lost on its old node in the contract; when only
// some of a segment's pieces could be placed, those enter the contract,
// at their new node's price, and the repair still counts failed.
func TestRepairFailureIsCountedAndKeepsThePieceLost(t *testing.T) {
	w := newWorld(t, 5)
	w.c.cfg.RepairThreshold = w.c.cfg.Scheme.N
	ctx := context.Background()
	acct := w.account()
	one, _ := w.storeSegment(acct, 2000)
	two, _ := w.storeSegment(acct, 2000)
	full := w.addNode("10.0.5.1:7000", 70).ID()
	f := newFaultyNodes(w.mem, full)
	w.c.nodes = f
	w.losePieces(one, 2)
	w.heartbeat()
	lostOn := w.segment(one).Pieces[2].Node
	rr, err := w.c.RepairScan(ctx)
	if err != nil || rr.Repaired != 0 || rr.Failed != 1 {
		t.Fatalf("scan with the only target refusing: %+v %v, want 1 failed", rr, err)
	}
	if p := w.segment(one).Pieces[2]; p.State != PieceLost || p.Node != lostOn {
		t.Fatalf("piece after a failed repair: %+v", p)
	}
	if v, _ := w.store.Counter(ctx, CounterRepaired); v != 0 {
		t.Fatalf("repaired counter %d after a failed repair", v)
	}

	// The node has room again; segment two loses two pieces: one target,
	// one piece placed of two.
	delete(f.refuse, full)
	w.losePieces(one, 3) // one needs two now as well; one target for both segments
	w.losePieces(two, 0, 3)
	rr, err = w.c.RepairScan(ctx)
	if err != nil || rr.Repaired != 2 || rr.Failed != 2 {
		t.Fatalf("scan with one target for two pieces of each of two segments: %+v %v, want 2 repaired and 2 failed", rr, err)
	}
	for _, id := range []SegmentID{one, two} {
		seg := w.segment(id)
		if seg.Healthy() != 4 || seg.Repaired != 1 {
			t.Fatalf("segment %s after a partial repair: %d healthy, %d repaired", id, seg.Healthy(), seg.Repaired)
		}
		on := 0
		for i, p := range seg.Pieces {
			if p.Node == full {
				on++
				if p.State != PieceHealthy || p.Price != 70 {
					t.Fatalf("segment %s piece %d placed on the new node: %+v, want healthy at its price 70", id, i, p)
				}
			}
		}
		if on != 1 {
			t.Fatalf("segment %s has %d pieces on the one new node", id, on)
		}
	}
}

// TestRepairLeavesASegmentBackAtItsThreshold: a queued segment that is no
// longer below its repair threshold when a worker takes it (a round revived
// a piece meanwhile) is left as it is: nothing read, nothing placed.
func TestRepairLeavesASegmentBackAtItsThreshold(t *testing.T) {
	w := newWorld(t, 6)
	f := newFaultyNodes(w.mem)
	w.c.nodes = f
	ctx := context.Background()
	id, _ := w.storeSegment(w.account(), 3000)
	w.losePieces(id, 0) // 4 of 5: at the default threshold
	if th := w.c.cfg.threshold(w.segment(id).Scheme); th != 4 {
		t.Fatalf("threshold %d, the test assumes 4", th)
	}
	nodes, err := w.store.ListNodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var res RepairResult
	newRepairWave(w.c, nodes, w.now()).repairQueued(ctx, repairJob{id: id, margin: 0}, &res)
	if res != (RepairResult{}) || f.total(f.gets)+f.total(f.puts) != 0 {
		t.Fatalf("segment at its threshold: %+v, %d reads, %d puts", res, f.total(f.gets), f.total(f.puts))
	}
}

// TestRepairDrawsRebuiltPiecesAtRandom: with K or more pieces kept, price
// has chosen every piece it may (N-K), so the rebuilt pieces are drawn at
// random among the vetted nodes on free subnets: a node that undercuts
// everyone does not collect a piece of every segment repaired
// (docs/SECURITY.md).
func TestRepairDrawsRebuiltPiecesAtRandom(t *testing.T) {
	w := newWorld(t, 5)
	w.c.cfg.RepairThreshold = w.c.cfg.Scheme.N
	w.c.cfg.Placement.VettingChallenges = 0 // every node vetted
	acct := w.account()
	var segs []SegmentID
	for range 20 {
		id, _ := w.storeSegment(acct, 1000)
		segs = append(segs, id)
	}
	cheap := w.addNode("10.0.5.1:7000", 1).ID()
	for i := 6; i <= 9; i++ {
		w.addNode(fmt.Sprintf("10.0.%d.1:7000", i), 100)
	}
	for _, id := range segs {
		w.losePieces(id, 4)
	}
	w.heartbeat()
	rr, err := w.c.RepairScan(context.Background())
	if err != nil || rr.Repaired != len(segs) {
		t.Fatalf("scan %+v %v", rr, err)
	}
	got := 0
	for _, id := range segs {
		if w.segment(id).Pieces[4].Node == cheap {
			got++
		}
	}
	// One in five at random: 4 of 20 expected; 20 if price chose.
	if got > 12 {
		t.Fatalf("the cheapest node got %d of the %d rebuilt pieces: price chose them, not the draw", got, len(segs))
	}
}

// TestRepairWithTooFewReadablePieces: when the pieces that can still be
// read are fewer than K (nodes that no longer hold pieces their contracts
// say are healthy), the repair fails and is counted, those pieces are
// marked lost, and the scan goes on: no crash, nothing placed.
func TestRepairWithTooFewReadablePieces(t *testing.T) {
	w := newWorld(t, 7)
	w.c.cfg.RepairThreshold = w.c.cfg.Scheme.N
	k, n := w.c.cfg.Scheme.K, w.c.cfg.Scheme.N
	ctx := context.Background()
	id, _ := w.storeSegment(w.account(), 3000)
	w.losePieces(id, n-1) // one lost in the contract
	seg := w.segment(id)
	for i := 0; i < n-k; i++ { // the rest but K-1 silently gone from their nodes
		w.mem.dropPiece(seg.Pieces[i].Node, seg.Pieces[i].ID)
	}
	puts := w.mem.puts.Load()
	rr, err := w.c.RepairScan(ctx)
	if err != nil || rr.Failed != 1 || rr.Repaired != 0 {
		t.Fatalf("scan %+v %v, want the repair counted failed", rr, err)
	}
	if h := w.segment(id).Healthy(); h != k-1 {
		t.Fatalf("%d healthy after the scan, want the %d that could be read", h, k-1)
	}
	if w.mem.puts.Load() != puts {
		t.Fatal("a piece was placed from fewer than K pieces")
	}
}

// TestRevivalBackToTheThresholdRebuildsNothing: a segment below its
// threshold whose offline piece is revived back to the threshold is not
// rebuilt further in that scan, though a spare node could take a piece.
func TestRevivalBackToTheThresholdRebuildsNothing(t *testing.T) {
	w := newWorld(t, 5)
	ctx := context.Background()
	id, _ := w.storeSegment(w.account(), 3000)
	spare := w.addNode("10.0.5.1:7000", 100).ID()
	seg := w.segment(id)
	x, y := seg.Pieces[0].Node, seg.Pieces[1].Node
	for _, n := range []fnet.NodeID{x, y, spare} {
		w.mem.nodes[n].down = true
	}
	w.advance(w.c.cfg.OfflineAfter + w.c.cfg.Period)
	w.heartbeat()
	if rr, err := w.c.RepairScan(ctx); err != nil || rr.MarkedLost != 2 || rr.Repaired != 0 {
		t.Fatalf("scan with two nodes and the spare away: %+v %v", rr, err)
	}
	w.mem.nodes[x].down, w.mem.nodes[spare].down = false, false
	w.heartbeat()
	puts := w.mem.puts.Load()
	rr, err := w.c.RepairScan(ctx)
	if err != nil || rr.Revived != 1 || rr.Repaired != 0 || w.mem.puts.Load() != puts {
		t.Fatalf("scan with one node back: %+v %v, %d puts; want 1 revived and nothing rebuilt (4 of 5, at the threshold)", rr, err, w.mem.puts.Load()-puts)
	}
	if h := w.segment(id).Healthy(); h != 4 {
		t.Fatalf("%d healthy, want 4", h)
	}
}
