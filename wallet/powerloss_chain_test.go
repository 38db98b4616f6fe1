package wallet

import (
	"context"
	"errors"
	"testing"

	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Power-loss tests of the wallet's writes that need a chain (the fake one):
// a Sync's credits and confirmations, a payout's record and its broadcast
// state, an abandon. Each cuts the power right after the call that
// acknowledges the write (or, for the payout's record, the moment the node
// has its transaction), before any later synced commit could make it
// durable too, and checks on the state the cut left.

// onMem puts the wallet's database on mem and keeps its Config in cfg.
func onMem(mem *vfs.MemFS, cfg *Config) func(*Config) {
	return func(c *Config) {
		c.FS = mem
		*cfg = *c
	}
}

// reopenAfterCut opens the wallet on fs, what a power cut left.
func reopenAfterCut(t *testing.T, cfg Config, fs vfs.FS) *Wallet {
	t.Helper()
	cfg.FS = fs
	w, err := Open(cfg)
	if err != nil {
		t.Fatalf("the wallet does not open after the power cut: %v", err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

// TestPowerLossSyncCredits: a Sync credits a deposit that reached its
// confirmations, and later confirms a mined payout (settleConfirmations),
// and returns; the power is cut at once. Both are there after the cut, and
// a Sync after it credits and pays nothing a second time.
func TestPowerLossSyncCredits(t *testing.T) {
	mem := vfs.NewCrashableMem()
	chain := newFakeChain(31)
	var cfg Config
	w := newTestWallet(t, "regtest", func(c *Config) { c.Chain = chain; c.MinConf = 2; onMem(mem, &cfg)(c) })
	ctx := context.Background()
	fakeDeposit(t, chain, w, "acct", 1_000_000, 1)
	chain.mine(2)
	if rep := mustSync(t, w); len(rep.Credited) != 1 {
		t.Fatalf("deposit not credited: %+v", rep)
	}
	w1 := reopenAfterCut(t, cfg, mem.CrashClone(vfs.CrashCloneCfg{}))
	if b := mustBal(t, w1, EscrowAccount("acct")); b != 1_000_000 {
		t.Fatalf("deposit credited by a Sync that returned, after the power cut: escrow %d, want 1000000", b)
	}
	if rep := mustSync(t, w1); len(rep.Credited) != 0 || mustBal(t, w1, EscrowAccount("acct")) != 1_000_000 {
		t.Fatalf("a Sync after the power cut credited the deposit again: %+v, escrow %d", rep, mustBal(t, w1, EscrowAccount("acct")))
	}
	w1.Close()

	// A payout mined, then confirmed by the same Sync that credits a
	// second deposit.
	settleHeld(t, w, 1, "n", "acct", 100)
	p, err := w.Payout(ctx)
	if err != nil || p == nil {
		t.Fatalf("payout: %+v %v", p, err)
	}
	fakeDeposit(t, chain, w, "other", 300_000, 2)
	chain.mine(2)
	rep := mustSync(t, w)
	if len(rep.Confirmed) != 1 || len(rep.Credited) != 1 {
		t.Fatalf("payout not confirmed or deposit not credited: %+v", rep)
	}
	w2 := reopenAfterCut(t, cfg, mem.CrashClone(vfs.CrashCloneCfg{}))
	if b := mustBal(t, w2, PaidAccount("n")); b != p.Amount {
		t.Fatalf("payout %d confirmed by a Sync that returned, after the power cut: paid %d, want %d", p.ID, b, p.Amount)
	}
	if b := mustBal(t, w2, EscrowAccount("other")); b != 300_000 {
		t.Fatalf("second deposit credited by a Sync that returned, after the power cut: escrow %d, want 300000", b)
	}
	mustSync(t, w2)
	if b := mustBal(t, w2, PaidAccount("n")); b != p.Amount || mustBal(t, w2, EscrowAccount("other")) != 300_000 {
		t.Fatalf("a Sync after the power cut paid or credited again: paid %d (want %d), escrow %d", b, p.Amount, mustBal(t, w2, EscrowAccount("other")))
	}
	if err := w2.CheckLedger(); err != nil {
		t.Fatal(err)
	}
}

// cutAtSend is a fakeChain that takes the state a power cut would leave
// at the moment the node accepts the first transaction sent once armed.
type cutAtSend struct {
	*fakeChain
	mem   *vfs.MemFS
	armed bool
	cut   *vfs.MemFS
}

func (c *cutAtSend) SendRawTransaction(tx *wire.MsgTx, high bool) (*chainhash.Hash, error) {
	if c.armed && c.cut == nil {
		c.cut = c.mem.CrashClone(vfs.CrashCloneCfg{})
	}
	return c.fakeChain.SendRawTransaction(tx, high)
}

// TestPowerLossPayoutBroadcast cuts the power twice over one payout: the
// moment the node has its transaction (so the payout's record must be
// durable before the send, or the wallet would pay the node again from the
// coins it no longer knows are spent), and right after Payout returned it
// as broadcast.
func TestPowerLossPayoutBroadcast(t *testing.T) {
	mem := vfs.NewCrashableMem()
	chain := &cutAtSend{fakeChain: newFakeChain(32), mem: mem}
	var cfg Config
	w := newTestWallet(t, "regtest", func(c *Config) { c.Chain = chain; c.MinConf = 2; onMem(mem, &cfg)(c) })
	ctx := context.Background()
	fakeDeposit(t, chain.fakeChain, w, "acct", 1_000_000, 1)
	chain.mine(2)
	mustSync(t, w)
	settleHeld(t, w, 1, "n", "acct", 100)
	chain.armed = true
	p, err := w.Payout(ctx)
	if err != nil || p == nil || chain.cut == nil {
		t.Fatalf("payout: %+v %v (sent: %v)", p, err, chain.cut != nil)
	}
	if p.State != PayoutBroadcast {
		t.Fatalf("payout returned %s, want broadcast", p.State)
	}
	afterReturn := mem.CrashClone(vfs.CrashCloneCfg{})

	// Right after Payout returned (read only: the chain is shared).
	w2 := reopenAfterCut(t, cfg, afterReturn)
	if got := onlyPayout(t, w2); got.State != PayoutBroadcast {
		t.Fatalf("payout %d returned as broadcast, after the power cut: %s", p.ID, got.State)
	}
	w2.Close()

	// At the send.
	w1 := reopenAfterCut(t, cfg, chain.cut)
	list, err := w1.Payouts()
	if err != nil || len(list) != 1 || list[0].TxID != p.TxID {
		t.Fatalf("payout %s, in the node's hands before the power cut, unknown to the wallet after it: %+v %v", p.TxID, list, err)
	}
	chain.mine(2)
	mustSync(t, w1)
	if again, err := w1.Payout(ctx); err != nil || again != nil {
		t.Fatalf("after the power cut at the send: a second payout %+v %v", again, err)
	}
	if b := mustBal(t, w1, PaidAccount("n")); b != p.Amount {
		t.Fatalf("after the power cut at the send: paid %d, want %d once", b, p.Amount)
	}
	if b := mustBal(t, w1, AcctPayoutInflight); b != 0 {
		t.Fatalf("after the power cut at the send: %d sat still in flight", b)
	}
	if err := w1.CheckLedger(); err != nil {
		t.Fatal(err)
	}
}

// TestPowerLossAbandonPayout: a conflicted payout is abandoned
// (AbandonPayout returned); the power is cut at once. The payout is still
// abandoned after the cut and its node's balance is back, once.
func TestPowerLossAbandonPayout(t *testing.T) {
	mem := vfs.NewCrashableMem()
	var cfg Config
	_, _, old, _, _ := abandonedSetup(t, 33, onMem(mem, &cfg))
	w := reopenAfterCut(t, cfg, mem.CrashClone(vfs.CrashCloneCfg{}))
	debit := old.Outputs[0].Debit
	if p := payoutByID(t, w, old.ID); p.State != PayoutAbandoned {
		t.Fatalf("payout %d abandoned before the power cut is %s after it", old.ID, p.State)
	}
	if b := mustBal(t, w, NodeAccount("n")); b != debit {
		t.Fatalf("node balance %d after the power cut, want %d given back by the abandon", b, debit)
	}
	if b := mustBal(t, w, AcctPayoutInflight); b != 0 {
		t.Fatalf("%d sat still in flight after the power cut", b)
	}
	if err := w.AbandonPayout(old.ID); !errors.Is(err, ErrNotConflicted) {
		t.Fatalf("abandoning payout %d a second time after the power cut: %v", old.ID, err)
	}
	if err := w.CheckLedger(); err != nil {
		t.Fatal(err)
	}
}

// TestPowerLossAbandonOrphaned: a Sync abandons a payout whose input left
// the best chain (abandonOrphaned) and reports it; the power is cut at
// once. The payout is still abandoned after the cut, its node's balance is
// back and nothing is in flight.
func TestPowerLossAbandonOrphaned(t *testing.T) {
	mem := vfs.NewCrashableMem()
	chain := newFakeChain(34)
	var cfg Config
	w := newTestWallet(t, "regtest", func(c *Config) { c.Chain = chain; c.MinConf = 2; onMem(mem, &cfg)(c) })
	old := payoutInputReorganisedAway(t, chain, w, nil)
	chain.mine(1)
	rep := mustSync(t, w)
	if len(rep.Abandoned) != 1 {
		t.Fatalf("payout whose input left the chain not abandoned: %+v", rep)
	}
	w1 := reopenAfterCut(t, cfg, mem.CrashClone(vfs.CrashCloneCfg{}))
	if p := payoutByID(t, w1, old.ID); p.State != PayoutAbandoned {
		t.Fatalf("payout %d reported abandoned by a Sync that returned, after the power cut: %s", old.ID, p.State)
	}
	if b := mustBal(t, w1, NodeAccount("n")); b != old.Outputs[0].Debit {
		t.Fatalf("node balance %d after the power cut, want %d given back by the abandon", b, old.Outputs[0].Debit)
	}
	if b := mustBal(t, w1, AcctPayoutInflight); b != 0 {
		t.Fatalf("%d sat still in flight after the power cut", b)
	}
	if err := w1.CheckLedger(); err != nil {
		t.Fatal(err)
	}
}
