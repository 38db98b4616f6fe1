package wallet

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Ledger accounts (docs/WALLET.md, "Ledger"). Amounts are satoshis. Credit
// accounts (what the mediator owes or has earned) never go below zero; the
// two debit kinds, "ext:" and "debt:", never go above zero. Every entry's
// postings sum to zero, so the sum of all balances is always zero.
const (
	AcctExtDeposits    = "ext:deposits"     // minus every credited deposit
	AcctFeesMediator   = "fees:mediator"    // the mediator's settlement fees
	AcctFeesChain      = "fees:chain"       // miner fees of confirmed payouts
	AcctPayoutInflight = "payouts:inflight" // debited from nodes, not yet confirmed on chain
	AcctExtUnmetered   = "ext:unmetered"    // minus everything earned in unmetered periods
)

// UnmeteredAccount is what a node earned in periods settled without
// payments (PeriodInput.Unmetered); it is a record, never paid out.
func UnmeteredAccount(node string) string { return "unmetered:" + node }

// EscrowAccount is a client's escrow: its credited deposits minus its charges.
func EscrowAccount(account string) string { return "escrow:" + account }

// DebtAccount holds what a client owes after a reorganisation took back a
// deposit it had already spent (zero or negative).
func DebtAccount(account string) string { return "debt:" + account }

// NodeAccount is what a storage node has earned and not yet been paid.
func NodeAccount(node string) string { return "node:" + node }

// PaidAccount is what has been paid to a node on chain, confirmed.
func PaidAccount(node string) string { return "paid:" + node }

// Ledger errors callers test for.
var (
	ErrNegativeBalance = errors.New("posting would make a balance negative")
	ErrUnbalanced      = errors.New("postings do not sum to zero")
	ErrBadID           = errors.New("bad account or node id")
)

// Posting moves Amount satoshis into (positive) or out of (negative) Account.
type Posting struct {
	Account string `json:"account"`
	Amount  int64  `json:"amount"`
}

// Entry is one ledger transaction: postings that sum to zero, recorded once
// under its idempotency key.
type Entry struct {
	Seq      uint64    `json:"seq"`
	Key      string    `json:"key"`
	Time     time.Time `json:"time"`
	Memo     string    `json:"memo,omitempty"`
	Postings []Posting `json:"postings"`
}

// debitAccount reports whether an account's balance must stay <= 0.
func debitAccount(name string) bool {
	return strings.HasPrefix(name, "ext:") || strings.HasPrefix(name, "debt:")
}

// CheckID checks a client account or node id: 1 to 128 characters from
// [A-Za-z0-9._-], so that ids never break a ledger account name or key.
func CheckID(id string) error {
	if len(id) == 0 || len(id) > 128 {
		return fmt.Errorf("%w %q: want 1 to 128 characters", ErrBadID, id)
	}
	for _, c := range id {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
		if !ok {
			return fmt.Errorf("%w %q: character %q not allowed", ErrBadID, id, c)
		}
	}
	return nil
}

func (t *rw) balance(account string) (int64, error) { return t.getInt(pBalance + account) }

// posted reports whether an entry with key exists.
func (t *rw) posted(key string) (bool, error) {
	_, ok, err := t.get(pTxKey + key)
	return ok, err
}

