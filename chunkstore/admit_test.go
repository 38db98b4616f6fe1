package chunkstore

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/fincrypt/fincrypt/meta"
)

// TestAdmission: a chunk fetched for a reader at the start of a sequential
// run (or not streaming) is kept at once; past the head, a streamed chunk
// is passed on (read, not kept) until its second fetch within the window,
// which keeps it; a chunk pushed out of the window by Window bytes of
// other streamed chunks is passed on again; a damaged local copy is
// replaced whatever the reader; and without an Admission every fetched
// chunk is kept.
func TestAdmission(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const size = 1000
	net := map[meta.ChunkID][]byte{}
	fetches := 0
	s.SetFetcher(func(id meta.ChunkID) ([]byte, error) {
		b, ok := net[id]
		if !ok {
			return nil, ErrNotFound
		}
		fetches++
		return bytes.Clone(b), nil
	})
	chunk := func() meta.ChunkID {
		id := NewID()
		b := bytes.Repeat([]byte{id[0]}, size)
		net[id] = b
		return id
	}
	get := func(id meta.ChunkID, runPos uint64) {
		t.Helper()
		got, err := s.GetVerifyAt(id, nil, nil, runPos)
		if err != nil || !bytes.Equal(got, net[id]) {
			t.Fatalf("chunk %s at %d: %v (%d bytes)", id, runPos, err, len(got))
		}
	}
	has := func(id meta.ChunkID) bool { _, ok := s.Has(id); return ok }

	// No rule: kept, streaming or not.
	a := chunk()
	get(a, 1<<40)
	if !has(a) {
		t.Fatal("without an Admission a streamed chunk was not kept")
	}

	const head = 4 * size
	s.SetAdmission(Admission{Head: head, Window: 3 * size})
	b, c := chunk(), chunk()
	get(b, 0)
	get(c, head-1)
	if !has(b) || !has(c) {
		t.Fatalf("chunks read at the start of a run not kept: %v %v", has(b), has(c))
	}
	d := chunk()
	get(d, head)
	if has(d) {
		t.Fatal("a streamed chunk was kept on its first fetch")
	}
	n := fetches
	get(d, head) // second fetch within the window
	if fetches != n+1 || !has(d) {
		t.Fatalf("second fetch of a streamed chunk: %d fetches, kept %v; want one fetch and kept", fetches-n, has(d))
	}
	n = fetches
	get(d, head)
	if fetches != n {
		t.Fatal("a kept chunk was fetched again")
	}

	// The window holds 3 chunks' bytes: e then three others push e out.
	e := chunk()
	get(e, head)
	for range 3 {
		get(chunk(), head)
	}
	get(e, head)
	if has(e) {
		t.Fatal("a chunk streamed again after Window bytes of others was kept")
	}
	// But it is remembered again: a third fetch, right after, keeps it.
	get(e, head)
	if !has(e) {
		t.Fatal("a chunk streamed twice in a row was not kept")
	}
	// Two others leave it within the window (3 chunks' bytes, exactly).
	h := chunk()
	get(h, head)
	get(chunk(), head)
	get(chunk(), head)
	get(h, head)
	if !has(h) {
		t.Fatal("a chunk streamed again within Window bytes of others was not kept")
	}
	if passed, kept := s.StreamCounts(); passed != 9 || kept != 3 {
		t.Fatalf("stream counts: %d passed, %d kept; want 9 and 3", passed, kept)
	}

	// With no head (a cache of a few bytes), a reader not streaming still
	// keeps what it reads.
	s.SetAdmission(Admission{Window: 1})
	g := chunk()
	get(g, 0)
	if !has(g) {
		t.Fatal("with no head, a chunk read by a reader not streaming was not kept")
	}

	// A damaged local copy is replaced by the fetched one, even for a
	// streaming reader.
	f := chunk()
	copy(net[f], f[:]) // a payload no other chunk has
	if err := s.Put(f, net[f]); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	damage(t, filepath.Join(s.Dir(), packsDir), net[f])
	n = fetches
	get(f, 1<<40)
	if fetches != n+1 {
		t.Fatalf("the damaged chunk was read with %d fetches, want 1", fetches-n)
	}
	s.SetFetcher(nil)
	if got, err := s.Get(f, nil); err != nil || !bytes.Equal(got, net[f]) {
		t.Fatalf("the damaged copy was not replaced for a streaming reader: %v", err)
	}
}

// damage flips a byte of payload where it lies in one of the packs in dir.
func damage(t *testing.T, dir string, payload []byte) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if i := bytes.Index(b, payload); i >= 0 {
			b[i+len(payload)/2] ^= 0xff
			if err := os.WriteFile(p, b, 0o600); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatal("payload not found in any pack")
}
