package fs_test

import (
	"io"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/chunkstore"
	"github.com/fincrypt/fincrypt/fs"
	"github.com/fincrypt/fincrypt/meta"
)

// unsavedProbe is an attached service that keeps the mount's count of
// what open files hold outside the index (fs.UnsavedReporter).
type unsavedProbe struct {
	mu sync.Mutex
	fn func() ([]uint64, int, uint64)
}

func (p *unsavedProbe) ReportUnsaved(fn func() ([]uint64, int, uint64)) {
	p.mu.Lock()
	p.fn = fn
	p.mu.Unlock()
}

func (p *unsavedProbe) Close() error { return nil }

func (p *unsavedProbe) count(t *testing.T) (inos []uint64, chunks int, bytes uint64) {
	t.Helper()
	p.mu.Lock()
	fn := p.fn
	p.mu.Unlock()
	if fn == nil {
		t.Fatal("the mount gave its attached service no count of unsaved open files")
	}
	return fn()
}

// TestUnsavedOpenFiles: what an open file holds that the index does not
// (written, unsealed, sealing, a size) is reported to the attached service
// until it is committed, by fsync or by the last close; a file whose lock
// is held (a slow read, a release waiting for its chunks) counts, without
// the count waiting for it, with what it held when its lock was last let go.
func TestUnsavedOpenFiles(t *testing.T) {
	requireFUSE(t)
	home := newVault(t, fastKDF)
	probe := &unsavedProbe{}
	tm := mountVaultOpt(t, home, fs.Options{Attach: func(*meta.Index, *chunkstore.Store) (io.Closer, error) { return probe, nil }})
	want := func(what string, files, chunks int, bytes uint64) {
		t.Helper()
		inos, c, b := probe.count(t)
		if len(inos) != files || c != chunks || b != bytes {
			t.Fatalf("%s: %d files, %d chunks, %d bytes unsaved; want %d, %d, %d", what, len(inos), c, b, files, chunks, bytes)
		}
	}
	want("nothing open", 0, 0, 0)
	f, err := os.OpenFile(tm.path("held"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want("created, nothing written", 0, 0, 0)
	if _, err := f.Write(make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	want("1000 bytes written, file open", 1, 1, 1000)
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	want("after fsync", 0, 0, 0)
	if err := f.Truncate(5000); err != nil {
		t.Fatal(err)
	}
	want("after a truncate (committed by it)", 0, 0, 0)
	if _, err := f.WriteAt([]byte("tail"), 5000); err != nil {
		t.Fatal(err)
	}
	want("4 bytes more", 1, 1, 5004)

	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	release, ok := tm.m.HoldOpenFile(st.Ino)
	if !ok {
		t.Fatal("the held file is not open in the mount")
	}
	inos, chunks, bytes := probe.count(t) // must not wait for the lock
	release()
	if len(inos) != 1 || inos[0] != st.Ino || chunks != 1 || bytes != 5004 {
		t.Fatalf("a busy file written since last seen clean: reported %v, %d chunks, %d bytes; want [%d], 1, 5004",
			inos, chunks, bytes, st.Ino)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	want("after the second fsync", 0, 0, 0)
	release, _ = tm.m.HoldOpenFile(st.Ino)
	inos, _, _ = probe.count(t)
	release()
	if len(inos) != 0 {
		t.Fatalf("a busy file seen clean and not written since: reported %v", inos)
	}

	// The last close: counted while its chunks wait to be sealed, not
	// once its release committed them.
	if _, err := f.WriteAt([]byte("more"), 0); err != nil {
		t.Fatal(err)
	}
	// Let go before the unmount (cleanups run last first) even when an
	// assertion below fails: an unmount with every sealing slot held
	// waited for the release for ever, and the test hung until the
	// package's timeout.
	hold := sync.OnceFunc(tm.m.HoldSealing())
	t.Cleanup(hold)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	want("closed, its chunk waiting to be sealed", 1, 1, 5004)
	// The same while its lock is held, as the release and the sealing
	// worker hold it for a moment while the chunk waits (a status once
	// found it so and counted 1 file, 0 chunks, 0 bytes).
	if release, ok := tm.m.HoldOpenFile(st.Ino); ok {
		inos, chunks, bytes := probe.count(t)
		release()
		if len(inos) != 1 || chunks != 1 || bytes != 5004 {
			t.Fatalf("closed, its chunk waiting to be sealed, file busy: %d files, %d chunks, %d bytes unsaved; want 1, 1, 5004",
				len(inos), chunks, bytes)
		}
	} else {
		t.Fatal("the closed file left the open files while its chunk waits to be sealed")
	}
	hold()
	deadline := time.Now().Add(time.Minute)
	for {
		inos, _, _ := probe.count(t)
		if len(inos) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a minute after its release was let go, %v still unsaved", inos)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestCommitOpenAfter: writes to a file kept open (a log, a mailbox) are
// committed to the index by the mount once they are CommitOpenAfter old,
// without a close or fsync, so that they reach the network and a restore;
// the file stays open and writable, and later writes are committed too.
func TestCommitOpenAfter(t *testing.T) {
	requireFUSE(t)
	home := newVault(t, fastKDF)
	probe := &unsavedProbe{}
	tm := mountVaultOpt(t, home, fs.Options{CommitOpenAfter: 100 * time.Millisecond,
		Attach: func(*meta.Index, *chunkstore.Store) (io.Closer, error) { return probe, nil }})
	f, err := os.OpenFile(tm.path("log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	var want []byte
	for round, line := range []string{"first line\n", "second line, later\n"} {
		if _, err := f.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
		want = append(want, line...)
		deadline := time.Now().Add(time.Minute)
		for {
			inos, _, _ := probe.count(t)
			in, err := tm.m.Index().GetInode(st.Ino)
			if err != nil {
				t.Fatal(err)
			}
			_, hasChunk, err := tm.m.Index().GetChunk(st.Ino, 0)
			if err != nil {
				t.Fatal(err)
			}
			if len(inos) == 0 && in.Size == uint64(len(want)) && hasChunk {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: a minute after a write to a file kept open: %d unsaved open files, indexed size %d (want %d), chunk indexed %v",
					round, len(inos), in.Size, len(want), hasChunk)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(tm.path("log"))
	if err != nil || string(got) != string(want) {
		t.Fatalf("read back %q, %v; want %q", got, err, want)
	}
}
