package mediator

// Tests of the metered money paths of payments.go in process: a wallet that
// follows an in-memory chain (deposits from outside, blocks on demand) and
// writes its payouts as PSBT files, so that settlement, payouts, escrow
// refusals and the release of delinquent accounts run without a bitcoin
// node (docs/TESTING.md, "mediator, eighth session").

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/rpcclient"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"

	"github.com/fincrypt/fincrypt/challenge"
	"github.com/fincrypt/fincrypt/erasure"
	fnet "github.com/fincrypt/fincrypt/net"
	"github.com/fincrypt/fincrypt/vault"
	"github.com/fincrypt/fincrypt/wallet"
)

// stubChain is a regtest chain in memory: transactions sent go to the
// mempool, mine puts them in a block. Nothing is verified: the tests only
// send clients' deposits (inputs from outside).
type stubChain struct {
	mu      sync.Mutex
	blocks  []*wire.MsgBlock
	mempool []*wire.MsgTx
	n       uint64 // deposits made, to tell their inputs apart
	refuse  error  // if set, SendRawTransaction refuses with it
}

func newStubChain() *stubChain {
	return &stubChain{blocks: []*wire.MsgBlock{chaincfg.RegressionNetParams.GenesisBlock}}
}

func (c *stubChain) GetBlockCount() (int64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return int64(len(c.blocks) - 1), nil
}

func (c *stubChain) GetBlockHash(h int64) (*chainhash.Hash, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if h < 0 || h >= int64(len(c.blocks)) {
		return nil, fmt.Errorf("height %d out of range", h)
	}
	x := c.blocks[h].BlockHash()
	return &x, nil
}

func (c *stubChain) GetBlock(hash *chainhash.Hash) (*wire.MsgBlock, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, b := range c.blocks {
		if b.BlockHash() == *hash {
			return b, nil
		}
	}
	return nil, errors.New("block not found")
}

func (c *stubChain) SendRawTransaction(tx *wire.MsgTx, _ bool) (*chainhash.Hash, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.refuse != nil {
		return nil, c.refuse
	}
	c.mempool = append(c.mempool, tx)
	h := tx.TxHash()
	return &h, nil
}

// mine adds a block holding the mempool.
func (c *stubChain) mine() {
	c.mu.Lock()
	defer c.mu.Unlock()
	cb := wire.NewMsgTx(1)
	var tag [8]byte
	binary.BigEndian.PutUint64(tag[:], uint64(len(c.blocks)))
	cb.AddTxIn(wire.NewTxIn(wire.NewOutPoint(&chainhash.Hash{}, wire.MaxPrevOutIndex), tag[:], nil))
	cb.AddTxOut(wire.NewTxOut(50, []byte{txscript.OP_TRUE}))
	prev := c.blocks[len(c.blocks)-1]
	b := wire.NewMsgBlock(&wire.BlockHeader{Version: 4, PrevBlock: prev.BlockHash(), Timestamp: prev.Header.Timestamp.Add(600e9)})
	b.AddTransaction(cb)
	for _, tx := range c.mempool {
		b.AddTransaction(tx)
	}
	c.mempool = nil
	c.blocks = append(c.blocks, b)
}

// withMeteredPayments gives w's mediator a metered wallet over a stubChain
// (PSBT payouts, one confirmation credits a deposit) on the world's clock.
func withMeteredPayments(t *testing.T, w *world, cfg Payments) *stubChain {
	t.Helper()
	chain := newStubChain()
	dir := t.TempDir()
	wdir := filepath.Join(dir, WalletDir)
	cfg.Passphrase = []byte("test passphrase")
	cfg.KDF = vault.KDFParams{Time: 1, MemoryK: 64, Threads: 1}
	cfg.PSBT = true
	if err := wallet.CreateSeed(wdir, cfg.Passphrase, "regtest", cfg.KDF); err != nil {
		t.Fatal(err)
	}
	ww, err := wallet.Open(wallet.Config{
		Dir: wdir, Passphrase: cfg.Passphrase, Network: "regtest", Chain: chain, MinConf: 1,
		GracePeriod: cfg.EscrowGrace, PayoutThreshold: cfg.PayoutThreshold, RunwayPeriods: cfg.RunwayPeriods,
		Logger: w.c.log, Now: w.now,
	})
	if err != nil {
		t.Fatal(err)
	}
	pay := &payments{cfg: cfg, log: w.c.log, w: ww, psbtDir: filepath.Join(dir, PayoutsDir), released: map[string]bool{}}
	t.Cleanup(func() { pay.close() })
	if err := os.MkdirAll(pay.psbtDir, 0o700); err != nil {
		t.Fatal(err)
	}
	w.c.pay = pay
	return chain
}

