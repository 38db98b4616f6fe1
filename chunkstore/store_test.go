package chunkstore

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/fincrypt/fincrypt/meta"
)

func TestPutGetListDelete(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
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
	os.WriteFile(filepath.Join(dir, "ab", "not-a-chunk"), nil, 0o600)
	seen, bad := 0, 0
	err = s.List(func(id meta.ChunkID) error {
		if _, ok := ids[id]; !ok {
			t.Errorf("listed unknown chunk %s", id)
		}
		seen++
		return nil
	}, func(string) { bad++ })
	if err != nil || seen != len(ids) || bad != 2 {
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
	s, err := Open(filepath.Join(t.TempDir(), "store"))
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
