package replicate

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fincrypt/fincrypt/internal/metrics"
	"github.com/fincrypt/fincrypt/internal/units"
)

// transferStats counts one kind of transfer (uploads or fetches of
// segments): the events the mount's status has no record of.
type transferStats struct {
	count   prometheus.Counter
	bytes   prometheus.Counter
	errors  prometheus.Counter
	latency prometheus.Histogram
}

func newTransferStats(what, plural, help string) transferStats {
	ns, sub := metrics.Namespace, "mount"
	return transferStats{
		count: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: plural + "_total",
			Help: "Segments " + help + "."}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: what + "_bytes_total",
			Help: "Bytes of segment content " + help + " (before erasure coding)."}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: what + "_errors_total",
			Help: "Segment " + plural + " that failed (retried later)."}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: what + "_duration_seconds",
			Help: "Time to " + what + " one segment, successful or not.", Buckets: prometheus.ExponentialBuckets(0.005, 4, 9)}),
	}
}

// done records one transfer of n bytes that took since start.
func (t *transferStats) done(start time.Time, n int, err error) {
	if t.count == nil {
		return
	}
	t.latency.Observe(time.Since(start).Seconds())
	if err != nil {
		t.errors.Inc()
		return
	}
	t.count.Inc()
	t.bytes.Add(float64(n))
}

func (t *transferStats) collectors() []prometheus.Collector {
	return []prometheus.Collector{t.count, t.bytes, t.errors, t.latency}
}

func mdesc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(metrics.Namespace, "mount", name), help, labels, nil)
}

var (
	descPendingBytes  = mdesc("pending_bytes", "Bytes written and durable locally, not yet on the network.")
	descPendingFiles  = mdesc("pending_files", "Files with data not yet on the network.")
	descPendingChunks = mdesc("pending_chunks", "Chunks not yet on the network.")
	descSegments      = mdesc("segments", "Data segments on the network, by state (durable, degraded, dead).", "state")
	descStored        = mdesc("stored_bytes", "Bytes of data segments on the network (padded sizes).")
	descCache         = mdesc("cache_bytes", "Bytes of the local store (the cache of durable data), as counted by the last maintenance.")
	descCacheLimit    = mdesc("cache_limit_bytes", "Bound on the local store once data is durable (0: none).")
	descOnline        = mdesc("mediator_online", "1 if the mediator answered the latest call.")
	descProtected     = mdesc("protected", "1 if new data reaches the network (0: the mediator refuses it, e.g. no escrow).")
	descRestorable    = mdesc("restorable", "1 if a restore now would bring back everything written so far.")
	descFaults        = mdesc("faults", "Kinds of background work failing now.")
	descFaultsN       = mdesc("fault_failures", "Failures since the last success, by kind of work failing now.", "work")
	descLastSync      = mdesc("last_sync_timestamp_seconds", "Unix time a segment was last committed (0: never).")
	descEscrow        = mdesc("escrow_sats", "The account's escrow at the mediator, in satoshis (payments on only).")
	descSumResets     = mdesc("state_sum_resets_total", "Index snapshots (bases) whose records disagreed with the state sum folded from the changes, which was reset to theirs (a client bug).")
)

// mountCollector reads Status at scrape time.
type mountCollector struct{ r *Replicator }

func (c mountCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPendingBytes, descPendingFiles, descPendingChunks, descSegments, descStored, descCache,
		descCacheLimit, descOnline, descProtected, descRestorable, descFaults, descFaultsN, descLastSync, descEscrow, descSumResets} {
		ch <- d
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (c mountCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st := c.r.Status(ctx)
	g := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
	}
	g(descPendingBytes, float64(st.PendingBytes))
	g(descPendingFiles, float64(st.PendingFiles))
	g(descPendingChunks, float64(st.PendingChunks))
	g(descSegments, float64(st.SegmentsDurable), "durable")
	g(descSegments, float64(st.SegmentsDegraded), "degraded")
	g(descSegments, float64(st.SegmentsDead), "dead")
	g(descStored, float64(st.StoredBytes))
	g(descCache, float64(st.CacheBytes))
	g(descCacheLimit, float64(st.CacheLimit))
	g(descOnline, b2f(st.Online))
	g(descProtected, b2f(st.Protected))
	g(descRestorable, b2f(st.Restorable))
	g(descFaults, float64(len(st.Faults)))
	for _, f := range st.Faults {
		g(descFaultsN, float64(f.Failures), f.Work)
	}
	if st.LastSync != nil {
		g(descLastSync, float64(st.LastSync.UnixNano())/1e9)
	} else {
		g(descLastSync, 0)
	}
	if st.Payments != nil {
		g(descEscrow, float64(st.Payments.EscrowSat))
	}
	ch <- prometheus.MustNewConstMetric(descSumResets, prometheus.CounterValue, float64(c.r.sumResets.Load()))
}