// deposit pays sat to acct's deposit address in a new block and lets the
// wallet see it.
func (c *stubChain) deposit(t *testing.T, ww *wallet.Wallet, acct fnet.AccountID, sat int64) {
	t.Helper()
	addr, err := ww.DepositAddress(fnet.NodeID(acct).String())
	if err != nil {
		t.Fatal(err)
	}
	dec, err := btcutil.DecodeAddress(addr, ww.Network())
	if err != nil {
		t.Fatal(err)
	}
	script, _ := txscript.PayToAddrScript(dec)
	c.mu.Lock()
	c.n++
	var from chainhash.Hash
	binary.BigEndian.PutUint64(from[:], c.n)
	from[31] = 0xee
	c.mu.Unlock()
	tx := wire.NewMsgTx(2)
	tx.AddTxIn(wire.NewTxIn(wire.NewOutPoint(&from, 0), nil, nil))
	tx.AddTxOut(wire.NewTxOut(sat, script))
	c.SendRawTransaction(tx, false)
	c.mine()
	if _, err := ww.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// payTo registers node i again at price with a regtest payout address.
func (w *world) payTo(i int, price uint64) string {
	w.t.Helper()
	a, err := btcutil.NewAddressPubKeyHash([]byte(strings.Repeat(string(rune('a'+i)), 20)), &chaincfg.RegressionNetParams)
	if err != nil {
		w.t.Fatal(err)
	}
	addr := a.EncodeAddress()
	id := w.ids[i]
	if _, err := w.c.Register(fnet.WithRemoteIP(context.Background(), w.from[i]), id.ID(), &fnet.RegisterRequest{
		Node: id.ID(), Address: w.addrs[i], Capacity: 1 << 30, Price: price, PayoutAddress: addr, Network: "regtest",
	}); err != nil {
		w.t.Fatal(err)
	}
	return addr
}

// meteredWorld is five nodes at price (sat per GiB-month) with regtest
// payout addresses, under a metered wallet; it returns the chain and each
// node's payout address.
func meteredWorld(t *testing.T, cfg Payments, price uint64) (*world, *stubChain, map[string]string) {
	t.Helper()
	w := newWorld(t, 5)
	w.c.cfg.MaxPrice = price
	chain := withMeteredPayments(t, w, cfg)
	addrs := map[string]string{}
	for i := range w.ids {
		addrs[w.ids[i].ID().String()] = w.payTo(i, price)
	}
	return w, chain, addrs
}

// meteredWorldRegisteredBefore is meteredWorld whose nodes registered
// their payout addresses before the mediator kept a wallet: the wallet
// learns them from the settlement input only.
func meteredWorldRegisteredBefore(t *testing.T, cfg Payments, price uint64) (*world, *stubChain, map[string]string) {
	t.Helper()
	w := newWorld(t, 5)
	w.c.cfg.MaxPrice = price
	w.c.cfg.Network = "regtest"
	addrs := map[string]string{}
	for i := range w.ids {
		addrs[w.ids[i].ID().String()] = w.payTo(i, price)
	}
	return w, withMeteredPayments(t, w, cfg), addrs
}

func mustSettle(t *testing.T, w *world) SettleResult {
	t.Helper()
	res, err := w.c.settle(context.Background())
	if err != nil {
		t.Fatalf("settle: %v", err)
	}
	return res
}

// TestMeteredSettlementPaysEachNodeOnce: with clients paying, a settled
// period takes what each node earned from the account's escrow (less the
// mediator's fee) and pays every node its balance, once, to its own payout
// address; settling again pays nothing more; a payout that finds no
// spendable coins (the first PSBT holds them until it is signed) waits
// without failing the settlement. The nodes registered before the
// mediator kept a wallet: their addresses come from their node records.
func TestMeteredSettlementPaysEachNodeOnce(t *testing.T) {
	const price = 1e14 // sat per GiB-month: a 32 KiB piece earns some 70 000 sat a minute
	w, chain, addrs := meteredWorldRegisteredBefore(t, Payments{PayoutThreshold: 1000, FeeBPS: 1000}, price)
	ww := w.c.pay.w
	ctx := context.Background()
	acct := w.account()
	escrow := wallet.EscrowAccount(fnet.NodeID(acct).String())

	chain.deposit(t, ww, acct, 5_000_000)
	if b, _ := ww.Balance(escrow); b != 5_000_000 {
		t.Fatalf("escrow after the deposit: %d", b)
	}
	w.storeSegment(acct, 64<<10)
	w.nextRound()
	res := mustSettle(t, w)
	if len(res.Reports) != 1 {
		t.Fatalf("%d reports for one period", len(res.Reports))
	}
	rep := res.Reports[0]
	if rep.Unmetered {
		t.Fatal("a metered mediator settled the period unmetered: nothing charged to the clients")
	}
	earned := map[string]int64{}
	var charged, fees int64
	for _, l := range rep.Lines {
		if !l.Passed || l.Charged == 0 || l.Earned <= 0 {
			t.Fatalf("line %+v: the node held its piece and should earn", l)
		}
		if l.Fee != l.Charged/10 {
			t.Fatalf("line %+v: fee %d, want 10 %% of %d", l, l.Fee, l.Charged)
		}
		earned[l.Node] += l.Earned
		charged += l.Charged
		fees += l.Fee
	}
	if len(earned) != 5 {
		t.Fatalf("%d nodes earned, want 5", len(earned))
	}
	if b, _ := ww.Balance(escrow); b != 5_000_000-charged {
		t.Fatalf("escrow %d after a period that charged %d, want %d", b, charged, 5_000_000-charged)
	}
	if b, _ := ww.Balance(wallet.AcctFeesMediator); b != fees {
		t.Fatalf("mediator fees %d, the lines say %d", b, fees)
	}

	po := res.Payout
	if po == nil {
		t.Fatal("no payout although every node earned more than the threshold")
	}
	if po.State != wallet.PayoutPSBT || po.PSBTFile == "" {
		t.Fatalf("payout %+v: want a PSBT file", po)
	}
	if _, err := os.Stat(po.PSBTFile); err != nil {
		t.Fatalf("payout file: %v", err)
	}
	paid := map[string]int64{}
	for _, o := range po.Outputs {
		if o.Address != addrs[o.Node] {
			t.Fatalf("node %s paid to %q, its payout address is %q", o.Node, o.Address, addrs[o.Node])
		}
		paid[o.Node] += o.Debit
	}
	for n, e := range earned {
		if paid[n] != e {
			t.Fatalf("node %s earned %d, the payout takes %d", n, e, paid[n])
		}
		if b, _ := ww.Balance(wallet.NodeAccount(n)); b != 0 {
			t.Fatalf("node %s still has %d sat after its payout", n, b)
		}
	}

	// Settling again with no new period pays nobody again.
	again := mustSettle(t, w)
	if len(again.Reports) != 0 || again.Payout != nil {
		t.Fatalf("a second settle with no new period: %d reports, payout %+v", len(again.Reports), again.Payout)
	}
	// The next period's earnings find the only coin held by the unsigned
	// PSBT: the payout waits, the settlement goes on.
	w.nextRound()
	next, err := w.c.settle(ctx)
	if err != nil {
		t.Fatalf("settle while the earlier payout awaits its signature: %v", err)
	}
	if len(next.Reports) != 1 || next.Payout != nil {
		t.Fatalf("next period: %d reports, payout %+v; want 1 report and no payout", len(next.Reports), next.Payout)
	}
	if pos, _ := ww.Payouts(); len(pos) != 1 {
		t.Fatalf("%d payouts recorded, want 1", len(pos))
	}
	for n, e := range earned {
		if b, _ := ww.Balance(wallet.NodeAccount(n)); b <= 0 || b > e+e/10 {
			t.Fatalf("node %s: balance %d after one more period (earned %d a period)", n, b, e)
		}
	}
	if err := ww.CheckLedger(); err != nil {
		t.Fatal(err)
	}
}

// TestMeteredPlacementNeedsEscrow: a metered mediator refuses placements
// without escrow, saying why (nothing deposited; below the runway at the
// current charge; delinquent), and bounds uncommitted placements by what
// the escrow pays for one period.
func TestMeteredPlacementNeedsEscrow(t *testing.T) {
	const price = 1e14
	w, chain, _ := meteredWorld(t, Payments{PayoutThreshold: 1e6, EscrowGrace: 1e12}, price)
	ww := w.c.pay.w
	ctx := context.Background()
	acct := w.account()
	refused := func(want string) {
		t.Helper()
		err := w.c.canPlace(acct)
		if !errors.Is(err, ErrNoEscrow) || !strings.Contains(err.Error(), want) {
			t.Fatalf("placement refused with %v, want ErrNoEscrow saying %q", err, want)
		}
		if _, err := w.c.Place(ctx, acct, &fnet.PlacementRequest{}); !errors.Is(err, ErrNoEscrow) {
			t.Fatalf("Place: %v, want ErrNoEscrow", err)
		}
	}
	refused("escrow 0 sat, 0 sat awaiting confirmations")
	if b, err := w.c.escrowBudget(acct); err != nil || b != 0 {
		t.Fatalf("escrow budget before a deposit: %d, %v", b, err)
	}

	chain.deposit(t, ww, acct, 400_000)
	if err := w.c.canPlace(acct); err != nil {
		t.Fatalf("placement with escrow and nothing charged yet: %v", err)
	}
	if b, err := w.c.escrowBudget(acct); err != nil || b != 400_000 {
		t.Fatalf("escrow budget %d, %v; want the escrow, 400000", b, err)
	}
	// Two uncommitted placements of some 350 000 sat a period each: the
	// first always, the second not on an escrow of 400 000.
	pl, stored := w.placeAndUpload(acct, 64<<10, 1)
	if _, err := w.c.Place(ctx, acct, placementFor(t, w, 64<<10, 2)); !errors.Is(err, ErrAccountQuota) {
		t.Fatalf("a second uncommitted placement beyond the escrow: %v, want ErrAccountQuota", err)
	}
	if err := w.c.Commit(ctx, acct, &fnet.CommitRequest{Segment: pl.Segment, Pieces: stored}); err != nil {
		t.Fatal(err)
	}

	// One period charges about 350 000: 50 000 left, under the runway.
	w.nextRound()
	mustSettle(t, w)
	st, _ := ww.AccountStatus(fnet.NodeID(acct).String())
	if st.Delinquent || st.Escrow <= 0 || st.Escrow >= st.Needed {
		t.Fatalf("status after one period %+v: want escrow left below the runway, not delinquent", st)
	}
	refused(fmt.Sprintf("escrow %d sat, new data needs %d sat (the runway at the current charge)", st.Escrow, st.Needed))

	// The next period's charge is more than is left: delinquent.
	w.nextRound()
	mustSettle(t, w)
	if st, _ = ww.AccountStatus(fnet.NodeID(acct).String()); !st.Delinquent {
		t.Fatalf("status after the escrow ran out %+v: want delinquent", st)
	}
	refused("its escrow ran out")
}

// placementFor is a placement request for a segment of size bytes made
// from seed, for the world's scheme.
func placementFor(t *testing.T, w *world, size int, seed byte) *fnet.PlacementRequest {
	t.Helper()
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i*13) ^ seed
	}
	pieces, ids := encodeFor(t, w, data)
	return &fnet.PlacementRequest{PieceSize: uint64(len(pieces[0])), Pieces: ids}
}

