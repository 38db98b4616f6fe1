package wallet

import (
	"context"
	"testing"

	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
)

// TestPayoutInputReorganisedAway: a payout spends a deposit whose block a
// reorganisation takes away for good (the deposit is not mined again).
// The payout cannot be mined; once the input has been gone MinConf blocks
// the payout is abandoned, the node's balance returns and a new payout
// from another deposit pays it; nothing stays in flight, the lost deposit
// is the client's debt, and the books balance.
func TestPayoutInputReorganisedAway(t *testing.T) {
	chain := newFakeChain(9)
	w := newTestWallet(t, "regtest", func(c *Config) { c.Chain = chain; c.MinConf = 2 })
	ctx := context.Background()
	old := payoutInputReorganisedAway(t, chain, w, nil)
	list, _ := w.Payouts()
	if list[0].State == PayoutAbandoned {
		t.Fatal("abandoned before the input was gone MinConf blocks")
	}
	chain.mine(1)
	rep, err := w.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	list, _ = w.Payouts()
	if list[0].State != PayoutAbandoned || len(rep.Abandoned) != 1 {
		t.Fatalf("payout whose input left the chain: %+v, report %+v", list[0], rep)
	}
	if b := mustBal(t, w, AcctPayoutInflight); b != 0 {
		t.Fatalf("%d sat still in flight", b)
	}
	if b := mustBal(t, w, NodeAccount("n")); b != 100_000 {
		t.Fatalf("node balance %d after the abandon, want 100000", b)
	}
	if b := mustBal(t, w, DebtAccount("acct")); b >= 0 {
		t.Fatalf("the lost deposit is no debt: %d", b)
	}
	// Re-queued: another deposit pays it.
	fakeDeposit(t, chain, w, "other", 500_000, 2)
	chain.mine(2)
	mustSync(t, w)
	p, err := w.Payout(ctx)
	if err != nil || p == nil || p.ID == old.ID {
		t.Fatalf("new payout: %+v %v", p, err)
	}
	chain.mine(2)
	mustSync(t, w)
	if b := mustBal(t, w, PaidAccount("n")); b != p.Amount || mustBal(t, w, AcctPayoutInflight) != 0 {
		t.Fatalf("paid %d, want %d", b, p.Amount)
	}
	if err := w.CheckLedger(); err != nil {
		t.Fatal(err)
	}
}

// TestPaymentToChangeAddressSurfaced: a payment to a wallet change address
// that no payout made is reported (and logged), not silently absorbed.
func TestPaymentToChangeAddressSurfaced(t *testing.T) {
	chain := newFakeChain(11)
	w := newTestWallet(t, "regtest", func(c *Config) { c.Chain = chain; c.MinConf = 1 })
	ctx := context.Background()
	fakeDeposit(t, chain, w, "acct", 1_000_000, 1)
	chain.mine(1)
	mustSync(t, w)
	settleHeld(t, w, 1, "n", "acct", 100)
	p, err := w.Payout(ctx)
	if err != nil || p == nil || p.ChangeVout < 0 {
		t.Fatalf("payout with change: %+v %v", p, err)
	}
	ptx, _ := p.tx()
	chain.mine(1)
	if rep, err := w.Sync(ctx); err != nil || len(rep.Stray) != 0 {
		t.Fatalf("a payout's own change reported stray: %+v %v", rep, err)
	}
	stray := wire.NewMsgTx(2)
	stray.AddTxIn(wire.NewTxIn(wire.NewOutPoint(&chainhash.Hash{7, 0xee}, 0), nil, nil))
	stray.AddTxOut(wire.NewTxOut(12_345, ptx.TxOut[p.ChangeVout].PkScript))
	if _, err := chain.SendRawTransaction(stray, false); err != nil {
		t.Fatal(err)
	}
	chain.mine(1)
	rep, err := w.Sync(ctx)
	if err != nil || len(rep.Stray) != 1 {
		t.Fatalf("payment to a change address: %+v %v", rep, err)
	}
}

// payoutInputReorganisedAway pays node n 100,000 sat of account acct's
// deposit (MinConf 2), then a reorganisation takes the deposit's block
// away for good (and the payout that spends it, still in the mempool), and
// a Sync three blocks later notes the input missing. pay makes the payout
// (nil: a broadcast one, w.Payout); it returns the payout.
func payoutInputReorganisedAway(t *testing.T, chain *fakeChain, w *Wallet, pay func() (*Payout, error)) *Payout {
	t.Helper()
	dep := fakeDeposit(t, chain, w, "acct", 1_000_000, 1)
	chain.mine(2)
	mustSync(t, w)
	settleHeld(t, w, 1, "n", "acct", 100)
	if pay == nil {
		pay = func() (*Payout, error) { return w.Payout(context.Background()) }
	}
	old, err := pay()
	if err != nil || old == nil {
		t.Fatalf("payout: %+v %v", old, err)
	}
	chain.reorg(2, func(tx *wire.MsgTx, _ bool) bool { return tx.TxHash() != dep.TxHash() })
	chain.gone = map[chainhash.Hash]bool{dep.TxHash(): true}
	chain.mine(3)
	mustSync(t, w)
	return old
}
