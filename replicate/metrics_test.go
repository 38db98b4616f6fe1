package replicate

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fincrypt/fincrypt/internal/metrics"
	"github.com/fincrypt/fincrypt/internal/metrics/metricstest"
	"github.com/fincrypt/fincrypt/mediator"
	"github.com/fincrypt/fincrypt/mediator/testplanet"
)

// lockedBuffer is a log sink safe for concurrent writers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func waitFor(t *testing.T, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s", what, limit)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// serve starts a metrics listener on 127.0.0.1:0 for reg and page.
func serve(t *testing.T, reg *prometheus.Registry, page metrics.PageFunc) string {
	t.Helper()
	srv, stop, err := metrics.Start(metrics.Options{Addr: "127.0.0.1:0", Registry: reg, Page: page})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return srv.URL()
}

// TestMetricsFollowTheWork scrapes the metrics listeners of a real mount,
// mediator and storage node (in process, over HTTP on loopback) while they
// work: an upload moves the mount's upload counters and empties pending, a
// challenge round moves the mediator's round counters and the nodes'
// proofs, a read of an evicted file moves the fetch counters. Every scrape
// passes promlint, every status page is valid HTML, and neither, nor the
// mount's JSON log, contains a file's name or content.
//
// Challenges come only when the test asks, with time to answer them, and
// pieces have the timeouts of a loaded machine: under -race at a load of
// 25-34 the nodes missed many of the planet's 1 s rounds every second
// (56-81 failed pieces of about 480 each), the segments stayed degraded,
// and the repair scan found no healthy one ("healthy segments at the last
// scan = 0", 1 run of 3). The round the test starts ends when every node
// has answered.
func TestMetricsFollowTheWork(t *testing.T) {
	p, home := planetWithVault(t, testplanet.Config{StorageNodes: 5, Reconfigure: func(c *mediator.Config) {
		c.Period, c.ChallengeTimeout = 10*time.Minute, 10*time.Second
	}})
	var logs lockedBuffer
	cfg := fastConfig()
	cfg.PieceTimeout, cfg.CallTimeout = 20*time.Second, 20*time.Second
	cfg.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c := mount(t, p, home, cfg)

	mountReg := prometheus.NewRegistry()
	mountReg.MustRegister(c.rep.Collectors()...)
	mountURL := serve(t, mountReg, c.rep.StatusPage)
	medReg := metrics.NewRegistry()
	if err := p.Mediator.Peer.RegisterMetrics(medReg); err != nil {
		t.Fatal(err)
	}
	medURL := serve(t, medReg, p.Mediator.Peer.StatusPage)
	nodeURLs := make([]string, len(p.Nodes))
	for i, n := range p.Nodes {
		reg := prometheus.NewRegistry()
		if err := n.Peer.RegisterMetrics(reg); err != nil {
			t.Fatal(err)
		}
		nodeURLs[i] = serve(t, reg, n.Peer.StatusPage)
	}
	m0, _ := metricstest.Scrape(t, mountURL)
	if v := m0.Must(t, "fincrypt_mount_uploads_total"); v != 0 {
		t.Fatalf("uploads before any write: %v", v)
	}
	med0, _ := metricstest.Scrape(t, medURL)
	if v := med0.Must(t, "fincrypt_mediator_nodes", "state", "online"); v != float64(len(p.Nodes)) {
		t.Errorf("nodes online = %v, want %d", v, len(p.Nodes))
	}
	proofs := func() float64 {
		sum := 0.0
		for _, u := range nodeURLs {
			m, _ := metricstest.Scrape(t, u)
			sum += m.Must(t, "fincrypt_node_challenge_proofs_total", "result", "ok")
		}
		return sum
	}
	proofs0 := proofs()

	files := writeTree(t, c.mnt, 7) // holds secretName, and marker in content
	var m1 metricstest.Metrics
	waitFor(t, "uploads counted and nothing pending", 60*time.Second, func() bool {
		c.rep.Kick()
		m1, _ = metricstest.Scrape(t, mountURL)
		return m1.Must(t, "fincrypt_mount_uploads_total") >= 1 && m1.Must(t, "fincrypt_mount_pending_bytes") == 0 &&
			m1.Must(t, "fincrypt_mount_pending_files") == 0 && m1.Must(t, "fincrypt_mount_segments", "state", "durable") >= 1
	})
	if m1.Must(t, "fincrypt_mount_upload_bytes_total") <= 0 || m1.Must(t, "fincrypt_mount_upload_duration_seconds") < 1 {
		t.Errorf("upload bytes or latency not counted")
	}
	if m1.Must(t, "fincrypt_mount_mediator_online") != 1 {
		t.Errorf("mediator not online in the mount's metrics")
	}

	if _, err := p.Mediator.Peer.ChallengeRound(p.Context()); err != nil {
		t.Fatal(err)
	}
	med1, _ := metricstest.Scrape(t, medURL)
	if a, b := med0.Must(t, "fincrypt_mediator_challenge_rounds_total"), med1.Must(t, "fincrypt_mediator_challenge_rounds_total"); b < a+1 {
		t.Errorf("challenge_rounds_total %v -> %v after a round", a, b)
	}
	if a, b := med0.Must(t, "fincrypt_mediator_challenge_round_duration_seconds"), med1.Must(t, "fincrypt_mediator_challenge_round_duration_seconds"); b < a+1 {
		t.Errorf("round duration histogram count %v -> %v after a round", a, b)
	}
	if v := med1.Must(t, "fincrypt_mediator_challenge_pieces_total", "result", "passed"); v < 1 {
		t.Errorf("challenge_pieces_total{passed} = %v after a round over stored pieces", v)
	}
	if v := med1.Must(t, "fincrypt_mediator_segments"); v < 1 {
		t.Errorf("mediator segments = %v after an upload", v)
	}
	if got := proofs(); got <= proofs0 {
		t.Errorf("nodes' proofs ok %v -> %v after a round", proofs0, got)
	}
	if _, err := p.Mediator.Peer.RepairScan(p.Context()); err != nil {
		t.Fatal(err)
	}
	med2, _ := metricstest.Scrape(t, medURL)
	med2.Must(t, "fincrypt_mediator_repair_queue_segments")
	if v := med2.Must(t, "fincrypt_mediator_segments_by_health", "health", "healthy"); v < 1 {
		t.Errorf("healthy segments at the last scan = %v", v)
	}

	c.dropCaches(t)
	checkTree(t, c.mnt, files)
	m2, _ := metricstest.Scrape(t, mountURL)
	if m2.Must(t, "fincrypt_mount_fetches_total") < 1 || m2.Must(t, "fincrypt_mount_fetch_bytes_total") <= 0 {
		t.Errorf("reading evicted files counted no fetch")
	}

	// The pages: valid, with what they are for, without the user's names.
	check := func(what, url string, want ...string) string {
		page := string(metricstest.Get(t, url))
		if err := metricstest.ValidHTML([]byte(page)); err != nil {
			t.Errorf("%s page: %v", what, err)
		}
		for _, w := range want {
			if !strings.Contains(page, w) {
				t.Errorf("%s page lacks %q", what, w)
			}
		}
		return page
	}
	texts := []string{logs.String(),
		check("mount", mountURL, "Pending", "Durable", "Cached", "Restorable"),
		check("mediator", medURL, "Segment health", "Storage nodes", "Challenge rounds", p.Nodes[0].ID().String()[:12]),
		check("node", nodeURLs[0], "Earnings", "Recent challenges", "Disk use")}
	for _, u := range append([]string{mountURL, medURL}, nodeURLs...) {
		_, body := metricstest.Scrape(t, u)
		texts = append(texts, string(body))
	}
	for i, s := range texts {
		if strings.Contains(s, marker) || strings.Contains(s, secretName) || strings.Contains(s, strings.TrimSuffix(secretName, ".txt")) {
			t.Errorf("output %d (log, pages, metrics) names a file or shows its content", i)
		}
	}
	// The log is JSON, one object a line.
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) < 2 {
		t.Fatalf("mount log has %d lines", len(lines))
	}
	for _, l := range lines {
		var v map[string]any
		if err := json.Unmarshal([]byte(l), &v); err != nil || v["msg"] == nil {
			t.Fatalf("log line is not a JSON record: %q (%v)", l, err)
		}
	}

	// The pages in a real browser (skipped, saying so, without chromium).
	metricstest.Chromium(t)
	for _, pg := range []struct {
		url  string
		want []string
	}{
		{mountURL, []string{"Fincrypt mount", "Waiting for upload", "durable"}},
		{medURL, []string{"Fincrypt mediator", "Storage nodes", "Challenge rounds", p.Nodes[1].ID().String()[:12]}},
		{nodeURLs[0], []string{"Fincrypt storage node", "Earnings", "Recent challenges", "Disk use"}},
	} {
		dom, shot := metricstest.Render(t, pg.url, 1024, 768)
		for _, w := range pg.want {
			if !strings.Contains(dom, w) {
				t.Errorf("%s rendered lacks %q", pg.url, w)
			}
		}
		if b := shot.Bounds(); b.Dx() != 1024 || b.Dy() != 768 || metricstest.Colours(shot, 16) < 4 {
			t.Errorf("%s: screenshot %v with %d colours", pg.url, b, metricstest.Colours(shot, 16))
		}
	}
}
