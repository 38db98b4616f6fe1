package testplanet_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/chaincfg/chainhash"

	"github.com/fincrypt/fincrypt/internal/testbin"
	"github.com/fincrypt/fincrypt/mediator"
	"github.com/fincrypt/fincrypt/mediator/testplanet"
	fnet "github.com/fincrypt/fincrypt/net"
	"github.com/fincrypt/fincrypt/wallet"
	"github.com/fincrypt/fincrypt/wallet/btcdtest"
)

// moneyNet is a real btcd in simnet, a mediator and five storage nodes as
// processes of the fincrypt binary, and clients in the test.
type moneyNet struct {
	t      *testing.T
	dir    string
	mdir   string
	btc    *btcdtest.Node
	med    *proc
	margs  []string
	maddr  fnet.Address
	nodes  []*proc
	nargs  [][]string
	period time.Duration
	kills  int
	// started is when the mediator process was last started.
	started time.Time
}

const moneyBasePrice = 10_000_000_000_000 // about 10 sat per piece of a segment per 1 s period

func startMoneyNet(t *testing.T) *moneyNet {
	t.Helper()
	m := &moneyNet{t: t, dir: t.TempDir(), period: time.Second}
	m.mdir = filepath.Join(m.dir, "mediator")
	if keep := os.Getenv("FINCRYPT_MONEY_LOGS"); keep != "" {
		t.Cleanup(func() {
			logs, _ := filepath.Glob(filepath.Join(m.dir, "*.log"))
			for _, l := range logs {
				b, _ := os.ReadFile(l)
				os.WriteFile(filepath.Join(keep, filepath.Base(l)), b, 0o644)
			}
		})
	}
	var err error
	if m.btc, err = btcdtest.StartNodeNet(filepath.Join(m.dir, "btcd"), &chaincfg.SimNetParams); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.btc.Stop() })
	if err := m.btc.Ready(); err != nil {
		t.Fatal(err)
	}
	pass := filepath.Join(m.dir, "passphrase")
	if err := os.WriteFile(pass, []byte("money test passphrase\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A port the kernel does not hand out for port 0: the mediator comes
	// back on it after each kill, and meanwhile a socket binding port 0
	// could take an ephemeral one.
	m.margs = []string{"--debug", "mediator", "--dir", m.mdir, "--listen", net.JoinHostPort("127.0.0.1", testbin.Port("127.0.0.1")),
		"--period", m.period.String(), "--heartbeat", "100ms", "--online-window", "1s", "--offline-after", "60s",
		"--challenge-timeout", "800ms", "--network", "simnet", "--wallet-passphrase-file", pass,
		"--btcd-rpc", m.btc.Host, "--btcd-rpc-user", m.btc.User, "--btcd-rpc-pass", m.btc.Pass,
		"--min-conf", "1", "--sync-interval", "200ms", "--payout-threshold", "2000", "--fee-bps", "1000",
		"--escrow-grace", "1h", "--price-notice", "1h", "--runway-periods", "3", "--rpc-timeout", "1s",
		"--max-price", "2000000000000000"} // the nodes ask ~1e13, then 100 times that
	m.startMediator()
	for i := 0; i < 5; i++ {
		payout, _ := btcutil.DecodeAddress(m.newWalletAddress(), &chaincfg.SimNetParams)
		ndir := filepath.Join(m.dir, fmt.Sprintf("node%d", i))
		m.nargs = append(m.nargs, []string{"storage", "--dir", ndir, "--listen", testplanet.NodeIP(i) + ":0", // a network each
			"--mediator", m.maddr.String(), "--capacity", "64MiB", "--payout-address", payout.EncodeAddress(), "--network", "simnet"})
		m.nodes = append(m.nodes, nil)
		m.startNode(i, moneyBasePrice+uint64(i)*100_000_000_000)
	}
	waitStatus(t, m.mdir, "five nodes online", 30*time.Second, func(s map[string]any) bool {
		n := 0
		for _, x := range nodesOf(t, s) {
			if x["online"] == true {
				n++
			}
		}
		return n == 5
	})
	return m
}

// newWalletAddress is a simnet address of the miner's for node payouts.
func (m *moneyNet) newWalletAddress() string {
	a, err := btcutil.NewAddressPubKeyHash([]byte(fmt.Sprintf("payout-%015d", rand.Uint64()%1e15))[:20], &chaincfg.SimNetParams)
	if err != nil {
		m.t.Fatal(err)
	}
	return a.EncodeAddress()
}

func (m *moneyNet) startMediator() {
	m.t.Helper()
	os.Remove(filepath.Join(m.mdir, mediator.AddressFile))
	m.started = time.Now()
	m.med = start(m.t, m.dir, fmt.Sprintf("mediator-%d", m.kills), m.margs...)
	a, err := fnet.ParseAddress(waitFile(m.t, m.med, filepath.Join(m.mdir, mediator.AddressFile)))
	if err != nil {
		m.t.Fatal(err)
	}
	if m.maddr.HostPort != "" && a != m.maddr {
		// Nodes and clients dial the first address: keep it.
		m.t.Fatalf("mediator came back on %s, was %s", a, m.maddr)
	}
	m.maddr = a
	if m.kills == 0 { // later starts listen where the first did
		for i, s := range m.margs {
			if s == "127.0.0.1:0" {
				m.margs[i] = a.HostPort
			}
		}
	}
}

// roundAfter waits for a round that started after t and returns its start.
func (m *moneyNet) roundAfter(t time.Time) time.Time {
	m.t.Helper()
	var last time.Time
	waitStatus(m.t, m.mdir, "a round after "+t.Format("15:04:05.000"), 30*time.Second, func(s map[string]any) bool {
		v, _ := s["last_round"].(string)
		last, _ = time.Parse(time.RFC3339Nano, v)
		return last.After(t)
	})
	return last
}

func (m *moneyNet) kill9Mediator() {
	m.t.Helper()
	m.med.cmd.Process.Signal(syscall.SIGKILL)
	<-m.med.done
	m.kills++
	m.startMediator()
}

func (m *moneyNet) startNode(i int, price uint64) {
	m.t.Helper()
	if p := m.nodes[i]; p != nil {
		p.cmd.Process.Signal(syscall.SIGTERM)
		<-p.done
	}
	args := append(append([]string{}, m.nargs[i]...), "--price", strconv.FormatUint(price, 10))
	m.nodes[i] = start(m.t, m.dir, fmt.Sprintf("node%d-%d", i, price), args...)
	waitFile(m.t, m.nodes[i], filepath.Join(m.nargs[i][2], "address"))
}

func (m *moneyNet) nodeID(i int) string {
	b, err := os.ReadFile(filepath.Join(m.nargs[i][2], "address"))
	if err != nil {
		m.t.Fatal(err)
	}
	a, err := fnet.ParseAddress(strings.TrimSpace(string(b)))
	if err != nil {
		m.t.Fatal(err)
	}
	return a.ID.String()
}

func (m *moneyNet) client() *mediator.Client {
	m.t.Helper()
	id, _ := fnet.GenerateIdentity()
	c, err := mediator.NewClient(id, m.maddr, nil)
	if err != nil {
		m.t.Fatal(err)
	}
	m.t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := c.RegisterAccount(ctx); err != nil {
		m.t.Fatal(err)
	}
	return c
}

// call retries fn over a mediator that may be restarting.
func call[T any](m *moneyNet, what string, fn func(ctx context.Context) (T, error)) T {
	m.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		v, err := fn(ctx)
		cancel()
		if err == nil {
			return v
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// deposit sends sat to the client's escrow address and mines a block.
func (m *moneyNet) deposit(c *mediator.Client, sat int64) {
	m.t.Helper()
	da := call(m, "deposit address", c.DepositAddress)
	addr, err := btcutil.DecodeAddress(da.Address, m.btc.Net)
	if err != nil {
		m.t.Fatal(err)
	}
	if _, err := m.btc.Send(addr, sat); err != nil {
		m.t.Fatal(err)
	}
	m.btc.MustGenerate(m.t, 1)
}

func (m *moneyNet) balance(c *mediator.Client) *fnet.BalanceReply {
	return call(m, "balance", c.Balance)
}

func (m *moneyNet) ledger() *mediator.LedgerReport {
	return call(m, "ledger", func(ctx context.Context) (*mediator.LedgerReport, error) {
		return mediator.ReadLedger(ctx, m.mdir, 0, 0)
	})
}

// charges returns, per settled period, what the account was charged on
// the node's line (from the ledger's settlement entries).
func (m *moneyNet) charges(node string, acct fnet.AccountID) map[int64]int64 {
	out := map[int64]int64{}
	a := fnet.NodeID(acct).String()
	for _, e := range m.ledger().Entries {
		f := strings.Split(e.Key, "/")
		if len(f) != 4 || f[0] != "settle" || f[2] != node || f[3] != a {
			continue
		}
		period, _ := strconv.ParseInt(f[1], 10, 64)
		for _, p := range e.Postings {
			if p.Account == wallet.EscrowAccount(a) {
				out[period] = -p.Amount
			}
		}
	}
	return out
}

// audit checks the books: credited deposits = escrow + node balances +
// mediator fees + in flight + paid + miner fees (+ debt, negative); every
// settled period has one settlement per line; every payout recorded as
// mined or confirmed is on chain with the recorded outputs, one record per
// transaction.
func (m *moneyNet) audit(stage string) {
	m.t.Helper()
	rep := m.ledger()
	deposits := -rep.Balances[wallet.AcctExtDeposits]
	var held int64
	for k, v := range rep.Balances {
		if k != wallet.AcctExtDeposits && k != wallet.AcctExtUnmetered && !strings.HasPrefix(k, "unmetered:") {
			held += v
		}
	}
	if deposits != held || deposits <= 0 {
		m.t.Fatalf("%s: deposits %d, escrow+balances+fees+in flight+paid %d: %v", stage, deposits, held, rep.Balances)
	}
	seen := map[string]bool{}
	for _, e := range rep.Entries {
		if strings.HasPrefix(e.Key, "settle/") {
			if seen[e.Key] {
				m.t.Fatalf("%s: %s settled twice", stage, e.Key)
			}
			seen[e.Key] = true
		}
	}
	pos := call(m, "payouts", func(ctx context.Context) ([]wallet.Payout, error) { return mediator.ReadPayouts(ctx, m.mdir) })
	txs := map[string]bool{}
	for _, po := range pos {
		if txs[po.TxID] {
			m.t.Fatalf("%s: two payout records for transaction %s", stage, po.TxID)
		}
		txs[po.TxID] = true
		if po.State != wallet.PayoutConfirmed && po.State != wallet.PayoutMined {
			continue
		}
		h, _ := chainhash.NewHashFromStr(po.TxID)
		tx, err := m.btc.Tx(h)
		if err != nil {
			m.t.Fatalf("%s: payout %d (%s) %s is not on chain: %v", stage, po.ID, po.State, po.TxID, err)
		}
		for _, o := range po.Outputs {
			if int(o.Vout) >= len(tx.TxOut) || tx.TxOut[o.Vout].Value != o.Amount {
				m.t.Fatalf("%s: payout %d output %d does not pay %d", stage, po.ID, o.Vout, o.Amount)
			}
		}
	}
}

// TestProcessMoney runs the money paths over processes: a real btcd in
// simnet, the mediator and five storage nodes as fincrypt processes. In
// turn: a node restarted at 100 times its price (held pieces keep their
// contract price, new ones pay the new price); a delinquent account that
// deposits dust (stays delinquent, places nothing, keeps its release
// time); kill -9 of the mediator around period boundaries (every period
// with a round is settled once, every other is counted as a gap, nothing
// is paid twice); btcd stopped for five periods (rounds keep their period,
// settlement and payouts catch up). The books are audited after each.
func TestProcessMoney(t *testing.T) {
	if testing.Short() {
		t.Skip("starts btcd and seven processes")
	}
	m := startMoneyNet(t)
	ctx := func() context.Context {
		c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		t.Cleanup(cancel)
		return c
	}

	// 1. Contract prices.
	alice := m.client()
	m.deposit(alice, 50_000_000)
	waitUntil(t, "alice's deposit credited", 30*time.Second, func() bool { return m.balance(alice).CanPlace })
	if _, err := alice.Store(ctx(), mediator.DefaultScheme, randomData(1, segSize)); err != nil {
		t.Fatal(err)
	}
	n0 := m.nodeID(0)
	waitUntil(t, "three periods charged on node 0", 30*time.Second, func() bool { return len(m.charges(n0, alice.Account())) >= 3 })
	var before int64
	for _, v := range m.charges(n0, alice.Account()) {
		before = max(before, v)
	}
	if before < 5 {
		t.Fatalf("node 0 charges %d sat a period: too little to compare", before)
	}
	passed0 := func(s map[string]any) float64 {
		for _, n := range nodesOf(t, s) {
			if n["id"] == n0 {
				return num(t, n, "passed")
			}
		}
		return 0
	}
	was := passed0(statusJSON(t, m.mdir))
	m.startNode(0, 100*moneyBasePrice)
	waitStatus(t, m.mdir, "node 0 at its new price", 30*time.Second, func(s map[string]any) bool {
		for _, n := range nodesOf(t, s) {
			if n["id"] == n0 && num(t, n, "price") == 100*moneyBasePrice {
				return true
			}
		}
		return false
	})
	// The mediator may still hold its connection to the node's old
	// process (not this test's subject): wait until a round reached the
	// new one before bob's commit challenges it.
	waitStatus(t, m.mdir, "node 0 challenged again", 30*time.Second, func(s map[string]any) bool { return passed0(s) > was+1 })
	if b := m.balance(alice); b.NoticeCharge <= 0 || b.NoticeAt.Before(time.Now().Add(50*time.Minute)) {
		t.Fatalf("alice is not told of the rise: %+v", b)
	}
	bob := m.client()
	m.deposit(bob, 50_000_000)
	waitUntil(t, "bob's deposit credited", 30*time.Second, func() bool { return m.balance(bob).CanPlace })
	if _, err := bob.Store(ctx(), mediator.DefaultScheme, randomData(2, segSize)); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "three periods charged to bob on node 0", 30*time.Second, func() bool { return len(m.charges(n0, bob.Account())) >= 3 })
	raised := time.Now()
	waitUntil(t, "three more periods for alice", 30*time.Second, func() bool {
		n := 0
		for p := range m.charges(n0, alice.Account()) {
			if time.Unix(0, p).After(raised) {
				n++
			}
		}
		return n >= 3
	})
	for p, v := range m.charges(n0, alice.Account()) {
		if v > before+1 {
			t.Fatalf("period %d: alice charged %d sat on node 0, %d before its rise", p, v, before)
		}
	}
	for p, v := range m.charges(n0, bob.Account()) {
		if v < 50*before {
			t.Fatalf("period %d: bob's new piece on node 0 charged %d sat, alice's old one %d", p, v, before)
		}
	}
	m.audit("after the price rise")

	// 2. Dust does not end delinquency.
	carol := m.client()
	m.deposit(carol, 3_000)
	waitUntil(t, "carol's deposit credited", 30*time.Second, func() bool { return m.balance(carol).CanPlace })
	if _, err := carol.Store(ctx(), mediator.DefaultScheme, randomData(3, segSize)); err != nil {
		t.Fatal(err)
	}
	var cb *fnet.BalanceReply
	waitUntil(t, "carol delinquent", 30*time.Second, func() bool { cb = m.balance(carol); return cb.Delinquent })
	release := cb.ReleaseAt
	left := m.balance(carol).Escrow // what splitting the last period left over
	m.deposit(carol, 1_000)
	waitUntil(t, "the dust credited", 30*time.Second, func() bool { b := m.balance(carol); return b.Pending == 0 && b.Escrow > left })
	if b := m.balance(carol); !b.Delinquent || b.CanPlace || !b.ReleaseAt.Equal(release) {
		t.Fatalf("after dust: %+v (release was %v)", b, release)
	}
	waitUntil(t, "a period charged after the dust", 30*time.Second, func() bool { return m.balance(carol).Escrow < left+1_000 })
	if b := m.balance(carol); !b.Delinquent || b.CanPlace || !b.ReleaseAt.Equal(release) {
		t.Fatalf("after dust: %+v (release was %v)", b, release)
	}
	if _, err := carol.Store(ctx(), mediator.DefaultScheme, randomData(4, segSize)); !errors.Is(err, fnet.ErrUnauthorized) {
		t.Fatalf("delinquent account placed after dust: %v", err)
	}
	m.audit("after dust")

	// 3. kill -9 of the mediator around period boundaries.
	kills := 8
	if v, _ := strconv.Atoi(os.Getenv("FINCRYPT_MONEY_KILLS")); v > 0 {
		kills = v
	}
	rng := rand.New(rand.NewPCG(20, 20))
	for k := 0; k < kills; k++ {
		last := m.roundAfter(m.started)
		next := last.Add(m.period)
		for next.Before(time.Now()) {
			next = next.Add(m.period)
		}
		at := next.Add(time.Duration(rng.IntN(400)-100) * time.Millisecond)
		time.Sleep(time.Until(at))
		m.kill9Mediator()
		t.Logf("kill %d at %s", k, at.UTC().Format("15:04:05.000"))
	}
	checkPeriods(t, m, "after the kills")
	m.audit("after the kills")

	// 4. btcd stopped for five periods.
	before4 := statusJSON(t, m.mdir)
	var lastPayout uint64
	for _, po := range call(m, "payouts", func(ctx context.Context) ([]wallet.Payout, error) { return mediator.ReadPayouts(ctx, m.mdir) }) {
		lastPayout = max(lastPayout, po.ID)
	}
	m.btc.Stop()
	down := time.Now()
	time.Sleep(5 * m.period)
	during := statusJSON(t, m.mdir)
	elapsed := time.Since(down)
	rounds := num(t, during, "rounds") - num(t, before4, "rounds")
	if want := float64(elapsed/m.period) - 2; rounds < want {
		t.Fatalf("%v rounds in %s without btcd, want at least %v", rounds, elapsed, want)
	}
	if num(t, during, "period_gaps") != num(t, before4, "period_gaps") {
		t.Fatalf("periods skipped while btcd was down: %v -> %v", before4["period_gaps"], during["period_gaps"])
	}
	if err := m.btc.Restart(); err != nil {
		t.Fatal(err)
	}
	m.btc.MustGenerate(t, 1)
	waitUntil(t, "settlement caught up", 30*time.Second, func() bool {
		s := statusJSON(t, m.mdir)
		return s["settled_through"] != nil && s["settled_through"] == s["last_round"]
	})
	waitUntil(t, "a payout mined after btcd came back", 30*time.Second, func() bool {
		pos := call(m, "payouts", func(ctx context.Context) ([]wallet.Payout, error) { return mediator.ReadPayouts(ctx, m.mdir) })
		for _, po := range pos {
			if po.ID > lastPayout && (po.State == wallet.PayoutMined || po.State == wallet.PayoutConfirmed) {
				return true
			}
		}
		m.btc.MustGenerate(t, 1)
		return false
	})
	checkPeriods(t, m, "after btcd came back")
	m.audit("after btcd came back")
}

// checkPeriods stops nothing: it reads the settlement entries and the
// status and checks that between the first and the last settled period
// every period slot either was settled or is counted as a gap.
func checkPeriods(t *testing.T, m *moneyNet, stage string) {
	t.Helper()
	m.roundAfter(m.started) // gaps are counted when the next round starts
	waitUntil(t, "settlement caught up", 30*time.Second, func() bool {
		s := statusJSON(t, m.mdir)
		return s["settled_through"] != nil && s["settled_through"] == s["last_round"]
	})
	st := statusJSON(t, m.mdir)
	periods := map[int64]bool{}
	for _, e := range m.ledger().Entries {
		if f := strings.Split(e.Key, "/"); len(f) == 4 && f[0] == "settle" {
			p, _ := strconv.ParseInt(f[1], 10, 64)
			periods[p] = true
		}
	}
	var list []int64
	for p := range periods {
		list = append(list, p)
	}
	slicesSort(list)
	var missing int64
	var where []string
	for i := 1; i < len(list); i++ {
		if gap := int64(time.Duration(list[i]-list[i-1])/m.period) - 1; gap > 0 {
			missing += gap
			where = append(where, fmt.Sprintf("%d after %s", gap, time.Unix(0, list[i-1]).UTC().Format("15:04:05.000")))
		}
	}
	t.Logf("%s: slots without a settlement: %v", stage, where)
	gaps := int64(num(t, st, "period_gaps"))
	// A gap is counted when the round after it starts; the first settled
	// period may follow gaps counted before it (none here: data is placed
	// after the first rounds).
	if missing > gaps {
		t.Fatalf("%s: %d period slots without a settlement, %d counted as gaps (%d periods settled, %v reruns)", stage, missing, gaps, len(list), st["rounds_rerun"])
	}
	t.Logf("%s: %d periods settled, %d gaps counted, %v rounds rerun, %d kills", stage, len(list), gaps, st["rounds_rerun"], m.kills)
}

func slicesSort(s []int64) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}