// TestDelinquentSegmentsReleasedAfterGrace: an account whose escrow ran
// out keeps its segments for the grace period and loses them at its end,
// once; another account's segments stay. Paid up and run out again, its
// new segments are released again after a new grace period.
func TestDelinquentSegmentsReleasedAfterGrace(t *testing.T) {
	const price = 1e14
	const grace = 3 * 60e9 // three periods of a minute
	w, chain, _ := meteredWorld(t, Payments{PayoutThreshold: 1e9, EscrowGrace: grace}, price)
	ww := w.c.pay.w
	rich, poor := w.account(), w.account()
	chain.deposit(t, ww, rich, 50_000_000)
	chain.deposit(t, ww, poor, 1_000_000)
	richSeg, _ := w.storeSegment(rich, 64<<10)
	var poorSegs []SegmentID
	for range 2 {
		id, _ := w.storeSegment(poor, 64<<10)
		poorSegs = append(poorSegs, id)
	}
	present := func(id SegmentID) bool {
		t.Helper()
		_, err := w.store.GetSegment(context.Background(), id)
		if err != nil && !errors.Is(err, ErrNotFound) {
			t.Fatal(err)
		}
		return err == nil
	}
	// runOut settles rounds until poor is delinquent, then until its grace
	// ends: its segments stay to the last round of the grace and go at the
	// first after it, once.
	runOut := func(segs []SegmentID) {
		t.Helper()
		var since, releaseAt int64
		for r := 0; ; r++ {
			if r > 20 {
				t.Fatal("the poor account never ran out")
			}
			w.nextRound()
			if res := mustSettle(t, w); res.Released != 0 {
				t.Fatalf("released %d segments before any grace ended", res.Released)
			}
			st, _ := ww.AccountStatus(fnet.NodeID(poor).String())
			if st.Delinquent {
				since, releaseAt = st.DelinquentSince.UnixNano(), st.ReleaseAt.UnixNano()
				break
			}
		}
		if releaseAt-since != grace {
			t.Fatalf("release at %d, %d after delinquency, want the grace %d", releaseAt, releaseAt-since, int64(grace))
		}
		for {
			w.nextRound()
			res := mustSettle(t, w)
			if w.now().UnixNano() < releaseAt {
				if res.Released != 0 {
					t.Fatalf("released %d segments at %v, before the grace ended at %v", res.Released, w.now(), releaseAt)
				}
				for _, id := range segs {
					if !present(id) {
						t.Fatalf("segment %s released during the grace", id)
					}
				}
				continue
			}
			if res.Released != len(segs) {
				t.Fatalf("grace over: %d segments released, want the delinquent account's %d", res.Released, len(segs))
			}
			break
		}
		for _, id := range segs {
			if present(id) {
				t.Fatalf("segment %s of the delinquent account kept after its grace", id)
			}
		}
		if !present(richSeg) {
			t.Fatal("the paying account's segment was released")
		}
		if res := mustSettle(t, w); res.Released != 0 {
			t.Fatalf("released %d segments again", res.Released)
		}
		w.nextRound()
		if res := mustSettle(t, w); res.Released != 0 {
			t.Fatalf("released %d segments again a period later", res.Released)
		}
	}
	runOut(poorSegs)

	// Paid up: no longer delinquent; new segments, run out again.
	st, _ := ww.AccountStatus(fnet.NodeID(poor).String())
	chain.deposit(t, ww, poor, st.Needed-st.Debt+1)
	if st, _ = ww.AccountStatus(fnet.NodeID(poor).String()); st.Delinquent {
		t.Fatalf("status after paying up %+v: still delinquent", st)
	}
	mustSettle(t, w)
	var again []SegmentID
	for range 2 {
		id, _ := w.storeSegment(poor, 64<<10)
		again = append(again, id)
	}
	runOut(again)
}

