package wallet

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"
)

func fakeDeposit(t *testing.T, chain *fakeChain, w *Wallet, acct string, sat int64, tag byte) *wire.MsgTx {
	t.Helper()
	addr, err := w.DepositAddress(acct)
	if err != nil {
		t.Fatal(err)
	}
	dec, _ := btcutil.DecodeAddress(addr, w.Network())
	script, _ := txscript.PayToAddrScript(dec)
	tx := wire.NewMsgTx(2)
	tx.AddTxIn(wire.NewTxIn(wire.NewOutPoint(&chainhash.Hash{tag, 0xee}, 0), nil, nil))
	tx.AddTxOut(wire.NewTxOut(sat, script))
	if _, err := chain.SendRawTransaction(tx, false); err != nil {
		t.Fatal(err)
	}
	return tx
}

// spendElsewhere spends the wallet's coin op in a transaction of its own
// (value sat to an anyone-can-spend output), signed with the wallet's key as
// another user of its seed would, and sends it to the chain.
func spendElsewhere(t *testing.T, chain *fakeChain, w *Wallet, op wire.OutPoint, value int64) *wire.MsgTx {
	t.Helper()
	var u utxo
	tx := w.begin()
	if ok, err := tx.getJSON(pUTXO+op.String(), &u); !ok || err != nil {
		t.Fatal(ok, err)
	}
	tx.discard()
	spend := wire.NewMsgTx(2)
	spend.AddTxIn(wire.NewTxIn(&op, nil, nil))
	spend.AddTxOut(wire.NewTxOut(value, []byte{txscript.OP_TRUE}))
	if err := w.sign(spend, []coin{{op, &u}}); err != nil {
		t.Fatal(err)
	}
	if _, err := chain.SendRawTransaction(spend, false); err != nil {
		t.Fatal(err)
	}
	return spend
}

// broadcastAgain sends payout p's transaction to the chain, as anyone
// holding it (the nodes it pays) can after the wallet gave it up.
func broadcastAgain(t *testing.T, chain *fakeChain, p *Payout) {
	t.Helper()
	raw, err := p.tx()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := chain.SendRawTransaction(raw, false); err != nil {
		t.Fatal(err)
	}
}

// TestConflictedPayout: someone spends the wallet's coin that a recorded
// payout was going to spend. The payout becomes conflicted, can be abandoned
// once the conflict is MinConf deep (the node gets its balance back and is
// paid by a new payout), and if a reorganisation lets the abandoned payout be
// mined after all, the ledger records the double payment instead of going
// wrong.
func TestConflictedPayout(t *testing.T) {
	chain := newFakeChain(5)
	w := newTestWallet(t, "regtest", func(c *Config) { c.Chain = chain; c.MinConf = 2 })
	ctx := context.Background()
	dep := fakeDeposit(t, chain, w, "acct", 1_000_000, 1)
	chain.mine(2)
	mustSync(t, w)
	old := payoutSignedNotSent(t, w, regtestAddr(t))

	// Spend the payout's input elsewhere, signed with the wallet's own key.
	conflict := spendElsewhere(t, chain, w, wire.OutPoint{Hash: dep.TxHash(), Index: 0}, 990_000)
	chain.mine(1)
	mustSync(t, w)
	list, _ := w.Payouts()
	if list[0].State != PayoutConflicted || list[0].ConflictTx != conflict.TxHash().String() {
		t.Fatalf("payout %+v", list[0])
	}
	if err := w.AbandonPayout(old.ID); !errors.Is(err, ErrNotConflicted) {
		t.Fatalf("abandon with 1 confirmation: %v", err)
	}
	chain.mine(1)
	mustSync(t, w)
	if err := w.AbandonPayout(old.ID); err != nil {
		t.Fatal(err)
	}
	if b := mustBal(t, w, NodeAccount("n")); b != 100_000 {
		t.Fatalf("node balance %d after abandoning", b)
	}

	// New money, new payout, confirmed.
	fakeDeposit(t, chain, w, "acct", 500_000, 2)
	chain.mine(2)
	mustSync(t, w)
	p, err := w.Payout(ctx)
	if err != nil || p == nil {
		t.Fatalf("new payout: %+v %v", p, err)
	}
	chain.mine(2)
	mustSync(t, w)
	if b := mustBal(t, w, PaidAccount("n")); b != p.Amount {
		t.Fatalf("paid %d, want %d", b, p.Amount)
	}

	// A reorganisation drops the conflicting spend; the abandoned payout is
	// broadcast by someone and mined: the node was paid twice.
	chain.reorg(6, func(tx *wire.MsgTx, _ bool) bool { return tx.TxHash() != conflict.TxHash() })
	chain.mine(1)
	broadcastAgain(t, chain, old)
	chain.mine(2)
	mustSync(t, w)
	if b := mustBal(t, w, AcctExtOverpaid); b != -old.Outputs[0].Debit {
		t.Fatalf("ext:overpaid %d, want %d", b, -old.Outputs[0].Debit)
	}
	if b := mustBal(t, w, PaidAccount("n")); b != p.Amount+old.Amount {
		t.Fatalf("paid %d, want %d", b, p.Amount+old.Amount)
	}
	if err := w.CheckLedger(); err != nil {
		t.Fatal(err)
	}
}

