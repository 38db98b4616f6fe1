package meta

import (
	"errors"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
)

// TestInodeKeepsEveryField: an inode read back, alone or with GetInodes,
// after a reopen, equals what was written in every field.
func TestInodeKeepsEveryField(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "index")
	keys := testKeys(t, 4)
	x := openTest(t, dir, keys)
	in := Inode{Ino: 9, Mode: 0o100640, Uid: 1001, Gid: 1002, Nlink: 3, Rdev: 0x0801, Size: 1<<40 + 5,
		Atime: 1_700_000_000_000_000_001, Mtime: -2, Ctime: 1_700_000_000_000_000_003, Target: []byte("t")}
	b := x.NewBatch()
	b.PutInode(&in)
	commit(t, b)
	x.Close()
	x = openTest(t, dir, keys)
	defer x.Close()
	got, err := x.GetInode(9)
	if err != nil || !reflect.DeepEqual(got, in) {
		t.Fatalf("inode read back as %+v, %v; want %+v", got, err, in)
	}
	n := 0
	if err := x.GetInodes([]uint64{9}, func(g Inode) {
		n++
		if !reflect.DeepEqual(g, in) {
			t.Errorf("GetInodes: %+v, want %+v", g, in)
		}
	}); err != nil || n != 1 {
		t.Fatalf("GetInodes: %d, %v", n, err)
	}
}

// TestDeletesRemoveTheirRecords: each Delete of a batch removes its record,
// and only it: an xattr, an orphan mark, a location, a segment, an engine
// record.
func TestDeletesRemoveTheirRecords(t *testing.T) {
	x := openTest(t, t.TempDir(), testKeys(t, 4))
	defer x.Close()
	b := x.NewBatch()
	b.PutXattr(5, "user.a", []byte("1"))
	b.PutXattr(5, "user.b", []byte("2"))
	b.AddOrphan(5)
	b.AddOrphan(6)
	b.PutLocation(ChunkID{1}, &Location{Segment: SegmentID{1}, Length: 10})
	b.PutLocation(ChunkID{2}, &Location{Segment: SegmentID{1}, Length: 10})
	b.PutSegment(&Segment{ID: SegmentID{1}, Kind: KindData, State: SegmentDurable, K: 1, N: 1})
	b.PutSegment(&Segment{ID: SegmentID{2}, Kind: KindData, State: SegmentDurable, K: 1, N: 1})
	b.PutRepl("q/1", []byte("x"))
	b.PutRepl("q/2", []byte("y"))
	commit(t, b)
	b = x.NewBatch()
	b.DeleteXattr(5, "user.a")
	b.DeleteOrphan(5)
	b.DeleteLocation(ChunkID{1})
	b.DeleteSegment(SegmentID{1})
	b.DeleteRepl("q/1")
	commit(t, b)
	if _, err := x.GetXattr(5, "user.a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleted xattr: %v", err)
	}
	if v, err := x.GetXattr(5, "user.b"); err != nil || string(v) != "2" {
		t.Errorf("the other xattr: %q, %v", v, err)
	}
	if o, err := x.Orphans(); err != nil || !slices.Equal(o, []uint64{6}) {
		t.Errorf("orphans after deleting 5: %v, %v", o, err)
	}
	if _, err := x.GetLocation(ChunkID{1}); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleted location: %v", err)
	}
	if _, err := x.GetLocation(ChunkID{2}); err != nil {
		t.Errorf("the other location: %v", err)
	}
	if _, err := x.GetSegment(SegmentID{1}); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleted segment: %v", err)
	}
	if _, err := x.GetSegment(SegmentID{2}); err != nil {
		t.Errorf("the other segment: %v", err)
	}
	if _, err := x.GetRepl("q/1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleted engine record: %v", err)
	}
	if v, err := x.GetRepl("q/2"); err != nil || string(v) != "y" {
		t.Errorf("the other engine record: %q, %v", v, err)
	}
}

