package fs_test

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	fincryptfs "github.com/fincrypt/fincrypt/fs"
	"github.com/fincrypt/fincrypt/vault"
)

// TestAttrChangesWhileWriting changes mode, owner and times of files that
// hold unsaved writes (as tar and cp -p do before close), through the open
// handle and by path, and checks that neither the data nor the times of the
// writes are lost, in this mount and after a remount.
func TestAttrChangesWhileWriting(t *testing.T) {
	requireFUSE(t)
	const cs = 4096
	home := newVault(t, vault.CreateOptions{ChunkSize: cs})
	tm := mountVault(t, home)
	old := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	explicit := time.Date(2010, 1, 1, 0, 0, 0, 0, time.UTC)

	type change struct {
		name string
		fn   func(f *os.File, p string) error
		mode uint32    // expected permission bits after
		mt   time.Time // expected mtime after; zero: the time of the writes
	}
	changes := []change{
		{"fchmod", func(f *os.File, _ string) error { return f.Chmod(0o640) }, 0o640, time.Time{}},
		{"chmod-by-path", func(_ *os.File, p string) error { return os.Chmod(p, 0o604) }, 0o604, time.Time{}},
		{"fchown", func(f *os.File, _ string) error { return f.Chown(1234, 5678) }, 0o644, time.Time{}},
		{"chown-by-path", func(_ *os.File, p string) error { return os.Lchown(p, 4321, 8765) }, 0o644, time.Time{}},
		{"utimes-by-path", func(_ *os.File, p string) error { return os.Chtimes(p, explicit, explicit) }, 0o644, explicit},
	}
	want := map[string][]byte{}
	// Each change runs on a file with only a partial chunk written (its
	// times are not in the index yet) and on one with full chunks queued.
	var all []change
	for _, c := range changes {
		c2 := c
		c2.name += "-big"
		all = append(all, c, c2)
	}
	changes = all
	for i, c := range changes {
		p := tm.path(c.name)
		writeFile(t, p, []byte("old"))
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(p, os.O_WRONLY, 0) // no O_TRUNC: it would set the times
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		data := randBytes(uint64(100+i), 100) // a partial chunk, buffered
		if strings.HasSuffix(c.name, "-big") {
			// Two full chunks (queued for sealing) and a partial one.
			data = randBytes(uint64(100+i), 2*cs+100)
		}
		before := time.Now().Add(-time.Second) // file times may be a little coarser than the clock
		if _, err := f.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := c.fn(f, p); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		st := stat(t, p)
		if st.Size != int64(len(data)) {
			t.Fatalf("%s: size %d while open, want %d", c.name, st.Size, len(data))
		}
		if err := f.Close(); err != nil {
			t.Fatalf("%s: close: %v", c.name, err)
		}
		want[c.name] = data
		checkAttrs := func(when string) {
			t.Helper()
			st := stat(t, p)
			mt := time.Unix(st.Mtim.Unix())
			if c.mt.IsZero() {
				if mt.Before(before) {
					t.Fatalf("%s %s: mtime %v, want the time of the writes (after %v)", c.name, when, mt, before)
				}
			} else if !mt.Equal(c.mt) {
				t.Fatalf("%s %s: mtime %v, want %v", c.name, when, mt, c.mt)
			}
			if st.Mode&0o7777 != c.mode || st.Size != int64(len(data)) {
				t.Fatalf("%s %s: mode %o size %d, want %o and %d", c.name, when, st.Mode&0o7777, st.Size, c.mode, len(data))
			}
			mustEqual(t, c.name+" "+when, readFile(t, p), data)
		}
		checkAttrs("after close")
	}
	home = tm.home
	tm.unmount()
	tm = mountVault(t, home)
	for _, c := range changes {
		mustEqual(t, c.name+" after remount", readFile(t, tm.path(c.name)), want[c.name])
	}
	if st := stat(t, tm.path("fchown")); st.Uid != 1234 || st.Gid != 5678 {
		t.Fatalf("fchown after remount: %d:%d", st.Uid, st.Gid)
	}
	if st := stat(t, tm.path("utimes-by-path")); st.Mtim.Sec != explicit.Unix() {
		t.Fatalf("utimes after remount: mtime %d, want %d", st.Mtim.Sec, explicit.Unix())
	}
	tm.unmount()
	checkVault(t, home)
}

