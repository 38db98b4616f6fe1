package chunkstore

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/meta"
)

func TestPutGetListDelete(t *testing.T) {
	for _, format := range []int{FormatFiles, FormatPacks} {
		t.Run(fmt.Sprintf("format%d", format), func(t *testing.T) { testPutGetListDelete(t, format) })
	}
}

func testPutGetListDelete(t *testing.T, format int) {
	dir := filepath.Join(t.TempDir(), "store")
	s, err := OpenFormat(dir, format)
	if err != nil {
		t.Fatal(err)
	}
	if s.Format() != format {
		t.Fatalf("new store has format %d, want %d", s.Format(), format)
	}
	ids := map[meta.ChunkID][]byte{}
	for i := 0; i < 300; i++ { // more than syncfsThreshold
		id := NewID()
		data := bytes.Repeat([]byte{byte(i)}, i+1)
		if err := s.Put(id, data); err != nil {
			t.Fatal(err)
		}
		ids[id] = data
	}
	for id := range ids {
		if err := s.Put(id, []byte("again")); err == nil {
			t.Fatal("Put over an existing chunk succeeded")
		}
		break
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	for id, want := range ids {
		got, err := s.Get(id, []byte("prefix"))
		if err != nil || !bytes.Equal(got, append([]byte("prefix"), want...)) {
			t.Fatalf("get %s: %v", id, err)
		}
	}
	os.WriteFile(filepath.Join(dir, "stray"), nil, 0o600)
	wantBad := 1
	if format == FormatFiles {
		os.WriteFile(filepath.Join(dir, "ab", "not-a-chunk"), nil, 0o600)
		wantBad = 2
	}
	seen, bad := 0, 0
	err = s.List(func(id meta.ChunkID) error {
		if _, ok := ids[id]; !ok {
			t.Errorf("listed unknown chunk %s", id)
		}
		seen++
		return nil
	}, func(string) { bad++ })
	if err != nil || seen != len(ids) || bad != wantBad {
		t.Fatalf("list: %d chunks, %d bad, %v", seen, bad, err)
	}
	for id := range ids {
		if err := s.Delete(id); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Get(id, nil); !errors.Is(err, ErrNotFound) {
			t.Fatalf("get after delete: %v", err)
		}
		if err := s.Delete(id); err != nil {
			t.Fatalf("deleting a missing chunk: %v", err)
		}
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
}

func TestNamesRevealNothing(t *testing.T) {
	s, err := OpenFormat(filepath.Join(t.TempDir(), "store"), FormatFiles)
	if err != nil {
		t.Fatal(err)
	}
	a, b := NewID(), NewID()
	if a == b {
		t.Fatal("two random ids are equal")
	}
	p := s.Path(a)
	if filepath.Base(filepath.Dir(p)) != a.String()[:2] || filepath.Base(p) != a.String() {
		t.Fatalf("path %s does not follow the layout", p)
	}
}

// TestReadsRefreshAge: a read sets the time of a chunk older than
// TouchAfter to now, so the cache keeps what is read; a younger chunk, and
// any chunk read through a read-only store, keep their times.
func TestReadsRefreshAge(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	s, err := OpenFormat(dir, FormatFiles)
	if err != nil {
		t.Fatal(err)
	}
	old, young, checked := NewID(), NewID(), NewID()
	past := time.Now().Add(-2 * TouchAfter)
	recent := time.Now().Add(-TouchAfter / 2)
	for id, at := range map[meta.ChunkID]time.Time{old: past, young: recent, checked: past} {
		if err := s.Put(id, []byte("data")); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(s.Path(id), at, at); err != nil {
			t.Fatal(err)
		}
	}
	ro, err := OpenExisting(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		s  *Store
		id meta.ChunkID
	}{{s, old}, {s, young}, {ro, checked}} {
		if _, err := c.s.Get(c.id, nil); err != nil {
			t.Fatal(err)
		}
	}
	mtime := func(id meta.ChunkID) time.Time {
		fi, err := os.Stat(s.Path(id))
		if err != nil {
			t.Fatal(err)
		}
		return fi.ModTime()
	}
	if m := mtime(old); time.Since(m) > time.Minute {
		t.Errorf("a chunk read after %v kept its time %v", 2*TouchAfter, m)
	}
	if m := mtime(young); !m.Equal(recent) {
		t.Errorf("a chunk read after %v got time %v, want %v unchanged", TouchAfter/2, m, recent)
	}
	if m := mtime(checked); !m.Equal(past) {
		t.Errorf("a read through a read-only store changed the time to %v", m)
	}
}

// TestGetKeepsDstOnError: a Get that fails returns dst as it was, so a
// caller appending several chunks to one buffer (the uploader packing a
// segment) keeps the ones it already has when one is gone.
func TestGetKeepsDstOnError(t *testing.T) {
	s, err := OpenFormat(filepath.Join(t.TempDir(), "store"), FormatFiles)
	if err != nil {
		t.Fatal(err)
	}
	have := NewID()
	if err := s.Put(have, []byte("first chunk")); err != nil {
		t.Fatal(err)
	}
	buf, err := s.Get(have, make([]byte, 0, 64))
	if err != nil {
		t.Fatal(err)
	}
	// Missing, with and without a fetcher that fails.
	for _, f := range []Fetcher{nil, func(meta.ChunkID) ([]byte, error) { return nil, errors.New("network down") }} {
		s.SetFetcher(f)
		got, err := s.Get(NewID(), buf)
		if err == nil {
			t.Fatal("Get of a missing chunk succeeded")
		}
		if f == nil && !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get of a missing chunk: %v, want ErrNotFound", err)
		}
		if string(got) != "first chunk" {
			t.Fatalf("Get of a missing chunk returned %q, want dst (%q) back", got, buf)
		}
	}
	s.SetFetcher(nil)
	// Unreadable: a directory where the chunk file should be.
	bad := NewID()
	if err := os.Mkdir(s.Path(bad), 0o700); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(bad, buf)
	if err == nil {
		t.Fatal("Get of a directory succeeded")
	}
	if string(got) != "first chunk" {
		t.Fatalf("failed Get returned %q, want dst back", got)
	}
}

// TestConcurrentFetchSeesWholeChunk reads one evicted chunk from several
// goroutines at once, as the kernel's readahead does: the first fetches
// and stores it, and none may read the file while it is being written (a
// partial chunk fails authentication and the read returns EIO). Found by
// the stress suite (internal/stress, seed 8).
func TestConcurrentFetchSeesWholeChunk(t *testing.T) {
	for _, format := range []int{FormatFiles, FormatPacks} {
		t.Run(fmt.Sprintf("format%d", format), func(t *testing.T) { testConcurrentFetch(t, format) })
	}
}

func testConcurrentFetch(t *testing.T, format int) {
	s, err := OpenFormat(filepath.Join(t.TempDir(), "store"), format)
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte{7}, 4<<20)
	s.SetFetcher(func(meta.ChunkID) ([]byte, error) { return data, nil })
	var bad atomic.Int64
	for i := 0; i < 50; i++ {
		id := NewID()
		var wg sync.WaitGroup
		for g := 0; g < 4; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if b, err := s.Get(id, nil); err != nil || !bytes.Equal(b, data) {
					bad.Add(1)
				}
			}()
		}
		wg.Wait()
	}
	if n := bad.Load(); n > 0 {
		t.Fatalf("%d of 200 concurrent reads of a chunk being fetched returned an error or a partial chunk", n)
	}
}

