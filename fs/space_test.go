package fs_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/fs"
	"github.com/fincrypt/fincrypt/vault"
)

// within runs op, failing the test if it does not return in time: on a full
// disk the mount must answer, never hang.
func within(t *testing.T, what string, op func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- op() }()
	select {
	case err := <-done:
		return err
	case <-time.After(20 * time.Second):
		t.Fatalf("%s: no answer after 20s (the mount hangs)", what)
		return nil
	}
}

// fillDisk writes dir/name until the disk is full (bounded) and returns
// the file's path.
func fillDisk(t *testing.T, dir, name string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for i := 0; i < 1024; i++ {
		if _, err := f.Write(buf); err != nil {
			break
		}
	}
	for i := 0; i < 256; i++ { // the last partial megabyte
		if _, err := f.Write(buf[:4096]); err != nil {
			return p
		}
	}
	t.Fatal("the disk never filled")
	return p
}

// TestFullDisk: on a small disk the mount refuses new data with ENOSPC
// before the index runs out of room, keeps what it stored, and when another
// program fills the disk completely, deleting files still works (the
// ballast is given back) and nothing hangs. Once there is room again,
// writes work and the vault checks clean.
func TestFullDisk(t *testing.T) {
	requireFUSE(t)
	disk := t.TempDir()
	if err := syscall.Mount("tmpfs", disk, "tmpfs", 0, "size=64m"); err != nil {
		t.Skipf("skipping: cannot mount a tmpfs to fill: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(disk, syscall.MNT_DETACH) })
	home := filepath.Join(disk, "home")
	if err := vault.Create(home, testPassword, vault.CreateOptions{KDF: fastKDF.KDF, ChunkSize: 64 << 10}); err != nil {
		t.Fatal(err)
	}
	tm := mountVault(t, home)
	ballast := filepath.Join(home, fs.BallastName)
	if _, err := os.Stat(ballast); err != nil {
		t.Fatalf("no ballast after mounting on a disk with room: %v", err)
	}
	keep := randBytes(1, 4<<20)
	if !writeSynced(tm.path("keep"), 0, keep) {
		t.Fatal("writing the first file failed")
	}

	// Our own writes stop at the reserve with a clear ENOSPC.
	var werr error
	err := within(t, "writing until the disk is full", func() error {
		f, err := os.Create(tm.path("big"))
		if err != nil {
			return err
		}
		defer f.Close()
		buf := randBytes(2, 1<<20)
		for i := 0; i < 128 && werr == nil; i++ {
			_, werr = f.Write(buf)
		}
		if werr == nil {
			werr = f.Sync()
		}
		return nil
	})
	if err != nil || !errors.Is(werr, syscall.ENOSPC) {
		t.Fatalf("writing 128 MiB to a 64 MiB disk: %v, %v; want ENOSPC", err, werr)
	}
	if err := within(t, "reading back", func() error {
		got, err := os.ReadFile(tm.path("keep"))
		if err == nil && !bytes.Equal(got, keep) {
			err = errors.New("content differs")
		}
		return err
	}); err != nil {
		t.Fatalf("the file written before the disk filled: %v", err)
	}

	// Another program takes the rest of the disk.
	filler := fillDisk(t, disk, "filler")
	if err := within(t, "mkdir", func() error { return os.Mkdir(tm.path("d"), 0o755) }); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("mkdir on a full disk: %v, want ENOSPC", err)
	}
	if err := within(t, "unlink", func() error { return os.Remove(tm.path("big")) }); err != nil {
		t.Fatalf("deleting a file on a full disk: %v", err)
	}
	if _, err := os.Stat(ballast); !os.IsNotExist(err) {
		t.Fatalf("the ballast was not given back on a full disk: %v", err)
	}

	// Room again: writes work and the ballast comes back.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	// A directory fsync makes the unlink durable, which frees big's chunks.
	if err := within(t, "fsync of the root", func() error {
		d, err := os.Open(tm.path())
		if err != nil {
			return err
		}
		defer d.Close()
		return d.Sync()
	}); err != nil {
		t.Fatal(err)
	}
	after := randBytes(3, 1<<20)
	// The store gives deleted chunks' blocks back in the background (a pack
	// punches holes once its deletions are durable), as a file system frees
	// an unlinked file's blocks at its next commit: within a bound, writes
	// work again and the guard, which looks at the free space at each
	// write, makes its ballast again.
	for deadline := time.Now().Add(20 * time.Second); ; {
		var wrote bool
		if err := within(t, "writing after freeing space", func() error {
			wrote = writeSynced(tm.path("after"), 0, after)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		_, berr := os.Stat(ballast)
		if wrote && berr == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("20s after space was freed: write ok %v, ballast %v", wrote, berr)
		}
		time.Sleep(100 * time.Millisecond)
	}
	tm.unmount()
	checkVault(t, home)
	tm = mountVault(t, home)
	if got := readFile(t, tm.path("keep")); !bytes.Equal(got, keep) {
		t.Fatal("keep differs after remount")
	}
	if got := readFile(t, tm.path("after")); !bytes.Equal(got, after) {
		t.Fatal("after differs after remount")
	}
}

// TestSpaceGuardLooksSeldom: far from a full disk, creating and writing
// files does not look at the free space for every request (a statfs per
// CREATE and WRITE was about 3 % of the mount's CPU): with a look serving
// for an hour, 200 files of 3 writes each take one look or two, where
// every operation that adds data looked before (1200 looks, measured with
// the cache disabled).
func TestSpaceGuardLooksSeldom(t *testing.T) {
	requireFUSE(t)
	fs.SetSpaceStale(t, time.Hour)
	tm := mountVault(t, newVault(t, fastKDF))
	before := fs.StatfsCalls()
	const files = 200
	for i := range files {
		f, err := os.Create(tm.path("f" + strconv.Itoa(i)))
		if err != nil {
			t.Fatal(err)
		}
		for range 3 {
			if _, err := f.Write(make([]byte, 5000)); err != nil {
				t.Fatal(err)
			}
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if n := fs.StatfsCalls() - before; n > 2 {
		t.Fatalf("%d looks at the free space for %d files of 3 writes each, want at most 2", n, files)
	}
}
