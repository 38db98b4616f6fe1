package mediator

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	fnet "github.com/fincrypt/fincrypt/net"
)

// TestMetricsCollect: the collector's node counts by state, the
// challenge results summed over the nodes, the last scan's segments by
// health, the last round's time, the observer's metrics registered
// beside the collector, and the status page's repair queue and node table.
func TestMetricsCollect(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	p, err := New(log, nil, Config{Dir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()
	now := time.Now()
	vet := p.core.cfg.Placement.VettingChallenges
	nodes := []*Node{
		{ID: fnet.NodeID{1}, LastSeen: now, Passed: vet, Failed: 1},                          // online, vetted
		{ID: fnet.NodeID{2}, LastSeen: now, Passed: 2, Failed: 3, Disqualified: now},         // online, disqualified
		{ID: fnet.NodeID{3}, LastSeen: now.Add(-24 * time.Hour), Passed: vet + 5, Failed: 0}, // offline, vetted
		{ID: fnet.NodeID{4}, LastSeen: now.Add(-24 * time.Hour)},                             // offline, not vetted
	}
	for _, n := range nodes {
		if err := p.core.store.PutNode(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := p.core.store.AddCounter(ctx, CounterRoundDone, time.Unix(1700000000, 0).UnixNano()); err != nil {
		t.Fatal(err)
	}
	p.core.obs.repairScan(RepairResult{Segments: 7, Unrecoverable: 1}, 3, false)

	reg := prometheus.NewRegistry()
	if err := p.RegisterMetrics(reg); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			for _, l := range m.GetLabel() {
				name += "/" + l.GetValue()
			}
			if g := m.GetGauge(); g != nil {
				got[name] = g.GetValue()
			}
			if c := m.GetCounter(); c != nil {
				got[name] = c.GetValue()
			}
		}
	}
	const ns = "fincrypt_mediator_"
	for name, want := range map[string]float64{
		"nodes/all": 4, "nodes/online": 2, "nodes/vetted": 2, "nodes/disqualified": 1,
		"challenge_pieces_total/passed": float64(2*vet + 7), "challenge_pieces_total/failed": 4,
		"repair_queue_segments": 3, "segments_by_health/healthy": 4, "segments_by_health/repair_queued": 2,
		"segments_by_health/unrecoverable": 1, "last_round_timestamp_seconds": 1700000000,
		"repair_scans_total": 1, // the observer's, registered after the collector
	} {
		if v, ok := got[ns+name]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", name, v, ok, want)
		}
	}

	st, err := p.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	secs := p.PageSections(st)
	var queue string
	for _, f := range secs[0].Facts {
		if f.Name == "Repair queue" {
			queue = f.Value
		}
	}
	if !strings.HasPrefix(queue, "3 segments below the repair threshold (1 unrecoverable)") {
		t.Errorf("status page's repair queue: %q", queue)
	}
	rows := secs[1].Table.Rows
	if len(rows) != 4 {
		t.Fatalf("node rows: %q", rows)
	}
	want := map[string][2]string{
		fnet.NodeID{1}.String()[:12]: {"yes", "yes"}, fnet.NodeID{2}.String()[:12]: {"yes", "disqualified"},
		fnet.NodeID{3}.String()[:12]: {"no", "yes"}, fnet.NodeID{4}.String()[:12]: {"no", "no"},
	}
	for _, r := range rows {
		if w, ok := want[r[0]]; !ok || r[1] != w[0] || r[2] != w[1] {
			t.Errorf("node row %q: online, vetted want %q", r, w)
		}
	}
}
