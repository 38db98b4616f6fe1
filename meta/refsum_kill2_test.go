package meta

import (
	"encoding/binary"
	"testing"

	"github.com/cockroachdb/pebble/v2"
)

// trackedIndex opens an index that tracks its RefSum from a walk, and
// returns a check that the tracked RefSum is still a walk's.
func trackedIndex(t *testing.T) (*Index, func(when string)) {
	t.Helper()
	x := openTest(t, t.TempDir(), testKeys(t, 7))
	t.Cleanup(func() { x.Close() })
	start, err := x.WalkRefSum()
	if err != nil {
		t.Fatal(err)
	}
	x.TrackRefs(start)
	return x, func(when string) {
		t.Helper()
		walked, err := x.WalkRefSum()
		if err != nil {
			t.Fatal(err)
		}
		if tracked, ok := x.TrackedRefs(); !ok || tracked != walked {
			t.Fatalf("%s: tracked RefSum %x/%d (%v), a walk's %x/%d", when, tracked.Sum, tracked.N, ok, walked.Sum, walked.N)
		}
	}
}

// TestRefDeltaTrustsFreshReads: a batch's read of a chunk-map entry is used
// as it is (not read again under the RefSum's lock) when no commit wrote
// that entry after the read: when the commit that wrote it came just
// before the read (an overwrite of the chunk just written, the common
// case of a mount), and when commits in between wrote other entries.
func TestRefDeltaTrustsFreshReads(t *testing.T) {
	x, check := trackedIndex(t)
	ref := func(v byte) *ChunkRef { return &ChunkRef{ID: ChunkID{0xcc, v}, Version: uint64(v), Len: 10} }
	b := x.NewBatch()
	b.PutChunk(2, 0, ref(1))
	commit(t, b)
	b = x.NewBatch()
	b.PutChunk(2, 0, ref(2)) // reads what the last commit wrote
	commit(t, b)
	if n := x.RefRereads(); n != 0 {
		t.Fatalf("an overwrite of the entry the last commit wrote: %d values read again, want 0", n)
	}
	a := x.NewBatch()
	a.PutChunk(3, 0, ref(3))
	for i := range 3 {
		o := x.NewBatch()
		o.PutChunk(4, uint64(i), ref(byte(4+i)))
		commit(t, o)
	}
	commit(t, a)
	if n := x.RefRereads(); n != 0 {
		t.Fatalf("commits of other entries in between: %d values read again, want 0", n)
	}
	check("after fresh reads")
}

// TestRefWritesForgetPastTheirBound: the keys written since a batch read
// are remembered up to refWritesMax of them; the commit that would take
// them past it forgets them all, so that a batch that read before it reads
// again. Up to the bound exactly nothing is forgotten (no read again).
func TestRefWritesForgetPastTheirBound(t *testing.T) {
	x, check := trackedIndex(t)
	b := x.NewBatch()
	b.DeleteBlob(ChunkID{0xee}) // the first commit: 1 key remembered
	commit(t, b)
	a := x.NewBatch()
	a.PutChunk(5, 0, &ChunkRef{ID: ChunkID{5}, Version: 1, Len: 10})
	big := x.NewBatch()
	for i := range refWritesMax - 1 { // 1 + max-1: exactly the bound
		var id ChunkID
		binary.BigEndian.PutUint32(id[:], uint32(i))
		id[15] = 0xbb
		big.DeleteBlob(id)
	}
	commit(t, big)
	a2 := x.NewBatch()
	a2.PutChunk(6, 0, &ChunkRef{ID: ChunkID{6}, Version: 1, Len: 10})
	commit(t, a) // past the bound: forgets
	if n := x.RefRereads(); n != 0 {
		t.Fatalf("writes up to exactly the bound: %d values read again, want 0", n)
	}
	commit(t, a2)
	if n := x.RefRereads(); n != 1 {
		t.Fatalf("a batch that read before the writes were forgotten: %d values read again, want 1", n)
	}
	check("past the bound")
}

// TestRefSumNamesEachField: a chunk reference's element depends on each of
// its inode, index, chunk id and version, so that the RefSum changes when
// any one changes (a record moved or altered behind the index's back).
func TestRefSumNamesEachField(t *testing.T) {
	base := ChunkRef{ID: ChunkID{1, 2, 3}, Version: 7, Len: 10}
	e := chunkElem(2, 3, &base)
	other := base
	other.ID[15] = 9
	later := base
	later.Version = 8
	for what, f := range map[string]refElem{
		"another inode":   chunkElem(3, 3, &base),
		"another index":   chunkElem(2, 4, &base),
		"another chunk":   chunkElem(2, 3, &other),
		"another version": chunkElem(2, 3, &later),
	} {
		if f == e {
			t.Errorf("a chunk reference with %s has the same element", what)
		}
	}
	if blobElem(ChunkID{1}, 5) == blobElem(ChunkID{2}, 5) || blobElem(ChunkID{1}, 5) == blobElem(ChunkID{1}, 6) {
		t.Error("blobs of another id or length have the same element")
	}
	// In an index: moving a reference to another inode changes the sum.
	x := openTest(t, t.TempDir(), testKeys(t, 7))
	defer x.Close()
	b := x.NewBatch()
	b.PutChunk(2, 3, &base)
	commit(t, b)
	s1, err := x.WalkRefSum()
	if err != nil {
		t.Fatal(err)
	}
	b = x.NewBatch()
	b.DeleteChunk(2, 3)
	b.PutChunk(3, 3, &base)
	commit(t, b)
	s2, err := x.WalkRefSum()
	if err != nil {
		t.Fatal(err)
	}
	if s1 == s2 {
		t.Fatal("a reference moved to another inode left the RefSum as it was")
	}
}

// TestTrackedRefSumOverDamagedChunkRef: TrackRefs makes a batch that read
// a chunk-map entry before it read the entry again at its commit. When the
// entry is by then damaged (it opens but does not decode) the tracked
// RefSum takes off the damaged record's element, as the walk that gave
// TrackRefs its start counted it, and stays a walk's.
func TestTrackedRefSumOverDamagedChunkRef(t *testing.T) {
	x, _ := trackedIndex(t)
	b := x.NewBatch()
	b.PutChunk(5, 0, &ChunkRef{ID: ChunkID{1}, Version: 1, Len: 4})
	commit(t, b)
	a := x.NewBatch()
	a.PutChunk(5, 0, &ChunkRef{ID: ChunkID{2}, Version: 1, Len: 4}) // reads the sound one
	key := key16(pChunk, 5, 0)
	if err := x.db.Set(key, x.keys.Meta.Seal(nil, []byte{1, 2, 3}, key), pebble.NoSync); err != nil {
		t.Fatal(err)
	}
	start, err := x.WalkRefSum()
	if err != nil {
		t.Fatal(err)
	}
	x.TrackRefs(start) // from the index as it is now, damage included
	commit(t, a)
	walked, err := x.WalkRefSum()
	if err != nil {
		t.Fatal(err)
	}
	if tracked, ok := x.TrackedRefs(); !ok || tracked != walked {
		t.Fatalf("tracked RefSum %x/%d, a walk's %x/%d", tracked.Sum, tracked.N, walked.Sum, walked.N)
	}
	if n := x.RefRereads(); n != 1 {
		t.Fatalf("%d values read again, want 1 (read before TrackRefs)", n)
	}
}
