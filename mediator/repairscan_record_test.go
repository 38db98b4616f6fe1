package mediator

import (
	"context"
	"io"
	"log/slog"
	"testing"
)

// TestRepairScanIsRecorded: a repair scan that ran to its end is the one
// the status page and the metrics show (LastRepairScan, scans counted);
// only a scan cut short by the shutdown is left out.
func TestRepairScanIsRecorded(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	p, err := New(log, nil, Config{Dir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if last, _ := p.LastRepairScan(); last != nil {
		t.Fatalf("a scan recorded before any ran: %+v", last)
	}
	res, err := p.core.RepairScan(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	last, queued := p.LastRepairScan()
	if last == nil || *last != res || queued != 0 {
		t.Fatalf("after a complete scan: last scan %+v (queued %d), want %+v (queued 0)", last, queued, res)
	}
}
