package mediator

import (
	"context"
	"testing"

	"github.com/fincrypt/fincrypt/challenge"
	fnet "github.com/fincrypt/fincrypt/net"
)

// sharedNode stores a segment for each of two accounts and returns a
// node that holds a piece of both, with those pieces.
func (w *world) sharedNode(a, b fnet.AccountID) (fnet.NodeID, challenge.PieceID, challenge.PieceID) {
	w.t.Helper()
	segA, _ := w.storeSegment(a, 6000)
	segB, _ := w.storeSegment(b, 6000)
	for _, pa := range w.segment(segA).Pieces {
		for _, pb := range w.segment(segB).Pieces {
			if pa.Node == pb.Node {
				return pa.Node, pa.ID, pb.ID
			}
		}
	}
	w.t.Fatal("no node holds a piece of both segments")
	return fnet.NodeID{}, challenge.PieceID{}, challenge.PieceID{}
}

// TestReportDamageBeforeAnyRoundCarriesEveryAccount: with no round yet,
// a report naming pieces of two accounts carries a failure for each of
// them to the node's next records, not only for the first.
func TestReportDamageBeforeAnyRoundCarriesEveryAccount(t *testing.T) {
	w := newWorld(t, 7)
	ctx := context.Background()
	a, b := w.account(), w.account()
	node, pa, pb := w.sharedNode(a, b)
	rep, err := w.c.ReportDamage(ctx, node, &fnet.DamageReport{Pieces: []challenge.PieceID{pa, pb}})
	if err != nil || rep.Accepted != 2 {
		t.Fatalf("report: %+v %v", rep, err)
	}
	for _, acct := range []fnet.AccountID{a, b} {
		if v, err := w.store.Counter(ctx, carriedDamageName(node, acct)); err != nil || v != 1 {
			t.Errorf("failures carried for account %x: %d %v, want 1", acct[:4], v, err)
		}
	}
}

// TestReportDamageFailsTheCurrentPeriodOnly: after two rounds, a report
// of one account's piece fails the node's record of the second round for
// that account, leaves its record for the other account and the first
// round's records as they were.
func TestReportDamageFailsTheCurrentPeriodOnly(t *testing.T) {
	w := newWorld(t, 7)
	ctx := context.Background()
	a, b := w.account(), w.account()
	node, pa, _ := w.sharedNode(a, b)
	first, _ := w.nextRound()
	second, _ := w.nextRound()
	for _, acct := range []fnet.AccountID{a, b} {
		if rec := w.periodRecord(second, node, acct); rec == nil || rec.Failed != 0 {
			t.Fatalf("record of the second round before the report: %+v", rec)
		}
	}
	if rep, err := w.c.ReportDamage(ctx, node, &fnet.DamageReport{Pieces: []challenge.PieceID{pa}}); err != nil || rep.Accepted != 1 {
		t.Fatalf("report: %+v %v", rep, err)
	}
	if rec := w.periodRecord(second, node, a); rec == nil || rec.Failed != 1 || rec.Pieces == 0 {
		t.Errorf("second round's record for the reported account: %+v, want 1 failed of its pieces", rec)
	}
	if rec := w.periodRecord(second, node, b); rec == nil || rec.Failed != 0 {
		t.Errorf("second round's record for the other account: %+v, want none failed", rec)
	}
	if rec := w.periodRecord(first, node, a); rec == nil || rec.Failed != 0 {
		t.Errorf("first round's record: %+v, want none failed", rec)
	}
}
