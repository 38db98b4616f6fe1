package wallet

import (
	"bytes"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/btcsuite/btcd/btcutil/psbt"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
)

// psbtCut is what a power cut at one sync of the wallet's log leaves: the
// database as it was durable just before that sync, and the PSBT files
// already in the payout directory.
type psbtCut struct {
	db    *vfs.MemFS
	files []string
}

// psbtPayoutWallet is a wallet over a crashable file system with two nodes
// due and coins to pay them; cuts, once armed, collects a power cut before
// every sync of the database's log.
func psbtPayoutWallet(t *testing.T, psbtDir string) (w *Wallet, cfg Config, arm func(), cuts func() []psbtCut) {
	t.Helper()
	dir := t.TempDir()
	if err := CreateSeed(dir, testPass, "regtest", cheapKDF); err != nil {
		t.Fatal(err)
	}
	mem := vfs.NewCrashableMem()
	var mu sync.Mutex
	armed := false
	var taken []psbtCut
	inj := errorfs.InjectorFunc(func(op errorfs.Op) error {
		switch op.Kind {
		case errorfs.OpFileSync, errorfs.OpFileSyncData, errorfs.OpFileSyncTo:
		default:
			return nil
		}
		if !strings.HasSuffix(op.Path, ".log") {
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		if !armed {
			return nil
		}
		files, _ := filepath.Glob(filepath.Join(psbtDir, "payout-*.psbt"))
		taken = append(taken, psbtCut{db: mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 0}), files: files})
		return nil
	})
	cfg = Config{Dir: dir, Passphrase: testPass, Logger: testLogger(), FS: errorfs.Wrap(mem, inj), FeeRate: 10, PayoutThreshold: 1000}
	w, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	addCoin(t, w, "acct", 300_000, 1)
	addCoin(t, w, "acct2", 200_000, 2) // another account: another key
	in := PeriodInput{Period: 1, Length: Month, Nodes: []NodeTerms{
		{ID: "a", PriceSatPerGiBMonth: 1000, PayoutAddress: regtestAddr(t)},
		{ID: "b", PriceSatPerGiBMonth: 1000, PayoutAddress: regtestAddr(t)},
	}, Holdings: []Holding{
		{Node: "a", Account: "acct", Bytes: 40 * GiB, Passed: true},
		{Node: "b", Account: "acct", Bytes: 70 * GiB, Passed: true},
	}}
	if _, err := w.Settle(in); err != nil {
		t.Fatal(err)
	}
	arm = func() { mu.Lock(); armed = true; mu.Unlock() }
	cuts = func() []psbtCut { mu.Lock(); defer mu.Unlock(); return append([]psbtCut(nil), taken...) }
	return w, cfg, arm, cuts
}

// TestPSBTFileOnlyForRecordedPayout cuts the power before each sync of the
// wallet's log while WritePayoutPSBT runs: after the "reboot" every PSBT
// file in the payout directory must name a payout the wallet recorded
// (nodes debited, inputs reserved). A file written before its record is
// durable is a transaction the wallet knows nothing of: an operator who
// signs and sends it pays the nodes without debiting them (they are paid
// again by the next payout) and its change goes to an address the wallet
// does not watch. Fails on a WritePayoutPSBT that writes the file before
// its commit.
func TestPSBTFileOnlyForRecordedPayout(t *testing.T) {
	psbtDir := filepath.Join(t.TempDir(), "payouts")
	w, cfg, arm, cuts := psbtPayoutWallet(t, psbtDir)
	arm()
	p, err := w.WritePayoutPSBT(psbtDir)
	if err != nil || p == nil {
		t.Fatalf("payout: %+v %v", p, err)
	}
	taken := cuts()
	if len(taken) == 0 {
		t.Fatal("no sync of the wallet's log while the payout was recorded")
	}
	w.Close()
	for i, c := range taken {
		cfg := cfg
		cfg.FS = c.db
		w2, err := Open(cfg)
		if err != nil {
			t.Fatalf("cut %d: the wallet does not open after the power cut: %v", i, err)
		}
		list, err := w2.Payouts()
		if err != nil {
			t.Fatal(err)
		}
		recorded := map[string]Payout{}
		for _, q := range list {
			recorded[filepath.Base(q.PSBTFile)] = q
		}
		for _, f := range c.files {
			q, ok := recorded[filepath.Base(f)]
			if !ok {
				t.Fatalf("cut %d: %s was on disk before its payout was durable: after this power cut the wallet has no such payout (nodes a and b hold %d and %d sat, to be paid again), yet the file can be signed and sent",
					i, filepath.Base(f), mustBal(t, w2, NodeAccount("a")), mustBal(t, w2, NodeAccount("b")))
			}
			pk, err := ReadPSBTFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if pk.UnsignedTx.TxHash().String() != q.TxID || q.State != PayoutPSBT {
				t.Fatalf("cut %d: %s holds %s, the wallet recorded %s in state %s", i, f, pk.UnsignedTx.TxHash(), q.TxID, q.State)
			}
		}
		if err := w2.CheckLedger(); err != nil {
			t.Fatalf("cut %d: %v", i, err)
		}
		w2.Close()
	}
}

