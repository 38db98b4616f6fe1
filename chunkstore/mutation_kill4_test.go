package chunkstore

// Tests written against the mutants of store.go, upgrade.go and sysfs.go
// that outlived the chunk store's own tests in the mutant schemata run of
// the ninth session (issue 21; docs/TESTING.md lists each with its mutant).

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/fincrypt/fincrypt/meta"
	"golang.org/x/sys/unix"
)

// TestWriteAllError checks that a write error (ENOSPC from /dev/full) is
// returned by writeAll, not taken as a count of bytes written.
func TestWriteAllError(t *testing.T) {
	f, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		t.Skipf("no /dev/full: %v", err)
	}
	defer f.Close()
	if err := writeAll(int(f.Fd()), []byte("chunk bytes")); !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("writeAll to a full device: %v, want ENOSPC", err)
	}
}

// TestOSPackPunch checks that a pack on the operating system's file system
// gives back the whole blocks of a punched range, which then read as
// zeroes, and keeps the bytes around them.
func TestOSPackPunch(t *testing.T) {
	dir := t.TempDir()
	probe, err := os.Create(filepath.Join(dir, "probe"))
	if err != nil {
		t.Fatal(err)
	}
	probe.Write(make([]byte, 8192))
	err = unix.Fallocate(int(probe.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 0, 4096)
	probe.Close()
	if err != nil {
		t.Skipf("no hole punching here: %v", err)
	}
	f, err := osFS{}.openPack(filepath.Join(dir, "pack"), true, true)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data := bytes.Repeat([]byte{0xa5}, 5*4096)
	if _, err := f.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	f.punch(100, 3*4096) // the whole blocks inside: 4096..12288
	got := make([]byte, len(data))
	if _, err := f.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(data)
	clear(want[4096:12288])
	if !bytes.Equal(got, want) {
		t.Fatalf("after punching [100, %d): blocks 1 and 2 zero %v, the rest kept %v",
			100+3*4096, bytes.Equal(got[4096:12288], want[4096:12288]),
			bytes.Equal(got[:4096], want[:4096]) && bytes.Equal(got[12288:], want[12288:]))
	}
	if size, _, err := f.stat(); err != nil || size != int64(len(data)) {
		t.Fatalf("size after the punch %d, %v; want %d", size, err, len(data))
	}
}

// TestOSFSMkdir checks osFS.mkdir: an existing directory is not an error,
// a directory whose parent is missing is.
func TestOSFSMkdir(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "packs")
	if err := (osFS{}).mkdir(p); err != nil {
		t.Fatalf("mkdir: %v", err)
	}
	if err := (osFS{}).mkdir(p); err != nil {
		t.Fatalf("mkdir of an existing directory: %v", err)
	}
	if ok, err := (osFS{}).isDir(p); !ok || err != nil {
		t.Fatalf("isDir after mkdir: %v, %v", ok, err)
	}
	if err := (osFS{}).mkdir(filepath.Join(dir, "missing", "packs")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("mkdir under a missing directory: %v, want ErrNotExist", err)
	}
}

// TestOSFSSyncMissing checks that syncing a missing file or directory is
// fs.ErrNotExist (syncPaths skips those: a chunk deleted meanwhile), not
// another error that would fail the whole sync.
func TestOSFSSyncMissing(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "gone")
	if err := (osFS{}).sync(missing); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("sync of a missing file: %v, want ErrNotExist", err)
	}
	if err := (osFS{}).syncAll(missing); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("syncAll of a missing directory: %v, want ErrNotExist", err)
	}
	if err := (osFS{}).sync(dir); err != nil {
		t.Fatalf("sync of a directory: %v", err)
	}
	if err := (osFS{}).syncAll(dir); err != nil {
		t.Fatalf("syncAll: %v", err)
	}
}

// TestCreateOnFullDisk checks that a chunk file whose write hits a full
// disk is an error (ENOSPC), not a success: on the operating system's file
// system (a tmpfs of one page, mounted when run as root) the partial file
// is removed; on a vfs whose writes fail, the error is returned.
func TestCreateOnFullDisk(t *testing.T) {
	data := bytes.Repeat([]byte("sealed chunk "), 10000)

	ffs := &faultFS{FS: vfs.NewMem()}
	ffs.full.Store(true)
	if err := (vfsFS{ffs}).create("chunk", data); !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("vfs create on a full disk: %v, want ENOSPC", err)
	}

	if os.Geteuid() != 0 {
		t.Skip("mounting a full tmpfs needs root")
	}
	mnt := t.TempDir()
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=4k"); err != nil {
		t.Skipf("no tmpfs: %v", err)
	}
	defer unix.Unmount(mnt, 0)
	p := filepath.Join(mnt, "chunk")
	if err := (osFS{}).create(p, data); !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("create on a full tmpfs: %v, want ENOSPC", err)
	}
	if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the partial file is left: %v", err)
	}
}

// TestUpgradeBatchEdge checks that Upgrade syncs a batch and removes its
// chunk files as soon as the batch reaches upgradeBatch bytes: with a batch
// of exactly one chunk's size, each chunk's file is gone before the next
// chunk moves.
func TestUpgradeBatchEdge(t *testing.T) {
	mem := newMem(t)
	const dir = "/vault/store"
	s, err := OpenFSFormat(dir, mem, FormatFiles)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var ids []meta.ChunkID
	for i := range 3 {
		id := NewID()
		if err := s.Put(id, bytes.Repeat([]byte{byte(i)}, 1000)); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	upgradeBatchTest(t, 1000)
	var moved, gone []int
	upgradeHook = func(n int) {
		left := 0
		for _, id := range ids {
			if _, err := mem.Stat(s.Path(id)); err == nil {
				left++
			}
		}
		moved = append(moved, n)
		gone = append(gone, len(ids)-left)
	}
	defer func() { upgradeHook = nil }()
	if err := s.Upgrade(nil); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(moved, []int{1, 2, 3}) || !slices.Equal(gone, []int{0, 1, 2}) {
		t.Fatalf("at each chunk moved %v, chunk files removed %v; want [1 2 3] and [0 1 2]", moved, gone)
	}
	for i, id := range ids {
		b, err := s.Get(id, nil)
		if err != nil || !bytes.Equal(b, bytes.Repeat([]byte{byte(i)}, 1000)) {
			t.Fatalf("chunk %d after the upgrade: %d bytes, %v", i, len(b), err)
		}
	}
}

// TestFSSizeAndStat checks size and stat on both file systems: a file's
// size, and fs.ErrNotExist for a missing one.
func TestFSSizeAndStat(t *testing.T) {
	dir := t.TempDir()
	mem := vfs.NewMem()
	if err := mem.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, sys := range []fileSystem{osFS{}, vfsFS{mem}} {
		p := filepath.Join(dir, "f")
		if err := sys.create(p, make([]byte, 1234)); err != nil {
			t.Fatal(err)
		}
		if n, err := sys.size(p); n != 1234 || err != nil {
			t.Fatalf("%T size: %d, %v; want 1234", sys, n, err)
		}
		if n, _, err := sys.stat(p); n != 1234 || err != nil {
			t.Fatalf("%T stat: %d, %v; want 1234", sys, n, err)
		}
		missing := filepath.Join(dir, "missing")
		if _, err := sys.size(missing); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("%T size of a missing file: %v", sys, err)
		}
		if _, _, err := sys.stat(missing); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("%T stat of a missing file: %v", sys, err)
		}
	}
}
