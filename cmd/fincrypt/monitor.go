package main

// The daemons' shared flags for metrics, the status page and log format
// (docs/OPERATIONS.md, "Metrics, status page and logs").

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/urfave/cli/v2"

	"github.com/fincrypt/fincrypt/chunkstore"
	"github.com/fincrypt/fincrypt/devnet"
	"github.com/fincrypt/fincrypt/fs"
	"github.com/fincrypt/fincrypt/internal/metrics"
	"github.com/fincrypt/fincrypt/internal/units"
	"github.com/fincrypt/fincrypt/meta"
	"github.com/fincrypt/fincrypt/replicate"
)

// daemonCommands have the daemon flags.
const daemonCommands = "mount storage mediator devnet"

// addDaemonFlags gives a daemon command --metrics-listen, --metrics-public
// and --log-format, and sets up logging from them before it runs.
func addDaemonFlags(c *cli.Command) {
	c.Flags = append(c.Flags,
		&cli.StringFlag{Name: "metrics-listen", Usage: "serve Prometheus metrics (/metrics) and a status page (/) over HTTP on `HOST:PORT`; " +
			"loopback only (127.0.0.1, ::1, localhost) unless --metrics-public (default: off)"},
		&cli.BoolFlag{Name: "metrics-public", Usage: "allow --metrics-listen on a non-loopback address: anyone who can connect sees the daemon's state (put a proxy with authentication in front)"},
		&cli.StringFlag{Name: "log-format", Usage: "log `FORMAT`: text or json (one object per line)", Value: "text"},
	)
	before := c.Before
	c.Before = func(ctx *cli.Context) error {
		if err := setLogFormat(ctx, os.Stderr); err != nil {
			return err
		}
		if ctx.IsSet("metrics-listen") {
			if err := metrics.CheckAddr(ctx.String("metrics-listen"), ctx.Bool("metrics-public")); err != nil {
				return userErr(exitUsage, "--metrics-listen: %v", err)
			}
		}
		if before != nil {
			return before(ctx)
		}
		return nil
	}
}

// setLogFormat replaces the default logger with one of --log-format,
// keeping the level --debug chose.
func setLogFormat(c *cli.Context, w io.Writer) error {
	level := slog.LevelInfo
	if c.Bool("debug") {
		level = slog.LevelDebug
	}
	opts := &slog.HandlerOptions{Level: level}
	switch c.String("log-format") {
	case "", "text":
		slog.SetDefault(slog.New(slog.NewTextHandler(w, opts)))
	case "json":
		slog.SetDefault(slog.New(slog.NewJSONHandler(w, opts)))
	default:
		return userErr(exitUsage, "--log-format %q: want text or json", c.String("log-format"))
	}
	return nil
}

// daemonFlagArgs repeats the daemon flags given, for a re-executed child
// (the background mount).
func daemonFlagArgs(c *cli.Context) []string {
	var args []string
	for _, f := range []string{"metrics-listen", "log-format"} {
		if c.IsSet(f) {
			args = append(args, "--"+f, c.String(f))
		}
	}
	if c.Bool("metrics-public") {
		args = append(args, "--metrics-public")
	}
	return args
}

// startMonitor serves reg and page on --metrics-listen, if given, until
// stop is called; without the flag it does nothing.
// serveDaemonMetrics registers a daemon's metrics in a registry of its own
// and serves them with its status page when --metrics-listen asks.
func serveDaemonMetrics(c *cli.Context, register func(prometheus.Registerer) error, page metrics.PageFunc) (stop func(), err error) {
	reg := metrics.NewRegistry()
	if err := register(reg); err != nil {
		return nil, userErr(exitFailure, "metrics: %v", err)
	}
	return startMonitor(c, reg, page)
}

func startMonitor(c *cli.Context, reg *prometheus.Registry, page metrics.PageFunc) (stop func(), err error) {
	if !c.IsSet("metrics-listen") {
		return func() {}, nil
	}
	_, stop, err = metrics.Start(metrics.Options{Addr: c.String("metrics-listen"), Public: c.Bool("metrics-public"),
		Registry: reg, Page: page, Logger: slog.Default().With("service", "metrics")})
	if err != nil {
		return nil, userErr(exitUsage, "--metrics-listen: %v", err)
	}
	return stop, nil
}

// mountMonitor is the mount's metrics: the replication engine's, while it
// runs (it starts with the mount and stops at unmount, before the index
// closes; a scrape never reads a closed index).
// Its inode figures come from the mount once it is up (mounted).
type mountMonitor struct {
	networked bool // the vault has joined a network
	mu        sync.RWMutex
	rep       *replicate.Replicator
	inodes    func() fs.InodeStats // the mount's inode bound, once mounted
}

// The mount's inode bound (fs/inodecap.go, --max-inodes).
var (
	inodesLiveDesc = prometheus.NewDesc("fincrypt_mount_kernel_inodes",
		"Inodes of the tree the kernel holds, each with a node in the mount.", nil, nil)
	inodesMaxDesc = prometheus.NewDesc("fincrypt_mount_max_inodes",
		"The bound on kernel-held inodes (--max-inodes); 0: none.", nil, nil)
	inodesPrunedDesc = prometheus.NewDesc("fincrypt_mount_pruned_inodes_total",
		"Inodes the mount asked the kernel to forget (FUSE_NOTIFY_PRUNE).", nil, nil)
	inodesPruneDesc = prometheus.NewDesc("fincrypt_mount_inode_prune_supported",
		"1 if the kernel takes FUSE_NOTIFY_PRUNE (Linux 6.18 and later); 0: the bound does not apply.", nil, nil)
)

