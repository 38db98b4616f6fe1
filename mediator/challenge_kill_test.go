package mediator

// Tests of the challenge round (challenges.go) written against the
// mutants that lived under the older tests (docs/TESTING.md, "mediator,
// eighth session"): the sample of pieces a node is challenged on, the
// counts a round reports, and the limit of pieces in one challenge.

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/fincrypt/fincrypt/challenge"
	fnet "github.com/fincrypt/fincrypt/net"
)

// strictNodes is a NodeClient that refuses, like a real storage node's
// decoder, a challenge naming more than fnet.MaxChallengePieces pieces,
// and records the largest challenge each node was sent.
type strictNodes struct {
	NodeClient
	mu      sync.Mutex
	largest map[fnet.NodeID]int
}

func (s *strictNodes) Challenge(ctx context.Context, addr fnet.Address, req *fnet.ChallengeRequest) (*fnet.ChallengeResponse, error) {
	s.mu.Lock()
	if s.largest == nil {
		s.largest = map[fnet.NodeID]int{}
	}
	s.largest[addr.ID] = max(s.largest[addr.ID], len(req.Pieces))
	s.mu.Unlock()
	if len(req.Pieces) > fnet.MaxChallengePieces {
		return nil, &fnet.RemoteError{Code: fnet.CodeBadRequest, Message: fmt.Sprintf("%d elements exceed %d", len(req.Pieces), fnet.MaxChallengePieces)}
	}
	return s.NodeClient.Challenge(ctx, addr, req)
}

// piecesOn returns the (segment, index) of every piece of segs on node.
func (w *world) piecesOn(node fnet.NodeID, segs []SegmentID) map[SegmentID]int {
	w.t.Helper()
	out := map[SegmentID]int{}
	for _, id := range segs {
		for i, p := range w.segment(id).Pieces {
			if p.Node == node {
				out[id] = i
			}
		}
	}
	return out
}

// setState puts piece idx of segment id in state st.
func (w *world) setState(id SegmentID, idx int, st PieceState) {
	w.t.Helper()
	seg := w.segment(id)
	seg.Pieces[idx].State = st
	if err := w.store.UpdateSegment(context.Background(), seg); err != nil {
		w.t.Fatal(err)
	}
}

// TestChallengeSampleIsUniformAndBounded: a node holding more pieces than
// the sample is challenged on exactly the sample, chosen uniformly among
// its healthy pieces (so that over the rounds every piece is checked, not
// only the first ones listed), and on at most as many of its offline
// pieces, chosen the same way; the period record sees every healthy piece.
func TestChallengeSampleIsUniformAndBounded(t *testing.T) {
	w := newWorld(t, 5)
	ctx := context.Background()
	acct := w.account()
	var segs []SegmentID
	for range 16 {
		id, _ := w.storeSegment(acct, 1500)
		segs = append(segs, id)
	}
	node := w.segment(segs[0]).Pieces[0].Node
	on := w.piecesOn(node, segs)
	if len(on) != 16 {
		t.Fatalf("node holds %d of the 16 segments' pieces, want 16", len(on))
	}
	healthy, offline := map[challenge.PieceID]int{}, map[challenge.PieceID]int{}
	for j, id := range segs {
		p := w.segment(id).Pieces[on[id]]
		if j%2 == 1 {
			w.setState(id, on[id], PieceOffline)
			offline[p.ID] = 0
		} else {
			healthy[p.ID] = 0
		}
	}
	const k, draws = 3, 200
	for range draws {
		chosen, all, off, err := w.c.sample(ctx, node, k)
		if err != nil {
			t.Fatal(err)
		}
		if len(chosen) != k || len(off) != k {
			t.Fatalf("sample of %d: %d healthy and %d offline pieces chosen", k, len(chosen), len(off))
		}
		if len(all) != len(healthy) {
			t.Fatalf("%d healthy pieces listed for the period record, the node holds %d", len(all), len(healthy))
		}
		seen := map[challenge.PieceID]bool{}
		for _, r := range all {
			if _, ok := healthy[r.ID]; !ok || seen[r.ID] || r.State != PieceHealthy {
				t.Fatalf("period record lists %s (%s) twice or not healthy", r.ID, r.State)
			}
			seen[r.ID] = true
		}
		for _, set := range []struct {
			refs []PieceRef
			in   map[challenge.PieceID]int
		}{{chosen, healthy}, {off, offline}} {
			dup := map[challenge.PieceID]bool{}
			for _, r := range set.refs {
				if _, ok := set.in[r.ID]; !ok || dup[r.ID] {
					t.Fatalf("sampled piece %s (%s) twice or from the wrong set", r.ID, r.State)
				}
				dup[r.ID] = true
				set.in[r.ID]++
			}
		}
	}
	// Each of the 8 pieces of a set is drawn with probability 3/8: 75
	// times in 200 draws, a standard deviation of 6.8.
	for name, set := range map[string]map[challenge.PieceID]int{"healthy": healthy, "offline": offline} {
		for id, n := range set {
			if n < 40 || n > 115 {
				t.Errorf("%s piece %s drawn %d times in %d samples of %d of 8, want about %d", name, id, n, draws, k, draws*k/8)
			}
		}
	}
	// A sample larger than what the node holds takes everything.
	chosen, all, off, err := w.c.sample(ctx, node, 20)
	if err != nil || len(chosen) != 8 || len(all) != 8 || len(off) != 8 {
		t.Fatalf("sample of 20 of 8+8: %d chosen, %d listed, %d offline, %v", len(chosen), len(all), len(off), err)
	}
}

