package wallet

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/fincrypt/fincrypt/internal/powerloss"
)

// cutFS is a file system on which the power is cut before the mutating
// operation numbered cutAt (0: the first): what the disk holds then is
// kept in clone (only what was synced), and every operation from then on
// fails, as the writer would never run again.
type cutFS struct {
	vfs.FS
	mem   *vfs.MemFS
	ops   int
	cutAt int
	clone *vfs.MemFS
}

var errPowerCut = errors.New("power cut")

func (c *cutFS) step() error {
	if c.clone != nil {
		return errPowerCut
	}
	if c.ops == c.cutAt {
		c.clone = c.mem.CrashClone(vfs.CrashCloneCfg{})
		return errPowerCut
	}
	c.ops++
	return nil
}

func (c *cutFS) MkdirAll(dir string, perm os.FileMode) error {
	if err := c.step(); err != nil {
		return err
	}
	return c.FS.MkdirAll(dir, perm)
}

func (c *cutFS) Create(name string, cat vfs.DiskWriteCategory) (vfs.File, error) {
	if err := c.step(); err != nil {
		return nil, err
	}
	f, err := c.FS.Create(name, cat)
	if err != nil {
		return nil, err
	}
	return &cutFile{File: f, fs: c}, nil
}

func (c *cutFS) Link(oldname, newname string) error {
	if err := c.step(); err != nil {
		return err
	}
	return c.FS.Link(oldname, newname)
}

func (c *cutFS) Remove(name string) error {
	if err := c.step(); err != nil {
		return err
	}
	return c.FS.Remove(name)
}

func (c *cutFS) OpenDir(name string) (vfs.File, error) {
	f, err := c.FS.OpenDir(name)
	if err != nil {
		return nil, err
	}
	return &cutFile{File: f, fs: c}, nil
}

type cutFile struct {
	vfs.File
	fs *cutFS
}

func (f *cutFile) Write(p []byte) (int, error) {
	if err := f.fs.step(); err != nil {
		return 0, err
	}
	return f.File.Write(p)
}

func (f *cutFile) Sync() error {
	if err := f.fs.step(); err != nil {
		return err
	}
	return f.File.Sync()
}

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
			mem := vfs.NewCrashableMem()
			fs := &cutFS{FS: mem, mem: mem, cutAt: cutAt}
			err := writeSeedFS(fs, "/w", seed, testPass, "regtest", cheapKDF)
			acked := err == nil
			if acked {
				fs.clone = mem.CrashClone(vfs.CrashCloneCfg{})
			} else if !errors.Is(err, errPowerCut) {
				t.Fatalf("cut at %d: %v", cutAt, err)
			}
			got, _, err := openSeedFS(fs.clone, "/w", testPass)
			switch {
			case err == nil && !bytes.Equal(got, seed):
				t.Fatalf("cut at %d: the seed reads back different", cutAt)
			case err != nil && acked:
				t.Fatalf("seed acknowledged, then after a power cut: %v", err)
			case err != nil && !errors.Is(err, ErrNoSeed):
				t.Fatalf("cut at %d: a damaged seed file: %v", cutAt, err)
			case err != nil:
				// No seed: writing it again after the reboot works.
				if err := writeSeedFS(fs.clone, "/w", seed, testPass, "regtest", cheapKDF); err != nil {
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
		rng := rand.New(rand.NewPCG(uint64(seed), 9))
		mem := vfs.NewCrashableMem()
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
		clone := mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(50), RNG: rand.New(rand.NewPCG(uint64(seed), 10))})
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
