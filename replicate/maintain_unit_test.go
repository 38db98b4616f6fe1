package replicate

import (
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/chunkstore"
	"github.com/fincrypt/fincrypt/meta"
	"github.com/fincrypt/fincrypt/vault"
)

// TestMaintainWalkDecides: a maintenance walk marks a data segment that
// holds no live chunk dead (never a snapshot segment), repacks a durable
// data segment whose live bytes fell below RepackBelow of its use (its
// live chunks back in the local store and pending again, its dead ones
// left), leaves a degraded or well-used one alone, and releases a dead
// segment only once ReleaseDelay has passed and a snapshot newer than its
// death was stored (a release needs the mediator: offline, the walk stops
// with the network's error and the segment stays).
func TestMaintainWalkDecides(t *testing.T) {
	r := offlineReplicator(t, func(c *Config) { c.ReleaseDelay = time.Hour })
	const ino = 50
	type seg struct {
		id         byte
		kind       meta.SegmentKind
		state      meta.SegmentState
		used       uint32
		live, dead []uint32 // chunk lengths
		deadSince  time.Time
	}
	long := time.Now().Add(-3 * time.Hour)
	segs := []seg{
		{id: 1, kind: meta.KindData, state: meta.SegmentDurable, used: 1000, live: []uint32{300}, dead: []uint32{700}}, // 30 %: kept
		{id: 2, kind: meta.KindData, state: meta.SegmentDurable, used: 1000, live: []uint32{100, 100}, dead: []uint32{800}},
		{id: 3, kind: meta.KindData, state: meta.SegmentDegraded, used: 1000, live: []uint32{100}, dead: []uint32{900}},
		{id: 4, kind: meta.KindData, state: meta.SegmentDurable, used: 1000, dead: []uint32{1000}},
		{id: 5, kind: meta.KindSnapshot, state: meta.SegmentDurable, used: 1000},
		{id: 6, kind: meta.KindData, state: meta.SegmentDurable, used: 1000, dead: []uint32{1000}, deadSince: long},    // no snapshot since
		{id: 7, kind: meta.KindData, state: meta.SegmentDurable, used: 1000, live: []uint32{250}, dead: []uint32{750}}, // exactly 25 %: kept
	}
	chunks := map[byte][]meta.ChunkID{}
	live := map[meta.ChunkID]bool{}
	pos := uint64(0)
	commit(t, r.idx, func(b *meta.Batch) {
		for _, s := range segs {
			ms := &meta.Segment{ID: meta.SegmentID{s.id}, Kind: s.kind, State: s.state, K: 2, N: 4, Healthy: 4, Class: 4096, Used: s.used}
			if !s.deadSince.IsZero() {
				ms.DeadSince = s.deadSince.UnixNano()
			}
			b.PutSegment(ms)
			off := uint32(0)
			for i, n := range append(append([]uint32{}, s.live...), s.dead...) {
				id := chunkstore.NewID()
				chunks[s.id] = append(chunks[s.id], id)
				if i < len(s.live) {
					live[id] = true
					b.PutChunk(ino, pos, &meta.ChunkRef{ID: id, Version: 1, Len: n})
					pos++
				}
				b.PutLocation(id, &meta.Location{Segment: ms.ID, Offset: off, Length: n})
				off += n
			}
		}
	})
	// Every live chunk is still local: a repack could take any of them.
	for id := range live {
		if err := r.store.Put(id, []byte("live chunk")); err != nil {
			t.Fatal(err)
		}
	}
	r.snapCovers = time.Now().Add(-4 * time.Hour) // before segment 6 died
	if err := r.maintainWalk(r.idx.Generation(), r.snapCovers); err != nil {
		t.Fatalf("walk: %v", err)
	}
	get := func(id byte) meta.Segment {
		t.Helper()
		s, err := r.idx.GetSegment(meta.SegmentID{id})
		if err != nil {
			t.Fatalf("segment %d: %v", id, err)
		}
		return s
	}
	if len(r.errs) != 0 {
		t.Errorf("the walk noted errors: %+v", r.errs)
	}
	pending := pendingIDs(t, r.idx)
	// A chunk queued again carries its sealed size (segment 2's live chunks
	// hold 100 bytes each).
	pend, err := r.pending()
	if err != nil || len(pend) != 2 {
		t.Fatalf("pending after the repack: %d chunks, %v", len(pend), err)
	}
	for _, c := range pend {
		if c.size != 100+vault.Overhead {
			t.Errorf("chunk %s queued again with size %d, want %d", c.id, c.size, 100+vault.Overhead)
		}
	}
	located := func(id meta.ChunkID) bool { _, err := r.idx.GetLocation(id); return err == nil }
	for _, c := range []struct {
		id     byte
		dead   bool
		repack bool
	}{{1, false, false}, {2, false, true}, {3, false, false}, {4, true, false}, {5, false, false}, {6, true, false}, {7, false, false}} {
		s := get(c.id)
		if (s.DeadSince != 0) != c.dead {
			t.Errorf("segment %d: dead=%v, want %v", c.id, s.DeadSince != 0, c.dead)
		}
		for _, id := range chunks[c.id] {
			wantLoc := !(c.repack && live[id])
			if located(id) != wantLoc {
				t.Errorf("segment %d, chunk %s (live %v): located=%v, want %v", c.id, id, live[id], located(id), wantLoc)
			}
			if wantPending := c.repack && live[id]; pending[id] != wantPending {
				t.Errorf("segment %d, chunk %s (live %v): pending=%v, want %v", c.id, id, live[id], pending[id], wantPending)
			}
		}
	}
	if d := time.Since(time.Unix(0, get(4).DeadSince)); d < 0 || d > time.Minute {
		t.Errorf("segment 4 died %v ago, want now", d)
	}
	if want := uint64(300 + 200 + 100 + 250); r.st.LiveBytes != want {
		t.Errorf("live bytes %d, want %d", r.st.LiveBytes, want)
	}

	// A snapshot after segment 6's death: it is due, and the release is
	// asked of the (offline) mediator; the segment stays until it answers.
	r.snapCovers = time.Now()
	err = r.maintainWalk(r.idx.Generation(), r.snapCovers)
	six := meta.SegmentID{6}
	if err == nil || !strings.Contains(err.Error(), hex.EncodeToString(six[:])) {
		t.Fatalf("a due release of segment 6 with the mediator offline: %v, want the release of segment 6 failing", err)
	}
	if _, err := r.idx.GetSegment(meta.SegmentID{6}); err != nil {
		t.Fatalf("segment 6 gone though its release failed: %v", err)
	}
	for _, id := range chunks[6] {
		if !located(id) {
			t.Fatalf("segment 6's chunk %s lost its location though the release failed", id)
		}
	}
	// Segment 4 died just now: not due, whatever the snapshot.
	if _, err := r.idx.GetSegment(meta.SegmentID{4}); err != nil {
		t.Fatalf("segment 4 released before ReleaseDelay: %v", err)
	}
}

