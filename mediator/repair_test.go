package mediator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/challenge"
	fnet "github.com/fincrypt/fincrypt/net"
)

// slowNodes wraps a NodeClient: each get and put first waits delay (or
// for its context), and it records how many transfers run at once, per node
// and in all, and the order of the puts.
type slowNodes struct {
	NodeClient
	delay time.Duration
	// barrier > 0: a put waits (at most 10 s) until that many puts are in
	// flight at once, so that tests see concurrent puts without relying on
	// timing.
	barrier int
	// onPut is called after each put that the inner client took, with the
	// count so far.
	onPut func(n int)

	mu        sync.Mutex
	cond      *sync.Cond
	active    map[fnet.NodeID]int
	maxActive map[fnet.NodeID]int
	total     int
	maxTotal  int
	calls     int // gets and puts begun
	putting   int
	puts      []challenge.PieceID
}

func newSlowNodes(inner NodeClient, delay time.Duration) *slowNodes {
	s := &slowNodes{NodeClient: inner, delay: delay, active: map[fnet.NodeID]int{}, maxActive: map[fnet.NodeID]int{}}
	s.cond = sync.NewCond(&s.mu)
	return s
}

func (s *slowNodes) enter(node fnet.NodeID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	s.active[node]++
	s.maxActive[node] = max(s.maxActive[node], s.active[node])
	s.total++
	s.maxTotal = max(s.maxTotal, s.total)
}

func (s *slowNodes) leave(node fnet.NodeID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.active[node]--
	s.total--
}

func (s *slowNodes) wait(ctx context.Context) error {
	if s.delay == 0 {
		return ctx.Err()
	}
	t := time.NewTimer(s.delay)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func (s *slowNodes) Get(ctx context.Context, addr fnet.Address, t fnet.SignedTicket) ([]byte, error) {
	s.enter(addr.ID)
	defer s.leave(addr.ID)
	if err := s.wait(ctx); err != nil {
		return nil, err
	}
	return s.NodeClient.Get(ctx, addr, t)
}

func (s *slowNodes) Put(ctx context.Context, addr fnet.Address, t fnet.SignedTicket, data []byte) error {
	s.enter(addr.ID)
	defer s.leave(addr.ID)
	if err := s.wait(ctx); err != nil {
		return err
	}
	if s.barrier > 0 {
		deadline := time.AfterFunc(10*time.Second, func() { s.mu.Lock(); s.cond.Broadcast(); s.mu.Unlock() })
		s.mu.Lock()
		s.putting++
		s.cond.Broadcast()
		start := time.Now()
		for s.putting < s.barrier && time.Since(start) < 10*time.Second {
			s.cond.Wait()
		}
		s.mu.Unlock()
		deadline.Stop()
	}
	if err := s.NodeClient.Put(ctx, addr, t, data); err != nil {
		return err
	}
	s.mu.Lock()
	s.puts = append(s.puts, t.Piece)
	n := len(s.puts)
	s.mu.Unlock()
	if s.onPut != nil {
		s.onPut(n)
	}
	return nil
}

func (s *slowNodes) counts() (calls, puts int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls, len(s.puts)
}

// degradedWorld is a world of 12 nodes holding 30 segments (repair
// threshold N, so every loss is repaired). The node holding piece 0 of
// every segment is gone past the offline limit, and segment s has s%3
// more pieces failed: 1 to 3 of each segment's 5 pieces need rebuilding,
// leaving it 2, 1 or 0 pieces above K. It returns the original pieces.
func degradedWorld(t testing.TB) (*world, map[SegmentID][][]byte) {
	t.Helper()
	w := newWorld(t, 12)
	w.c.cfg.RepairThreshold = w.c.cfg.Scheme.N
	ctx := context.Background()
	acct := w.account()
	orig := map[SegmentID][][]byte{}
	for range 30 {
		id, pieces := w.storeSegment(acct, 2000)
		orig[id] = pieces
	}
	// Placement is by price, so the five cheapest nodes hold everything.
	var s int
	for id := range orig {
		seg := w.segment(id)
		for i := 1; i <= s%3; i++ {
			seg.Pieces[i].State = PieceLost
		}
		if err := w.store.UpdateSegment(ctx, seg); err != nil {
			t.Fatal(err)
		}
		s++
	}
	w.mem.nodes[w.ids[0].ID()].down = true
	w.advance(w.c.cfg.OfflineAfter + time.Minute)
	w.heartbeat()
	return w, orig
}

// clone copies a world's contracts, nodes and stored pieces into a new
// world with the same mediator identity and time: two mediators in the same
// state, to compare two ways of repairing it.
func (w *world) clone() *world {
	w.t.Helper()
	ctx := context.Background()
	w2 := &world{t: w.t, dir: w.t.TempDir(), ids: w.ids, addrs: w.addrs}
	w2.clock.Store(w.clock.Load())
	var err error
	if w2.store, err = OpenPebbleStore(w2.dir, PebbleOptions{NoSync: true}); err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() {
		w2.c.stop()
		w2.store.Close()
	})
	w2.mem = &memNodes{mediator: w.mem.mediator, now: w2.now, nodes: map[fnet.NodeID]*memNode{}}
	for id, n := range w.mem.nodes {
		c := *n
		c.pieces = map[challenge.PieceID][]byte{}
		for p, b := range n.pieces {
			c.pieces[p] = bytes.Clone(b)
		}
		w2.mem.nodes[id] = &c
	}
	nodes, err := w.store.ListNodes(ctx)
	if err != nil {
		w.t.Fatal(err)
	}
	for _, n := range nodes {
		if err := w2.store.PutNode(ctx, n); err != nil {
			w.t.Fatal(err)
		}
	}
	err = w.store.Segments(ctx, SegmentID{}, 0, func(s *Segment) error { return w2.store.CommitSegment(ctx, s) })
	if err != nil {
		w.t.Fatal(err)
	}
	w2.c = newCore(w.c.cfg, w2.store, w.c.id, w2.mem)
	w2.c.now = w2.now
	w2.c.started = w.c.started
	return w2
}

