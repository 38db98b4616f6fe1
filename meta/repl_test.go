package meta

import (
	"errors"
	"testing"
)

func TestReplicationRecords(t *testing.T) {
	keys := testKeys(t, 1)
	x := openTest(t, t.TempDir(), keys)
	seg := Segment{ID: SegmentID{1, 2}, Kind: KindData, State: SegmentDegraded, K: 2, N: 4, Healthy: 3,
		Used: 1000, Class: 69632, Created: 5, Checked: 6, DeadSince: 7,
		Pieces: []SegmentPiece{{Node: [32]byte{9}, Piece: [32]byte{8}}, {}, {Node: [32]byte{7}}, {}}}
	loc := Location{Segment: seg.ID, Offset: 28, Length: 972}
	b := x.NewBatch()
	b.PutSegment(&seg)
	b.PutLocation(ChunkID{3}, &loc)
	b.PutRepl("last_sync", []byte{1})
	b.PutInode(&Inode{Ino: RootIno, Mode: 0o40755, Nlink: 2})
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	got, err := x.GetSegment(seg.ID)
	if err != nil || got.Used != 1000 || got.Class != 69632 || got.DeadSince != 7 || got.State != SegmentDegraded ||
		len(got.Pieces) != 4 || got.Pieces[2].Node != [32]byte{7} || got.Pieces[0].Piece != [32]byte{8} {
		t.Fatalf("segment: %+v, %v", got, err)
	}
	if l, err := x.GetLocation(ChunkID{3}); err != nil || l != loc {
		t.Fatalf("location: %+v, %v", l, err)
	}
	if _, err := x.GetLocation(ChunkID{4}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing location: %v", err)
	}
	bad := 0
	if err := x.Walk(Visitor{Bad: func([]byte, error) { bad++ }}); err != nil || bad != 0 {
		t.Fatalf("walk: %d bad records, %v", bad, err)
	}

	// Export skips R records; Import into an empty index restores the rest.
	var keysOut [][2][]byte
	if err := x.Export(func(k, v []byte) error {
		if k[0] == pRepl {
			t.Fatalf("export holds engine state %q", k)
		}
		keysOut = append(keysOut, [2][]byte{append([]byte(nil), k...), append([]byte(nil), v...)})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	records := func(fn func(k, v []byte) error) error {
		for _, kv := range keysOut {
			if err := fn(kv[0], kv[1]); err != nil {
				return err
			}
		}
		return nil
	}
	y := openTest(t, t.TempDir(), keys)
	if err := y.Import(records); err != nil {
		t.Fatal(err)
	}
	if l, err := y.GetLocation(ChunkID{3}); err != nil || l != loc {
		t.Fatalf("imported location: %+v, %v", l, err)
	}
	if err := y.Import(records); !errors.Is(err, ErrNotEmpty) {
		t.Fatalf("import into a full index: %v", err)
	}
	// Records of another vault do not open: nothing is written.
	z := openTest(t, t.TempDir(), testKeys(t, 2))
	if err := z.Import(records); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("import of another vault's records: %v", err)
	}
	if _, err := z.GetInode(RootIno); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a refused import wrote records: %v", err)
	}
}
