package wallet

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcec/v2/schnorr"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"

	"github.com/fincrypt/fincrypt/wallet/btcdtest"
)

// One btcd serves every chain test of the package; they run one after the
// other (no t.Parallel), each with its own wallet and addresses.
var shared struct {
	once sync.Once
	node *btcdtest.Node
	dir  string
	err  error
}

func chainNode(t *testing.T) *btcdtest.Node {
	t.Helper()
	shared.once.Do(func() {
		shared.dir, shared.err = os.MkdirTemp("", "fincrypt-btcd-")
		if shared.err != nil {
			return
		}
		if shared.node, shared.err = btcdtest.StartNode(shared.dir); shared.err != nil {
			return
		}
		shared.err = shared.node.Ready()
	})
	if shared.err != nil {
		t.Fatalf("btcd: %v", shared.err)
	}
	return shared.node
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.node != nil {
		shared.node.Stop()
	}
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

// chainWallet opens a wallet on the shared btcd, scanning from its tip.
func chainWallet(t *testing.T, n *btcdtest.Node, minConf int) (*Wallet, Config) {
	t.Helper()
	best, err := n.RPC.GetBlockCount()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := CreateSeed(dir, testPass, "regtest", cheapKDF); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Dir: dir, Passphrase: testPass, Network: "regtest", Chain: n.RPC, MinConf: minConf, StartHeight: best, Logger: testLogger()}
	w, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w, cfg
}

func mustSync(t *testing.T, w *Wallet) *SyncReport {
	t.Helper()
	rep, err := w.Sync(context.Background())
	if err != nil {
		t.Fatalf("sync: %v", err)
	}
	return rep
}

func deposit(t *testing.T, n *btcdtest.Node, w *Wallet, acct string, sat int64) *wire.MsgTx {
	t.Helper()
	s, err := w.DepositAddress(acct)
	if err != nil {
		t.Fatal(err)
	}
	a, err := btcutil.DecodeAddress(s, n.Net)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := n.Send(a, sat)
	if err != nil {
		t.Fatal(err)
	}
	return tx
}

