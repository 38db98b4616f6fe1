package replicate

import (
	"errors"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/meta"
)

// The free list keeps its buffers across garbage collections (a sync.Pool
// loses them), holds no more than it is told to, and drop empties it.
func TestBufListKeepsBuffersAcrossCollections(t *testing.T) {
	var l bufList
	a := l.get(1 << 20)
	if len(*a) != 0 || cap(*a) < 1<<20 {
		t.Fatalf("got len %d cap %d", len(*a), cap(*a))
	}
	*a = append(*a, 1, 2, 3)
	l.put(a, 2)
	runtime.GC()
	runtime.GC()
	if b := l.get(1 << 20); b != a || len(*b) != 0 {
		t.Fatalf("after two collections: a new buffer (%p, not %p) or not emptied (len %d)", b, a, len(*b))
	}
	if n := l.made.Load(); n != 1 {
		t.Fatalf("%d buffers made, want 1", n)
	}
	// At most keep buffers are kept.
	bufs := []*[]byte{a, l.get(1 << 20), l.get(1 << 20)}
	for _, b := range bufs {
		l.put(b, 2)
	}
	got := map[*[]byte]bool{l.get(1 << 20): true, l.get(1 << 20): true}
	if !got[bufs[0]] || !got[bufs[1]] {
		t.Fatal("the first two buffers put back were not kept")
	}
	made := l.made.Load()
	if l.get(1<<20) == bufs[2] || l.made.Load() != made+1 {
		t.Fatal("a buffer beyond the limit was kept")
	}
	// A kept buffer too small for the size asked for is not handed out.
	small := l.get(10)
	l.put(small, 2)
	if l.get(1<<20) == small {
		t.Fatal("a 10-byte buffer was handed out for 1 MiB")
	}
	l.put(a, 2)
	l.drop()
	if l.get(1<<20) == a {
		t.Fatal("drop kept a buffer")
	}
}

// Full segments uploaded one after another, in rounds of their own and
// with garbage collections in between (an upload runs several), share one
// segment buffer: the second allocates no new one. With a sync.Pool every
// collection threw the buffer away.
func TestFullSegmentsReuseTheirBuffer(t *testing.T) {
	e := newEngine(t, nil)
	rng := rand.New(rand.NewPCG(3, 4))
	sizes := make([]int, 9) // 9 MiB: more than half the largest segment
	for i := range sizes {
		sizes[i] = 1 << 20
	}
	ids1, data := e.addChunks(t, rng, sizes...)
	ids2, data2 := e.addChunks(t, rng, sizes...)
	for id, d := range data2 {
		data[id] = d
	}
	// Each in a round of its own, as when a writer is slower than the
	// uploads.
	p1, p2 := e.planFor(t, ids1), e.planFor(t, ids2)
	if err := e.r.uploadAll([]*plannedSegment{p1}); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	runtime.GC()
	if err := e.r.uploadAll([]*plannedSegment{p2}); err != nil {
		t.Fatal(err)
	}
	// Counted by the list: the process's allocation counts also hold the
	// planet's (its nodes receive the pieces in this process, into buffers
	// the collections just emptied), which came to more than a segment
	// buffer's worth under load.
	if n := e.r.segBufs.made.Load(); n != 1 {
		t.Fatalf("%d segment buffers allocated for two full segments in a row, want 1", n)
	}
	e.checkUploaded(t, data, nil)
	// A round with nothing to upload leaves the buffer to the collector.
	if err := e.r.uploadPending(); err != nil {
		t.Fatal(err)
	}
	e.r.segBufs.mu.Lock()
	kept := len(e.r.segBufs.free)
	e.r.segBufs.mu.Unlock()
	if kept != 0 {
		t.Fatalf("an idle round kept %d segment buffers", kept)
	}
}

