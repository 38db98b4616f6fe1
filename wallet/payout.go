package wallet

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/btcsuite/btcd/btcutil/psbt"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"

	"github.com/fincrypt/fincrypt/internal/fsutil"
)

// dustLimit is the smallest output a payout creates (546 sat, the P2PKH dust
// threshold at the default relay fee, which covers every address kind).
const dustLimit = 546

// Payout states (docs/WALLET.md, "Payout state machine").
const (
	PayoutSigned    = "signed"    // recorded with its signed tx and txid, not yet accepted by the node
	PayoutBroadcast = "broadcast" // the node accepted it (or already had it)
	PayoutPSBT      = "psbt"      // written as an unsigned PSBT for the operator
	PayoutMined     = "mined"     // in a block of the best chain, fewer than MinConf confirmations
	PayoutConfirmed = "confirmed" // MinConf confirmations; the ledger moved it to paid:<node>
	// PayoutConflicted: another transaction spent one of its inputs (someone
	// spent the wallet's coins elsewhere); it cannot confirm while that holds.
	PayoutConflicted = "conflicted"
	// PayoutAbandoned: the operator abandoned a conflicted payout; the nodes
	// got their balances back.
	PayoutAbandoned = "abandoned"
)

// AcctExtOverpaid records money paid twice: an abandoned payout that was
// mined after all, when the nodes' balances no longer covered it.
const AcctExtOverpaid = "ext:overpaid"

// Payout errors callers test for.
var (
	ErrInsufficientFunds = errors.New("the wallet's confirmed outputs do not cover the payout")
	ErrBroadcast         = errors.New("the node refused the payout transaction")
	ErrNotConflicted     = errors.New("only a payout conflicted by a transaction with MinConf confirmations can be abandoned")
	ErrNoSuchPayout      = errors.New("no such payout")
)

// NotAbandonableError refuses AbandonPayout: the payout is not conflicted,
// or its conflicting transaction has fewer than MinConf confirmations. It
// wraps ErrNotConflicted.
type NotAbandonableError struct {
	ID    uint64 `json:"id"`
	State string `json:"state"`
	// ConflictTx and its Confirmations (counted against the last synced
	// tip) when State is conflicted; Needed is MinConf.
	ConflictTx    string `json:"conflict_tx,omitempty"`
	Confirmations int64  `json:"confirmations"`
	Needed        int64  `json:"needed"`
}

func (e *NotAbandonableError) Error() string {
	if e.State != PayoutConflicted {
		return fmt.Sprintf("payout %d is %s, not conflicted: %v", e.ID, e.State, ErrNotConflicted)
	}
	more := e.Needed - e.Confirmations
	return fmt.Sprintf("payout %d is conflicted by %s, which has %d of the %d confirmations needed: %d more block%s before it can be abandoned",
		e.ID, e.ConflictTx, e.Confirmations, e.Needed, more, map[bool]string{true: "s"}[more != 1])
}

func (e *NotAbandonableError) Unwrap() error { return ErrNotConflicted }

// Abandoned is what AbandonPayoutReport did.
type Abandoned struct {
	Payout Payout `json:"payout"` // now in state abandoned
	// Returned lists each node's debit given back to its balance, and its
	// balance after.
	Returned []Returned `json:"returned"`
	// Released are the inputs that are the wallet's again (spendable by a
	// later payout); Spent are those the conflicting transaction (or
	// another) spent.
	Released []string `json:"released"`
	Spent    []string `json:"spent"`
}

// Returned is one node's debit given back by an abandoned payout.
type Returned struct {
	Node    string `json:"node"`
	Amount  int64  `json:"amount"`
	Balance int64  `json:"balance"`
}

// PayoutOutput pays one node: Debit left its balance, Amount reached its
// address, FeeShare (Debit - Amount) is its share of the miner fee.
type PayoutOutput struct {
	Node     string `json:"node"`
	Address  string `json:"address"`
	Debit    int64  `json:"debit"`
	FeeShare int64  `json:"fee_share"`
	Amount   int64  `json:"amount"`
	Vout     uint32 `json:"vout"`
}

// Payout is one batched payout transaction.
type Payout struct {
	ID            uint64         `json:"id"`
	State         string         `json:"state"`
	TxID          string         `json:"txid"`
	Created       time.Time      `json:"created"`
	FeeRate       int64          `json:"fee_rate"` // sat/vB
	VSize         int64          `json:"vsize"`    // estimated, with 72-byte signatures
	Fee           int64          `json:"fee"`
	Amount        int64          `json:"amount"` // paid to nodes: the sum of Outputs' Amount
	Outputs       []PayoutOutput `json:"outputs"`
	Inputs        []string       `json:"inputs"`
	Change        int64          `json:"change"`
	ChangeVout    int32          `json:"change_vout"` // -1 without change
	RawTx         string         `json:"raw_tx"`      // hex; unsigned for a PSBT until seen in a block
	PSBTFile      string         `json:"psbt_file,omitempty"`
	Height        int64          `json:"height,omitempty"`
	Block         string         `json:"block,omitempty"`
	Confirmations int64          `json:"confirmations"`
	LastError     string         `json:"last_error,omitempty"`
	// ConflictTx spent one of the inputs at ConflictHeight (state conflicted).
	ConflictTx     string `json:"conflict_tx,omitempty"`
	ConflictHeight int64  `json:"conflict_height,omitempty"`
	// Prev is the state before conflicted, restored if the conflict is undone.
	Prev string `json:"prev_state,omitempty"`
	// Gen counts how often the payout was mined; it names its ledger keys.
	Gen int `json:"gen"`
	// MissingSince is the tip height at which an input was found no longer
	// in the best chain (abandonOrphaned); 0 while every input is there.
	MissingSince int64 `json:"missing_since,omitempty"`
}

