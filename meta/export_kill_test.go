package meta

import (
	"encoding/binary"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

type exported struct{ key, sealed []byte }

func exportAll(t *testing.T, export func(fn func(key, sealed []byte) error) error) []exported {
	t.Helper()
	var out []exported
	if err := export(func(k, v []byte) error {
		out = append(out, exported{slices.Clone(k), slices.Clone(v)})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func replay(recs []exported) func(fn func(key, sealed []byte) error) error {
	return func(fn func(key, sealed []byte) error) error {
		for _, r := range recs {
			if err := fn(r.key, r.sealed); err != nil {
				return err
			}
		}
		return nil
	}
}

// TestExportStateNamesWhatIsNotUploaded: a snapshot's export holds every
// record but the engine's state, the pending feed and the version cache,
// and names each chunk a restore would miss exactly once: chunk references
// and blobs and pins without a location (a chunk two files reference, or a
// pinned chunk its file still references, once), never a located one.
func TestExportStateNamesWhatIsNotUploaded(t *testing.T) {
	x := openTest(t, filepath.Join(t.TempDir(), "index"), testKeys(t, 5))
	defer x.Close()
	seg := testSegment(1, 1)
	b := x.NewBatch()
	b.PutSegment(&seg)
	located := ChunkID{0x10}
	b.PutChunk(20, 0, &ChunkRef{ID: located, Version: 1, Len: 3})
	b.PutLocation(located, &Location{Segment: seg.ID, Length: 30})
	shared := ChunkID{0x11} // two files, no location
	b.PutChunk(20, 1, &ChunkRef{ID: shared, Version: 1, Len: 3})
	b.PutChunk(21, 0, &ChunkRef{ID: shared, Version: 1, Len: 3})
	pinnedRef := ChunkID{0x12} // a file references it and a version pins it
	b.PutChunk(21, 1, &ChunkRef{ID: pinnedRef, Version: 1, Len: 3})
	b.PutPin(pinnedRef, Pin{Ino: 21, Index: 1, Version: 1, Len: 3})
	blob := ChunkID{0x13}
	b.PutBlob(blob, 9)
	locBlob := ChunkID{0x14}
	b.PutBlob(locBlob, 9)
	b.PutLocation(locBlob, &Location{Segment: seg.ID, Offset: 30, Length: 30})
	pin := ChunkID{0x15}
	b.PutPin(pin, Pin{Ino: 22, Index: 0, Version: 1, Len: 3})
	b.PutRepl("queue/1", []byte("x"))
	b.PutTreeCache(TreeCacheDir, RootIno, []byte("d"))
	b.PutInode(&Inode{Ino: RootIno, Mode: 0o40755, Nlink: 2})
	if err := b.Commit(false); err != nil {
		t.Fatal(err)
	}
	var missing []ChunkID
	recs := exportAll(t, func(fn func(key, sealed []byte) error) error {
		var err error
		missing, err = x.ExportState(fn)
		return err
	})
	want := []ChunkID{shared, pinnedRef, blob, pin}
	slices.SortFunc(missing, func(a, b ChunkID) int { return strings.Compare(string(a[:]), string(b[:])) })
	if !slices.Equal(missing, want) {
		t.Fatalf("missing %v, want %v", missing, want)
	}
	plain := exportAll(t, x.Export)
	if len(plain) != len(recs) {
		t.Fatalf("Export gave %d records, ExportState %d", len(plain), len(recs))
	}
	kinds := map[byte]int{}
	for _, r := range recs {
		kinds[r.key[0]]++
	}
	for _, p := range []byte{pRepl, pPending, pTreeCache} {
		if kinds[p] != 0 {
			t.Errorf("the export holds %d records of kind %c", kinds[p], p)
		}
	}
	for p, n := range map[byte]int{pFormat: 1, pChunk: 4, pLocation: 2, pSegment: 1, pBlob: 2, pPin: 2, pInode: 1} {
		if kinds[p] != n {
			t.Errorf("the export holds %d records of kind %c, want %d", kinds[p], p, n)
		}
	}

	// A chunk reference that does not open stops the export with ErrCorrupt.
	k := key16(pChunk, 23, 0)
	if err := x.db.Set(k, []byte("not sealed, not a reference"), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := x.ExportState(func(_, _ []byte) error { return nil }); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("export over a damaged chunk reference: %v", err)
	}
	if err := x.db.Set(k, x.keys.Meta.Seal(nil, []byte{1, 2}, k), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := x.ExportState(func(_, _ []byte) error { return nil }); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("export over a chunk reference that does not decode: %v", err)
	}
	stop := errors.New("stop")
	if err := x.Export(func(_, _ []byte) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("export's callback error: %v", err)
	}
}

// TestImportRestoresAndRefuses: an export imported into an empty index
// gives the same records (its feed rebuilt: the unlocated chunk pending);
// an index holding inodes or counters is refused, as are records of an
// empty key, a format record of an unknown format, and records that do not
// open; a refused import writes nothing.
func TestImportRestoresAndRefuses(t *testing.T) {
	keys := testKeys(t, 5)
	x := openTest(t, filepath.Join(t.TempDir(), "a"), keys)
	defer x.Close()
	b := x.NewBatch()
	b.PutInode(&Inode{Ino: 30, Mode: 0o100644, Nlink: 1, Size: 3})
	b.PutDirent(&Dirent{Parent: RootIno, Name: "f", Ino: 30, Type: 0o100000})
	b.PutChunk(30, 0, &ChunkRef{ID: ChunkID{0x40}, Version: 1, Len: 3})
	b.PutRepl("queue/1", []byte("engine"))
	if err := b.Commit(false); err != nil {
		t.Fatal(err)
	}
	recs := exportAll(t, x.Export)

	fresh := func(name string) *Index {
		y := openTest(t, filepath.Join(t.TempDir(), name), keys)
		t.Cleanup(func() { y.Close() })
		return y
	}
	y := fresh("b")
	g := y.Generation()
	if err := y.Import(replay(recs)); err != nil {
		t.Fatal(err)
	}
	if y.Generation() == g {
		t.Error("an import left the generation as it was")
	}
	if n, err := y.GetInode(30); err != nil || n.Size != 3 {
		t.Fatalf("imported inode: %+v, %v", n, err)
	}
	if d, err := y.Lookup(RootIno, "f"); err != nil || d.Ino != 30 {
		t.Fatalf("imported entry: %+v, %v", d, err)
	}
	if p, err := y.IsPending(ChunkID{0x40}); err != nil || !p {
		t.Fatalf("the imported unlocated chunk is not pending: %v, %v", p, err)
	}
	if _, err := y.GetRepl("queue/1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("engine state imported: %v", err)
	}
	if err := y.Import(replay(recs)); !errors.Is(err, ErrNotEmpty) {
		t.Fatalf("import into an index with inodes: %v", err)
	}
	c := fresh("c")
	if _, err := c.NextIno(); err != nil { // a counter and nothing else
		t.Fatal(err)
	}
	if err := c.Import(replay(recs)); !errors.Is(err, ErrNotEmpty) {
		t.Fatalf("import into an index with a counter: %v", err)
	}

	refused := func(what string, rs []exported) {
		t.Helper()
		z := fresh(what)
		err := z.Import(replay(rs))
		if err == nil {
			t.Fatalf("import of %s accepted", what)
		}
		if _, err := z.GetInode(30); !errors.Is(err, ErrNotFound) {
			t.Fatalf("a refused import of %s wrote records: %v", what, err)
		}
	}
	withEmpty := append(slices.Clone(recs), exported{nil, nil})
	refused("an empty key", withEmpty)
	var formatAt int = -1
	for i, r := range recs {
		if len(r.key) == 1 && r.key[0] == pFormat {
			formatAt = i
		}
	}
	if formatAt < 0 {
		t.Fatal("the export holds no format record")
	}
	for _, v := range []uint32{0, FormatVersion + 1} {
		bad := slices.Clone(recs)
		fb := binary.BigEndian.AppendUint32(nil, v)
		// Last, so the other records are in the batch when it is refused.
		bad = append(bad[:formatAt], bad[formatAt+1:]...)
		bad = append(bad, exported{[]byte{pFormat}, keys.Meta.Seal(nil, fb, []byte{pFormat})})
		refused("a format record of format "+string(rune('0'+v)), bad)
	}
	tampered := slices.Clone(recs)
	for i, r := range tampered {
		if r.key[0] == pInode {
			s := slices.Clone(r.sealed)
			s[len(s)-1] ^= 1
			tampered[i].sealed = s
		}
	}
	refused("a tampered record", tampered)
	// The oldest format still imports.
	old := slices.Clone(recs)
	old[formatAt] = exported{[]byte{pFormat}, keys.Meta.Seal(nil, binary.BigEndian.AppendUint32(nil, formatNoFeed), []byte{pFormat})}
	if err := fresh("old").Import(replay(old)); err != nil {
		t.Fatalf("import of a format %d snapshot: %v", formatNoFeed, err)
	}
}

// TestLocatedRecords: the records a restore needs for chosen chunks: each
// located chunk's location record, each segment those name once, and the
// chunks without a location; a location whose segment record is gone, or
// one that does not open, is an error.
func TestLocatedRecords(t *testing.T) {
	x := openTest(t, filepath.Join(t.TempDir(), "index"), testKeys(t, 5))
	defer x.Close()
	s1, s2 := testSegment(1, 2), testSegment(2, 1)
	b := x.NewBatch()
	b.PutSegment(&s1)
	b.PutSegment(&s2)
	ids := []ChunkID{{1}, {2}, {3}, {4}}
	b.PutLocation(ids[0], &Location{Segment: s1.ID, Length: 1})
	b.PutLocation(ids[1], &Location{Segment: s1.ID, Offset: 1, Length: 1})
	b.PutLocation(ids[3], &Location{Segment: s2.ID, Length: 1})
	if err := b.Commit(false); err != nil {
		t.Fatal(err)
	}
	var keys []string
	missing, err := x.LocatedRecords(ids, func(k, sealed []byte) error {
		keys = append(keys, string(k))
		if s, ok, err := x.OpenSegmentRecord(k, sealed); ok {
			want := s1
			if s.ID == s2.ID {
				want = s2
			}
			if err != nil || !sameSegment(s, want) {
				t.Errorf("segment record given: %+v, %v", s, err)
			}
		} else if err != nil || k[0] != pLocation {
			t.Errorf("record %x given: %v", k, err)
		}
		return nil
	})
	if err != nil || !slices.Equal(missing, []ChunkID{ids[2]}) {
		t.Fatalf("missing %v, %v", missing, err)
	}
	want := []string{string(locationKey(ids[0])), string(segmentKey(s1.ID)), string(locationKey(ids[1])),
		string(locationKey(ids[3])), string(segmentKey(s2.ID))}
	if !slices.Equal(keys, want) {
		t.Fatalf("records given %x, want %x", keys, want)
	}
	stop := errors.New("stop")
	for n := range 2 { // the callback's error on a location, then on a segment
		calls := 0
		if _, err := x.LocatedRecords(ids, func(_, _ []byte) error {
			calls++
			if calls > n {
				return stop
			}
			return nil
		}); !errors.Is(err, stop) {
			t.Fatalf("callback error at call %d: %v", n+1, err)
		}
	}
	if _, ok, err := x.OpenSegmentRecord(locationKey(ids[0]), nil); ok || err != nil {
		t.Fatalf("a location taken as a segment record: %v %v", ok, err)
	}
	if _, ok, err := x.OpenSegmentRecord(segmentKey(s1.ID), []byte("not sealed")); !ok || !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a segment record that does not open: %v %v", ok, err)
	}
	// The segment record gone.
	b = x.NewBatch()
	b.DeleteSegment(s2.ID)
	if err := b.Commit(false); err != nil {
		t.Fatal(err)
	}
	if _, err := x.LocatedRecords(ids, func(_, _ []byte) error { return nil }); err == nil {
		t.Fatal("a location whose segment is gone gave no error")
	}
	// A location that does not open, and one that does not decode.
	k := locationKey(ids[0])
	if err := x.db.Set(k, []byte("not sealed at all"), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := x.LocatedRecords(ids[:1], func(_, _ []byte) error { return nil }); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a location that does not open: %v", err)
	}
	if err := x.db.Set(k, x.keys.Meta.Seal(nil, []byte{1}, k), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := x.LocatedRecords(ids[:1], func(_, _ []byte) error { return nil }); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a location that does not decode: %v", err)
	}
}