// TestPSBTFileWrittenAgainAfterCrash: a crash after the payout is recorded
// and before its file is written, and a file that cannot be written (its
// name taken by a directory): the payout is recorded (WritePayoutPSBT
// returns it with the error), and the next WritePayoutPSBT writes the
// missing file, the same transaction, signable, without planning a second
// payout for the same balances.
func TestPSBTFileWrittenAgainAfterCrash(t *testing.T) {
	psbtDir := filepath.Join(t.TempDir(), "payouts")
	w, _, _, _ := psbtPayoutWallet(t, psbtDir)
	crash := errors.New("crash after the record")
	w.testHook = func(point string) error {
		if point == "psbt-recorded" {
			return crash
		}
		return nil
	}
	p, err := w.WritePayoutPSBT(psbtDir)
	if !errors.Is(err, crash) || p == nil || p.ID != 1 || p.State != PayoutPSBT {
		t.Fatalf("crash after the record: payout %+v, err %v", p, err)
	}
	w.testHook = nil
	if _, err := os.Stat(p.PSBTFile); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the file was written before the crash point: %v", err)
	}
	inflight := mustBal(t, w, AcctPayoutInflight)
	if inflight != 110_000 {
		t.Fatalf("in flight %d after the record, want 110000", inflight)
	}

	again, err := w.WritePayoutPSBT(psbtDir)
	if err != nil || again != nil {
		t.Fatalf("the next WritePayoutPSBT planned another payout for the same balances: %+v %v", again, err)
	}
	checkPSBTFile(t, w, p)

	// The file's name taken by a directory: recorded, the error returned,
	// the file written once the name is free.
	settleOneMore(t, w, 2)
	if err := os.Mkdir(filepath.Join(psbtDir, "payout-2.psbt"), 0o700); err != nil {
		t.Fatal(err)
	}
	p2, err := w.WritePayoutPSBT(psbtDir)
	if err == nil || p2 == nil || p2.ID != 2 {
		t.Fatalf("unwritable file: payout %+v, err %v", p2, err)
	}
	if got := mustBal(t, w, AcctPayoutInflight); got <= inflight {
		t.Fatalf("payout 2 not recorded: %d in flight", got)
	}
	if err := os.Remove(filepath.Join(psbtDir, "payout-2.psbt")); err != nil {
		t.Fatal(err)
	}
	if again, err := w.WritePayoutPSBT(psbtDir); err != nil || again != nil {
		t.Fatalf("after the name was freed: payout %+v, err %v", again, err)
	}
	checkPSBTFile(t, w, p2)
	checkPSBTFile(t, w, p) // still there, untouched
	if err := w.CheckLedger(); err != nil {
		t.Fatal(err)
	}
}

// settleOneMore settles period n for node a alone (40 000 sat).
func settleOneMore(t *testing.T, w *Wallet, n uint64) {
	t.Helper()
	addCoin(t, w, "acct", 100_000, byte(10+n))
	settleHeld(t, w, n, "a", "acct", 40)
}