// PayoutKey is the ledger key that debits the nodes' balances of payout id;
// PayoutConfirmKey moves it to paid:<node> once confirmed.
func PayoutKey(id uint64) string { return fmt.Sprintf("payout/%d", id) }

// PayoutConfirmKey is the ledger key of a payout's confirmation after it was
// mined for the gen-th time (a reorganisation can unmine it and a block,
// even the same one, mine it again).
func PayoutConfirmKey(id uint64, gen int) string {
	return fmt.Sprintf("payout/%d/confirm/%d", id, gen)
}

func decodePayout(v []byte) (*Payout, error) {
	var p Payout
	if err := json.Unmarshal(v, &p); err != nil {
		return nil, fmt.Errorf("wallet store: corrupt payout: %w", err)
	}
	return &p, nil
}

func (p *Payout) tx() (*wire.MsgTx, error) {
	raw, err := hex.DecodeString(p.RawTx)
	if err != nil {
		return nil, fmt.Errorf("payout %d: bad raw tx: %w", p.ID, err)
	}
	var tx wire.MsgTx
	if err := tx.Deserialize(bytes.NewReader(raw)); err != nil {
		return nil, fmt.Errorf("payout %d: bad raw tx: %w", p.ID, err)
	}
	return &tx, nil
}

func txHex(tx *wire.MsgTx) string {
	var b bytes.Buffer
	_ = tx.Serialize(&b)
	return hex.EncodeToString(b.Bytes())
}

type coin struct {
	op wire.OutPoint
	u  *utxo
}

// spendable lists outputs a payout may spend: MinConf confirmations (a
// coinbase output: its maturity), not spent or reserved, and, for deposits,
// credited. Largest first.
func (w *Wallet) spendable(t *rw) ([]coin, error) {
	tip, err := t.getInt(kTip)
	if err != nil {
		return nil, err
	}
	var out []coin
	err = t.scan(pUTXO, func(k string, v []byte) error {
		u, err := decodeUTXO(v)
		if err != nil {
			return err
		}
		if u.SpentHeight != 0 || u.ReservedBy != 0 || tip-u.Height+1 < w.confsNeeded(u) {
			return nil
		}
		if u.Account != "" && u.CreditKey == "" {
			return nil
		}
		op, err := parseOutPoint(k)
		if err != nil {
			return err
		}
		out = append(out, coin{op, u})
		return nil
	})
	sort.Slice(out, func(i, j int) bool {
		if out[i].u.Value != out[j].u.Value {
			return out[i].u.Value > out[j].u.Value
		}
		return out[i].op.String() < out[j].op.String()
	})
	return out, err
}

// estimateVSize is the virtual size of a tx spending nIn P2WPKH inputs (with
// worst-case 72-byte signatures) to outputs with the given scripts.
func estimateVSize(nIn int, scripts [][]byte) int64 {
	base := 4 + 4 + wire.VarIntSerializeSize(uint64(nIn)) + wire.VarIntSerializeSize(uint64(len(scripts))) + nIn*(32+4+1+4)
	for _, s := range scripts {
		base += 8 + wire.VarIntSerializeSize(uint64(len(s))) + len(s)
	}
	witness := 2 + nIn*(1+1+72+1+33)
	return int64((base*4 + witness + 3) / 4)
}

type payee struct {
	node, addr string
	script     []byte
	debit      int64
}

