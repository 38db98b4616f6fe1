package meta

import (
	"errors"
	"syscall"
	"testing"

	"github.com/cockroachdb/pebble/v2"
)

// TestPinnedAndItsCache: Pinned says which chunks a version pins; whether
// the index holds pins at all is read once (one record), not again on
// every call.
func TestPinnedAndItsCache(t *testing.T) {
	x := openTest(t, t.TempDir(), testKeys(t, 3))
	defer x.Close()
	b := x.NewBatch()
	b.PutInode(&Inode{Ino: 5})
	commit(t, b)
	// Pins written below PutPin, as an index reopened with pins has them.
	key := pinKey(ChunkID{1})
	if err := x.db.Set(key, x.keys.Meta.Seal(nil, (&Pin{Ino: 5}).encode(), key), pebble.NoSync); err != nil {
		t.Fatal(err)
	}
	if p, err := x.Pinned(ChunkID{1}); err != nil || !p {
		t.Fatalf("Pinned of a pinned chunk: %v, %v", p, err)
	}
	r0 := x.RecordsRead()
	for range 10 {
		if p, err := x.Pinned(ChunkID{2}); err != nil || p {
			t.Fatalf("Pinned of a chunk not pinned: %v, %v", p, err)
		}
	}
	if n := x.RecordsRead() - r0; n != 0 {
		t.Fatalf("10 calls of Pinned read %d records (whether pins exist is known)", n)
	}
}

// TestSegmentGenerationMoves: a batch that writes a segment record moves
// SegmentGeneration; one that does not leaves it.
func TestSegmentGenerationMoves(t *testing.T) {
	x := openTest(t, t.TempDir(), testKeys(t, 3))
	defer x.Close()
	g := x.SegmentGeneration()
	b := x.NewBatch()
	b.PutInode(&Inode{Ino: 5})
	commit(t, b)
	if x.SegmentGeneration() != g {
		t.Fatal("a batch of no segment moved SegmentGeneration")
	}
	b = x.NewBatch()
	b.PutSegment(&Segment{ID: SegmentID{1}, Kind: KindData, State: SegmentDurable, K: 1, N: 1})
	commit(t, b)
	if x.SegmentGeneration() == g {
		t.Fatal("a segment written left SegmentGeneration as it was")
	}
}

// TestViewReleasesItsSnapshot: a view's close function releases what it
// holds: the index then closes without leaked snapshots.
func TestViewReleasesItsSnapshot(t *testing.T) {
	x := openTest(t, t.TempDir(), testKeys(t, 3))
	v, done := x.View()
	if _, err := v.GetInode(5); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	done()
	if err := x.Close(); err != nil {
		t.Fatalf("Close after a view was closed: %v", err)
	}
}

// TestLockDrops: while a version holds LockDrops, TryLockDrops fails; once
// it lets go, TryLockDrops takes it (and holds it against another try).
func TestLockDrops(t *testing.T) {
	x := openTest(t, t.TempDir(), testKeys(t, 3))
	defer x.Close()
	unlock := x.LockDrops()
	if _, ok := x.TryLockDrops(); ok {
		t.Fatal("TryLockDrops took the lock a version holds")
	}
	unlock()
	u2, ok := x.TryLockDrops()
	if !ok {
		t.Fatal("TryLockDrops failed on a free lock")
	}
	if _, ok := x.TryLockDrops(); ok {
		t.Fatal("TryLockDrops took a lock already taken")
	}
	u2()
}

// TestTreeCacheRecords: version cache records are kept per kind and inode,
// and a delete removes only its own.
func TestTreeCacheRecords(t *testing.T) {
	x := openTest(t, t.TempDir(), testKeys(t, 3))
	defer x.Close()
	b := x.NewBatch()
	b.PutTreeCache(TreeCacheDir, 1, []byte("d1"))
	b.PutTreeCache(TreeCacheDir, 2, []byte("d2"))
	b.PutTreeCache(TreeCacheParents, 1, []byte("p1"))
	commit(t, b)
	for _, c := range []struct {
		kind byte
		ino  uint64
		want string
	}{{TreeCacheDir, 1, "d1"}, {TreeCacheDir, 2, "d2"}, {TreeCacheParents, 1, "p1"}} {
		if v, err := x.GetTreeCache(c.kind, c.ino); err != nil || string(v) != c.want {
			t.Fatalf("tree cache %c %d: %q, %v; want %q", c.kind, c.ino, v, err, c.want)
		}
	}
	b = x.NewBatch()
	b.DeleteTreeCache(TreeCacheDir, 1)
	commit(t, b)
	if _, err := x.GetTreeCache(TreeCacheDir, 1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted tree cache record: %v", err)
	}
	if v, err := x.GetTreeCache(TreeCacheDir, 2); err != nil || string(v) != "d2" {
		t.Fatalf("the other tree cache record: %q, %v", v, err)
	}
}

// TestPinReadErrorFailsTheBatch: an overwrite whose replaced chunk's pin
// cannot be read (the disk fails) is refused with the disk's error: the
// batch cannot tell whether a version still needs that chunk.
func TestPinReadErrorFailsTheBatch(t *testing.T) {
	old := ChunkID{0x0d}
	// The pin alone in a table; everything else in memory.
	x, failing := failingIndex(t, func(b *Batch) {
		k := pinKey(old)
		if err := b.x.db.Set(k, b.x.keys.Meta.Seal(nil, (&Pin{Ino: 9}).encode(), k), pebble.NoSync); err != nil {
			t.Fatal(err)
		}
	})
	b := x.NewBatch()
	b.PutPin(ChunkID{0x99}, Pin{Ino: 8}) // the index knows it holds pins
	b.PutChunk(2, 0, &ChunkRef{ID: old, Version: 1, Len: 10})
	commit(t, b)
	failing.Store(true)
	b = x.NewBatch()
	b.PutChunk(2, 0, &ChunkRef{ID: ChunkID{0x0e}, Version: 1, Len: 10})
	err := b.Commit(false)
	failing.Store(false)
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("an overwrite whose old chunk's pin does not read: Commit %v, want EIO", err)
	}
	if got, ok, err := x.GetChunk(2, 0); err != nil || !ok || got.ID != old {
		t.Fatalf("the entry after a refused overwrite: %+v, %v, %v", got, ok, err)
	}
}