// checkContracts checks every contract against the nodes: distinct nodes
// per segment, every healthy piece held by its node with the original
// bytes, the repaired counter equal to the contracts' sum, and the status
// totals. It returns the healthy pieces per segment.
func (w *world) checkContracts(orig map[SegmentID][][]byte) map[SegmentID]int {
	w.t.Helper()
	ctx := context.Background()
	healthy := map[SegmentID]int{}
	var repaired int64
	err := w.store.Segments(ctx, SegmentID{}, 0, func(s *Segment) error {
		seen := map[fnet.NodeID]int{}
		for i, p := range s.Pieces {
			if p.Node.IsZero() {
				continue
			}
			if j, ok := seen[p.Node]; ok {
				return fmt.Errorf("segment %s: pieces %d and %d on node %s", s.ID, j, i, p.Node)
			}
			seen[p.Node] = i
			if p.State != PieceHealthy {
				continue
			}
			if got := w.mem.piece(p.Node, p.ID); !bytes.Equal(got, orig[s.ID][i]) { // a repair's deletes of old locations may still run
				return fmt.Errorf("segment %s piece %d: healthy in the contract, but node %s does not hold its bytes", s.ID, i, p.Node)
			}
		}
		healthy[s.ID] = s.Healthy()
		repaired += int64(s.Repaired)
		return nil
	})
	if err != nil {
		w.t.Fatal(err)
	}
	if v, _ := w.store.Counter(ctx, CounterRepaired); v != repaired {
		w.t.Fatalf("repaired counter %d, contracts say %d", v, repaired)
	}
	w.checkTotals()
	return healthy
}

