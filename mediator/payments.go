package mediator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	stdnet "net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/btcsuite/btcd/rpcclient"

	fnet "github.com/fincrypt/fincrypt/net"
	"github.com/fincrypt/fincrypt/vault"
	"github.com/fincrypt/fincrypt/wallet"
)

// Files of the payments in the mediator's directory.
const (
	// WalletDir holds the wallet's encrypted seed and its ledger
	// (docs/WALLET.md).
	WalletDir = "wallet"
	// PayoutsDir receives unsigned payouts (payout-<id>.psbt) when the
	// operator signs offline (Payments.PSBT).
	PayoutsDir = "payouts"
)

// CounterSettled is the start (unix nanoseconds) of the last period
// settled into the wallet's ledger.
const CounterSettled = "settled_through_unix_nano"

// Defaults of Payments.
const (
	DefaultSyncInterval = 30 * time.Second
)

// ErrNoEscrow refuses a placement for an account whose escrow is empty, in
// debt or delinquent, on a mediator with payments.
var ErrNoEscrow = fmt.Errorf("account has no escrow: deposit to its address (fincrypt wallet deposit-address) (%w)", fnet.ErrUnauthorized)

// ErrNoPayments answers wallet requests on a mediator without payments.
var ErrNoPayments = fmt.Errorf("this mediator runs a private network without payments (%w)", fnet.ErrUnsupported)

// Payments configures the mediator's wallet (package wallet): escrow per
// client account, the ledger of what each node earned, payouts.
//
//   - No Passphrase: no wallet at all; period records are kept but no
//     ledger.
//   - Passphrase, no RPC and not PSBT: unmetered. The ledger records what
//     each node earned (unmetered:<node>), placement needs no escrow,
//     nothing is paid.
//   - Passphrase and RPC: metered. Deposits are watched on the node,
//     placement needs escrow, each period is charged to the clients and
//     balances above PayoutThreshold are paid in one batched transaction
//     broadcast through the node (or written as PSBT files with PSBT).
//   - Passphrase and PSBT without RPC: metered, but deposits are only what
//     earlier runs with a node saw; payouts are PSBT files.
type Payments struct {
	// Passphrase decrypts the wallet seed in DIR/wallet (created on first
	// start for Config.Network, regtest if unset).
	Passphrase []byte
	// KDF is the Argon2id cost of a new seed file (zero: the vault's
	// default). Tests use a cheap one.
	KDF vault.KDFParams
	// RPC is the Bitcoin node (btcd or bitcoind); nil: no node.
	RPC *wallet.RPCConfig
	// PSBT writes payouts as unsigned PSBTs into DIR/payouts instead of
	// broadcasting them.
	PSBT bool
	// MinConf confirmations credit a deposit and confirm a payout (default 6).
	MinConf int
	// PayoutThreshold: node balances at or above it are paid (sat; default
	// 10 000).
	PayoutThreshold int64
	// FeeRate of payout transactions, sat/vB (default 2).
	FeeRate int64
	// FeeBPS is the mediator's fee in basis points of what clients pay.
	FeeBPS uint32
	// EscrowGrace is how long a delinquent account keeps its segments
	// before they are released (default 7 days).
	EscrowGrace time.Duration
	// SyncInterval is how often the chain is polled (default 30s).
	SyncInterval time.Duration
	// StartHeight is the first block a new wallet scans.
	StartHeight int64
	// PriceNotice is how long after a node raises its price the pieces
	// it already holds are charged at the new price (default
	// DefaultPriceNotice; prices.go).
	PriceNotice time.Duration
	// RPCTimeout bounds each call to the bitcoin node (default
	// wallet.DefaultRPCTimeout).
	RPCTimeout time.Duration
	// RunwayPeriods is the escrow, in periods at the account's current
	// charge, that placement needs and that a deposit must leave after
	// paying debt to end delinquency (default DefaultRunwayPeriods).
	RunwayPeriods int
}

// Enabled reports whether the mediator keeps a wallet.
func (p Payments) Enabled() bool { return len(p.Passphrase) > 0 }

