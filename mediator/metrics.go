package mediator

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fincrypt/fincrypt/internal/metrics"
	"github.com/fincrypt/fincrypt/internal/units"
	"github.com/fincrypt/fincrypt/wallet"
)

// RoundRecord is one challenge round (the status page's history).
type RoundRecord struct {
	RoundResult
	Duration time.Duration
}

const roundHistory = 20

// observer keeps the mediator's event metrics: what the store does not
// record (round durations, repair failures, the last scan's queue).
type observer struct {
	roundDur    prometheus.Histogram
	unreachable prometheus.Counter
	repairFail  prometheus.Counter
	unrecov     prometheus.Counter
	scans       prometheus.Counter

	mu       sync.Mutex
	rounds   []RoundRecord // newest last
	lastScan *RepairResult
	queued   int
}

func newObserver() *observer {
	ns := metrics.Namespace
	return &observer{
		roundDur: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: "mediator", Name: "challenge_round_duration_seconds",
			Help: "Time a challenge round took, from its first challenge to its last answer.", Buckets: prometheus.ExponentialBuckets(0.01, 4, 9)}),
		unreachable: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: "mediator", Name: "challenge_unreachable_nodes_total",
			Help: "Nodes that did not answer a challenge in time, summed over rounds."}),
		repairFail: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: "mediator", Name: "repair_failed_segments_total",
			Help: "Segment repairs that failed (retried by the next scan)."}),
		unrecov: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: "mediator", Name: "repair_unrecoverable_segments_total",
			Help: "Segment repairs that found fewer than K healthy pieces, summed over scans."}),
		scans: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: "mediator", Name: "repair_scans_total",
			Help: "Repair scans completed."}),
	}
}

func (o *observer) round(res RoundResult, took time.Duration) {
	if o == nil {
		return
	}
	o.roundDur.Observe(took.Seconds())
	o.unreachable.Add(float64(res.Unreachable))
	o.mu.Lock()
	o.rounds = append(o.rounds, RoundRecord{RoundResult: res, Duration: took})
	if len(o.rounds) > roundHistory {
		o.rounds = o.rounds[len(o.rounds)-roundHistory:]
	}
	o.mu.Unlock()
}

func (o *observer) repairScan(res RepairResult, queued int, cut bool) {
	if o == nil {
		return
	}
	o.repairFail.Add(float64(res.Failed))
	o.unrecov.Add(float64(res.Unrecoverable))
	if cut {
		return
	}
	o.scans.Inc()
	o.mu.Lock()
	o.lastScan, o.queued = &res, queued
	o.mu.Unlock()
}

// Rounds returns the recent challenge rounds of this process, newest first.
func (p *Peer) Rounds() []RoundRecord {
	o := p.core.obs
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]RoundRecord, len(o.rounds))
	for i, r := range o.rounds {
		out[len(out)-1-i] = r
	}
	return out
}

// LastRepairScan is the last completed repair scan and the number of
// segments it queued for repair (nil before the first).
func (p *Peer) LastRepairScan() (*RepairResult, int) {
	o := p.core.obs
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.lastScan, o.queued
}

// LedgerTotals sums the ledger's balances by kind, in satoshis.
type LedgerTotals struct {
	Escrow    int64          // clients' escrow held
	Owed      int64          // earned by nodes, not yet paid
	Inflight  int64          // in payouts not yet confirmed
	Paid      int64          // paid to nodes on chain, confirmed
	Fees      int64          // the mediator's settlement fees
	ChainFees int64          // miner fees of confirmed payouts
	Unmetered int64          // earned in periods without payments (a record)
	Deposits  int64          // credited deposits
	Payouts   map[string]int // payouts by state
}

// Totals reads the ledger's totals; ErrNoPayments without a wallet.
func (p *Peer) Totals() (*LedgerTotals, error) {
	pay := p.core.pay
	if pay == nil {
		return nil, ErrNoPayments
	}
	bal, err := pay.w.Balances("")
	if err != nil {
		return nil, err
	}
	t := &LedgerTotals{Payouts: map[string]int{}}
	for k, v := range bal {
		switch {
		case strings.HasPrefix(k, wallet.EscrowAccount("")):
			t.Escrow += v
		case strings.HasPrefix(k, wallet.NodeAccount("")):
			t.Owed += v
		case strings.HasPrefix(k, wallet.PaidAccount("")):
			t.Paid += v
		case strings.HasPrefix(k, wallet.UnmeteredAccount("")):
			t.Unmetered += v
		case k == wallet.AcctPayoutInflight:
			t.Inflight += v
		case k == wallet.AcctFeesMediator:
			t.Fees += v
		case k == wallet.AcctFeesChain:
			t.ChainFees += v
		case k == wallet.AcctExtDeposits:
			t.Deposits -= v
		}
	}
	pays, err := pay.w.Payouts()
	if err != nil {
		return nil, err
	}
	for _, po := range pays {
		t.Payouts[po.State]++
	}
	return t, nil
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(metrics.Namespace, "mediator", name), help, labels, nil)
}

