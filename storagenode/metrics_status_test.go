package storagenode

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/fincrypt/fincrypt/challenge"
	"github.com/fincrypt/fincrypt/internal/metrics"
	fnet "github.com/fincrypt/fincrypt/net"
)

// statusPeer is a node built by New (not run) with pieces of the given
// sizes in its store, and their ids in id order.
func statusPeer(t *testing.T, capacity int64, price uint64, sizes ...int) (*Peer, []challenge.PieceID) {
	t.Helper()
	med, _ := fnet.GenerateIdentity()
	ident, _ := fnet.GenerateIdentity()
	addr, err := btcutil.NewAddressPubKeyHash(bytes.Repeat([]byte{7}, 20), &chaincfg.SimNetParams)
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(quiet, ident, Config{Dir: t.TempDir(), Listen: "127.0.0.1:0",
		Mediator: fnet.Address{ID: med.ID(), HostPort: "127.0.0.1:1"}, Capacity: capacity,
		Payout: addr.EncodeAddress(), Network: "simnet", Price: price, ScrubRate: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	var ids []challenge.PieceID
	for i, n := range sizes {
		data, id := randPiece(t, uint64(200+i), n)
		if err := p.Store.Put(context.Background(), id, int64(n), fnet.AccountID{1}, bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b challenge.PieceID) int { return bytes.Compare(a[:], b[:]) })
	return p, ids
}

// gather scrapes a registry into name -> value (gauges and counters; a
// vector's first series).
func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var v float64
			switch mf.GetType() {
			case dto.MetricType_GAUGE:
				v = m.GetGauge().GetValue()
			case dto.MetricType_COUNTER:
				v = m.GetCounter().GetValue()
			case dto.MetricType_HISTOGRAM:
				v = float64(m.GetHistogram().GetSampleCount())
			}
			name := mf.GetName()
			for _, l := range m.GetLabel() {
				name += "/" + l.GetValue()
			}
			out[name] = v
		}
	}
	return out
}

func fact(t *testing.T, secs []struct{ Heading, Name, Value string }, name string) string {
	t.Helper()
	for _, s := range secs {
		if s.Name == name {
			return s.Value
		}
	}
	t.Fatalf("no fact %q on the page", name)
	return ""
}

