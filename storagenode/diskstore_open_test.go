package storagenode

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"testing/iotest"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	fnet "github.com/fincrypt/fincrypt/net"
)

// One storage node per directory: a second open of a directory in use fails
// with ErrLocked, a closed store and a failed open leave it free.
func TestDiskStoreOpenLocksTheDirectory(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 1<<20)
	if s2, err := OpenDiskStore(dir, DiskStoreOptions{Capacity: 1 << 20, Logger: quiet}); !errors.Is(err, ErrLocked) {
		if s2 != nil {
			s2.Close()
		}
		t.Fatalf("second open of a directory in use: %v, want ErrLocked", err)
	}
	s.Close()
	// An open that fails after taking the lock (quarantine/ is a file and
	// a piece file needs quarantining) gives the lock back.
	junk := filepath.Join(dir, piecesDir, "00", "junk"+pieceExt)
	if err := os.WriteFile(junk, []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	block := filepath.Join(dir, quarantineDir)
	if err := os.WriteFile(block, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := OpenDiskStore(dir, DiskStoreOptions{Capacity: 1 << 20, Logger: quiet}); err == nil {
		s.Close()
		t.Fatal("open with quarantine/ a file succeeded")
	}
	if err := os.Remove(block); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir, 1<<20)
	defer s.Close()
	if s2, err := OpenDiskStore(dir, DiskStoreOptions{Capacity: 1 << 20, Logger: quiet}); !errors.Is(err, ErrLocked) {
		if s2 != nil {
			s2.Close()
		}
		t.Fatalf("second open after a failed one: %v, want ErrLocked", err)
	}
}