// The upload intent is synced while the pieces upload, not before them:
// when its batch is about to be written, pieces are already stored on
// nodes (and the mediator has committed nothing: the commit waits for the
// intent). The segment ends up durable with its intent deleted.
func TestIntentSyncsWhilePiecesUpload(t *testing.T) {
	e := newEngine(t, nil)
	rng := rand.New(rand.NewPCG(5, 6))
	ids, data := e.addChunks(t, rng, 1<<20, 1<<20)
	p := e.planFor(t, ids)
	var (
		mu                sync.Mutex
		hooked, sawPieces bool
		intentsAtHook     int
	)
	e.r.faults.SetHook(func(work string) {
		if work != "upload intent" {
			return
		}
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			e.r.mu.Lock()
			done := e.r.st.UploadDone
			e.r.mu.Unlock()
			if done > 0 {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		e.r.mu.Lock()
		done := e.r.st.UploadDone
		e.r.mu.Unlock()
		n := 0
		e.idx.ReplRecords("up/", func(string, []byte) error { n++; return nil })
		mu.Lock()
		hooked, sawPieces, intentsAtHook = true, done > 0, n
		mu.Unlock()
	})
	e.upload(t, p)
	e.r.faults.SetHook(nil)
	mu.Lock()
	defer mu.Unlock()
	if !hooked || !sawPieces {
		t.Fatalf("intent hook ran: %v; pieces stored before the intent's batch: %v", hooked, sawPieces)
	}
	if intentsAtHook != 0 {
		t.Fatalf("%d intents recorded before the intent's batch", intentsAtHook)
	}
	e.checkUploaded(t, data, nil)
	n := 0
	e.idx.ReplRecords("up/", func(string, []byte) error { n++; return nil })
	if n != 0 {
		t.Fatalf("%d intents left after a durable upload", n)
	}
}

// An intent that cannot be recorded fails the upload before the mediator
// commits anything: no segment is recorded, its chunks stay pending, and a
// panic while recording it (in a goroutine of its own) is contained.
func TestIntentFailureReleasesTheSegment(t *testing.T) {
	e := newEngine(t, nil)
	rng := rand.New(rand.NewPCG(7, 8))
	ids, data := e.addChunks(t, rng, 1<<20)
	p := e.planFor(t, ids)
	before := e.dataSegments()
	e.r.faults.SetHook(func(work string) {
		if work == "upload intent" {
			panic("injected fault in the intent")
		}
	})
	err := e.r.uploadSegment(p)
	e.r.faults.SetHook(nil)
	if err == nil || !strings.Contains(err.Error(), "recording upload intent") {
		t.Fatalf("upload with a failing intent: %v", err)
	}
	if _, err := e.idx.GetLocation(ids[0]); err == nil {
		t.Fatal("a chunk got a location though its segment's intent failed")
	}
	if n := e.dataSegments(); n != before {
		t.Fatalf("%d data segments recorded, %d before", n, before)
	}
	// The chunks are still pending and upload in another segment.
	e.upload(t, e.planFor(t, ids))
	e.checkUploaded(t, data, nil)
}

// A full segment's worth of chunks written while the engine waits for its
// next scan (an hour away here) is uploaded at once: the index wakes the
// engine (meta.Index.OnPending). Before, a large write's first upload
// began up to a scan interval (2 s by default) after its first segment
// was filled; here it would wait the hour. The partly filled segment
// after it still waits for FlushAfter.
func TestFullSegmentUploadsWithoutWaitingForAScan(t *testing.T) {
	e := newEngine(t, func(c *Config) { c.noWake = false }) // the wake under test
	rng := rand.New(rand.NewPCG(5, 6))
	sizes := make([]int, 17) // 16 fill the largest segment, one is left over
	for i := range sizes {
		sizes[i] = 1 << 20
	}
	ids, _ := e.addChunks(t, rng, sizes...)
	located := func(id meta.ChunkID) bool { return e.located(t, id) }
	waitFor(t, "a full segment's upload without a scan (the engine waits for its next one)", 2*time.Minute,
		func() bool { return located(ids[0]) && located(ids[15]) })
	for _, id := range ids[:16] {
		if !located(id) {
			t.Fatalf("chunk %s of the full segment has no location", id)
		}
	}
	if located(ids[16]) {
		t.Fatal("the chunk of a partly filled segment was uploaded before FlushAfter")
	}
}

// A sync asked for while a round's uploads run sends the partly filled
// segment it waits for at once, beside them: before, the round took only
// full segments, and the last part of a large write went alone in a
// round of its own after the round's slowest upload.
func TestSyncSendsThePartSegmentBesideRunningUploads(t *testing.T) {
	e := newEngine(t, func(c *Config) { c.noWake = false }) // the wake under test
	held, second, release := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	var mu sync.Mutex
	uploads := 0
	e.r.faults.SetHook(func(work string) {
		if work != "upload segment" {
			return
		}
		mu.Lock()
		uploads++
		n := uploads
		mu.Unlock()
		switch n {
		case 1: // the full segment: held until the test lets it go
			close(held)
			<-release
		case 2:
			close(second)
		}
	})
	rng := rand.New(rand.NewPCG(7, 8))
	sizes := make([]int, 17) // a full segment and one chunk left over
	for i := range sizes {
		sizes[i] = 1 << 20
	}
	ids, _ := e.addChunks(t, rng, sizes...)
	wait := func(c chan struct{}, what string) {
		t.Helper()
		select {
		case <-c:
		case <-time.After(2 * time.Minute):
			t.Fatalf("%s: not within 2 minutes", what)
		}
	}
	wait(held, "the full segment's upload starting")
	e.r.RequestSync()
	wait(second, "the part segment's upload starting while the full one's runs")
	once.Do(func() { close(release) })
	waitFor(t, "both segments' uploads", 2*time.Minute, func() bool { return e.located(t, ids[0]) && e.located(t, ids[16]) })
}

// located reports whether chunk id has a location in the index (a
// committed upload).
func (e *engine) located(t *testing.T, id meta.ChunkID) bool {
	t.Helper()
	_, err := e.idx.GetLocation(id)
	if err != nil && !errors.Is(err, meta.ErrNotFound) {
		t.Fatal(err)
	}
	return err == nil
}

// The benchmarks' count of slot time lost to rounds cut at streamFor
// (Replicator.drained): a round that is not cut adds none; a cut round
// adds at most its slots' time from the cut to its end; and the slots
// stay counted idle from that end until the next round launches an
// upload. Each bound holds however slow the machine: the test measures
// the intervals the count must cover or stay within from outside.
func TestDrainedCountsTheSlotsACutRoundLeftIdle(t *testing.T) {
	e := newEngine(t, nil)
	slots := int64(e.r.cfg.Parallel)
	rng := rand.New(rand.NewPCG(9, 10))
	plan := func() *plannedSegment { // small: the test's time is the uploads'
		ids, _ := e.addChunks(t, rng, 64<<10, 64<<10)
		return e.planFor(t, ids)
	}
	// Not cut: streamFor is far away.
	e.r.streamFor = time.Hour
	if err := e.r.uploadAll([]*plannedSegment{plan()}); err != nil {
		t.Fatal(err)
	}
	if d := e.r.drained.Load(); d != 0 {
		t.Fatalf("a round that ran out of work counted %v of drained slots", time.Duration(d))
	}
	// Cut at once: the round stops taking segments when a slot frees.
	e.r.streamFor = 0
	t0 := time.Now()
	if err := e.r.uploadAll([]*plannedSegment{plan(), plan()}); err != nil {
		t.Fatal(err)
	}
	t1 := time.Now()
	cut := e.r.drained.Load()
	if hi := slots * int64(t1.Sub(t0)); cut > hi {
		t.Fatalf("a cut round counted %v of drained slots, more than its %d slots over its %v", time.Duration(cut), slots, t1.Sub(t0))
	}
	// The next round's first upload ends the wait: every slot was idle
	// from the cut round's end (between t0 and t1) until the launch
	// (between t2 and t3).
	for time.Since(t1) < 50*time.Millisecond {
		time.Sleep(10 * time.Millisecond) // an interval to measure, not a wait for an event
	}
	e.r.streamFor = time.Hour
	p := plan()
	t2 := time.Now()
	if err := e.r.uploadAll([]*plannedSegment{p}); err != nil {
		t.Fatal(err)
	}
	t3 := time.Now()
	gap := e.r.drained.Load() - cut
	if lo, hi := slots*int64(t2.Sub(t1)), slots*int64(t3.Sub(t0)); gap < lo || gap > hi {
		t.Fatalf("between a cut round and the next upload %v of drained slots, want %v to %v", time.Duration(gap), time.Duration(lo), time.Duration(hi))
	}
	// A round with nothing to upload means no work waited: the gap after
	// a cut round then counts nothing.
	e.r.streamFor = 0
	if err := e.r.uploadAll([]*plannedSegment{plan(), plan()}); err != nil {
		t.Fatal(err)
	}
	if err := e.r.uploadPending(); err != nil {
		t.Fatal(err)
	}
	before := e.r.drained.Load()
	e.r.streamFor = time.Hour
	if err := e.r.uploadAll([]*plannedSegment{plan()}); err != nil {
		t.Fatal(err)
	}
	if d := e.r.drained.Load() - before; d != 0 {
		t.Fatalf("an upload after an idle round counted %v of drained slots", time.Duration(d))
	}
}