// TestImportMovesEveryGeneration: an import changes every generation (the
// caches keyed by them are stale), counts the records Export read, and the
// imported index hands out inode numbers past the imported counter.
func TestImportMovesEveryGeneration(t *testing.T) {
	keys := testKeys(t, 5)
	x := openTest(t, filepath.Join(t.TempDir(), "a"), keys)
	defer x.Close()
	var last uint64
	for range 3 {
		ino, err := x.NextIno()
		if err != nil {
			t.Fatal(err)
		}
		last = ino
	}
	b := x.NewBatch()
	b.PutInode(&Inode{Ino: last, Mode: 0o100644, Nlink: 1})
	b.PutDirent(&Dirent{Parent: RootIno, Name: "f", Ino: last, Type: 0o100000})
	b.PutSegment(&Segment{ID: SegmentID{3}, Kind: KindData, State: SegmentDurable, K: 1, N: 1})
	commit(t, b)
	r0 := x.RecordsRead()
	recs := exportAll(t, x.Export)
	if n := x.RecordsRead() - r0; n != int64(len(recs)) {
		t.Errorf("Export of %d records counted %d read", len(recs), n)
	}
	y := openTest(t, filepath.Join(t.TempDir(), "b"), keys)
	defer y.Close()
	gens := func() [4]uint64 {
		return [4]uint64{y.Generation(), y.StateGeneration(), y.SegmentGeneration(), y.DirentGeneration()}
	}
	g0 := gens()
	if err := y.Import(replay(recs)); err != nil {
		t.Fatal(err)
	}
	g1 := gens()
	for i, name := range []string{"Generation", "StateGeneration", "SegmentGeneration", "DirentGeneration"} {
		if g1[i] == g0[i] {
			t.Errorf("an import left %s at %d", name, g0[i])
		}
	}
	ino, err := y.NextIno()
	if err != nil || ino <= last {
		t.Fatalf("NextIno after an import: %d, %v; want more than the imported %d", ino, err, last)
	}

	// A chunk-map record that opens but does not decode: the import
	// commits its records, then the feed's rebuild fails on it. The error
	// is returned, and the generation has moved all the same: the records
	// are in the index.
	key := key16(pChunk, last, 0)
	damaged := append(slices.Clone(recs), exported{key, keys.Meta.Seal(nil, []byte{1, 2, 3}, key)})
	z := openTest(t, filepath.Join(t.TempDir(), "c"), keys)
	defer z.Close()
	g := z.Generation()
	if err := z.Import(replay(damaged)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("import of an undecodable chunk reference: %v, want ErrCorrupt", err)
	}
	if _, err := z.GetInode(last); err != nil {
		t.Fatalf("the import's records: %v", err)
	}
	if z.Generation() == g {
		t.Error("an import whose feed rebuild failed left the generation as it was, its records in the index")
	}
}

// TestWalksCountRecordsRead: a full walk (sequential or parallel) and an
// export count every record they read in RecordsRead (the figure `fincrypt
// check` and the read metrics report), each record once.
func TestWalksCountRecordsRead(t *testing.T) {
	x := everyKindIndex(t)
	it, err := x.db.NewIter(nil)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for ok := it.First(); ok; ok = it.Next() {
		n++
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	for _, w := range []struct {
		name string
		run  func() error
	}{
		{"Walk", func() error { return x.Walk(Visitor{}) }},
		{"WalkParallel", func() error { return x.WalkParallel(Visitor{}) }},
		{"Export", func() error { return x.Export(func(_, _ []byte) error { return nil }) }},
	} {
		r0 := x.RecordsRead()
		if err := w.run(); err != nil {
			t.Fatalf("%s: %v", w.name, err)
		}
		if got := x.RecordsRead() - r0; got != n {
			t.Errorf("%s of an index of %d records counted %d read", w.name, n, got)
		}
	}
}
