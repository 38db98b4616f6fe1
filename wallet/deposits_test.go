package wallet

import (
	"slices"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"
)

// TestDepositCreditedAtMinConfOnce: a deposit is credited to its own
// account in the Sync that sees its MinConf-th confirmation, not one block
// earlier, and once: later Syncs credit nothing more. Two clients paying in
// the same block each get their own deposit; a payment to a change address
// is nobody's.
func TestDepositCreditedAtMinConfOnce(t *testing.T) {
	chain := newFakeChain(41)
	w := newTestWallet(t, "regtest", func(c *Config) { c.Chain = chain; c.MinConf = 3 })
	fakeDeposit(t, chain, w, "alice", 70_000, 1)
	fakeDeposit(t, chain, w, "bob", 20_000, 2)
	chain.mine(2) // two confirmations
	if rep := mustSync(t, w); len(rep.Credited) != 0 {
		t.Fatalf("credited with 2 of 3 confirmations: %+v", rep)
	}
	for _, a := range []string{"alice", "bob"} {
		if b := mustBal(t, w, EscrowAccount(a)); b != 0 {
			t.Fatalf("%s's escrow %d before MinConf", a, b)
		}
	}
	if st, err := w.AccountStatus("alice"); err != nil || st.Pending != 70_000 {
		t.Fatalf("alice's deposit not pending before MinConf: %+v %v", st, err)
	}
	chain.mine(1) // the third
	if rep := mustSync(t, w); len(rep.Credited) != 2 {
		t.Fatalf("not credited at exactly MinConf confirmations: %+v", rep)
	}
	for i := range 3 {
		chain.mine(1)
		if rep := mustSync(t, w); len(rep.Credited) != 0 {
			t.Fatalf("Sync %d after the credit credited again: %+v", i, rep)
		}
	}
	if a, b := mustBal(t, w, EscrowAccount("alice")), mustBal(t, w, EscrowAccount("bob")); a != 70_000 || b != 20_000 {
		t.Fatalf("escrows alice %d, bob %d; want 70000 and 20000", a, b)
	}
	if d := mustBal(t, w, AcctExtDeposits); d != -90_000 {
		t.Fatalf("ext:deposits %d, want -90000", d)
	}
	if err := w.CheckLedger(); err != nil {
		t.Fatal(err)
	}
}