// Metered reports whether clients pay (a node is connected, or payouts go
// to PSBT files).
func (p Payments) Metered() bool { return p.Enabled() && (p.RPC != nil || p.PSBT) }

func (p Payments) validate(network string) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: payments: "+format, append([]any{ErrConfig}, args...)...)
	}
	if !p.Enabled() {
		if p.RPC != nil || p.PSBT {
			return bad("a bitcoin node or PSBT payouts need the wallet passphrase")
		}
		return nil
	}
	if p.Metered() && network == "" {
		return bad("payments need the bitcoin network (--network)")
	}
	if network != "" {
		if _, err := wallet.ParseNetwork(network); err != nil {
			return bad("%v", err)
		}
	}
	if p.FeeBPS > wallet.MaxFeeBPS {
		return bad("fee %d basis points above %d", p.FeeBPS, wallet.MaxFeeBPS)
	}
	if p.SyncInterval < 0 || p.EscrowGrace < 0 || p.PriceNotice < 0 || p.RunwayPeriods < 0 || p.RPCTimeout < 0 {
		return bad("negative interval")
	}
	return nil
}

// payments is the running wallet side of the mediator.
type payments struct {
	cfg     Payments
	log     *slog.Logger
	w       *wallet.Wallet
	chain   *rpcclient.Client
	psbtDir string
	// mu serialises settlement, release and payout.
	mu sync.Mutex
	// released holds the accounts past their grace period whose segments
	// this process released already: a delinquent account gets no new
	// placements, so the contracts need not be scanned for it again.
	released map[string]bool
}