// plan chooses payees and inputs and builds the unsigned transaction; the
// change script is allocated in t.
func (w *Wallet) plan(t *rw) (*Payout, *wire.MsgTx, []coin, error) {
	var payees []payee
	err := t.scan(pBalance+"node:", func(k string, v []byte) error {
		bal := int64(beUint(v))
		if bal < w.cfg.PayoutThreshold {
			return nil
		}
		addr, ok, err := t.get(pNodeAddr + k)
		if err != nil {
			return err
		}
		if !ok {
			w.log.Warn("node above the payout threshold has no payout address", "node", k, "sat", bal)
			return nil
		}
		a, err := CheckPayoutAddress(string(addr), w.net)
		if err != nil {
			return fmt.Errorf("node %s: %w", k, err)
		}
		script, err := txscript.PayToAddrScript(a)
		if err != nil {
			return err
		}
		payees = append(payees, payee{node: k, addr: string(addr), script: script, debit: bal})
		return nil
	})
	if err != nil || len(payees) == 0 {
		return nil, nil, nil, err
	}
	coins, err := w.spendable(t)
	if err != nil {
		return nil, nil, nil, err
	}
	changeScriptLen := 22 // P2WPKH
	for len(payees) > 0 {
		var need int64
		for _, p := range payees {
			need += p.debit
		}
		var in []coin
		var have int64
		for _, c := range coins {
			if have >= need && (have == need || have-need >= dustLimit) {
				break
			}
			in, have = append(in, c), have+c.u.Value
		}
		if have < need || (have > need && have-need < dustLimit) {
			return nil, nil, nil, fmt.Errorf("%w: need %d sat, %d spendable", ErrInsufficientFunds, need, have)
		}
		change := have - need
		scripts := make([][]byte, 0, len(payees)+1)
		weights := make([]int64, len(payees))
		for i, p := range payees {
			scripts = append(scripts, p.script)
			weights[i] = p.debit
		}
		if change > 0 {
			scripts = append(scripts, make([]byte, changeScriptLen))
		}
		vsize := estimateVSize(len(in), scripts)
		fee := vsize * w.cfg.FeeRate
		shares := splitProportional(fee, weights)
		var given int64
		for _, s := range shares {
			given += s
		}
		for i := 0; given < fee; i = (i + 1) % len(shares) {
			shares[i]++
			given++
		}
		// Drop the smallest payee whose output would be dust, and re-plan.
		drop := -1
		for i, p := range payees {
			if p.debit-shares[i] < dustLimit && (drop < 0 || p.debit < payees[drop].debit) {
				drop = i
			}
		}
		if drop >= 0 {
			w.log.Info("payout: output would be dust after the fee share; node waits", "node", payees[drop].node, "sat", payees[drop].debit)
			payees = append(payees[:drop], payees[drop+1:]...)
			continue
		}
		tx := wire.NewMsgTx(2)
		p := &Payout{State: PayoutSigned, Created: w.cfg.Now().UTC(), FeeRate: w.cfg.FeeRate, VSize: vsize, Fee: fee, Change: change, ChangeVout: -1}
		for _, c := range in {
			txin := wire.NewTxIn(&c.op, nil, nil)
			txin.Sequence = wire.MaxTxInSequenceNum - 2 // signals replaceability (BIP 125) for a later fee bump
			tx.AddTxIn(txin)
			p.Inputs = append(p.Inputs, c.op.String())
		}
		for i, pe := range payees {
			amt := pe.debit - shares[i]
			tx.AddTxOut(wire.NewTxOut(amt, pe.script))
			p.Amount += amt
			p.Outputs = append(p.Outputs, PayoutOutput{Node: pe.node, Address: pe.addr, Debit: pe.debit, FeeShare: shares[i], Amount: amt, Vout: uint32(i)})
		}
		if change > 0 {
			script, _, err := w.newChangeScript(t)
			if err != nil {
				return nil, nil, nil, err
			}
			if len(script) != changeScriptLen {
				return nil, nil, nil, fmt.Errorf("change script is %d bytes", len(script))
			}
			p.ChangeVout = int32(len(tx.TxOut))
			tx.AddTxOut(wire.NewTxOut(change, script))
		}
		return p, tx, in, nil
	}
	return nil, nil, nil, nil
}

func prevOuts(coins []coin) *txscript.MultiPrevOutFetcher {
	f := txscript.NewMultiPrevOutFetcher(nil)
	for _, c := range coins {
		f.AddPrevOut(c.op, wire.NewTxOut(c.u.Value, c.u.Script))
	}
	return f
}

// sign signs every input with the HD keys and verifies the result.
func (w *Wallet) sign(tx *wire.MsgTx, coins []coin) error {
	f := prevOuts(coins)
	sh := txscript.NewTxSigHashes(tx, f)
	for i, c := range coins {
		priv, err := w.keys.privKey(c.u.Branch, c.u.Index)
		if err != nil {
			return err
		}
		wit, err := txscript.WitnessSignature(tx, sh, i, c.u.Value, c.u.Script, txscript.SigHashAll, priv, true)
		if err != nil {
			return fmt.Errorf("sign input %d: %w", i, err)
		}
		tx.TxIn[i].Witness = wit
	}
	for i, c := range coins {
		vm, err := txscript.NewEngine(c.u.Script, tx, i, txscript.StandardVerifyFlags, nil, sh, c.u.Value, f)
		if err != nil {
			return err
		}
		if err := vm.Execute(); err != nil {
			return fmt.Errorf("verify input %d: %w", i, err)
		}
	}
	return nil
}

// record stores a planned payout, reserves its inputs and debits the nodes'
// balances, all in t.
func (w *Wallet) record(t *rw, p *Payout, tx *wire.MsgTx, coins []coin) error {
	id, err := t.next(kNextPayout)
	if err != nil {
		return err
	}
	p.ID = uint64(id) + 1 // ids start at 1; 0 means "no payout"
	p.TxID = tx.TxHash().String()
	p.RawTx = txHex(tx)
	var total int64
	postings := []Posting{}
	for _, o := range p.Outputs {
		total += o.Debit
		postings = append(postings, Posting{NodeAccount(o.Node), -o.Debit})
	}
	postings = append(postings, Posting{AcctPayoutInflight, total})
	if _, err := t.post(PayoutKey(p.ID), "payout "+p.TxID, w.cfg.Now(), postings...); err != nil {
		return err
	}
	for _, c := range coins {
		c.u.ReservedBy = p.ID
		if err := t.setJSON(pUTXO+c.op.String(), c.u); err != nil {
			return err
		}
		// Kept apart from the utxo record, so the reservation survives a
		// reorganisation that drops and later re-mines the output.
		if err := t.setInt(pReserve+c.op.String(), int64(p.ID)); err != nil {
			return err
		}
	}
	if err := t.setInt(pPayoutTx+p.TxID, int64(p.ID)); err != nil {
		return err
	}
	return t.setJSON(pPayout+be64(p.ID), p)
}