// TestFetcherIntoOwnsNothingAfter: a FetcherInto appends the chunk to the
// reader's buffer from memory it reuses as soon as it returns (the engine's
// decoded segments). The store keeps, verifies and returns what was
// appended, not the fetcher's memory, in both formats: the fetcher's buffer
// overwritten after each call changes nothing. A fetch that fails
// verification keeps nothing and gives dst back at its length.
func TestFetcherIntoOwnsNothingAfter(t *testing.T) {
	for _, format := range []int{FormatFiles, FormatPacks} {
		t.Run(fmt.Sprintf("format%d", format), func(t *testing.T) {
			s, err := OpenFormat(filepath.Join(t.TempDir(), "store"), format)
			if err != nil {
				t.Fatal(err)
			}
			chunk := bytes.Repeat([]byte("sealed chunk "), 1000)
			seg := make([]byte, len(chunk)) // the fetcher's reused memory
			calls := 0
			s.SetFetcherInto(func(_ meta.ChunkID, dst []byte) ([]byte, error) {
				calls++
				copy(seg, chunk)
				out := append(dst, seg...)
				for i := range seg {
					seg[i] = 0xee // the next download's bytes
				}
				return out, nil
			})
			prefix := []byte("before|")
			id := NewID()
			var seen []byte
			verify := func(sealed []byte) error {
				seen = bytes.Clone(sealed)
				return nil
			}
			got, err := s.GetVerify(id, bytes.Clone(prefix), verify)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, append(bytes.Clone(prefix), chunk...)) || !bytes.Equal(seen, chunk) {
				t.Fatalf("fetched %d bytes (verify saw %d): not dst followed by the chunk", len(got), len(seen))
			}
			s.SetFetcherInto(nil)
			if stored, err := s.Get(id, nil); err != nil || !bytes.Equal(stored, chunk) {
				t.Fatalf("the store kept %d bytes (%v), not the chunk of %d", len(stored), err, len(chunk))
			}
			// A fetch that fails verification: nothing kept, dst back.
			s.SetFetcherInto(func(_ meta.ChunkID, dst []byte) ([]byte, error) {
				calls++
				return append(dst, "a lying node's bytes"...), nil
			})
			bad := NewID()
			dst := make([]byte, len(prefix), 64)
			copy(dst, prefix)
			got, err = s.GetVerify(bad, dst, func([]byte) error { return errors.New("does not open") })
			if !errors.Is(err, ErrBadFetch) || !bytes.Equal(got, prefix) {
				t.Fatalf("a fetch failing verification: %q, %v; want dst back and ErrBadFetch", got, err)
			}
			s.SetFetcherInto(nil)
			if _, ok := s.Has(bad); ok {
				t.Fatal("a fetch that failed verification was kept")
			}
			if calls != 2 {
				t.Fatalf("%d fetches, want 2", calls)
			}
		})
	}
}
