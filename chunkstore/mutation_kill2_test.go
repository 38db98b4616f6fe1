package chunkstore

// Tests written against the mutants of pack.go from line 329 (put, get,
// remove, sync, flush, compaction), store.go from line 213, upgrade.go and
// sysfs.go that outlived the chunk store's own tests (issue 21, sixth
// session; docs/TESTING.md lists each with its mutant).

import (
	"encoding/binary"
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/fincrypt/fincrypt/meta"
)

// TestScanResyncsToTheLastRecord: in a pack read by scanning, the record
// after a damaged header is found whatever its kind and wherever it ends:
// a deletion right after the damage still deletes (the chunk it names does
// not come back), and an empty chunk whose record ends exactly at the end
// of the pack, right after the damage, still reads. Mutants: pack.go:339
// (`rest[i] != kindDelete` → `==`: the resync skips deletions), :338
// (`i+recHeaderSize <= len(rest)` → `<`) and :343 (`<= len(rest)` → `<`):
// the last record of the pack, after the damage, lost.
func TestScanResyncsToTheLastRecord(t *testing.T) {
	for _, damage := range []string{"before the deletion", "before the last record"} {
		rng := rand.New(rand.NewPCG(21, 6))
		dir := filepath.Join(t.TempDir(), "store")
		s, err := Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		put := func(b []byte) meta.ChunkID {
			id := NewID()
			if err := s.Put(id, b); err != nil {
				t.Fatal(err)
			}
			return id
		}
		a, b := put(randBytes(rng, 300)), put(randBytes(rng, 400))
		x := put(randBytes(rng, 500))
		if err := s.Delete(a); err != nil {
			t.Fatal(err)
		}
		y := put(randBytes(rng, 600))
		e := put(nil)
		want := map[meta.ChunkID]bool{b: true, x: true, y: true, e: true}
		hit := x
		if damage == "before the last record" {
			hit = y
		}
		hitOff := s.packs.lookup(hit).off
		delete(want, hit)
		if err := s.Sync(); err != nil {
			t.Fatal(err)
		}
		s.Close()
		packs := packFiles(t, dir)
		if len(packs) != 1 {
			t.Fatalf("%d packs, want 1", len(packs))
		}
		stripIndex(t, packs[0])
		f, err := os.OpenFile(packs[0], os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteAt([]byte{0xff}, hitOff+9) // in the chunk id: the header's checksum fails
		f.Close()
		s2, err := Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		if s2.packs.scanned != 1 {
			t.Fatalf("%s: %d packs scanned, want 1", damage, s2.packs.scanned)
		}
		for id := range want {
			if _, err := s2.Get(id, nil); err != nil {
				t.Errorf("damage %s: chunk %s (the empty last one: %v) lost: %v", damage, id, id == e, err)
			}
		}
		if _, _, err := s2.Info(a); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("damage %s: chunk %s came back after its deletion (the deletion record follows the damaged header): %v", damage, a, err)
		}
		s2.Close()
	}
}

// TestScanReadErrorFailsTheOpen: a read error while a scan looks for the
// next valid header after a damaged one fails the open (the chunks after
// the damage are not dropped from the store as if they were not there).
// Mutant: pack.go:332 (`err != io.EOF` → `==`: the error ignored, the rest
// of the pack read as zeroes, every later chunk lost).
func TestScanReadErrorFailsTheOpen(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 7))
	mem := newMem(t)
	const dir = "/vault/store"
	s, err := OpenFS(dir, mem)
	if err != nil {
		t.Fatal(err)
	}
	m := fillStore(t, s, rng, 6)
	hitOff := int64(1 << 40)
	for id := range m {
		if l := s.packs.lookup(id); l.off < hitOff {
			hitOff = l.off
		}
	}
	s.Close()
	packs, err := mem.List(filepath.Join(dir, packsDir))
	if err != nil || len(packs) != 1 {
		t.Fatalf("packs %v, %v; want one", packs, err)
	}
	path := filepath.Join(dir, packsDir, packs[0])
	f, err := mem.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := f.Stat()
	b := make([]byte, st.Size())
	if _, err := f.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	b = b[:indexAtOf(t, b)] // no index: the pack is scanned
	b[hitOff+9] ^= 0xff     // the first record's header fails its checksum
	f, err = mem.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	f.Close()
	// The scan reads the damaged header, then the rest of the pack from
	// there: that second read fails.
	reads := 0
	errRead := errors.New("injected read error")
	inj := errorfs.InjectorFunc(func(op errorfs.Op) error {
		if op.Kind == errorfs.OpFileReadAt && op.Path == path && op.Offset == hitOff {
			reads++
			if reads == 2 {
				return errRead
			}
		}
		return nil
	})
	s2, err := OpenFS(dir, errorfs.Wrap(mem, inj))
	if err == nil {
		n := 0
		for id := range m {
			if s2.packs.lookup(id) != nil {
				n++
			}
		}
		s2.Close()
		t.Fatalf("the store opened after a read error in the scan (%d reads at the damage), with %d of the %d chunks after the damaged one", reads, n, len(m)-1)
	}
	if !errors.Is(err, errRead) {
		t.Fatalf("open: %v, want the read error", err)
	}
}

// indexAtOf is indexAt of a pack's bytes.
func indexAtOf(t *testing.T, b []byte) int64 {
	t.Helper()
	tr := b[len(b)-idxTrailerSize:]
	if string(tr[:8]) != idxMagic {
		t.Fatal("the pack has no index")
	}
	return int64(binary.LittleEndian.Uint64(tr[8:]))
}