// post records an entry under key unless one exists; it reports whether it
// posted. Zero postings are dropped; an entry may be empty (it then only
// marks the key as done).
func (t *rw) post(key, memo string, now time.Time, postings ...Posting) (bool, error) {
	if key == "" {
		return false, errors.New("ledger: empty idempotency key")
	}
	done, err := t.posted(key)
	if err != nil || done {
		return false, err
	}
	merged := map[string]int64{}
	var sum int64
	for _, p := range postings {
		if p.Account == "" {
			return false, fmt.Errorf("ledger %s: posting without account", key)
		}
		merged[p.Account] += p.Amount
		sum += p.Amount
	}
	if sum != 0 {
		return false, fmt.Errorf("ledger %s: %w (sum %d)", key, ErrUnbalanced, sum)
	}
	names := make([]string, 0, len(merged))
	for n, a := range merged {
		if a != 0 {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	e := Entry{Key: key, Time: now.UTC(), Memo: memo}
	for _, n := range names {
		old, err := t.balance(n)
		if err != nil {
			return false, err
		}
		nb := old + merged[n]
		if (debitAccount(n) && nb > 0) || (!debitAccount(n) && nb < 0) {
			return false, fmt.Errorf("ledger %s: %w: %s would be %d", key, ErrNegativeBalance, n, nb)
		}
		if err := t.setInt(pBalance+n, nb); err != nil {
			return false, err
		}
		e.Postings = append(e.Postings, Posting{Account: n, Amount: merged[n]})
	}
	seq, err := t.next(kNextSeq)
	if err != nil {
		return false, err
	}
	e.Seq = uint64(seq)
	if err := t.setJSON(pJournal+be64(e.Seq), &e); err != nil {
		return false, err
	}
	return true, t.setInt(pTxKey+key, seq)
}

// Balance returns a ledger account's balance in satoshis.
func (w *Wallet) Balance(account string) (int64, error) {
	t := w.begin()
	defer t.discard()
	return t.balance(account)
}

// Balances returns every non-zero balance whose account name starts with
// prefix ("" for all).
func (w *Wallet) Balances(prefix string) (map[string]int64, error) {
	t := w.begin()
	defer t.discard()
	out := map[string]int64{}
	err := t.scan(pBalance+prefix, func(k string, v []byte) error {
		if len(v) != 8 {
			return fmt.Errorf("wallet store: corrupt balance %q", k)
		}
		if b := int64(beUint(v)); b != 0 {
			out[prefix+k] = b
		}
		return nil
	})
	return out, err
}

func beUint(v []byte) uint64 {
	var x uint64
	for _, c := range v {
		x = x<<8 | uint64(c)
	}
	return x
}

// Journal returns up to limit entries with Seq >= from, in order.
func (w *Wallet) Journal(from uint64, limit int) ([]Entry, error) {
	t := w.begin()
	defer t.discard()
	var out []Entry
	errStop := errors.New("stop")
	err := t.scan(pJournal, func(k string, v []byte) error {
		if beUint([]byte(k)) < from {
			return nil
		}
		if limit > 0 && len(out) >= limit {
			return errStop
		}
		var e Entry
		if err := json.Unmarshal(v, &e); err != nil {
			return fmt.Errorf("wallet store: corrupt journal entry: %w", err)
		}
		out = append(out, e)
		return nil
	})
	if errors.Is(err, errStop) {
		err = nil
	}
	return out, err
}

// EntryByKey returns the entry recorded under an idempotency key.
func (w *Wallet) EntryByKey(key string) (Entry, bool, error) {
	t := w.begin()
	defer t.discard()
	if done, err := t.posted(key); err != nil || !done {
		return Entry{}, false, err
	}
	seq, err := t.getInt(pTxKey + key)
	if err != nil {
		return Entry{}, false, err
	}
	var e Entry
	ok, err := t.getJSON(pJournal+be64(uint64(seq)), &e)
	if err == nil && ok && e.Key != key {
		return Entry{}, false, fmt.Errorf("wallet store: journal entry %d has key %q, want %q", seq, e.Key, key)
	}
	return e, ok, err
}

// CheckLedger verifies the ledger's invariants: balances sum to zero, no
// credit account is negative and no debit account positive, and replaying
// the journal gives the stored balances.
func (w *Wallet) CheckLedger() error {
	bals, err := w.Balances("")
	if err != nil {
		return err
	}
	var sum int64
	for n, b := range bals {
		sum += b
		if (debitAccount(n) && b > 0) || (!debitAccount(n) && b < 0) {
			return fmt.Errorf("ledger: %s has balance %d: %w", n, b, ErrNegativeBalance)
		}
	}
	if sum != 0 {
		return fmt.Errorf("ledger: balances sum to %d: %w", sum, ErrUnbalanced)
	}
	entries, err := w.Journal(0, 0)
	if err != nil {
		return err
	}
	replay := map[string]int64{}
	for _, e := range entries {
		var s int64
		for _, p := range e.Postings {
			replay[p.Account] += p.Amount
			s += p.Amount
		}
		if s != 0 {
			return fmt.Errorf("ledger: entry %s sums to %d: %w", e.Key, s, ErrUnbalanced)
		}
	}
	for n, b := range replay {
		if b != bals[n] {
			return fmt.Errorf("ledger: %s is %d but the journal gives %d", n, bals[n], b)
		}
	}
	for n, b := range bals {
		if replay[n] != b {
			return fmt.Errorf("ledger: %s is %d but the journal gives %d", n, b, replay[n])
		}
	}
	return nil
}