// openPayments opens (creating the seed on first use) the wallet in
// dir/wallet and connects the Bitcoin node if one is configured.
func openPayments(dir, network string, cfg Payments, log *slog.Logger) (_ *payments, err error) {
	if cfg.SyncInterval == 0 {
		cfg.SyncInterval = DefaultSyncInterval
	}
	p := &payments{cfg: cfg, log: log, psbtDir: filepath.Join(dir, PayoutsDir), released: map[string]bool{}}
	defer func() {
		if err != nil {
			p.close()
		}
	}()
	wdir := filepath.Join(dir, WalletDir)
	if _, err := wallet.ReadSeedFile(wdir); errors.Is(err, wallet.ErrNoSeed) {
		net := network
		if net == "" {
			net = "regtest"
		}
		if err := wallet.CreateSeed(wdir, cfg.Passphrase, net, cfg.KDF); err != nil {
			return nil, fmt.Errorf("wallet seed: %w", err)
		}
		log.Info("wallet seed created; back up its directory", "dir", wdir, "network", net)
	} else if err != nil {
		return nil, fmt.Errorf("wallet seed: %w", err)
	}
	wc := wallet.Config{
		Dir: wdir, Passphrase: cfg.Passphrase, Network: network, MinConf: cfg.MinConf,
		StartHeight: cfg.StartHeight, GracePeriod: cfg.EscrowGrace, PayoutThreshold: cfg.PayoutThreshold,
		FeeRate: cfg.FeeRate, Logger: log, RunwayPeriods: cfg.RunwayPeriods,
	}
	if cfg.RPC != nil {
		if p.chain, err = wallet.DialRPC(*cfg.RPC); err != nil {
			return nil, err
		}
		wc.Chain = wallet.WithTimeout(p.chain, cfg.RPCTimeout)
	}
	if p.w, err = wallet.Open(wc); err != nil {
		return nil, fmt.Errorf("wallet: %w", err)
	}
	if cfg.PSBT {
		if err := os.MkdirAll(p.psbtDir, 0o700); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func (p *payments) metered() bool { return p != nil && p.cfg.Metered() }

func (p *payments) close() error {
	var err error
	if p.w != nil {
		err = p.w.Close()
	}
	if p.chain != nil {
		p.chain.Shutdown()
	}
	return err
}

// watch follows the chain (deposits, reorganisations, payout
// confirmations) until ctx ends.
func (p *payments) watch(ctx context.Context) error {
	err := p.w.Run(ctx, p.cfg.SyncInterval)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// checkPayout refuses a payout address that is not of the wallet's network
// when payments are on; without them a bad address only costs the node its
// pay (it is recorded, and ignored by settlement).
func (c *core) checkPayout(node fnet.NodeID, addr string) error {
	p := c.pay
	if p == nil {
		return nil
	}
	if _, err := wallet.CheckPayoutAddress(addr, p.w.Network()); err != nil {
		if p.metered() {
			return fmt.Errorf("%w: payout address: %v", fnet.ErrBadRequest, err)
		}
		return nil
	}
	return p.w.SetPayoutAddress(node.String(), addr)
}

// canPlace refuses new placements for an account without escrow when
// clients pay.
func (c *core) canPlace(acct fnet.AccountID) error {
	if !c.pay.metered() {
		return nil
	}
	st, err := c.pay.w.AccountStatus(fnet.NodeID(acct).String())
	if err != nil {
		return err
	}
	if st.CanPlace() {
		return nil
	}
	switch {
	case st.Debt < 0:
		return fmt.Errorf("%w: it owes %d sat after a reorganisation", ErrNoEscrow, -st.Debt)
	case st.Delinquent:
		return fmt.Errorf("%w: its escrow ran out; segments are released after %s unless a deposit brings the escrow to %d sat", ErrNoEscrow, st.ReleaseAt.UTC().Format(time.RFC3339), st.Needed)
	case st.Escrow > 0:
		return fmt.Errorf("%w: escrow %d sat, new data needs %d sat (the runway at the current charge)", ErrNoEscrow, st.Escrow, st.Needed)
	default:
		return fmt.Errorf("%w: escrow %d sat, %d sat awaiting confirmations", ErrNoEscrow, st.Escrow, st.Pending)
	}
}

// escrowBudget is what an account's uncommitted placements may cost for
// one period: its confirmed escrow when payments are metered, else -1 (no
// bound but the byte quota).
func (c *core) escrowBudget(acct fnet.AccountID) (int64, error) {
	if !c.pay.metered() {
		return -1, nil
	}
	st, err := c.pay.w.AccountStatus(fnet.NodeID(acct).String())
	if err != nil {
		return 0, err
	}
	return max(st.Escrow, 0), nil
}

// depositAddress answers DepositAddressRequest.
func (c *core) depositAddress(ctx context.Context, acct fnet.AccountID) (*fnet.DepositAddressReply, error) {
	if !c.pay.metered() {
		return nil, ErrNoPayments
	}
	if err := c.requireAccount(ctx, acct); err != nil {
		return nil, err
	}
	addr, err := c.pay.w.DepositAddress(fnet.NodeID(acct).String())
	if err != nil {
		return nil, fmt.Errorf("deposit address: %w", err)
	}
	minConf := c.pay.cfg.MinConf
	if minConf == 0 {
		minConf = wallet.DefaultMinConf
	}
	return &fnet.DepositAddressReply{Address: addr, Network: wallet.NetworkName(c.pay.w.Network()), MinConf: uint32(minConf)}, nil
}

// balance answers BalanceRequest.
func (c *core) balance(ctx context.Context, acct fnet.AccountID) (*fnet.BalanceReply, error) {
	if !c.pay.metered() {
		return &fnet.BalanceReply{Period: c.cfg.Period, CanPlace: true, PeriodsLeft: -1}, nil
	}
	if err := c.requireAccount(ctx, acct); err != nil {
		return nil, err
	}
	st, err := c.pay.w.AccountStatus(fnet.NodeID(acct).String())
	if err != nil {
		return nil, fmt.Errorf("balance: %w", err)
	}
	notice, err := c.accountNotices(ctx, acct)
	if err != nil {
		return nil, fmt.Errorf("balance: price notices: %w", err)
	}
	rep := &fnet.BalanceReply{
		Metered: true, Network: wallet.NetworkName(c.pay.w.Network()), DepositAddress: st.DepositAddress,
		Escrow: st.Escrow, Debt: st.Debt, Pending: st.Pending, LastCharge: st.LastCharge, PeriodsLeft: st.PeriodsLeft,
		Period: c.cfg.Period, Delinquent: st.Delinquent, CanPlace: st.CanPlace(), Low: st.LowEscrow(c.cfg.Period),
		ReleaseAt: st.ReleaseAt, NoticeCharge: notice.Charge, NoticeAt: notice.At, Needed: st.Needed,
	}
	return rep, c.fillTerms(ctx, acct, rep, st.DelinquentSince)
}

// SettleResult summarises one settlement step.
type SettleResult struct {
	Reports  []*wallet.PeriodReport // the periods settled now
	Released int                    // segments of delinquent accounts released
	Payout   *wallet.Payout         // recorded now (nil: nobody due, or no payments)
}

// settle turns every challenge period recorded since the last settlement
// into a wallet.PeriodInput and settles it (in order; each is idempotent,
// so a crash between Settle and the stored marker settles nothing twice),
// releases the segments of accounts past their grace period, and pays out
// the balances above the threshold.
func (c *core) settle(ctx context.Context) (SettleResult, error) {
	var res SettleResult
	p := c.pay
	if p == nil {
		return res, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	through, err := c.store.Counter(ctx, CounterSettled)
	if err != nil {
		return res, err
	}
	// Only the periods whose round completed: an interrupted round is run
	// again for its period (schedule.go) before its period is settled.
	done, err := c.store.Counter(ctx, CounterRoundDone)
	if err != nil {
		return res, err
	}
	recs, err := c.store.PeriodRecords(ctx, time.Unix(0, through+1), time.Unix(0, min(done, c.now().UnixNano())+1))
	if err != nil {
		return res, err
	}
	byPeriod := map[int64][]PeriodRecord{}
	var periods []int64
	for _, r := range recs {
		k := r.Period.UnixNano()
		if k <= through {
			continue
		}
		if _, ok := byPeriod[k]; !ok {
			periods = append(periods, k)
		}
		byPeriod[k] = append(byPeriod[k], r)
	}
	sort.Slice(periods, func(i, j int) bool { return periods[i] < periods[j] })
	addrs := map[fnet.NodeID]string{}
	for _, k := range periods {
		in, err := c.periodInput(ctx, k, byPeriod[k], addrs)
		if err != nil {
			return res, err
		}
		rep, err := p.w.Settle(in)
		if err != nil {
			return res, fmt.Errorf("settle period %d: %w", k, err)
		}
		if _, err := c.store.AddCounter(ctx, CounterSettled, k-through); err != nil {
			return res, err
		}
		through = k
		if !rep.Repeated {
			res.Reports = append(res.Reports, rep)
		}
		if len(rep.Delinquent) > 0 {
			c.log.Warn("escrow ran out", "period", k, "accounts", rep.Delinquent)
		}
	}
	if !p.metered() {
		return res, nil
	}
	if res.Released, err = c.releaseDelinquent(ctx); err != nil {
		return res, err
	}
	res.Payout, err = p.payout(ctx)
	return res, err
}

// periodInput builds the settlement input of one period from its records:
// a node earns for an account's bytes only if it failed no challenge on
// them (an unanswered challenge counts as failed).
func (c *core) periodInput(ctx context.Context, period int64, recs []PeriodRecord, addrs map[fnet.NodeID]string) (wallet.PeriodInput, error) {
	in := wallet.PeriodInput{
		Period: uint64(period), End: time.Unix(0, period).Add(c.cfg.Period), Length: c.cfg.Period,
		FeeBPS: c.pay.cfg.FeeBPS, Unmetered: !c.pay.metered(),
	}
	terms := map[fnet.NodeID]int{}
	for _, r := range recs {
		if _, ok := terms[r.Node]; !ok {
			addr, ok := addrs[r.Node]
			if !ok {
				n, err := c.store.GetNode(ctx, r.Node)
				if err != nil && !errors.Is(err, ErrNotFound) {
					return in, err
				}
				if n != nil {
					if _, err := wallet.CheckPayoutAddress(n.PayoutAddress, c.pay.w.Network()); err == nil {
						addr = n.PayoutAddress
					}
				}
				addrs[r.Node] = addr
			}
			terms[r.Node] = len(in.Nodes)
			in.Nodes = append(in.Nodes, wallet.NodeTerms{ID: r.Node.String(), PriceSatPerGiBMonth: int64(min(r.Price, 21e14)), PayoutAddress: addr})
		}
		price := int64(min(r.Price, 21e14)) // the contract price of these bytes
		in.Holdings = append(in.Holdings, wallet.Holding{
			Node: r.Node.String(), Account: fnet.NodeID(r.Account).String(), Bytes: int64(r.Bytes), Passed: r.Failed == 0,
			Price: &price,
		})
	}
	return in, nil
}

// releaseDelinquent releases the segments of every account whose grace
// period after its escrow ran out has ended.
func (c *core) releaseDelinquent(ctx context.Context) (int, error) {
	gone, err := c.pay.w.Releasable(c.now())
	if err != nil {
		return 0, err
	}
	still := map[string]bool{}
	accts := map[fnet.AccountID]bool{}
	for _, a := range gone {
		still[a] = true
		id, err := fnet.ParseNodeID(a)
		if err != nil || c.pay.released[a] {
			continue // not an account of this mediator, or done already
		}
		accts[fnet.AccountID(id)] = true
	}
	for a := range c.pay.released {
		if !still[a] { // paid up again
			delete(c.pay.released, a)
		}
	}
	if len(accts) == 0 {
		return 0, nil
	}
	var segs []*Segment
	if err := c.store.Segments(ctx, SegmentID{}, 0, func(s *Segment) error {
		if accts[s.Account] {
			segs = append(segs, s)
		}
		return nil
	}); err != nil {
		return 0, err
	}
	n := 0
	for _, s := range segs {
		if err := c.Release(ctx, s.Account, s.ID); err != nil && !errors.Is(err, ErrNoSegment) {
			return n, err
		}
		n++
	}
	for a := range accts {
		c.pay.released[fnet.NodeID(a).String()] = true
	}
	if n > 0 {
		c.log.Warn("released the segments of delinquent accounts after their grace period", "accounts", len(accts), "segments", n)
	}
	return n, nil
}

// payout pays the due balances: broadcast through the node, or as a PSBT
// file for the operator.
func (p *payments) payout(ctx context.Context) (*wallet.Payout, error) {
	var (
		po  *wallet.Payout
		err error
	)
	switch {
	case p.cfg.PSBT:
		po, err = p.w.WritePayoutPSBT(p.psbtDir)
	case p.chain != nil:
		po, err = p.w.Payout(ctx)
	default:
		return nil, nil
	}
	if errors.Is(err, wallet.ErrInsufficientFunds) {
		p.log.Info("payout waits for confirmed funds", "err", err)
		return nil, nil
	}
	if err != nil && po == nil {
		return nil, fmt.Errorf("payout: %w", err)
	}
	if err != nil {
		// Recorded but not accepted by the node yet: the watcher
		// re-broadcasts it.
		p.log.Warn("payout recorded, broadcast failed; retried on the next sync", "id", po.ID, "txid", po.TxID, "err", err)
	}
	if po != nil {
		p.log.Info("payout", "id", po.ID, "txid", po.TxID, "nodes", len(po.Outputs), "amount", po.Amount, "state", po.State, "psbt", po.PSBTFile)
	}
	return po, nil
}

// Wallet is the mediator's wallet, or nil when it keeps none.
func (p *Peer) Wallet() *wallet.Wallet {
	if p.core.pay == nil {
		return nil
	}
	return p.core.pay.w
}

// Settle settles the challenge periods recorded since the last settlement,
// releases delinquent accounts past their grace period and pays out (the
// scheduler does this after every round; tests and tools call it directly).
func (p *Peer) Settle(ctx context.Context) (SettleResult, error) { return p.core.settle(ctx) }

// LedgerReport is what `fincrypt mediator ledger` shows.
type LedgerReport struct {
	Metered   bool             `json:"metered"`
	Network   string           `json:"network"`
	Balances  map[string]int64 `json:"balances"`
	Entries   []wallet.Entry   `json:"entries"`
	OnChain   int64            `json:"on_chain"`  // the wallet's outputs
	Spendable int64            `json:"spendable"` // confirmed, unreserved
}

// Ledger returns the balances and up to limit journal entries from seq
// from; ErrNoPayments without a wallet.
func (p *Peer) Ledger(from uint64, limit int) (*LedgerReport, error) {
	pay := p.core.pay
	if pay == nil {
		return nil, fmt.Errorf("%w: no wallet passphrase was given", ErrNoPayments)
	}
	bal, err := pay.w.Balances("")
	if err != nil {
		return nil, err
	}
	ent, err := pay.w.Journal(from, limit)
	if err != nil {
		return nil, err
	}
	rep := &LedgerReport{Metered: pay.metered(), Network: wallet.NetworkName(pay.w.Network()), Balances: bal, Entries: ent}
	if rep.OnChain, rep.Spendable, err = pay.w.OnChain(); err != nil {
		return nil, err
	}
	return rep, nil
}

// Payouts lists the payouts, oldest first.
func (p *Peer) Payouts() ([]wallet.Payout, error) {
	pay := p.core.pay
	if pay == nil {
		return nil, fmt.Errorf("%w: no wallet passphrase was given", ErrNoPayments)
	}
	return pay.w.Payouts()
}

// AbandonPayout abandons a conflicted payout (wallet.AbandonPayoutReport):
// its nodes get their balances back, its unspent inputs are released.
// ErrNoPayments without a wallet.
func (p *Peer) AbandonPayout(id uint64) (*wallet.Abandoned, error) {
	pay := p.core.pay
	if pay == nil {
		return nil, fmt.Errorf("%w: no wallet passphrase was given", ErrNoPayments)
	}
	return pay.w.AbandonPayoutReport(id)
}

// abandonRefusal is the JSON body of a refused POST /payouts/{id}/abandon.
type abandonRefusal struct {
	Error string `json:"error"`
	// Kind is "no_payments", "no_such_payout" (both 404) or
	// "not_abandonable" (409, with NotAbandonable).
	Kind           string                      `json:"kind"`
	NotAbandonable *wallet.NotAbandonableError `json:"not_abandonable,omitempty"`
}

// sameNetwork compares network names through wallet.ParseNetwork, so that
// "testnet" and "testnet3" agree.
func sameNetwork(a, b string) bool {
	if a == b {
		return true
	}
	pa, err1 := wallet.ParseNetwork(a)
	pb, err2 := wallet.ParseNetwork(b)
	return err1 == nil && err2 == nil && pa.Name == pb.Name
}

// controlPayments adds the wallet's pages to the control socket:
// GET /ledger?from=SEQ&limit=N (LedgerReport) and GET /payouts
// ([]wallet.Payout). Without a wallet they answer 404 with the reason.
// POST /payouts/{id}/abandon abandons a conflicted payout and answers
// wallet.Abandoned; refused, it answers an abandonRefusal: 404 without a
// wallet or without such a payout, 409 when the payout is not conflicted
// or its conflict is not MinConf deep.
func (p *Peer) controlPayments(mux *http.ServeMux) {
	reply := func(w http.ResponseWriter, v any, err error) {
		if errors.Is(err, ErrNoPayments) {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(v)
	}
	mux.HandleFunc("GET /ledger", func(w http.ResponseWriter, r *http.Request) {
		from, _ := strconv.ParseUint(r.URL.Query().Get("from"), 10, 64)
		limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
		if limit <= 0 || limit > 10_000 {
			limit = 10_000
		}
		rep, err := p.Ledger(from, limit)
		reply(w, rep, err)
	})
	mux.HandleFunc("GET /payouts", func(w http.ResponseWriter, r *http.Request) {
		list, err := p.Payouts()
		if list == nil && err == nil {
			list = []wallet.Payout{}
		}
		reply(w, list, err)
	})
	mux.HandleFunc("POST /payouts/{id}/abandon", func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
		if err != nil {
			http.Error(w, fmt.Sprintf("payout id %q: not a number", r.PathValue("id")), http.StatusBadRequest)
			return
		}
		rep, err := p.AbandonPayout(id)
		var na *wallet.NotAbandonableError
		refuse := func(code int, ref abandonRefusal) {
			ref.Error = err.Error()
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(code)
			json.NewEncoder(w).Encode(ref)
		}
		switch {
		case errors.Is(err, ErrNoPayments):
			refuse(http.StatusNotFound, abandonRefusal{Kind: "no_payments"})
		case errors.Is(err, wallet.ErrNoSuchPayout):
			refuse(http.StatusNotFound, abandonRefusal{Kind: "no_such_payout"})
		case errors.As(err, &na):
			refuse(http.StatusConflict, abandonRefusal{Kind: "not_abandonable", NotAbandonable: na})
		default:
			reply(w, rep, err)
		}
	})
}

// AbandonPayout asks the mediator running in dir to abandon payout id
// (Peer.AbandonPayout). Its refusals are ErrNotRunning, ErrNoPayments,
// wallet.ErrNoSuchPayout and *wallet.NotAbandonableError.
func AbandonPayout(ctx context.Context, dir string, id uint64) (*wallet.Abandoned, error) {
	path := fmt.Sprintf("/payouts/%d/abandon", id)
	resp, body, err := controlDo(ctx, dir, http.MethodPost, path)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusOK {
		rep := &wallet.Abandoned{}
		if err := json.Unmarshal(body, rep); err != nil {
			return nil, fmt.Errorf("mediator %s: %w", path, err)
		}
		return rep, nil
	}
	var ref abandonRefusal
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") || json.Unmarshal(body, &ref) != nil {
		if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed {
			return nil, fmt.Errorf("mediator %s: the running mediator does not know this request (is it an older fincrypt? restart it with this one): %s", path, strings.TrimSpace(string(body)))
		}
		return nil, fmt.Errorf("mediator %s: %s: %s", path, resp.Status, strings.TrimSpace(string(body)))
	}
	switch {
	case ref.Kind == "no_payments":
		return nil, fmt.Errorf("%w: %s", ErrNoPayments, ref.Error)
	case ref.Kind == "no_such_payout":
		return nil, fmt.Errorf("payout %d: %w", id, wallet.ErrNoSuchPayout)
	case ref.Kind == "not_abandonable" && ref.NotAbandonable != nil:
		return nil, ref.NotAbandonable
	}
	return nil, fmt.Errorf("mediator %s: %s: %s", path, resp.Status, ref.Error)
}

// ReadLedger asks the mediator running in dir for its ledger.
func ReadLedger(ctx context.Context, dir string, from uint64, limit int) (*LedgerReport, error) {
	rep := &LedgerReport{}
	return rep, controlGet(ctx, dir, fmt.Sprintf("/ledger?from=%d&limit=%d", from, limit), rep)
}

// ReadPayouts asks the mediator running in dir for its payouts.
func ReadPayouts(ctx context.Context, dir string) ([]wallet.Payout, error) {
	var list []wallet.Payout
	return list, controlGet(ctx, dir, "/payouts", &list)
}

// controlGet GETs path from the control socket in dir and decodes the JSON
// answer into v. A 404 is ErrNoPayments.
func controlGet(ctx context.Context, dir, path string, v any) error {
	resp, body, err := controlDo(ctx, dir, http.MethodGet, path)
	if err != nil {
		return err
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return fmt.Errorf("%w: %s", ErrNoPayments, strings.TrimSpace(string(body)))
	default:
		return fmt.Errorf("mediator %s: %s: %s", path, resp.Status, strings.TrimSpace(string(body)))
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("mediator %s: %w", path, err)
	}
	return nil
}

// controlDo sends a request without a body to the control socket in dir
// and reads the answer; no answer is ErrNotRunning.
func controlDo(ctx context.Context, dir, method, path string) (*http.Response, []byte, error) {
	sock := filepath.Join(dir, ControlSocket)
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (stdnet.Conn, error) {
			var d stdnet.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, method, "http://mediator"+path, nil)
	if err != nil {
		return nil, nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("%w (%s): %v", ErrNotRunning, dir, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return nil, nil, err
	}
	return resp, body, nil
}
