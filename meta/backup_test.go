package meta

import (
	"slices"
	"testing"
)

// TestBackupRecords: blobs show in Walk (so collectors count them) and an
// unlocated blob is missing from an export until it has a location; trees,
// snapshots and roots walk without complaint and survive Export/Import.
func TestBackupRecords(t *testing.T) {
	keys := testKeys(t, 1)
	x := openTest(t, t.TempDir(), keys)
	b := x.NewBatch()
	b.PutBlob(ChunkID{1}, 100)
	b.PutBlob(ChunkID{2}, 200)
	b.PutTree(TreeID{3}, []byte("tree"))
	b.PutBackupSnapshot(BackupSnapID{4}, []byte("snap"))
	b.PutBackupRoot("/home/a")
	b.PutLocation(ChunkID{2}, &Location{Segment: SegmentID{9}, Length: 228})
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	var blobs []ChunkID
	bad := 0
	if err := x.Walk(Visitor{Blob: func(id ChunkID, n uint32) { blobs = append(blobs, id) }, Bad: func(k []byte, err error) { bad++; t.Log(k, err) }}); err != nil || bad != 0 {
		t.Fatalf("walk: %d bad, %v", bad, err)
	}
	if !slices.Equal(blobs, []ChunkID{{1}, {2}}) {
		t.Fatalf("walk saw blobs %v", blobs)
	}
	var recs [][2][]byte
	missing, err := x.ExportState(func(k, v []byte) error {
		recs = append(recs, [2][]byte{append([]byte(nil), k...), append([]byte(nil), v...)})
		return nil
	})
	if err != nil || !slices.Equal(missing, []ChunkID{{1}}) {
		t.Fatalf("export: missing %v, %v; want the unlocated blob", missing, err)
	}
	y := openTest(t, t.TempDir(), keys)
	if err := y.Import(func(fn func(k, v []byte) error) error {
		for _, r := range recs {
			if err := fn(r[0], r[1]); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n, err := y.GetBlob(ChunkID{2}); err != nil || n != 200 {
		t.Fatalf("imported blob: %d %v", n, err)
	}
	if roots, err := y.BackupRoots(); err != nil || !slices.Equal(roots, []string{"/home/a"}) {
		t.Fatalf("imported roots %v %v", roots, err)
	}
	if v, err := y.GetBackupSnapshot(BackupSnapID{4}); err != nil || string(v) != "snap" {
		t.Fatalf("imported snapshot %q %v", v, err)
	}
}