// Payout pays every node whose balance is at least the threshold in one
// transaction: it first re-broadcasts earlier payouts not yet mined, then
// plans, signs and records the new payout (txid, nodes debited, inputs
// reserved) with pebble.Sync before broadcasting it. A crash after the
// record re-broadcasts the same transaction on the next Sync or Payout; it
// never pays twice. It returns nil when no node is due.
func (w *Wallet) Payout(ctx context.Context) (*Payout, error) {
	if w.cfg.Chain == nil {
		return nil, ErrNoChain
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.rebroadcast(ctx)
	t := w.begin()
	defer t.discard()
	p, tx, coins, err := w.plan(t)
	if err != nil || p == nil {
		return nil, err
	}
	if err := w.sign(tx, coins); err != nil {
		return nil, err
	}
	if err := w.record(t, p, tx, coins); err != nil {
		return nil, err
	}
	if err := t.commit(); err != nil {
		return nil, err
	}
	w.log.Info("payout recorded", "id", p.ID, "txid", p.TxID, "nodes", len(p.Outputs), "fee", p.Fee)
	if err := w.hook("payout-recorded"); err != nil {
		return p, err
	}
	return p, w.broadcast(p)
}

// broadcast sends a recorded payout and stores the outcome.
func (w *Wallet) broadcast(p *Payout) error {
	tx, err := p.tx()
	if err != nil {
		return err
	}
	_, sendErr := w.cfg.Chain.SendRawTransaction(tx, false)
	t := w.begin()
	defer t.discard()
	var cur Payout
	if ok, err := t.getJSON(pPayout+be64(p.ID), &cur); err != nil || !ok {
		return fmt.Errorf("payout %d: record missing: %v", p.ID, err)
	}
	if sendErr == nil || alreadyKnown(sendErr) {
		if cur.State == PayoutSigned {
			cur.State = PayoutBroadcast
		}
		cur.LastError = ""
	} else {
		cur.LastError = sendErr.Error()
	}
	*p = cur
	if err := t.setJSON(pPayout+be64(p.ID), &cur); err != nil {
		return err
	}
	if err := t.commit(); err != nil {
		return err
	}
	if sendErr != nil && !alreadyKnown(sendErr) {
		return fmt.Errorf("payout %d (%s): %w: %v", p.ID, p.TxID, ErrBroadcast, sendErr)
	}
	w.log.Info("payout broadcast", "id", p.ID, "txid", p.TxID)
	return nil
}

// rebroadcast re-sends every signed payout not yet in a block; failures are
// logged and retried next time.
func (w *Wallet) rebroadcast(ctx context.Context) {
	if w.cfg.Chain == nil {
		return
	}
	t := w.begin()
	var due []*Payout
	err := t.scan(pPayout, func(k string, v []byte) error {
		p, err := decodePayout(v)
		if err != nil {
			return err
		}
		if p.State == PayoutSigned || p.State == PayoutBroadcast {
			due = append(due, p)
		}
		return nil
	})
	t.discard()
	if err != nil {
		w.log.Error("rebroadcast: reading payouts", "err", err)
		return
	}
	for _, p := range due {
		if ctx.Err() != nil {
			return
		}
		if err := w.broadcast(p); err != nil {
			w.log.Warn("rebroadcast failed", "id", p.ID, "txid", p.TxID, "err", err)
		}
	}
}

// payoutInputSpent notes that a payout's input was spent by txid at h; if
// txid is not the payout itself, the payout is conflicted.
func (w *Wallet) payoutInputSpent(t *rw, id uint64, op, txid string, h int64) error {
	var p Payout
	if ok, err := t.getJSON(pPayout+be64(id), &p); err != nil || !ok {
		return fmt.Errorf("payout %d: record missing: %v", id, err)
	}
	if txid == p.TxID || p.State == PayoutConflicted || p.State == PayoutAbandoned {
		return nil
	}
	w.log.Error("payout conflicted: another transaction spent its input", "id", id, "txid", p.TxID, "input", op, "by", txid, "height", h)
	p.Prev, p.State, p.ConflictTx, p.ConflictHeight = p.State, PayoutConflicted, txid, h
	return t.setJSON(pPayout+be64(id), &p)
}

// payoutInputUnspent undoes payoutInputSpent when the conflicting block leaves the chain.
func (w *Wallet) payoutInputUnspent(t *rw, id uint64, txid string) error {
	var p Payout
	if ok, err := t.getJSON(pPayout+be64(id), &p); err != nil || !ok {
		return fmt.Errorf("payout %d: record missing: %v", id, err)
	}
	if p.State != PayoutConflicted || p.ConflictTx != txid {
		return nil
	}
	p.State, p.ConflictTx, p.ConflictHeight, p.Prev = p.Prev, "", 0, ""
	return t.setJSON(pPayout+be64(id), &p)
}

// AbandonPayout gives the nodes of a conflicted payout their balances back
// and releases its unspent inputs, once the conflicting transaction has
// MinConf confirmations. Should the payout be mined after all, the nodes
// are debited again (what their balances no longer cover is recorded in
// ext:overpaid). It is AbandonPayoutReport without the report.
func (w *Wallet) AbandonPayout(id uint64) error {
	_, err := w.AbandonPayoutReport(id)
	return err
}

// AbandonPayoutReport is AbandonPayout, and says what it did. A payout
// that does not exist is ErrNoSuchPayout; one that is not conflicted, or
// whose conflict is not MinConf deep, is a *NotAbandonableError (wrapping
// ErrNotConflicted), and nothing changes.
func (w *Wallet) AbandonPayoutReport(id uint64) (*Abandoned, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	t := w.begin()
	defer t.discard()
	var p Payout
	if ok, err := t.getJSON(pPayout+be64(id), &p); err != nil {
		return nil, err
	} else if !ok {
		return nil, fmt.Errorf("payout %d: %w", id, ErrNoSuchPayout)
	}
	tip, err := t.getInt(kTip)
	if err != nil {
		return nil, err
	}
	if p.State != PayoutConflicted || tip-p.ConflictHeight+1 < int64(w.cfg.MinConf) {
		e := &NotAbandonableError{ID: id, State: p.State, Needed: int64(w.cfg.MinConf)}
		if p.State == PayoutConflicted {
			e.ConflictTx, e.Confirmations = p.ConflictTx, max(tip-p.ConflictHeight+1, 0)
		}
		return nil, e
	}
	rep := &Abandoned{Returned: []Returned{}, Spent: []string{}}
	if rep.Released, err = w.abandon(t, &p, "abandoned "+p.TxID); err != nil {
		return nil, err
	}
	for _, op := range p.Inputs {
		if !slices.Contains(rep.Released, op) {
			rep.Spent = append(rep.Spent, op)
		}
	}
	for _, o := range p.Outputs {
		bal, err := t.balance(NodeAccount(o.Node))
		if err != nil {
			return nil, err
		}
		rep.Returned = append(rep.Returned, Returned{Node: o.Node, Amount: o.Debit, Balance: bal})
	}
	if err := t.commit(); err != nil {
		return nil, err
	}
	rep.Payout = p
	return rep, nil
}

// abandon returns a payout's debits to the nodes' balances (they are paid
// by a later payout), releases its inputs and marks it abandoned, in t. It
// returns the inputs that are the wallet's again (not spent).
func (w *Wallet) abandon(t *rw, pp *Payout, memo string) ([]string, error) {
	p, id := *pp, pp.ID
	var total int64
	ps := []Posting{}
	for _, o := range p.Outputs {
		total += o.Debit
		ps = append(ps, Posting{NodeAccount(o.Node), o.Debit})
	}
	ps = append(ps, Posting{AcctPayoutInflight, -total})
	if _, err := t.post(fmt.Sprintf("payout/%d/abandon/%d", id, p.Gen), memo, w.cfg.Now(), ps...); err != nil {
		return nil, err
	}
	released := []string{}
	for _, op := range p.Inputs {
		if err := t.del(pReserve + op); err != nil {
			return nil, err
		}
		var u utxo
		ok, err := t.getJSON(pUTXO+op, &u)
		if err != nil {
			return nil, err
		}
		if ok && u.ReservedBy == id {
			u.ReservedBy = 0
			if err := t.setJSON(pUTXO+op, &u); err != nil {
				return nil, err
			}
		}
		if ok && u.SpentBy == "" {
			released = append(released, op)
		}
	}
	p.State = PayoutAbandoned
	if err := t.setJSON(pPayout+be64(id), &p); err != nil {
		return nil, err
	}
	*pp = p
	w.log.Warn("payout abandoned; its nodes' balances are paid by a later payout", "id", id, "txid", p.TxID, "why", memo)
	return released, nil
}

// abandonOrphaned abandons the payouts not in a block (signed, broadcast or
// psbt) that spend an output which is no longer the wallet's: a deposit or a
// change output whose block a reorganisation took away (their transaction can never be mined while
// that holds, and every later payout chained through their change would
// wait too). An input missing for MinConf blocks is taken as gone: the
// payout is abandoned, its nodes get their balances back and are paid by a
// new payout from other coins. Should the old transaction be mined after
// all, payoutMined debits the nodes again (ext:overpaid for what their
// balances no longer cover). It returns the payouts abandoned.
func (w *Wallet) abandonOrphaned(rep *SyncReport) error {
	t := w.begin()
	defer t.discard()
	tip, err := t.getInt(kTip)
	if err != nil {
		return err
	}
	var due []*Payout
	if err := t.scan(pPayout, func(k string, v []byte) error {
		p, err := decodePayout(v)
		if err != nil {
			return err
		}
		// A PSBT payout too: its transaction can no more be mined than a
		// broadcast one's, and left alone it would hold its nodes' debits
		// in flight for good.
		if p.State == PayoutSigned || p.State == PayoutBroadcast || p.State == PayoutPSBT {
			due = append(due, p)
		}
		return nil
	}); err != nil {
		return err
	}
	changed := false
	for _, p := range due {
		missing := ""
		for _, op := range p.Inputs {
			if _, ok, err := t.get(pUTXO + op); err != nil {
				return err
			} else if !ok {
				missing = op
				break
			}
		}
		switch {
		case missing == "" && p.MissingSince == 0:
			continue
		case missing == "":
			p.MissingSince = 0 // back in the chain
		case p.MissingSince == 0:
			p.MissingSince = tip
			w.log.Warn("payout input left the best chain; the payout is abandoned unless it comes back", "id", p.ID, "txid", p.TxID, "input", missing, "within_blocks", w.cfg.MinConf)
		case tip-p.MissingSince+1 >= int64(w.cfg.MinConf):
			if _, err := w.abandon(t, p, fmt.Sprintf("input %s left the best chain", missing)); err != nil {
				return err
			}
			rep.Abandoned = append(rep.Abandoned, p.ID)
		default:
			continue
		}
		if err := t.setJSON(pPayout+be64(p.ID), p); err != nil {
			return err
		}
		changed = true
	}
	if !changed {
		return nil
	}
	return t.commit()
}

// payoutMined marks a payout's transaction as seen in block at height h.
func (w *Wallet) payoutMined(t *rw, id uint64, tx *wire.MsgTx, h int64, block string) error {
	var p Payout
	if ok, err := t.getJSON(pPayout+be64(id), &p); err != nil || !ok {
		return fmt.Errorf("payout %d: record missing: %v", id, err)
	}
	if p.State == PayoutAbandoned {
		// Mined after all: debit the nodes again, as far as they cover it.
		var total int64
		ps := []Posting{}
		for _, o := range p.Outputs {
			bal, err := t.balance(NodeAccount(o.Node))
			if err != nil {
				return err
			}
			take := min(bal, o.Debit)
			total += o.Debit
			ps = append(ps, Posting{NodeAccount(o.Node), -take}, Posting{AcctExtOverpaid, -(o.Debit - take)})
		}
		ps = append(ps, Posting{AcctPayoutInflight, total})
		if _, err := t.post(fmt.Sprintf("payout/%d/revive/%d", id, p.Gen+1), "abandoned payout mined "+p.TxID, w.cfg.Now(), ps...); err != nil {
			return err
		}
		w.log.Error("an abandoned payout was mined after all", "id", id, "txid", p.TxID, "height", h)
	}
	p.State, p.Height, p.Block, p.RawTx, p.LastError = PayoutMined, h, block, txHex(tx), ""
	p.Gen++
	if err := t.set(heightKey(pBlockPay, h)+be64(id), nil); err != nil {
		return err
	}
	w.log.Info("payout mined", "id", id, "txid", p.TxID, "height", h)
	return t.setJSON(pPayout+be64(id), &p)
}

// payoutUnmined undoes payoutMined (and the confirmation) after a reorg.
func (w *Wallet) payoutUnmined(t *rw, id uint64, now time.Time) error {
	var p Payout
	if ok, err := t.getJSON(pPayout+be64(id), &p); err != nil || !ok {
		return fmt.Errorf("payout %d: record missing: %v", id, err)
	}
	if p.State == PayoutConfirmed {
		e, err := w.confirmPostings(&p)
		if err != nil {
			return err
		}
		for i := range e {
			e[i].Amount = -e[i].Amount
		}
		if _, err := t.post(fmt.Sprintf("payout/%d/unconfirm/%d", id, p.Gen), "reorg dropped payout "+p.TxID, now, e...); err != nil {
			return err
		}
	}
	p.State, p.Height, p.Block = PayoutBroadcast, 0, ""
	// An abandoned payout that was mined after all (the revive in
	// payoutMined) goes back to abandoned, its revive reversed exactly.
	// Left in broadcast it could never leave it: its inputs were released
	// at the abandon, so a spend elsewhere marks no conflict, and what the
	// revive took from its nodes' balances would stay in flight for good.
	rk := fmt.Sprintf("payout/%d/revive/%d", id, p.Gen)
	if seq, ok, err := t.get(pTxKey + rk); err != nil {
		return err
	} else if ok {
		var e Entry
		if ok, err := t.getJSON(pJournal+string(seq), &e); err != nil || !ok || e.Key != rk {
			return fmt.Errorf("payout %d: revive entry %s missing: %v", id, rk, err)
		}
		for i := range e.Postings {
			e.Postings[i].Amount = -e.Postings[i].Amount
		}
		if _, err := t.post(fmt.Sprintf("payout/%d/unrevive/%d", id, p.Gen), "reorg dropped abandoned payout "+p.TxID, now, e.Postings...); err != nil {
			return err
		}
		p.State = PayoutAbandoned
		w.log.Warn("an abandoned payout mined after all left the best chain; abandoned again", "id", id, "txid", p.TxID)
		return t.setJSON(pPayout+be64(id), &p)
	}
	w.log.Warn("payout left the best chain; will re-broadcast", "id", id, "txid", p.TxID)
	return t.setJSON(pPayout+be64(id), &p)
}

func (w *Wallet) confirmPostings(p *Payout) ([]Posting, error) {
	var total, paid int64
	var ps []Posting
	for _, o := range p.Outputs {
		total += o.Debit
		paid += o.Amount
		ps = append(ps, Posting{PaidAccount(o.Node), o.Amount})
	}
	if total-paid != p.Fee {
		return nil, fmt.Errorf("payout %d: debits %d - amounts %d != fee %d", p.ID, total, paid, p.Fee)
	}
	return append(ps, Posting{AcctPayoutInflight, -total}, Posting{AcctFeesChain, p.Fee}), nil
}

func (w *Wallet) payoutConfirm(t *rw, p *Payout, now time.Time) error {
	ps, err := w.confirmPostings(p)
	if err != nil {
		return err
	}
	if _, err := t.post(PayoutConfirmKey(p.ID, p.Gen), "payout confirmed "+p.TxID, now, ps...); err != nil {
		return err
	}
	p.State = PayoutConfirmed
	w.log.Info("payout confirmed", "id", p.ID, "txid", p.TxID)
	return t.setJSON(pPayout+be64(p.ID), p)
}

// Payouts lists every payout, oldest first, with confirmations counted
// against the last synced tip.
func (w *Wallet) Payouts() ([]Payout, error) {
	t := w.begin()
	defer t.discard()
	tip, err := t.getInt(kTip)
	if err != nil {
		return nil, err
	}
	var out []Payout
	err = t.scan(pPayout, func(k string, v []byte) error {
		p, err := decodePayout(v)
		if err != nil {
			return err
		}
		if p.Height > 0 {
			p.Confirmations = tip - p.Height + 1
		}
		out = append(out, *p)
		return nil
	})
	return out, err
}

// WritePayoutPSBT is Payout for an operator who signs offline: the same
// batched transaction, unsigned, is recorded (nodes debited, inputs
// reserved) in state "psbt" with pebble.Sync and then written to dir as a
// BIP 174 PSBT file (payout-<id>.psbt) with each input's witness UTXO and
// BIP 32 derivation. Because all inputs are P2WPKH, the txid is known before
// signing; Sync sees the transaction when the operator broadcasts it. It
// needs no node, only the outputs learnt by earlier Syncs. It returns nil
// when no node is due.
//
// The file is written only once the payout is durable: a file that existed
// before would, after a crash, be a transaction the wallet never recorded,
// which signed and sent pays the nodes without debiting them. A payout
// recorded whose file was not written (a crash, a full disk) is returned
// with the error, and its file is written by the next WritePayoutPSBT,
// which first writes the file of every payout in state "psbt" whose file
// is missing (the same transaction again).
func (w *Wallet) WritePayoutPSBT(dir string) (*Payout, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	missing := w.writeMissingPSBTs()
	t := w.begin()
	defer t.discard()
	p, tx, coins, err := w.plan(t)
	if err != nil || p == nil {
		return nil, errors.Join(missing, err)
	}
	p.State = PayoutPSBT
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, errors.Join(missing, err)
	}
	if err := w.record(t, p, tx, coins); err != nil {
		return nil, errors.Join(missing, err)
	}
	p.PSBTFile = filepath.Join(dir, fmt.Sprintf("payout-%d.psbt", p.ID))
	if err := t.setJSON(pPayout+be64(p.ID), p); err != nil {
		return nil, errors.Join(missing, err)
	}
	data, err := w.payoutPSBT(t, p)
	if err != nil {
		return nil, errors.Join(missing, err)
	}
	if err := t.commit(); err != nil {
		return nil, errors.Join(missing, err)
	}
	if err := w.hook("psbt-recorded"); err != nil {
		return p, errors.Join(missing, err)
	}
	// An existing file of this name is left from an earlier database (ids
	// are not reused within one): it is replaced.
	if err := fsutil.WriteFileAtomic(p.PSBTFile, data, 0o600); err != nil {
		w.log.Error("payout recorded, its PSBT file not written; written by the next payout", "id", p.ID, "file", p.PSBTFile, "err", err)
		return p, errors.Join(missing, fmt.Errorf("payout %d recorded, its PSBT file not written (the next WritePayoutPSBT writes it): %w", p.ID, err))
	}
	w.log.Info("payout written as PSBT", "id", p.ID, "txid", p.TxID, "file", p.PSBTFile)
	return p, missing
}

