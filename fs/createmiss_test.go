package fs_test

import (
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fincrypt/fincrypt/fs"
)

// TestCreateTakesLookupMiss: the kernel looks a new name up before it
// creates it; the create takes that LOOKUP's miss and does not look the
// name up in the index again (one point read fewer per created file), as
// long as no directory entry changed in between.
func TestCreateTakesLookupMiss(t *testing.T) {
	requireFUSE(t)
	tm := mountVault(t, newVault(t, fastKDF))
	if err := os.Mkdir(tm.path("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	dir := stat(t, tm.path("d")).Ino
	writeFile(t, tm.path("other"), nil)
	if _, err := os.Stat(tm.path("d", "x")); !os.IsNotExist(err) {
		t.Fatalf("stat of a missing name: %v", err)
	}
	if !tm.m.KnownMissing(dir, "x") {
		t.Fatal("the LOOKUP's miss of d/x is not taken")
	}
	if tm.m.KnownMissing(dir, "y") || tm.m.KnownMissing(dir+1, "x") {
		t.Fatal("a miss of d/x is taken for another name or directory")
	}
	// Any entry committed since the look-up (here one removed in another
	// directory, whose name the kernel has cached: no LOOKUP) and the name
	// is looked up again.
	if err := os.Remove(tm.path("other")); err != nil {
		t.Fatal(err)
	}
	if tm.m.KnownMissing(dir, "x") {
		t.Fatal("the miss of d/x is still taken after an entry was committed")
	}

	const files = 50
	used := fs.MissedUsed()
	points := tm.m.Index().PointsRead()
	for i := range files {
		fd, err := unix.Open(tm.path("d", "f"+strconv.Itoa(i)), unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		unix.Close(fd)
	}
	if err := tm.m.WaitIdle(time.Minute); err != nil {
		t.Fatal(err)
	}
	reads := tm.m.Index().PointsRead() - points
	if n := fs.MissedUsed() - used; n != files {
		t.Errorf("%d of %d creates took their LOOKUP's miss", n, files)
	}
	t.Logf("%.2f index point reads a created file", float64(reads)/files)
	if reads > 3*files {
		t.Errorf("%d index point reads for %d created files, want at most 3 a file (the directory's GETATTR, the LOOKUP, the create's directory)", reads, files)
	}
	// The files are there, and an existing name is refused.
	for i := range files {
		stat(t, tm.path("d", "f"+strconv.Itoa(i)))
	}
	if _, err := unix.Open(tm.path("d", "f0"), unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o644); err != syscall.EEXIST {
		t.Fatalf("O_EXCL create of an existing name: %v, want EEXIST", err)
	}
}
