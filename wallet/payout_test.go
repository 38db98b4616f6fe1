package wallet

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
)

// addCoin stores a credited deposit output of acct as if a Sync had seen it
// at height 1 with the tip at 100.
func addCoin(t *testing.T, w *Wallet, acct string, value int64, seq byte) {
	t.Helper()
	if _, err := w.DepositAddress(acct); err != nil {
		t.Fatal(err)
	}
	tx := w.begin()
	defer tx.discard()
	idx, err := tx.getInt(pAccount + acct)
	if err != nil {
		t.Fatal(err)
	}
	_, script, _, err := w.keys.address(BranchDeposit, uint32(idx))
	if err != nil {
		t.Fatal(err)
	}
	op := wire.OutPoint{Hash: chainhash.Hash{seq}, Index: 0}
	key := DepositKey(op.String(), "b", 0)
	if _, err := tx.post(key, "", time.Now(), Posting{AcctExtDeposits, -value}, Posting{EscrowAccount(acct), value}); err != nil {
		t.Fatal(err)
	}
	u := utxo{Value: value, Script: script, Branch: BranchDeposit, Index: uint32(idx), Account: acct, Height: 1, Block: "b", CreditKey: key}
	if err := tx.setJSON(pUTXO+op.String(), &u); err != nil {
		t.Fatal(err)
	}
	if err := tx.setInt(kTip, 100); err != nil {
		t.Fatal(err)
	}
	if err := tx.commit(); err != nil {
		t.Fatal(err)
	}
}

func regtestAddr(t *testing.T) string {
	k, _ := btcec.NewPrivateKey()
	a, err := btcutil.NewAddressWitnessPubKeyHash(btcutil.Hash160(k.PubKey().SerializeCompressed()), &chaincfg.RegressionNetParams)
	if err != nil {
		t.Fatal(err)
	}
	return a.EncodeAddress()
}

func TestPayoutPlan(t *testing.T) {
	w := newTestWallet(t, "regtest", func(c *Config) { c.FeeRate = 10; c.PayoutThreshold = 1000 })
	addCoin(t, w, "acct", 300_000, 1)
	addCoin(t, w, "acct", 200_000, 2)
	in := PeriodInput{Period: 1, Length: Month, Nodes: []NodeTerms{
		{ID: "big", PriceSatPerGiBMonth: 1000, PayoutAddress: regtestAddr(t)},
		{ID: "mid", PriceSatPerGiBMonth: 1000, PayoutAddress: regtestAddr(t)},
		{ID: "tiny", PriceSatPerGiBMonth: 1000, PayoutAddress: regtestAddr(t)},
		{ID: "under", PriceSatPerGiBMonth: 1000, PayoutAddress: regtestAddr(t)}, // below the threshold
		{ID: "noaddr", PriceSatPerGiBMonth: 1000},                               // cannot be paid yet
	}, Holdings: []Holding{
		{Node: "big", Account: "acct", Bytes: 350 * GiB, Passed: true},
		{Node: "mid", Account: "acct", Bytes: 50 * GiB, Passed: true},
		{Node: "tiny", Account: "acct", Bytes: GiB + GiB/2, Passed: true},
		{Node: "under", Account: "acct", Bytes: GiB / 2, Passed: true},
		{Node: "noaddr", Account: "acct", Bytes: 10 * GiB, Passed: true},
	}}
	if _, err := w.Settle(in); err != nil {
		t.Fatal(err)
	}
	// No node: Payout needs one, the PSBT path does not.
	if _, err := w.Payout(t.Context()); !errors.Is(err, ErrNoChain) {
		t.Fatalf("Payout without a chain: %v", err)
	}
	if _, err := w.Sync(t.Context()); !errors.Is(err, ErrNoChain) {
		t.Fatalf("Sync without a chain: %v", err)
	}
	p, err := w.WritePayoutPSBT(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Outputs) != 3 || p.Outputs[0].Node != "big" || p.Outputs[1].Node != "mid" || p.Outputs[2].Node != "tiny" {
		t.Fatalf("payees %+v", p.Outputs)
	}
	var shares, debits, amounts int64
	for _, o := range p.Outputs {
		if o.Amount != o.Debit-o.FeeShare || o.Amount < dustLimit {
			t.Fatalf("output %+v", o)
		}
		shares += o.FeeShare
		debits += o.Debit
		amounts += o.Amount
	}
	if shares != p.Fee || p.Amount != amounts || debits != 401_500 {
		t.Fatalf("fee %d shares %d debits %d amount %d", p.Fee, shares, debits, p.Amount)
	}
	if p.Fee != p.VSize*10 {
		t.Fatalf("fee %d for %d vB at 10 sat/vB", p.Fee, p.VSize)
	}
	// Largest first: 300 000 does not cover 401 500, so both coins are spent.
	if len(p.Inputs) != 2 || p.Change != 98_500 || p.ChangeVout != 3 {
		t.Fatalf("inputs %v change %d at %d", p.Inputs, p.Change, p.ChangeVout)
	}
	// The nodes' balances moved in flight; the unpaid ones kept theirs.
	if b := mustBal(t, w, AcctPayoutInflight); b != 401_500 {
		t.Fatalf("in flight %d", b)
	}
	for node, want := range map[string]int64{"big": 0, "mid": 0, "tiny": 0, "under": 500, "noaddr": 10_000} {
		if b := mustBal(t, w, NodeAccount(node)); b != want {
			t.Errorf("node %s balance %d, want %d", node, b, want)
		}
	}
	// The PSBT signs with the wallet's keys and its txid is the recorded one.
	pk, err := ReadPSBTFile(p.PSBTFile)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := w.SignPSBT(pk)
	if err != nil {
		t.Fatal(err)
	}
	if tx.TxHash().String() != p.TxID {
		t.Fatalf("txid %s, recorded %s", tx.TxHash(), p.TxID)
	}
	// Another wallet's seed cannot sign it.
	other := newTestWallet(t, "regtest", nil)
	pk2, _ := ReadPSBTFile(p.PSBTFile)
	if _, err := other.SignPSBT(pk2); err == nil {
		t.Fatal("a foreign wallet signed the PSBT")
	}
	// Both coins are reserved now: a new payout finds no funds.
	in2 := in
	in2.Period = 2
	in2.Holdings = in.Holdings[:1]
	if _, err := w.Settle(in2); err != nil {
		t.Fatal(err)
	}
	if _, err := w.WritePayoutPSBT(t.TempDir()); !errors.Is(err, ErrInsufficientFunds) {
		t.Fatalf("second payout with every coin reserved: %v", err)
	}
	if err := w.CheckLedger(); err != nil {
		t.Fatal(err)
	}
}

