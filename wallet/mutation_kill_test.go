package wallet

import (
	"errors"
	"testing"
	"time"
)

// Tests written against the mutants gremlins left alive in settle.go and
// payout.go (docs/TESTING.md lists each test with the mutants it kills).

// TestSettleInputBounds: every bound of a period's input accepted at its
// edge and refused one step past it; a refused period changes nothing.
func TestSettleInputBounds(t *testing.T) {
	w := newTestWallet(t, "regtest", nil)
	fund(t, w, "alice", 1_000_000, "a")
	price := func(p int64) *int64 { return &p }
	period := uint64(0)
	try := func(name string, ok bool, mod func(in *PeriodInput)) {
		t.Helper()
		period++
		in := settleInput(period, Holding{Node: "n1", Account: "alice", Bytes: GiB, Passed: true})
		mod(&in)
		before := mustBal(t, w, EscrowAccount("alice"))
		_, err := w.Settle(in)
		if ok && err != nil {
			t.Errorf("%s: refused: %v", name, err)
		}
		if !ok {
			if !errors.Is(err, ErrBadPeriod) {
				t.Errorf("%s: got %v, want ErrBadPeriod", name, err)
			}
			if after := mustBal(t, w, EscrowAccount("alice")); after != before {
				t.Errorf("%s: a refused period moved escrow %d -> %d", name, before, after)
			}
		}
	}
	try("length 0", false, func(in *PeriodInput) { in.Length = 0 })
	try("length -1", false, func(in *PeriodInput) { in.Length = -1 })
	try("length 1ns", true, func(in *PeriodInput) { in.Length = 1 })
	try("length 366 days", true, func(in *PeriodInput) { in.Length = 366 * 24 * time.Hour })
	try("length 366 days + 1ns", false, func(in *PeriodInput) { in.Length = 366*24*time.Hour + 1 })
	try("fee 100%", true, func(in *PeriodInput) { in.FeeBPS = MaxFeeBPS })
	try("fee over 100%", false, func(in *PeriodInput) { in.FeeBPS = MaxFeeBPS + 1 })
	try("node price 0", true, func(in *PeriodInput) { in.Nodes[0].PriceSatPerGiBMonth = 0 })
	try("node price -1", false, func(in *PeriodInput) { in.Nodes[0].PriceSatPerGiBMonth = -1 })
	try("node price 21e14", true, func(in *PeriodInput) { in.Nodes[0].PriceSatPerGiBMonth = 21e14; in.Holdings[0].Bytes = 1 })
	try("node price 21e14+1", false, func(in *PeriodInput) { in.Nodes[0].PriceSatPerGiBMonth = 21e14 + 1 })
	try("node id invalid", false, func(in *PeriodInput) { in.Nodes[1].ID = "bad id" })
	try("node twice", false, func(in *PeriodInput) { in.Nodes[1].ID = "n1" })
	try("holding 0 bytes", true, func(in *PeriodInput) { in.Holdings[0].Bytes = 0 })
	try("holding -1 bytes", false, func(in *PeriodInput) { in.Holdings[0].Bytes = -1 })
	try("holding account invalid", false, func(in *PeriodInput) { in.Holdings[0].Account = "bad/acct" })
	try("holding price 0", true, func(in *PeriodInput) { in.Holdings[0].Price = price(0) })
	try("holding price -1", false, func(in *PeriodInput) { in.Holdings[0].Price = price(-1) })
	try("holding price 21e14", true, func(in *PeriodInput) { in.Holdings[0].Price = price(21e14); in.Holdings[0].Bytes = 1 })
	try("holding price 21e14+1", false, func(in *PeriodInput) { in.Holdings[0].Price = price(21e14 + 1) })
	try("owes more than 2^63 sat", false, func(in *PeriodInput) {
		in.Holdings[0].Bytes, in.Nodes[0].PriceSatPerGiBMonth = 1<<62, 21e14
	})
	try("holding twice", false, func(in *PeriodInput) { in.Holdings = append(in.Holdings, in.Holdings[0]) })
	try("holding on another node of the same account", true, func(in *PeriodInput) {
		in.Holdings = append(in.Holdings, Holding{Node: "n2", Account: "alice", Bytes: GiB, Passed: true})
	})
	if err := w.CheckLedger(); err != nil {
		t.Fatal(err)
	}
}