// TestControlPaymentsPages: the control socket's /ledger pages the journal
// (limit 0 or above 10 000 means 10 000) and /payouts answers a JSON list,
// empty rather than null; without a wallet both answer 404.
func TestControlPaymentsPages(t *testing.T) {
	w := newWorld(t, 0)
	get := func(p *Peer, path string) (int, []byte) {
		t.Helper()
		mux := http.NewServeMux()
		p.controlPayments(mux)
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code, rec.Body.Bytes()
	}
	peer := &Peer{core: w.c}
	if peer.Wallet() != nil {
		t.Fatal("a wallet on a mediator without payments")
	}
	for _, path := range []string{"/ledger", "/payouts"} {
		if code, body := get(peer, path); code != http.StatusNotFound || !strings.Contains(string(body), "no wallet") {
			t.Fatalf("%s without a wallet: %d %s, want 404 saying there is no wallet", path, code, body)
		}
	}

	chain := withMeteredPayments(t, w, Payments{})
	if peer.Wallet() != w.c.pay.w {
		t.Fatal("Peer.Wallet is not the mediator's wallet")
	}
	for range 3 {
		chain.deposit(t, w.c.pay.w, w.account(), 100_000)
	}
	all, _ := w.c.pay.w.Journal(0, 1<<20)
	if len(all) < 3 {
		t.Fatalf("%d journal entries after 3 deposits", len(all))
	}
	for _, tc := range []struct {
		query string
		want  int
	}{{"", len(all)}, {"?limit=0", len(all)}, {"?limit=-1", len(all)}, {"?limit=2", 2}, {"?limit=10001", len(all)}, {"?from=1&limit=1", 1}} {
		code, body := get(peer, "/ledger"+tc.query)
		var rep LedgerReport
		if code != http.StatusOK || json.Unmarshal(body, &rep) != nil {
			t.Fatalf("/ledger%s: %d %s", tc.query, code, body)
		}
		if len(rep.Entries) != tc.want || !rep.Metered || rep.OnChain != 300_000 {
			t.Fatalf("/ledger%s: %d entries (want %d), metered %v, on chain %d", tc.query, len(rep.Entries), tc.want, rep.Metered, rep.OnChain)
		}
	}
	code, body := get(peer, "/payouts")
	if code != http.StatusOK || strings.TrimSpace(string(body)) != "[]" {
		t.Fatalf("/payouts with none: %d %q, want 200 []", code, body)
	}
}