// Status, the Prometheus collector and the status page tell what the node
// holds, how far the scrub pass is (the share of the id space checked, 1
// once done), the damage not yet reported and the recent challenges:
// before any pass, half-way through one, and after one that found damage.
func TestPeerStatusMetricsAndPage(t *testing.T) {
	p, ids := statusPeer(t, 1<<20, 1500, 1000, 2000, 4000)
	reg := prometheus.NewPedanticRegistry()
	if err := p.RegisterMetrics(reg); err != nil {
		t.Fatal(err)
	}
	if err := p.RegisterMetrics(reg); err == nil {
		t.Fatal("registering the node's metrics twice with one registry: no error")
	}

	st, err := p.Status()
	if err != nil {
		t.Fatal(err)
	}
	want := NodeStatus{Address: p.Address().String(), Mediator: p.Config.Mediator.String(), Pieces: 3,
		StoredBytes: 7000, CapacityBytes: 1 << 20, Price: 1500, Transport: st.Transport}
	if st != want {
		t.Fatalf("status before any pass:\n got %+v\nwant %+v", st, want)
	}
	m := gather(t, reg)
	for name, v := range map[string]float64{
		"fincrypt_node_pieces": 3, "fincrypt_node_stored_bytes": 7000, "fincrypt_node_capacity_bytes": 1 << 20,
		"fincrypt_node_price_sats_per_gib_month": 1500, "fincrypt_node_earning_rate_sats_per_month": 1500 * 7000.0 / (1 << 30),
		"fincrypt_node_scrub_progress_ratio": 0, "fincrypt_node_scrub_pass_start_timestamp_seconds": 0,
		"fincrypt_node_damage_unreported_pieces": 0, "fincrypt_node_connections": 0,
		"fincrypt_node_refused_connections_total": 0, "fincrypt_node_throttled_requests_total": 0,
		"fincrypt_node_challenge_proofs_total/ok": 0, "fincrypt_node_scrub_pieces_checked_total": 0,
	} {
		got, ok := m[name]
		if !ok {
			t.Fatalf("before any pass: no metric %s in %v", name, m)
		}
		if got != v {
			t.Errorf("before any pass: %s = %v, want %v", name, got, v)
		}
	}
	page := pageFacts(p.PageSections(st))
	if got := fact(t, page, "Scrub"); got != "no pass yet" {
		t.Errorf("page before any pass: scrub %q", got)
	}
	if got := fact(t, page, "Disk use"); got != "6.8 KiB of 1.0 MiB (0.7%), 1017.2 KiB free" {
		t.Errorf("page: disk use %q", got)
	}
	if got := fact(t, page, "Earning now"); !strings.HasPrefix(got, "0 sat per month") {
		t.Errorf("page: earning %q", got)
	}

	// Half-way: the pass stops after the first piece in id order.
	ctx, cancel := context.WithCancel(context.Background())
	p.Scrubber.afterPiece = func(challenge.PieceID) { cancel() }
	start := time.Now()
	if _, err := p.Scrubber.Pass(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("pass stopped after one piece: %v", err)
	}
	p.Scrubber.afterPiece = nil
	st, err = p.Status()
	if err != nil {
		t.Fatal(err)
	}
	progress := float64(binary.BigEndian.Uint64(ids[0][:8])) / math.Exp2(64)
	if st.ScrubDone || st.ScrubProgress != progress || st.ScrubStart.Before(start.Add(-time.Second)) || st.ScrubStart.After(time.Now()) {
		t.Fatalf("status half-way: start %v, progress %v, done %v; want progress %v (piece %x first)",
			st.ScrubStart, st.ScrubProgress, st.ScrubDone, progress, ids[0][:8])
	}
	m = gather(t, reg)
	if got := m["fincrypt_node_scrub_progress_ratio"]; got != progress {
		t.Errorf("metric progress half-way %v, want %v", got, progress)
	}
	if got, want := m["fincrypt_node_scrub_pass_start_timestamp_seconds"], float64(st.ScrubStart.UnixNano())/1e9; got != want {
		t.Errorf("metric pass start %v, want %v", got, want)
	}
	if got, want := fact(t, pageFacts(p.PageSections(st)), "Scrub"),
		fmt.Sprintf("%.0f%% of the pass started %s", 100*progress, st.ScrubStart.UTC().Format(time.DateTime)); got != want {
		t.Errorf("page half-way: scrub %q, want %q", got, want)
	}

	// The rest of the pass finds the last piece damaged.
	flipAt(t, p.disk.piecePath(ids[2]), 300)
	res, err := p.Scrubber.Pass(context.Background())
	if err != nil || res.Damaged != 1 {
		t.Fatalf("rest of the pass: %+v, %v", res, err)
	}
	st, err = p.Status()
	if err != nil {
		t.Fatal(err)
	}
	if !st.ScrubDone || st.ScrubProgress != 1 || st.DamageUnsent != 1 || st.Pieces != 2 {
		t.Fatalf("status after the pass: %+v; want done, progress 1, 1 damage unsent, 2 pieces", st)
	}
	m = gather(t, reg)
	if m["fincrypt_node_scrub_progress_ratio"] != 1 || m["fincrypt_node_damage_unreported_pieces"] != 1 ||
		m["fincrypt_node_pieces"] != 2 || m["fincrypt_node_scrub_pieces_checked_total"] != 3 ||
		m["fincrypt_node_scrub_damaged_pieces_total"] != 1 {
		t.Errorf("metrics after the pass: %v", m)
	}
	if got, want := fact(t, pageFacts(p.PageSections(st)), "Scrub"),
		"last pass done, started "+st.ScrubStart.UTC().Format(time.DateTime); got != want {
		t.Errorf("page after the pass: scrub %q, want %q", got, want)
	}
	if got := fact(t, pageFacts(p.PageSections(st)), "Damage not yet reported"); got != "1" {
		t.Errorf("page: damage not yet reported %q", got)
	}

	// A challenge answered shows on the page and in the counters.
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	p.stats.challenged(&fnet.ChallengeResponse{Proofs: []fnet.PieceProof{{Status: fnet.ProofOK}, {Status: fnet.ProofMissing}}},
		1500*time.Microsecond, at)
	page2, err := p.StatusPage(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if page2.Title != "Fincrypt storage node" || page2.Subtitle != p.Address().String() {
		t.Errorf("page title %q, subtitle %q", page2.Title, page2.Subtitle)
	}
	hist := page2.Sections[len(page2.Sections)-1]
	if hist.Table == nil || len(hist.Table.Rows) != 1 ||
		!slices.Equal(hist.Table.Rows[0], []string{"2026-01-02 03:04:05", "2", "1", "1", "0", "1.5ms"}) {
		t.Fatalf("recent challenges on the page: %+v", hist.Table)
	}
	m = gather(t, reg)
	if m["fincrypt_node_challenge_proofs_total/ok"] != 1 || m["fincrypt_node_challenge_proofs_total/missing"] != 1 ||
		m["fincrypt_node_challenge_answer_duration_seconds"] != 1 {
		t.Errorf("challenge metrics: %v", m)
	}
}

// The page's disk line: the share used and the space free, never
// negative, and no division by a capacity of zero.
func TestPageDiskUse(t *testing.T) {
	p := &Peer{stats: newNodeStats()}
	for _, tc := range []struct {
		st   NodeStatus
		want string
	}{
		{NodeStatus{StoredBytes: 1 << 20, CapacityBytes: 4 << 20}, "1.0 MiB of 4.0 MiB (25.0%), 3.0 MiB free"},
		{NodeStatus{StoredBytes: 5 << 20, CapacityBytes: 4 << 20}, "5.0 MiB of 4.0 MiB (125.0%), 0 B free"},
		{NodeStatus{StoredBytes: 0, CapacityBytes: 0}, "0 B of 0 B (0.0%), 0 B free"},
	} {
		if got := fact(t, pageFacts(p.PageSections(tc.st)), "Disk use"); got != tc.want {
			t.Errorf("stored %d of %d: disk use %q, want %q", tc.st.StoredBytes, tc.st.CapacityBytes, got, tc.want)
		}
	}
	st := NodeStatus{Price: 1000, StoredBytes: 3 << 30}
	if got := fact(t, pageFacts(p.PageSections(st)), "Earning now"); !strings.HasPrefix(got, "3000 sat per month") {
		t.Errorf("earning 3 GiB at 1000: %q", got)
	}
}

func pageFacts(secs []metrics.Section) []struct{ Heading, Name, Value string } {
	var out []struct{ Heading, Name, Value string }
	for _, s := range secs {
		for _, f := range s.Facts {
			out = append(out, struct{ Heading, Name, Value string }{s.Heading, f.Name, f.Value})
		}
	}
	return out
}

// Close closes everything New opened: the same directory opens again at
// once (the store's lock is released), and a second Close does nothing.
func TestPeerCloseReleasesTheStore(t *testing.T) {
	p, _ := statusPeer(t, 1<<20, 1, 1000)
	dir := p.Config.Dir
	if err := p.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	s, err := OpenDiskStore(dir, DiskStoreOptions{Capacity: 1 << 20, Logger: quiet})
	if err != nil {
		t.Fatalf("the node's directory after Close: %v", err)
	}
	defer s.Close()
	if used, n := s.Usage(); used != 1000 || n != 1 {
		t.Fatalf("after Close: %d bytes in %d pieces, want the piece kept", used, n)
	}
}

// A New that fails after opening the store (the listen address is taken)
// closes what it opened: the directory opens again at once.
func TestPeerNewFailureReleasesTheStore(t *testing.T) {
	p, _ := statusPeer(t, 1<<20, 1, 1000)
	taken := p.Transport.Addr().String()
	cfg := p.Config
	cfg.Dir = t.TempDir()
	cfg.Listen = taken
	ident, _ := fnet.GenerateIdentity()
	if q, err := New(quiet, ident, cfg); err == nil {
		q.Close()
		t.Fatalf("New listening on %s, taken by another node: no error", taken)
	}
	s, err := OpenDiskStore(cfg.Dir, DiskStoreOptions{Capacity: 1 << 20, Logger: quiet})
	if err != nil {
		t.Fatalf("the directory of a node whose New failed: %v", err)
	}
	s.Close()
}