// TestSettleExactEscrowNotDelinquent: an escrow that covers exactly what
// the period owes pays every line in full and leaves the account in good
// standing; one satoshi less makes it short.
func TestSettleExactEscrowNotDelinquent(t *testing.T) {
	for _, tc := range []struct {
		escrow int64
		short  bool
	}{{30_000, false}, {29_999, true}} {
		w := newTestWallet(t, "regtest", nil)
		fund(t, w, "alice", tc.escrow, "a")
		rep, err := w.Settle(settleInput(1,
			Holding{Node: "n1", Account: "alice", Bytes: 10 * GiB, Passed: true}, // 10 000
			Holding{Node: "n2", Account: "alice", Bytes: 10 * GiB, Passed: true}, // 20 000
		))
		if err != nil {
			t.Fatal(err)
		}
		var short int64
		for _, l := range rep.Lines {
			short += l.Shortfall
		}
		if got := len(rep.Delinquent) == 1; got != tc.short || (short > 0) != tc.short {
			t.Fatalf("escrow %d for 30000 owed: delinquent %v, shortfall %d", tc.escrow, rep.Delinquent, short)
		}
		if got := mustBal(t, w, EscrowAccount("alice")); got != 0 && !tc.short {
			t.Fatalf("escrow left %d", got)
		}
	}
}

// TestSettleFeeRounding: the mediator's fee is floor(charged*bps/10000) of
// each line, the node earns the rest, and the escrow pays exactly what was
// charged.
func TestSettleFeeRounding(t *testing.T) {
	w := newTestWallet(t, "regtest", nil)
	fund(t, w, "alice", 1_000_000, "a")
	in := settleInput(1,
		Holding{Node: "n1", Account: "alice", Bytes: 10*GiB + GiB/1000, Passed: true},
	)
	in.FeeBPS = 333
	rep, err := w.Settle(in)
	if err != nil {
		t.Fatal(err)
	}
	l := rep.Lines[0]
	// 10.001 GiB at 1000 sat: 10 001 sat (floor of 10 000.97..).
	owed := int64(10*GiB+GiB/1000) * 1000 / GiB
	fee := owed * 333 / 10_000
	if l.Owed != owed || l.Charged != owed || l.Fee != fee || l.Earned != owed-fee {
		t.Fatalf("line %+v, want owed %d fee %d", l, owed, fee)
	}
	if b := mustBal(t, w, NodeAccount("n1")); b != owed-fee {
		t.Fatalf("node earned %d, want %d", b, owed-fee)
	}
	if b := mustBal(t, w, AcctFeesMediator); b != fee {
		t.Fatalf("fees %d, want %d", b, fee)
	}
	if b := mustBal(t, w, EscrowAccount("alice")); b != 1_000_000-owed {
		t.Fatalf("escrow %d", b)
	}
}

// TestSettleCarryAcrossPeriods: the fraction of a satoshi a period leaves is
// stored with the period and paid by a later one: three thirds of a month
// pay exactly a month, also across a reopen.
func TestSettleCarryAcrossPeriods(t *testing.T) {
	w := newTestWallet(t, "regtest", nil)
	fund(t, w, "alice", 1_000_000, "a")
	var total int64
	for p := uint64(1); p <= 3; p++ {
		if p == 3 {
			dir := w.cfg.Dir
			w.Close()
			var err error
			w, err = Open(Config{Dir: dir, Passphrase: testPass, Logger: testLogger()})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { w.Close() })
		}
		in := settleInput(p, Holding{Node: "n1", Account: "alice", Bytes: GiB, Passed: true})
		in.Length, in.FeeBPS = Month/3, 0
		rep, err := w.Settle(in)
		if err != nil {
			t.Fatal(err)
		}
		total += rep.Lines[0].Owed
	}
	if total != 1000 || mustBal(t, w, NodeAccount("n1")) != 1000 {
		t.Fatalf("three thirds of a month paid %d (node %d), want 1000", total, mustBal(t, w, NodeAccount("n1")))
	}
}