// TestRoundCountsEachNodeOnce: a round challenges every online node that
// holds pieces exactly once, and reports how many it challenged, how many
// did not answer, and the pieces that passed and failed; a node that lost
// every piece it was asked about still counts as challenged, a node that
// holds nothing is not asked.
func TestRoundCountsEachNodeOnce(t *testing.T) {
	w := newWorld(t, 5)
	ctx := context.Background()
	acct := w.account()
	a, _ := w.storeSegment(acct, 3000)
	b, _ := w.storeSegment(acct, 3000)
	w.addNode("10.0.5.1:7000", 100) // registered after: holds nothing
	sa := w.segment(a)
	loser, mute := sa.Pieces[0].Node, sa.Pieces[1].Node
	for _, id := range []SegmentID{a, b} {
		for _, p := range w.segment(id).Pieces {
			if p.Node == loser {
				w.mem.dropPiece(loser, p.ID)
			}
		}
	}
	w.mem.nodes[mute].mute = true
	empty := w.ids[5].ID()
	before := map[fnet.NodeID]int{}
	for id, n := range w.mem.challenged {
		before[id] = n
	}
	period, r := w.nextRound()
	if r.Nodes != 5 || r.Unreachable != 1 || r.Passed != 6 || r.Failed != 4 {
		t.Fatalf("round %+v, want 5 nodes challenged (one that lost both its pieces), 1 unreachable, 6 passed, 4 failed", r)
	}
	for _, id := range w.ids {
		n := w.mem.challenged[id.ID()] - before[id.ID()]
		want := 1
		if id.ID() == empty {
			want = 0
		}
		if n != want {
			t.Errorf("node %s challenged %d times in one round, want %d", id.ID(), n, want)
		}
	}
	// The period records: what each node held for the account and how it
	// did (a node that did not answer earns nothing either).
	size := uint64(w.segment(a).PieceSize)
	for _, id := range w.ids[:5] {
		node := id.ID()
		want := PeriodRecord{Pieces: 2, Bytes: 2 * size, Passed: 2}
		switch node {
		case loser, mute:
			want.Passed, want.Failed = 0, 2
		}
		rec := w.periodRecord(period, node, acct)
		if rec == nil || rec.Pieces != want.Pieces || rec.Bytes != want.Bytes || rec.Passed != want.Passed || rec.Failed != want.Failed {
			t.Errorf("node %s: period record %+v, want %d pieces of %d bytes, %d passed, %d failed", node, rec, want.Pieces, want.Bytes, want.Passed, want.Failed)
		}
	}
	if rec := w.periodRecord(period, empty, acct); rec != nil {
		t.Errorf("a record for the node that holds nothing: %+v", rec)
	}
	if n, _ := w.store.GetNode(ctx, loser); n.Failed != 2 || n.Passed != 0 {
		t.Errorf("node that lost its pieces: passed %d failed %d, want 0 and 2", n.Passed, n.Failed)
	}
	for _, id := range []SegmentID{a, b} {
		for i, p := range w.segment(id).Pieces {
			switch p.Node {
			case loser:
				if p.State != PieceLost || p.Failed != 1 || p.Passed != 0 {
					t.Errorf("segment %s piece %d on the node that lost it: %+v", id, i, p)
				}
			case mute:
				if p.State != PieceHealthy || p.Failed != 1 {
					t.Errorf("segment %s piece %d on the node that did not answer: %+v", id, i, p)
				}
			default:
				if p.State != PieceHealthy || p.Passed != 1 || p.Failed != 0 || !p.LastChecked.Equal(w.now()) {
					t.Errorf("segment %s piece %d that passed: %+v", id, i, p)
				}
			}
		}
	}
}

