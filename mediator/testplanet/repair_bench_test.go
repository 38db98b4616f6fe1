package testplanet_test

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/mediator"
	"github.com/fincrypt/fincrypt/mediator/testplanet"
	fnet "github.com/fincrypt/fincrypt/net"
)

// BenchmarkRepairWorkers measures segments repaired per second by a real
// mediator and 8 real storage nodes over QUIC on loopback: 60 segments of
// 2/5 (64 KiB pieces) lose 2 pieces each, and one repair scan rebuilds
// them, first with one worker (the baseline, serial repair), then with the
// default number of workers, in the same run. The two alternate (twice
// each, in ABBA order), each on a freshly degraded state, and report the
// ratio.
func BenchmarkRepairWorkers(b *testing.B) {
	const segments, lose = 60, 2
	p := testplanet.New(b, testplanet.Config{StorageNodes: 8, NodeCapacity: 1 << 30, Reconfigure: func(c *mediator.Config) {
		c.Period = time.Hour // no scheduled scan competes with the measured ones
		c.ChallengeTimeout = 10 * time.Second
	}})
	ctx := context.Background()
	var ids []fnet.SegmentID
	for i := range segments {
		seg, err := p.Client.Store(ctx, p.Scheme(), randomData(uint64(100+i), 128<<10))
		if err != nil {
			b.Fatal(err)
		}
		ids = append(ids, seg)
	}
	r := rand.New(rand.NewPCG(1, 2))
	// scan degrades every segment, restarts the mediator with the given
	// number of workers and times one repair scan.
	scan := func(workers int) time.Duration {
		b.Helper()
		p.Mediator.Config.RepairWorkers = workers
		p.RestartMediator()
		p.WaitFor("every node online", 30*time.Second, func(st *mediator.Status) bool { return online(st) == len(p.Nodes) })
		st := p.Mediator.Peer.Store
		for _, id := range ids {
			seg, err := st.GetSegment(ctx, mediator.SegmentID(id))
			if err != nil {
				b.Fatal(err)
			}
			for _, i := range r.Perm(len(seg.Pieces))[:lose] {
				seg.Pieces[i].State = mediator.PieceLost
			}
			if err := st.UpdateSegment(ctx, seg); err != nil {
				b.Fatal(err)
			}
		}
		start := time.Now()
		res, err := p.Mediator.Peer.RepairScan(ctx)
		took := time.Since(start)
		if err != nil || res.Repaired != segments*lose || res.Failed != 0 {
			b.Fatalf("repair scan with %d workers: %+v %v", workers, res, err)
		}
		return took
	}
	workers := mediator.Config{}.WithDefaults().RepairWorkers
	b.ResetTimer()
	var serial, parallel time.Duration
	for n := 0; n < b.N; n++ {
		// ABBA order, so that a load that drifts during the run (CI
		// machines are shared) weighs on both alike.
		serial += scan(1)
		parallel += scan(workers)
		parallel += scan(workers)
		serial += scan(1)
	}
	b.StopTimer()
	total := float64(2 * segments * b.N)
	b.ReportMetric(total/serial.Seconds(), "segments/s_1_worker")
	b.ReportMetric(total/parallel.Seconds(), "segments/s_default")
	b.ReportMetric(serial.Seconds()/parallel.Seconds(), "ratio_vs_1_worker")
}