// TestSettleGroupsLinesByAccount: with several accounts and nodes listed
// in any order, each account is charged against its own escrow as a whole:
// a short account splits its escrow over all its lines and is the only one
// delinquent.
func TestSettleGroupsLinesByAccount(t *testing.T) {
	w := newTestWallet(t, "regtest", nil)
	fund(t, w, "alice", 15_000, "a") // owes 30 000
	fund(t, w, "bob", 30_000, "b")   // owes 30 000
	rep, err := w.Settle(settleInput(1,
		Holding{Node: "n2", Account: "bob", Bytes: 10 * GiB, Passed: true},
		Holding{Node: "n1", Account: "alice", Bytes: 10 * GiB, Passed: true},
		Holding{Node: "n1", Account: "bob", Bytes: 10 * GiB, Passed: true},
		Holding{Node: "n2", Account: "alice", Bytes: 10 * GiB, Passed: true},
	))
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		node, acct       string
		charged, shortOf int64
	}{{"n1", "alice", 5000, 5000}, {"n2", "alice", 10_000, 10_000}, {"n1", "bob", 10_000, 0}, {"n2", "bob", 20_000, 0}}
	if len(rep.Lines) != len(want) {
		t.Fatalf("%d lines", len(rep.Lines))
	}
	for i, x := range want {
		l := rep.Lines[i]
		if l.Node != x.node || l.Account != x.acct || l.Charged != x.charged || l.Shortfall != x.shortOf {
			t.Errorf("line %d: %+v, want %+v", i, l, x)
		}
	}
	if len(rep.Delinquent) != 1 || rep.Delinquent[0] != "alice" {
		t.Fatalf("delinquent %v", rep.Delinquent)
	}
	for acct, charge := range map[string]int64{"alice": 30_000, "bob": 30_000} {
		st, err := w.AccountStatus(acct)
		if err != nil {
			t.Fatal(err)
		}
		if st.LastCharge != charge {
			t.Errorf("%s: last charge %d, want %d", acct, st.LastCharge, charge)
		}
	}
	if err := w.CheckLedger(); err != nil {
		t.Fatal(err)
	}
}

// payoutWallet is a wallet without a chain (payouts through the PSBT path)
// at 1 sat/vB whose nodes have the given balances (each with a payout
// address), and whose spendable coins have the given values.
func payoutWallet(t *testing.T, threshold int64, balances map[string]int64, coins ...int64) *Wallet {
	t.Helper()
	w := newTestWallet(t, "regtest", func(c *Config) { c.FeeRate = 1; c.PayoutThreshold = threshold })
	var sum int64
	for i, v := range coins {
		addCoin(t, w, "acct", v, byte(i+1))
		sum += v
	}
	in := PeriodInput{Period: 1, Length: Month}
	var owed int64
	for node, sat := range balances {
		in.Nodes = append(in.Nodes, NodeTerms{ID: node, PriceSatPerGiBMonth: sat, PayoutAddress: regtestAddr(t)})
		in.Holdings = append(in.Holdings, Holding{Node: node, Account: "acct", Bytes: GiB, Passed: true})
		owed += sat
	}
	if owed > sum {
		fund(t, w, "acct", owed-sum, "extra")
	}
	if _, err := w.Settle(in); err != nil {
		t.Fatal(err)
	}
	return w
}

func payoutPSBT(t *testing.T, w *Wallet) (*Payout, error) {
	t.Helper()
	return w.WritePayoutPSBT(t.TempDir())
}

// TestPayoutThresholdAndConfirmations: a node at exactly the threshold is
// paid, one satoshi below waits; a coin with exactly MinConf confirmations
// is spent, one with one fewer is not.
func TestPayoutThresholdAndConfirmations(t *testing.T) {
	w := payoutWallet(t, 10_000, map[string]int64{"at": 10_000, "below": 9_999}, 100_000)
	p, err := payoutPSBT(t, w)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Outputs) != 1 || p.Outputs[0].Node != "at" || p.Outputs[0].Debit != 10_000 {
		t.Fatalf("outputs %+v", p.Outputs)
	}
	if b := mustBal(t, w, NodeAccount("below")); b != 9_999 {
		t.Fatalf("node below the threshold: balance %d", b)
	}

	for _, tc := range []struct {
		tip int64
		ok  bool
	}{{DefaultMinConf, true}, {DefaultMinConf - 1, false}} {
		w := payoutWallet(t, 10_000, map[string]int64{"n": 20_000}, 100_000)
		tx := w.begin()
		if err := tx.setInt(kTip, tc.tip); err != nil { // the coin is at height 1
			t.Fatal(err)
		}
		if err := tx.commit(); err != nil {
			t.Fatal(err)
		}
		p, err := payoutPSBT(t, w)
		if tc.ok && (err != nil || p == nil || len(p.Inputs) != 1) {
			t.Fatalf("coin with %d confirmations: %+v %v", tc.tip, p, err)
		}
		if !tc.ok && !errors.Is(err, ErrInsufficientFunds) {
			t.Fatalf("coin with %d confirmations (MinConf %d) spent: %+v %v", tc.tip, DefaultMinConf, p, err)
		}
	}
}

