package mediator

import (
	"context"
	"testing"
	"time"
)

// TestSettleEachPeriodOnce: settlement turns every completed challenge
// period into one report, in order, credits each node what its lines say,
// and settles nothing twice: a second settle with no new round adds no
// report and moves no satoshi; the next round is settled alone. A node
// that failed its challenge in a period earns nothing for it.
func TestSettleEachPeriodOnce(t *testing.T) {
	const price = 1e12 // sat per GiB-month: pieces of a few KiB earn whole satoshis a minute
	w := newWorld(t, 5)
	withPayments(t, w, "", Payments{})
	w.c.cfg.MaxPrice = price
	for i := range w.ids {
		w.reregister(i, price) // new pieces at once
	}
	ctx := context.Background()
	acct := w.account()
	id, _ := w.storeSegment(acct, 3000)
	seg := w.segment(id)

	balances := func() map[string]int64 {
		t.Helper()
		b, err := w.c.pay.w.Balances("unmetered:")
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	journal := func() int {
		t.Helper()
		e, err := w.c.pay.w.Journal(0, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		return len(e)
	}
	// check verifies the reports against the rounds that started at
	// starts and the credits against the lines; failed names the nodes
	// that must have failed.
	check := func(res SettleResult, before map[string]int64, starts []time.Time, failed map[string]bool) {
		t.Helper()
		if len(res.Reports) != len(starts) {
			t.Fatalf("%d reports for %d completed periods", len(res.Reports), len(starts))
		}
		earned := map[string]int64{}
		for i, rep := range res.Reports {
			if rep.Period != uint64(starts[i].UnixNano()) {
				t.Fatalf("report %d for period %d, want the round of %v (%d)", i, rep.Period, starts[i], starts[i].UnixNano())
			}
			if len(rep.Lines) != seg.Scheme.N {
				t.Fatalf("period %d: %d lines, want one per piece's node (%d)", rep.Period, len(rep.Lines), seg.Scheme.N)
			}
			for _, l := range rep.Lines {
				if l.Bytes != seg.PieceSize {
					t.Fatalf("line %+v: want %d bytes", l, seg.PieceSize)
				}
				if l.Passed == failed[l.Node] {
					t.Fatalf("line %+v: passed %v, want %v", l, l.Passed, !failed[l.Node])
				}
				if l.Passed != (l.Owed > 0) {
					t.Fatalf("line %+v: a node earns if and only if it passed", l)
				}
				earned["unmetered:"+l.Node] += l.Earned
			}
		}
		after := balances()
		for k, v := range after {
			if v-before[k] != earned[k] {
				t.Fatalf("%s credited %d, the reports say %d", k, v-before[k], earned[k])
			}
		}
		for k, v := range earned {
			if v != 0 && after[k] == before[k] {
				t.Fatalf("%s: earned %d, not credited", k, v)
			}
		}
	}

	var starts []time.Time
	for range 2 {
		s, _ := w.nextRound()
		starts = append(starts, s)
	}
	before := balances()
	res, err := w.c.settle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	check(res, before, starts, nil)

	// Again, with no round in between: nothing more.
	before, entries := balances(), journal()
	res, err = w.c.settle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Reports) != 0 || journal() != entries {
		t.Fatalf("a second settle with no new period: %d reports, journal %d -> %d entries", len(res.Reports), entries, journal())
	}
	check(res, before, nil, nil)

	// One node's piece flipped: that node fails the next round and earns
	// nothing for it; only that period is settled.
	p := seg.Pieces[0]
	b := w.mem.nodes[p.Node].pieces[p.ID]
	b[len(b)/2] ^= 0x40
	start, _ := w.nextRound()
	if r := w.records(start)[rk(p.Node, acct)]; r.Failed == 0 {
		t.Fatalf("the round did not fail the flipped piece: %+v", r)
	}
	before = balances()
	res, err = w.c.settle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	check(res, before, []time.Time{start}, map[string]bool{p.Node.String(): true})
}
