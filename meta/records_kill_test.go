package meta

import (
	"errors"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cockroachdb/pebble/v2"
)

// TestRecordReadsRefuseDamage: the file system's reads give back what was
// written (inodes by batch, skipping absent ones; a directory's entries and
// emptiness; chunks from an index on; extended attributes; orphans), and
// refuse with ErrCorrupt a record that does not decrypt or decode, or whose
// name does not match its key, instead of answering with it.
func TestRecordReadsRefuseDamage(t *testing.T) {
	x := openTest(t, filepath.Join(t.TempDir(), "index"), testKeys(t, 3))
	defer x.Close()
	b := x.NewBatch()
	for _, ino := range []uint64{10, 12, 13} {
		b.PutInode(&Inode{Ino: ino, Mode: 0o100644, Nlink: 1, Size: ino * 100, Target: []byte("t")})
	}
	b.PutDirent(&Dirent{Parent: 2, Name: "a", Ino: 10, Type: 0o100000})
	b.PutDirent(&Dirent{Parent: 2, Name: "b", Ino: 12, Type: 0o100000})
	for idx := range uint64(4) {
		b.PutChunk(10, idx, &ChunkRef{ID: ChunkID{0x50, byte(idx)}, Version: idx, Len: 1})
	}
	b.PutChunk(11, 0, &ChunkRef{ID: ChunkID{0x51}, Len: 1})
	b.PutXattr(10, "user.a", []byte("1"))
	b.PutXattr(10, "user.b", nil)
	b.AddOrphan(13)
	if err := b.Commit(false); err != nil {
		t.Fatal(err)
	}
	var got []uint64
	if err := x.GetInodes([]uint64{9, 10, 11, 12, 13}, func(n Inode) {
		if n.Size != n.Ino*100 || string(n.Target) != "t" {
			t.Errorf("inode %+v", n)
		}
		got = append(got, n.Ino)
	}); err != nil || !slices.Equal(got, []uint64{10, 12, 13}) {
		t.Fatalf("GetInodes: %v, %v", got, err)
	}
	if err := x.GetInodes(nil, func(Inode) { t.Error("called for no inode") }); err != nil {
		t.Fatal(err)
	}
	var names []string
	if err := x.ListDir(2, func(d Dirent) error { names = append(names, d.Name); return nil }); err != nil || len(names) != 2 {
		t.Fatalf("ListDir: %v, %v", names, err)
	}
	if e, err := x.DirEmpty(2); err != nil || e {
		t.Fatalf("a directory of two entries empty: %v, %v", e, err)
	}
	if e, err := x.DirEmpty(3); err != nil || !e {
		t.Fatalf("a directory of no entries not empty: %v, %v", e, err)
	}
	var idxs []uint64
	if err := x.Chunks(10, 2, func(idx uint64, r ChunkRef) error {
		if r.ID != (ChunkID{0x50, byte(idx)}) || r.Version != idx {
			t.Errorf("chunk %d: %+v", idx, r)
		}
		idxs = append(idxs, idx)
		return nil
	}); err != nil || !slices.Equal(idxs, []uint64{2, 3}) {
		t.Fatalf("Chunks from 2: %v, %v", idxs, err)
	}
	if _, ok, err := x.GetChunk(10, 9); ok || err != nil {
		t.Fatalf("a hole: %v, %v", ok, err)
	}
	xa := map[string]string{}
	if err := x.ListXattr(10, func(n string, v []byte) error { xa[n] = string(v); return nil }); err != nil ||
		len(xa) != 2 || xa["user.a"] != "1" || xa["user.b"] != "" {
		t.Fatalf("ListXattr: %v, %v", xa, err)
	}
	if o, err := x.Orphans(); err != nil || !slices.Equal(o, []uint64{13}) {
		t.Fatalf("Orphans: %v, %v", o, err)
	}

	seal := func(key, plain []byte) {
		t.Helper()
		if err := x.db.Set(key, x.keys.Meta.Seal(nil, plain, key), pebble.NoSync); err != nil {
			t.Fatal(err)
		}
	}
	corrupt := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", what, err)
		}
	}
	// An inode that does not decode, one that does not open (damage on
	// the disk, which the cache of what this process wrote does not see).
	seal(key8(pInode, 12), []byte{inodeRecV1, 1})
	if err := x.db.Set(key8(pInode, 13), []byte("not sealed: garbage bytes"), pebble.NoSync); err != nil {
		t.Fatal(err)
	}
	x.icache.reset(0)
	_, err := x.GetInode(12)
	corrupt("GetInode of a short record", err)
	corrupt("GetInodes over a short record", x.GetInodes([]uint64{10, 12}, func(Inode) {}))
	corrupt("GetInodes over a record that does not open", x.GetInodes([]uint64{13}, func(Inode) {}))
	// A dirent that does not decode; one under another name's key.
	seal(keyMAC(pDirent, 2, x.keys.NameMAC(2, "b")), []byte{1, 2})
	_, err = x.Lookup(2, "b")
	corrupt("Lookup of a short entry", err)
	corrupt("ListDir over a short entry", x.ListDir(2, func(Dirent) error { return nil }))
	seal(keyMAC(pDirent, 4, x.keys.NameMAC(4, "c")), (&Dirent{Name: "d", Ino: 10}).encode())
	_, err = x.Lookup(4, "c")
	corrupt("Lookup of an entry under another name's key", err)
	// Chunk references.
	seal(key16(pChunk, 10, 1), []byte{1})
	_, ok, err := x.GetChunk(10, 1)
	corrupt("GetChunk of a short reference", err)
	if ok {
		t.Error("GetChunk of a short reference says ok")
	}
	corrupt("Chunks over a short reference", x.Chunks(10, 0, func(uint64, ChunkRef) error { return nil }))
	// Extended attributes.
	seal(keyMAC(pXattr, 10, x.xattrMAC(10, "user.a")), []byte{0, 9, 'x'})
	_, err = x.GetXattr(10, "user.a")
	corrupt("GetXattr of a short record", err)
	corrupt("ListXattr over a short record", x.ListXattr(10, func(string, []byte) error { return nil }))
	seal(keyMAC(pXattr, 11, x.xattrMAC(11, "user.c")), encodeXattr("user.d", []byte("v")))
	_, err = x.GetXattr(11, "user.c")
	corrupt("GetXattr under another name's key", err)
	// An orphan key one byte long.
	seal(append(key8(pOrphan, 14), 0), nil)
	_, err = x.Orphans()
	corrupt("Orphans over a key one byte long", err)
	// A callback's error ends a scan and is returned.
	stop := errors.New("stop")
	if err := x.ListDir(5, func(Dirent) error { return stop }); err != nil {
		t.Fatalf("ListDir of an empty directory: %v", err)
	}
	if err := x.Chunks(11, 0, func(uint64, ChunkRef) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("Chunks' callback error: %v", err)
	}
}
