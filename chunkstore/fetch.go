package chunkstore

import (
	"errors"
	"fmt"
	"os"

	"github.com/fincrypt/fincrypt/meta"
)

// Fetcher returns the sealed bytes of a chunk that is not in the local store
// (evicted once it was safe on the network). It returns an error wrapping
// ErrNotFound when the chunk is stored nowhere.
type Fetcher func(id meta.ChunkID) ([]byte, error)

// FetcherInto is a Fetcher that appends the sealed bytes to dst and
// returns the extended slice (dst as it was on an error), so that bytes the
// fetcher keeps only for a while (a decoded segment it reuses) are copied
// once, into the reader's buffer, and never referenced after it returns.
type FetcherInto func(id meta.ChunkID, dst []byte) ([]byte, error)

// SetFetcher makes the store a cache: Get of a missing chunk asks f and
// keeps the result. nil turns fetching off.
func (s *Store) SetFetcher(f Fetcher) {
	var into FetcherInto
	if f != nil {
		into = func(id meta.ChunkID, dst []byte) ([]byte, error) {
			sealed, err := f(id)
			if err != nil {
				return dst, err
			}
			return append(dst, sealed...), nil
		}
	}
	s.SetFetcherInto(into)
}

// FetcherKeep is a FetcherInto told whether the store will keep the chunk
// (its Admission), so that it knows which chunks stay at hand.
type FetcherKeep func(id meta.ChunkID, dst []byte, keep bool) ([]byte, error)

// SetFetcherInto is SetFetcher for a fetcher that appends to the reader's
// buffer itself.
func (s *Store) SetFetcherInto(f FetcherInto) {
	var k FetcherKeep
	if f != nil {
		k = func(id meta.ChunkID, dst []byte, _ bool) ([]byte, error) { return f(id, dst) }
	}
	s.SetFetcherKeep(k)
}

// SetFetcherKeep is SetFetcherInto for a fetcher told whether the chunk
// is kept.
func (s *Store) SetFetcherKeep(f FetcherKeep) {
	s.mu.Lock()
	s.fetcher = f
	s.mu.Unlock()
}

// ErrBadFetch means the bytes fetched for a chunk failed verification:
// they were not kept.
var ErrBadFetch = errors.New("the fetched chunk failed verification")

func (s *Store) hasFetcher() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fetcher != nil
}

// fetch asks the fetcher for a missing (or locally damaged: local is that
// error) chunk, verifies it, and only then caches it: a damaged copy is
// always replaced, a missing chunk kept if the Admission says so (runPos
// is how far into a sequential run the reader is).
func (s *Store) fetch(id meta.ChunkID, dst []byte, verify func([]byte) error, local error, runPos uint64) ([]byte, error) {
	s.mu.Lock()
	f := s.fetcher
	s.mu.Unlock()
	if f == nil {
		if local != nil {
			return dst, local
		}
		return dst, fmt.Errorf("chunk %s: %w", id, ErrNotFound)
	}
	keep := local != nil || s.admit.admits(id, runPos)
	out, err := f(id, dst, keep)
	if err != nil {
		return dst, fmt.Errorf("chunk %s: %w", id, err)
	}
	sealed := out[len(dst):]
	if verify != nil {
		if err := verify(sealed); err != nil {
			return dst, fmt.Errorf("chunk %s: %w: %w", id, ErrBadFetch, err)
		}
	}
	if !keep {
		s.admit.pass(id, len(sealed))
		return out, nil
	}
	// The read succeeds even if the cache cannot keep the chunk (a full
	// disk, or a concurrent fetch stored it first).
	if s.packs != nil {
		_ = s.packs.put(id, sealed, local != nil)
	} else {
		_ = s.Put(id, sealed)
	}
	return out, nil
}

// Has reports whether chunk id is in the local store, and its size.
func (s *Store) Has(id meta.ChunkID) (int64, bool) {
	if s.packs != nil {
		if l := s.packs.lookup(id); l != nil {
			return int64(l.n), true
		}
		if !s.loose {
			return 0, false
		}
	}
	st, err := os.Stat(s.Path(id))
	if err != nil {
		return 0, false
	}
	return st.Size(), true
}