// TestRepackRefusesWhatItCannotKeep: a repack whose live chunk cannot be
// read back stops with an error and changes nothing: the chunk keeps its
// location in the old segment.
func TestRepackRefusesWhatItCannotKeep(t *testing.T) {
	r := offlineReplicator(t, nil)
	s := meta.Segment{ID: meta.SegmentID{1}, Kind: meta.KindData, State: meta.SegmentDurable, K: 2, N: 4, Healthy: 4, Class: 4096, Used: 1000}
	ids := []meta.ChunkID{chunkstore.NewID(), chunkstore.NewID()}
	commit(t, r.idx, func(b *meta.Batch) {
		b.PutSegment(&s)
		for i, id := range ids {
			b.PutChunk(60, uint64(i), &meta.ChunkRef{ID: id, Version: 1, Len: 10})
			b.PutLocation(id, &meta.Location{Segment: s.ID, Offset: uint32(10 * i), Length: 10})
		}
	})
	if err := r.store.Put(ids[0], []byte("here")); err != nil {
		t.Fatal(err)
	}
	// ids[1] is neither local nor fetchable (no fetcher: offline).
	err := r.repack(s, ids, []liveRef{{ino: 60, idx: 0, size: 26}, {ino: 60, idx: 1, size: 26}})
	if err == nil || !strings.Contains(err.Error(), "repacking segment") {
		t.Fatalf("repack with a chunk unreadable: %v", err)
	}
	for i, id := range ids {
		if _, err := r.idx.GetLocation(id); err != nil {
			t.Fatalf("chunk %d lost its location after a failed repack: %v", i, err)
		}
	}
}
