package wallet

import (
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/fincrypt/fincrypt/internal/powerloss"
)

// TestPowerLossSettlements runs the wallet's database on a file system that
// loses what was not synced, settles seeded random periods and deposits,
// cuts the power at a random step, and after the "reboot" checks that every
// acknowledged settlement and deposit is there, that the mediator's retry of
// every period (it settles again whatever it did not see acknowledged) pays
// each exactly once, and that the ledger balances.
func TestPowerLossSettlements(t *testing.T) {
	runs := powerloss.Runs(t, powerloss.DefaultRuns)
	dir := t.TempDir()
	if err := CreateSeed(dir, testPass, "regtest", cheapKDF); err != nil {
		t.Fatal(err)
	}
	for seed := 0; seed < runs; seed++ {
		powerLossSettle(t, dir, uint64(seed))
	}
}

func powerLossSettle(t *testing.T, dir string, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 7))
	mem := vfs.NewCrashableMem()
	cfg := Config{Dir: dir, Passphrase: testPass, Logger: testLogger(), FS: mem}
	w, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	type period struct {
		in    PeriodInput
		acked bool
	}
	var periods []period
	deposits := map[string]int64{} // acknowledged, by key
	steps := 5 + rng.IntN(25)
	crashAt := rng.IntN(steps + 1)
	for step := 0; step < crashAt; step++ {
		if rng.IntN(3) == 0 {
			key := strconv.Itoa(step)
			sat := int64(100_000 + rng.IntN(1_000_000))
			fund(t, w, []string{"alice", "bob"}[rng.IntN(2)], sat, key)
			deposits["deposit/"+key] = sat
			continue
		}
		in := settleInput(uint64(len(periods)+1),
			Holding{Node: "n1", Account: "alice", Bytes: int64(1+rng.IntN(10)) * GiB, Passed: rng.IntN(4) > 0},
			Holding{Node: "n2", Account: "bob", Bytes: int64(1+rng.IntN(10)) * GiB, Passed: rng.IntN(4) > 0},
		)
		if _, err := w.Settle(in); err != nil {
			t.Fatal(err)
		}
		periods = append(periods, period{in: in, acked: true})
	}
	clone := mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(50), RNG: rand.New(rand.NewPCG(seed, 8))})
	w.Close()

	cfg.FS = clone
	w, err = Open(cfg)
	if err != nil {
		t.Fatalf("seed %d: the wallet does not open after the power cut: %v", seed, err)
	}
	defer w.Close()
	for key, sat := range deposits {
		e, ok, err := w.EntryByKey(key)
		if err != nil || !ok {
			t.Fatalf("seed %d: acknowledged deposit %s lost (%v)", seed, key, err)
		}
		var credited int64
		for _, p := range e.Postings {
			if p.Amount > 0 {
				credited += p.Amount
			}
		}
		if credited != sat {
			t.Fatalf("seed %d: deposit %s credits %d, acknowledged %d", seed, key, credited, sat)
		}
	}
	before := map[string]int64{}
	for _, a := range []string{NodeAccount("n1"), NodeAccount("n2"), AcctFeesMediator} {
		before[a] = mustBal(t, w, a)
	}
	// The mediator settles every period again: an acknowledged one must
	// come back as a repeat and pay nothing more.
	for _, p := range periods {
		rep, err := w.Settle(p.in)
		if err != nil {
			t.Fatal(err)
		}
		if p.acked && !rep.Repeated {
			t.Fatalf("seed %d: acknowledged period %d was lost: settling it again paid it a second time", seed, p.in.Period)
		}
	}
	for a, b := range before {
		if got := mustBal(t, w, a); got != b {
			t.Fatalf("seed %d: %s went from %d to %d when the settled periods were sent again", seed, a, b, got)
		}
	}
	if err := w.CheckLedger(); err != nil {
		t.Fatalf("seed %d: %v", seed, err)
	}
}
