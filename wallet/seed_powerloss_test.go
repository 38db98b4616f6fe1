package wallet

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/fincrypt/fincrypt/internal/powerloss"
)

// TestPowerLossSeedFile cuts the power before each step of writing the
// wallet's seed file (create, write, sync, link, directory sync, removal of
// the temporary file) and once after it returned: after the "reboot" the
// directory holds either no seed (and a new one can be written) or the
// whole seed, which opens with the passphrase to the bytes imported; once
// ImportSeed has returned, always the latter. Removing the file's Sync or
// the directory's fails it.
func TestPowerLossSeedFile(t *testing.T) {
	runs := powerloss.Runs(t, 3)
	for run := range runs {
		rng := rand.New(rand.NewPCG(uint64(run), 21))
		seed := make([]byte, 32)
		for i := range seed {
			seed[i] = byte(rng.IntN(256))
		}
		for cutAt := 0; ; cutAt++ {
			fs := powerloss.NewCutFS(cutAt)
			err := writeSeedFS(fs, "/w", seed, testPass, "regtest", cheapKDF)
			acked := err == nil
			if acked {
				fs.CutNow()
			} else if !errors.Is(err, powerloss.ErrPowerCut) {
				t.Fatalf("cut at %d: %v", cutAt, err)
			}
			got, _, err := openSeedFS(fs.Clone, "/w", testPass)
			switch {
			case err == nil && !bytes.Equal(got, seed):
				t.Fatalf("cut at %d: the seed reads back different", cutAt)
			case err != nil && acked:
				t.Fatalf("seed acknowledged, then after a power cut: %v", err)
			case err != nil && !errors.Is(err, ErrNoSeed):
				t.Fatalf("cut at %d: a damaged seed file: %v", cutAt, err)
			case err != nil:
				// No seed: writing it again after the reboot works.
				if err := writeSeedFS(fs.Clone, "/w", seed, testPass, "regtest", cheapKDF); err != nil {
					t.Fatalf("cut at %d: writing the seed again: %v", cutAt, err)
				}
			}
			if acked {
				break
			}
		}
	}
}

// TestPowerLossPayout records a payout (coins reserved, the nodes'
// balances moved in flight, committed with pebble.Sync), cuts the power
// with a seeded share of the unsynced writes kept, and after the "reboot"
// checks that the acknowledged payout is all there (its coins reserved, the
// balances in flight) and that asking for a payout again pays nobody a
// second time; the ledger balances. It fails when the commit's Sync is
// removed.
func TestPowerLossPayout(t *testing.T) {
	runs := powerloss.Runs(t, 5)
	dir := t.TempDir()
	if err := CreateSeed(dir, testPass, "regtest", cheapKDF); err != nil {
		t.Fatal(err)
	}
	addrs := []string{regtestAddr(t), regtestAddr(t)}
	for seed := range runs {
		disk := powerloss.NewDisk(uint64(seed), 9)
		rng, mem := disk.Rand, disk.MemFS
		cfg := Config{Dir: dir, Passphrase: testPass, Logger: testLogger(), FS: mem, FeeRate: 10, PayoutThreshold: 1000}
		w, err := Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		addCoin(t, w, "acct", 300_000+int64(rng.IntN(100_000)), 1)
		addCoin(t, w, "acct", 200_000, 2)
		in := PeriodInput{Period: 1, Length: Month, Nodes: []NodeTerms{
			{ID: "a", PriceSatPerGiBMonth: 1000, PayoutAddress: addrs[0]},
			{ID: "b", PriceSatPerGiBMonth: 1000, PayoutAddress: addrs[1]},
		}, Holdings: []Holding{
			{Node: "a", Account: "acct", Bytes: int64(10+rng.IntN(100)) * GiB, Passed: true},
			{Node: "b", Account: "acct", Bytes: int64(10+rng.IntN(100)) * GiB, Passed: true},
		}}
		if _, err := w.Settle(in); err != nil {
			t.Fatal(err)
		}
		p, err := w.WritePayoutPSBT(t.TempDir())
		if err != nil || p == nil {
			t.Fatalf("seed %d: payout: %v", seed, err)
		}
		inflight := mustBal(t, w, AcctPayoutInflight)
		clone := disk.Cut()
		w.Close()

		cfg.FS = clone
		w, err = Open(cfg)
		if err != nil {
			t.Fatalf("seed %d: the wallet does not open after the power cut: %v", seed, err)
		}
		if got := mustBal(t, w, AcctPayoutInflight); got != inflight || inflight == 0 {
			t.Fatalf("seed %d: %d in flight after the power cut, %d acknowledged", seed, got, inflight)
		}
		for _, n := range []string{"a", "b"} {
			if b := mustBal(t, w, NodeAccount(n)); b != 0 {
				t.Fatalf("seed %d: node %s has %d again after its payout was recorded: it would be paid twice", seed, n, b)
			}
		}
		// Asked again, the wallet pays nobody: the payees' balances are in
		// flight and the coins reserved.
		if again, err := w.WritePayoutPSBT(t.TempDir()); err == nil && again != nil {
			t.Fatalf("seed %d: a second payout after the power cut: %+v", seed, again.Outputs)
		}
		if got := mustBal(t, w, AcctPayoutInflight); got != inflight {
			t.Fatalf("seed %d: in flight went from %d to %d", seed, inflight, got)
		}
		if err := w.CheckLedger(); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		w.Close()
	}
}
