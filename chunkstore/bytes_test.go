package chunkstore

import (
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/fincrypt/fincrypt/meta"
)

// TestBytesKept: the store's byte count (Bytes, what a cache trim reads
// instead of listing every chunk) equals the sum of its chunks' sizes by a
// listing after puts, deletes, compaction of small packs, and a reopen
// from the packs' indexes and logs.
func TestBytesKept(t *testing.T) {
	smallPacks(t, 16<<10)
	rng := rand.New(rand.NewPCG(11, 12))
	dir := filepath.Join(t.TempDir(), "store")
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	check := func(s *Store, when string) {
		t.Helper()
		var want int64
		if err := s.List(func(id meta.ChunkID) error {
			n, err := s.Size(id)
			want += n
			return err
		}, nil); err != nil {
			t.Fatal(err)
		}
		got, ok := s.Bytes()
		if !ok || got != want {
			t.Fatalf("%s: Bytes %d (known %v), the listing sums %d", when, got, ok, want)
		}
	}
	check(s, "empty")
	m := fillStore(t, s, rng, 400)
	check(s, "filled")
	for id := range m {
		if rng.IntN(4) != 0 {
			if err := s.Delete(id); err != nil {
				t.Fatal(err)
			}
			delete(m, id)
		}
	}
	check(s, "after deletes")
	if err := s.Sync(); err != nil { // compacts the emptied packs
		t.Fatal(err)
	}
	if _, err := s.Compact(); err != nil {
		t.Fatal(err)
	}
	check(s, "after compaction")
	fillStore(t, s, rng, 50)
	check(s, "refilled")
	s.Close()
	s2, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	check(s2, "reopened")
}
