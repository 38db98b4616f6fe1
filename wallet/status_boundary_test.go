package wallet

import (
	"testing"
	"time"
)

// Tests written against the mutants of settle.go 236-508 (the end of a
// period's settlement, delinquency, the status a client and placement
// rely on); docs/TESTING.md, "wallet, seventh session".

// TestAccountStatusBoundaries: each rule of CanPlace, Runway and
// LowEscrow at its edge and one step past it.
func TestAccountStatusBoundaries(t *testing.T) {
	const day = 24 * time.Hour
	ok := AccountStatus{Escrow: 300, Needed: 300, LastCharge: 100, PeriodsLeft: 3}
	for _, tc := range []struct {
		name string
		mod  func(s *AccountStatus)
		want bool
	}{
		{"escrow exactly the runway", func(s *AccountStatus) {}, true},
		{"one satoshi under the runway", func(s *AccountStatus) { s.Escrow = 299 }, false},
		{"no escrow, nothing needed", func(s *AccountStatus) { s.Escrow, s.Needed = 0, 0 }, false},
		{"1 sat, 1 needed", func(s *AccountStatus) { s.Escrow, s.Needed = 1, 1 }, true},
		{"in debt", func(s *AccountStatus) { s.Debt = -1 }, false},
		{"delinquent", func(s *AccountStatus) { s.Delinquent = true }, false},
	} {
		s := ok
		tc.mod(&s)
		if got := s.CanPlace(); got != tc.want {
			t.Errorf("CanPlace, %s (%+v): %v, want %v", tc.name, s, got, tc.want)
		}
	}
	for _, tc := range []struct {
		left   int64
		period time.Duration
		runway time.Duration
	}{{-1, day, -1}, {0, day, 0}, {1, day, day}, {3, time.Hour, 3 * time.Hour}, {14, day, WarnRunway}} {
		s := AccountStatus{PeriodsLeft: tc.left}
		if got := s.Runway(tc.period); got != tc.runway {
			t.Errorf("Runway of %d periods of %v: %v, want %v", tc.left, tc.period, got, tc.runway)
		}
	}
	for _, tc := range []struct {
		name string
		s    AccountStatus
		low  bool
	}{
		{"runway exactly WarnRunway", AccountStatus{PeriodsLeft: 14}, false},
		{"a period less", AccountStatus{PeriodsLeft: 13}, true},
		{"no period left", AccountStatus{PeriodsLeft: 0}, true},
		{"nothing charged yet", AccountStatus{PeriodsLeft: -1}, false},
		{"nothing charged, in debt", AccountStatus{PeriodsLeft: -1, Debt: -1}, true},
		{"nothing charged, delinquent", AccountStatus{PeriodsLeft: -1, Delinquent: true}, true},
	} {
		if got := tc.s.LowEscrow(day); got != tc.low {
			t.Errorf("LowEscrow, %s: %v, want %v", tc.name, got, tc.low)
		}
	}
}

// TestRunwayNeed: RunwayPeriods times the charge, at least 1 sat, and
// saturating at 2^62 instead of overflowing into a negative need (which
// every escrow would cover).
func TestRunwayNeed(t *testing.T) {
	w := newTestWallet(t, "regtest", func(c *Config) { c.RunwayPeriods = 3 })
	edge := int64(1<<62) / 3
	for _, tc := range []struct{ charge, need int64 }{
		{0, 1}, {1, 3}, {7, 21}, {edge, edge * 3}, {edge + 1, 1 << 62}, {1 << 62, 1 << 62},
	} {
		if got := w.runwayNeed(tc.charge); got != tc.need {
			t.Errorf("runwayNeed(%d) = %d, want %d", tc.charge, got, tc.need)
		}
	}
	for _, tc := range []struct {
		escrow, charge int64
		covers         bool
	}{{21, 7, true}, {20, 7, false}, {1, 0, true}, {0, 0, false}} {
		if got := w.coversRunway(tc.escrow, tc.charge); got != tc.covers {
			t.Errorf("coversRunway(%d, %d) = %v, want %v", tc.escrow, tc.charge, got, tc.covers)
		}
	}
}

// TestAccountStatusFromLedger: AccountStatus reads the escrow, the last
// charge, the periods it lasts and the runway needed from a settled period;
// an account never charged has PeriodsLeft -1.
func TestAccountStatusFromLedger(t *testing.T) {
	w := newTestWallet(t, "regtest", func(c *Config) { c.RunwayPeriods = 3 })
	fund(t, w, "dave", 35_000, "d")
	st, err := w.AccountStatus("dave")
	if err != nil || st.PeriodsLeft != -1 || st.LastCharge != 0 || st.Needed != 1 || !st.CanPlace() {
		t.Fatalf("before any period: %+v %v", st, err)
	}
	if _, err := w.Settle(settleInput(1, Holding{Node: "n1", Account: "dave", Bytes: 10 * GiB, Passed: true})); err != nil {
		t.Fatal(err)
	}
	st, err = w.AccountStatus("dave")
	if err != nil || st.Escrow != 25_000 || st.LastCharge != 10_000 || st.PeriodsLeft != 2 || st.Needed != 30_000 || st.CanPlace() {
		t.Fatalf("after a period of 10000 sat: %+v %v", st, err)
	}
}

// TestSettlementEndsDelinquencyOnlyWithRunwayLeft: two delinquent accounts
// get deposits too small for the runway at their last charge (20000 sat a
// period), then a cheaper period (10000) is settled. What is left after it
// decides: 40000 covers three periods of 10000 and ends the delinquency;
// 20000 does not (30000 before the charge would).
func TestSettlementEndsDelinquencyOnlyWithRunwayLeft(t *testing.T) {
	w := newTestWallet(t, "regtest", func(c *Config) { c.RunwayPeriods = 3 })
	settle := func(period uint64, gib int64) {
		t.Helper()
		in := settleInput(period,
			Holding{Node: "n1", Account: "ends", Bytes: gib * GiB, Passed: true},
			Holding{Node: "n1", Account: "stays", Bytes: gib * GiB, Passed: true})
		if _, err := w.Settle(in); err != nil {
			t.Fatal(err)
		}
	}
	fund(t, w, "ends", 5_000, "e1")
	fund(t, w, "stays", 5_000, "s1")
	settle(1, 20) // 20000 owed, 5000 paid: both delinquent
	credit(t, w, "ends", 50_000, 1)
	credit(t, w, "stays", 30_000, 2)
	for _, a := range []string{"ends", "stays"} {
		if st, _ := w.AccountStatus(a); !st.Delinquent || st.Needed != 60_000 {
			t.Fatalf("%s after a deposit under the runway: %+v", a, st)
		}
	}
	settle(2, 10)
	if st, _ := w.AccountStatus("ends"); st.Delinquent || st.Escrow != 40_000 || !st.CanPlace() {
		t.Fatalf("40000 left for a runway of 30000: %+v, want delinquency ended", st)
	}
	if st, _ := w.AccountStatus("stays"); !st.Delinquent || st.Escrow != 20_000 {
		t.Fatalf("20000 left for a runway of 30000: %+v, want still delinquent", st)
	}
}