// Options left zero get their defaults: a store opened without a logger
// logs to slog's default (and does not crash when it has something to
// say), and one without a release window remembers a deletion for the
// longest ticket lifetime.
func TestDiskStoreOpenDefaults(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 1<<20)
	s.Close()
	part := filepath.Join(dir, tmpDir, "interrupted.part")
	if err := os.WriteFile(part, []byte("half an upload"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := OpenDiskStore(dir, DiskStoreOptions{Capacity: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := os.Stat(part); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("interrupted upload left in tmp/: %v", err)
	}
	if s.releaseWindow != DefaultTicketTTL {
		t.Fatalf("release window %v, want %v", s.releaseWindow, DefaultTicketTTL)
	}
	data, id := randPiece(t, 61, 2000)
	if err := s.Put(context.Background(), id, 2000, fnet.AccountID{}, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(id); err != nil {
		t.Fatal(err)
	}
	if at, ok := s.ReleasedAt(id); !ok || time.Since(at) > time.Minute {
		t.Fatalf("a deletion just made is not remembered under the default window: %v %v", at, ok)
	}
}

// A store created several directories deep keeps what it acknowledged
// through a power cut: the new directories' entries are synced in their
// parents, not only the store's own.
func TestDiskStoreNewNestedDirSurvivesPowerLoss(t *testing.T) {
	fsys := vfs.NewCrashableMem()
	const dir = "/srv/nodes/a/data"
	s, err := OpenDiskStore(dir, DiskStoreOptions{Capacity: 1 << 20, Logger: quiet, FS: fsys})
	if err != nil {
		t.Fatal(err)
	}
	data, id := randPiece(t, 62, 3000)
	if err := s.Put(context.Background(), id, 3000, fnet.AccountID{3}, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	after := fsys.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 0})
	s.Close()
	s, err = OpenDiskStore(dir, DiskStoreOptions{Capacity: 1 << 20, Logger: quiet, FS: after})
	if err != nil {
		t.Fatalf("reopen after the power cut: %v", err)
	}
	defer s.Close()
	if info, err := s.Stat(id); err != nil || info.Account != (fnet.AccountID{3}) {
		t.Fatalf("an acknowledged piece after the power cut: %+v %v", info, err)
	}
}

// Index entries and a scrub cursor that are empty or cut short (a damaged
// index) do not stop the node: the entries are dropped at start, the
// cursor is replaced by a new pass, the healthy piece kept.
func TestDiskStoreUnreadableIndexValues(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 1<<20)
	data, id := randPiece(t, 63, 1500)
	if err := s.Put(context.Background(), id, 1500, fnet.AccountID{}, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	bad := [][2][]byte{
		{indexKey([32]byte{1}), nil},                     // empty value
		{indexKey([32]byte{2}), {indexVersion, 0, 0}},    // cut short
		{{indexPrefix, 7}, make([]byte, indexValueSize)}, // a short key
	}
	for _, kv := range bad {
		if err := s.db.Set(kv[0], kv[1], pebble.Sync); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.db.Set([]byte(scrubCursorKey), nil, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if c, err := s.loadScrubCursor(); err != nil || c != (scrubCursor{}) {
		t.Fatalf("empty scrub cursor: %+v %v, want a zero cursor", c, err)
	}
	s.Close()
	s = open(t, dir, 1<<20)
	defer s.Close()
	for _, kv := range bad {
		if _, closer, err := s.db.Get(kv[0]); err == nil {
			closer.Close()
			t.Errorf("unreadable index entry %x kept", kv[0])
		}
	}
	if used, n := s.Usage(); used != 1500 || n != 1 {
		t.Fatalf("usage %d bytes in %d pieces, want 1500 in 1", used, n)
	}
	if _, err := s.Stat(id); err != nil {
		t.Fatalf("the healthy piece: %v", err)
	}
}

// errWriteFS makes every write to a file created under dir fail with err.
type errWriteFS struct {
	vfs.FS
	prefix string
	err    error
}

type errWriteFile struct {
	vfs.File
	err error
}

func (f errWriteFile) Write(p []byte) (int, error) { return 0, f.err }

func (f *errWriteFS) Create(name string, cat vfs.DiskWriteCategory) (vfs.File, error) {
	file, err := f.FS.Create(name, cat)
	if err != nil || !strings.HasPrefix(name, f.prefix) {
		return file, err
	}
	return errWriteFile{File: file, err: &os.PathError{Op: "write", Path: name, Err: f.err}}, nil
}

// A disk that runs out of space (or quota) under an upload answers it as
// full (fnet.ErrFull, which the client takes as "try another node"); any
// other write error is not full. Nothing is left behind either way.
func TestDiskStoreDiskFullIsErrFull(t *testing.T) {
	for _, c := range []struct {
		err  syscall.Errno
		full bool
	}{{syscall.ENOSPC, true}, {syscall.EDQUOT, true}, {syscall.EIO, false}} {
		fsys := &errWriteFS{FS: vfs.NewMem(), prefix: "/d/" + tmpDir + "/", err: c.err}
		s, err := OpenDiskStore("/d", DiskStoreOptions{Capacity: 1 << 20, Logger: quiet, FS: fsys})
		if err != nil {
			t.Fatal(err)
		}
		data, id := randPiece(t, 64, 2500)
		err = s.Put(context.Background(), id, 2500, fnet.AccountID{}, bytes.NewReader(data))
		if err == nil || errors.Is(err, ErrFull) != c.full || !errors.Is(err, c.err) || strings.Contains(err.Error(), "disk full") != c.full {
			t.Errorf("%v under a put: %v, want full %v", c.err, err, c.full)
		}
		if left, _ := fsys.List("/d/" + tmpDir); len(left) != 0 {
			t.Errorf("%v: upload files left: %v", c.err, left)
		}
		if used, n := s.Usage(); used != 0 || n != 0 || s.reserved != 0 {
			t.Errorf("%v: %d bytes in %d pieces, %d reserved after a failed put", c.err, used, n, s.reserved)
		}
		s.Close()
	}
}

// failingWriter fails its write after n bytes.
type failingWriter struct {
	bytes.Buffer
	n int
}

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.Len()+len(p) > w.n {
		return 0, errors.New("write failed")
	}
	return w.Buffer.Write(p)
}

// pipeCopy copies every byte of sources of any size and read pattern, past
// the bytes its buffers hold at once, and stops with the first read or
// write error.
func TestPipeCopy(t *testing.T) {
	for _, n := range []int{0, 1, pipeBufSize - 1, pipeBufSize, pipeBufSize + 1, pipeBufs*pipeBufSize + 3} {
		src := make([]byte, n)
		rand.NewChaCha8([32]byte{byte(n), 3}).Read(src)
		for name, r := range map[string]io.Reader{
			"whole": bytes.NewReader(src),
			"half":  iotest.HalfReader(bytes.NewReader(src)),
			"one":   iotest.OneByteReader(bytes.NewReader(src[:min(n, 5000)])),
		} {
			want := src
			if name == "one" {
				want = src[:min(n, 5000)]
			}
			var dst bytes.Buffer
			done := make(chan struct{})
			var got int64
			var err error
			go func() {
				defer close(done)
				got, err = pipeCopy(&dst, r)
			}()
			select {
			case <-done:
			case <-time.After(60 * time.Second):
				t.Fatalf("%d bytes, %s reads: pipeCopy did not return within 60 s", n, name)
			}
			if err != nil || got != int64(len(want)) || !bytes.Equal(dst.Bytes(), want) {
				t.Fatalf("%d bytes, %s reads: copied %d (%d in dst, equal %v), %v", n, name, got, dst.Len(), bytes.Equal(dst.Bytes(), want), err)
			}
		}
	}
	src := make([]byte, 3*pipeBufSize)
	rand.NewChaCha8([32]byte{70}).Read(src)
	readErr := errors.New("connection reset")
	if got, err := pipeCopy(io.Discard, io.MultiReader(bytes.NewReader(src[:pipeBufSize+10]), iotest.ErrReader(readErr))); !errors.Is(err, readErr) || got != pipeBufSize+10 {
		t.Fatalf("a read error after %d bytes: copied %d, %v", pipeBufSize+10, got, err)
	}
	w := &failingWriter{n: pipeBufSize}
	if got, err := pipeCopy(w, bytes.NewReader(src)); err == nil || got != pipeBufSize {
		t.Fatalf("a write error after %d bytes: copied %d, %v", pipeBufSize, got, err)
	}
}
