package mediator

// Tests of contracts.go from verifyStored on (Release, abandon,
// SegmentInfo), written against mutants the package's other tests let
// live (docs/TESTING.md, "mediator, eighth session").

import (
	"context"
	"errors"
	"testing"

	fnet "github.com/fincrypt/fincrypt/net"
)

// TestSegmentInfoOnlyForItsOwnerAndBelowK: get tickets go to the segment's
// owner only. With K healthy pieces only those are offered; below K also
// the lost pieces whose node is online, never one without a node or on a
// node that is offline.
func TestSegmentInfoOnlyForItsOwnerAndBelowK(t *testing.T) {
	w := newWorld(t, 5)
	ctx := context.Background()
	acct, other := w.account(), w.account()
	id, _ := w.storeSegment(acct, 3000)
	if info, err := w.c.SegmentInfo(ctx, other, id); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("segment info asked by another account: %+v, %v; want ErrNotOwner", info, err)
	}
	if _, err := w.c.SegmentInfo(ctx, acct, SegmentID{9, 9}); !errors.Is(err, ErrNoSegment) {
		t.Fatalf("segment info of an unknown segment: %v", err)
	}
	seg := w.segment(id)
	k := seg.Scheme.K
	check := func(offered map[int]bool) {
		t.Helper()
		info, err := w.c.SegmentInfo(ctx, acct, id)
		if err != nil {
			t.Fatal(err)
		}
		if len(info.Pieces) != seg.Scheme.N || int(info.K) != k {
			t.Fatalf("segment info %+v", info)
		}
		for i, p := range info.Pieces {
			if p.Piece != seg.Pieces[i].ID {
				t.Fatalf("piece %d named %s, want %s", i, p.Piece, seg.Pieces[i].ID)
			}
			if p.Healthy != offered[i] {
				t.Fatalf("piece %d (state %v) offered %v, want %v (%d of %d healthy)", i, seg.Pieces[i].State, p.Healthy, offered[i], seg.Healthy(), k)
			}
			tk := p.Target.Ticket.Ticket
			if p.Healthy && (tk.Node != seg.Pieces[i].Node || tk.Piece != p.Piece || tk.Op != fnet.OpGet || tk.Account != acct || tk.Size != seg.PieceSize) {
				t.Fatalf("piece %d: ticket %+v", i, tk)
			}
			if !p.Healthy && p.Target.Ticket.Ticket.Node != (fnet.NodeID{}) {
				t.Fatalf("piece %d not offered but given a ticket", i)
			}
		}
	}
	update := func() {
		t.Helper()
		if err := w.store.UpdateSegment(ctx, seg); err != nil {
			t.Fatal(err)
		}
	}
	// Exactly K healthy: the lost pieces are not offered, though their
	// nodes are online.
	for i := k; i < seg.Scheme.N; i++ {
		seg.Pieces[i].State = PieceLost
	}
	update()
	check(map[int]bool{0: true, 1: true})

	// K-1 healthy: the lost pieces on online nodes are offered too; not
	// one recorded without a node, nor one whose node is offline.
	seg.Pieces[k-1].State = PieceLost
	seg.Pieces[3].Node = fnet.NodeID{}
	down := seg.Pieces[4].Node
	w.mem.nodes[down].down = true
	w.advance(w.c.cfg.OnlineWindow + 1)
	w.heartbeat()
	update()
	want := map[int]bool{}
	for i := 0; i < 3; i++ {
		want[i] = true
	}
	check(want)
}

// TestAbandonOnlyByItsOwner: another account cannot cancel a placement
// (its pieces stay, the owner commits it); the owner's release of an
// uncommitted placement deletes the uploaded pieces and frees the room,
// and the placement can no longer be committed.
func TestAbandonOnlyByItsOwner(t *testing.T) {
	w := newWorld(t, 5)
	ctx := context.Background()
	acct, other := w.account(), w.account()
	pl, stored := w.placeAndUpload(acct, 3000, 7)
	id := SegmentID(pl.Segment)
	onNodes := func() int {
		t.Helper()
		w.c.bg.Wait()
		n := 0
		for _, sp := range stored {
			if _, ok := w.mem.nodes[sp.Node].pieces[sp.Piece]; ok {
				n++
			}
		}
		return n
	}
	if err := w.c.Release(ctx, other, id); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("another account cancels a placement: %v, want ErrNotOwner", err)
	}
	if n := onNodes(); n != len(stored) {
		t.Fatalf("%d of %d pieces left after another account's release", n, len(stored))
	}
	if r := w.c.reservedBytes(w.now()); len(r) != len(stored) {
		t.Fatalf("room reserved on %d nodes after another account's release, want %d", len(r), len(stored))
	}
	if err := w.c.Release(ctx, acct, id); err != nil {
		t.Fatal(err)
	}
	if n := onNodes(); n != 0 {
		t.Fatalf("%d uploaded pieces left on their nodes after the placement was abandoned", n)
	}
	if r := w.c.reservedBytes(w.now()); len(r) != 0 {
		t.Fatalf("room still reserved after the abandon: %v", r)
	}
	if err := w.c.Commit(ctx, acct, &fnet.CommitRequest{Segment: pl.Segment, Pieces: stored}); !errors.Is(err, ErrNoPlacement) {
		t.Fatalf("commit of an abandoned placement: %v", err)
	}
	if err := w.c.Release(ctx, acct, id); !errors.Is(err, ErrNoSegment) {
		t.Fatalf("second abandon: %v", err)
	}
}
