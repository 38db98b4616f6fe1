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
	// The vault's first mount began with a new index: it left nothing to
	// collect, and the next mount walks nothing.
	tm, read := mountCountingReads(t, home)
	tm.unmount()
	t.Logf("mount after the first read %d records", read)
	if read > 5 {
		t.Fatalf("the mount after a vault's first mount read %d index records: it walked the index", read)
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

// readsCloser records how many index records had been read when the mount's
// attached service was closed: the unmount closes it just before it writes
// the clean-close record.
type readsCloser struct {
	idx  *meta.Index
	read int64
}

func (c *readsCloser) Close() error { c.read = c.idx.RecordsRead(); return nil }

// unmountCountingReads unmounts tm (mounted by mountForUnmountReads) and
// returns how many index records the clean-close record cost.
func mountForUnmountReads(t *testing.T, home string) (*testMount, func() int64) {
	t.Helper()
	c := &readsCloser{}
	tm := mountVaultOpt(t, home, fs.Options{Attach: func(idx *meta.Index, _ *chunkstore.Store) (io.Closer, error) {
		c.idx = idx
		return c, nil
	}})
	return tm, func() int64 {
		tm.unmount()
		return c.idx.RecordsRead() - c.read
	}
}

// TestCleanUnmountWalksNothing: the clean-close record costs an unmount
// reads of what the mount changed, not a walk of every chunk reference, and
// it still pins the whole index: the offline check (which walks and
// compares) and the next mounts accept it after files were written,
// overwritten, truncated and deleted. A mount that began without a record
// (after a crash) walks once at its unmount.
func TestCleanUnmountWalksNothing(t *testing.T) {
	requireFUSE(t)
	home, files := vaultWithFiles(t, 30) // 60 chunk references
	tm, unmount := mountForUnmountReads(t, home)
	writeFile(t, tm.path("new"), randBytes(99, 9000))
	writeFile(t, tm.path("f01"), randBytes(98, 3000))
	if err := os.Truncate(tm.path("f02"), 100); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(tm.path("f03")); err != nil {
		t.Fatal(err)
	}
	if read := unmount(); read > 5 {
		t.Fatalf("a clean unmount read %d index records: it walked the index", read)
	}
	checkVault(t, home)
	tm, unmount = mountForUnmountReads(t, home)
	mustEqual(t, "f04", readFile(t, tm.path("f04")), files["f04"])
	if read := unmount(); read > 5 {
		t.Fatalf("an unchanged clean unmount read %d index records", read)
	}
	// A crash: no record. That mount's unmount walks the index once.
	if err := os.Remove(filepath.Join(home, fs.CleanFileName)); err != nil {
		t.Fatal(err)
	}
	tm, unmount = mountForUnmountReads(t, home)
	if read := unmount(); read < 60 {
		t.Fatalf("the unmount of a mount that began without a record read %d records, fewer than the chunk references", read)
	}
	// The next mount walks to collect, and finds the record true.
	tm, unmount = mountForUnmountReads(t, home)
	mustEqual(t, "f05", readFile(t, tm.path("f05")), files["f05"])
	if read := unmount(); read > 5 {
		t.Fatalf("a clean unmount read %d index records", read)
	}
	checkVault(t, home)
}
