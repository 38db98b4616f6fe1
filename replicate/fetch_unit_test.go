package replicate

import (
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/meta"
)

// TestPiecePaceHedge: a fetch asks another node after hedge, or after
// twice the typical piece download when pieces take longer, but never
// later than four times hedge; the typical download follows completed
// ones, each weighing an eighth.
func TestPiecePaceHedge(t *testing.T) {
	const hedge = time.Second
	var nilPace *piecePace
	if got := nilPace.hedgeAfter(hedge); got != hedge {
		t.Fatalf("no pace: %v, want %v", got, hedge)
	}
	var p piecePace
	if got := p.hedgeAfter(hedge); got != hedge {
		t.Fatalf("no download yet: %v, want %v", got, hedge)
	}
	p.note(800 * time.Millisecond)
	if got := time.Duration(p.avg.Load()); got != 800*time.Millisecond {
		t.Fatalf("the first download sets the pace: %v", got)
	}
	if got := p.hedgeAfter(hedge); got != 1600*time.Millisecond {
		t.Fatalf("pace 800ms: hedge after %v, want 1.6s", got)
	}
	p.note(1600 * time.Millisecond) // (7*800+1600)/8 = 900
	if got := time.Duration(p.avg.Load()); got != 900*time.Millisecond {
		t.Fatalf("after a 1.6s download: pace %v, want 900ms", got)
	}
	p.avg.Store(int64(10 * time.Second))
	if got := p.hedgeAfter(hedge); got != 4*hedge {
		t.Fatalf("pace 10s: hedge after %v, want the bound %v", got, 4*hedge)
	}
	p.avg.Store(int64(100 * time.Millisecond))
	if got := p.hedgeAfter(hedge); got != hedge {
		t.Fatalf("pace 100ms: hedge after %v, want %v", got, hedge)
	}
	var z piecePace
	z.note(0)
	if z.avg.Load() != 1 {
		t.Fatalf("a download of no time: pace %d, want 1 (known)", z.avg.Load())
	}
}

// TestTakeChunkMarksSegmentsWhole: a decoded segment is taken whole once
// chunks covering its used bytes have been handed out (each counted once),
// and is then remembered, up to segDoneMax segments, so that read-ahead
// does not fetch it again.
func TestTakeChunkMarksSegmentsWhole(t *testing.T) {
	r := &Replicator{}
	id, unknown := meta.SegmentID{1}, meta.SegmentID{2}
	r.segCache = []cachedSegment{{id: id, used: 100}, {id: meta.SegmentID{3}}}
	r.takeChunk(unknown, meta.Location{Offset: 0, Length: 100}, true)
	r.takeChunk(id, meta.Location{Offset: 0, Length: 40}, true)
	r.takeChunk(id, meta.Location{Offset: 0, Length: 40}, true) // the same chunk again
	if r.segCache[0].whole || r.segCache[0].takenBytes != 40 {
		t.Fatalf("after 40 of 100 bytes (one chunk twice): whole=%v taken %d", r.segCache[0].whole, r.segCache[0].takenBytes)
	}
	r.takeChunk(id, meta.Location{Offset: 40, Length: 59}, true)
	if r.segCache[0].whole {
		t.Fatal("whole with 99 of 100 bytes taken")
	}
	r.takeChunk(id, meta.Location{Offset: 99, Length: 1}, true)
	if !r.segCache[0].whole || len(r.segDone) != 1 || r.segDone[0] != id {
		t.Fatalf("all 100 bytes taken: whole=%v, done %v", r.segCache[0].whole, r.segDone)
	}
	r.takeChunk(id, meta.Location{Offset: 200, Length: 1}, true)
	if len(r.segDone) != 1 {
		t.Fatalf("a whole segment remembered %d times", len(r.segDone))
	}
	// A segment of unknown use is never taken whole.
	r.takeChunk(meta.SegmentID{3}, meta.Location{Offset: 0, Length: 1 << 20}, true)
	if r.segCache[1].whole {
		t.Fatal("a segment of unknown use taken whole")
	}
	// At most segDoneMax are remembered, the oldest forgotten first.
	r.segDone = nil
	for i := range segDoneMax + 1 {
		sid := meta.SegmentID{byte(i), byte(i >> 8), 9}
		r.segCache = append(r.segCache, cachedSegment{id: sid, used: 1})
		r.takeChunk(sid, meta.Location{Length: 1}, true)
	}
	if len(r.segDone) != segDoneMax || r.segDone[0] != (meta.SegmentID{1, 0, 9}) {
		t.Fatalf("%d remembered, the first %v", len(r.segDone), r.segDone[0])
	}
	// A segment one of whose chunks the store did not keep (a stream
	// passed it on) is taken whole but not remembered: streamed again, it
	// is fetched ahead again.
	r.segDone = nil
	streamed := meta.SegmentID{7}
	r.segCache = append(r.segCache, cachedSegment{id: streamed, used: 2})
	r.takeChunk(streamed, meta.Location{Length: 1}, false)
	r.takeChunk(streamed, meta.Location{Offset: 1, Length: 1}, true)
	if c := r.segCache[len(r.segCache)-1]; !c.whole || len(r.segDone) != 0 {
		t.Fatalf("a streamed segment taken whole: whole=%v, remembered %v", c.whole, r.segDone)
	}
}

