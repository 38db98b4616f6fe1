package storagenode

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fincrypt/fincrypt/internal/metrics"
	"github.com/fincrypt/fincrypt/internal/units"
	fnet "github.com/fincrypt/fincrypt/net"
)

// ChallengeRecord is one challenge the node answered (the status page's
// history).
type ChallengeRecord struct {
	At       time.Time
	Pieces   int // pieces challenged
	Proved   int // answered with a proof
	Missing  int // not held
	Failed   int // held but unreadable
	Duration time.Duration
}

// challengeHistory is the number of recent challenges kept for the page.
const challengeHistory = 20

// nodeStats are the node's event counters: what has no state to read back
// at scrape time.
type nodeStats struct {
	proofs   *prometheus.CounterVec // by result
	answer   prometheus.Histogram
	scrubbed prometheus.Counter
	scrubB   prometheus.Counter
	damaged  prometheus.Counter

	mu     sync.Mutex
	recent []ChallengeRecord // newest last
}

func newNodeStats() *nodeStats {
	ns := metrics.Namespace
	s := &nodeStats{
		proofs: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: "node", Name: "challenge_proofs_total",
			Help: "Challenged pieces answered, by result: ok (proof sent), missing (not held), failed (held but unreadable)."}, []string{"result"}),
		answer: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: "node", Name: "challenge_answer_duration_seconds",
			Help: "Time to answer one challenge request (all its pieces).", Buckets: prometheus.ExponentialBuckets(0.001, 4, 9)}),
		scrubbed: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: "node", Name: "scrub_pieces_checked_total",
			Help: "Pieces re-read and checked by the scrubber."}),
		scrubB: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: "node", Name: "scrub_read_bytes_total",
			Help: "Bytes re-read by the scrubber."}),
		damaged: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: "node", Name: "scrub_damaged_pieces_total",
			Help: "Pieces the scrubber found damaged, quarantined and reported."}),
	}
	for _, r := range []string{"ok", "missing", "failed"} {
		s.proofs.WithLabelValues(r)
	}
	return s
}

func (s *nodeStats) challenged(rep *fnet.ChallengeResponse, took time.Duration, at time.Time) {
	if s == nil {
		return
	}
	rec := ChallengeRecord{At: at, Pieces: len(rep.Proofs), Duration: took}
	for _, p := range rep.Proofs {
		switch p.Status {
		case fnet.ProofOK:
			rec.Proved++
		case fnet.ProofMissing:
			rec.Missing++
		default:
			rec.Failed++
		}
	}
	s.proofs.WithLabelValues("ok").Add(float64(rec.Proved))
	s.proofs.WithLabelValues("missing").Add(float64(rec.Missing))
	s.proofs.WithLabelValues("failed").Add(float64(rec.Failed))
	s.answer.Observe(took.Seconds())
	s.mu.Lock()
	s.recent = append(s.recent, rec)
	if len(s.recent) > challengeHistory {
		s.recent = s.recent[len(s.recent)-challengeHistory:]
	}
	s.mu.Unlock()
}

func (s *nodeStats) scrubbedPiece(bytes int64, damaged bool) {
	if s == nil {
		return
	}
	s.scrubbed.Inc()
	s.scrubB.Add(float64(bytes))
	if damaged {
		s.damaged.Inc()
	}
}

// Challenges returns the recent challenges, newest first.
func (p *Peer) Challenges() []ChallengeRecord {
	s := p.stats
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ChallengeRecord, len(s.recent))
	for i, r := range s.recent {
		out[len(out)-1-i] = r
	}
	return out
}

// NodeStatus is a storage node's state for its metrics and status page.
type NodeStatus struct {
	Address       string
	Mediator      string
	Pieces        int64
	StoredBytes   int64
	CapacityBytes int64
	Price         uint64 // sats per GiB per month
	// ScrubStart is when the current (or last) scrub pass started;
	// ScrubProgress the share of the id space it has checked (piece ids
	// are hashes, so this is the share of the pieces), 1 once done.
	ScrubStart    time.Time
	ScrubProgress float64
	ScrubDone     bool
	DamageUnsent  int // damaged pieces not yet acknowledged by the mediator
	Transport     fnet.TransportStats
}

// EarningRate is what the node earns a month at its asking price for what
// it holds now, in satoshis (the mediator's ledger is the record).
func (s NodeStatus) EarningRate() float64 {
	return float64(s.Price) * float64(s.StoredBytes) / (1 << 30)
}

// Status reads the node's state.
func (p *Peer) Status() (NodeStatus, error) {
	used, n := p.Store.Usage()
	st := NodeStatus{Address: p.Address().String(), Mediator: p.Config.Mediator.String(), Pieces: n, StoredBytes: used,
		CapacityBytes: p.Store.Capacity(), Price: p.Config.Price, Transport: p.Transport.Stats()}
	if p.disk != nil {
		cur, err := p.disk.loadScrubCursor()
		if err != nil {
			return st, err
		}
		st.ScrubStart, st.ScrubDone = cur.Start, cur.Done
		switch {
		case cur.Done:
			st.ScrubProgress = 1
		case cur.HasLast:
			st.ScrubProgress = float64(binary.BigEndian.Uint64(cur.Last[:8])) / math.Exp2(64)
		}
		dmg, err := p.disk.Damaged(1 << 16)
		if err != nil {
			return st, err
		}
		st.DamageUnsent = len(dmg)
	}
	return st, nil
}

// nodeCollector reads NodeStatus at scrape time.
type nodeCollector struct {
	p     *Peer
	descs map[string]*prometheus.Desc
}

func gaugeDesc(sub, name, help string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(metrics.Namespace, sub, name), help, nil, nil)
}

