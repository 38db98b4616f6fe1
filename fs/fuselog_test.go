package fs_test

import (
	"bytes"
	"context"
	"log"
	"log/slog"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"unsafe"

	"github.com/fincrypt/fincrypt/fs"
	"github.com/fincrypt/fincrypt/vault"
)

// recorder is a slog handler that keeps every record.
type recorder struct {
	mu   *sync.Mutex
	recs *[]slog.Record
}

func newRecorder() recorder { return recorder{mu: &sync.Mutex{}, recs: &[]slog.Record{}} }

func (h recorder) Enabled(context.Context, slog.Level) bool { return true }
func (h recorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	*h.recs = append(*h.recs, r.Clone())
	h.mu.Unlock()
	return nil
}
func (h recorder) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h recorder) WithGroup(string) slog.Handler      { return h }

// atLeast returns the messages at level or above that contain substr.
func (h recorder) atLeast(level slog.Level, substr string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, r := range *h.recs {
		if r.Level >= level && strings.Contains(r.Message, substr) {
			out = append(out, r.Level.String()+" "+r.Message)
		}
	}
	return out
}

// TestFuseChatterAtDebugLevel: go-fuse's own messages ("trySplice: splice:
// want ... bytes, max pipe size ..." on every large read) go to the mount's
// logger at debug level, not to the standard logger (which the command
// prints at INFO); with Debug (--debug-fuse) the request trace shows at INFO.
func TestFuseChatterAtDebugLevel(t *testing.T) {
	requireFUSE(t)
	home := newVault(t, vault.CreateOptions{})
	var std bytes.Buffer
	var stdMu sync.Mutex
	log.SetOutput(writerFunc(func(b []byte) (int, error) { stdMu.Lock(); defer stdMu.Unlock(); return std.Write(b) }))
	t.Cleanup(func() { log.SetOutput(os.Stderr) })

	data := randBytes(3, 8<<20)
	tm := mountVaultOpt(t, home, fs.Options{})
	writeFile(t, tm.path("big"), data)
	tm.unmount() // a new mount starts with an empty page cache: reads reach the file system

	rec := newRecorder()
	tm = mountVaultOpt(t, home, fs.Options{Logger: slog.New(rec)})
	// O_DIRECT: each read(2) reaches the file system whole (1 MiB), as the
	// big reads of a busy mount do; go-fuse then cannot splice it.
	f, err := os.OpenFile(tm.path("big"), os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	buf := alignedBuf(1 << 20)
	got := make([]byte, 0, len(data))
	for {
		n, err := f.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil || n == 0 {
			break
		}
	}
	f.Close()
	mustEqual(t, "big", got, data)
	tm.unmount()
	stdMu.Lock()
	leaked := std.String()
	stdMu.Unlock()
	if strings.Contains(leaked, "splice") || strings.Contains(leaked, "fuse") {
		t.Fatalf("go-fuse wrote to the standard logger (INFO in the mount log):\n%s", leaked)
	}
	if l := rec.atLeast(slog.LevelInfo, "splice"); len(l) > 0 {
		t.Fatalf("go-fuse messages above debug level: %q", l)
	}

	// The trace, when asked for, shows at INFO.
	rec = newRecorder()
	tm = mountVaultOpt(t, home, fs.Options{Logger: slog.New(rec), Debug: true})
	if _, err := os.Stat(tm.path("big")); err != nil {
		t.Fatal(err)
	}
	tm.unmount()
	if len(rec.atLeast(slog.LevelInfo, "LOOKUP")) == 0 {
		t.Fatal("with Debug, the FUSE request trace is not in the log at INFO")
	}
}

type writerFunc func([]byte) (int, error)

func (w writerFunc) Write(b []byte) (int, error) { return w(b) }

// alignedBuf is a page-aligned buffer for O_DIRECT.
func alignedBuf(n int) []byte {
	b := make([]byte, n+4096)
	off := 4096 - int(uintptr(unsafe.Pointer(&b[0]))&4095)
	return b[off%4096:][:n]
}