// TestAbandonPayoutReport: AbandonPayoutReport refuses a payout that does
// not exist (ErrNoSuchPayout), one not conflicted, and one whose conflict
// is not MinConf deep (saying how many blocks are still needed), changing
// nothing; then it abandons and says what it did: the node's debit back in
// its balance, the input the conflict spent gone and the other released
// (spendable again).
func TestAbandonPayoutReport(t *testing.T) {
	chain := newFakeChain(5)
	w := newTestWallet(t, "regtest", func(c *Config) { c.Chain = chain; c.MinConf = 3 })
	dep1 := fakeDeposit(t, chain, w, "acct", 70_000, 1)
	dep2 := fakeDeposit(t, chain, w, "acct", 60_000, 2)
	chain.mine(3)
	mustSync(t, w)
	old := payoutSignedNotSent(t, w, regtestAddr(t))
	op1, op2 := wire.OutPoint{Hash: dep1.TxHash(), Index: 0}, wire.OutPoint{Hash: dep2.TxHash(), Index: 0}
	if len(old.Inputs) != 2 || len(old.Outputs) != 1 {
		t.Fatalf("payout inputs %v outputs %+v: want both deposits paying one node", old.Inputs, old.Outputs)
	}
	debit := old.Outputs[0].Debit

	refused := func(id uint64, state string, conf int64, words string, bal int64) {
		t.Helper()
		rep, err := w.AbandonPayoutReport(id)
		var na *NotAbandonableError
		if rep != nil || !errors.As(err, &na) || !errors.Is(err, ErrNotConflicted) {
			t.Fatalf("abandon %d: %+v %v, want a NotAbandonableError", id, rep, err)
		}
		if na.State != state || na.Confirmations != conf || na.Needed != 3 || !strings.Contains(err.Error(), words) {
			t.Fatalf("abandon %d: %+v %q, want state %s, %d of 3 confirmations, saying %q", id, na, err, state, conf, words)
		}
		if b := mustBal(t, w, NodeAccount("n")); b != bal {
			t.Fatalf("node balance %d after a refused abandon, want %d", b, bal)
		}
	}
	if rep, err := w.AbandonPayoutReport(old.ID + 1); rep != nil || !errors.Is(err, ErrNoSuchPayout) {
		t.Fatalf("abandon a payout that does not exist: %+v %v", rep, err)
	}
	refused(old.ID, PayoutSigned, 0, "not conflicted", 0)

	conflict := spendElsewhere(t, chain, w, op1, 69_000)
	chain.mine(1)
	mustSync(t, w)
	refused(old.ID, PayoutConflicted, 1, "2 more blocks", 0)
	chain.mine(1)
	mustSync(t, w)
	refused(old.ID, PayoutConflicted, 2, "1 more block ", 0)
	if _, spendable, _ := w.OnChain(); spendable != 0 {
		t.Fatalf("spendable %d before the abandon, want 0 (the other input reserved)", spendable)
	}
	chain.mine(1)
	mustSync(t, w)
	rep, err := w.AbandonPayoutReport(old.ID)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Payout.ID != old.ID || rep.Payout.State != PayoutAbandoned || rep.Payout.ConflictTx != conflict.TxHash().String() {
		t.Fatalf("abandoned payout %+v", rep.Payout)
	}
	if len(rep.Returned) != 1 || rep.Returned[0] != (Returned{Node: "n", Amount: debit, Balance: debit}) {
		t.Fatalf("returned %+v, want node n's %d sat back, balance %d", rep.Returned, debit, debit)
	}
	if strings.Join(rep.Released, ",") != op2.String() || strings.Join(rep.Spent, ",") != op1.String() {
		t.Fatalf("released %v spent %v, want released [%s] spent [%s]", rep.Released, rep.Spent, op2, op1)
	}
	if b := mustBal(t, w, NodeAccount("n")); b != debit {
		t.Fatalf("node balance %d, want %d", b, debit)
	}
	if _, spendable, _ := w.OnChain(); spendable != 60_000 {
		t.Fatalf("spendable %d after the abandon, want the released 60000", spendable)
	}
	refused(old.ID, PayoutAbandoned, 0, "is abandoned, not conflicted", debit)
}