// payoutPSBT builds the unsigned PSBT of a payout in state psbt from its
// record: its transaction, each input's output as the wallet saw it (value,
// script, key path) and the change output's key path.
func (w *Wallet) payoutPSBT(t *rw, p *Payout) ([]byte, error) {
	tx, err := p.tx()
	if err != nil {
		return nil, err
	}
	pk, err := psbt.NewFromUnsignedTx(tx)
	if err != nil {
		return nil, fmt.Errorf("payout %d: %w", p.ID, err)
	}
	for i, in := range tx.TxIn {
		var u utxo
		if ok, err := t.getJSON(pUTXO+in.PreviousOutPoint.String(), &u); err != nil {
			return nil, err
		} else if !ok {
			return nil, fmt.Errorf("payout %d: input %s is no longer the wallet's", p.ID, in.PreviousOutPoint)
		}
		_, _, pub, err := w.keys.address(u.Branch, u.Index)
		if err != nil {
			return nil, err
		}
		pk.Inputs[i].WitnessUtxo = wire.NewTxOut(u.Value, u.Script)
		pk.Inputs[i].SighashType = txscript.SigHashAll
		pk.Inputs[i].Bip32Derivation = []*psbt.Bip32Derivation{{PubKey: pub, MasterKeyFingerprint: w.keys.fingerprint, Bip32Path: w.keys.path(u.Branch, u.Index)}}
	}
	if p.ChangeVout >= 0 {
		if int(p.ChangeVout) >= len(tx.TxOut) {
			return nil, fmt.Errorf("payout %d: change output %d of %d", p.ID, p.ChangeVout, len(tx.TxOut))
		}
		var si scriptInfo
		if ok, err := t.getJSON(pScript+hex.EncodeToString(tx.TxOut[p.ChangeVout].PkScript), &si); err != nil {
			return nil, err
		} else if !ok || si.Branch != BranchChange {
			return nil, fmt.Errorf("payout %d: change output pays no change address of the wallet", p.ID)
		}
		_, _, pub, err := w.keys.address(BranchChange, si.Index)
		if err != nil {
			return nil, err
		}
		pk.Outputs[p.ChangeVout].Bip32Derivation = []*psbt.Bip32Derivation{{PubKey: pub, MasterKeyFingerprint: w.keys.fingerprint, Bip32Path: w.keys.path(BranchChange, si.Index)}}
	}
	var buf bytes.Buffer
	if err := pk.Serialize(&buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// writeMissingPSBTs writes the file of every payout in state psbt whose
// file is not there: one recorded by a WritePayoutPSBT that crashed or
// failed before writing it. Rewriting a file the operator removed after
// sending it is harmless: it holds the same transaction.
func (w *Wallet) writeMissingPSBTs() error {
	t := w.begin()
	defer t.discard()
	var due []*Payout
	if err := t.scan(pPayout, func(k string, v []byte) error {
		p, err := decodePayout(v)
		if err != nil {
			return err
		}
		if p.State == PayoutPSBT && p.PSBTFile != "" {
			if _, err := os.Lstat(p.PSBTFile); errors.Is(err, os.ErrNotExist) {
				due = append(due, p)
			}
		}
		return nil
	}); err != nil {
		return err
	}
	var errs []error
	for _, p := range due {
		data, err := w.payoutPSBT(t, p)
		if err == nil {
			if err = os.MkdirAll(filepath.Dir(p.PSBTFile), 0o700); err == nil {
				err = fsutil.WriteFileAtomic(p.PSBTFile, data, 0o600)
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("payout %d: writing its missing PSBT file: %w", p.ID, err))
			continue
		}
		w.log.Warn("payout's missing PSBT file written", "id", p.ID, "txid", p.TxID, "file", p.PSBTFile)
	}
	return errors.Join(errs...)
}

// SignPSBT signs every input of a payout PSBT that carries a BIP 32
// derivation from this wallet's seed, finalises it and returns the
// transaction, ready to broadcast. It is the operator's offline step. It
// signs only the transaction of a payout the wallet recorded and still
// holds in state psbt: a file whose outputs were changed has another txid,
// and a payout abandoned (its nodes credited back) or already sent must not
// be paid again.
func (w *Wallet) SignPSBT(pk *psbt.Packet) (*wire.MsgTx, error) {
	if err := w.checkPSBTRecorded(pk.UnsignedTx.TxHash().String()); err != nil {
		return nil, err
	}
	f := txscript.NewMultiPrevOutFetcher(nil)
	for i, in := range pk.Inputs {
		if in.WitnessUtxo == nil {
			return nil, fmt.Errorf("psbt input %d: no witness utxo", i)
		}
		f.AddPrevOut(pk.UnsignedTx.TxIn[i].PreviousOutPoint, in.WitnessUtxo)
	}
	sh := txscript.NewTxSigHashes(pk.UnsignedTx, f)
	u, err := psbt.NewUpdater(pk)
	if err != nil {
		return nil, err
	}
	for i, in := range pk.Inputs {
		var d *psbt.Bip32Derivation
		for _, x := range in.Bip32Derivation {
			if x.MasterKeyFingerprint == w.keys.fingerprint && len(x.Bip32Path) == 5 {
				d = x
			}
		}
		if d == nil {
			return nil, fmt.Errorf("psbt input %d: no derivation from this wallet", i)
		}
		want := w.keys.path(d.Bip32Path[3], d.Bip32Path[4])
		for j := range want {
			if want[j] != d.Bip32Path[j] {
				return nil, fmt.Errorf("psbt input %d: path %v is not this wallet's", i, d.Bip32Path)
			}
		}
		_, script, pub, err := w.keys.address(d.Bip32Path[3], d.Bip32Path[4])
		if err != nil {
			return nil, err
		}
		if !bytes.Equal(pub, d.PubKey) || !bytes.Equal(script, in.WitnessUtxo.PkScript) {
			return nil, fmt.Errorf("psbt input %d: key does not match the output it spends", i)
		}
		priv, err := w.keys.privKey(d.Bip32Path[3], d.Bip32Path[4])
		if err != nil {
			return nil, err
		}
		sig, err := txscript.RawTxInWitnessSignature(pk.UnsignedTx, sh, i, in.WitnessUtxo.Value, script, txscript.SigHashAll, priv)
		if err != nil {
			return nil, err
		}
		if _, err := u.Sign(i, sig, pub, nil, nil); err != nil {
			return nil, fmt.Errorf("psbt input %d: %w", i, err)
		}
	}
	if err := psbt.MaybeFinalizeAll(pk); err != nil {
		return nil, err
	}
	return psbt.Extract(pk)
}

// checkPSBTRecorded refuses to sign txid unless it is a payout in state psbt.
func (w *Wallet) checkPSBTRecorded(txid string) error {
	t := w.begin()
	defer t.discard()
	id, err := t.getInt(pPayoutTx + txid)
	if err != nil {
		return err
	}
	if id == 0 {
		return fmt.Errorf("psbt transaction %s is no payout this wallet recorded: refusing to sign (was the file changed?)", txid)
	}
	var p Payout
	if ok, err := t.getJSON(pPayout+be64(uint64(id)), &p); err != nil || !ok {
		return fmt.Errorf("payout %d of psbt transaction %s: record missing (%v)", id, txid, err)
	}
	if p.State != PayoutPSBT {
		return fmt.Errorf("payout %d is %s, not awaiting a signature: refusing to sign it again", id, p.State)
	}
	return nil
}

// ReadPSBTFile reads a binary or base64 PSBT file.
func ReadPSBTFile(path string) (*psbt.Packet, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	b64 := !bytes.HasPrefix(data, []byte("psbt\xff"))
	if b64 {
		data = []byte(strings.TrimSpace(string(data)))
	}
	pk, err := psbt.NewFromRawBytes(bytes.NewReader(data), b64)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return pk, nil
}
