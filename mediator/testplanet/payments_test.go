package testplanet_test

import (
	"context"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/txscript"

	"github.com/fincrypt/fincrypt/mediator"
	"github.com/fincrypt/fincrypt/mediator/testplanet"
	fnet "github.com/fincrypt/fincrypt/net"
	"github.com/fincrypt/fincrypt/vault"
	"github.com/fincrypt/fincrypt/wallet"
	"github.com/fincrypt/fincrypt/wallet/btcdtest"
)

var (
	testPassphrase = []byte("mediator wallet test passphrase")
	cheapKDF       = vault.KDFParams{Time: 1, MemoryK: 64, Threads: 1}
)

// waitUntil polls cond every 50ms until it holds or the timeout passes.
func waitUntil(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestPlanetUnmeteredLedger: a mediator with a wallet but no Bitcoin node
// places without escrow, refuses deposit addresses, and its ledger records
// what every node earned as unmetered.
func TestPlanetUnmeteredLedger(t *testing.T) {
	testplanet.Run(t, testplanet.Config{StorageNodes: 5, Prices: bigPrices(5), Reconfigure: func(c *mediator.Config) {
		c.Payments = mediator.Payments{Passphrase: testPassphrase, KDF: cheapKDF}
	}}, func(t *testing.T, p *testplanet.Planet) {
		ctx := p.Context()
		if _, err := p.Client.Store(ctx, p.Scheme(), randomData(1, segSize)); err != nil {
			t.Fatalf("store without escrow on an unmetered mediator: %v", err)
		}
		if _, err := p.Client.DepositAddress(ctx); !errors.Is(err, fnet.ErrUnsupported) {
			t.Fatalf("deposit address without payments: %v", err)
		}
		bal, err := p.Client.Balance(ctx)
		if err != nil || bal.Metered || !bal.CanPlace {
			t.Fatalf("balance without payments: %+v, %v", bal, err)
		}
		w := p.Mediator.Peer.Wallet()
		waitUntil(t, "unmetered earnings of every node", 20*time.Second, func() bool {
			b, err := w.Balances("unmetered:")
			return err == nil && len(b) == 5
		})
		if b, _ := w.Balances("node:"); len(b) != 0 {
			t.Fatalf("unmetered periods credited payable balances: %v", b)
		}
		if err := w.CheckLedger(); err != nil {
			t.Fatal(err)
		}
	})
}

// bigPrices makes pieces of a few kB earn about a thousand satoshis per
// one-second period (prices near the 21e14 sat/GiB/month maximum).
func bigPrices(n int) []uint64 {
	out := make([]uint64, n)
	for i := range out {
		out[i] = 1e15 + uint64(i)*1e13
	}
	return out
}

// TestPlanetPayments runs the whole payment cycle over a real btcd in
// regtest: escrow required for placement, a deposit credited only after
// MinConf confirmations, periods settled from real challenge results (a node
// with a flipped byte earns nothing for that period), a mediator restart
// between settlement and payout, and a payout confirmed on chain paying
// each node exactly what the ledger says, once.
func TestPlanetPayments(t *testing.T) {
	if testing.Short() {
		t.Skip("starts btcd")
	}
	btc := btcdtest.Start(t)
	if err := btc.Ready(); err != nil {
		t.Fatal(err)
	}
	const (
		minConf      = 2
		deposit      = 50_000_000
		smallDeposit = 3_000 // less than one period of 4 pieces
		feeBPS       = 1000
	)
	p := testplanet.New(t, testplanet.Config{StorageNodes: 5, Network: "regtest", Prices: bigPrices(5), Reconfigure: func(c *mediator.Config) {
		c.Network = "regtest"
		c.Payments = mediator.Payments{
			Passphrase: testPassphrase, KDF: cheapKDF,
			RPC:     &wallet.RPCConfig{Host: btc.Host, User: btc.User, Pass: btc.Pass},
			MinConf: minConf, FeeBPS: feeBPS, SyncInterval: 100 * time.Millisecond, EscrowGrace: 2 * time.Second,
			PayoutThreshold: 1e15, // no payout before the restart
		}
	}})
	ctx := p.Context()
	data := randomData(7, segSize)

	// No escrow, no placement.
	if _, err := p.Client.Store(ctx, p.Scheme(), data); !errors.Is(err, fnet.ErrUnauthorized) || !strings.Contains(err.Error(), "escrow") {
		t.Fatalf("placement without escrow: %v", err)
	}
	// Deposit: pending after one confirmation, credited after MinConf.
	da, err := p.Client.DepositAddress(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if da.Network != "regtest" || da.MinConf != minConf {
		t.Fatalf("deposit address reply %+v", da)
	}
	addr, err := btcutil.DecodeAddress(da.Address, btc.Net)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := btc.Send(addr, deposit); err != nil {
		t.Fatal(err)
	}
	// A second account deposits too little for one period: it becomes
	// delinquent, and its segment is released after the grace period.
	poor := p.NewClient()
	pda, err := poor.DepositAddress(ctx)
	if err != nil {
		t.Fatal(err)
	}
	paddr, _ := btcutil.DecodeAddress(pda.Address, btc.Net)
	if _, err := btc.Send(paddr, smallDeposit); err != nil {
		t.Fatal(err)
	}
	btc.MustGenerate(t, 1)
	waitUntil(t, "the deposit seen with one confirmation", 20*time.Second, func() bool {
		b, err := p.Client.Balance(ctx)
		return err == nil && b.Pending == deposit
	})
	if b, _ := p.Client.Balance(ctx); b.Escrow != 0 || b.CanPlace {
		t.Fatalf("deposit credited before %d confirmations: %+v", minConf, b)
	}
	btc.MustGenerate(t, minConf-1)
	waitUntil(t, "the deposit credited", 20*time.Second, func() bool {
		b, err := p.Client.Balance(ctx)
		return err == nil && b.Escrow == deposit && b.CanPlace
	})

	seg, err := p.Client.Store(ctx, p.Scheme(), data)
	if err != nil {
		t.Fatalf("store with escrow: %v", err)
	}
	waitUntil(t, "the small deposit credited", 20*time.Second, func() bool {
		b, err := poor.Balance(ctx)
		return err == nil && b.Escrow == smallDeposit
	})
	poorSeg, err := poor.Store(ctx, p.Scheme(), randomData(8, segSize))
	if err != nil {
		t.Fatalf("store with a small escrow: %v", err)
	}
	acct := fnet.NodeID(p.Client.Account()).String()
	w := p.Mediator.Peer.Wallet()
	waitUntil(t, "two periods charged", 20*time.Second, func() bool {
		st, err := w.AccountStatus(acct)
		return err == nil && st.LastCharge > 0 && st.Escrow < deposit-st.LastCharge
	})
	// Flip a byte of one node's piece: it fails its next challenge.
	sg := p.Segment(seg)
	bad := p.NodeIndex(sg.Pieces[0].Node)
	badID := sg.Pieces[0].Node
	p.FlipByte(bad, sg.Pieces[0].ID, 10)
	waitUntil(t, "the flipped piece failed", 20*time.Second, func() bool {
		return p.Segment(seg).Pieces[0].State != mediator.PieceHealthy
	})
	waitUntil(t, "two more periods", 20*time.Second, func() bool {
		st := p.Status()
		return st.Rounds > 0 && settledRounds(t, p) >= 2
	})
	// The poor account ran out: warned, refused, then released.
	var pb *fnet.BalanceReply
	waitUntil(t, "the poor account delinquent", 20*time.Second, func() bool {
		pb, err = poor.Balance(ctx)
		return err == nil && pb.Delinquent
	})
	if !pb.Low || pb.CanPlace || pb.ReleaseAt.IsZero() {
		t.Fatalf("delinquent balance %+v", pb)
	}
	if _, err := poor.Store(ctx, p.Scheme(), randomData(9, segSize)); !errors.Is(err, fnet.ErrUnauthorized) {
		t.Fatalf("placement for a delinquent account: %v", err)
	}
	waitUntil(t, "the delinquent account's segment released", 20*time.Second, func() bool {
		_, err := poor.Segment(ctx, poorSeg)
		return errors.Is(err, fnet.ErrNotFound)
	})
	if _, err := p.Client.Segment(ctx, seg); err != nil {
		t.Fatalf("the paying account's segment: %v", err)
	}

	// "Crash" between settlement and payout: stop with balances settled
	// and unpaid (threshold not reached), check the ledger against the
	// challenge records, then restart with a threshold the balances pass.
	p.StopMediator()
	earned, failedPeriods := expectedEarnings(t, p, p.Client.Account(), feeBPS)
	if failedPeriods[badID] == 0 {
		t.Fatalf("no settled period recorded the failure of node %s", badID)
	}
	balances, journal := nodeBalances(t, p)
	for node, want := range earned {
		if got := journal[node.String()][acct]; got != want {
			t.Errorf("node %s: the ledger credits %d for the paying account, its challenge records give %d", node, got, want)
		}
	}
	for node, per := range journal {
		var sum int64
		for _, v := range per {
			sum += v
		}
		if balances[node] != sum {
			t.Errorf("node %s: balance %d, settlement entries %d", node, balances[node], sum)
		}
	}
	if len(earned) != 5 {
		t.Fatalf("%d nodes earned, want 5", len(earned))
	}
	for node, e := range earned {
		if node != badID && e <= earned[badID] {
			t.Errorf("node %s earned %d, no more than the failing node's %d", node, e, earned[badID])
		}
	}
	const threshold = 1000

	p.Mediator.Config.Payments.PayoutThreshold = threshold
	p.RestartMediator()
	w = p.Mediator.Peer.Wallet()
	var paid wallet.Payout
	waitUntil(t, "the payout confirmed", 30*time.Second, func() bool {
		list, err := w.Payouts()
		if err != nil {
			t.Fatal(err)
		}
		for _, po := range list {
			if po.State == wallet.PayoutConfirmed {
				paid = po
				return true
			}
		}
		if len(list) > 0 {
			btc.MustGenerate(t, 1)
		}
		return false
	})
	p.StopMediator()

	// On chain: the transaction pays each node's address exactly its
	// recorded amount, debit minus its share of the miner fee.
	txid, err := chainhash.NewHashFromStr(paid.TxID)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := btc.Tx(txid)
	if err != nil {
		t.Fatal(err)
	}
	if conf, err := btc.Confirmations(txid); err != nil || conf < minConf {
		t.Fatalf("payout %s: %d confirmations, %v", paid.TxID, conf, err)
	}
	byID := map[string]int{}
	for i, n := range p.Nodes {
		byID[n.ID().String()] = i
	}
	inPayout := map[string]bool{}
	for _, o := range paid.Outputs {
		inPayout[o.Node] = true
	}
	for node, b := range balances {
		if b >= threshold && !inPayout[node] {
			t.Errorf("node %s had %d sat settled before the restart and is not in the payout", node, b)
		}
	}
	for _, o := range paid.Outputs {
		i, ok := byID[o.Node]
		if !ok {
			t.Fatalf("payout to unknown node %s", o.Node)
		}
		a, _ := btcutil.DecodeAddress(p.PayoutAddress(i), btc.Net)
		script, _ := txscript.PayToAddrScript(a)
		out := tx.TxOut[o.Vout]
		if out.Value != o.Amount || string(out.PkScript) != string(script) || o.Amount != o.Debit-o.FeeShare {
			t.Errorf("node %s: output %d pays %d to %x; recorded %d (debit %d, fee share %d) to %s", o.Node, o.Vout, out.Value, out.PkScript, o.Amount, o.Debit, o.FeeShare, p.PayoutAddress(i))
		}
	}
	// Paid once: per node, the debits of every payout plus the unpaid
	// balance equal everything it earned; paid:<node> is what reached its
	// address.
	mw := openWallet(t, p)
	all, err := mw.Payouts()
	if err != nil {
		t.Fatal(err)
	}
	debits, amounts := map[string]int64{}, map[string]int64{}
	for _, po := range all {
		for _, o := range po.Outputs {
			debits[o.Node] += o.Debit
			if po.State == wallet.PayoutConfirmed {
				amounts[o.Node] += o.Amount
			}
		}
	}
	for node, total := range settleEarnings(t, mw) {
		bal, _ := mw.Balance(wallet.NodeAccount(node))
		if bal+debits[node] != total {
			t.Errorf("node %s: balance %d + payout debits %d != earned %d", node, bal, debits[node], total)
		}
		got, _ := mw.Balance(wallet.PaidAccount(node))
		if got != amounts[node] {
			t.Errorf("node %s: paid %d in the ledger, %d on chain", node, got, amounts[node])
		}
	}
	if err := mw.CheckLedger(); err != nil {
		t.Fatal(err)
	}
}

// settledRounds counts the periods settled since the flipped piece failed
// (approximately: the periods with a settled marker after the first).
func settledRounds(t *testing.T, p *testplanet.Planet) int {
	w := p.Mediator.Peer.Wallet()
	ent, err := w.Journal(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	periods := map[string]bool{}
	for _, e := range ent {
		if strings.HasPrefix(e.Key, "settle/") {
			periods[strings.Split(e.Key, "/")[1]] = true
		}
	}
	return len(periods) - 2
}

// expectedEarnings recomputes, from the mediator's period records up to
// the settled marker, what each node must have earned: per (node, account)
// and period, ProRate of the bytes at the node's price with the carry, 0 if
// any challenge failed, less the mediator's fee. It also counts per node
// the periods in which it held bytes and failed.
func expectedEarnings(t *testing.T, p *testplanet.Planet, acct fnet.AccountID, feeBPS int64) (map[fnet.NodeID]int64, map[fnet.NodeID]int) {
	t.Helper()
	st, err := mediator.OpenPebbleStore(filepath.Join(p.Mediator.Dir, "db"), mediator.PebbleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	through, err := st.Counter(ctx, mediator.CounterSettled)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := st.PeriodRecords(ctx, time.Unix(0, 1), time.Unix(0, through+1))
	if err != nil {
		t.Fatal(err)
	}
	sort.SliceStable(recs, func(i, j int) bool { return recs[i].Period.Before(recs[j].Period) })
	type line struct {
		node fnet.NodeID
		acct fnet.AccountID
	}
	carry := map[line]*big.Int{}
	earned := map[fnet.NodeID]int64{}
	failed := map[fnet.NodeID]int{}
	for _, r := range recs {
		if r.Account != acct {
			continue
		}
		if r.Failed > 0 {
			failed[r.Node]++
			earned[r.Node] += 0
			continue
		}
		k := line{r.Node, r.Account}
		owed, c := wallet.ProRate(int64(r.Bytes), int64(r.Price), p.Mediator.Config.Period, carry[k])
		carry[k] = c
		earned[r.Node] += owed - owed*feeBPS/10_000
	}
	return earned, failed
}

func openWallet(t *testing.T, p *testplanet.Planet) *wallet.Wallet {
	t.Helper()
	w, err := wallet.Open(wallet.Config{Dir: filepath.Join(p.Mediator.Dir, mediator.WalletDir), Passphrase: testPassphrase})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

// nodeBalances returns every node's ledger balance and, per node and
// account, what the settlement entries credited.
func nodeBalances(t *testing.T, p *testplanet.Planet) (map[string]int64, map[string]map[string]int64) {
	t.Helper()
	w, err := wallet.Open(wallet.Config{Dir: filepath.Join(p.Mediator.Dir, mediator.WalletDir), Passphrase: testPassphrase})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	b, err := w.Balances("node:")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for k, v := range b {
		out[strings.TrimPrefix(k, "node:")] = v
	}
	ent, err := w.Journal(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	per := map[string]map[string]int64{}
	for _, e := range ent {
		f := strings.Split(e.Key, "/") // settle/<period>/<node>/<account>
		if len(f) != 4 || f[0] != "settle" {
			continue
		}
		for _, po := range e.Postings {
			if po.Account == wallet.NodeAccount(f[2]) {
				if per[f[2]] == nil {
					per[f[2]] = map[string]int64{}
				}
				per[f[2]][f[3]] += po.Amount
			}
		}
	}
	return out, per
}

// settleEarnings sums, per node, what settlement entries credited to it.
func settleEarnings(t *testing.T, w *wallet.Wallet) map[string]int64 {
	t.Helper()
	ent, err := w.Journal(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, e := range ent {
		if !strings.HasPrefix(e.Key, "settle/") {
			continue
		}
		for _, po := range e.Postings {
			if strings.HasPrefix(po.Account, "node:") {
				out[strings.TrimPrefix(po.Account, "node:")] += po.Amount
			}
		}
	}
	return out
}

// TestPlanetPayoutPSBT: with --payout-psbt the mediator writes the payout
// as an unsigned PSBT into DIR/payouts instead of broadcasting it; once the
// operator signs and sends it, the wallet sees it confirm.
func TestPlanetPayoutPSBT(t *testing.T) {
	if testing.Short() {
		t.Skip("starts btcd")
	}
	btc := btcdtest.Start(t)
	if err := btc.Ready(); err != nil {
		t.Fatal(err)
	}
	p := testplanet.New(t, testplanet.Config{StorageNodes: 5, Network: "regtest", Prices: bigPrices(5), Reconfigure: func(c *mediator.Config) {
		c.Network = "regtest"
		c.Payments = mediator.Payments{
			Passphrase: testPassphrase, KDF: cheapKDF, PSBT: true,
			RPC:     &wallet.RPCConfig{Host: btc.Host, User: btc.User, Pass: btc.Pass},
			MinConf: 1, SyncInterval: 100 * time.Millisecond, PayoutThreshold: 1000,
		}
	}})
	ctx := p.Context()
	da, err := p.Client.DepositAddress(ctx)
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := btcutil.DecodeAddress(da.Address, btc.Net)
	if _, err := btc.Send(addr, 10_000_000); err != nil {
		t.Fatal(err)
	}
	btc.MustGenerate(t, 1)
	waitUntil(t, "the deposit credited", 20*time.Second, func() bool {
		b, err := p.Client.Balance(ctx)
		return err == nil && b.CanPlace
	})
	if _, err := p.Client.Store(ctx, p.Scheme(), randomData(3, segSize)); err != nil {
		t.Fatal(err)
	}
	// The payout is recorded before its file is written; wait for both.
	w := p.Mediator.Peer.Wallet()
	var list []wallet.Payout
	psbtFile := filepath.Join(p.Mediator.Dir, mediator.PayoutsDir, "payout-1.psbt")
	waitUntil(t, "a PSBT payout recorded and written", 20*time.Second, func() bool {
		list, err = w.Payouts()
		if err != nil || len(list) == 0 {
			return false
		}
		_, err := os.Stat(psbtFile)
		return err == nil
	})
	if list[0].State != wallet.PayoutPSBT {
		t.Fatalf("payouts %+v", list)
	}
	if b, _ := btc.RPC.GetRawMempool(); len(b) != 0 {
		t.Fatalf("a PSBT payout was broadcast: mempool %v", b)
	}
	pk, err := wallet.ReadPSBTFile(psbtFile)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := w.SignPSBT(pk)
	if err != nil {
		t.Fatal(err)
	}
	if tx.TxHash().String() != list[0].TxID {
		t.Fatalf("signed txid %s, recorded %s", tx.TxHash(), list[0].TxID)
	}
	if _, err := btc.RPC.SendRawTransaction(tx, false); err != nil {
		t.Fatal(err)
	}
	btc.MustGenerate(t, 1)
	waitUntil(t, "the operator's payout confirmed", 20*time.Second, func() bool {
		list, err := w.Payouts()
		return err == nil && list[0].State == wallet.PayoutConfirmed
	})
	for _, o := range list[0].Outputs {
		if got, _ := w.Balance(wallet.PaidAccount(o.Node)); got < o.Amount {
			t.Errorf("node %s: paid %d, payout amount %d", o.Node, got, o.Amount)
		}
	}
}
