package wallet

import (
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// TestPowerLossWalletWrites cuts the power right after a wallet write that
// no other power-loss test ends on: a deposit address handed out
// (DepositAddress) and a node's payout address (SetPayoutAddress). Each is
// acknowledged when its call returns. A commit of either without
// pebble.Sync is lost in a power cut that comes before the next synced
// commit (which would make it durable too), so the cut comes at once.
func TestPowerLossWalletWrites(t *testing.T) {
	dir := t.TempDir()
	if err := CreateSeed(dir, testPass, "regtest", cheapKDF); err != nil {
		t.Fatal(err)
	}
	mem := vfs.NewCrashableMem()
	cfg := Config{Dir: dir, Passphrase: testPass, Logger: testLogger(), FS: mem}
	w, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	alice, err := w.DepositAddress("alice")
	if err != nil {
		t.Fatal(err)
	}
	afterDeposit := mem.CrashClone(vfs.CrashCloneCfg{})
	payTo := regtestAddr(t)
	if err := w.SetPayoutAddress("node1", payTo); err != nil {
		t.Fatal(err)
	}
	afterPayTo := mem.CrashClone(vfs.CrashCloneCfg{})
	w.Close()

	reopen := func(fs vfs.FS) *Wallet {
		t.Helper()
		c := cfg
		c.FS = fs
		w, err := Open(c)
		if err != nil {
			t.Fatalf("the wallet does not open after the power cut: %v", err)
		}
		t.Cleanup(func() { w.Close() })
		return w
	}
	w = reopen(afterDeposit)
	bob, err := w.DepositAddress("bob")
	if err != nil {
		t.Fatal(err)
	}
	if bob == alice {
		t.Fatalf("deposit address %s handed to alice before the power cut went to bob after it: alice's deposits would be credited to bob", alice)
	}
	if again, err := w.DepositAddress("alice"); err != nil || again != alice {
		t.Fatalf("alice's deposit address after the power cut: %q, %v; want %s, acknowledged before it", again, err, alice)
	}

	w = reopen(afterPayTo)
	tx := w.begin()
	got, ok, err := tx.get(pNodeAddr + "node1")
	tx.discard()
	if err != nil || !ok || string(got) != payTo {
		t.Fatalf("node1's payout address after the power cut: %q (found %v, %v); want %s, acknowledged before it", got, ok, err, payTo)
	}
}
