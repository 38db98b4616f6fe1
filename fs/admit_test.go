package fs_test

import (
	"bytes"
	"io"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/chunkstore"
	"github.com/fincrypt/fincrypt/fs"
	"github.com/fincrypt/fincrypt/meta"
	"github.com/fincrypt/fincrypt/vault"
)

// TestTwoStreamsKeepTheirHeads: two readers stream through the same open
// file at once, each through its own part (further apart than the
// reorder window and what is loaded ahead), their requests taking turns;
// its chunks are only on "the network". Each reader is a run of its own:
// the store keeps each run's head and passes the rest on (what one run
// loaded twice included), and every byte reads back. Before, each
// request of one reader coming between two of the other's counted as a
// jump that started a new run, and every chunk either read was kept as
// the start of a run.
func TestTwoStreamsKeepTheirHeads(t *testing.T) {
	requireFUSE(t)
	const cs = 1 << 20
	const chunks = 32
	// a reads chunks 0-7, b 20-27: what a's window and the kernel load
	// ahead of a (4 chunks each) ends 8 chunks (the reorder window) short
	// of b's part.
	const span, bStart = 8, 20
	const head = 2 * cs
	home := newVault(t, vault.CreateOptions{KDF: fastKDF.KDF, ChunkSize: cs})
	want := randBytes(17, chunks*cs)

	var (
		mu    sync.Mutex
		net   = map[meta.ChunkID][]byte{}
		idx   *meta.Index
		store *chunkstore.Store
	)
	attach := func(i *meta.Index, s *chunkstore.Store) (io.Closer, error) {
		idx, store = i, s
		s.SetFetcher(func(id meta.ChunkID) ([]byte, error) {
			mu.Lock()
			defer mu.Unlock()
			b, ok := net[id]
			if !ok {
				return nil, chunkstore.ErrNotFound
			}
			return bytes.Clone(b), nil
		})
		s.SetAdmission(chunkstore.Admission{Head: head, Window: 1 << 40})
		return io.NopCloser(nil), nil
	}

	// Written, then moved from the local store to "the network".
	tm := mountVaultOpt(t, home, fs.Options{Attach: attach})
	writeFile(t, tm.path("f"), want)
	if err := tm.m.WaitIdle(time.Minute); err != nil {
		t.Fatal(err)
	}
	byIndex := takeChunksOut(t, idx, store, net, chunks)
	tm.unmount()

	// A fresh mount (nothing in the kernel's cache): a request of each
	// reader in turn.
	tm = mountVaultOpt(t, home, fs.Options{Attach: attach})
	open := func() *os.File {
		f, err := os.Open(tm.path("f"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	a, b := open(), open()
	buf := make([]byte, 256<<10)
	for off := int64(0); off < span*cs; off += int64(len(buf)) {
		for _, r := range []struct {
			f   *os.File
			off int64
		}{{a, off}, {b, bStart*cs + off}} {
			n, err := r.f.ReadAt(buf, r.off)
			if err != nil || n != len(buf) {
				t.Fatalf("read at %d: %d bytes, %v", r.off, n, err)
			}
			mustEqual(t, "a streamed read", buf, want[r.off:r.off+int64(n)])
		}
	}
	var kept []uint64
	for i := uint64(0); i < chunks; i++ {
		if _, ok := store.Has(byIndex[i]); ok {
			kept = append(kept, i)
		}
	}
	// Each run's head.
	wantKept := []uint64{0, 1, bStart, bStart + 1}
	passed, second := store.StreamCounts()
	t.Logf("kept chunks %v; streamed chunks passed on %d, kept on a second read %d", kept, passed, second)
	if len(kept) != len(wantKept) {
		t.Fatalf("two readers streaming at once kept chunks %v, want their heads %v", kept, wantKept)
	}
	for i := range kept {
		if kept[i] != wantKept[i] {
			t.Fatalf("two readers streaming at once kept chunks %v, want their heads %v", kept, wantKept)
		}
	}
}
