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

type nopCloser struct{}

func (nopCloser) Close() error { return nil }

// mountCountingReads mounts home and returns how many index records the
// mount's start-up (clean-close check and recovery) read.
func mountCountingReads(t *testing.T, home string) (*testMount, int64) {
	t.Helper()
	var read int64 = -1
	tm := mountVaultOpt(t, home, fs.Options{Attach: func(idx *meta.Index, _ *chunkstore.Store) (io.Closer, error) {
		read = idx.RecordsRead()
		return nopCloser{}, nil
	}})
	return tm, read
}

// TestCleanMountWalksNothing: a mount after a clean unmount reads no index
// record beyond a few point reads (no walk, no listing of the store), unless
// the record says chunks may be left to collect: after a crash, the first
// mount after the next clean unmount walks once and collects.
func TestCleanMountWalksNothing(t *testing.T) {
	requireFUSE(t)
	home, files := vaultWithFiles(t, 30) // 60 chunk references
	// The vault's first mount had no record (as after a crash): the next
	// one collects, walking every chunk reference.
	tm, read := mountCountingReads(t, home)
	tm.unmount()
	t.Logf("mount owing a collection read %d records", read)
	if read < 60 {
		t.Fatalf("a mount that collects read %d records, fewer than the 60 chunk references", read)
	}
	tm, read = mountCountingReads(t, home)
	for name, want := range files {
		mustEqual(t, name, readFile(t, tm.path(name)), want)
	}
	tm.unmount()
	t.Logf("mount after a clean unmount read %d records", read)
	if read > 5 {
		t.Fatalf("a mount after a clean unmount read %d index records: it walked the index", read)
	}
	// A crash: no record. That mount does not collect either (the index is
	// not known whole), but the one after its clean unmount does.
	if err := os.Remove(filepath.Join(home, fs.CleanFileName)); err != nil {
		t.Fatal(err)
	}
	tm, read = mountCountingReads(t, home)
	tm.unmount()
	if read > 5 {
		t.Fatalf("a mount after a crash read %d index records", read)
	}
	tm, read = mountCountingReads(t, home)
	tm.unmount()
	if read < 60 {
		t.Fatalf("the mount after a crash and a clean unmount read %d records: it did not collect", read)
	}
	checkVault(t, home)
}
