package wallet

import (
	"crypto/sha512"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/txscript"
	"golang.org/x/crypto/pbkdf2"

	"github.com/fincrypt/fincrypt/vault"
)

// cheapKDF keeps tests fast; real wallets use vault.DefaultKDF.
var cheapKDF = vault.KDFParams{Time: 1, MemoryK: 64, Threads: 1}

var testPass = []byte("correct horse battery staple")

// newTestWallet creates a seed and opens a wallet without a chain.
func newTestWallet(t *testing.T, net string, mod func(*Config)) *Wallet {
	t.Helper()
	dir := t.TempDir()
	if err := CreateSeed(dir, testPass, net, cheapKDF); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Dir: dir, Passphrase: testPass, Logger: testLogger()}
	if mod != nil {
		mod(&cfg)
	}
	w, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

// fund credits escrow as a confirmed deposit would.
func fund(t testing.TB, w *Wallet, acct string, sat int64, key string) {
	t.Helper()
	tx := w.begin()
	defer tx.discard()
	if _, err := tx.post("deposit/"+key, "test", time.Now(), Posting{AcctExtDeposits, -sat}, Posting{EscrowAccount(acct), sat}); err != nil {
		t.Fatal(err)
	}
	if err := tx.commit(); err != nil {
		t.Fatal(err)
	}
}

