package wallet

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcutil/hdkeychain"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
)

// TestConfigDefaultsAndBounds: zero values take the documented defaults,
// every bound of Validate is accepted at its edge and refused one step
// past it.
func TestConfigDefaultsAndBounds(t *testing.T) {
	var c Config
	c.Dir = "d"
	c.setDefaults()
	if c.MinConf != DefaultMinConf || c.GracePeriod != DefaultGracePeriod || c.RunwayPeriods != DefaultRunwayPeriods ||
		c.PayoutThreshold != DefaultPayoutThreshold || c.FeeRate != DefaultFeeRate || c.Logger == nil || c.Now == nil {
		t.Fatalf("defaults: %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults refused: %v", err)
	}
	set := Config{Dir: "d", MinConf: 2, GracePeriod: time.Hour, RunwayPeriods: 1, PayoutThreshold: 5000, FeeRate: 7}
	set.setDefaults()
	if set.MinConf != 2 || set.GracePeriod != time.Hour || set.RunwayPeriods != 1 || set.PayoutThreshold != 5000 || set.FeeRate != 7 {
		t.Fatalf("values set replaced by defaults: %+v", set)
	}
	neg := Config{Dir: "d", RunwayPeriods: -1}
	neg.setDefaults()
	if neg.RunwayPeriods != DefaultRunwayPeriods {
		t.Fatalf("runway periods -1 became %d, want the default", neg.RunwayPeriods)
	}
	for name, c := range map[string]struct {
		mod func(*Config)
		ok  bool
	}{
		"no dir":            {func(c *Config) { c.Dir = "" }, false},
		"minconf 1":         {func(c *Config) { c.MinConf = 1 }, true},
		"minconf -1":        {func(c *Config) { c.MinConf = -1 }, false},
		"minconf 1000":      {func(c *Config) { c.MinConf = 1000 }, true},
		"minconf 1001":      {func(c *Config) { c.MinConf = 1001 }, false},
		"start 0":           {func(c *Config) { c.StartHeight = 0 }, true},
		"start -1":          {func(c *Config) { c.StartHeight = -1 }, false},
		"grace 0":           {func(c *Config) { c.GracePeriod = 0 }, true}, // Validate alone: setDefaults made 0 the default
		"grace 1ns":         {func(c *Config) { c.GracePeriod = 1 }, true},
		"grace -1ns":        {func(c *Config) { c.GracePeriod = -1 }, false},
		"threshold at dust": {func(c *Config) { c.PayoutThreshold = dustLimit }, true},
		"threshold 545":     {func(c *Config) { c.PayoutThreshold = dustLimit - 1 }, false},
		"fee rate 1":        {func(c *Config) { c.FeeRate = 1 }, true},
		"fee rate -1":       {func(c *Config) { c.FeeRate = -1 }, false},
		"fee rate 10000":    {func(c *Config) { c.FeeRate = 10_000 }, true},
		"fee rate 10001":    {func(c *Config) { c.FeeRate = 10_001 }, false},
	} {
		cfg := Config{Dir: "d"}
		cfg.setDefaults()
		c.mod(&cfg)
		if err := cfg.Validate(); (err == nil) != c.ok {
			t.Errorf("%s: Validate = %v, want ok %v", name, err, c.ok)
		}
	}
}