func (m *mountMonitor) Describe(chan<- *prometheus.Desc) {} // unchecked: the engine comes and goes

func (m *mountMonitor) Collect(ch chan<- prometheus.Metric) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.inodes != nil {
		in := m.inodes()
		supported := 0.0
		if in.PruneSupported {
			supported = 1
		}
		ch <- prometheus.MustNewConstMetric(inodesLiveDesc, prometheus.GaugeValue, float64(in.Live))
		ch <- prometheus.MustNewConstMetric(inodesMaxDesc, prometheus.GaugeValue, float64(in.Max))
		ch <- prometheus.MustNewConstMetric(inodesPrunedDesc, prometheus.CounterValue, float64(in.Pruned))
		ch <- prometheus.MustNewConstMetric(inodesPruneDesc, prometheus.GaugeValue, supported)
	}
	if m.rep == nil {
		return
	}
	for _, c := range m.rep.Collectors() {
		c.Collect(ch)
	}
}

// mounted hands the monitor, and the replication engine's status, the
// mount's inode figures.
func (m *mountMonitor) mounted(mt *fs.Mounted) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.inodes = mt.Inodes
	if m.rep != nil {
		m.rep.ReportInodes(func() replicate.InodeStatus { return replicate.InodeStatus(mt.Inodes()) })
	}
}

func (m *mountMonitor) page(ctx context.Context) (*metrics.Page, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var page *metrics.Page
	if m.rep == nil {
		what := "none: this vault is local only, nothing is replicated"
		if m.networked {
			what = "the replication engine is not running (the mount starts or stops)"
		}
		page = &metrics.Page{Title: "Fincrypt mount", Sections: []metrics.Section{{Heading: "Replication",
			Facts: []metrics.Fact{metrics.F("Network", what)}}}}
	} else {
		var err error
		if page, err = m.rep.StatusPage(ctx); err != nil {
			return nil, err
		}
	}
	if m.inodes != nil {
		page.Sections = append(page.Sections, inodeSection(m.inodes()))
	}
	return page, nil
}

// inodeSection shows the mount's inode bound on its status page.
func inodeSection(in fs.InodeStats) metrics.Section {
	bound := "none (--max-inodes 0)"
	if in.Max > 0 {
		bound = fmt.Sprint(in.Max)
	}
	prune := "yes"
	if !in.PruneSupported {
		prune = "no: this kernel has no FUSE_NOTIFY_PRUNE (Linux 6.18 and later), the bound does not apply"
	}
	return metrics.Section{Heading: "Inodes held for the kernel", Facts: []metrics.Fact{
		metrics.F("Held now", fmt.Sprint(in.Live)), metrics.F("Bound", bound),
		metrics.F("Asked the kernel to forget", fmt.Sprint(in.Pruned)), metrics.F("Kernel prunes", prune)}}
}

// wrap hooks the monitor into the replication engine's attach.
func (m *mountMonitor) wrap(attach func(*meta.Index, *chunkstore.Store) (io.Closer, error)) func(*meta.Index, *chunkstore.Store) (io.Closer, error) {
	if attach == nil {
		return nil
	}
	return func(idx *meta.Index, store *chunkstore.Store) (io.Closer, error) {
		cl, err := attach(idx, store)
		if err != nil {
			return cl, err
		}
		svc, ok := cl.(interface{ engine() *replicate.Replicator })
		if !ok {
			return cl, nil
		}
		m.mu.Lock()
		m.rep = svc.engine()
		m.mu.Unlock()
		return wrapEngine(cl, func() error {
			err := cl.Close() // the final sync: still shown
			m.mu.Lock()
			m.rep = nil // before the index closes
			m.mu.Unlock()
			return err
		}), nil
	}
}

// devnetRegistry holds the mediator's metrics and every node's, each
// node's labelled node="1".."N".
func devnetRegistry(n *devnet.Net) *prometheus.Registry {
	reg := metrics.NewRegistry()
	n.Mediator.RegisterMetrics(reg)
	for i, node := range n.Nodes {
		node.RegisterMetrics(prometheus.WrapRegistererWith(prometheus.Labels{"node": strconv.Itoa(i + 1)}, reg))
	}
	return reg
}

// devnetPage shows the mediator's page and a summary of every node.
func devnetPage(n *devnet.Net) metrics.PageFunc {
	return func(ctx context.Context) (*metrics.Page, error) {
		page, err := n.Mediator.StatusPage(ctx)
		if err != nil {
			return nil, err
		}
		page.Title = "Fincrypt devnet"
		nodes := metrics.Section{Heading: "Storage nodes of this devnet",
			Table: &metrics.Table{Head: []string{"Node", "Address", "Pieces", "Stored", "Capacity", "Challenges answered", "Earning now"}}}
		for i, node := range n.Nodes {
			st, err := node.Status()
			if err != nil {
				return nil, err
			}
			nodes.Table.Rows = append(nodes.Table.Rows, []string{strconv.Itoa(i + 1), st.Address, fmt.Sprint(st.Pieces),
				units.HumanSize(uint64(st.StoredBytes)), units.HumanSize(uint64(st.CapacityBytes)),
				fmt.Sprint(len(node.Challenges())), fmt.Sprintf("%.0f sat/month", st.EarningRate())})
		}
		page.Sections = append(page.Sections, nodes)
		return page, nil
	}
}