// TestRepairWorkersGiveTheSerialResult: the same degraded state repaired
// by one worker and by eight gives the same counts, every segment fully
// healthy on distinct nodes, and the parallel wave never runs more than
// RepairNodeTransfers transfers on one node.
func TestRepairWorkersGiveTheSerialResult(t *testing.T) {
	serial, orig := degradedWorld(t)
	parallel := serial.clone()
	serial.c.cfg.RepairWorkers = 1
	parallel.c.cfg.RepairWorkers = 8
	slow := newSlowNodes(parallel.mem, 2*time.Millisecond)
	parallel.c.nodes = slow
	ctx := context.Background()

	rs, err := serial.c.RepairScan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rp, err := parallel.c.RepairScan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rs != rp {
		t.Fatalf("serial %+v, parallel %+v", rs, rp)
	}
	// 30 pieces on the gone node, 0+1+2 failed per 3 segments.
	if want := 30 + 30; rs.Segments != 30 || rs.MarkedLost != 30 || rs.Repaired != want || rs.Failed != 0 || rs.Unrecoverable != 0 {
		t.Fatalf("result %+v, want 30 marked lost and %d repaired", rs, want)
	}
	hs, hp := serial.checkContracts(orig), parallel.checkContracts(orig)
	for id, h := range hs {
		if h != 5 || hp[id] != 5 {
			t.Fatalf("segment %s: %d healthy after serial repair, %d after parallel", id, h, hp[id])
		}
		if a, b := serial.segment(id).Repaired, parallel.segment(id).Repaired; a != b {
			t.Fatalf("segment %s: %d pieces repaired serially, %d in parallel", id, a, b)
		}
	}
	slow.mu.Lock()
	defer slow.mu.Unlock()
	for node, n := range slow.maxActive {
		if n > parallel.c.cfg.RepairNodeTransfers {
			t.Errorf("node %s: %d repair transfers at once, limit %d", node, n, parallel.c.cfg.RepairNodeTransfers)
		}
	}
	if slow.maxTotal < 2 {
		t.Errorf("at most %d transfers at once with 8 workers", slow.maxTotal)
	}
}