// TestDepositReorgDebtAndDelinquency: a reorganisation takes back three
// credited deposits. Carol's escrow still holds hers: it is taken from
// there, no debt, not delinquent. Bob spent part of his: the rest becomes
// his debt and he is delinquent from now. Alice, delinquent since her last
// period, spent all of hers: all of it is debt and her delinquency keeps its
// start. Her later deposits repay the debt first; delinquency ends only with
// the debt repaid and the runway covered.
func TestDepositReorgDebtAndDelinquency(t *testing.T) {
	chain := newFakeChain(43)
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	w := newTestWallet(t, "regtest", func(c *Config) {
		c.Chain = chain
		c.MinConf = 2
		c.RunwayPeriods = 3
		c.Now = func() time.Time { return now }
	})
	deps := []*wire.MsgTx{
		fakeDeposit(t, chain, w, "alice", 100_000, 1),
		fakeDeposit(t, chain, w, "bob", 100_000, 2),
		fakeDeposit(t, chain, w, "carol", 100_000, 3),
	}
	chain.mine(2)
	if rep := mustSync(t, w); len(rep.Credited) != 3 {
		t.Fatalf("deposits not credited: %+v", rep)
	}
	// Alice owes 150 000 for a period (delinquent), bob 60 000.
	in := settleInput(1,
		Holding{Node: "n1", Account: "alice", Bytes: 150 * GiB, Passed: true},
		Holding{Node: "n1", Account: "bob", Bytes: 60 * GiB, Passed: true})
	in.End = now.Add(-time.Hour)
	if _, err := w.Settle(in); err != nil {
		t.Fatal(err)
	}
	st, _ := w.AccountStatus("alice")
	if !st.Delinquent || st.Escrow != 0 {
		t.Fatalf("alice after a period she could not pay: %+v", st)
	}
	aliceSince := st.DelinquentSince

	now = now.Add(24 * time.Hour)
	gone := map[chainhash.Hash]bool{}
	for _, d := range deps {
		gone[d.TxHash()] = true
	}
	chain.reorg(2, func(tx *wire.MsgTx, _ bool) bool { return !gone[tx.TxHash()] })
	chain.gone = gone
	chain.mine(3)
	if rep := mustSync(t, w); len(rep.Reversed) != 3 {
		t.Fatalf("reversed %v, want the three deposits", rep.Reversed)
	}
	want := map[string]struct {
		escrow, debt int64
		delinquent   bool
		since        time.Time
	}{
		"alice": {0, -100_000, true, aliceSince},
		"bob":   {0, -60_000, true, now},
		"carol": {0, 0, false, time.Time{}},
	}
	for a, x := range want {
		st, err := w.AccountStatus(a)
		if err != nil {
			t.Fatal(err)
		}
		if st.Escrow != x.escrow || st.Debt != x.debt || st.Delinquent != x.delinquent || !st.DelinquentSince.Equal(x.since) {
			t.Fatalf("%s after the reorg: escrow %d debt %d delinquent %v since %v; want %d, %d, %v, %v",
				a, st.Escrow, st.Debt, st.Delinquent, st.DelinquentSince, x.escrow, x.debt, x.delinquent, x.since)
		}
	}
	if d := mustBal(t, w, AcctExtDeposits); d != 0 {
		t.Fatalf("ext:deposits %d after every deposit was reversed", d)
	}

	// Alice pays 30 000: all of it repays debt.
	now = now.Add(time.Hour)
	fakeDeposit(t, chain, w, "alice", 30_000, 4)
	chain.mine(2)
	mustSync(t, w)
	if st, _ := w.AccountStatus("alice"); st.Debt != -70_000 || st.Escrow != 0 || !st.Delinquent || !st.DelinquentSince.Equal(aliceSince) {
		t.Fatalf("alice after repaying 30 000 of 100 000: %+v", st)
	}
	// Then 70 000 of debt and exactly the runway, 3 × 150 000, in one
	// deposit: the debt is gone, the escrow covers the runway, she is no
	// longer delinquent.
	fakeDeposit(t, chain, w, "alice", 70_000+450_000, 5)
	chain.mine(2)
	mustSync(t, w)
	if st, _ := w.AccountStatus("alice"); st.Debt != 0 || st.Escrow != 450_000 || st.Delinquent || !st.CanPlace() {
		t.Fatalf("alice after repaying her debt and covering the runway: %+v", st)
	}
	if err := w.CheckLedger(); err != nil {
		t.Fatal(err)
	}
}

// TestPayoutConfirmedAtMinConf: a mined payout moves from flight to the
// node's paid account in the Sync that sees its MinConf-th confirmation,
// once.
func TestPayoutConfirmedAtMinConf(t *testing.T) {
	chain := newFakeChain(47)
	w := newTestWallet(t, "regtest", func(c *Config) { c.Chain = chain; c.MinConf = 3 })
	fakeDeposit(t, chain, w, "acct", 500_000, 1)
	chain.mine(3)
	mustSync(t, w)
	settleHeld(t, w, 1, "n", "acct", 100)
	p, err := w.Payout(t.Context())
	if err != nil || p == nil {
		t.Fatalf("payout: %+v %v", p, err)
	}
	chain.mine(2)
	if rep := mustSync(t, w); len(rep.Confirmed) != 0 || payoutByID(t, w, p.ID).State != PayoutMined {
		t.Fatalf("confirmed with 2 of 3 confirmations: %+v", rep)
	}
	chain.mine(1)
	if rep := mustSync(t, w); !slices.Equal(rep.Confirmed, []uint64{p.ID}) {
		t.Fatalf("not confirmed at exactly MinConf: %+v", rep)
	}
	chain.mine(1)
	if rep := mustSync(t, w); len(rep.Confirmed) != 0 {
		t.Fatalf("confirmed again: %+v", rep)
	}
	if b := mustBal(t, w, PaidAccount("n")); b != p.Amount || mustBal(t, w, AcctPayoutInflight) != 0 {
		t.Fatalf("paid %d (want %d), in flight %d", b, p.Amount, mustBal(t, w, AcctPayoutInflight))
	}
	if err := w.CheckLedger(); err != nil {
		t.Fatal(err)
	}
}

