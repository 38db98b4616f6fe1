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
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// TestSequentialReadPrefetches reads a file of many segments back from the
// network: it comes back intact, the segments after the one being read are
// fetched ahead, and every segment is downloaded exactly once (read-ahead
// neither fetches in vain nor makes a reader fetch again).
func TestSequentialReadPrefetches(t *testing.T) {
	p, home := quietPlanet(t)
	old := MaxSegment
	MaxSegment = SizeClasses[1] // 272 KiB: a few MiB make many segments
	t.Cleanup(func() { MaxSegment = old })
	c := mount(t, p, home, fastConfig())
	data := make([]byte, 3<<20+12345)
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
	data := make([]byte, 3<<20+12345)
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