// encodeFor erasure-codes data with the world's scheme; it returns the
// pieces and their ids.
func encodeFor(t *testing.T, w *world, data []byte) ([][]byte, []challenge.PieceID) {
	t.Helper()
	coder, err := erasure.New(w.c.cfg.Scheme)
	if err != nil {
		t.Fatal(err)
	}
	pieces, err := coder.Encode(data)
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]challenge.PieceID, len(pieces))
	for i, p := range pieces {
		ids[i], _ = challenge.ComputeID(p)
	}
	return pieces, ids
}

// TestEscrowBudgetAtItsEdge: an account's uncommitted placements may cost
// for one period exactly its escrow, and not one satoshi more; each
// reserved piece costs its pro-rated price rounded up.
func TestEscrowBudgetAtItsEdge(t *testing.T) {
	const price = 1e14
	w, chain, _ := meteredWorld(t, Payments{PayoutThreshold: 1e6}, price)
	ww := w.c.pay.w
	ctx := context.Background()
	first := placementFor(t, w, 64<<10, 1)
	sat, _ := wallet.ProRate(int64(first.PieceSize), price, w.c.cfg.Period, nil)
	cost := int64(w.c.cfg.Scheme.N) * (sat + 1)
	for _, tc := range []struct {
		escrow int64
		ok     bool
	}{{2 * cost, true}, {2*cost - 1, false}} {
		acct := w.account()
		chain.deposit(t, ww, acct, tc.escrow)
		if _, err := w.c.Place(ctx, acct, first); err != nil {
			t.Fatalf("first placement on an escrow of %d: %v", tc.escrow, err)
		}
		_, err := w.c.Place(ctx, acct, placementFor(t, w, 64<<10, 2))
		if tc.ok && err != nil {
			t.Fatalf("two placements costing %d sat a period on an escrow of %d: %v", 2*cost, tc.escrow, err)
		}
		if !tc.ok && !errors.Is(err, ErrAccountQuota) {
			t.Fatalf("two placements costing %d sat a period on an escrow of %d: %v, want ErrAccountQuota", 2*cost, tc.escrow, err)
		}
	}
}