// TestCoinbaseDepositWaitsForMaturity: a block reward paid to a deposit
// address is credited, and spendable by a payout, only at the network's
// coinbase maturity (100 blocks), not at MinConf: a node refuses a
// transaction that spends it sooner. A payout in the meantime spends the
// other coins, although the reward is the wallet's largest.
func TestCoinbaseDepositWaitsForMaturity(t *testing.T) {
	chain := newFakeChain(53)
	w := newTestWallet(t, "regtest", func(c *Config) { c.Chain = chain; c.MinConf = 3 })
	fakeDeposit(t, chain, w, "alice", 500_000, 1)
	addr, err := w.DepositAddress("bob")
	if err != nil {
		t.Fatal(err)
	}
	dec, _ := btcutil.DecodeAddress(addr, w.Network())
	script, _ := txscript.PayToAddrScript(dec)
	reward := chain.mineReward(script, 5_000_000)
	// A reward to one of the wallet's change addresses: no client's, so
	// never credited, but the wallet's coin once mature.
	tx := w.begin()
	change, _, err := w.newChangeScript(tx)
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.commit(); err != nil {
		t.Fatal(err)
	}
	chain.mineReward(change, 3_000_000)
	chain.mine(1) // MinConf for the deposit and bob's reward
	maturity := int(w.Network().CoinbaseMaturity)
	rep := mustSync(t, w)
	if want := []string{fakeOutPoint(reward)}; len(rep.Credited) != 1 || slices.Equal(rep.Credited, want) {
		t.Fatalf("credited %v at MinConf, want alice's deposit only (not the reward %v)", rep.Credited, want)
	}
	if b := mustBal(t, w, EscrowAccount("bob")); b != 0 {
		t.Fatalf("bob's escrow %d from a block reward 3 blocks deep (maturity %d)", b, maturity)
	}
	chain.mine(1) // and for the change address's reward
	mustSync(t, w)
	if _, spendable, err := w.OnChain(); err != nil || spendable != 500_000 {
		t.Fatalf("spendable %d sat (%v), want alice's 500000 alone: the rewards are immature", spendable, err)
	}
	settleHeld(t, w, 1, "n", "alice", 100)
	p, err := w.Payout(t.Context())
	if err != nil || p == nil {
		t.Fatalf("payout: %+v %v", p, err)
	}
	if p.State != PayoutBroadcast {
		t.Fatalf("payout %s (%s), want broadcast: it spent the immature reward?", p.State, p.LastError)
	}
	chain.mine(maturity - 5) // bob's reward one block short of maturity
	mustSync(t, w)
	if b := mustBal(t, w, EscrowAccount("bob")); b != 0 {
		t.Fatalf("bob's escrow %d one block before maturity", b)
	}
	chain.mine(1)
	mustSync(t, w)
	if b := mustBal(t, w, EscrowAccount("bob")); b != 5_000_000 {
		t.Fatalf("bob's escrow %d at maturity, want 5000000", b)
	}
	chain.mine(1)
	mustSync(t, w)
	if _, spendable, err := w.OnChain(); err != nil || spendable < 5_000_000+3_000_000 {
		t.Fatalf("spendable %d sat (%v) with both rewards mature", spendable, err)
	}
	if err := w.CheckLedger(); err != nil {
		t.Fatal(err)
	}
}

func fakeOutPoint(tx *wire.MsgTx) string {
	return wire.OutPoint{Hash: tx.TxHash(), Index: 0}.String()
}
