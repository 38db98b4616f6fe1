package mediator

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/challenge"
	fnet "github.com/fincrypt/fincrypt/net"
)

// periodRecord returns the node's record for acct in the period starting
// at start (nil if none).
func (w *world) periodRecord(start time.Time, node fnet.NodeID, acct fnet.AccountID) *PeriodRecord {
	w.t.Helper()
	recs, err := w.store.PeriodRecords(context.Background(), start, start.Add(time.Nanosecond))
	if err != nil {
		w.t.Fatal(err)
	}
	for _, r := range recs {
		if r.Node == node && r.Account == acct {
			return &r
		}
	}
	return nil
}

// A report marks the node's own contracted pieces lost at once, fails the
// node's record of the current period, ignores the rest, and repair
// rebuilds what was reported.
func TestReportDamageMarksLostAndFailsThePeriod(t *testing.T) {
	w := newWorld(t, 7)
	ctx := context.Background()
	acct := w.account()
	segA, _ := w.storeSegment(acct, 6000)
	segB, _ := w.storeSegment(acct, 9000)
	period := w.now()
	if r, err := w.c.Round(ctx); err != nil || r.Failed != 0 {
		t.Fatalf("healthy round: %+v %v", r, err)
	}
	sa := w.segment(segA)
	node := sa.Pieces[2].Node
	if rec := w.periodRecord(period, node, acct); rec == nil || rec.Failed != 0 {
		t.Fatalf("record before the report: %+v", rec)
	}
	var otherNode fnet.NodeID
	for _, p := range w.segment(segB).Pieces {
		if p.Node != node {
			otherNode = p.Node
			break
		}
	}
	var othersPiece challenge.PieceID
	for _, p := range w.segment(segB).Pieces {
		if p.Node == otherNode {
			othersPiece = p.ID
		}
	}

	// Unregistered nodes are refused (they register again and retry).
	if _, err := w.c.ReportDamage(ctx, fnet.NodeID{9}, &fnet.DamageReport{Pieces: []challenge.PieceID{sa.Pieces[2].ID}}); !errors.Is(err, fnet.ErrNotRegistered) {
		t.Fatalf("report from an unknown node: %v", err)
	}
	// The node's own piece (twice), a piece of another node, a made-up one.
	w.advance(time.Second)
	rep, err := w.c.ReportDamage(ctx, node, &fnet.DamageReport{Pieces: []challenge.PieceID{
		sa.Pieces[2].ID, sa.Pieces[2].ID, othersPiece, {0xee}}})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Accepted != 1 || rep.Ignored != 2 {
		t.Fatalf("reply %+v, want 1 accepted, 2 ignored", rep)
	}
	if p := w.segment(segA).Pieces[2]; p.State != PieceLost || p.Node != node {
		t.Fatalf("reported piece: %+v", p)
	}
	for _, p := range w.segment(segB).Pieces {
		if p.State != PieceHealthy {
			t.Fatalf("a piece another node holds went %s", p.State)
		}
	}
	rec := w.periodRecord(period, node, acct)
	if rec == nil || rec.Failed != 1 || rec.Bytes == 0 {
		t.Fatalf("record after the report: %+v", rec)
	}
	if n, _ := w.store.GetNode(ctx, node); n.Failed != 1 {
		t.Fatalf("node failures %d", n.Failed)
	}
	if v, _ := w.store.Counter(ctx, CounterDamageIgnored); v != 2 {
		t.Fatalf("ignored counter %d", v)
	}
	// Reporting it again changes nothing: it is already lost.
	if rep, err := w.c.ReportDamage(ctx, node, &fnet.DamageReport{Pieces: []challenge.PieceID{sa.Pieces[2].ID}}); err != nil || rep.Accepted != 1 {
		t.Fatalf("second report: %+v %v", rep, err)
	}
	if rec := w.periodRecord(period, node, acct); rec.Failed != 1 {
		t.Fatalf("a second report failed the record again: %+v", rec)
	}
	// Repair rebuilds it elsewhere.
	w.c.cfg.RepairThreshold = 5
	w.mem.dropPiece(node, sa.Pieces[2].ID) // the node dropped it
	if rr, err := w.c.RepairScan(ctx); err != nil || rr.Repaired != 1 {
		t.Fatalf("repair: %+v %v", rr, err)
	}
	if p := w.segment(segA).Pieces[2]; p.State != PieceHealthy || p.Node == node {
		t.Fatalf("after repair: %+v", p)
	}
	w.checkTotals()
}

// A report that comes after its period was settled fails the node's next
// record for the account instead.
func TestReportDamageAfterSettlementCarriesToTheNextPeriod(t *testing.T) {
	w := newWorld(t, 7)
	ctx := context.Background()
	acct := w.account()
	segA, _ := w.storeSegment(acct, 6000)
	w.storeSegment(acct, 9000)
	first := w.now()
	if _, err := w.c.Round(ctx); err != nil {
		t.Fatal(err)
	}
	// Settled through the first period.
	if _, err := w.store.AddCounter(ctx, CounterSettled, first.UnixNano()); err != nil {
		t.Fatal(err)
	}
	sa := w.segment(segA)
	node := sa.Pieces[0].Node
	if rep, err := w.c.ReportDamage(ctx, node, &fnet.DamageReport{Pieces: []challenge.PieceID{sa.Pieces[0].ID}}); err != nil || rep.Accepted != 1 {
		t.Fatalf("report: %+v %v", rep, err)
	}
	if rec := w.periodRecord(first, node, acct); rec == nil || rec.Failed != 0 {
		t.Fatalf("settled record changed: %+v", rec)
	}
	second, _ := w.nextRound()
	rec := w.periodRecord(second, node, acct)
	if rec == nil {
		// The node holds a piece of the other segment: it has a record.
		t.Fatal("no record of the node in the second period")
	}
	if rec.Failed != 1 {
		t.Fatalf("second period record %+v, want the carried failure", rec)
	}
	// Carried once only.
	third, _ := w.nextRound()
	if rec := w.periodRecord(third, node, acct); rec != nil && rec.Failed != 0 {
		t.Fatalf("third period record %+v", rec)
	}
}

// A report that arrives while a round writes its records is carried, so
// the round's records cannot overwrite it.
func TestReportDamageDuringARoundIsCarried(t *testing.T) {
	w := newWorld(t, 7)
	ctx := context.Background()
	acct := w.account()
	segA, _ := w.storeSegment(acct, 6000)
	w.storeSegment(acct, 9000)
	first := w.now()
	if _, err := w.c.Round(ctx); err != nil {
		t.Fatal(err)
	}
	sa := w.segment(segA)
	node := sa.Pieces[0].Node
	w.c.rounds.Add(1) // as if a round were running
	if rep, err := w.c.ReportDamage(ctx, node, &fnet.DamageReport{Pieces: []challenge.PieceID{sa.Pieces[0].ID}}); err != nil || rep.Accepted != 1 {
		t.Fatalf("report: %+v %v", rep, err)
	}
	w.c.rounds.Add(-1)
	if rec := w.periodRecord(first, node, acct); rec == nil || rec.Failed != 0 {
		t.Fatalf("record written during a round: %+v", rec)
	}
	second, _ := w.nextRound()
	if rec := w.periodRecord(second, node, acct); rec == nil || rec.Failed != 1 {
		t.Fatalf("next record %+v, want the carried failure", rec)
	}
}
