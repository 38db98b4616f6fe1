package fs_test

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/fs"
	"github.com/fincrypt/fincrypt/vault"
)

// TestFsyncKillWriteback: with the kernel's write-back cache, a write(2)
// returns once its data is in the kernel's page cache, and only fsync(2)
// (or close) makes the kernel send it. Each file here is written in ways
// that leave dirty pages behind (small unaligned writes, an overwrite, an
// O_APPEND append, a truncate and regrowth), fsynced and left OPEN, so no
// close writes anything back; then the mount process is killed with
// SIGKILL. After a remount every fsynced file must read back as it was at
// its fsync, with the size and mtime stat showed then: fsync may not return
// before the kernel's dirty pages (and its times) reached the store. Files
// written without fsync carry no promise; the test only logs what survived.
// The direct mode (no write-back cache) runs the same checks.
func TestFsyncKillWriteback(t *testing.T) {
	requireFUSE(t)
	t.Run("writeback", func(t *testing.T) { testFsyncKill(t, true) })
	t.Run("direct", func(t *testing.T) { testFsyncKill(t, false) })
}

func testFsyncKill(t *testing.T, writeback bool) {
	home := newVault(t, vault.CreateOptions{ChunkSize: 64 << 10})
	mnt := t.TempDir()
	srv := startServer(t, home, mnt, writeback)

	type want struct {
		data  []byte
		mtime syscall.Timespec
	}
	durable := map[string]want{}
	var open []*os.File
	defer func() {
		for _, f := range open {
			f.Close()
		}
	}()
	openFile := func(name string, flag int) *os.File {
		f, err := os.OpenFile(filepath.Join(mnt, name), os.O_RDWR|os.O_CREATE|flag, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, f)
		return f
	}
	write := func(f *os.File, b []byte, off int64) {
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatalf("%s: write: %v", f.Name(), err)
		}
	}
	synced := func(f *os.File, data []byte) {
		if err := f.Sync(); err != nil {
			t.Fatalf("%s: fsync: %v", f.Name(), err)
		}
		var st syscall.Stat_t
		if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
			t.Fatal(err)
		}
		if st.Size != int64(len(data)) {
			t.Fatalf("%s: size %d after fsync, wrote %d", f.Name(), st.Size, len(data))
		}
		durable[filepath.Base(f.Name())] = want{append([]byte(nil), data...), st.Mtim}
	}

	// Small unaligned writes: three of 5000 bytes, then one across a
	// chunk boundary.
	f := openFile("small", 0)
	var small []byte
	for i := range 3 {
		b := randBytes(uint64(10+i), 5000)
		write(f, b, int64(len(small)))
		small = append(small, b...)
	}
	b := randBytes(13, 70000)
	write(f, b, int64(len(small)))
	small = append(small, b...)
	synced(f, small)

	// 3 MiB in 4 KiB writes (the kernel gathers them into large WRITEs).
	f = openFile("pages", 0)
	pages := randBytes(20, 3<<20)
	for off := 0; off < len(pages); off += 4096 {
		write(f, pages[off:off+4096], int64(off))
	}
	synced(f, pages)

	// An fsynced file overwritten in the middle and fsynced again: the
	// kernel reads the partly written pages back first (a READ on this
	// handle).
	f = openFile("overwritten", 0)
	over := randBytes(30, 300000)
	write(f, over, 0)
	synced(f, over)
	patch := randBytes(31, 1234)
	copy(over[100001:], patch)
	write(f, patch, 100001)
	synced(f, over)

	// O_APPEND: the kernel picks the offset.
	f = openFile("appended", os.O_APPEND)
	var app []byte
	for i := range 5 {
		b := randBytes(uint64(40+i), 777*(i+1))
		if _, err := f.Write(b); err != nil {
			t.Fatal(err)
		}
		app = append(app, b...)
	}
	synced(f, app)

	// Truncated down, then grown by a write past the end (a hole).
	f = openFile("truncated", 0)
	tr := randBytes(50, 200000)
	write(f, tr, 0)
	if err := f.Truncate(1000); err != nil {
		t.Fatal(err)
	}
	tr = append(tr[:1000], make([]byte, 9000)...)
	b = randBytes(51, 3000)
	write(f, b, 10000)
	tr = append(tr, b...)
	synced(f, tr)

	// Written after an fsync and not fsynced again: no promise.
	f = openFile("unsynced", 0)
	write(f, randBytes(60, 100000), 0)

	if err := srv.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	srv.Wait()
	for _, f := range open {
		f.Close() // fails on the dead connection; nothing to write back
	}
	open = nil
	if err := syscall.Unmount(mnt, syscall.MNT_DETACH); err != nil {
		t.Fatalf("detaching the dead mount: %v", err)
	}

	tm := mountVault(t, home)
	for name, w := range durable {
		got, err := os.ReadFile(tm.path(name))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !bytes.Equal(got, w.data) {
			t.Errorf("%s: %d bytes read after the kill, %d fsynced, first difference at %d",
				name, len(got), len(w.data), firstDiff(got, w.data))
		}
		var st syscall.Stat_t
		if err := syscall.Stat(tm.path(name), &st); err != nil {
			t.Fatal(err)
		}
		if st.Mtim != w.mtime {
			t.Errorf("%s: mtime %v after the kill, %v at fsync", name, st.Mtim, w.mtime)
		}
	}
	if st, err := os.Stat(tm.path("unsynced")); err == nil {
		t.Logf("unsynced file after the kill: %d bytes (no promise)", st.Size())
	} else {
		t.Logf("unsynced file after the kill: %v (no promise)", err)
	}
	tm.unmount()
	checkVault(t, home)
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestWritebackWriteKeepsTheKernelsTimes: with the write-back cache the
// kernel owns a file's times and sends them as a SETATTR, which it may send
// before the WRITE of the pages that changed them (the inode and its pages
// are written back apart, and the mount serves requests concurrently). A
// WRITE served after the SETATTR must not stamp its own clock over them:
// it did, so a file fsynced with the mtime stat showed came back after a
// kill -9 with a later one (TestFsyncKillWriteback, once in CI). Without
// the write-back cache the mount owns the times and a WRITE sets them.
func TestWritebackWriteKeepsTheKernelsTimes(t *testing.T) {
	requireFUSE(t)
	for _, writeback := range []bool{true, false} {
		t.Run(map[bool]string{true: "writeback", false: "direct"}[writeback], func(t *testing.T) {
			home := newVault(t, vault.CreateOptions{ChunkSize: 64 << 10})
			tm := mountVaultOpt(t, home, fs.Options{WritebackCache: writeback})
			f, err := os.OpenFile(tm.path("f"), os.O_RDWR|os.O_CREATE, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			data := randBytes(70, 100000)
			if _, err := f.WriteAt(data, 0); err != nil {
				t.Fatal(err)
			}
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
			// The kernel's SETATTR of the times (utimensat sends the same).
			set := time.Date(2001, 2, 3, 4, 5, 6, 7000, time.UTC)
			if err := os.Chtimes(tm.path("f"), set, set); err != nil {
				t.Fatal(err)
			}
			var st syscall.Stat_t
			if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
				t.Fatal(err)
			}
			// Then a WRITE of pages (as the kernel's write-back sends it).
			patch := randBytes(71, 5000)
			copy(data[40000:], patch)
			if ok, err := tm.m.ServeWrite(st.Ino, patch, 40000); !ok || err != nil {
				t.Fatalf("serving a WRITE: open %v, %v", ok, err)
			}
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
			f.Close()
			tm.unmount()

			tm = mountVaultOpt(t, home, fs.Options{WritebackCache: writeback})
			if got := readFile(t, tm.path("f")); !bytes.Equal(got, data) {
				t.Fatalf("read back %d bytes, first difference at %d", len(got), firstDiff(got, data))
			}
			fi, err := os.Stat(tm.path("f"))
			if err != nil {
				t.Fatal(err)
			}
			if writeback && !fi.ModTime().Equal(set) {
				t.Errorf("mtime %v after a WRITE served after the kernel's SETATTR, want the kernel's %v", fi.ModTime(), set)
			}
			if !writeback && !fi.ModTime().After(set) {
				t.Errorf("mtime %v after a WRITE, want the write's time (after %v)", fi.ModTime(), set)
			}
		})
	}
}
