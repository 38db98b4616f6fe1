package testplanet_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/challenge"
	"github.com/fincrypt/fincrypt/internal/hostile"
	"github.com/fincrypt/fincrypt/mediator"
	"github.com/fincrypt/fincrypt/mediator/testplanet"
	fnet "github.com/fincrypt/fincrypt/net"
)

// BenchmarkHonestOpsUnderAttack is issue 18's benchmark: on one planet (a
// mediator and six storage nodes (a scheme of 2/5: one may drop out) over QUIC on loopback), the median
// latency of an honest upload of a small segment and of a read of one
// stored earlier, first without an attack, then under each attack in turn,
// then without one again; reported as ratios to the unattacked medians of
// the same run (ratio > 1: slower under the attack). The attacks: a header
// flood on the mediator (24 connections from 127.0.0.2), a connection flood
// (96 identities from 127.0.0.3 on the mediator, more than one address may
// hold, and 24 on each node), a reservation flood (new accounts placing the
// largest pieces they may and never uploading), and, last because it loses
// pieces, one node that withholds every piece it holds. A node announcing a huge reply length or
// streaming junk is not here (planet nodes are real storage nodes): the
// client's side of it is replicate's TestFetchFromLyingNodes, with its heap
// bound.
//
// Node, mediator, client and attackers share this process, so the RSS
// figures are the whole planet's: the process's peak resident set (VmHWM,
// reset through /proc/self/clear_refs before each phase) during each phase.
func BenchmarkHonestOpsUnderAttack(b *testing.B) {
	const ops = 20
	p := testplanet.New(b, testplanet.Config{StorageNodes: 6, NodeCapacity: 64 << 20, Reconfigure: func(c *mediator.Config) {
		c.Reservations.AccountBytes = 48 << 20 // as TestReservationFloodDoesNotBlockUploads
		c.Reservations.NewAccounts = 4
		c.OnlineWindow, c.OfflineAfter = 5*time.Second, 20*time.Second
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	scheme := p.Scheme()
	seed := uint64(5000)
	var stored []fnet.SegmentID
	contents := map[fnet.SegmentID][]byte{}
	upload := func() fnet.SegmentID {
		seed++
		data := randomData(seed, segSize)
		var id fnet.SegmentID
		var err error
		for try := 0; try < 5; try++ { // as a client does when the mediator is busy
			if id, err = p.Client.Store(ctx, scheme, data); fnet.CodeOf(err) != fnet.CodeBusy {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err != nil {
			b.Fatalf("honest upload: %v", err)
		}
		contents[id] = data
		stored = append(stored, id)
		return id
	}
	for range 2 * ops {
		upload()
	}
	// phase times ops uploads and ops reads (of segments stored before the
	// phase) and reports the process's peak RSS meanwhile.
	next := 0
	phase := func() (up, read []time.Duration, rss int64) {
		resetPeakRSS()
		old := len(stored)
		for range ops {
			start := time.Now()
			upload()
			up = append(up, time.Since(start))
			id := stored[next%old]
			next++
			start = time.Now()
			got, err := p.Client.Fetch(ctx, id, len(contents[id]))
			read = append(read, time.Since(start))
			if err != nil || !bytes.Equal(got, contents[id]) {
				b.Fatalf("honest read of %s: %v", id, err)
			}
		}
		return up, read, peakRSS(b)
	}
	median := func(d []time.Duration) time.Duration {
		slices.Sort(d)
		return d[len(d)/2]
	}
	type result struct {
		name      string
		up, read  []time.Duration
		rss       int64
		attackers string
	}
	var results []result
	var baseUp, baseRead []time.Duration
	var baseRSS int64
	baseline := func() {
		up, read, rss := phase()
		baseUp, baseRead, baseRSS = append(baseUp, up...), append(baseRead, read...), max(baseRSS, rss)
	}
	under := func(name string, start func() (stop func() string)) {
		b.Logf("phase %s", name)
		stop := start()
		up, read, rss := phase()
		results = append(results, result{name, up, read, rss, stop()})
	}

	b.ResetTimer()
	for range b.N {
		baseline()
		under("hdrflood", func() func() string {
			end := hostile.HeaderFlood(b, ctx, p.Mediator.Address(), "127.0.0.2", 24, hostile.MediatorHeaders())
			return func() string { return fmt.Sprintf("%d streams", end()) }
		})
		under("connflood", func() func() string {
			ends := []func() int{hostile.ConnFlood(b, ctx, p.Mediator.Address(), "127.0.0.3", 96)}
			for _, n := range p.Nodes {
				ends = append(ends, hostile.ConnFlood(b, ctx, n.Peer.Address(), "127.0.0.3", 24))
			}
			return func() string {
				var got []string
				for _, end := range ends {
					got = append(got, strconv.Itoa(end()))
				}
				return "connections accepted (mediator, nodes): " + strings.Join(got, ",")
			}
		})
		under("resflood", func() func() string {
			var (
				accounts []*mediator.Client
				placed   = map[*mediator.Client][]fnet.SegmentID{}
				n        int
			)
			for range 10 {
				id, _ := fnet.GenerateIdentity()
				c, err := mediator.NewClient(id, p.Mediator.Address(), nil)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := c.RegisterAccount(ctx); err != nil {
					c.Close()
					continue // new accounts rate-limited
				}
				accounts = append(accounts, c)
				for j := range 10 {
					ids := make([]challenge.PieceID, scheme.N)
					for k := range ids {
						ids[k][0], ids[k][1], ids[k][2], ids[k][3] = 0xf1, byte(len(accounts)), byte(j), byte(k)
					}
					pl, err := c.Place(ctx, scheme, 8<<20, ids)
					if err != nil {
						break // the account's quota
					}
					placed[c] = append(placed[c], pl.Segment)
					n++
				}
			}
			return func() string {
				for _, c := range accounts { // abandoned: frees the room for the phases after
					for _, seg := range placed[c] {
						if err := c.Release(ctx, seg); err != nil {
							b.Fatalf("releasing a flood placement: %v", err)
						}
					}
					c.Close()
				}
				return fmt.Sprintf("%d accounts, %d placements of %d x 8 MiB", len(accounts), n, scheme.N)
			}
		})
		baseline()
		under("withhold", func() func() string {
			victim := p.NodeIndex(p.Segment(stored[0]).Pieces[0].Node)
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					withhold(p, victim)
					select {
					case <-stop:
						return
					case <-time.After(50 * time.Millisecond):
					}
				}
			}()
			return func() string {
				close(stop)
				wg.Wait()
				return fmt.Sprintf("node %d withholds", victim)
			}
		})
	}
	b.StopTimer()
	mu, mr := median(baseUp), median(baseRead)
	b.ReportMetric(float64(mu.Microseconds())/1000, "base-up-ms")
	b.ReportMetric(float64(mr.Microseconds())/1000, "base-read-ms")
	b.ReportMetric(float64(baseRSS>>20), "base-RSS-MB")
	for _, r := range results {
		b.ReportMetric(float64(median(r.up))/float64(mu), r.name+"-up/base")
		b.ReportMetric(float64(median(r.read))/float64(mr), r.name+"-read/base")
		b.ReportMetric(float64(r.rss>>20), r.name+"-RSS-MB")
		b.Logf("%s (%s): upload %v, read %v (medians; without: %v, %v); peak RSS %d MB",
			r.name, r.attackers, median(r.up), median(r.read), mu, mr, r.rss>>20)
	}
}

// resetPeakRSS resets the process's peak resident set (VmHWM) to its
// current one (Linux 4.0 and later; elsewhere the peak stays the process's).
func resetPeakRSS() { os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

// peakRSS is the process's peak resident set since resetPeakRSS.
func peakRSS(b testing.TB) int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Skipf("no /proc: %v", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb << 10
		}
	}
	b.Fatal("no VmHWM in /proc/self/status")
	return 0
}
