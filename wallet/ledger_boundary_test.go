package wallet

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestCheckIDBounds: client and node ids are 1 to 128 characters from
// [A-Za-z0-9._-]; each end of each range is accepted, the characters just
// outside them are not, so no id can break a ledger account name.
func TestCheckIDBounds(t *testing.T) {
	for _, ok := range []string{"a", "z", "A", "Z", "0", "9", ".", "_", "-", "node-1.eu_west", strings.Repeat("x", 128)} {
		if err := CheckID(ok); err != nil {
			t.Errorf("CheckID(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", strings.Repeat("x", 129), "`", "{", "@", "[", "/", ":", " ", "a:b", "a/b", "é"} {
		if err := CheckID(bad); !errors.Is(err, ErrBadID) {
			t.Errorf("CheckID(%q) = %v, want ErrBadID", bad, err)
		}
	}
}

// TestLedgerZeroBalances: an escrow may be spent to exactly zero and a
// debit account brought back to exactly zero; one satoshi more is refused.
func TestLedgerZeroBalances(t *testing.T) {
	w := newTestWallet(t, "regtest", nil)
	fund(t, w, "a", 100, "d1")
	post := func(key string, ps ...Posting) error {
		tx := w.begin()
		defer tx.discard()
		if _, err := tx.post(key, "", time.Now(), ps...); err != nil {
			return err
		}
		return tx.commit()
	}
	// The whole escrow to a node: escrow exactly 0.
	if err := post("charge/1", Posting{EscrowAccount("a"), -100}, Posting{NodeAccount("n"), 100}); err != nil {
		t.Fatalf("spending an escrow to zero: %v", err)
	}
	if err := post("charge/2", Posting{EscrowAccount("a"), -1}, Posting{NodeAccount("n"), 1}); !errors.Is(err, ErrNegativeBalance) {
		t.Fatalf("spending below zero: %v", err)
	}
	// The deposit taken back (a reorganisation): ext:deposits exactly 0.
	if err := post("reorg/1", Posting{NodeAccount("n"), -100}, Posting{AcctExtDeposits, 100}); err != nil {
		t.Fatalf("bringing a debit account back to zero: %v", err)
	}
	if err := post("reorg/2", Posting{NodeAccount("n"), -1}, Posting{AcctExtDeposits, 1}); !errors.Is(err, ErrNegativeBalance) {
		t.Fatalf("a debit account above zero: %v", err)
	}
	for _, acct := range []string{EscrowAccount("a"), NodeAccount("n"), AcctExtDeposits} {
		if b := mustBal(t, w, acct); b != 0 {
			t.Errorf("%s = %d, want 0", acct, b)
		}
	}
	if err := w.CheckLedger(); err != nil {
		t.Fatal(err)
	}
}

// TestJournalFromAndLimit: the journal pages by sequence number (from, the
// first sequence wanted) and count (limit, 0 for all), in order, as the
// mediator's journal listing pages through it.
func TestJournalFromAndLimit(t *testing.T) {
	w := newTestWallet(t, "regtest", nil)
	for i := range 5 {
		fund(t, w, "a", int64(10+i), fmt.Sprint(i))
	}
	seqs := func(from uint64, limit int) string {
		j, err := w.Journal(from, limit)
		if err != nil {
			t.Fatal(err)
		}
		var s []string
		for _, e := range j {
			s = append(s, fmt.Sprint(e.Seq))
		}
		return strings.Join(s, ",")
	}
	all := seqs(0, 0)
	if all != "0,1,2,3,4" {
		t.Fatalf("whole journal: %s", all)
	}
	for _, c := range []struct {
		from  uint64
		limit int
		want  string
	}{{0, 1, "0"}, {2, 0, "2,3,4"}, {2, 2, "2,3"}, {4, 0, "4"}, {4, 3, "4"}, {5, 0, ""}, {1, 4, "1,2,3,4"}} {
		if got := seqs(c.from, c.limit); got != c.want {
			t.Errorf("Journal(%d, %d) = %s, want %s", c.from, c.limit, got, c.want)
		}
	}
	e, ok, err := w.EntryByKey("deposit/3")
	if err != nil || !ok || e.Seq != 3 || e.Postings[0] != (Posting{EscrowAccount("a"), 13}) {
		t.Fatalf("EntryByKey(deposit/3) = %+v, %v, %v", e, ok, err)
	}
	if _, ok, err := w.EntryByKey("deposit/9"); ok || err != nil {
		t.Fatalf("EntryByKey of a key never posted: %v, %v", ok, err)
	}
}

// TestCheckLedgerFindsDamage: CheckLedger (run by `fincrypt mediator
// check`) reports a store whose balances do not sum to zero, whose credit
// account went negative, whose balance disagrees with the journal, or
// whose journal entry does not balance.
func TestCheckLedgerFindsDamage(t *testing.T) {
	damage := func(t *testing.T, fn func(tx *rw)) *Wallet {
		w := newTestWallet(t, "regtest", nil)
		fund(t, w, "a", 100, "d1")
		fund(t, w, "b", 50, "d2")
		if err := w.CheckLedger(); err != nil {
			t.Fatal(err)
		}
		tx := w.begin()
		defer tx.discard()
		fn(tx)
		if err := tx.commit(); err != nil {
			t.Fatal(err)
		}
		return w
	}
	set := func(tx *rw, acct string, v int64) {
		if err := tx.setInt(pBalance+acct, v); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		name string
		fn   func(tx *rw)
		want error
	}{
		{"a balance that does not sum", func(tx *rw) { set(tx, EscrowAccount("a"), 101) }, ErrUnbalanced},
		{"a negative escrow", func(tx *rw) { set(tx, EscrowAccount("a"), -50); set(tx, EscrowAccount("b"), 200) }, ErrNegativeBalance},
		{"a positive debit account", func(tx *rw) {
			set(tx, AcctExtDeposits, 1)
			set(tx, EscrowAccount("a"), 99)
			set(tx, EscrowAccount("b"), 50)
		}, ErrNegativeBalance},
		{"balances moved behind the journal's back", func(tx *rw) { set(tx, EscrowAccount("a"), 90); set(tx, EscrowAccount("b"), 60) }, nil},
		{"accounts the journal never posted", func(tx *rw) { set(tx, EscrowAccount("c"), 10); set(tx, "ext:other", -10) }, nil},
		{"a journal entry that does not balance", func(tx *rw) {
			if err := tx.setJSON(pJournal+be64(1), &Entry{Seq: 1, Key: "deposit/d2", Postings: []Posting{{AcctExtDeposits, -50}, {EscrowAccount("b"), 50}, {EscrowAccount("a"), 1}}}); err != nil {
				t.Fatal(err)
			}
		}, ErrUnbalanced},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := damage(t, c.fn)
			err := w.CheckLedger()
			if err == nil || c.want != nil && !errors.Is(err, c.want) {
				t.Fatalf("CheckLedger = %v, want %v", err, c.want)
			}
		})
	}
}

// TestPrefixEnd: a scan's upper bound is the first key past every key with
// the prefix, carrying over 0xff bytes; an all-0xff prefix has none.
func TestPrefixEnd(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"bal/", "bal0"}, {"a\xff", "b"}, {"a\xfe", "a\xff"}, {"a\xff\xff", "b"}, {"\xff\xff", ""},
	} {
		got := prefixEnd(c.in)
		if string(got) != c.want || (c.want == "") != (got == nil) {
			t.Errorf("prefixEnd(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