// TestRepairMostEndangeredFirst: with one worker, segments are repaired
// in order of their healthy pieces above K (fewest first), ties in segment
// id order.
func TestRepairMostEndangeredFirst(t *testing.T) {
	w, orig := degradedWorld(t)
	w.c.cfg.RepairWorkers = 1
	slow := newSlowNodes(w.mem, 0)
	w.c.nodes = slow
	// Which segment each put belongs to, and each segment's margin once
	// the gone node's piece counts as lost.
	owner := map[challenge.PieceID]SegmentID{}
	type item struct {
		id     SegmentID
		margin int
	}
	var want []item
	for id := range orig {
		seg := w.segment(id)
		for _, p := range seg.Pieces {
			owner[p.ID] = id
		}
		want = append(want, item{id, seg.Healthy() - 1 - seg.Scheme.K})
	}
	slices.SortFunc(want, func(a, b item) int {
		if a.margin != b.margin {
			return a.margin - b.margin
		}
		return bytes.Compare(a.id[:], b.id[:])
	})
	if want[0].margin != 0 || want[len(want)-1].margin != 2 {
		t.Fatalf("margins from %d to %d, want 0 to 2", want[0].margin, want[len(want)-1].margin)
	}
	if _, err := w.c.RepairScan(context.Background()); err != nil {
		t.Fatal(err)
	}
	var got []SegmentID
	for _, p := range slow.puts {
		if id := owner[p]; len(got) == 0 || got[len(got)-1] != id {
			got = append(got, id)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("puts went to %d runs of segments, want %d (one per segment)", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i].id {
			t.Fatalf("repair %d was segment %s, want %s (margin %d)", i, got[i], want[i].id, want[i].margin)
		}
	}
}

// TestRepairCancelledMidWave: cancelling the scan while workers are
// placing pieces stops them after the transfer in hand, and leaves every
// contract consistent with what the nodes hold; the next scan finishes the
// job.
func TestRepairCancelledMidWave(t *testing.T) {
	w, orig := degradedWorld(t)
	w.c.cfg.RepairWorkers = 4
	slow := newSlowNodes(w.mem, time.Millisecond)
	w.c.nodes = slow
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const cutAt = 12
	var callsAtCancel int
	slow.onPut = func(n int) {
		if n == cutAt {
			callsAtCancel, _ = slow.counts()
			cancel()
		}
	}
	before := map[SegmentID]int{}
	for id := range orig {
		before[id] = w.segment(id).Healthy() - 1 // the gone node's piece
	}
	done := make(chan error, 1)
	go func() { _, err := w.c.RepairScan(ctx); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled scan: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("repair scan did not stop after its context was cancelled")
	}
	// Each worker may finish the transfer it had in hand; none starts
	// another, but for one that had chosen its node as the scan was
	// cancelled.
	calls, puts := slow.counts()
	if puts < cutAt || puts > cutAt+w.c.cfg.RepairWorkers || calls-callsAtCancel > w.c.cfg.RepairWorkers {
		t.Fatalf("%d puts and %d transfers begun after the cancellation at put %d, with %d workers", puts, calls-callsAtCancel, cutAt, w.c.cfg.RepairWorkers)
	}
	w.c.bg.Wait()
	healthy := w.checkContracts(orig)
	full := 0
	for id, h := range healthy {
		if h < before[id] {
			t.Fatalf("segment %s: %d healthy after the cancelled scan, %d before", id, h, before[id])
		}
		if h == 5 {
			full++
		}
	}
	if full == 0 || full == len(orig) {
		t.Fatalf("%d of %d segments repaired before the cancellation: want some, not all", full, len(orig))
	}
	rr, err := w.c.RepairScan(context.Background())
	if err != nil || rr.Failed != 0 {
		t.Fatalf("scan after the cancelled one: %+v %v", rr, err)
	}
	for id, h := range w.checkContracts(orig) {
		if h != 5 {
			t.Fatalf("segment %s: %d healthy after the second scan", id, h)
		}
	}
}

// TestRepairWorkersDoNotShareAPieceOnANode: two segments with identical
// pieces lose one each and are repaired at the same time; their rebuilt
// pieces, with one id, go to two different nodes (a node keeps one copy of
// a piece id), and both contracts take them.
func TestRepairWorkersDoNotShareAPieceOnANode(t *testing.T) {
	w := newWorld(t, 12)
	w.c.cfg.RepairThreshold = w.c.cfg.Scheme.N
	w.c.cfg.RepairWorkers = 2
	ctx := context.Background()
	acct := w.account()
	pieces, ids := zeroPieces(t, w.c.cfg.Scheme, 400)
	req := &fnet.PlacementRequest{PieceSize: uint64(len(pieces[0])), Pieces: ids}
	orig := map[SegmentID][][]byte{}
	for range 2 {
		pl, err := w.c.Place(ctx, acct, req)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.c.Commit(ctx, acct, &fnet.CommitRequest{Segment: pl.Segment, Pieces: w.put(pl, pieces, ids)}); err != nil {
			t.Fatal(err)
		}
		id := SegmentID(pl.Segment)
		orig[id] = pieces
		seg := w.segment(id)
		seg.Pieces[0].State = PieceLost
		if err := w.store.UpdateSegment(ctx, seg); err != nil {
			t.Fatal(err)
		}
	}
	// Ten nodes hold the piece; two are left for the two repairs, and
	// both puts must be in flight at once.
	slow := newSlowNodes(w.mem, 0)
	slow.barrier = 2
	w.c.nodes = slow
	rr, err := w.c.RepairScan(ctx)
	if err != nil || rr.Repaired != 2 || rr.Failed != 0 {
		t.Fatalf("repair: %+v %v", rr, err)
	}
	targets := map[fnet.NodeID]bool{}
	for id, h := range w.checkContracts(orig) {
		if h != 5 {
			t.Fatalf("segment %s: %d healthy", id, h)
		}
		targets[w.segment(id).Pieces[0].Node] = true
	}
	if len(targets) != 2 {
		t.Fatalf("the two rebuilt pieces went to %d node(s)", len(targets))
	}
}

func TestRepairConfig(t *testing.T) {
	c := testConfig()
	if c.RepairWorkers != DefaultRepairWorkers || c.RepairNodeTransfers != DefaultRepairNodeTransfers {
		t.Fatalf("defaults: %d workers, %d transfers per node", c.RepairWorkers, c.RepairNodeTransfers)
	}
	c.Listen = "127.0.0.1:0"
	for name, edit := range map[string]func(*Config){
		"negative workers":   func(c *Config) { c.RepairWorkers = -1 },
		"too many workers":   func(c *Config) { c.RepairWorkers = MaxRepairWorkers + 1 },
		"negative transfers": func(c *Config) { c.RepairNodeTransfers = -2 },
		"too many transfers": func(c *Config) { c.RepairNodeTransfers = MaxRepairWorkers + 1 },
	} {
		bad := c
		edit(&bad)
		if err := bad.Validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestNodeSlots: a node's slots run out at the limit, pick prefers a
// candidate with a free slot and otherwise waits for the first, and a
// waiter gives up with its context.
func TestNodeSlots(t *testing.T) {
	s := newNodeSlots(2)
	a, b := fnet.NodeID{1}, fnet.NodeID{2}
	if !s.try(a) || !s.try(a) || s.try(a) {
		t.Fatal("limit 2 not kept")
	}
	nodes := []fnet.NodeID{a, b}
	k, err := s.pick(context.Background(), 2, func(k int) fnet.NodeID { return nodes[k] }, nil)
	if err != nil || k != 1 {
		t.Fatalf("pick with a busy first node: %d %v", k, err)
	}
	s.release(b)
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan error, 1)
	go func() {
		_, err := s.pick(ctx, 1, func(int) fnet.NodeID { return a }, nil)
		got <- err
	}()
	cancel()
	if err := <-got; !errors.Is(err, context.Canceled) {
		t.Fatalf("waiting pick after cancel: %v", err)
	}
	go func() {
		_, err := s.pick(context.Background(), 1, func(int) fnet.NodeID { return a }, nil)
		got <- err
	}()
	s.release(a)
	if err := <-got; err != nil {
		t.Fatalf("waiting pick after a release: %v", err)
	}
	if k, _ := s.pick(context.Background(), 2, func(k int) fnet.NodeID { return nodes[k] }, func(int) bool { return false }); k != -1 {
		t.Fatalf("pick with no acceptable candidate: %d", k)
	}
}

// BenchmarkRepairWorkersLatency: segments repaired per second when every
// transfer costs a simulated 5 ms network round trip (memory nodes behind
// slowNodes; the case of nodes across a WAN, where the loopback planet of
// testplanet's BenchmarkRepairWorkers is CPU-bound instead), with one
// worker (the baseline) and with the default workers, on two copies of the
// same degraded state in the same run.
func BenchmarkRepairWorkersLatency(b *testing.B) {
	const rtt = 5 * time.Millisecond
	var serial, parallel time.Duration
	var segments int
	for n := 0; n < b.N; n++ {
		b.StopTimer()
		one, _ := degradedWorld(b)
		def := one.clone()
		one.c.cfg.RepairWorkers = 1
		def.c.cfg.RepairWorkers = DefaultRepairWorkers
		b.StartTimer()
		for _, w := range []*world{one, def} {
			w.c.nodes = newSlowNodes(w.mem, rtt)
			start := time.Now()
			res, err := w.c.RepairScan(context.Background())
			took := time.Since(start)
			if err != nil || res.Failed != 0 || res.Repaired != 60 {
				b.Fatalf("%d workers: %+v %v", w.c.cfg.RepairWorkers, res, err)
			}
			if w == one {
				serial += took
				segments += res.Segments
			} else {
				parallel += took
			}
		}
	}
	b.ReportMetric(float64(segments)/serial.Seconds(), "segments/s_1_worker")
	b.ReportMetric(float64(segments)/parallel.Seconds(), "segments/s_default")
	b.ReportMetric(serial.Seconds()/parallel.Seconds(), "ratio_vs_1_worker")
}
