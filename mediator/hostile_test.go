package mediator

import (
	"context"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/internal/hostile"
	fnet "github.com/fincrypt/fincrypt/net"
)

// maxFloodHeap bounds the growth of the Go heap in use while the mediator
// is under the header flood below (attackers' own connections, in the same
// process, included). Before bodies were read under the expected type's
// limit and allocated as they arrived, a flood like it took a mediator from
// 132 MB to 1.46 GB (issue 18).
const maxFloodHeap = 96 << 20

func heapNow() int64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapInuse)
}

// A header flood against the mediator: peers with no account open every
// stream they may and announce large bodies (a challenge response's 8 MiB,
// a placement's 64 KiB, a live request's 256 KiB) and send nothing. The
// heap stays under a bound and honest requests keep succeeding.
func TestHeaderFloodKeepsMediatorMemoryFlat(t *testing.T) {
	p, client, ctx := runMediatorWithClient(t, 60*time.Second)
	if _, err := client.RegisterAccount(ctx); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	base := heapNow()

	const conns, duration = 24, 4 * time.Second
	var peak atomic.Int64
	stop := make(chan struct{})
	endFlood := mediatorHeaderFlood(t, ctx, p.Address(), conns)
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			peak.Store(max(peak.Load(), heapNow()))
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	deadline := time.Now().Add(duration)
	rounds := 0
	for time.Now().Before(deadline) || rounds < 3 {
		if _, err := client.RegisterAccount(ctx); err != nil {
			t.Fatalf("honest request %d under the flood: %v", rounds, err)
		}
		if _, err := client.Health(ctx, []fnet.SegmentID{{1}}); err != nil {
			t.Fatalf("honest request %d under the flood: %v", rounds, err)
		}
		rounds++
		time.Sleep(5 * time.Millisecond) // an honest client's pace, well under the request rate
	}
	close(stop)
	opened := endFlood()
	<-sampled
	t.Logf("header flood: %d streams from %d connections; heap in use %d MB before, peak %d MB; %d honest rounds meanwhile",
		opened, conns, base>>20, peak.Load()>>20, rounds)
	if opened < conns*48 {
		t.Fatalf("the flood opened only %d streams", opened)
	}
	if growth := peak.Load() - base; growth > maxFloodHeap {
		t.Fatalf("heap grew by %d MB under the header flood, bound %d MB", growth>>20, maxFloodHeap>>20)
	}
}

// mediatorHeaderFlood starts conns attackers from 127.0.0.2 that open every
// stream they may on the mediator and write only a header announcing the
// largest body of a challenge response, a placement or a live request.
// The returned func stops them and reports the streams opened.
func mediatorHeaderFlood(t testing.TB, ctx context.Context, addr fnet.Address, conns int) func() int64 {
	return hostile.HeaderFlood(t, ctx, addr, "127.0.0.2", conns, hostile.MediatorHeaders())
}

// runMediatorWithClient runs a mediator on loopback for at most limit and a
// client of a fresh identity connected to it; both stop when tb ends.
func runMediatorWithClient(tb testing.TB, limit time.Duration) (*Peer, *Client, context.Context) {
	tb.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	p, err := New(log, nil, Config{Dir: tb.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	tb.Cleanup(func() { cancel(); <-done; p.Close() })
	id, _ := fnet.GenerateIdentity()
	client, err := NewClient(id, p.Address(), nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { client.Close() })
	return p, client, ctx
}

// BenchmarkMediatorHeaderFlood is the latency of an honest client's
// request round (account, segment health) to the mediator while 24
// connections flood it with frame headers, as a ratio to the same rounds
// without the flood in the same run (ABA), and the growth of the heap.
func BenchmarkMediatorHeaderFlood(b *testing.B) {
	p, client, ctx := runMediatorWithClient(b, 10*time.Minute)
	measure := func(n int) []time.Duration {
		var d []time.Duration
		for range n {
			start := time.Now()
			if _, err := client.RegisterAccount(ctx); err != nil {
				b.Fatal(err)
			}
			if _, err := client.Health(ctx, []fnet.SegmentID{{1}}); err != nil {
				b.Fatal(err)
			}
			d = append(d, time.Since(start))
			time.Sleep(5 * time.Millisecond)
		}
		return d
	}
	median := func(d []time.Duration) time.Duration {
		slices.Sort(d)
		return d[len(d)/2]
	}
	measure(10)
	runtime.GC()
	base := heapNow()
	var peak int64
	b.ResetTimer()
	var without, with []time.Duration
	for range b.N {
		without = append(without, measure(50)...)
		end := mediatorHeaderFlood(b, ctx, p.Address(), 24)
		with = append(with, measure(100)...)
		peak = max(peak, heapNow())
		end()
		without = append(without, measure(50)...)
	}
	mb, mf := median(without), median(with)
	b.ReportMetric(float64(mb.Microseconds())/1000, "base-ms")
	b.ReportMetric(float64(mf.Microseconds())/1000, "flood-ms")
	b.ReportMetric(float64(mf)/float64(mb), "flood/base")
	b.ReportMetric(float64((peak-base)>>20), "heap-growth-MB")
}