var nodeDescs = map[string]*prometheus.Desc{
	"pieces":   gaugeDesc("node", "pieces", "Pieces stored."),
	"stored":   gaugeDesc("node", "stored_bytes", "Bytes of pieces stored."),
	"capacity": gaugeDesc("node", "capacity_bytes", "Bytes offered for pieces (--capacity)."),
	"price":    gaugeDesc("node", "price_sats_per_gib_month", "Asking price in satoshis per GiB per month."),
	"earning":  gaugeDesc("node", "earning_rate_sats_per_month", "What the pieces held now earn a month at the asking price, in satoshis."),
	"scrubP":   gaugeDesc("node", "scrub_progress_ratio", "Share of the pieces the current scrub pass has checked (1: pass done)."),
	"scrubS":   gaugeDesc("node", "scrub_pass_start_timestamp_seconds", "Unix time the current or last scrub pass started (0: none yet)."),
	"damage":   gaugeDesc("node", "damage_unreported_pieces", "Damaged pieces not yet acknowledged by the mediator."),
	"conns":    gaugeDesc("node", "connections", "Incoming connections open."),
	"refused":  gaugeDesc("node", "refused_connections_total", "Connections refused at --max-conns or --max-conns-per-ip."),
	"busy":     gaugeDesc("node", "throttled_requests_total", "Requests answered busy by the --request-rate limit."),
}

func (c *nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c *nodeCollector) Collect(ch chan<- prometheus.Metric) {
	st, err := c.p.Status()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.descs["scrubP"], err)
	}
	g := func(k string, v float64) { ch <- prometheus.MustNewConstMetric(c.descs[k], prometheus.GaugeValue, v) }
	cnt := func(k string, v float64) { ch <- prometheus.MustNewConstMetric(c.descs[k], prometheus.CounterValue, v) }
	g("pieces", float64(st.Pieces))
	g("stored", float64(st.StoredBytes))
	g("capacity", float64(st.CapacityBytes))
	g("price", float64(st.Price))
	g("earning", st.EarningRate())
	if err == nil {
		g("scrubP", st.ScrubProgress)
		g("damage", float64(st.DamageUnsent))
	}
	if st.ScrubStart.IsZero() {
		g("scrubS", 0)
	} else {
		g("scrubS", float64(st.ScrubStart.UnixNano())/1e9)
	}
	g("conns", float64(st.Transport.Conns))
	cnt("refused", float64(st.Transport.RefusedConns))
	cnt("busy", float64(st.Transport.Throttled))
}

// RegisterMetrics registers the node's metrics with reg.
func (p *Peer) RegisterMetrics(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{&nodeCollector{p: p, descs: nodeDescs},
		p.stats.proofs, p.stats.answer, p.stats.scrubbed, p.stats.scrubB, p.stats.damaged} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// StatusPage is the node's status page.
func (p *Peer) StatusPage(ctx context.Context) (*metrics.Page, error) {
	st, err := p.Status()
	if err != nil {
		return nil, err
	}
	page := &metrics.Page{Title: "Fincrypt storage node", Subtitle: st.Address, Refresh: 30}
	page.Sections = append(page.Sections, p.PageSections(st)...)
	return page, nil
}

// PageSections are the node's parts of a status page (the devnet shows
// several nodes on one page).
func (p *Peer) PageSections(st NodeStatus) []metrics.Section {
	free := max(st.CapacityBytes-st.StoredBytes, 0)
	pct := 0.0
	if st.CapacityBytes > 0 {
		pct = 100 * float64(st.StoredBytes) / float64(st.CapacityBytes)
	}
	scrub := "no pass yet"
	if !st.ScrubStart.IsZero() {
		scrub = fmt.Sprintf("%.0f%% of the pass started %s", 100*st.ScrubProgress, st.ScrubStart.UTC().Format(time.DateTime))
		if st.ScrubDone {
			scrub = "last pass done, started " + st.ScrubStart.UTC().Format(time.DateTime)
		}
	}
	secs := []metrics.Section{
		{Heading: "Earnings", Facts: []metrics.Fact{
			metrics.F("Asking price", fmt.Sprintf("%d sat per GiB per month", st.Price)),
			metrics.F("Earning now", fmt.Sprintf("%.0f sat per month for what it holds (the mediator's ledger is the record)", st.EarningRate())),
			metrics.F("Mediator", st.Mediator),
		}},
		{Heading: "Pieces and disk", Facts: []metrics.Fact{
			metrics.F("Pieces", fmt.Sprint(st.Pieces)),
			metrics.F("Disk use", fmt.Sprintf("%s of %s (%.1f%%), %s free", units.HumanSize(uint64(st.StoredBytes)),
				units.HumanSize(uint64(st.CapacityBytes)), pct, units.HumanSize(uint64(free)))),
			metrics.F("Scrub", scrub),
			metrics.F("Damage not yet reported", fmt.Sprint(st.DamageUnsent)),
			metrics.F("Connections", fmt.Sprintf("%d open, %d refused, %d requests throttled", st.Transport.Conns, st.Transport.RefusedConns, st.Transport.Throttled)),
		}},
	}
	hist := metrics.Section{Heading: "Recent challenges", Empty: "No challenge answered since the node started.",
		Table: &metrics.Table{Head: []string{"Time (UTC)", "Pieces", "Proved", "Missing", "Failed", "Took"}}}
	for _, r := range p.Challenges() {
		hist.Table.Rows = append(hist.Table.Rows, []string{r.At.UTC().Format(time.DateTime), fmt.Sprint(r.Pieces),
			fmt.Sprint(r.Proved), fmt.Sprint(r.Missing), fmt.Sprint(r.Failed), r.Duration.Round(time.Microsecond).String()})
	}
	return append(secs, hist)
}
