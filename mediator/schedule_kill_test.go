package mediator

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"
)

// schedulePeer is a Peer around the world's core and store, enough for
// the schedule's functions.
func (w *world) schedulePeer() *Peer {
	return &Peer{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Config: w.c.cfg, Store: w.store,
		core: w.c, settleNow: make(chan struct{}, 1)}
}

func (w *world) counter(name string) int64 {
	w.t.Helper()
	v, err := w.store.Counter(context.Background(), name)
	if err != nil {
		w.t.Fatal(err)
	}
	return v
}

func (w *world) setCounters(kv map[string]int64) {
	w.t.Helper()
	for name, v := range kv {
		if err := setCounter(context.Background(), w.store, name, v); err != nil {
			w.t.Fatal(err)
		}
	}
}

// TestSetCounterSetsTheValue: setting a counter that holds a value
// leaves the new value, not their sum.
func TestSetCounterSetsTheValue(t *testing.T) {
	w := newWorld(t, 0)
	w.setCounters(map[string]int64{"c": 5})
	w.setCounters(map[string]int64{"c": 3})
	if v := w.counter("c"); v != 3 {
		t.Fatalf("counter %d, want 3", v)
	}
}

// TestScheduleStatusReadsTheCounters: the status reports the gaps, the
// rounds run again, the last round done and the period settled through,
// each from its counter; a zero counter leaves its time zero.
func TestScheduleStatusReadsTheCounters(t *testing.T) {
	w := newWorld(t, 0)
	done := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	settled := done.Add(-time.Hour)
	w.setCounters(map[string]int64{CounterPeriodGaps: 2, CounterRoundsRerun: 3,
		CounterRoundDone: done.UnixNano(), CounterSettled: settled.UnixNano()})
	var st Status
	if err := w.c.scheduleStatus(context.Background(), &st); err != nil {
		t.Fatal(err)
	}
	if st.PeriodGaps != 2 || st.RoundsRerun != 3 || !st.LastRound.Equal(done) || !st.SettledThrough.Equal(settled) {
		t.Fatalf("status %+v", st)
	}
	w2 := newWorld(t, 0)
	var st2 Status
	if err := w2.c.scheduleStatus(context.Background(), &st2); err != nil || !st2.LastRound.IsZero() || !st2.SettledThrough.IsZero() {
		t.Fatalf("status with no round: %+v %v", st2, err)
	}
}

// TestRerunInterruptedRound: at start, the round of the last period is
// run again (for that period) only if it began, did not complete and is
// not settled; each rerun is counted and wakes settlement.
func TestRerunInterruptedRound(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	t1 := t0.Add(time.Minute)
	for _, tc := range []struct {
		name                string
		last, done, settled time.Time
		rerun               bool
	}{
		{"no round yet", time.Time{}, time.Time{}, time.Time{}, false},
		{"last round completed", t1, t1, t0, false},
		{"last round settled", t1, t0, t1, false},
		{"last round interrupted", t1, t0, t0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, 0)
			nano := func(x time.Time) int64 {
				if x.IsZero() {
					return 0
				}
				return x.UnixNano()
			}
			w.setCounters(map[string]int64{counterLastRound: nano(tc.last), CounterRoundDone: nano(tc.done),
				CounterSettled: nano(tc.settled)})
			p := w.schedulePeer()
			if err := p.rerunInterrupted(context.Background()); err != nil {
				t.Fatal(err)
			}
			reruns, done := w.counter(CounterRoundsRerun), w.counter(CounterRoundDone)
			woken := len(p.settleNow) == 1
			if tc.rerun {
				if reruns != 1 || done != tc.last.UnixNano() || !woken {
					t.Fatalf("reruns %d, round done %d (want %d), settlement woken %v", reruns, done, tc.last.UnixNano(), woken)
				}
			} else if reruns != 0 || done != nano(tc.done) || woken {
				t.Fatalf("nothing to rerun: reruns %d, round done %d, settlement woken %v", reruns, done, woken)
			}
		})
	}
}

// TestScheduleCountsTheMissedPeriods: a mediator restarted long after
// its last round runs the next round at once (its period is long past)
// and counts the periods in between, in which no round ran, as gaps.
func TestScheduleCountsTheMissedPeriods(t *testing.T) {
	w := newWorld(t, 0)
	p := w.schedulePeer()
	// A long period costs no time (the round is due at once and the test
	// ends after it), and leaves the round 30 s to start: with a period
	// of 4 s, a round that took 3 s to start on a loaded machine would
	// have counted a 10th gap.
	p.Config.Period = 40 * time.Second
	p.Config.OnlineWindow = 10 * time.Millisecond
	// The last round began 10 periods and a quarter ago: 9 whole periods
	// passed without one. The round runs at once, well within the three
	// quarters of a period left before a 10th would have passed.
	last := time.Now().Add(-10*p.Config.Period - p.Config.Period/4)
	w.setCounters(map[string]int64{counterLastRound: last.UnixNano(), CounterRoundDone: last.UnixNano()})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.schedule(ctx) }()
	deadline := time.Now().Add(time.Minute)
	for w.counter(CounterRoundDone) == last.UnixNano() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	roundAt := time.Unix(0, w.counter(CounterRoundDone))
	if gaps := w.counter(CounterPeriodGaps); gaps != 9 {
		t.Fatalf("%d gaps counted, want 9 (the round ran %s after the last, periods of %s)", gaps, roundAt.Sub(last), p.Config.Period)
	}
	if got := w.counter(counterLastRound); got != roundAt.UnixNano() {
		t.Fatalf("last round %d, want the round's start %d", got, roundAt.UnixNano())
	}
}