// checkPSBTFile: p's file holds p's transaction and the wallet signs it.
func checkPSBTFile(t *testing.T, w *Wallet, p *Payout) {
	t.Helper()
	pk, err := ReadPSBTFile(p.PSBTFile)
	if err != nil {
		t.Fatalf("payout %d: %v", p.ID, err)
	}
	if pk.UnsignedTx.TxHash().String() != p.TxID {
		t.Fatalf("payout %d: the file holds %s, recorded %s", p.ID, pk.UnsignedTx.TxHash(), p.TxID)
	}
	// The change output, and only it, names its key, so that a signer can
	// check that the change comes back to the wallet.
	for i, o := range pk.Outputs {
		if int32(i) != p.ChangeVout {
			if len(o.Bip32Derivation) != 0 {
				t.Fatalf("payout %d: output %d, a node's, carries a derivation", p.ID, i)
			}
			continue
		}
		if len(o.Bip32Derivation) != 1 {
			t.Fatalf("payout %d: the change output carries %d derivations, want 1", p.ID, len(o.Bip32Derivation))
		}
		d := o.Bip32Derivation[0]
		_, script, pub, err := w.keys.address(d.Bip32Path[3], d.Bip32Path[4])
		if err != nil || d.Bip32Path[3] != BranchChange || !bytes.Equal(pub, d.PubKey) ||
			!bytes.Equal(script, pk.UnsignedTx.TxOut[i].PkScript) || d.MasterKeyFingerprint != w.keys.fingerprint {
			t.Fatalf("payout %d: the change output's derivation %v does not name the key it pays (%v)", p.ID, d.Bip32Path, err)
		}
	}
	if p.ChangeVout < 0 {
		t.Fatalf("payout %d: no change; the tests want one", p.ID)
	}
	tx, err := w.SignPSBT(pk)
	if err != nil {
		t.Fatalf("payout %d: %v", p.ID, err)
	}
	if tx.TxHash().String() != p.TxID {
		t.Fatalf("payout %d: signed %s, recorded %s", p.ID, tx.TxHash(), p.TxID)
	}
}

