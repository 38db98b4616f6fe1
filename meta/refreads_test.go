package meta

import (
	"testing"
)

// TestRefDeltaReadsOnce: with the RefSum tracked, a batch that writes a
// file's chunk reads the entry it replaces once (for the pending feed), not
// a second time under the RefSum's lock: two point reads a new file's
// batch (the entry and the chunk's location), the same for an overwrite,
// and none read again; the tracked RefSum still equals a walk's. A commit
// that writes the entry between a batch's read and its commit makes that
// batch read it again, and the RefSum stays exact.
func TestRefDeltaReadsOnce(t *testing.T) {
	x := openTest(t, t.TempDir(), testKeys(t, 9))
	start, err := x.WalkRefSum()
	if err != nil {
		t.Fatal(err)
	}
	x.TrackRefs(start)
	check := func(when string) {
		t.Helper()
		walked, err := x.WalkRefSum()
		if err != nil {
			t.Fatal(err)
		}
		if tracked, _ := x.TrackedRefs(); tracked != walked {
			t.Fatalf("%s: tracked RefSum %+v, a walk's %+v", when, tracked, walked)
		}
	}
	chunk := func(ino uint64, v byte) *ChunkRef {
		var id ChunkID
		id[0], id[1], id[2] = byte(ino), byte(ino>>8), v
		return &ChunkRef{ID: id, Version: uint64(v) + 1, Len: 100}
	}
	const files = 200
	p0 := x.PointsRead()
	for ino := uint64(2); ino < 2+files; ino++ {
		b := x.NewBatch()
		b.PutInode(&Inode{Ino: ino, Mode: 0o100644, Nlink: 1, Size: 100})
		b.PutChunk(ino, 0, chunk(ino, 1))
		if err := b.Commit(false); err != nil {
			t.Fatal(err)
		}
	}
	if n := x.PointsRead() - p0; n != 2*files {
		t.Fatalf("%d point reads for %d new files' batches, want %d", n, files, 2*files)
	}
	check("after new files")
	p0 = x.PointsRead()
	for ino := uint64(2); ino < 2+files; ino++ {
		b := x.NewBatch()
		b.PutChunk(ino, 0, chunk(ino, 2))
		if err := b.Commit(false); err != nil {
			t.Fatal(err)
		}
	}
	if n := x.PointsRead() - p0; n != 2*files {
		t.Fatalf("%d point reads for %d overwrites, want %d", n, files, 2*files)
	}
	if n := x.RefRereads(); n != 0 {
		t.Fatalf("%d values read again with no commit in between", n)
	}
	check("after overwrites")

	// A commit in between: the batch's value is stale.
	a := x.NewBatch()
	a.PutChunk(2, 0, chunk(2, 3)) // reads version 2
	c := x.NewBatch()
	c.PutChunk(2, 0, chunk(2, 4))
	if err := c.Commit(false); err != nil {
		t.Fatal(err)
	}
	d := x.NewBatch()
	d.DeleteChunk(3, 0) // reads, then another batch deletes it first
	e := x.NewBatch()
	e.DeleteChunk(3, 0)
	if err := e.Commit(false); err != nil {
		t.Fatal(err)
	}
	if err := a.Commit(false); err != nil {
		t.Fatal(err)
	}
	if err := d.Commit(false); err != nil {
		t.Fatal(err)
	}
	if n := x.RefRereads(); n != 2 {
		t.Fatalf("%d values read again after commits wrote them, want 2", n)
	}
	check("after commits in between")
}

// TestAbsentKeysSkipTables: a lookup of a key the index's tables do not
// hold (a new file's chunk entry, a new chunk's location: most point reads
// of a mount's writes) is answered by the tables' bloom filters, without
// reading their data blocks.
func TestAbsentKeysSkipTables(t *testing.T) {
	x := openTest(t, t.TempDir(), testKeys(t, 4))
	b := x.NewBatch()
	for ino := uint64(2); ino < 2002; ino++ {
		b.PutChunk(ino, 0, &ChunkRef{ID: ChunkID{byte(ino), byte(ino >> 8)}, Version: 1, Len: 10})
	}
	if err := b.Commit(false); err != nil {
		t.Fatal(err)
	}
	if err := x.Flush(); err != nil { // into a table
		t.Fatal(err)
	}
	before := x.db.Metrics().Filter.Hits
	for ino := uint64(10_000); ino < 10_500; ino++ {
		if _, ok, err := x.GetChunk(ino, 0); ok || err != nil {
			t.Fatalf("absent chunk %d: %v %v", ino, ok, err)
		}
	}
	if hits := x.db.Metrics().Filter.Hits - before; hits < 400 {
		t.Fatalf("%d of 500 lookups of absent keys answered by a filter", hits)
	}
}
