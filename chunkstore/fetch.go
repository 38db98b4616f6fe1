package chunkstore

import (
	"fmt"
	"os"

	"github.com/fincrypt/fincrypt/meta"
)

// Fetcher returns the sealed bytes of a chunk that is not in the local store
// (evicted once it was safe on the network). It returns an error wrapping
// ErrNotFound when the chunk is stored nowhere.
type Fetcher func(id meta.ChunkID) ([]byte, error)

// SetFetcher makes the store a cache: Get of a missing chunk asks f and
// keeps the result. nil turns fetching off.
func (s *Store) SetFetcher(f Fetcher) {
	s.mu.Lock()
	s.fetcher = f
	s.mu.Unlock()
}

// fetch asks the fetcher for a missing chunk and caches it.
func (s *Store) fetch(id meta.ChunkID, dst []byte) ([]byte, error) {
	s.mu.Lock()
	f := s.fetcher
	s.mu.Unlock()
	if f == nil {
		return dst, fmt.Errorf("chunk %s: %w", id, ErrNotFound)
	}
	sealed, err := f(id)
	if err != nil {
		return dst, fmt.Errorf("chunk %s: %w", id, err)
	}
	// The read succeeds even if the cache cannot keep the chunk (a full
	// disk, or a concurrent fetch stored it first).
	_ = s.Put(id, sealed)
	return append(dst, sealed...), nil
}

// Has reports whether chunk id is in the local store, and its size.
func (s *Store) Has(id meta.ChunkID) (int64, bool) {
	st, err := os.Stat(s.Path(id))
	if err != nil {
		return 0, false
	}
	return st.Size(), true
}
