package mediator

import (
	"context"
	"testing"

	"github.com/fincrypt/fincrypt/challenge"
	fnet "github.com/fincrypt/fincrypt/net"
)

// TestReportDamageCountsWhatItAccepted: the operator's counters of damage
// reports count the pieces accepted (marked lost) and those ignored, and
// only the reporting node's record of the period takes the failure.
func TestReportDamageCountsWhatItAccepted(t *testing.T) {
	w := newWorld(t, 5)
	ctx := context.Background()
	acct := w.account()
	id, _ := w.storeSegment(acct, 3000)
	period := w.now()
	if _, err := w.c.Round(ctx); err != nil {
		t.Fatal(err)
	}
	seg := w.segment(id)
	node := seg.Pieces[0].Node
	rep, err := w.c.ReportDamage(ctx, node, &fnet.DamageReport{Pieces: []challenge.PieceID{seg.Pieces[0].ID, seg.Pieces[0].ID, {0xee}}})
	if err != nil || rep.Accepted != 1 || rep.Ignored != 1 {
		t.Fatalf("report %+v %v, want 1 accepted and 1 ignored", rep, err)
	}
	for name, want := range map[string]int64{CounterDamageAccepted: 1, CounterDamageIgnored: 1} {
		if v, err := w.store.Counter(ctx, name); err != nil || v != want {
			t.Errorf("counter %s = %d (%v), want %d", name, v, err, want)
		}
	}
	for i, p := range seg.Pieces {
		rec := w.periodRecord(period, p.Node, acct)
		want := uint32(0)
		if p.Node == node {
			want = 1
		}
		if rec == nil || rec.Failed != want {
			t.Errorf("piece %d's node: record %+v, want %d failed", i, rec, want)
		}
	}
}