// TestSegmentBuffersComeBack: a decoded segment's buffer goes back to the
// free list only when the cache and every reader have let it go (never
// while one reads it), the free list is bounded, and a download takes a
// free buffer of its size, else the buffer of a segment taken whole that
// no reader holds.
func TestSegmentBuffersComeBack(t *testing.T) {
	r := &Replicator{}
	full := make([]byte, 64)
	b := &segBuf{data: full[:50], full: full, refs: 2}
	r.releaseLocked(b)
	if b.refs != 1 || len(r.fetchFree) != 0 || b.full == nil {
		t.Fatalf("one of two holders left: refs %d, %d free", b.refs, len(r.fetchFree))
	}
	r.releaseLocked(b)
	if b.refs != 0 || len(r.fetchFree) != 1 || b.data != nil || b.full != nil {
		t.Fatalf("the last holder left: refs %d, %d free, data kept %v", b.refs, len(r.fetchFree), b.data != nil)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("a buffer released twice went unnoticed")
			}
		}()
		r.releaseLocked(b)
	}()
	// Bounded: the oldest free buffer is dropped.
	r.fetchFree = nil
	var first []byte
	for i := range fetchFreeMax + 1 {
		buf := make([]byte, 64)
		if i == 0 {
			first = buf
		}
		r.releaseLocked(&segBuf{data: buf, full: buf, refs: 1})
	}
	if len(r.fetchFree) != fetchFreeMax || &r.fetchFree[0][0] == &first[0] {
		t.Fatalf("%d free buffers kept (want %d), the oldest kept: %v", len(r.fetchFree), fetchFreeMax, &r.fetchFree[0][0] == &first[0])
	}
	// A buffer without its whole array is not kept.
	r.fetchFree = nil
	r.releaseLocked(&segBuf{data: make([]byte, 8), refs: 1})
	if len(r.fetchFree) != 0 {
		t.Fatal("a buffer without its array was kept")
	}

	// takeBuf: a free buffer of the size asked for.
	free := make([]byte, 32)
	r.fetchFree = [][]byte{make([]byte, 16), free}
	if got := r.takeBuf(32); &got[0] != &free[0] || len(r.fetchFree) != 1 || r.bufReuses.Load() != 1 {
		t.Fatalf("a free buffer of the size: reused %v, %d left free", &got[0] == &free[0], len(r.fetchFree))
	}
	// Else a cached segment taken whole that no reader holds; not one
	// being read, nor one not taken whole.
	held, notWhole, idle := make([]byte, 48), make([]byte, 48), make([]byte, 48)
	r.segCache = []cachedSegment{
		{id: meta.SegmentID{1}, whole: true, buf: &segBuf{data: held, full: held, refs: 2}},
		{id: meta.SegmentID{2}, buf: &segBuf{data: notWhole, full: notWhole, refs: 1}},
		{id: meta.SegmentID{3}, whole: true, buf: &segBuf{data: idle, full: idle, refs: 1}},
	}
	got := r.takeBuf(48)
	if &got[0] != &idle[0] || len(r.segCache) != 2 || r.segCache[1].id != (meta.SegmentID{2}) {
		t.Fatalf("took the idle whole segment's buffer: %v; cache left %d", &got[0] == &idle[0], len(r.segCache))
	}
	if got := r.takeBuf(48); &got[0] == &held[0] || &got[0] == &notWhole[0] {
		t.Fatal("took the buffer of a segment being read or not taken whole")
	}
	if r.bufReuses.Load() != 2 {
		t.Fatalf("%d reuses counted, want 2", r.bufReuses.Load())
	}
	// cachedLocked finds a segment and makes it the most recently used.
	if c, ok := r.cachedLocked(meta.SegmentID{1}); !ok || c.id != (meta.SegmentID{1}) || r.segCache[len(r.segCache)-1].id != (meta.SegmentID{1}) {
		t.Fatalf("cachedLocked: %v, %v; order %v", c.id, ok, r.segCache)
	}
	if _, ok := r.cachedLocked(meta.SegmentID{9}); ok {
		t.Fatal("cachedLocked found a segment not cached")
	}
}
