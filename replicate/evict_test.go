package replicate

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/fincrypt/fincrypt/chunkstore"
	"github.com/fincrypt/fincrypt/meta"
	"github.com/fincrypt/fincrypt/vault"
)

// TestEvictionBoundaries: the local copy of a chunk is dropped only while
// its segment survives the loss of one more piece. A segment degraded to
// exactly K healthy pieces (one loss from gone) keeps its chunks, as do
// those below K and pending chunks; durable ones and those with K+1 go.
func TestEvictionBoundaries(t *testing.T) {
	const k, n = 2, 4
	for healthy := 0; healthy <= n; healthy++ {
		want := "degraded"
		if healthy == n {
			want = "durable"
		}
		if got := healthState(healthy, n).String(); got != want {
			t.Errorf("%d of %d pieces healthy: %s, want %s", healthy, n, got, want)
		}
	}

	_, idx, store := localVault(t)
	type tc struct {
		name  string
		seg   *meta.Segment // nil: pending, no location
		evict bool
	}
	cases := []tc{{name: "pending"}}
	for healthy := 0; healthy <= n; healthy++ {
		state := healthState(healthy, n)
		cases = append(cases, tc{
			name:  fmt.Sprintf("%s with %d of %d healthy (K=%d)", state, healthy, n, k),
			seg:   &meta.Segment{ID: meta.SegmentID{byte(healthy + 1)}, Kind: meta.KindData, State: state, K: k, N: n, Healthy: uint8(healthy), Class: 4096},
			evict: healthy > k,
		})
	}
	// A segment recorded durable is durable whatever its last count says.
	cases = append(cases, tc{name: "durable", seg: &meta.Segment{ID: meta.SegmentID{99}, Kind: meta.KindData, State: meta.SegmentDurable, K: k, N: n, Healthy: n, Class: 4096}, evict: true})
	ids := make([]meta.ChunkID, len(cases))
	b := idx.NewBatch()
	for i, c := range cases {
		ids[i] = chunkstore.NewID()
		if err := store.Put(ids[i], []byte("sealed chunk")); err != nil {
			t.Fatal(err)
		}
		if c.seg != nil {
			b.PutSegment(c.seg)
			b.PutLocation(ids[i], &meta.Location{Segment: c.seg.ID, Length: 12})
		}
	}
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	r := &Replicator{idx: idx, store: store, log: slog.New(slog.DiscardHandler)}
	if _, err := r.evictTo(0, false); err != nil {
		t.Fatal(err)
	}
	for i, c := range cases {
		_, err := store.Get(ids[i], nil)
		if kept := err == nil; kept == c.evict {
			t.Errorf("%s: kept=%v (err %v), want evicted=%v", c.name, kept, err, c.evict)
		}
	}
}

// localVault creates a vault (fast key derivation) and opens it, its index
// and its chunk store, without a network; they are closed when the test
// ends.
func localVault(t testing.TB) (*vault.Vault, *meta.Index, *chunkstore.Store) {
	t.Helper()
	home := filepath.Join(t.TempDir(), "home")
	if err := vault.Create(home, testPassword, vault.CreateOptions{KDF: vault.KDFParams{Time: 1, MemoryK: 64, Threads: 1}}); err != nil {
		t.Fatal(err)
	}
	v, err := vault.Open(home, testPassword, vault.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	idx, err := meta.Open(v.IndexDir(), v.Keys, meta.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { idx.Close() })
	store, err := chunkstore.Open(v.StoreDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return v, idx, store
}