func status(t *testing.T, w *Wallet, acct string) AccountStatus {
	t.Helper()
	st, err := w.AccountStatus(acct)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestDepositConfirmationsAndReorg: a deposit is credited only after MinConf
// confirmations; a reorganisation that drops it takes the credit back (into
// debt when it was already spent), and a later deposit repays the debt.
func TestDepositConfirmationsAndReorg(t *testing.T) {
	n := chainNode(t)
	w, _ := chainWallet(t, n, 3)
	tx := deposit(t, n, w, "alice", 1_000_000)
	depBlock := n.MustGenerate(t, 1)[0]
	mustSync(t, w)
	if st := status(t, w, "alice"); st.Escrow != 0 || st.Pending != 1_000_000 {
		t.Fatalf("1 confirmation: %+v", st)
	}
	n.MustGenerate(t, 1)
	mustSync(t, w)
	if st := status(t, w, "alice"); st.Escrow != 0 {
		t.Fatalf("2 confirmations: credited early: %+v", st)
	}
	n.MustGenerate(t, 1)
	rep := mustSync(t, w)
	if st := status(t, w, "alice"); st.Escrow != 1_000_000 || st.Pending != 0 || len(rep.Credited) != 1 {
		t.Fatalf("3 confirmations: %+v, report %+v", st, rep)
	}
	mustSync(t, w) // idempotent
	if b := mustBal(t, w, EscrowAccount("alice")); b != 1_000_000 {
		t.Fatalf("second sync changed escrow to %d", b)
	}

	// Spend 400 000 of it on storage.
	in := PeriodInput{Period: 1, Length: Month, Nodes: []NodeTerms{{ID: "n1", PriceSatPerGiBMonth: 1000}},
		Holdings: []Holding{{Node: "n1", Account: "alice", Bytes: 400 * GiB, Passed: true}}}
	if _, err := w.Settle(in); err != nil {
		t.Fatal(err)
	}

	// Reorganise the deposit's block away. A node whose best chain is a
	// prefix of the wallet's is taken to be behind, not reorganised.
	if err := n.Invalidate(depBlock); err != nil {
		t.Fatal(err)
	}
	if rep = mustSync(t, w); rep.Disconnected != 0 {
		t.Fatalf("undid blocks of a node that is only behind: %+v", rep)
	}
	// The deposit is double-spent on a longer competing chain.
	if _, err := n.Replace(tx); err != nil {
		t.Fatal(err)
	}
	n.MustGenerate(t, 5)
	rep = mustSync(t, w)
	if rep.Disconnected != 3 || len(rep.Reversed) != 1 || rep.Connected != 5 {
		t.Fatalf("reorg report %+v", rep)
	}
	st := status(t, w, "alice")
	if st.Escrow != 0 || st.Debt != -400_000 || !st.Delinquent || st.CanPlace() || st.Pending != 0 {
		t.Fatalf("after the reorg: %+v", st)
	}
	if b := mustBal(t, w, NodeAccount("n1")); b != 400_000 {
		t.Fatalf("node balance %d, want 400000 (earned before the reorg)", b)
	}

	// A new deposit repays the debt first.
	deposit(t, n, w, "alice", 500_000)
	n.MustGenerate(t, 3)
	mustSync(t, w)
	st = status(t, w, "alice")
	if st.Escrow != 100_000 || st.Debt != 0 {
		t.Fatalf("after repaying: %+v", st)
	}
	if b := mustBal(t, w, AcctExtDeposits); b != -500_000 {
		t.Fatalf("ext:deposits %d, want -500000", b)
	}
	if err := w.CheckLedger(); err != nil {
		t.Fatal(err)
	}
}

func payoutAddrs(t *testing.T, n *btcdtest.Node) (p2wpkh, p2pkh, p2tr btcutil.Address) {
	t.Helper()
	var keys [3]*btcec.PrivateKey
	for i := range keys {
		keys[i], _ = btcec.NewPrivateKey()
	}
	var err error
	if p2wpkh, err = btcutil.NewAddressWitnessPubKeyHash(btcutil.Hash160(keys[0].PubKey().SerializeCompressed()), n.Net); err != nil {
		t.Fatal(err)
	}
	if p2pkh, err = btcutil.NewAddressPubKeyHash(btcutil.Hash160(keys[1].PubKey().SerializeCompressed()), n.Net); err != nil {
		t.Fatal(err)
	}
	tk := txscript.ComputeTaprootKeyNoScript(keys[2].PubKey())
	if p2tr, err = btcutil.NewAddressTaproot(schnorr.SerializePubKey(tk), n.Net); err != nil {
		t.Fatal(err)
	}
	return
}

// checkPaidOnChain reads the payout transaction back from btcd and checks
// that it pays each node exactly what the payout record and the ledger say,
// and that its real fee is the recorded fee.
func checkPaidOnChain(t *testing.T, n *btcdtest.Node, w *Wallet, p *Payout, paidBefore map[string]int64) {
	t.Helper()
	txid, err := chainhash.NewHashFromStr(p.TxID)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := n.Tx(txid)
	if err != nil {
		t.Fatal(err)
	}
	conf, err := n.Confirmations(txid)
	if err != nil || conf < int64(w.cfg.MinConf) {
		t.Fatalf("payout has %d confirmations (%v)", conf, err)
	}
	var in, out int64
	for _, txin := range tx.TxIn {
		prev, err := n.Tx(&txin.PreviousOutPoint.Hash)
		if err != nil {
			t.Fatal(err)
		}
		in += prev.TxOut[txin.PreviousOutPoint.Index].Value
	}
	for _, o := range tx.TxOut {
		out += o.Value
	}
	if in-out != p.Fee {
		t.Fatalf("on-chain fee %d, recorded %d", in-out, p.Fee)
	}
	for _, o := range p.Outputs {
		a, err := btcutil.DecodeAddress(o.Address, n.Net)
		if err != nil {
			t.Fatal(err)
		}
		script, _ := txscript.PayToAddrScript(a)
		got := tx.TxOut[o.Vout]
		if string(got.PkScript) != string(script) || got.Value != o.Amount || o.Amount != o.Debit-o.FeeShare {
			t.Fatalf("output %d pays %d to %x; record says %+v", o.Vout, got.Value, got.PkScript, o)
		}
		if paid := mustBal(t, w, PaidAccount(o.Node)) - paidBefore[o.Node]; paid != got.Value {
			t.Fatalf("ledger paid:%s grew by %d, chain paid %d", o.Node, paid, got.Value)
		}
	}
}

// TestSettleAndPayout: settle a period (one node failed one account's
// challenges), crash between settlement and payout and again between
// recording the payout and broadcasting it, and check that one transaction
// confirms paying each node exactly what the ledger says.
func TestSettleAndPayout(t *testing.T) {
	n := chainNode(t)
	w, cfg := chainWallet(t, n, 2)
	deposit(t, n, w, "alice", 5_000_000)
	deposit(t, n, w, "bob", 3_000_000)
	n.MustGenerate(t, 2)
	mustSync(t, w)
	a1, a2, a3 := payoutAddrs(t, n)
	in := PeriodInput{Period: 7, Length: Month, FeeBPS: 100,
		Nodes: []NodeTerms{
			{ID: "n1", PriceSatPerGiBMonth: 1000, PayoutAddress: a1.EncodeAddress()},
			{ID: "n2", PriceSatPerGiBMonth: 1000, PayoutAddress: a2.EncodeAddress()},
			{ID: "n3", PriceSatPerGiBMonth: 1000, PayoutAddress: a3.EncodeAddress()},
		},
		Holdings: []Holding{
			{Node: "n1", Account: "alice", Bytes: 100 * GiB, Passed: true},
			{Node: "n2", Account: "alice", Bytes: 100 * GiB, Passed: true},
			{Node: "n3", Account: "alice", Bytes: 100 * GiB, Passed: false},
			{Node: "n1", Account: "bob", Bytes: 50 * GiB, Passed: true},
			{Node: "n2", Account: "bob", Bytes: 50 * GiB, Passed: true},
			{Node: "n3", Account: "bob", Bytes: 50 * GiB, Passed: true},
		}}
	if _, err := w.Settle(in); err != nil {
		t.Fatal(err)
	}
	// n2 and n3 held the same; n3 failed alice's challenges and earns less by
	// exactly alice's share: 100 GiB * 1000 sat less the 1% fee.
	n2, n3 := mustBal(t, w, NodeAccount("n2")), mustBal(t, w, NodeAccount("n3"))
	if n2 != 148_500 || n2-n3 != 99_000 {
		t.Fatalf("n2 %d n3 %d", n2, n3)
	}

	// Crash between settlement and payout: reopen from disk.
	w.Close()
	var err error
	if w, err = Open(cfg); err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if rep, err := w.Settle(in); err != nil || !rep.Repeated {
		t.Fatalf("settling again after the crash: %+v %v", rep, err)
	}

	// Crash after the payout is recorded, before it is broadcast.
	errCrash := errors.New("simulated crash")
	w.testHook = func(p string) error {
		if p == "payout-recorded" {
			return errCrash
		}
		return nil
	}
	p, err := w.Payout(context.Background())
	if !errors.Is(err, errCrash) || p == nil {
		t.Fatalf("payout: %+v %v", p, err)
	}
	txid, _ := chainhash.NewHashFromStr(p.TxID)
	if _, err := n.Tx(txid); err == nil {
		t.Fatal("the payout reached the node before the simulated crash")
	}
	if b := mustBal(t, w, NodeAccount("n1")); b != 0 {
		t.Fatalf("n1 balance %d after the payout was recorded", b)
	}
	w.Close()
	if w, err = Open(cfg); err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	again, err := w.Payout(context.Background())
	if err != nil || again != nil {
		t.Fatalf("payout after restart: %+v %v (want nothing new)", again, err)
	}
	list, err := w.Payouts()
	if err != nil || len(list) != 1 || list[0].State != PayoutBroadcast || list[0].TxID != p.TxID {
		t.Fatalf("payouts after restart: %+v %v", list, err)
	}
	if _, err := n.Tx(txid); err != nil {
		t.Fatalf("the recorded payout was not re-broadcast: %v", err)
	}
	n.MustGenerate(t, 1)
	if rep := mustSync(t, w); len(rep.Confirmed) != 0 {
		t.Fatal("confirmed with 1 of 2 confirmations")
	}
	n.MustGenerate(t, 1)
	if rep := mustSync(t, w); len(rep.Confirmed) != 1 {
		t.Fatalf("not confirmed: %+v", rep)
	}
	list, _ = w.Payouts()
	if list[0].State != PayoutConfirmed || list[0].Confirmations != 2 || len(list[0].Outputs) != 3 {
		t.Fatalf("payout %+v", list[0])
	}
	checkPaidOnChain(t, n, w, &list[0], nil)
	for _, o := range list[0].Outputs {
		want := map[string]int64{"n1": 148_500, "n2": 148_500, "n3": 49_500}[o.Node]
		if o.Debit != want {
			t.Fatalf("%s debited %d, want %d", o.Node, o.Debit, want)
		}
	}
	// Nothing left to pay; the wallet's outputs back exactly what it owes.
	if p, err := w.Payout(context.Background()); err != nil || p != nil {
		t.Fatalf("second payout: %+v %v", p, err)
	}
	total, _, err := w.OnChain()
	if err != nil {
		t.Fatal(err)
	}
	owed := mustBal(t, w, EscrowAccount("alice")) + mustBal(t, w, EscrowAccount("bob")) + mustBal(t, w, AcctFeesMediator)
	if total != owed {
		t.Fatalf("wallet holds %d on chain, owes %d", total, owed)
	}
	if err := w.CheckLedger(); err != nil {
		t.Fatal(err)
	}
}

// TestPayoutPSBT: the offline path writes an unsigned PSBT; signed with the
// wallet's seed and broadcast by the operator, the watcher confirms it.
func TestPayoutPSBT(t *testing.T) {
	n := chainNode(t)
	w, _ := chainWallet(t, n, 2)
	deposit(t, n, w, "dave", 2_000_000)
	n.MustGenerate(t, 2)
	mustSync(t, w)
	a, _, _ := payoutAddrs(t, n)
	in := PeriodInput{Period: 1, Length: Month,
		Nodes:    []NodeTerms{{ID: "n9", PriceSatPerGiBMonth: 5000, PayoutAddress: a.EncodeAddress()}},
		Holdings: []Holding{{Node: "n9", Account: "dave", Bytes: 20 * GiB, Passed: true}}}
	if _, err := w.Settle(in); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "psbt")
	p, err := w.WritePayoutPSBT(dir)
	if err != nil || p == nil || p.State != PayoutPSBT {
		t.Fatalf("psbt payout %+v %v", p, err)
	}
	pk, err := ReadPSBTFile(p.PSBTFile)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := w.SignPSBT(pk)
	if err != nil {
		t.Fatal(err)
	}
	if tx.TxHash().String() != p.TxID {
		t.Fatalf("signed txid %s, recorded %s", tx.TxHash(), p.TxID)
	}
	if _, err := n.RPC.SendRawTransaction(tx, false); err != nil {
		t.Fatal(err)
	}
	n.MustGenerate(t, 2)
	mustSync(t, w)
	list, _ := w.Payouts()
	if len(list) != 1 || list[0].State != PayoutConfirmed {
		t.Fatalf("payouts %+v", list)
	}
	if list[0].Outputs[0].Debit != 100_000 {
		t.Fatalf("debit %d, want 100000", list[0].Outputs[0].Debit)
	}
	checkPaidOnChain(t, n, w, &list[0], nil)
	if err := w.CheckLedger(); err != nil {
		t.Fatal(err)
	}

	// A reorganisation takes the confirmed payout out of the chain: the
	// ledger moves it back in flight, the wallet re-broadcasts it, and once
	// it confirms again the node is still paid once.
	blk, err := chainhash.NewHashFromStr(list[0].Block)
	if err != nil {
		t.Fatal(err)
	}
	paid := mustBal(t, w, PaidAccount("n9"))
	if err := n.Invalidate(blk); err != nil {
		t.Fatal(err)
	}
	n.MustGenerate(t, 3) // btcd mines the payout again, in another block
	if rep := mustSync(t, w); rep.Disconnected != 2 || rep.Connected != 3 || len(rep.Confirmed) != 1 {
		t.Fatalf("reorg report %+v", rep)
	}
	list, _ = w.Payouts()
	if len(list) != 1 || list[0].State != PayoutConfirmed || list[0].Gen != 2 || list[0].Block == blk.String() || mustBal(t, w, PaidAccount("n9")) != paid {
		t.Fatalf("after re-mining: %+v, paid %d want %d", list, mustBal(t, w, PaidAccount("n9")), paid)
	}
	if _, ok, err := w.EntryByKey("payout/1/unconfirm/1"); !ok || err != nil {
		t.Fatalf("no unconfirm entry: %v", err)
	}
	checkPaidOnChain(t, n, w, &list[0], nil)
	if err := w.CheckLedger(); err != nil {
		t.Fatal(err)
	}
}
