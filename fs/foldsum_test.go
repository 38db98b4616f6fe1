package fs_test

import (
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/fincrypt/fincrypt/chunkstore"
	"github.com/fincrypt/fincrypt/fs"
	"github.com/fincrypt/fincrypt/meta"
)

// firstFold is what the first fold of a mount's index found: the records
// it read by scans (a walk reads them all), and whether its sum was the one
// a walk of its view gives.
type firstFold struct {
	scanned int64
	exact   bool
}

// mountFolding mounts home with an attached service that turns the change
// feed on (as the engine of a vault with network snapshots does) and folds
// a first view, as the engine's first snapshot or live hash does.
func mountFolding(t *testing.T, home string) (*testMount, *firstFold) {
	t.Helper()
	ff := &firstFold{scanned: -1}
	tm := mountVaultOpt(t, home, fs.Options{Attach: func(idx *meta.Index, _ *chunkstore.Store) (io.Closer, error) {
		if _, err := idx.StartChanges(); err != nil {
			return nil, err
		}
		v, err := idx.ChangeView()
		if err != nil {
			return nil, err
		}
		defer v.Close()
		r0 := idx.RecordsRead()
		s, err := idx.Fold(v)
		if err != nil {
			return nil, err
		}
		ff.scanned = idx.RecordsRead() - r0
		walked, err := idx.SumRecords(v.Export)
		if err != nil {
			return nil, err
		}
		ff.exact = s == walked
		return nopCloser{}, nil
	}})
	return tm, ff
}

// TestFirstFoldAfterCleanUnmountWalksNothing: the first fold of a mount
// that follows a clean unmount reads no record by a scan (the unmount kept
// the state sum with its clean-close mark) and gives a walk's sum; after a
// crash (no clean-close record) it walks, and is exact too. It fails if
// the state sum is not kept across the unmount, or is trusted without the
// record.
func TestFirstFoldAfterCleanUnmountWalksNothing(t *testing.T) {
	requireFUSE(t)
	home, files := vaultWithFiles(t, 30)
	tm, ff := mountFolding(t, home) // the feed's first mount: a walk
	if ff.scanned <= 0 || !ff.exact {
		t.Fatalf("the feed's first fold: scanned %d, exact %v", ff.scanned, ff.exact)
	}
	writeFile(t, tm.path("new"), randBytes(97, 9000))
	if err := os.Remove(tm.path("f03")); err != nil {
		t.Fatal(err)
	}
	tm.unmount()

	tm, ff = mountFolding(t, home)
	t.Logf("first fold after a clean unmount: %d records scanned", ff.scanned)
	if ff.scanned != 0 {
		t.Fatalf("the first fold after a clean unmount scanned %d records: it walked the index", ff.scanned)
	}
	if !ff.exact {
		t.Fatal("the first fold after a clean unmount differs from a walk")
	}
	mustEqual(t, "f04", readFile(t, tm.path("f04")), files["f04"])
	writeFile(t, tm.path("f05"), randBytes(96, 5000))
	tm.unmount()

	// A crash: no clean-close record; the kept sum is not trusted.
	if err := os.Remove(filepath.Join(home, fs.CleanFileName)); err != nil {
		t.Fatal(err)
	}
	tm, ff = mountFolding(t, home)
	if ff.scanned <= 0 || !ff.exact {
		t.Fatalf("the first fold after a crash: scanned %d, exact %v", ff.scanned, ff.exact)
	}
	tm.unmount()
	checkVault(t, home)
}