// TestOfflinePiecesRideAlongWithinTheLimit: a node back after being
// counted gone gets its offline pieces back a sample at a time, riding
// along with its healthy ones, and no challenge names more pieces than a
// storage node accepts (one that does is refused, and the refusal fails
// every piece named: the node would lose its healthy pieces for the
// mediator's mistake).
func TestOfflinePiecesRideAlongWithinTheLimit(t *testing.T) {
	w := newWorld(t, 5)
	strict := &strictNodes{NodeClient: w.mem}
	w.c.nodes = strict
	w.c.cfg.ChallengeSample = 20
	ctx := context.Background()
	acct := w.account()
	var segs []SegmentID
	for range 40 {
		id, _ := w.storeSegment(acct, 1200)
		segs = append(segs, id)
	}
	x := w.segment(segs[0]).Pieces[2].Node
	w.mem.nodes[x].down = true
	w.advance(w.c.cfg.OfflineAfter + w.c.cfg.Period)
	w.heartbeat()
	if rr, err := w.c.RepairScan(ctx); err != nil || rr.MarkedLost != 40 || rr.Repaired != 0 {
		t.Fatalf("scan with the node gone: %+v %v, want its 40 pieces offline and none rebuilt (4 of 5 healthy)", rr, err)
	}
	w.mem.nodes[x].down = false
	count := func() (healthy, off int) {
		for id, i := range w.piecesOn(x, segs) {
			switch w.segment(id).Pieces[i].State {
			case PieceHealthy:
				healthy++
			case PieceOffline:
				off++
			}
		}
		return healthy, off
	}
	// 20 offline asked; then 20 healthy and 12 of the 20 offline (32 in
	// all); then 20 healthy and the last 8.
	for round, want := range []int{20, 8, 0} {
		_, r := w.nextRound()
		h, off := count()
		if off != want || h != 40-want || r.Failed != 0 {
			t.Fatalf("round %d: %d healthy and %d offline on the returning node (round %+v), want %d and %d", round+1, h, off, r, 40-want, want)
		}
		if n := strict.largest[x]; n > fnet.MaxChallengePieces {
			t.Fatalf("round %d: a challenge of %d pieces, more than the %d a node accepts", round+1, n, fnet.MaxChallengePieces)
		}
	}
	if n := strict.largest[x]; n != fnet.MaxChallengePieces {
		t.Fatalf("largest challenge %d pieces, want %d (20 healthy and 12 offline)", n, fnet.MaxChallengePieces)
	}
}
