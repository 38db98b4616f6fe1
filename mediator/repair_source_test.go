package mediator

import (
	"context"
	"testing"
)

// TestRepairSkipsAPieceWithWrongBytes: nodes that answer a repair's read
// of a "healthy" piece with wrong bytes (of the right length) are skipped,
// their pieces counted lost, and the segment is rebuilt from the pieces
// that are right: with exactly K right pieces left, repair still succeeds
// and every piece ends up healthy with its original bytes.
func TestRepairSkipsAPieceWithWrongBytes(t *testing.T) {
	w := newWorld(t, 12)
	w.c.cfg.RepairThreshold = w.c.cfg.Scheme.N
	// One worker: a repair reads the healthy pieces in order, the wrong
	// ones first. With several workers a source whose node's transfer
	// slots are busy is passed over, a repair can read K right pieces
	// without touching a wrong one, and that wrong piece stays healthy in
	// its contract until a challenge finds it (1 run in 150 did).
	w.c.cfg.RepairWorkers = 1
	k, n := w.c.cfg.Scheme.K, w.c.cfg.Scheme.N
	ctx := context.Background()
	acct := w.account()
	orig := map[SegmentID][][]byte{}
	for range 8 {
		id, pieces := w.storeSegment(acct, 3000)
		orig[id] = pieces
		seg := w.segment(id)
		// One piece lost; of the rest all but K give wrong bytes while
		// their contract still says healthy.
		seg.Pieces[n-1].State = PieceLost
		if err := w.store.UpdateSegment(ctx, seg); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < n-1-k; i++ {
			p := seg.Pieces[i]
			b := w.mem.nodes[p.Node].pieces[p.ID]
			b[len(b)/2] ^= 0x40
		}
	}
	// The wrong reads can disqualify a node during the scan (reputation.go);
	// its pieces not yet read are then marked lost and rebuilt by the next
	// scan, as in service.
	repaired := 0
	for scan := 0; scan < 3; scan++ {
		w.heartbeat()
		res, err := w.c.RepairScan(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if res.Unrecoverable != 0 || res.Failed != 0 {
			t.Fatalf("repair %+v: a wrong piece failed the repair instead of being skipped", res)
		}
		if res.Repaired == 0 {
			break
		}
		repaired += res.Repaired
	}
	for id, h := range w.checkContracts(orig) {
		if h != n {
			t.Errorf("segment %s: %d of %d pieces healthy after repair", id, h, n)
		}
	}
	if want := len(orig) * (n - k); repaired != want {
		t.Errorf("repaired %d pieces, want %d (the lost one and the wrong ones)", repaired, want)
	}
}
