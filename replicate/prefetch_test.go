package replicate

import (
	"bytes"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/internal/readwin"
	"github.com/fincrypt/fincrypt/mediator"
	"github.com/fincrypt/fincrypt/mediator/testplanet"
	"github.com/fincrypt/fincrypt/meta"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// TestSequentialReadPrefetches reads a file of many segments back from the
// network: it comes back intact, the segments after the one being read are
// fetched ahead, every segment is downloaded exactly once (read-ahead
// neither fetches in vain nor makes a reader fetch again), and the
// downloads reuse the buffers of segments already taken whole: as many
// new ones as downloads can be under way at once, however long the file,
// not one per segment (a new 16 MiB buffer is faulted in page by page,
// which cost a restore more than the copy into it).
func TestSequentialReadPrefetches(t *testing.T) {
	p, home := quietPlanet(t)
	old := MaxSegment
	MaxSegment = SizeClasses[1] // 272 KiB: a few MiB make many segments
	t.Cleanup(func() { MaxSegment = old })
	c := mount(t, p, home, fastConfig())
	data := make([]byte, 8<<20+12345) // 31 segments
	rand.New(rand.NewSource(5)).Read(data)
	if err := os.WriteFile(filepath.Join(c.mnt, "seq"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	// Uploads wait for nodes that a loaded machine (or -race) leaves
	// behind on their heartbeats: the bound is generous, the wait ends
	// when done.
	c.waitSyncedFor(t, "sequential file", 4*time.Minute)
	c.dropCaches(t)
	c.rep.dropSegmentCache()
	segs := 0
	for _, s := range segmentPieces(t, c.rep.idx) {
		if s.Kind == meta.KindData {
			segs++
		}
	}
	if segs < 8 {
		t.Fatalf("%d data segments: the test wants many", segs)
	}
	fetched, ahead := c.rep.segFetches.Load(), c.rep.prefetched.Load()
	failed := counterValue(t, c.rep.fetches.errors)
	reused := c.rep.bufReuses.Load()

	f, err := os.Open(filepath.Join(c.mnt, "seq"))
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	_, err = io.CopyBuffer(&got, f, make([]byte, 64<<10))
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), data) {
		t.Fatalf("read back %d bytes that differ from the %d written", got.Len(), len(data))
	}
	c.rep.prefetches.Wait() // none still running is counted short
	n, pre := c.rep.segFetches.Load()-fetched, c.rep.prefetched.Load()-ahead
	// A download that failed (a node refusing under load) is not kept, and
	// the read that needs the segment downloads it again: each segment is
	// downloaded once with success.
	bad := int64(counterValue(t, c.rep.fetches.errors) - failed)
	if n-bad != int64(segs) {
		t.Fatalf("%d segment downloads (%d failed) for %d data segments (%d of them read-ahead)", n, bad, segs, pre)
	}
	if bad > 0 {
		t.Logf("%d of %d downloads failed and were made again", bad, n)
	}
	if pre == 0 {
		t.Fatalf("a sequential read of %d segments fetched none ahead", segs)
	}
	// The downloads that can be under way at once: the kernel reads ahead
	// of the reader up to the mount's read-ahead window (1 MiB, spanning
	// up to window/MaxSegment+1 segments, all read in parallel), and
	// prefetchAhead segments are fetched past the last of them; and as
	// many again whose chunks the reader is still taking. A failed
	// download's buffer is not reused either. (One new buffer a segment
	// would be 31; a bound counting only the reader's own segment failed
	// about 1 run in 8, with 7 new buffers for 12 segments.)
	window := int64(fuse.MAX_KERNEL_WRITE/MaxSegment + 1)
	bound := 2*(window+prefetchAhead) + bad
	if fresh := n - (c.rep.bufReuses.Load() - reused); fresh > bound {
		t.Fatalf("%d of %d segment downloads took a new buffer, want at most %d", fresh, n, bound)
	}
}

// TestSegmentBufferReuse: a decoded segment's buffer goes to another
// download only once nothing reads it: not while a reader copies a chunk
// out of it (it holds a reference), not while the cache keeps it for
// chunks not yet taken, and once the last reference is released, or the
// segment was taken whole and only the cache holds it.
func TestSegmentBufferReuse(t *testing.T) {
	r := &Replicator{fetching: map[meta.SegmentID]*fetchCall{}}
	const n = 1 << 10
	seg := func(id byte, whole bool, refs int) *segBuf {
		full := make([]byte, n)
		full[0] = id
		b := &segBuf{data: full[:n-7], full: full, refs: refs}
		r.segCache = append(r.segCache, cachedSegment{id: meta.SegmentID{id}, buf: b, data: b.data, whole: whole})
		return b
	}
	same := func(a, b []byte) bool { return &a[0] == &b[0] }
	partial := seg(1, false, 1) // chunks still to take
	read := seg(2, true, 2)     // taken whole, a reader still copying
	if b := r.takeBuf(n); same(b, partial.full) || same(b, read.full) {
		t.Fatalf("a download took the buffer of segment %d, still in use", b[0])
	}
	if len(r.segCache) != 2 {
		t.Fatalf("%d segments cached, want both", len(r.segCache))
	}
	r.release(read) // the reader is done: only the cache holds it
	full := read.full
	if b := r.takeBuf(n); !same(b, full) {
		t.Fatal("a download took a new buffer while a segment taken whole was held by the cache alone")
	}
	if len(r.segCache) != 1 || r.segCache[0].buf != partial || read.refs != 0 {
		t.Fatalf("the segment taken whole still cached (%d segments) or referenced (%d)", len(r.segCache), read.refs)
	}
	if b := r.takeBuf(n / 2); same(b, partial.full) {
		t.Fatal("a download took a buffer of another size")
	}
	// The cache lets the partial segment go while a reader holds it: the
	// buffer is free only at the reader's release.
	partial.refs++
	r.fetchMu.Lock()
	r.releaseLocked(partial)
	r.fetchMu.Unlock()
	if len(r.fetchFree) != 0 {
		t.Fatal("a buffer a reader holds was freed")
	}
	pf := partial.full
	r.release(partial)
	if len(r.fetchFree) != 1 || !same(r.fetchFree[0], pf) {
		t.Fatal("the last release did not free the buffer")
	}
	if b := r.takeBuf(n); !same(b, pf) || r.bufReuses.Load() != 2 {
		t.Fatalf("a download did not take the freed buffer (%d reuses)", r.bufReuses.Load())
	}
}

// TestReorderedReadFetchesEachSegmentOnce asks the store for a file's
// chunks in an order the file system's read-ahead window may produce (the
// kernel's read-ahead requests overtaking each other by a few MiB): the
// first segments, then a jump ahead to a segment read whole and the first
// chunk of the one after, then everything between, then the rest. Every
// segment is downloaded once: the one whose first chunk was taken early
// stays decoded while eight others are fetched and read, until its other
// chunks are asked for. The segment cache used to keep the 8 most recently
// used segments, and downloaded that one (and the one before it, fetched
// again by read-ahead) twice: 14 downloads for 12 segments.
func TestReorderedReadFetchesEachSegmentOnce(t *testing.T) {
	p, home := quietPlanet(t)
	old := MaxSegment
	MaxSegment = SizeClasses[1]
	t.Cleanup(func() { MaxSegment = old })
	c := mount(t, p, home, fastConfig())
	data := make([]byte, 8<<20+12345) // 31 segments
	rand.New(rand.NewSource(6)).Read(data)
	if err := os.WriteFile(filepath.Join(c.mnt, "seq"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	c.waitSyncedFor(t, "file to read out of order", 4*time.Minute) // as above
	c.dropCaches(t)
	c.rep.dropSegmentCache()

	// The file's chunks in order, and the segment that holds each,
	// numbered in the order the file reaches them (a segment flushed
	// partly filled may have been stored out of that order).
	var ids []meta.ChunkID
	c.rep.idx.Walk(meta.Visitor{Chunk: func(_, i uint64, ref meta.ChunkRef) {
		for uint64(len(ids)) <= i {
			ids = append(ids, meta.ChunkID{})
		}
		ids[i] = ref.ID
	}})
	num := map[meta.SegmentID]int{}
	segOf := make([]int, len(ids))
	for i, id := range ids {
		loc, err := c.rep.idx.GetLocation(id)
		if err != nil {
			t.Fatalf("chunk %d: %v", i, err)
		}
		if _, ok := num[loc.Segment]; !ok {
			num[loc.Segment] = len(num)
		}
		segOf[i] = num[loc.Segment]
	}
	segs := len(num)
	if segs < 12 || !slices.IsSorted(segOf) {
		t.Fatalf("the file's chunks in %d segments, in the order %v: the test wants 12 or more, each read from one run of chunks", segs, segOf)
	}
	// Read up to the first chunk of the second segment; jump to the
	// segment before the last, read it whole and the first chunk of the
	// last; then read the rest in order.
	first := func(seg int) int { return slices.Index(segOf, seg) }
	jump := first(segs - 2)
	if gap := uint64(jump - first(1)); gap > readwin.ReorderChunks(uint64(c.v.KeyFile.ChunkSize)) {
		t.Fatalf("a jump of %d chunks: the file system would not take it as sequential", gap)
	}
	var seq []int
	for i := 0; i <= first(1); i++ {
		seq = append(seq, i)
	}
	for i := jump; i <= first(segs-1); i++ {
		seq = append(seq, i)
	}
	for i := range ids {
		if !slices.Contains(seq, i) {
			seq = append(seq, i)
		}
	}
	fetched := c.rep.segFetches.Load()
	failed := counterValue(t, c.rep.fetches.errors)
	for _, i := range seq {
		if _, err := c.rep.store.Get(ids[i], nil); err != nil {
			t.Fatalf("chunk %d: %v", i, err)
		}
	}
	c.rep.prefetches.Wait()
	n := c.rep.segFetches.Load() - fetched
	bad := int64(counterValue(t, c.rep.fetches.errors) - failed)
	if n-bad != int64(segs) {
		t.Fatalf("%d segment downloads (%d failed) for %d data segments, chunks read in the order %v", n, bad, segs, seq)
	}
}

// quietPlanet is planetAndVault with challenges every 10 minutes, not every
// second: under the race detector on a loaded machine, nodes answered a
// round a second late, were disqualified, and the uploads these tests wait
// for found one node that qualified (4 needed) for minutes.
func quietPlanet(t *testing.T) (*testplanet.Planet, string) {
	return planetWithVault(t, testplanet.Config{StorageNodes: 5,
		Reconfigure: func(c *mediator.Config) { c.Period = 10 * time.Minute }})
}

// counterValue is a counter's value.
func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