var (
	descNodes     = desc("nodes", "Storage nodes registered, by state (online, vetted, disqualified; all: every node).", "state")
	descSegments  = desc("segments", "Segments under contract.")
	descPieces    = desc("pieces", "Pieces under contract, by health (healthy, lost).", "health")
	descSegHealth = desc("segments_by_health", "Segments at the last repair scan, by health: healthy, repair_queued (below the repair threshold), unrecoverable (fewer than K healthy pieces).", "health")
	descQueue     = desc("repair_queue_segments", "Segments the last repair scan queued for repair.")
	descRepaired  = desc("repaired_pieces_total", "Pieces rebuilt and placed by repair.")
	descRounds    = desc("challenge_rounds_total", "Challenge rounds completed.")
	descResults   = desc("challenge_pieces_total", "Challenged pieces, by result (passed, failed), summed over the registered nodes.", "result")
	descGaps      = desc("period_gaps_total", "Periods that passed without a challenge round.")
	descRerun     = desc("rounds_rerun_total", "Rounds run again after an interruption.")
	descLastRound = desc("last_round_timestamp_seconds", "Unix time the last completed round's period started (0: none).")
	descLedger    = desc("ledger_sats", "Ledger totals in satoshis, by kind: escrow (clients' escrow held), owed (earned by nodes, unpaid), "+
		"inflight (in unconfirmed payouts), paid (paid to nodes, confirmed), fees (the mediator's), chain_fees, unmetered (earned without payments), deposits (credited).", "kind")
	descPayouts = desc("payouts", "Payout transactions, by state.", "state")
	descConns   = desc("connections", "Incoming connections open.")
	descRefused = desc("refused_connections_total", "Connections refused at --max-conns or --max-conns-per-ip.")
	descBusy    = desc("throttled_requests_total", "Requests answered busy by the --request-rate limit.")
)

type mediatorCollector struct{ p *Peer }

func (c mediatorCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descNodes, descSegments, descPieces, descSegHealth, descQueue, descRepaired, descRounds,
		descResults, descGaps, descRerun, descLastRound, descLedger, descPayouts, descConns, descRefused, descBusy} {
		ch <- d
	}
}

func (c mediatorCollector) Collect(ch chan<- prometheus.Metric) {
	g := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
	}
	cnt := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, l...)
	}
	ts := c.p.Transport.Stats()
	g(descConns, float64(ts.Conns))
	cnt(descRefused, float64(ts.RefusedConns))
	cnt(descBusy, float64(ts.Throttled))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := c.p.Status(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(descNodes, err)
		return
	}
	var online, vetted, dq float64
	var passed, failed uint64
	for _, n := range st.Nodes {
		if n.Online {
			online++
		}
		if n.Vetted {
			vetted++
		}
		if n.Disqualified {
			dq++
		}
		passed += n.Passed
		failed += n.Failed
	}
	g(descNodes, float64(len(st.Nodes)), "all")
	g(descNodes, online, "online")
	g(descNodes, vetted, "vetted")
	g(descNodes, dq, "disqualified")
	g(descSegments, float64(st.Segments))
	g(descPieces, float64(st.Healthy), "healthy")
	g(descPieces, float64(st.Lost), "lost")
	cnt(descRepaired, float64(st.Repaired))
	cnt(descRounds, float64(st.Rounds))
	cnt(descResults, float64(passed), "passed")
	cnt(descResults, float64(failed), "failed")
	cnt(descGaps, float64(st.PeriodGaps))
	cnt(descRerun, float64(st.RoundsRerun))
	if st.LastRound.IsZero() {
		g(descLastRound, 0)
	} else {
		g(descLastRound, float64(st.LastRound.UnixNano())/1e9)
	}
	if scan, queued := c.p.LastRepairScan(); scan != nil {
		g(descQueue, float64(queued))
		g(descSegHealth, float64(max(scan.Segments-queued, 0)), "healthy")
		g(descSegHealth, float64(queued-scan.Unrecoverable), "repair_queued")
		g(descSegHealth, float64(scan.Unrecoverable), "unrecoverable")
	}
	t, err := c.p.Totals()
	if errors.Is(err, ErrNoPayments) {
		return
	}
	if err != nil {
		ch <- prometheus.NewInvalidMetric(descLedger, err)
		return
	}
	for kind, v := range map[string]int64{"escrow": t.Escrow, "owed": t.Owed, "inflight": t.Inflight, "paid": t.Paid,
		"fees": t.Fees, "chain_fees": t.ChainFees, "unmetered": t.Unmetered, "deposits": t.Deposits} {
		g(descLedger, float64(v), kind)
	}
	for state, n := range t.Payouts {
		g(descPayouts, float64(n), state)
	}
}

