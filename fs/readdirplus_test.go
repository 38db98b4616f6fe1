package fs_test

import (
	"bytes"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/fs"
)

// makeSizedFiles creates n files in dir, file i of i+1 bytes (its size names it).
func makeSizedFiles(t *testing.T, dir string, n int) {
	t.Helper()
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		writeFile(t, fmt.Sprintf("%s/f%04d", dir, i), bytes.Repeat([]byte{'x'}, i+1))
	}
}

// getdents reads one batch of dir's entries (a buffer of size bytes) and
// returns their names; none at the end.
func getdents(t *testing.T, fd int, size int) []string {
	t.Helper()
	buf := make([]byte, size)
	n, err := syscall.Getdents(fd, buf)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for off := 0; off < n; {
		reclen := int(buf[off+16]) | int(buf[off+17])<<8
		name := buf[off+19 : off+reclen]
		names = append(names, string(name[:bytes.IndexByte(name, 0)]))
		off += reclen
	}
	return names
}

// TestReaddirPlusLooksUpNoName lists a directory cold: READDIRPLUS answers
// each entry's attributes from the inode number the listing holds, without
// looking its name up again (400 look-ups by name for 400 entries before),
// reading the inodes in batches (400 point reads before), and stat(2) of
// every entry afterwards is served from what it returned.
func TestReaddirPlusLooksUpNoName(t *testing.T) {
	requireFUSE(t)
	const n = 400
	tm := coldDir(t, n)
	if _, err := os.Stat(tm.path("d")); err != nil {
		t.Fatal(err)
	}
	before, points := fs.NameLookups(), fs.InodePointReads()
	ents, err := os.ReadDir(tm.path("d"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != n {
		t.Fatalf("%d entries, want %d", len(ents), n)
	}
	listed, points := fs.NameLookups()-before, fs.InodePointReads()-points
	if points != 0 {
		t.Errorf("%d inodes of %d read one by one, want all in batches", points, n)
	}
	for i := range n {
		st, err := os.Stat(tm.path("d", fmt.Sprintf("f%04d", i)))
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() != int64(i+1) {
			t.Fatalf("f%04d: size %d, want %d", i, st.Size(), i+1)
		}
	}
	if got := fs.NameLookups() - before; listed != 0 || got != 0 {
		t.Fatalf("%d look-ups by name while listing %d entries, %d after stat of each; want none", listed, n, got)
	}
}

// TestReaddirPlusAfterRename changes a directory while it is being listed:
// an entry the listing has not returned yet is renamed over another one.
// The rest of the listing looks names up again, so the entry replaced
// carries the renamed file (its old inode, still linked elsewhere, must not
// come back under the name).
func TestReaddirPlusAfterRename(t *testing.T) {
	requireFUSE(t)
	const n = 300
	home := newVault(t, fastKDF)
	tm := mountVault(t, home)
	makeSizedFiles(t, tm.path("d"), n)
	// Every file keeps a second link, so a replaced one lives on.
	if err := os.Mkdir(tm.path("links"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		name := fmt.Sprintf("f%04d", i)
		if err := os.Link(tm.path("d", name), tm.path("links", name)); err != nil {
			t.Fatal(err)
		}
	}
	tm.unmount()

	tm = mountVault(t, home)
	fd, rest := startListing(t, tm.path("d"), n)
	from, over := rest[0], rest[1]
	if err := os.Rename(tm.path("d", from), tm.path("d", over)); err != nil {
		t.Fatal(err)
	}
	for len(getdents(t, fd, 4096)) > 0 {
	}
	var fromSize, overSize int
	fmt.Sscanf(from, "f%04d", &fromSize)
	fmt.Sscanf(over, "f%04d", &overSize)
	st, err := os.Stat(tm.path("d", over))
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != int64(fromSize+1) {
		t.Fatalf("%s after %s was renamed over it: size %d (the replaced file's is %d), want %d", over, from, st.Size(), overSize+1, fromSize+1)
	}
	if _, err := os.Stat(tm.path("d", from)); !os.IsNotExist(err) {
		t.Fatalf("%s after its rename: %v, want it gone", from, err)
	}
}

// startListing opens dir (of n files f0000...) and reads the first batch of
// its entries; it returns the descriptor and the files not listed yet.
func startListing(t *testing.T, dir string, n int) (int, []string) {
	t.Helper()
	fd, err := syscall.Open(dir, syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	seen := map[string]bool{}
	for _, name := range getdents(t, fd, 4096) {
		seen[name] = true
	}
	if len(seen) < 3 || len(seen) >= n {
		t.Fatalf("the first batch listed %d of %d entries: the test wants part of the directory", len(seen), n)
	}
	var rest []string
	for i := range n {
		if name := fmt.Sprintf("f%04d", i); !seen[name] {
			rest = append(rest, name)
		}
	}
	return fd, rest
}

// TestReaddirPlusAfterChmod changes the mode of a file whose inode the
// listing read in its batch but has not returned yet: the rest of the
// listing reads it again, so the kernel is not handed the old mode.
func TestReaddirPlusAfterChmod(t *testing.T) {
	requireFUSE(t)
	const n = 200
	tm := coldDir(t, n)
	fd, rest := startListing(t, tm.path("d"), n)
	p := tm.path("d", rest[0])
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatal(err)
	}
	for len(getdents(t, fd, 4096)) > 0 {
	}
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("%s after chmod 600 during the listing: mode %o", rest[0], st.Mode().Perm())
	}
}

// coldDir mounts a new vault whose folder "d" holds n files
// (makeSizedFiles), written through an earlier mount: nothing of it is in
// the kernel's or the mount's caches.
func coldDir(t *testing.T, n int) *testMount {
	t.Helper()
	home := newVault(t, fastKDF)
	tm := mountVault(t, home)
	makeSizedFiles(t, tm.path("d"), n)
	tm.unmount()
	return mountVault(t, home)
}

// TestReaddirPlusSkipsKnown lists a directory a second time, every file of
// which the kernel holds from the first listing (a repeated `find`, or
// `git status`: stat of each file, then a listing of each directory):
// READDIRPLUS answers those entries without a node, reading no inode, so
// the kernel keeps what it holds; and what it
// holds stays right, for files changed through it after the stat pass (a
// chmod, a second hard link) too, with no look-up afterwards.
func TestReaddirPlusSkipsKnown(t *testing.T) {
	requireFUSE(t)
	const n = 300
	tm := coldDir(t, n)
	if _, err := os.ReadDir(tm.path("d")); err != nil { // hands every entry
		t.Fatal(err)
	}
	statFiles(t, tm, n)
	if err := os.Chmod(tm.path("d", "f0007"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(tm.path("d", "f0009"), tm.path("links-target")); err != nil {
		t.Fatal(err)
	}
	known, batched, points := fs.PlusKnown(), fs.InodeBatchReads(), fs.InodePointReads()
	ents, err := os.ReadDir(tm.path("d"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != n {
		t.Fatalf("%d entries, want %d", len(ents), n)
	}
	known, batched, points = fs.PlusKnown()-known, fs.InodeBatchReads()-batched, fs.InodePointReads()-points
	if known != n || batched != 0 || points != 0 {
		t.Fatalf("listing %d entries the kernel holds: %d answered without a node, %d inodes read in batches, %d one by one; want %d, 0, 0",
			n, known, batched, points, n)
	}
	lookups := fs.NameLookups()
	for i := range n {
		st, err := os.Stat(tm.path("d", fmt.Sprintf("f%04d", i)))
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() != int64(i+1) {
			t.Fatalf("f%04d: size %d, want %d", i, st.Size(), i+1)
		}
		want := os.FileMode(0o644)
		if i == 7 {
			want = 0o600
		}
		if st.Mode().Perm() != want {
			t.Fatalf("f%04d: mode %o, want %o", i, st.Mode().Perm(), want)
		}
		if i == 9 && st.Sys().(*syscall.Stat_t).Nlink != 2 {
			t.Fatalf("f0009 after a second link: %d links, want 2", st.Sys().(*syscall.Stat_t).Nlink)
		}
	}
	if got := fs.NameLookups() - lookups; got != 0 {
		t.Fatalf("%d look-ups by name for stat after the listing, want none", got)
	}
}

// TestReaddirPlusSkipsKnownNewMount lists a directory whose files the
// kernel has only looked up, in a new mount (`git status`: stat of each
// file, then a listing of each directory): no earlier listing handed the
// entries, but this process handed every one less than half the timeouts
// ago, so READDIRPLUS answers them without a node.
func TestReaddirPlusSkipsKnownNewMount(t *testing.T) {
	requireFUSE(t)
	const n = 50
	tm := coldDir(t, n)
	statFiles(t, tm, n)
	known := fs.PlusKnown()
	if _, err := os.ReadDir(tm.path("d")); err != nil {
		t.Fatal(err)
	}
	if got := fs.PlusKnown() - known; got != n {
		t.Fatalf("listing %d entries the kernel looked up in this process: %d answered without a node, want %d", n, got, n)
	}
}

// TestReaddirPlusRefreshesExpired lists a directory whose every file the
// kernel was handed (by a listing, then stat) longer ago than the entry and
// attribute timeouts (a long-lived mount's `ls -l` or `find` an hour after
// the last): the kernel still
// holds the inodes, but their names and attributes have expired, so
// READDIRPLUS must hand them again; an entry without a node would leave
// them expired, and the stat of each after the listing would cost a LOOKUP.
// (Within half the timeouts of a full listing, a second one answers them
// without a node.)
func TestReaddirPlusRefreshesExpired(t *testing.T) {
	requireFUSE(t)
	const n = 100
	const timeout = 4 * time.Second
	home := newVault(t, fastKDF)
	tm := mountVault(t, home)
	makeSizedFiles(t, tm.path("d"), n)
	tm.unmount()
	tm = mountVaultOpt(t, home, fs.Options{AttrTimeout: timeout, EntryTimeout: timeout})
	// Older than half the timeouts, the process no longer takes every
	// entry for fresh: the first listing hands every entry, and makes the
	// directory fresh, for half the timeouts.
	time.Sleep(timeout / 2)
	if _, err := os.ReadDir(tm.path("d")); err != nil {
		t.Fatal(err)
	}
	statFiles(t, tm, n)
	known := fs.PlusKnown()
	if _, err := os.ReadDir(tm.path("d")); err != nil {
		t.Fatal(err)
	}
	if got := fs.PlusKnown() - known; got != n {
		t.Fatalf("listing %d entries a full listing handed just before: %d answered without a node, want %d", n, got, n)
	}
	time.Sleep(timeout + timeout/4)
	if _, err := os.ReadDir(tm.path("d")); err != nil {
		t.Fatal(err)
	}
	lookups := fs.NameLookups()
	statFiles(t, tm, n)
	if got := fs.NameLookups() - lookups; got != 0 {
		t.Fatalf("%d look-ups by name for stat after listing %d entries whose kernel entries had expired, want none", got, n)
	}
}

// statFiles stats d/f0000 .. d/f(n-1) in tm, as `git status` stats each
// file before it lists the directories.
func statFiles(t *testing.T, tm *testMount, n int) {
	t.Helper()
	for i := range n {
		if _, err := os.Stat(tm.path("d", fmt.Sprintf("f%04d", i))); err != nil {
			t.Fatal(err)
		}
	}
}
