package backup

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/fincrypt/fincrypt/meta"
)

// TestPowerLossBackupRecords cuts the power right after a backup root is
// added and right after a backup pass returns, with the index on a
// crashable in-memory file system: the root and the snapshot, each
// acknowledged when its call returned, are there after the cut. (The
// chunk store is on the operating system's file system here, which no cut
// touches.)
func TestPowerLossBackupRecords(t *testing.T) {
	mem := vfs.NewCrashableMem()
	r := newMemRepo(t, mem)
	src := t.TempDir()
	for i, n := range []string{"a", "b"} {
		if err := os.WriteFile(filepath.Join(src, n), []byte{byte(i), 1, 2, 3}, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := AddRoot(r.repo.Index, src); err != nil {
		t.Fatal(err)
	}
	afterRoot := mem.CrashClone(vfs.CrashCloneCfg{})
	rep, err := Run(context.Background(), r.repo, Options{Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	afterRun := mem.CrashClone(vfs.CrashCloneCfg{})

	open := func(fs vfs.FS) *meta.Index {
		t.Helper()
		idx, err := meta.Open(r.path, r.keys, meta.Options{FS: fs})
		if err != nil {
			t.Fatalf("the index does not open after the power cut: %v", err)
		}
		t.Cleanup(func() { idx.Close() })
		return idx
	}
	roots, err := Roots(open(afterRoot))
	if err != nil || !slices.Contains(roots, src) {
		t.Fatalf("backup roots after the power cut: %v, %v; want %s, added before it", roots, err, src)
	}
	snaps, err := Snapshots(open(afterRun))
	if err != nil || len(snaps) != 1 || snaps[0].ID.String() != rep.Snapshot {
		t.Fatalf("snapshots after the power cut: %+v, %v; want the one the pass reported, %s", snaps, err, rep.Snapshot)
	}
}
