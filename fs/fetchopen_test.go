package fs_test

import (
	"io"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/chunkstore"
	"github.com/fincrypt/fincrypt/fs"
	"github.com/fincrypt/fincrypt/meta"
	"github.com/fincrypt/fincrypt/vault"
)

// TestFetchedChunkOpenedOnce reads a file whose chunks are only on "the
// network" (the store's fetcher): each fetched chunk is opened once, by the
// check that keeps a bad copy out of the store, and that plaintext is what
// the read returns; a chunk fetched corrupt fails the read and is not kept.
func TestFetchedChunkOpenedOnce(t *testing.T) {
	requireFUSE(t)
	home := newVault(t, vault.CreateOptions{KDF: fastKDF.KDF, ChunkSize: 64 << 10})
	want := randBytes(11, 5*64<<10+1234) // six chunks

	var (
		mu      sync.Mutex
		kept    = map[meta.ChunkID][]byte{}
		bad     meta.ChunkID
		fetches atomic.Int64
		idx     *meta.Index
		store   *chunkstore.Store
	)
	attach := func(i *meta.Index, s *chunkstore.Store) (io.Closer, error) {
		idx, store = i, s
		s.SetFetcher(func(id meta.ChunkID) ([]byte, error) {
			mu.Lock()
			defer mu.Unlock()
			b, ok := kept[id]
			if !ok {
				return nil, chunkstore.ErrNotFound
			}
			fetches.Add(1)
			if id == bad {
				b = append([]byte(nil), b...)
				b[len(b)/2] ^= 1
			}
			return b, nil
		})
		return io.NopCloser(nil), nil
	}

	// Written, then taken out of the local store (the test keeps them).
	tm := mountVaultOpt(t, home, fs.Options{Attach: attach})
	writeFile(t, tm.path("f"), want)
	if err := tm.m.WaitIdle(time.Minute); err != nil {
		t.Fatal(err)
	}
	var ids []meta.ChunkID
	for _, id := range takeChunksOut(t, idx, store, kept, 6) {
		ids = append(ids, id)
	}
	tm.unmount()

	// A fresh mount (nothing in the kernel's cache) reads them back.
	tm = mountVaultOpt(t, home, fs.Options{Attach: attach})
	loads0, opens0 := fs.ChunkOpens()
	mustEqual(t, "read of fetched chunks", readFile(t, tm.path("f")), want)
	loads, opens := fs.ChunkOpens()
	loads, opens = loads-loads0, opens-opens0
	if fetches.Load() != int64(len(ids)) {
		t.Fatalf("%d fetches for %d chunks", fetches.Load(), len(ids))
	}
	if opens != loads || loads < int64(len(ids)) {
		t.Fatalf("%d chunk loads took %d AEAD opens, want one each (%d chunks fetched)", loads, opens, len(ids))
	}
	// Kept: read again from the store, with no fetch.
	for _, id := range ids {
		if _, ok := store.Has(id); !ok {
			t.Fatalf("fetched chunk %s not kept", id)
		}
	}

	// A corrupt copy is refused and not kept.
	mu.Lock()
	bad = ids[2]
	mu.Unlock()
	if err := store.Delete(bad); err != nil {
		t.Fatal(err)
	}
	tm.unmount()
	tm = mountVaultOpt(t, home, fs.Options{Attach: attach})
	if _, err := os.ReadFile(tm.path("f")); err == nil {
		t.Fatal("a read through a corrupt fetched chunk succeeded")
	}
	if _, ok := store.Has(bad); ok {
		t.Fatal("a corrupt fetched chunk was kept")
	}
}

// takeChunksOut moves every chunk of the index out of the local store into
// to (what the network serves the test's fetcher), after checking there are
// want of them, and returns their ids by chunk index.
func takeChunksOut(t *testing.T, idx *meta.Index, store *chunkstore.Store, to map[meta.ChunkID][]byte, want int) map[uint64]meta.ChunkID {
	t.Helper()
	byIndex := map[uint64]meta.ChunkID{}
	if err := idx.Walk(meta.Visitor{Chunk: func(_, i uint64, ref meta.ChunkRef) { byIndex[i] = ref.ID }}); err != nil {
		t.Fatal(err)
	}
	if len(byIndex) != want {
		t.Fatalf("%d chunks, want %d", len(byIndex), want)
	}
	for _, id := range byIndex {
		b, err := store.Get(id, nil)
		if err != nil {
			t.Fatal(err)
		}
		to[id] = b
		if err := store.Delete(id); err != nil {
			t.Fatal(err)
		}
	}
	return byIndex
}