// RegisterMetrics registers the mediator's metrics with reg.
func (p *Peer) RegisterMetrics(reg prometheus.Registerer) error {
	o := p.core.obs
	for _, c := range []prometheus.Collector{mediatorCollector{p}, o.roundDur, o.unreachable, o.repairFail, o.unrecov, o.scans} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// StatusPage is the mediator's status page.
func (p *Peer) StatusPage(ctx context.Context) (*metrics.Page, error) {
	st, err := p.Status(ctx)
	if err != nil {
		return nil, err
	}
	page := &metrics.Page{Title: "Fincrypt mediator", Subtitle: st.Mediator, Refresh: 30}
	page.Sections = p.PageSections(st)
	return page, nil
}

// PageSections are the mediator's parts of a status page.
func (p *Peer) PageSections(st *Status) []metrics.Section {
	health := metrics.Section{Heading: "Segment health", Facts: []metrics.Fact{
		metrics.F("Scheme", st.Scheme),
		metrics.F("Segments", fmt.Sprint(st.Segments)),
		metrics.F("Pieces", fmt.Sprintf("%d: %d healthy, %d lost", st.Pieces, st.Healthy, st.Lost)),
		metrics.F("Repaired so far", fmt.Sprintf("%d pieces", st.Repaired)),
	}}
	scan, queued := p.LastRepairScan()
	if scan == nil {
		health.Facts = append(health.Facts, metrics.F("Repair queue", "no repair scan yet"))
	} else {
		health.Facts = append(health.Facts,
			metrics.F("Repair queue", fmt.Sprintf("%d segments below the repair threshold (%d unrecoverable) at the last scan", queued, scan.Unrecoverable)),
			metrics.F("Last scan", fmt.Sprintf("%d segments, %d pieces repaired, %d repairs failed, %d pieces marked lost",
				scan.Segments, scan.Repaired, scan.Failed, scan.MarkedLost)))
	}
	nodes := metrics.Section{Heading: "Storage nodes", Empty: "No storage node has registered yet.",
		Table: &metrics.Table{Head: []string{"Node", "Online", "Vetted", "Capacity", "Used", "Price", "Passed", "Failed", "Reputation", "Address"}}}
	for _, n := range st.Nodes {
		online := "yes"
		if !n.Online {
			online = "no"
		}
		vetted := "yes"
		switch {
		case n.Disqualified:
			vetted = "disqualified"
		case !n.Vetted:
			vetted = "no"
		}
		nodes.Table.Rows = append(nodes.Table.Rows, []string{n.ID[:12], online, vetted, units.HumanSize(n.Capacity), units.HumanSize(n.Used),
			fmt.Sprint(n.Price), fmt.Sprint(n.Passed), fmt.Sprint(n.Failed), fmt.Sprintf("%.2f", n.Reputation), n.Address})
	}
	rounds := metrics.Section{Heading: "Challenge rounds", Facts: []metrics.Fact{
		metrics.F("Period", st.Period), metrics.F("Rounds", fmt.Sprint(st.Rounds)),
	}, Empty: "No round since the mediator started.",
		Table: &metrics.Table{Head: []string{"Period start (UTC)", "Nodes", "Unreachable", "Passed", "Failed", "Took"}}}
	for _, r := range p.Rounds() {
		rounds.Table.Rows = append(rounds.Table.Rows, []string{r.Start.UTC().Format(time.DateTime), fmt.Sprint(r.Nodes),
			fmt.Sprint(r.Unreachable), fmt.Sprint(r.Passed), fmt.Sprint(r.Failed), r.Duration.Round(time.Millisecond).String()})
	}
	secs := []metrics.Section{health, nodes, rounds}
	if t, err := p.Totals(); err == nil {
		secs = append(secs, metrics.Section{Heading: "Ledger", Facts: []metrics.Fact{
			metrics.F("Escrow held", fmt.Sprintf("%d sat", t.Escrow)),
			metrics.F("Owed to nodes", fmt.Sprintf("%d sat", t.Owed)),
			metrics.F("Paid out", fmt.Sprintf("%d sat (%d sat in flight)", t.Paid, t.Inflight)),
			metrics.F("Mediator fees", fmt.Sprintf("%d sat", t.Fees)),
		}})
	}
	return secs
}