// TestUnlinkedWhileOpenIsPurgedAtClose removes the last name of open files
// (by unlink and by a rename over them), and checks that their chunks leave
// the store once the last handle closes, in the same mount; a file with
// another handle still open keeps its data until that one closes.
func TestUnlinkedWhileOpenIsPurgedAtClose(t *testing.T) {
	fincryptfs.UseFileStore(t) // counts chunk files
	requireFUSE(t)
	const cs = 4096
	home := newVault(t, vault.CreateOptions{ChunkSize: cs})
	tm := mountVault(t, home)
	store := tm.v.StoreDir()
	syncDir := func() {
		d, err := os.Open(tm.dir)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		if err := d.Sync(); err != nil { // deletes superseded chunks
			t.Fatal(err)
		}
	}
	syncDir()
	base := countChunks(t, store)
	// Closed files are sealed and released in the background: wait for it.
	waitChunks := func(want int) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			syncDir()
			n := countChunks(t, store)
			if n == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d chunks in the store, want %d", n, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	a, b := tm.path("a"), tm.path("b")
	dataA, dataB := randBytes(1, 3*cs+5), randBytes(2, 2*cs)
	writeFile(t, a, dataA)
	writeFile(t, b, []byte("replacement"))
	writeFile(t, tm.path("kept"), dataB)
	// Files still open when a test fails must close before the unmount
	// (cleanups run last first): the mount is served by this process.
	open := func(p string) *os.File {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	fa, fk1, fk2 := open(a), open(tm.path("kept")), open(tm.path("kept"))
	if err := os.Rename(b, a); err != nil { // a's old inode loses its last name
		t.Fatal(err)
	}
	if err := os.Remove(tm.path("kept")); err != nil {
		t.Fatal(err)
	}
	waitChunks(base + 7) // a (4 chunks), b (1), kept (2), all still held
	got := make([]byte, len(dataA))
	if _, err := fa.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "renamed-over file through its handle", got, dataA)
	fa.Close()
	fk1.Close()
	waitChunks(base + 3) // a's old inode is gone; b and kept remain
	got = make([]byte, len(dataB))
	if _, err := fk2.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "unlinked file through its other handle", got, dataB)
	var st syscall.Stat_t
	if err := syscall.Fstat(int(fk2.Fd()), &st); err != nil || st.Nlink != 0 {
		t.Fatalf("fstat: nlink %d, %v", st.Nlink, err)
	}
	fk2.Close()
	waitChunks(base + 1)
	mustEqual(t, "new a", readFile(t, a), []byte("replacement"))
	tm.unmount()
	checkVault(t, tm.home)
}

// TestWriteAfterShrink writes into a chunk past the end of a file that was
// shrunk: the bytes not written read as zeros, not as the old contents.
func TestWriteAfterShrink(t *testing.T) {
	requireFUSE(t)
	const cs = 4096
	tm := mountVault(t, newVault(t, vault.CreateOptions{ChunkSize: cs}))
	p := tm.path("f")
	writeFile(t, p, randBytes(1, 4*cs))
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(cs / 2); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("xyz"), 2*cs+100); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 2*cs+103)
	copy(want, randBytes(1, cs/2))
	copy(want[2*cs+100:], "xyz")
	got := make([]byte, len(want)+10)
	n, err := f.ReadAt(got, 0)
	if n != len(want) {
		t.Fatalf("read %d bytes (%v), want %d", n, err, len(want))
	}
	mustEqual(t, "after shrink and write", got[:n], want)
	if err := unix.Fsync(int(f.Fd())); err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "read back", readFile(t, p), want)
}

