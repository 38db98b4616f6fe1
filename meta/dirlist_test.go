package meta

import (
	"path/filepath"
	"reflect"
	"testing"
)

// TestGetInodes reads inodes in ascending order with one iterator: each
// one asked for and present comes back whole (a symlink's target too),
// missing ones and ones not asked for are skipped.
func TestGetInodes(t *testing.T) {
	x := openTest(t, filepath.Join(t.TempDir(), "index"), testKeys(t, 1))
	defer x.Close()
	b := x.NewBatch()
	want := map[uint64]Inode{}
	for ino := uint64(10); ino < 40; ino += 3 {
		in := Inode{Ino: ino, Mode: 0o100644, Nlink: 1, Size: ino * 100, Mtime: int64(ino)}
		if ino == 13 {
			in.Mode, in.Target = 0o120777, []byte("target")
		}
		b.PutInode(&in)
		want[ino] = in
	}
	if err := b.Commit(false); err != nil {
		t.Fatal(err)
	}
	ask := []uint64{10, 11, 13, 22, 23, 37, 38, 1000}
	var got []Inode
	if err := x.GetInodes(ask, func(in Inode) { got = append(got, in) }); err != nil {
		t.Fatal(err)
	}
	exp := []Inode{want[10], want[13], want[22], want[37]}
	if !reflect.DeepEqual(got, exp) {
		t.Fatalf("GetInodes(%v) = %+v, want %+v", ask, got, exp)
	}
	if err := x.GetInodes(nil, func(Inode) { t.Fatal("called for no inode") }); err != nil {
		t.Fatal(err)
	}
}

// TestDirentGeneration grows after a batch that writes or deletes a
// directory entry, and not after one that changes only an inode.
func TestDirentGeneration(t *testing.T) {
	x := openTest(t, filepath.Join(t.TempDir(), "index"), testKeys(t, 1))
	defer x.Close()
	commit := func(f func(b *Batch)) uint64 {
		t.Helper()
		g := x.DirentGeneration()
		b := x.NewBatch()
		f(b)
		if err := b.Commit(false); err != nil {
			t.Fatal(err)
		}
		return x.DirentGeneration() - g
	}
	if d := commit(func(b *Batch) { b.PutInode(&Inode{Ino: 5, Mode: 0o100644}) }); d != 0 {
		t.Fatalf("an inode's change moved the dirent generation by %d", d)
	}
	if d := commit(func(b *Batch) { b.PutDirent(&Dirent{Parent: 1, Name: "a", Ino: 5}) }); d != 1 {
		t.Fatalf("a new entry moved the dirent generation by %d, want 1", d)
	}
	if d := commit(func(b *Batch) { b.DeleteDirent(1, "a") }); d != 1 {
		t.Fatalf("a deleted entry moved the dirent generation by %d, want 1", d)
	}
}