func mustBal(t *testing.T, w *Wallet, acct string) int64 {
	t.Helper()
	b, err := w.Balance(acct)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseNetwork(t *testing.T) {
	for name, want := range map[string]*chaincfg.Params{
		"mainnet": &chaincfg.MainNetParams, "testnet": &chaincfg.TestNet3Params, "testnet3": &chaincfg.TestNet3Params,
		"regtest": &chaincfg.RegressionNetParams, "SIMNET": &chaincfg.SimNetParams,
	} {
		got, err := ParseNetwork(name)
		if err != nil || got != want {
			t.Errorf("ParseNetwork(%q) = %v, %v", name, got, err)
		}
	}
	if _, err := ParseNetwork("signet"); err == nil {
		t.Error("signet accepted")
	}
}

// badChecksum changes the last character of a bech32 address to another
// one of the alphabet, which breaks its checksum.
func badChecksum(addr string) string {
	last := "q"
	if strings.HasSuffix(addr, last) {
		last = "p"
	}
	return addr[:len(addr)-1] + last
}

func TestCheckPayoutAddress(t *testing.T) {
	key, _ := btcec.NewPrivateKey()
	h := btcutil.Hash160(key.PubKey().SerializeCompressed())
	mk := func(net *chaincfg.Params) (string, string) {
		a, _ := btcutil.NewAddressWitnessPubKeyHash(h, net)
		b, _ := btcutil.NewAddressPubKeyHash(h, net)
		return a.EncodeAddress(), b.EncodeAddress()
	}
	mainW, mainP := mk(&chaincfg.MainNetParams)
	regW, regP := mk(&chaincfg.RegressionNetParams)
	simW, _ := mk(&chaincfg.SimNetParams)
	cases := []struct {
		addr string
		net  *chaincfg.Params
		ok   bool
	}{
		{mainW, &chaincfg.MainNetParams, true},
		{mainP, &chaincfg.MainNetParams, true},
		{regW, &chaincfg.RegressionNetParams, true},
		{regP, &chaincfg.RegressionNetParams, true},
		{simW, &chaincfg.SimNetParams, true},
		{mainW, &chaincfg.RegressionNetParams, false},
		{mainP, &chaincfg.TestNet3Params, false},
		{regW, &chaincfg.MainNetParams, false},
		{regW, &chaincfg.TestNet3Params, false}, // bcrt vs tb
		{simW, &chaincfg.RegressionNetParams, false},
		{"", &chaincfg.MainNetParams, false},
		{"bc1qnotanaddress", &chaincfg.MainNetParams, false},
		{badChecksum(mainW), &chaincfg.MainNetParams, false},
	}
	for _, c := range cases {
		_, err := CheckPayoutAddress(c.addr, c.net)
		if (err == nil) != c.ok {
			t.Errorf("CheckPayoutAddress(%q, %s) = %v, want ok=%v", c.addr, c.net.Name, err, c.ok)
		}
		if err != nil && !errors.Is(err, ErrBadAddress) {
			t.Errorf("error %v is not ErrBadAddress", err)
		}
	}
}

func TestSeedFile(t *testing.T) {
	dir := t.TempDir()
	if err := CreateSeed(dir, testPass, "regtest", cheapKDF); err != nil {
		t.Fatal(err)
	}
	if err := CreateSeed(dir, testPass, "regtest", cheapKDF); !errors.Is(err, ErrSeedExists) {
		t.Fatalf("second CreateSeed: %v, want ErrSeedExists", err)
	}
	st, err := os.Stat(filepath.Join(dir, SeedFileName))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("seed file mode %v %v", st.Mode(), err)
	}
	if _, err := Open(Config{Dir: dir, Passphrase: []byte("wrong"), Logger: testLogger()}); !errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("wrong passphrase: %v", err)
	}
	if _, err := Open(Config{Dir: dir, Passphrase: testPass, Network: "mainnet", Logger: testLogger()}); err == nil {
		t.Fatal("opened a regtest seed as mainnet")
	}
	if _, err := Open(Config{Dir: t.TempDir(), Passphrase: testPass, Logger: testLogger()}); !errors.Is(err, ErrNoSeed) {
		t.Fatalf("no seed: %v", err)
	}
	// Moving the seed to another network by editing the file breaks the AD.
	data, _ := os.ReadFile(filepath.Join(dir, SeedFileName))
	edited := []byte(string(data))
	for i := 0; i+7 <= len(edited); i++ {
		if string(edited[i:i+7]) == "regtest" {
			copy(edited[i:], "testnet")
			break
		}
	}
	d2 := t.TempDir()
	os.WriteFile(filepath.Join(d2, SeedFileName), edited, 0o600)
	if _, err := Open(Config{Dir: d2, Passphrase: testPass, Logger: testLogger()}); !errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("network-edited seed file: %v, want authentication failure", err)
	}
	w, err := Open(Config{Dir: dir, Passphrase: testPass, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	a1, err := w.DepositAddress("alice")
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	w, err = Open(Config{Dir: dir, Passphrase: testPass, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	b, _ := w.DepositAddress("bob")
	a2, _ := w.DepositAddress("alice")
	if a1 != a2 || a1 == b {
		t.Fatalf("addresses not stable per account: alice %s then %s, bob %s", a1, a2, b)
	}
	if _, err := w.DepositAddress("bad/id"); !errors.Is(err, ErrBadID) {
		t.Fatalf("bad id: %v", err)
	}
}

// TestBIP84Vector checks the derivation against BIP 84's test vector
// (mnemonic "abandon ... about", m/84'/0'/0'/0/0 and /0/1, m/84'/0'/0'/1/0).
func TestBIP84Vector(t *testing.T) {
	mnemonic := "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about"
	seed := pbkdf2.Key([]byte(mnemonic), []byte("mnemonic"), 2048, 64, sha512.New)
	k, err := newHDKeys(seed, &chaincfg.MainNetParams)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		branch, index uint32
		want          string
	}{
		{0, 0, "bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu"},
		{0, 1, "bc1qnjg0jd8228aq7egyzacy8cys3knf9xvrerkf9g"},
		{1, 0, "bc1q8c6fshw2dlwun7ekn9qwf37cu2rn755upcp6el"},
	} {
		a, _, _, err := k.address(c.branch, c.index)
		if err != nil {
			t.Fatal(err)
		}
		if a.EncodeAddress() != c.want {
			t.Errorf("m/84'/0'/0'/%d/%d = %s, want %s", c.branch, c.index, a.EncodeAddress(), c.want)
		}
	}
	if err := ImportSeed(t.TempDir(), seed[:8], testPass, "mainnet", cheapKDF); err == nil {
		t.Error("8-byte seed accepted")
	}
}

func TestLedgerRules(t *testing.T) {
	w := newTestWallet(t, "regtest", nil)
	tx := w.begin()
	if _, err := tx.post("x/1", "", time.Now(), Posting{EscrowAccount("a"), 5}, Posting{AcctExtDeposits, -4}); !errors.Is(err, ErrUnbalanced) {
		t.Fatalf("unbalanced: %v", err)
	}
	if _, err := tx.post("x/2", "", time.Now(), Posting{EscrowAccount("a"), -5}, Posting{AcctExtDeposits, 5}); !errors.Is(err, ErrNegativeBalance) {
		t.Fatalf("negative escrow: %v", err)
	}
	tx.discard()
	fund(t, w, "a", 100, "d1")
	fund(t, w, "a", 100, "d1") // same key: no effect
	if b := mustBal(t, w, EscrowAccount("a")); b != 100 {
		t.Fatalf("escrow %d after posting the same key twice, want 100", b)
	}
	tx = w.begin()
	// ext: accounts may not go positive either.
	if _, err := tx.post("x/3", "", time.Now(), Posting{AcctExtDeposits, 101}, Posting{EscrowAccount("a"), -101}); !errors.Is(err, ErrNegativeBalance) {
		t.Fatalf("overdraw: %v", err)
	}
	tx.discard()
	if err := w.CheckLedger(); err != nil {
		t.Fatal(err)
	}
	e, ok, err := w.EntryByKey("deposit/d1")
	if err != nil || !ok || len(e.Postings) != 2 {
		t.Fatalf("entry: %+v %v %v", e, ok, err)
	}
	j, err := w.Journal(0, 0)
	if err != nil || len(j) != 1 {
		t.Fatalf("journal %d entries, %v", len(j), err)
	}
}

func TestProRate(t *testing.T) {
	// 1 GiB for a whole month at 1000 sat/GiB/month is exactly 1000 sat.
	if s, c := ProRate(GiB, 1000, Month, nil); s != 1000 || c.Sign() != 0 {
		t.Fatalf("got %d carry %v", s, c)
	}
	// Half a GiB for a third of a month: 166.66.. -> 166, the rest carried.
	s, c := ProRate(GiB/2, 1000, Month/3, nil)
	if s != 166 || c.Sign() <= 0 {
		t.Fatalf("got %d carry %v", s, c)
	}
	// Over many small periods the carry makes the total exact: 1 MiB at
	// 1000 sat/GiB/month for one hour is 0.00135 sat; 30*24 hours make 0.976 sat
	// -> 0, and 1 GiB for 720 one-hour periods makes exactly 1000.
	var carry *big.Int
	var total int64
	for i := 0; i < 720; i++ {
		var p int64
		p, carry = ProRate(GiB, 1000, time.Hour, carry)
		total += p
	}
	if total != 1000 {
		t.Fatalf("720 hourly periods paid %d, want 1000", total)
	}
	// Seeded random: the sum of pro-rated periods never exceeds the exact
	// total and falls short by less than one satoshi.
	rng := newRand(1)
	for trial := 0; trial < 200; trial++ {
		bytes := rng.Int63n(1 << 40)
		price := rng.Int63n(100_000)
		var carry *big.Int
		var sum int64
		var ns int64
		for p := 0; p < 10; p++ {
			l := time.Duration(rng.Int63n(int64(48 * time.Hour)))
			ns += int64(l)
			var s int64
			s, carry = ProRate(bytes, price, l, carry)
			sum += s
		}
		exact := new(big.Int).Mul(big.NewInt(bytes), big.NewInt(price))
		exact.Mul(exact, big.NewInt(ns))
		exact.Quo(exact, proRateDen)
		if sum != exact.Int64() {
			t.Fatalf("trial %d: periods paid %d, floor of exact total %d", trial, sum, exact.Int64())
		}
	}
}

func TestSplitProportional(t *testing.T) {
	got := splitProportional(100, []int64{1, 1, 1})
	if got[0] != 33 || got[1] != 33 || got[2] != 33 {
		t.Fatalf("%v", got)
	}
	rng := newRand(2)
	for i := 0; i < 500; i++ {
		n := 1 + rng.Intn(8)
		ws := make([]int64, n)
		var sum int64
		for j := range ws {
			ws[j] = rng.Int63n(1e9)
			sum += ws[j]
		}
		total := rng.Int63n(sum + 1)
		var s int64
		for j, x := range splitProportional(total, ws) {
			if x < 0 || x > ws[j] {
				t.Fatalf("share %d of %d out of range", x, ws[j])
			}
			s += x
		}
		if s > total || total-s >= int64(n) {
			t.Fatalf("shares sum %d of %d", s, total)
		}
	}
}

func settleInput(period uint64, holdings ...Holding) PeriodInput {
	return PeriodInput{
		Period: period, Length: Month, FeeBPS: 500,
		Nodes: []NodeTerms{
			{ID: "n1", PriceSatPerGiBMonth: 1000},
			{ID: "n2", PriceSatPerGiBMonth: 2000},
		},
		Holdings: holdings,
	}
}

func TestSettle(t *testing.T) {
	w := newTestWallet(t, "regtest", nil)
	fund(t, w, "alice", 1_000_000, "a")
	fund(t, w, "bob", 1_000_000, "b")
	in := settleInput(1,
		Holding{Node: "n1", Account: "alice", Bytes: 10 * GiB, Passed: true},
		Holding{Node: "n2", Account: "alice", Bytes: 10 * GiB, Passed: true},
		Holding{Node: "n1", Account: "bob", Bytes: 10 * GiB, Passed: true},
		Holding{Node: "n2", Account: "bob", Bytes: 10 * GiB, Passed: false},
	)
	rep, err := w.Settle(in)
	if err != nil {
		t.Fatal(err)
	}
	// n1: 10 GiB * 1000 * 2 accounts = 20000 owed, 5% fee -> 19000.
	// n2: alice 20000 (passed), bob nothing (failed) -> 19000 after the fee.
	for acct, want := range map[string]int64{
		NodeAccount("n1"): 19000, NodeAccount("n2"): 19000, AcctFeesMediator: 2000,
		EscrowAccount("alice"): 1_000_000 - 30000, EscrowAccount("bob"): 1_000_000 - 10000,
	} {
		if got := mustBal(t, w, acct); got != want {
			t.Errorf("%s = %d, want %d", acct, got, want)
		}
	}
	if len(rep.Lines) != 4 || rep.Repeated {
		t.Fatalf("report %+v", rep)
	}
	// alice pays 30000 a period and has 970000 left: 32 periods. With daily
	// periods that is 32 days (no warning); with hourly ones 32 hours (warn).
	st, err := w.AccountStatus("alice")
	if err != nil {
		t.Fatal(err)
	}
	if st.LastCharge != 30000 || st.PeriodsLeft != 32 || !st.CanPlace() {
		t.Fatalf("alice %+v", st)
	}
	if st.LowEscrow(24*time.Hour) || !st.LowEscrow(time.Hour) {
		t.Fatalf("low-escrow warning wrong: runway %v at daily periods", st.Runway(24*time.Hour))
	}
	// The failed node is paid less by exactly its share: the same holding,
	// passed, would have earned 20000 less the fee.
	var failed SettleLine
	for _, l := range rep.Lines {
		if !l.Passed {
			failed = l
		}
	}
	if failed.Owed != 0 || failed.Earned != 0 {
		t.Fatalf("failed line %+v", failed)
	}
	// Settling the same period again pays nothing more.
	rep2, err := w.Settle(in)
	if err != nil || !rep2.Repeated {
		t.Fatalf("repeat: %+v %v", rep2, err)
	}
	if got := mustBal(t, w, NodeAccount("n1")); got != 19000 {
		t.Fatalf("n1 %d after repeating the period", got)
	}
	// Reopen from disk (a crash after the commit): still settled once.
	dir := w.cfg.Dir
	w.Close()
	w, err = Open(Config{Dir: dir, Passphrase: testPass, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if rep3, err := w.Settle(in); err != nil || !rep3.Repeated {
		t.Fatalf("after reopen: %+v %v", rep3, err)
	}
	if err := w.CheckLedger(); err != nil {
		t.Fatal(err)
	}
	// Bad input changes nothing.
	bad := settleInput(2, Holding{Node: "nobody", Account: "alice", Bytes: 1, Passed: true})
	if _, err := w.Settle(bad); !errors.Is(err, ErrBadPeriod) {
		t.Fatalf("unknown node: %v", err)
	}
	bad = settleInput(2, Holding{Node: "n1", Account: "alice", Bytes: -1, Passed: true})
	if _, err := w.Settle(bad); !errors.Is(err, ErrBadPeriod) {
		t.Fatalf("negative bytes: %v", err)
	}
	bad = settleInput(2)
	bad.Nodes[0].PayoutAddress = "bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu" // mainnet on regtest
	if _, err := w.Settle(bad); !errors.Is(err, ErrBadPeriod) {
		t.Fatalf("mainnet payout address on regtest: %v", err)
	}
}

func TestSettleEscrowRunsOut(t *testing.T) {
	w := newTestWallet(t, "regtest", func(c *Config) { c.GracePeriod = 48 * time.Hour })
	fund(t, w, "carol", 15001, "c")
	end := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	in := settleInput(1,
		Holding{Node: "n1", Account: "carol", Bytes: 10 * GiB, Passed: true}, // owes 10000
		Holding{Node: "n2", Account: "carol", Bytes: 10 * GiB, Passed: true}, // owes 20000
	)
	in.End = end
	rep, err := w.Settle(in)
	if err != nil {
		t.Fatal(err)
	}
	// 15001 split 1:2 with floor: 5000 and 10000; 1 sat stays in escrow.
	var charged, short int64
	for _, l := range rep.Lines {
		charged += l.Charged
		short += l.Shortfall
		if l.Charged > l.Owed || l.Earned+l.Fee != l.Charged {
			t.Fatalf("line %+v", l)
		}
	}
	if charged != 15000 || short != 15000 {
		t.Fatalf("charged %d shortfall %d", charged, short)
	}
	if got := mustBal(t, w, EscrowAccount("carol")); got != 1 {
		t.Fatalf("escrow %d, want 1", got)
	}
	if len(rep.Delinquent) != 1 || rep.Delinquent[0] != "carol" {
		t.Fatalf("delinquent %v", rep.Delinquent)
	}
	st, err := w.AccountStatus("carol")
	if err != nil {
		t.Fatal(err)
	}
	if !st.Delinquent || st.CanPlace() || !st.ReleaseAt.Equal(end.Add(48*time.Hour)) || st.LastCharge != 30000 || st.PeriodsLeft != 0 {
		t.Fatalf("status %+v", st)
	}
	if !st.LowEscrow(time.Hour) {
		t.Fatal("no warning for a delinquent account")
	}
	// Next period: still short; delinquency keeps its start.
	in.Period, in.End = 2, end.Add(Month)
	if _, err := w.Settle(in); err != nil {
		t.Fatal(err)
	}
	if got := mustBal(t, w, EscrowAccount("carol")); got < 0 {
		t.Fatalf("escrow negative: %d", got)
	}
	st, _ = w.AccountStatus("carol")
	if !st.DelinquentSince.Equal(end) {
		t.Fatalf("delinquent since %v, want %v", st.DelinquentSince, end)
	}
	if r, _ := w.Releasable(end.Add(47 * time.Hour)); len(r) != 0 {
		t.Fatalf("releasable before the grace period: %v", r)
	}
	if r, _ := w.Releasable(end.Add(48 * time.Hour)); len(r) != 1 || r[0] != "carol" {
		t.Fatalf("releasable after the grace period: %v", r)
	}
	if err := w.CheckLedger(); err != nil {
		t.Fatal(err)
	}
}

// TestSeedSampleV1 opens the format-1 seed file kept in testdata (seed bytes
// 0x00..0x1f, passphrase "fincrypt sample passphrase", regtest): every format
// version must keep loading and deriving the same addresses.
func TestSeedSampleV1(t *testing.T) {
	data, err := os.ReadFile("testdata/seed-v1/" + SeedFileName)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, SeedFileName), data, 0o600); err != nil {
		t.Fatal(err)
	}
	w, err := Open(Config{Dir: dir, Passphrase: []byte("fincrypt sample passphrase"), Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	a, err := w.DepositAddress("first")
	if err != nil {
		t.Fatal(err)
	}
	if a != "bcrt1q05fktjrqrr5ze7ntzukj0g0wrj5he0xm0l8srm" {
		t.Fatalf("m/84'/1'/0'/0/0 = %s", a)
	}
	tx := w.begin()
	defer tx.discard()
	script, _, err := w.newChangeScript(tx)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := btcutil.DecodeAddress("bcrt1q93lra47zh7z03584th0tl2lm3m52n4hxyr0xj7", w.Network())
	if ws, _ := txscript.PayToAddrScript(want); string(ws) != string(script) {
		t.Fatalf("change m/84'/1'/0'/1/0 script %x", script)
	}
}

// TestSettleUnmetered: without payments the ledger still records what each
// node earned, touches no escrow and marks nobody delinquent.
func TestSettleUnmetered(t *testing.T) {
	w := newTestWallet(t, "regtest", nil)
	in := settleInput(1,
		Holding{Node: "n1", Account: "alice", Bytes: 10 * GiB, Passed: true},
		Holding{Node: "n2", Account: "alice", Bytes: 10 * GiB, Passed: false},
	)
	in.Unmetered = true
	rep, err := w.Settle(in)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Delinquent) != 0 || !rep.Unmetered {
		t.Fatalf("report %+v", rep)
	}
	for acct, want := range map[string]int64{UnmeteredAccount("n1"): 10000, UnmeteredAccount("n2"): 0,
		NodeAccount("n1"): 0, EscrowAccount("alice"): 0, AcctExtUnmetered: -10000, AcctFeesMediator: 0} {
		if got := mustBal(t, w, acct); got != want {
			t.Errorf("%s = %d, want %d", acct, got, want)
		}
	}
	if st, _ := w.AccountStatus("alice"); st.Delinquent {
		t.Fatal("unmetered period made alice delinquent")
	}
	if p, err := w.WritePayoutPSBT(t.TempDir()); err != nil || p != nil {
		t.Fatalf("unmetered earnings were paid out: %+v %v", p, err)
	}
	if err := w.CheckLedger(); err != nil {
		t.Fatal(err)
	}
}

// TestSeedFileCorrupt: damaged seed files give clear errors, never a panic
// or a wallet with another seed.
func TestSeedFileCorrupt(t *testing.T) {
	good, err := os.ReadFile("testdata/seed-v1/" + SeedFileName)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{
		"empty":     "",
		"not json":  "seed",
		"format 2":  strings.Replace(string(good), `"format": 1`, `"format": 2`, 1),
		"network":   strings.Replace(string(good), `"regtest"`, `"dogecoin"`, 1),
		"kdf":       strings.Replace(string(good), `"argon2id"`, `"scrypt"`, 1),
		"params":    strings.Replace(string(good), `"time": 1`, `"time": 0`, 1),
		"salt":      strings.Replace(string(good), `"salt": "`, `"salt": "AAAA`, 1),
		"truncated": string(good[:len(good)/2]),
		"sealed":    strings.Replace(string(good), `"sealed_seed": "I`, `"sealed_seed": "J`, 1),
	} {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, SeedFileName), []byte(data), 0o600)
		w, err := Open(Config{Dir: dir, Passphrase: []byte("fincrypt sample passphrase"), Logger: testLogger()})
		if err == nil {
			w.Close()
			t.Errorf("%s: opened", name)
		}
	}
}
