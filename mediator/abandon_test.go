package mediator

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"

	"github.com/fincrypt/fincrypt/wallet"
)

// serveControl serves p's control socket in a new directory until the test
// ends (more: the pages added, as Peer does with controlPayments).
func serveControl(t *testing.T, more func(*http.ServeMux)) string {
	t.Helper()
	dir := t.TempDir()
	cs, err := listenControl(dir, func(context.Context) (*Status, error) { return &Status{}, nil }, more)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cs.run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		cs.close()
	})
	return dir
}

// TestAbandonPayoutOverTheControlSocket: `fincrypt mediator payouts
// abandon` goes through POST /payouts/{id}/abandon. A payout that does not
// exist and one that is not conflicted are refused with errors the caller
// can tell apart, nothing changed; once another transaction spent its
// input, the payout is abandoned: every node's debit is back in its
// balance, the spent input is reported, and the next payout pays the
// nodes again from a new deposit. Without a wallet, without a mediator, or
// from a mediator that does not know the request, the errors say so.
func TestAbandonPayoutOverTheControlSocket(t *testing.T) {
	const price = 1e14
	w, chain, _ := meteredWorld(t, Payments{PayoutThreshold: 1000}, price)
	ww := w.c.pay.w
	ctx := context.Background()
	acct := w.account()
	chain.deposit(t, ww, acct, 5_000_000)
	w.storeSegment(acct, 64<<10)
	w.nextRound()
	po := mustSettle(t, w).Payout
	if po == nil || po.State != wallet.PayoutPSBT || len(po.Inputs) != 1 || len(po.Outputs) != 5 {
		t.Fatalf("payout %+v: want one PSBT paying 5 nodes from the deposit", po)
	}
	dir := serveControl(t, (&Peer{core: w.c}).controlPayments)

	if rep, err := AbandonPayout(ctx, dir, po.ID+1); rep != nil || !errors.Is(err, wallet.ErrNoSuchPayout) {
		t.Fatalf("abandon a payout that does not exist: %+v %v, want ErrNoSuchPayout", rep, err)
	}
	rep, err := AbandonPayout(ctx, dir, po.ID)
	var na *wallet.NotAbandonableError
	if rep != nil || !errors.As(err, &na) || !errors.Is(err, wallet.ErrNotConflicted) {
		t.Fatalf("abandon a payout awaiting its signature: %+v %v, want a NotAbandonableError", rep, err)
	}
	if na.ID != po.ID || na.State != wallet.PayoutPSBT || na.Needed != 1 || !strings.Contains(err.Error(), "is psbt, not conflicted") {
		t.Fatalf("refusal %+v %q", na, err)
	}
	for _, o := range po.Outputs {
		if b, _ := ww.Balance(wallet.NodeAccount(o.Node)); b != 0 {
			t.Fatalf("node %s has %d sat after a refused abandon, want 0 (debited by the payout)", o.Node, b)
		}
	}

	// Someone spends the payout's input elsewhere; one block (MinConf 1).
	op, err := wire.NewOutPointFromString(po.Inputs[0])
	if err != nil {
		t.Fatal(err)
	}
	spend := wire.NewMsgTx(2)
	spend.AddTxIn(wire.NewTxIn(op, nil, nil))
	spend.AddTxOut(wire.NewTxOut(4_000_000, []byte{txscript.OP_TRUE}))
	chain.SendRawTransaction(spend, false)
	chain.mine()
	if _, err := ww.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if list, err := ReadPayouts(ctx, dir); err != nil || len(list) != 1 || list[0].State != wallet.PayoutConflicted {
		t.Fatalf("payouts after the conflict: %+v %v", list, err)
	}
	rep, err = AbandonPayout(ctx, dir, po.ID)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Payout.ID != po.ID || rep.Payout.State != wallet.PayoutAbandoned || rep.Payout.ConflictTx != spend.TxHash().String() {
		t.Fatalf("abandoned %+v", rep.Payout)
	}
	if len(rep.Returned) != len(po.Outputs) || len(rep.Released) != 0 || strings.Join(rep.Spent, ",") != po.Inputs[0] {
		t.Fatalf("report %+v: want %d nodes' debits back, the input spent", rep, len(po.Outputs))
	}
	for i, o := range po.Outputs {
		b, _ := ww.Balance(wallet.NodeAccount(o.Node))
		if r := rep.Returned[i]; r.Node != o.Node || r.Amount != o.Debit || r.Balance != o.Debit || b != o.Debit {
			t.Fatalf("returned %+v, balance %d: want node %s's %d sat back", r, b, o.Node, o.Debit)
		}
	}
	if _, err := AbandonPayout(ctx, dir, po.ID); !errors.As(err, &na) || na.State != wallet.PayoutAbandoned {
		t.Fatalf("abandon twice: %v", err)
	}
	if err := ww.CheckLedger(); err != nil {
		t.Fatal(err)
	}
	// The next payout, from new money, pays the nodes what they got back.
	chain.deposit(t, ww, acct, 5_000_000)
	next, err := w.c.pay.payout(ctx)
	if err != nil || next == nil {
		t.Fatalf("next payout: %+v %v", next, err)
	}
	for i, o := range next.Outputs {
		if o.Node != po.Outputs[i].Node || o.Debit != po.Outputs[i].Debit {
			t.Fatalf("next payout pays %s %d, the abandoned one %s %d", o.Node, o.Debit, po.Outputs[i].Node, po.Outputs[i].Debit)
		}
	}

	// Without a wallet; without a mediator; a mediator without the request.
	if _, err := AbandonPayout(ctx, serveControl(t, (&Peer{core: newWorld(t, 0).c}).controlPayments), 1); !errors.Is(err, ErrNoPayments) {
		t.Fatalf("abandon without a wallet: %v, want ErrNoPayments", err)
	}
	if _, err := AbandonPayout(ctx, t.TempDir(), 1); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("abandon without a mediator: %v, want ErrNotRunning", err)
	}
	if _, err := AbandonPayout(ctx, serveControl(t, nil), 1); err == nil || errors.Is(err, ErrNoPayments) || !strings.Contains(err.Error(), "does not know this request") {
		t.Fatalf("abandon on a mediator without the request: %v", err)
	}
	// A bad id never reaches the wallet.
	mux := http.NewServeMux()
	(&Peer{core: w.c}).controlPayments(mux)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/payouts/x/abandon", nil))
	if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), "not a number") {
		t.Fatalf("POST /payouts/x/abandon: %d %s", rec.Code, rec.Body)
	}
}