func TestEstimateVSize(t *testing.T) {
	// 1 P2WPKH input, 2 P2WPKH outputs: 10.5 + 68 + 2*31 = 140.5 -> 141 vB
	// (with a 72-byte signature).
	s := make([]byte, 22)
	if v := estimateVSize(1, [][]byte{s, s}); v != 141 {
		t.Fatalf("vsize %d, want 141", v)
	}
}

// TestPayoutDropsDust: a node whose output would be dust after its share of
// the miner fee waits for a later payout; if no output is worth paying,
// nothing is recorded.
func TestPayoutDropsDust(t *testing.T) {
	w := newTestWallet(t, "regtest", func(c *Config) { c.FeeRate = 100; c.PayoutThreshold = dustLimit })
	addCoin(t, w, "acct", 1_000_000, 1)
	in := PeriodInput{Period: 1, Length: Month, Nodes: []NodeTerms{
		{ID: "a", PriceSatPerGiBMonth: 1000, PayoutAddress: regtestAddr(t)},
		{ID: "b", PriceSatPerGiBMonth: 600, PayoutAddress: regtestAddr(t)},
	}, Holdings: []Holding{
		{Node: "a", Account: "acct", Bytes: 100 * GiB, Passed: true},
		{Node: "b", Account: "acct", Bytes: GiB, Passed: true},
	}}
	if _, err := w.Settle(in); err != nil {
		t.Fatal(err)
	}
	p, err := w.WritePayoutPSBT(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// Two payees and change: 172 vB, 17 200 sat; b's share (103) would leave
	// 497 < 546, so b waits and a pays the fee of a 141 vB transaction alone.
	if len(p.Outputs) != 1 || p.Outputs[0].Node != "a" || p.Fee != 14_100 || p.Outputs[0].Amount != 100_000-14_100 {
		t.Fatalf("payout %+v", p)
	}
	if b := mustBal(t, w, NodeAccount("b")); b != 600 {
		t.Fatalf("b balance %d", b)
	}

	w2 := newTestWallet(t, "regtest", func(c *Config) { c.FeeRate = 5000; c.PayoutThreshold = dustLimit })
	addCoin(t, w2, "acct", 1_000_000, 1)
	if _, err := w2.Settle(in); err != nil {
		t.Fatal(err)
	}
	if p, err := w2.WritePayoutPSBT(t.TempDir()); err != nil || p != nil {
		t.Fatalf("payout that would be all fee: %+v %v", p, err)
	}
	if list, _ := w2.Payouts(); len(list) != 0 {
		t.Fatalf("recorded %d payouts", len(list))
	}
}

// settleHeld settles period for one node that held gib GiB of acct's data
// and passed, at 1,000 sat per GiB-month, paid to a regtest address.
func settleHeld(t *testing.T, w *Wallet, period uint64, node, acct string, gib int64) {
	t.Helper()
	in := PeriodInput{Period: period, Length: Month, Nodes: []NodeTerms{{ID: node, PriceSatPerGiBMonth: 1000, PayoutAddress: regtestAddr(t)}},
		Holdings: []Holding{{Node: node, Account: acct, Bytes: gib * GiB, Passed: true}}}
	if _, err := w.Settle(in); err != nil {
		t.Fatal(err)
	}
}