// Collectors are the mount's replication metrics (its status read at
// scrape time, and the transfer counters).
func (r *Replicator) Collectors() []prometheus.Collector {
	cs := append([]prometheus.Collector{mountCollector{r}}, r.uploads.collectors()...)
	return append(cs, r.fetches.collectors()...)
}

// StatusPage is the mount's status page: what is pending, durable and
// cached, and the escrow warning. It names no file.
func (r *Replicator) StatusPage(ctx context.Context) (*metrics.Page, error) {
	st := r.Status(ctx)
	page := &metrics.Page{Title: "Fincrypt mount", Subtitle: "account " + st.Account, Refresh: 10}
	if st.Refusal != nil {
		page.Warnings = append(page.Warnings, st.Refusal.Summary())
	}
	if st.Escrow != "" {
		page.Warnings = append(page.Warnings, st.Escrow)
	}
	if st.Payments != nil && st.Payments.Warning != "" && st.Payments.Warning != st.Escrow {
		page.Warnings = append(page.Warnings, st.Payments.Warning)
	}
	when := func(t *time.Time) string {
		if t == nil {
			return "never"
		}
		return t.UTC().Format(time.DateTime) + " UTC"
	}
	mediator := "offline"
	if st.Online {
		mediator = "online"
	}
	restorable := "no: changes since " + when(st.UnprotectedSince) + " are not in a stored snapshot yet"
	if st.Restorable {
		restorable = "yes"
	}
	limit := "no limit"
	if st.CacheLimit > 0 {
		limit = units.HumanSize(st.CacheLimit)
	}
	page.Sections = []metrics.Section{
		{Heading: "Pending", Facts: []metrics.Fact{
			metrics.F("Waiting for upload", fmt.Sprintf("%s in %d files (%d chunks)", units.HumanSize(st.PendingBytes), st.PendingFiles, st.PendingChunks)),
			metrics.F("Uploading now", fmt.Sprintf("%s of %s", units.HumanSize(st.UploadDone), units.HumanSize(st.UploadTotal))),
			metrics.F("Restorable", restorable),
		}},
		{Heading: "Durable", Facts: []metrics.Fact{
			metrics.F("Segments", fmt.Sprintf("%d durable, %d degraded, %d dead", st.SegmentsDurable, st.SegmentsDegraded, st.SegmentsDead)),
			metrics.F("Stored on the network", units.HumanSize(st.StoredBytes)),
			metrics.F("Scheme", st.Scheme),
			metrics.F("Mediator", mediator+" "+st.Mediator),
			metrics.F("Last sync", when(st.LastSync)),
			metrics.F("Last index snapshot", when(st.LastSnapshot)),
		}},
		{Heading: "Cached", Facts: []metrics.Fact{
			metrics.F("Local store", units.HumanSize(st.CacheBytes)+" (counted after changes: without a cache limit at most every 10 minutes)"),
			metrics.F("Limit", limit),
		}},
	}
	if st.Payments != nil {
		page.Sections = append(page.Sections, metrics.Section{Heading: "Escrow", Facts: []metrics.Fact{
			metrics.F("Escrow", fmt.Sprintf("%d sat", st.Payments.EscrowSat)),
			metrics.F("Pending deposit", fmt.Sprintf("%d sat", st.Payments.PendingSat)),
			metrics.F("Charge per period", fmt.Sprintf("%.0f sat", st.Payments.ChargePerPeriodSat)),
		}})
	}
	faults := metrics.Section{Heading: "Background work failing", Empty: "None.",
		Table: &metrics.Table{Head: []string{"Work", "Since (UTC)", "Failures"}}}
	for _, f := range st.Faults { // the error text stays in `fincrypt status`: it may name a path
		faults.Table.Rows = append(faults.Table.Rows, []string{f.Work, f.Since.UTC().Format(time.DateTime), fmt.Sprint(f.Failures)})
	}
	page.Sections = append(page.Sections, faults)
	return page, nil
}
