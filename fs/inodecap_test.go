package fs_test

import (
	"bytes"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/fs"
)

// capMount mounts a fresh vault keeping at most max inodes for the kernel,
// or skips the test on a kernel without prune notifications (before 6.18).
func capMount(t *testing.T, max int) *testMount {
	t.Helper()
	requireFUSE(t)
	tm := mountVaultOpt(t, newVault(t, fastKDF), fs.Options{MaxInodes: max})
	if !tm.m.CanPrune() {
		t.Skip("the kernel takes no FUSE_NOTIFY_PRUNE (Linux 6.18 and later)")
	}
	return tm
}

// waitInodes waits (up to a minute, ending as soon as it holds) until the
// mount holds at most bound inodes for the kernel, and returns how many it
// holds. The kernel forgets what it is asked to prune at once, but its
// FORGETs reach the mount asynchronously.
func waitInodes(tm *testMount, bound int64) int64 {
	deadline := time.Now().Add(time.Minute)
	for {
		n := tm.m.KernelInodes()
		if n <= bound || time.Now().After(deadline) {
			return n
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func inoOf(t *testing.T, p string) (uint64, uint64) {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino, uint64(st.Nlink)
}

// TestMaxInodesBoundsWhatTheKernelHolds fills a mount that keeps at most 64
// inodes with 600 files and checks that the mount asked the kernel to
// forget the rest, and that what the kernel forgot is still found, with the
// same inode numbers and contents: a file held open, a hard link and a
// rename across pruned names keep working. Without the bound the mount
// holds every one of the 600 (and the kernel looks none of them up again).
func TestMaxInodesBoundsWhatTheKernelHolds(t *testing.T) {
	const max, dirs, per = 64, 3, 200
	tm := capMount(t, max)
	held, err := os.OpenFile(tm.path("held"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if _, err := held.Write([]byte("held-0")); err != nil {
		t.Fatal(err)
	}
	heldIno, _ := inoOf(t, tm.path("held"))
	inos := map[string]uint64{}
	var names []string
	for d := range dirs {
		if err := os.Mkdir(tm.path(fmt.Sprint("d", d)), 0o755); err != nil {
			t.Fatal(err)
		}
		for f := range per {
			p := fmt.Sprintf("d%d/f%d", d, f)
			writeFile(t, tm.path(p), []byte(p))
			inos[p], _ = inoOf(t, tm.path(p))
			names = append(names, p)
		}
	}
	if err := os.Link(tm.path("d0/f0"), tm.path("d1/link0")); err != nil {
		t.Fatal(err)
	}
	// What may stay beyond max: a batch not yet full (max/16+1), the
	// directories (the kernel keeps a directory while it holds a child)
	// and the open file.
	bound := int64(max + max/16 + 1 + dirs + 1)
	if n := waitInodes(tm, bound); n > bound {
		t.Fatalf("the mount holds %d inodes for the kernel after %d files, want at most %d (max %d; %d pruned)",
			n, len(names), bound, max, tm.m.PrunedInodes())
	}

	// The open file is untouched: its handle writes and reads, and its
	// name finds the same inode.
	if _, err := held.Write([]byte("-1")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	n, err := held.ReadAt(buf, 0)
	if err != nil && n == 0 {
		t.Fatal(err)
	}
	mustEqual(t, "the open file through its handle", buf[:n], []byte("held-0-1"))
	var st syscall.Stat_t
	if err := syscall.Fstat(int(held.Fd()), &st); err != nil || st.Ino != heldIno {
		t.Fatalf("fstat of the open file: ino %d, %v; want %d", st.Ino, err, heldIno)
	}
	if got, _ := inoOf(t, tm.path("held")); got != heldIno {
		t.Fatalf("the open file's name: inode %d, want %d", got, heldIno)
	}

	// Every name is found again, with its inode number and contents.
	lookups := fs.NameLookups()
	for _, p := range names {
		if got, _ := inoOf(t, tm.path(p)); got != inos[p] {
			t.Fatalf("%s: inode %d after the kernel forgot it, was %d", p, got, inos[p])
		}
		mustEqual(t, p, readFile(t, tm.path(p)), []byte(p))
	}
	if again := fs.NameLookups() - lookups; again < int64(len(names)-int(bound)) {
		t.Fatalf("%d names looked up again after the prune, want at least %d: the kernel forgot nothing", again, len(names)-int(bound))
	}

	// A hard link across forgotten names: one inode, two links, one content.
	ino, nlink := inoOf(t, tm.path("d1/link0"))
	if ino != inos["d0/f0"] || nlink != 2 {
		t.Fatalf("d1/link0: inode %d nlink %d, want %d and 2", ino, nlink, inos["d0/f0"])
	}
	writeFile(t, tm.path("d1/link0"), []byte("through the link"))
	mustEqual(t, "d0/f0 after a write through its link", readFile(t, tm.path("d0/f0")), []byte("through the link"))

	// A rename of a forgotten name keeps its inode and contents.
	waitInodes(tm, bound)
	if err := os.Rename(tm.path("d2/f5"), tm.path("d0/renamed")); err != nil {
		t.Fatal(err)
	}
	if got, _ := inoOf(t, tm.path("d0/renamed")); got != inos["d2/f5"] {
		t.Fatalf("renamed: inode %d, want %d", got, inos["d2/f5"])
	}
	mustEqual(t, "d0/renamed", readFile(t, tm.path("d0/renamed")), []byte("d2/f5"))
	if _, err := os.Stat(tm.path("d2/f5")); !os.IsNotExist(err) {
		t.Fatalf("d2/f5 after the rename: %v, want not found", err)
	}
	held.Close()
	tm.unmount()
	checkVault(t, tm.home)
}

// TestMaxInodesBoundsDirectories fills a mount that keeps at most 64 inodes
// with 300 directories of two files each (a source tree's shape): the
// directories go too. The kernel keeps a directory while it holds a child,
// so pruning one in its own turn, before its files, does nothing; it drops
// the directory with the last of them.
func TestMaxInodesBoundsDirectories(t *testing.T) {
	const max, dirs = 64, 300
	tm := capMount(t, max)
	for d := range dirs {
		p := tm.path(fmt.Sprint("d", d))
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(p, "a"), []byte("a"))
		writeFile(t, filepath.Join(p, "b"), []byte("b"))
	}
	// What may stay beyond max: a batch not yet full, the directories of
	// the files in the ring.
	bound := int64(max + max/16 + 1 + max/2)
	if n := waitInodes(tm, bound); n > bound {
		t.Fatalf("the mount holds %d inodes for the kernel after %d directories, want at most %d (max %d; %d pruned)",
			n, dirs, bound, max, tm.m.PrunedInodes())
	}
	ents, err := os.ReadDir(tm.path())
	if err != nil || len(ents) != dirs {
		t.Fatalf("the root lists %d entries, %v; want %d", len(ents), err, dirs)
	}
	for d := range dirs {
		mustEqual(t, "a file under a forgotten directory", readFile(t, tm.path(fmt.Sprint("d", d), "b")), []byte("b"))
	}
}

// TestPrunedInodesUnderConcurrentUse has four readers stat and read files
// of a mount keeping at most 32 inodes while the kernel forgets and looks
// them up again (FORGET racing LOOKUP and READDIRPLUS): every answer keeps
// the file's inode number and contents. Run it under -race.
func TestPrunedInodesUnderConcurrentUse(t *testing.T) {
	const files = 300
	tm := capMount(t, 32)
	inos := make([]uint64, files)
	for i := range files {
		p := tm.path(fmt.Sprintf("d%d", i%3), fmt.Sprint("f", i))
		if i < 3 {
			if err := os.Mkdir(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		writeFile(t, p, []byte(p))
		inos[i], _ = inoOf(t, p)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(w)))
			for range 400 {
				i := rng.Intn(files)
				p := tm.path(fmt.Sprintf("d%d", i%3), fmt.Sprint("f", i))
				var st syscall.Stat_t
				if err := syscall.Stat(p, &st); err != nil || st.Ino != inos[i] {
					errs <- fmt.Errorf("stat %s: inode %d, %v; want %d", p, st.Ino, err, inos[i])
					return
				}
				if got, err := os.ReadFile(p); err != nil || !bytes.Equal(got, []byte(p)) {
					errs <- fmt.Errorf("read %s: %q, %v", p, got, err)
					return
				}
				if rng.Intn(20) == 0 { // a listing, READDIRPLUS over names forgotten or not
					if ents, err := os.ReadDir(filepath.Dir(p)); err != nil || len(ents) != files/3 {
						errs <- fmt.Errorf("list %s: %d entries, %v", filepath.Dir(p), len(ents), err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if tm.m.PrunedInodes() == 0 {
		t.Fatal("nothing was pruned: the test raced nothing")
	}
	tm.unmount()
	checkVault(t, tm.home)
}