// TestPayoutChangeBounds: inputs that meet the debits exactly need no
// change output; change of exactly the dust limit is an output; change
// below it takes another coin, or fails without one.
func TestPayoutChangeBounds(t *testing.T) {
	const debit = 20_000
	nodes := map[string]int64{"n": debit}
	cases := []struct {
		name    string
		coins   []int64
		inputs  int
		change  int64
		noFunds bool
	}{
		{"exact", []int64{debit, 5_000}, 1, 0, false},
		{"change at the dust limit", []int64{debit + dustLimit, 5_000}, 1, dustLimit, false},
		{"change below the dust limit takes a coin", []int64{debit + dustLimit - 1, 5_000}, 2, dustLimit - 1 + 5_000, false},
		{"change below the dust limit alone", []int64{debit + dustLimit - 1}, 0, 0, true},
		{"one satoshi short", []int64{debit - 1}, 0, 0, true},
	}
	for _, tc := range cases {
		w := payoutWallet(t, 10_000, nodes, tc.coins...)
		p, err := payoutPSBT(t, w)
		if tc.noFunds {
			if !errors.Is(err, ErrInsufficientFunds) {
				t.Errorf("%s: %+v %v, want ErrInsufficientFunds", tc.name, p, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		// 1 input, 1 P2WPKH output: 110 vB; a change output adds 31.
		vsize := int64(110 + 68*(tc.inputs-1))
		wantVout := int32(-1)
		if tc.change > 0 {
			vsize += 31
			wantVout = 1
		}
		if len(p.Inputs) != tc.inputs || p.Change != tc.change || p.ChangeVout != wantVout || p.VSize != vsize || p.Fee != vsize {
			t.Errorf("%s: inputs %d change %d at %d, vsize %d fee %d; want %d inputs, change %d at %d, %d vB",
				tc.name, len(p.Inputs), p.Change, p.ChangeVout, p.VSize, p.Fee, tc.inputs, tc.change, wantVout, vsize)
		}
		if p.Outputs[0].Amount != debit-p.Fee || p.Amount != debit-p.Fee {
			t.Errorf("%s: paid %d (%d), want %d", tc.name, p.Outputs[0].Amount, p.Amount, debit-p.Fee)
		}
		if err := w.CheckLedger(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestPayoutDustEdge: an output left with exactly the dust limit after its
// fee share is paid; one satoshi less and the node waits.
func TestPayoutDustEdge(t *testing.T) {
	// One input spent exactly, one output: 110 vB at 1 sat/vB.
	for _, tc := range []struct {
		debit int64
		paid  bool
	}{{dustLimit + 110, true}, {dustLimit + 109, false}} {
		w := payoutWallet(t, dustLimit, map[string]int64{"n": tc.debit}, tc.debit)
		p, err := payoutPSBT(t, w)
		if err != nil {
			t.Fatal(err)
		}
		if !tc.paid {
			if p != nil {
				t.Fatalf("debit %d: paid %+v", tc.debit, p.Outputs)
			}
			continue
		}
		if p == nil || len(p.Outputs) != 1 || p.Outputs[0].Amount != dustLimit || p.Fee != 110 {
			t.Fatalf("debit %d: payout %+v", tc.debit, p)
		}
	}
}

// TestPayoutDropsSmallestDustFirst: when several outputs would be dust,
// the smallest payee waits first; the larger, paying the fee of a smaller
// transaction alone, is then paid.
func TestPayoutDropsSmallestDustFirst(t *testing.T) {
	// The larger payee first in node order, then last (the smaller one is
	// then the first dust output met, and a later dust output must not
	// displace it).
	for _, names := range [][2]string{{"a", "b"}, {"b", "a"}} {
		big, small := names[0], names[1]
		w := newTestWallet(t, "regtest", func(c *Config) { c.FeeRate = 100; c.PayoutThreshold = dustLimit })
		addCoin(t, w, "acct", 11_600, 1)
		addCoin(t, w, "acct", dustLimit, 2)
		in := PeriodInput{Period: 1, Length: Month, Nodes: []NodeTerms{
			{ID: big, PriceSatPerGiBMonth: 11_600, PayoutAddress: regtestAddr(t)},
			{ID: small, PriceSatPerGiBMonth: dustLimit, PayoutAddress: regtestAddr(t)},
		}, Holdings: []Holding{
			{Node: big, Account: "acct", Bytes: GiB, Passed: true},
			{Node: small, Account: "acct", Bytes: GiB, Passed: true},
		}}
		if _, err := w.Settle(in); err != nil {
			t.Fatal(err)
		}
		// Both paid: 141 vB, 14 100 sat, more than big's 11 600 and more
		// than small's 546 would keep: both dust. small waits; big alone:
		// 110 vB, 11 000 sat, 600 paid.
		p, err := payoutPSBT(t, w)
		if err != nil {
			t.Fatal(err)
		}
		if p == nil || len(p.Outputs) != 1 || p.Outputs[0].Node != big || p.Fee != 11_000 || p.Outputs[0].Amount != 600 {
			t.Fatalf("larger payee %s, smaller %s: payout %+v, want %s paid 600 sat alone", big, small, p, big)
		}
		if b := mustBal(t, w, NodeAccount(small)); b != dustLimit {
			t.Fatalf("%s balance %d", small, b)
		}
	}
}

// TestPayoutFeeSharesSumToFee: the fee is split over the payees in
// proportion to their debits, the rounding remainder given one satoshi at a
// time from the first payee, so the shares sum to the fee exactly.
func TestPayoutFeeSharesSumToFee(t *testing.T) {
	w := payoutWallet(t, 1_000, map[string]int64{"a": 30_001, "b": 30_001, "c": 30_001}, 90_003)
	p, err := payoutPSBT(t, w)
	if err != nil {
		t.Fatal(err)
	}
	// 1 input, 3 outputs, no change: 172 vB; 172/3 = 57 each, 1 left.
	var sum int64
	for _, o := range p.Outputs {
		sum += o.FeeShare
		if o.Amount != o.Debit-o.FeeShare {
			t.Fatalf("output %+v", o)
		}
	}
	if p.Fee != 172 || sum != 172 || p.Outputs[0].FeeShare != 58 || p.Outputs[1].FeeShare != 57 || p.Outputs[2].FeeShare != 57 {
		t.Fatalf("fee %d, shares %+v", p.Fee, p.Outputs)
	}
}

// TestPayoutSpendsLargestCreditedCoinsFirst: coins are spent largest
// first, whatever their outpoints; a deposit seen but not credited to its
// account is never spent, change of the wallet's own (no account) is.
func TestPayoutSpendsLargestCreditedCoinsFirst(t *testing.T) {
	// The smaller coin has the smaller outpoint (hash 01.. before 02..).
	w := payoutWallet(t, 10_000, map[string]int64{"n": 20_000}, 5_000, 30_000)
	p, err := payoutPSBT(t, w)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Inputs) != 1 || p.Change != 10_000 {
		t.Fatalf("inputs %v change %d, want the 30000 coin alone", p.Inputs, p.Change)
	}

	// The one coin uncredited: nothing to spend. Then the same coin as
	// change (no account): spent.
	for _, tc := range []struct {
		acct string
		ok   bool
	}{{"acct", false}, {"", true}} {
		w := payoutWallet(t, 10_000, map[string]int64{"n": 20_000}, 30_000)
		tx := w.begin()
		var key string
		var u utxo
		if err := tx.scan(pUTXO, func(k string, v []byte) error {
			x, err := decodeUTXO(v)
			key, u = k, *x
			return err
		}); err != nil {
			t.Fatal(err)
		}
		u.Account, u.CreditKey = tc.acct, ""
		if err := tx.setJSON(pUTXO+key, &u); err != nil {
			t.Fatal(err)
		}
		if err := tx.commit(); err != nil {
			t.Fatal(err)
		}
		p, err := payoutPSBT(t, w)
		if tc.ok && (err != nil || p == nil || len(p.Inputs) != 1) {
			t.Fatalf("change coin not spent: %+v %v", p, err)
		}
		if !tc.ok && !errors.Is(err, ErrInsufficientFunds) {
			t.Fatalf("uncredited deposit spent: %+v %v", p, err)
		}
	}
}
