package wallet

import (
	"fmt"
	"testing"
	"time"
)

// credit credits a confirmed deposit of sat to acct through the same path
// as the chain watcher (creditDeposit).
func credit(t *testing.T, w *Wallet, acct string, sat int64, n int) {
	t.Helper()
	tx := w.begin()
	defer tx.discard()
	u := &utxo{Value: sat, Account: acct, Height: int64(n), Block: fmt.Sprintf("%064x", n), Gen: int64(n)}
	if _, err := w.creditDeposit(tx, fmt.Sprintf("%064x:0", n), u, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := tx.commit(); err != nil {
		t.Fatal(err)
	}
}

// TestDustCannotEndDelinquency: a delinquent account that deposits dust
// stays delinquent, cannot place, and keeps its release time, also after a
// period the dust covers; a deposit that covers the runway ends it.
func TestDustCannotEndDelinquency(t *testing.T) {
	w := newTestWallet(t, "regtest", func(c *Config) { c.GracePeriod = 48 * time.Hour; c.RunwayPeriods = 3 })
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	period := func(n uint64) *PeriodReport {
		t.Helper()
		in := settleInput(n, Holding{Node: "n1", Account: "dave", Bytes: 10 * GiB, Passed: true}) // 10000 sat a period
		in.End = start.Add(time.Duration(n) * time.Hour)
		rep, err := w.Settle(in)
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	credit(t, w, "dave", 35_000, 1) // three and a half periods
	if st, _ := w.AccountStatus("dave"); !st.CanPlace() {
		t.Fatalf("new account with escrow cannot place: %+v", st)
	}
	period(1) // 25000 left: under 3 periods
	st, _ := w.AccountStatus("dave")
	if st.Delinquent || st.CanPlace() || st.Needed != 30_000 {
		t.Fatalf("escrow under the runway: %+v", st)
	}
	period(2)
	period(3) // 5000 left
	if rep := period(4); len(rep.Delinquent) != 1 {
		t.Fatalf("period 4 not short: %+v", rep)
	}
	st, _ = w.AccountStatus("dave")
	release := st.ReleaseAt
	if !st.Delinquent || !release.Equal(start.Add(4*time.Hour+48*time.Hour)) {
		t.Fatalf("after running out: %+v", st)
	}
	// Dust: still delinquent, same release time, no placement.
	for i := range 3 {
		credit(t, w, "dave", 1000, 10+i)
		if st, _ = w.AccountStatus("dave"); !st.Delinquent || st.CanPlace() || !st.ReleaseAt.Equal(release) {
			t.Fatalf("dust deposit %d: %+v", i, st)
		}
	}
	// A deposit that pays a period but not the runway does not end it
	// through settlement either.
	credit(t, w, "dave", 12_000, 20) // 15000: one period and a half
	if rep := period(5); len(rep.Delinquent) != 0 {
		t.Fatalf("covered period reported short: %+v", rep)
	}
	if st, _ = w.AccountStatus("dave"); !st.Delinquent || !st.ReleaseAt.Equal(release) {
		t.Fatalf("covered period under the runway ended delinquency or moved the release: %+v", st)
	}
	if r, _ := w.Releasable(release); len(r) != 1 {
		t.Fatalf("not releasable at its release time: %v", r)
	}
	// Enough for the runway: delinquency ends, placement resumes.
	credit(t, w, "dave", 30_000, 21)
	if st, _ = w.AccountStatus("dave"); st.Delinquent || !st.CanPlace() {
		t.Fatalf("runway deposit: %+v", st)
	}
	if err := w.CheckLedger(); err != nil {
		t.Fatal(err)
	}
}