// TestMeteredPayoutBroadcastThroughTheNode: with a bitcoin node and no
// PSBT, a settlement pays the nodes in a transaction broadcast through it.
func TestMeteredPayoutBroadcastThroughTheNode(t *testing.T) {
	const price = 1e14
	w, chain, addrs := meteredWorld(t, Payments{PayoutThreshold: 1000}, price)
	pay := w.c.pay
	pay.cfg.PSBT, pay.cfg.RPC = false, &wallet.RPCConfig{Host: "127.0.0.1:1"}
	// The mediator's own client of the node (never called here: the
	// wallet broadcasts through its Chain, the stub).
	cl, err := rpcclient.New(&rpcclient.ConnConfig{Host: "127.0.0.1:1", HTTPPostMode: true, DisableTLS: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	pay.chain = cl
	acct := w.account()
	chain.deposit(t, pay.w, acct, 5_000_000)
	w.storeSegment(acct, 64<<10)
	w.nextRound()
	res := mustSettle(t, w)
	if res.Payout == nil || res.Payout.State != wallet.PayoutBroadcast || res.Payout.PSBTFile != "" {
		t.Fatalf("payout %+v: want one broadcast through the node", res.Payout)
	}
	chain.mu.Lock()
	sent := len(chain.mempool)
	chain.mu.Unlock()
	if sent != 1 {
		t.Fatalf("%d transactions sent to the node, want the payout", sent)
	}
	for _, o := range res.Payout.Outputs {
		if o.Address != addrs[o.Node] {
			t.Fatalf("node %s paid to %q, want %q", o.Node, o.Address, addrs[o.Node])
		}
	}
	if len(res.Payout.Outputs) != 5 {
		t.Fatalf("%d nodes paid, want 5", len(res.Payout.Outputs))
	}

	// The node refuses the next payout: it is recorded (the watcher sends
	// it again), and the settlement does not fail.
	chain.mine()
	if _, err := pay.w.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	chain.mu.Lock()
	chain.refuse = errors.New("-25: node busy")
	chain.mu.Unlock()
	w.nextRound()
	res, err = w.c.settle(context.Background())
	if err != nil {
		t.Fatalf("settle with the payout refused by the node: %v", err)
	}
	if res.Payout == nil || res.Payout.State != wallet.PayoutSigned || !strings.Contains(res.Payout.LastError, "node busy") {
		t.Fatalf("refused payout %+v: want it recorded, signed, with the node's error", res.Payout)
	}
	if pos, _ := pay.w.Payouts(); len(pos) != 2 {
		t.Fatalf("%d payouts recorded, want 2", len(pos))
	}
}

// TestPaymentsConfigBounds: a fee of exactly wallet.MaxFeeBPS is allowed,
// one basis point more is not; each negative interval is refused.
func TestPaymentsConfigBounds(t *testing.T) {
	base := Payments{Passphrase: []byte("x")}
	at := base
	at.FeeBPS = wallet.MaxFeeBPS
	if err := at.validate(""); err != nil {
		t.Fatalf("fee of exactly %d basis points: %v", wallet.MaxFeeBPS, err)
	}
	at.FeeBPS++
	if err := at.validate(""); !errors.Is(err, ErrConfig) {
		t.Fatalf("fee of %d basis points: %v", at.FeeBPS, err)
	}
	for name, mut := range map[string]func(*Payments){
		"sync interval":  func(p *Payments) { p.SyncInterval = -1 },
		"escrow grace":   func(p *Payments) { p.EscrowGrace = -1 },
		"price notice":   func(p *Payments) { p.PriceNotice = -1 },
		"runway periods": func(p *Payments) { p.RunwayPeriods = -1 },
		"rpc timeout":    func(p *Payments) { p.RPCTimeout = -1 },
	} {
		p := base
		mut(&p)
		if err := p.validate(""); !errors.Is(err, ErrConfig) {
			t.Errorf("negative %s: %v", name, err)
		}
	}
	if err := base.validate(""); err != nil {
		t.Fatalf("zero intervals (the defaults): %v", err)
	}
}