// TestOpenChecksStore: the start height is fixed when the database is
// created (the tip just below it); a database of another store version, or
// of another network than the seed's, is refused; Network must name the
// seed's network; Close twice is harmless.
func TestOpenChecksStore(t *testing.T) {
	dir := t.TempDir()
	if err := CreateSeed(dir, testPass, "regtest", cheapKDF); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Dir: dir, Passphrase: testPass, Logger: testLogger(), StartHeight: 100}
	w, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if tip, err := w.tip(); err != nil || tip != 99 || w.start != 100 {
		t.Fatalf("new wallet from height 100: tip %d start %d (%v), want 99 and 100", tip, w.start, err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	cfg.StartHeight = 5
	cfg.Network = "REGTEST"
	w, err = Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if w.start != 100 || NetworkName(w.Network()) != Regtest {
		t.Fatalf("reopened: start %d network %s, want 100 and regtest", w.start, NetworkName(w.Network()))
	}
	w.Close()
	for _, n := range []string{"testnet", "mainnet", "signet"} {
		c := cfg
		c.Network = n
		if w, err := Open(c); err == nil {
			w.Close()
			t.Fatalf("a regtest seed opened as %s", n)
		}
	}

	// A seed of another network next to the database.
	other := t.TempDir()
	if err := CreateSeed(other, testPass, "testnet", cheapKDF); err != nil {
		t.Fatal(err)
	}
	regtestSeed, _ := os.ReadFile(filepath.Join(dir, SeedFileName))
	testnetSeed, _ := os.ReadFile(filepath.Join(other, SeedFileName))
	if err := os.WriteFile(filepath.Join(dir, SeedFileName), testnetSeed, 0o600); err != nil {
		t.Fatal(err)
	}
	c := cfg
	c.Network = ""
	if w, err := Open(c); err == nil || !strings.Contains(err.Error(), "is for regtest, the seed for testnet") {
		if err == nil {
			w.Close()
		}
		t.Fatalf("a testnet seed opened a regtest database: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, SeedFileName), regtestSeed, 0o600); err != nil {
		t.Fatal(err)
	}

	// Another store version.
	w, err = Open(c)
	if err != nil {
		t.Fatal(err)
	}
	tx := w.begin()
	if err := tx.setInt(kVersion, storeVersion+1); err != nil {
		t.Fatal(err)
	}
	if err := tx.commit(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	if w, err := Open(c); err == nil || !strings.Contains(err.Error(), "version 2, want 1") {
		if err == nil {
			w.Close()
		}
		t.Fatalf("a database of store version 2 opened: %v", err)
	}
}

// TestDepositAddressesNeverShared: each account gets the next deposit key
// (m/84'/1'/0'/0/i, i in order of first use), the same one every time, also
// after a reopen; no two accounts share a key, no change key is a deposit
// key, and the store maps each script back to its one account.
func TestDepositAddressesNeverShared(t *testing.T) {
	dir := t.TempDir()
	if err := CreateSeed(dir, testPass, "regtest", cheapKDF); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Dir: dir, Passphrase: testPass, Logger: testLogger()}
	w, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	accounts := []string{"a", "b", "c", "d", "e"}
	seen := map[string]string{}
	for round := range 2 {
		for i, acct := range accounts {
			addr, err := w.DepositAddress(acct)
			if err != nil {
				t.Fatal(err)
			}
			want, script, _, err := w.keys.address(BranchDeposit, uint32(i))
			if err != nil {
				t.Fatal(err)
			}
			if addr != want.EncodeAddress() {
				t.Fatalf("round %d: account %s got %s, want key %d's %s", round, acct, addr, i, want.EncodeAddress())
			}
			if prev, ok := seen[addr]; ok && prev != acct {
				t.Fatalf("accounts %s and %s share %s", prev, acct, addr)
			}
			seen[addr] = acct
			tx := w.begin()
			var si scriptInfo
			ok, err := tx.getJSON(pScript+hexString(script), &si)
			tx.discard()
			if err != nil || !ok || si.Account != acct || si.Branch != BranchDeposit || si.Index != uint32(i) {
				t.Fatalf("script of %s recorded as %+v (%v %v)", acct, si, ok, err)
			}
		}
		if round == 0 {
			w.Close()
			if w, err = Open(cfg); err != nil {
				t.Fatal(err)
			}
		}
	}
	defer w.Close()
	f, err := w.DepositAddress("f")
	if err != nil {
		t.Fatal(err)
	}
	if want, _, _, _ := w.keys.address(BranchDeposit, 5); f != want.EncodeAddress() {
		t.Fatalf("the sixth account got %s, want key 5's %s", f, want.EncodeAddress())
	}
	for range 3 {
		tx := w.begin()
		script, _, err := w.newChangeScript(tx)
		if err != nil {
			t.Fatal(err)
		}
		if err := tx.commit(); err != nil {
			t.Fatal(err)
		}
		tx = w.begin()
		var si scriptInfo
		ok, err := tx.getJSON(pScript+hexString(script), &si)
		tx.discard()
		if err != nil || !ok || si.Branch != BranchChange || si.Account != "" {
			t.Fatalf("change script %x recorded as %+v (%v %v): a payment to it would be credited to a client", script, si, ok, err)
		}
	}
}

// TestKeyRange: keys exist for the two branches and non-hardened indexes;
// a third branch or a hardened index is refused; PSBT paths are the full
// BIP 84 path.
func TestKeyRange(t *testing.T) {
	w := newTestWallet(t, "regtest", nil)
	last := uint32(hdkeychain.HardenedKeyStart - 1)
	for _, c := range []struct {
		branch, index uint32
		ok            bool
	}{{BranchDeposit, 0, true}, {BranchChange, last, true}, {BranchChange + 1, 0, false}, {BranchDeposit, last + 1, false}} {
		_, _, _, err := w.keys.address(c.branch, c.index)
		if (err == nil) != c.ok {
			t.Errorf("key %d/%d: %v, want ok %v", c.branch, c.index, err, c.ok)
		}
		if _, err := w.keys.privKey(c.branch, c.index); (err == nil) != c.ok {
			t.Errorf("private key %d/%d: %v, want ok %v", c.branch, c.index, err, c.ok)
		}
	}
	h := uint32(hdkeychain.HardenedKeyStart)
	if p := w.keys.path(1, 7); len(p) != 5 || p[0] != h+84 || p[1] != h+1 || p[2] != h || p[3] != 1 || p[4] != 7 {
		t.Fatalf("path %v, want m/84'/1'/0'/1/7", p)
	}
}

// slowChain answers GetBlockCount after release is closed.
type slowChain struct {
	fakeChain
	release chan struct{}
}

func (c *slowChain) GetBlockCount() (int64, error) { <-c.release; return 7, nil }
func (c *slowChain) GetBlockHash(int64) (*chainhash.Hash, error) {
	<-c.release
	return &chainhash.Hash{1}, nil
}
func (c *slowChain) GetBlock(*chainhash.Hash) (*wire.MsgBlock, error) { <-c.release; return nil, nil }
func (c *slowChain) SendRawTransaction(*wire.MsgTx, bool) (*chainhash.Hash, error) {
	<-c.release
	return nil, errors.New("refused")
}

// TestWithTimeout: a call the node does not answer in time returns
// ErrRPCTimeout naming the call; an answer in time comes through; no
// timeout given means DefaultRPCTimeout.
func TestWithTimeout(t *testing.T) {
	c := &slowChain{release: make(chan struct{})}
	tc := WithTimeout(c, 20*time.Millisecond)
	for name, call := range map[string]func() error{
		"getblockcount":      func() error { _, err := tc.GetBlockCount(); return err },
		"getblockhash":       func() error { _, err := tc.GetBlockHash(1); return err },
		"getblock":           func() error { _, err := tc.GetBlock(&chainhash.Hash{}); return err },
		"sendrawtransaction": func() error { _, err := tc.SendRawTransaction(wire.NewMsgTx(2), false); return err },
	} {
		if err := call(); !errors.Is(err, ErrRPCTimeout) || !strings.HasPrefix(err.Error(), name+":") {
			t.Errorf("%s on a silent node: %v", name, err)
		}
	}
	close(c.release)
	tc = WithTimeout(c, time.Minute)
	if n, err := tc.GetBlockCount(); err != nil || n != 7 {
		t.Fatalf("answer in time: %d %v", n, err)
	}
	if h, err := tc.GetBlockHash(3); err != nil || *h != (chainhash.Hash{1}) {
		t.Fatalf("getblockhash in time: %v %v", h, err)
	}
	if _, err := tc.SendRawTransaction(wire.NewMsgTx(2), false); err == nil || errors.Is(err, ErrRPCTimeout) {
		t.Fatalf("the node's own refusal: %v", err)
	}
	for _, d := range []time.Duration{0, -time.Second} {
		if got := WithTimeout(c, d).(timeoutChain).d; got != DefaultRPCTimeout {
			t.Errorf("WithTimeout(%v) bounds calls by %v, want %v", d, got, DefaultRPCTimeout)
		}
	}
	if got := WithTimeout(c, time.Nanosecond).(timeoutChain).d; got != time.Nanosecond {
		t.Errorf("WithTimeout(1ns) bounds calls by %v", got)
	}
}

// TestAlreadyKnown: the "already have it" answers of btcd and bitcoind
// count as a successful re-broadcast; other refusals and no error do not.
func TestAlreadyKnown(t *testing.T) {
	for _, m := range []string{
		"-26: already have transaction abc", "transaction already exists", "TX already in block chain",
		"txn-already-in-mempool", "txn-already-known", "transaction already in block chain", "Transaction already in the mempool",
	} {
		if !alreadyKnown(errors.New(m)) {
			t.Errorf("%q not taken as already known", m)
		}
	}
	for _, err := range []error{nil, errors.New("-25: bad-txns-inputs-missingorspent"), errors.New("orphan transaction")} {
		if alreadyKnown(err) {
			t.Errorf("%v taken as already known", err)
		}
	}
	if _, err := DialRPC(RPCConfig{Host: "127.0.0.1:1", CertFile: filepath.Join(t.TempDir(), "none.cert")}); err == nil || !strings.Contains(err.Error(), "rpc certificate") {
		t.Fatalf("missing certificate: %v", err)
	}
}