// readDirect reads n bytes at off with O_DIRECT, past the kernel's page
// cache, so the mount serves every read.
func readDirect(t *testing.T, f *os.File, off int64, n int) []byte {
	t.Helper()
	// O_DIRECT wants an aligned buffer: carve one out of a larger slice.
	raw := make([]byte, n+4096)
	a := 4096 - int(uintptr(unsafe.Pointer(&raw[0]))%4096)
	buf := raw[a%4096 : a%4096+n]
	got, err := unix.Pread(int(f.Fd()), buf, off)
	if err != nil || got != n {
		t.Fatalf("pread %d at %d: %d, %v", n, off, got, err)
	}
	return buf
}

// TestSequentialReadAhead reads files chunk after chunk, so that the next
// chunk is loaded ahead, and changes chunks in between (a write committed
// by fsync, a truncate): a chunk loaded ahead before the change must not be
// served after it.
func TestSequentialReadAhead(t *testing.T) {
	requireFUSE(t)
	const cs = 4096
	tm := mountVault(t, newVault(t, vault.CreateOptions{ChunkSize: cs}))
	p := tm.path("seq")
	model := randBytes(7, 8*cs)
	writeFile(t, p, model)
	r, err := os.OpenFile(p, os.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	w, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	rewrite := func(idx int, seed uint64) {
		t.Helper()
		d := randBytes(seed, 100)
		if _, err := w.WriteAt(d, int64(idx*cs+10)); err != nil {
			t.Fatal(err)
		}
		copy(model[idx*cs+10:], d)
		if err := w.Sync(); err != nil { // commits the chunk: it is no longer dirty
			t.Fatal(err)
		}
	}
	// A plain sequential pass.
	for i := 0; i < 8; i++ {
		mustEqual(t, fmt.Sprintf("chunk %d", i), readDirect(t, r, int64(i*cs), cs), model[i*cs:(i+1)*cs])
	}
	// Chunks 0 and 1 read in order load several chunks ahead (2 to 5);
	// chunk 4, inside that window, is rewritten; the reader then goes on
	// in order, jumps back and reads in order again.
	mustEqual(t, "chunk 0 again", readDirect(t, r, 0, cs), model[:cs])
	mustEqual(t, "chunk 1 again", readDirect(t, r, cs, cs), model[cs:2*cs])
	// A whole chunk is written without reading it (a partial write would
	// load the chunk through the same state, taking it from the window).
	full := randBytes(99, cs)
	if _, err := w.WriteAt(full, 4*cs); err != nil {
		t.Fatal(err)
	}
	copy(model[4*cs:], full)
	if err := w.Sync(); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{2, 3, 4, 5, 1, 2, 3, 4, 5, 6, 7} {
		mustEqual(t, fmt.Sprintf("window: chunk %d", i), readDirect(t, r, int64(i*cs), cs), model[i*cs:(i+1)*cs])
	}
	// Chunk 5 read after chunk 4 loads chunk 6 ahead; then chunks 6 and 2
	// are rewritten and committed (the read cache now holds chunk 2).
	mustEqual(t, "chunk 4 again", readDirect(t, r, 4*cs, cs), model[4*cs:5*cs])
	mustEqual(t, "chunk 5 again", readDirect(t, r, 5*cs, cs), model[5*cs:6*cs])
	rewrite(6, 100)
	rewrite(2, 101)
	mustEqual(t, "chunk 6 after rewrite", readDirect(t, r, 6*cs, cs), model[6*cs:7*cs])
	mustEqual(t, "chunk 2 after rewrite", readDirect(t, r, 2*cs, cs), model[2*cs:3*cs])
	// Chunk 3 read after chunk 2 loads chunk 4 ahead; then the file is cut
	// inside chunk 4 and grown again: its tail must read as zeros.
	mustEqual(t, "chunk 3", readDirect(t, r, 3*cs, cs), model[3*cs:4*cs])
	if err := w.Truncate(4*cs + 100); err != nil {
		t.Fatal(err)
	}
	if err := w.Truncate(8 * cs); err != nil {
		t.Fatal(err)
	}
	clear(model[4*cs+100:])
	mustEqual(t, "chunk 4 after truncate", readDirect(t, r, 4*cs, cs), model[4*cs:5*cs])
	mustEqual(t, "whole file", readFile(t, p), model)
}
