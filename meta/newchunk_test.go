package meta

import (
	"testing"
)

// TestPutNewChunkReadsNothing: a fresh chunk put at a position that holds
// none (a new file's chunk) costs no point read, where PutChunk reads the
// entry it replaces and the chunk's location (2 reads); replacing an entry
// costs the one read of that entry. The pending feed and the tracked
// RefSum come out as PutChunk's: the new chunks pending, the replaced one
// not, and the RefSum equal to a walk's.
func TestPutNewChunkReadsNothing(t *testing.T) {
	x := openTest(t, t.TempDir(), testKeys(t, 6))
	defer x.Close()
	start, err := x.WalkRefSum()
	if err != nil {
		t.Fatal(err)
	}
	x.TrackRefs(start)
	const ino = 9
	a := ChunkRef{ID: ChunkID{0xa1}, Version: 1, Len: 100}
	b2 := ChunkRef{ID: ChunkID{0xb2}, Version: 2, Len: 200}
	c := ChunkRef{ID: ChunkID{0xc3}, Version: 3, Len: 300}

	b := x.NewBatch()
	b.PutInode(&Inode{Ino: ino, Mode: 0o100644, Nlink: 1, Size: 100})
	before := x.PointsRead()
	b.PutNewChunk(ino, 0, &a, true)
	b.PutNewChunk(ino, 1, &b2, true)
	if n := x.PointsRead() - before; n != 0 {
		t.Fatalf("%d point reads to put two new chunks at empty positions, want none", n)
	}
	if err := b.Commit(false); err != nil {
		t.Fatal(err)
	}

	// Chunk 0 again, over a: one read (the entry replaced), and a leaves the feed.
	b = x.NewBatch()
	before = x.PointsRead()
	b.PutNewChunk(ino, 0, &c, false)
	if n := x.PointsRead() - before; n != 1 {
		t.Fatalf("%d point reads to replace a chunk, want 1 (the entry replaced)", n)
	}
	if err := b.Commit(false); err != nil {
		t.Fatal(err)
	}

	pending := map[ChunkID]Pending{}
	if err := x.PendingChunks(func(p Pending) error { pending[p.ID] = p; return nil }); err != nil {
		t.Fatal(err)
	}
	if len(pending) != 2 || pending[b2.ID].Index != 1 || pending[c.ID].Index != 0 || pending[c.ID].Owner != ino {
		t.Fatalf("pending feed %v, want chunks %s (index 1) and %s (index 0) of inode %d", pending, b2.ID, c.ID, ino)
	}
	got, ok := x.TrackedRefs()
	want, err := x.WalkRefSum()
	if err != nil {
		t.Fatal(err)
	}
	if !ok || got != want || want.N != 2 {
		t.Fatalf("tracked RefSum %d %x (tracking %v), a walk gives %d %x (want 2 references)", got.N, got.Sum, ok, want.N, want.Sum)
	}
}