// TestPSBTPayoutInputReorganisedAway: a payout written as a PSBT spends a
// deposit whose block a reorganisation takes away for good. Like a
// broadcast payout, it is abandoned once the input has been gone MinConf
// blocks: the node's balance returns and a later payout pays it, nothing
// stays in flight. Before, only signed and broadcast payouts were
// abandoned, and the PSBT payout held its nodes' money in flight for good.
func TestPSBTPayoutInputReorganisedAway(t *testing.T) {
	chain := newFakeChain(19)
	w := newTestWallet(t, "regtest", func(c *Config) { c.Chain = chain; c.MinConf = 2 })
	old := payoutInputReorganisedAway(t, chain, w, func() (*Payout, error) { return w.WritePayoutPSBT(t.TempDir()) })
	if p := payoutByID(t, w, old.ID); p.State != PayoutPSBT || p.MissingSince == 0 {
		t.Fatalf("input gone for fewer than MinConf blocks: %+v", p)
	}
	chain.mine(1)
	rep := mustSync(t, w)
	if p := payoutByID(t, w, old.ID); p.State != PayoutAbandoned || len(rep.Abandoned) != 1 {
		t.Fatalf("PSBT payout whose input left the chain MinConf blocks ago: state %s, report %+v (its nodes' %d sat stay in flight)",
			p.State, rep, mustBal(t, w, AcctPayoutInflight))
	}
	if b := mustBal(t, w, AcctPayoutInflight); b != 0 {
		t.Fatalf("%d sat still in flight", b)
	}
	if b := mustBal(t, w, NodeAccount("n")); b != 100_000 {
		t.Fatalf("node balance %d after the abandon, want 100000", b)
	}
	// The abandoned payout's file is not signed any more: its nodes were
	// credited back and are paid by the next payout.
	pk, err := ReadPSBTFile(old.PSBTFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.SignPSBT(pk); err == nil || !strings.Contains(err.Error(), "is abandoned, not awaiting a signature") {
		t.Fatalf("the abandoned payout's PSBT signed or refused for another reason: %v", err)
	}
	fakeDeposit(t, chain, w, "other", 500_000, 2)
	chain.mine(2)
	mustSync(t, w)
	p, err := w.WritePayoutPSBT(t.TempDir())
	if err != nil || p == nil || p.ID == old.ID || p.Outputs[0].Debit != 100_000 {
		t.Fatalf("new payout: %+v %v", p, err)
	}
	if err := w.CheckLedger(); err != nil {
		t.Fatal(err)
	}
}

// TestSignPSBTRefuses: SignPSBT signs only inputs it can prove are this
// wallet's own outputs: each input must carry its witness UTXO and a BIP 32
// derivation from this seed's master fingerprint with the wallet's full
// path, whose key is the one the derivation names and whose script the
// output spent pays; and the transaction must be a recorded psbt payout's,
// so changed outputs are refused too. Every tampering is refused; the
// untouched PSBT signs to the recorded txid. ReadPSBTFile reads the binary
// file and its base64 form (with a trailing newline) alike.
func TestSignPSBTRefuses(t *testing.T) {
	psbtDir := filepath.Join(t.TempDir(), "payouts")
	w, _, _, _ := psbtPayoutWallet(t, psbtDir)
	// 195 000 more for b: the payout needs both coins, of two keys.
	settleHeld(t, w, 2, "b", "acct2", 195)
	p, err := w.WritePayoutPSBT(psbtDir)
	if err != nil || p == nil || len(p.Inputs) != 2 {
		t.Fatalf("payout: %+v %v", p, err)
	}
	checkPSBTFile(t, w, p)
	raw, err := os.ReadFile(p.PSBTFile)
	if err != nil {
		t.Fatal(err)
	}
	b64 := filepath.Join(t.TempDir(), "payout.b64")
	if err := os.WriteFile(b64, []byte(base64.StdEncoding.EncodeToString(raw)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pk, err := ReadPSBTFile(b64)
	if err != nil {
		t.Fatalf("base64 PSBT: %v", err)
	}
	if pk.UnsignedTx.TxHash().String() != p.TxID {
		t.Fatalf("base64 PSBT holds %s, recorded %s", pk.UnsignedTx.TxHash(), p.TxID)
	}
	garbage := filepath.Join(t.TempDir(), "garbage.psbt")
	if err := os.WriteFile(garbage, []byte("psbt\xffnot a psbt"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadPSBTFile(garbage); err == nil || !strings.Contains(err.Error(), garbage) {
		t.Fatalf("a damaged PSBT read without an error naming the file: %v", err)
	}
	other := newTestWallet(t, "regtest", nil)
	cases := map[string]struct {
		edit func(pk *psbt.Packet)
		want string
	}{
		"no witness utxo":      {func(pk *psbt.Packet) { pk.Inputs[1].WitnessUtxo = nil }, "input 1: no witness utxo"},
		"no derivation":        {func(pk *psbt.Packet) { pk.Inputs[1].Bip32Derivation = nil }, "input 1: no derivation"},
		"foreign fingerprint":  {func(pk *psbt.Packet) { pk.Inputs[0].Bip32Derivation[0].MasterKeyFingerprint ^= 1 }, "input 0: no derivation"},
		"short path":           {func(pk *psbt.Packet) { d := pk.Inputs[0].Bip32Derivation[0]; d.Bip32Path = d.Bip32Path[1:] }, "input 0: no derivation"},
		"purpose not 84'":      {func(pk *psbt.Packet) { pk.Inputs[1].Bip32Derivation[0].Bip32Path[0]-- }, "input 1: path"},
		"coin type":            {func(pk *psbt.Packet) { pk.Inputs[1].Bip32Derivation[0].Bip32Path[1]++ }, "input 1: path"},
		"account not 0'":       {func(pk *psbt.Packet) { pk.Inputs[0].Bip32Derivation[0].Bip32Path[2]++ }, "input 0: path"},
		"another key's pubkey": {func(pk *psbt.Packet) { pk.Inputs[0].Bip32Derivation[0].PubKey = pk.Inputs[1].Bip32Derivation[0].PubKey }, "input 0: key does not match"},
		"another index":        {func(pk *psbt.Packet) { pk.Inputs[1].Bip32Derivation[0].Bip32Path[4]++ }, "input 1: key does not match"},
		"another script":       {func(pk *psbt.Packet) { pk.Inputs[0].WitnessUtxo.PkScript = pk.Inputs[1].WitnessUtxo.PkScript }, "input 0: key does not match"},
		"another wallet's":     {nil, "no payout this wallet recorded"},
		"an output redirected": {func(pk *psbt.Packet) { pk.UnsignedTx.TxOut[0].PkScript = pk.Inputs[0].WitnessUtxo.PkScript }, "no payout this wallet recorded"},
		"an output raised":     {func(pk *psbt.Packet) { pk.UnsignedTx.TxOut[0].Value++ }, "no payout this wallet recorded"},
	}
	for name, c := range cases {
		pk, err := ReadPSBTFile(p.PSBTFile)
		if err != nil {
			t.Fatal(err)
		}
		signer := w
		if c.edit != nil {
			c.edit(pk)
		} else {
			signer = other
		}
		if tx, err := signer.SignPSBT(pk); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: signed (%v) or refused for another reason: %v; want %q", name, tx != nil, err, c.want)
		}
	}
}
