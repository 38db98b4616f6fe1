package meta

import (
	"bytes"
	"errors"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cockroachdb/pebble/v2"

	"github.com/fincrypt/fincrypt/vault"
)

func testKeys(t *testing.T, b byte) *vault.Keys {
	t.Helper()
	k, err := vault.DeriveKeys(bytes.Repeat([]byte{b}, vault.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func openTest(t *testing.T, dir string, keys *vault.Keys) *Index {
	t.Helper()
	x, err := Open(dir, keys, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return x
}

func TestRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "index")
	keys := testKeys(t, 1)
	x := openTest(t, dir, keys)
	in := Inode{Ino: 7, Mode: 0o120777, Uid: 1, Gid: 2, Nlink: 3, Rdev: 4, Size: 5 << 30, Atime: -1, Mtime: 2, Ctime: 3, Target: []byte("target")}
	ref := ChunkRef{ID: ChunkID{1, 2, 3}, Version: 99, Len: 4096}
	b := x.NewBatch()
	b.PutInode(&in)
	b.PutDirent(&Dirent{Parent: 1, Name: "a\xff/b", Ino: 7, Type: 0o120000})
	b.PutDirent(&Dirent{Parent: 1, Name: "other", Ino: 8, Type: 0o100000})
	b.PutChunk(7, 3, &ref)
	b.PutChunk(7, 10, &ref)
	b.PutXattr(7, "user.k", []byte("v"))
	b.AddOrphan(7)
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	x.Close()
	x = openTest(t, dir, keys)
	defer x.Close()
	got, err := x.GetInode(7)
	if err != nil || !slices.Equal(got.Target, in.Target) || got.Size != in.Size || got.Atime != -1 || got.Mode != in.Mode {
		t.Fatalf("inode: %+v, %v", got, err)
	}
	d, err := x.Lookup(1, "a\xff/b")
	if err != nil || d.Ino != 7 || d.Type != 0o120000 {
		t.Fatalf("lookup: %+v, %v", d, err)
	}
	if _, err := x.Lookup(1, "missing"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("lookup missing: %v", err)
	}
	var names []string
	x.ListDir(1, func(d Dirent) error { names = append(names, d.Name); return nil })
	slices.Sort(names)
	if !slices.Equal(names, []string{"a\xff/b", "other"}) {
		t.Fatalf("listdir: %q", names)
	}
	var idxs []uint64
	x.Chunks(7, 4, func(idx uint64, r ChunkRef) error {
		if r != ref {
			t.Errorf("chunk %d: %+v", idx, r)
		}
		idxs = append(idxs, idx)
		return nil
	})
	if !slices.Equal(idxs, []uint64{10}) {
		t.Fatalf("chunks from 4: %v", idxs)
	}
	if _, ok, err := x.GetChunk(7, 4); ok || err != nil {
		t.Fatalf("hole: %v %v", ok, err)
	}
	if v, err := x.GetXattr(7, "user.k"); err != nil || string(v) != "v" {
		t.Fatalf("xattr: %q %v", v, err)
	}
	if o, err := x.Orphans(); err != nil || !slices.Equal(o, []uint64{7}) {
		t.Fatalf("orphans: %v %v", o, err)
	}
}

func TestCountersNeverRepeat(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "index")
	keys := testKeys(t, 1)
	seen := map[uint64]bool{}
	for round := 0; round < 3; round++ {
		x := openTest(t, dir, keys)
		for i := 0; i < 10; i++ {
			v, err := x.NextVersion()
			if err != nil {
				t.Fatal(err)
			}
			if seen[v] || v == 0 {
				t.Fatalf("version %d handed out twice (or zero)", v)
			}
			seen[v] = true
		}
		ino, err := x.NextIno()
		if err != nil || ino <= RootIno {
			t.Fatalf("ino %d, %v", ino, err)
		}
		x.Close() // reopening skips the rest of the reserved range
	}
}

// Generation moves with every commit that changes the index, and with
// nothing else.
func TestGeneration(t *testing.T) {
	x := openTest(t, filepath.Join(t.TempDir(), "index"), testKeys(t, 1))
	defer x.Close()
	g0 := x.Generation()
	if _, err := x.NextIno(); err != nil { // a counter reservation, not a change
		t.Fatal(err)
	}
	x.NewBatch().Commit(true) // empty
	x.GetInode(7)
	if x.Generation() != g0 {
		t.Fatalf("generation %d after reads and an empty batch, want %d", x.Generation(), g0)
	}
	b := x.NewBatch()
	b.PutInode(&Inode{Ino: 7, Nlink: 1})
	if err := b.Commit(false); err != nil {
		t.Fatal(err)
	}
	if x.Generation() != g0+1 {
		t.Fatalf("generation %d after a commit, want %d", x.Generation(), g0+1)
	}
}

// Values are sealed under their key: the wrong key, a moved value or a
// flipped bit all read as ErrCorrupt, never as data.
func TestSealedValues(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "index")
	keys := testKeys(t, 1)
	x := openTest(t, dir, keys)
	b := x.NewBatch()
	b.PutInode(&Inode{Ino: 2, Mode: 0o100644, Nlink: 1})
	b.PutInode(&Inode{Ino: 3, Mode: 0o100600, Nlink: 1})
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	// Move inode 3's sealed value under inode 2's key.
	v, c, err := x.db.Get(key8(pInode, 3))
	if err != nil {
		t.Fatal(err)
	}
	moved := bytes.Clone(v)
	c.Close()
	x.db.Set(key8(pInode, 2), moved, pebble.Sync)
	x.icache.reset(0) // damage on the disk: not seen by the cache of what this process wrote
	if _, err := x.GetInode(2); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("moved value: %v", err)
	}
	moved[len(moved)-1] ^= 1
	x.db.Set(key8(pInode, 3), moved, pebble.Sync)
	x.icache.reset(0)
	if _, err := x.GetInode(3); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("flipped bit: %v", err)
	}
	var bad int
	x.Walk(Visitor{Bad: func([]byte, error) { bad++ }})
	if bad != 2 {
		t.Fatalf("walk found %d bad records, want 2", bad)
	}
	x.Close()
	// Another vault's keys cannot even read the format record.
	if _, err := Open(dir, testKeys(t, 2), Options{}); err == nil {
		t.Fatal("opened an index with the wrong keys")
	}
}

func TestPrefixEnd(t *testing.T) {
	for _, tc := range []struct{ in, want []byte }{
		{[]byte{1}, []byte{2}}, {[]byte{1, 0xff}, []byte{2}}, {[]byte{0xff, 0xff}, nil}, {[]byte{'D', 0, 5}, []byte{'D', 0, 6}},
	} {
		if got := prefixEnd(tc.in); !bytes.Equal(got, tc.want) {
			t.Errorf("prefixEnd(%x) = %x, want %x", tc.in, got, tc.want)
		}
	}
}

func FuzzDecode(f *testing.F) {
	in := Inode{Ino: 1, Mode: 0o40755, Target: []byte("x")}
	f.Add(in.encode())
	f.Add((&Dirent{Name: "n", Ino: 2}).encode())
	f.Add(encodeXattr("user.a", []byte("b")))
	f.Fuzz(func(t *testing.T, b []byte) {
		// Decoders must reject or accept without panicking.
		decodeInode(1, b)
		decodeDirent(1, b)
		decodeChunkRef(b)
		decodeXattr(b)
	})
}
