package replicate

import (
	"strings"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/chunkstore"
	"github.com/fincrypt/fincrypt/meta"
	"github.com/fincrypt/fincrypt/vault"
)

// pendingIDs is the set of chunks on the index's pending feed.
func pendingIDs(t *testing.T, idx *meta.Index) map[meta.ChunkID]bool {
	t.Helper()
	out := map[meta.ChunkID]bool{}
	if err := idx.PendingChunks(func(p meta.Pending) error { out[p.ID] = true; return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestPlanPending: pending chunks are packed into segments in file order
// (by inode, then position), each segment filled up to MaxSegment and no
// further; a full segment goes at once, a partly filled one only once its
// oldest chunk has waited FlushAfter or something waits for it, never
// when asked for full segments only; chunks already in an upload are left
// out (but counted pending), and a chunk bigger than any segment is
// reported, not planned.
func TestPlanPending(t *testing.T) {
	old := MaxSegment
	MaxSegment = SizeClasses[1]
	t.Cleanup(func() { MaxSegment = old })
	r := offlineReplicator(t, func(c *Config) { c.FlushAfter = time.Hour })
	half := MaxSegment / 2
	type chunk struct {
		ino, idx uint64
		size     int // sealed
	}
	add := func(cs ...chunk) []meta.ChunkID {
		ids := make([]meta.ChunkID, len(cs))
		commit(t, r.idx, func(b *meta.Batch) {
			for i, c := range cs {
				ids[i] = chunkstore.NewID()
				b.PutChunk(c.ino, c.idx, &meta.ChunkRef{ID: ids[i], Version: 1, Len: uint32(c.size - vault.Overhead)})
			}
		})
		return ids
	}
	// Written out of order: file 9's chunks first, then file 5's.
	ids := add(chunk{9, 1, half}, chunk{9, 0, half / 2}, chunk{5, 1, half}, chunk{5, 0, half})
	// file 5: two halves fill a segment exactly; file 9: 1/4 + 1/2 after.
	want := [][]meta.ChunkID{{ids[3], ids[2]}}
	check := func(what string, plan []*plannedSegment, want [][]meta.ChunkID) {
		t.Helper()
		if len(plan) != len(want) {
			t.Fatalf("%s: %d segments planned, want %d", what, len(plan), len(want))
		}
		for i, p := range plan {
			used := 0
			for j, c := range p.chunks {
				used += c.size
				if j >= len(want[i]) || c.id != want[i][j] {
					t.Fatalf("%s: segment %d holds chunk %d = %s, want %v", what, i, j, c.id, want[i])
				}
			}
			if len(p.chunks) != len(want[i]) || used != p.used || used > MaxSegment {
				t.Fatalf("%s: segment %d: %d chunks, %d bytes (counted %d), want %d chunks, at most %d", what, i, len(p.chunks), used, p.used, len(want[i]), MaxSegment)
			}
		}
	}
	check("full only", r.planPending(true), want)
	check("a partly filled segment that has not waited", r.planPending(false), want)
	if r.st.PendingChunks != 4 || r.st.PendingFiles != 2 || r.st.PendingBytes != uint64(3*half+half/2) {
		t.Fatalf("status: %d chunks, %d files, %d bytes pending", r.st.PendingChunks, r.st.PendingFiles, r.st.PendingBytes)
	}
	partial := []meta.ChunkID{ids[1], ids[0]}
	check("full only, something waits", func() []*plannedSegment {
		r.flushing = true
		defer func() { r.flushing = false }()
		return r.planPending(true)
	}(), want)
	check("something waits", func() []*plannedSegment {
		r.flushing = true
		defer func() { r.flushing = false }()
		return r.planPending(false)
	}(), [][]meta.ChunkID{want[0], partial})
	// The partly filled segment's oldest chunk has waited FlushAfter.
	r.firstSeen[ids[0]] = time.Now().Add(-2 * time.Hour)
	check("waited", r.planPending(false), [][]meta.ChunkID{want[0], partial})
	check("waited, full only", r.planPending(true), want)
	if seen := r.firstSeen[ids[0]]; time.Since(seen) < time.Hour {
		t.Fatalf("a chunk's first sighting moved to %v", seen)
	}
	// Chunks in an upload are left out, still counted pending.
	r.inflight[ids[3]] = struct{}{}
	r.inflight[ids[2]] = struct{}{}
	check("file 5 in flight", r.planPending(false), [][]meta.ChunkID{partial})
	if r.st.PendingChunks != 4 {
		t.Fatalf("%d chunks pending with two in flight, want 4", r.st.PendingChunks)
	}
	// Only in-flight chunks: nothing planned, the wait not reset.
	r.inflight[ids[0]] = struct{}{}
	r.inflight[ids[1]] = struct{}{}
	if plan := r.planPending(false); len(plan) != 0 {
		t.Fatalf("%d segments planned with every chunk in flight", len(plan))
	}
	clear(r.inflight)

	// A chunk of exactly the largest segment is planned alone; one byte
	// more is reported and left out.
	r2 := offlineReplicator(t, func(c *Config) { c.FlushAfter = time.Hour })
	r = r2
	big := add(chunk{3, 0, MaxSegment}, chunk{3, 1, MaxSegment + 1}, chunk{3, 2, 100})
	check("the largest chunks", r.planPending(true), [][]meta.ChunkID{{big[0]}})
	if len(r.errs) != 1 || !strings.Contains(r.errs[0].msg, "exceeds the largest segment") || !strings.Contains(r.errs[0].msg, big[1].String()) {
		t.Fatalf("a chunk bigger than a segment: errors %v", r.errs)
	}
	// Once nothing is pending the feed is not read again until the index
	// changes; its first sightings are forgotten.
	commit(t, r.idx, func(b *meta.Batch) {
		for i, id := range big {
			b.PutLocation(id, &meta.Location{Segment: meta.SegmentID{1}, Offset: uint32(i), Length: 1})
		}
	})
	if plan := r.planPending(false); len(plan) != 0 || len(r.firstSeen) != 0 || r.st.PendingChunks != 0 {
		t.Fatalf("nothing pending: %d planned, %d first sightings kept, %d pending", len(plan), len(r.firstSeen), r.st.PendingChunks)
	}
	if r.settledGen != r.idx.Generation()+1 {
		t.Fatalf("settled at %d, the index is at %d", r.settledGen, r.idx.Generation())
	}
}

// TestPlanPendingLastFull: a segment filled exactly, or so nearly that no
// chunk fits in what is left (less than a sealed empty chunk), goes at
// once even as the last of the pending list, also when the round asks for
// full segments only; one with room for an empty chunk waits. Before, the
// last segment of the list waited for the next overflow or FlushAfter
// however full it was: a round that looked for full segments mid-round
// left it out.
func TestPlanPendingLastFull(t *testing.T) {
	old := MaxSegment
	MaxSegment = SizeClasses[1]
	t.Cleanup(func() { MaxSegment = old })
	half := MaxSegment / 2
	for _, tc := range []struct {
		name  string
		sizes []int // sealed sizes of one file's chunks
		full  bool
	}{
		{"exactly full", []int{half, MaxSegment - half}, true},
		{"no room for an empty chunk", []int{half, MaxSegment - half - vault.Overhead + 1}, true},
		{"room for an empty chunk", []int{half, MaxSegment - half - vault.Overhead}, false},
		{"one chunk of the whole segment", []int{MaxSegment}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := offlineReplicator(t, func(c *Config) { c.FlushAfter = time.Hour })
			ids := make([]meta.ChunkID, len(tc.sizes))
			commit(t, r.idx, func(b *meta.Batch) {
				for i, n := range tc.sizes {
					ids[i] = chunkstore.NewID()
					b.PutChunk(7, uint64(i), &meta.ChunkRef{ID: ids[i], Version: 1, Len: uint32(n - vault.Overhead)})
				}
			})
			for _, fullOnly := range []bool{true, false} {
				plan := r.planPending(fullOnly)
				if !tc.full {
					if len(plan) != 0 {
						t.Fatalf("full only %v: a segment with room for a chunk, not waited, was planned", fullOnly)
					}
					continue
				}
				if len(plan) != 1 || len(plan[0].chunks) != len(ids) {
					t.Fatalf("full only %v: %d segments planned, want the full one", fullOnly, len(plan))
				}
				for i, c := range plan[0].chunks {
					if c.id != ids[i] {
						t.Fatalf("full only %v: chunk %d is %s, want %s", fullOnly, i, c.id, ids[i])
					}
				}
			}
		})
	}
}

// TestForgetGone: after a pack, a planned chunk that was not packed leaves
// the pending feed only when it is gone from the store and its file no
// longer references it (superseded). One its file still references stays
// pending (check reports it), as do an owner-less one, one still in the
// store (left for another segment) and the packed ones (their location
// clears them).
func TestForgetGone(t *testing.T) {
	r := offlineReplicator(t, nil)
	const ino = 40
	ids := make([]meta.ChunkID, 5)
	for i := range ids {
		ids[i] = chunkstore.NewID()
	}
	commit(t, r.idx, func(b *meta.Batch) {
		for i, id := range ids[:4] {
			b.PutChunk(ino, uint64(i), &meta.ChunkRef{ID: id, Version: 1, Len: 100})
		}
		b.MarkPending(ids[4], 0, 0, 200) // owner-less (a backup blob)
	})
	planned := make([]pendingChunk, len(ids))
	for i, id := range ids {
		planned[i] = pendingChunk{id: id, ino: ino, index: uint64(i), size: 100 + vault.Overhead}
	}
	planned[4].ino, planned[4].index = 0, 0
	if err := r.store.Put(ids[2], []byte("still here")); err != nil {
		t.Fatal(err)
	}
	// Chunk 1 superseded: its file now holds another chunk there.
	commit(t, r.idx, func(b *meta.Batch) {
		b.PutChunk(ino, 1, &meta.ChunkRef{ID: chunkstore.NewID(), Version: 2, Len: 100})
	})
	// Chunk 3's file dropped the position.
	commit(t, r.idx, func(b *meta.Batch) { b.DeleteChunk(ino, 3) })
	// The feed drops a superseded chunk of a file itself; a repack's mark
	// can outlive that (queued again from an older walk): marked here
	// without an owner, as the plan still names their old place.
	commit(t, r.idx, func(b *meta.Batch) {
		b.MarkPending(ids[1], 0, 0, 100+vault.Overhead)
		b.MarkPending(ids[3], 0, 0, 100+vault.Overhead)
	})
	before := pendingIDs(t, r.idx)
	for i, id := range ids {
		if !before[id] {
			t.Fatalf("chunk %d not pending before the pack", i)
		}
	}
	r.forgetGone(planned, []meta.ChunkID{ids[0]})
	p := pendingIDs(t, r.idx)
	for i, want := range []bool{true, false, true, false, true} {
		if p[ids[i]] != want {
			t.Errorf("chunk %d: pending=%v, want %v", i, p[ids[i]], want)
		}
	}
}

// TestTrimDue: with a cache limit the store is trimmed after every commit
// or fetch (cacheDirty), and otherwise every evictEvery once the index
// changed; without one it is only counted, at most every CountInterval,
// after a change.
func TestTrimDue(t *testing.T) {
	const gen = 7
	long := time.Now().Add(-time.Hour)
	for _, c := range []struct {
		name      string
		limit     uint64
		dirty     bool
		evictGen  uint64
		lastEvict time.Time
		want      bool
	}{
		{"limit, dirty, just trimmed", 1, true, gen + 1, time.Now(), true},
		{"limit, index changed, just trimmed", 1, false, gen, time.Now(), false},
		{"limit, index changed, trimmed long ago", 1, false, gen, long, true},
		{"limit, nothing changed, trimmed long ago", 1, false, gen + 1, long, false},
		{"no limit, dirty, just counted", 0, true, gen + 1, time.Now(), false},
		{"no limit, dirty, counted long ago", 0, true, gen + 1, long, true},
		{"no limit, index changed, counted long ago", 0, false, gen, long, true},
		{"no limit, nothing changed, counted long ago", 0, false, gen + 1, long, false},
	} {
		r := &Replicator{cfg: Config{CacheSize: c.limit, CountInterval: time.Minute}, evictEvery: time.Minute,
			cacheDirty: c.dirty, evictGen: c.evictGen, lastEvict: c.lastEvict}
		if got := r.trimDueLocked(gen); got != c.want {
			t.Errorf("%s: trim due %v, want %v", c.name, got, c.want)
		}
	}
}

// TestCleanIntents: at start, an upload intent whose segment the index
// recorded is dropped without a word to the mediator; one whose segment
// it never recorded is released first, and kept while the mediator cannot
// be reached (the next round tries again). Records of other lengths under
// the prefix are not intents.
func TestCleanIntents(t *testing.T) {
	r := offlineReplicator(t, nil)
	recorded, lost := meta.SegmentID{1}, meta.SegmentID{2}
	commit(t, r.idx, func(b *meta.Batch) {
		b.PutSegment(&meta.Segment{ID: recorded, Kind: meta.KindData, State: meta.SegmentDurable, K: 2, N: 4, Healthy: 4, Class: 4096})
		b.PutRepl(intentName(recorded), nil)
		b.PutRepl(intentName(lost), nil)
		b.PutRepl("up/short", nil)
	})
	intents := func() map[string]bool {
		out := map[string]bool{}
		r.idx.ReplRecords("up/", func(name string, _ []byte) error { out[name] = true; return nil })
		return out
	}
	err := r.cleanIntents()
	if err == nil {
		t.Fatal("releasing with the mediator unreachable: no error")
	}
	got := intents()
	if got[intentName(recorded)] || !got[intentName(lost)] || !got["up/short"] {
		t.Fatalf("intents left: %v; want only the unreleased one and the odd record", got)
	}
	// abandon, the mediator unreachable: the intent stays, retried later.
	r.intentsLeft = false
	r.abandon(lost)
	if !intents()[intentName(lost)] || !r.intentsLeft {
		t.Fatalf("abandon without the mediator: intent kept %v, retry set %v", intents()[intentName(lost)], r.intentsLeft)
	}
}

// TestUint64Codec: the big-endian codec of the engine's time records.
func TestUint64Codec(t *testing.T) {
	for _, v := range []uint64{0, 1, 0x0102030405060708, 1<<64 - 1} {
		b := putUint64(v)
		if len(b) != 8 || beUint64(b) != v {
			t.Fatalf("%#x: encoded %x, decoded %#x", v, b, beUint64(b))
		}
	}
	if b := putUint64(0x0102030405060708); b[0] != 1 || b[7] != 8 {
		t.Fatalf("not big-endian: %x", b)
	}
}
