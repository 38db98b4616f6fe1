package meta

// Tests written against the mutants of treecache.go and treefeed.go (the
// version cache and its change marks) that the package's own tests let
// live (issue 21, eighth session; docs/TESTING.md lists each mutant).

import (
	"errors"
	"path/filepath"
	"testing"
)

func commit(t *testing.T, b *Batch) {
	t.Helper()
	if err := b.Commit(false); err != nil {
		t.Fatal(err)
	}
}

func marksOf(t *testing.T, x *Index, through uint64, max int) (TreeChanges, bool) {
	t.Helper()
	ch, complete, err := x.TreeMarks(through, max)
	if err != nil {
		t.Fatal(err)
	}
	return ch, complete
}

func sameSet(got map[uint64]struct{}, want ...uint64) bool {
	if len(got) != len(want) {
		return false
	}
	for _, w := range want {
		if _, ok := got[w]; !ok {
			return false
		}
	}
	return true
}

// TestTreeMarksNameEachChange: once marks are on, every inode, chunk-map
// and xattr record written or deleted marks its inode, and every directory
// entry its directory, in the current epoch; other records mark nothing.
// TreeMarks reads the epochs up to the one asked for, no later, and says
// incomplete only past max (max marks exactly is complete). A header's
// base deletes the marks of the epochs before it and keeps its own.
// Mutants: treefeed.go:40 (`len(key) < 9` → `<=`: no inode marked), the
// cases of noteTreeKey, treecache.go's `n > max` (boundary), `through+1`,
// SetTreeCacheBase's range.
func TestTreeMarksNameEachChange(t *testing.T) {
	x := openTest(t, filepath.Join(t.TempDir(), "index"), testKeys(t, 7))
	defer x.Close()
	// Marks off (no version was ever made): nothing is marked.
	b := x.NewBatch()
	b.PutInode(&Inode{Ino: 50, Mode: 0o100644, Nlink: 1})
	commit(t, b)
	e1 := x.CutTree() // the epoch before the marks were on: empty
	if ch, _ := marksOf(t, x, e1, 100); len(ch.Inodes)+len(ch.Dirs) != 0 {
		t.Fatalf("marks written while marks were off: %v", ch)
	}
	b = x.NewBatch()
	b.PutInode(&Inode{Ino: 10, Mode: 0o100644, Nlink: 1})
	b.PutChunk(11, 0, &ChunkRef{ID: ChunkID{1}, Version: 1, Len: 5})
	b.PutXattr(12, "user.a", []byte("v"))
	b.PutDirent(&Dirent{Parent: 13, Name: "f", Ino: 10, Type: 0o100000})
	b.PutBlob(ChunkID{2}, 7)
	b.PutSegment(&Segment{ID: SegmentID{3}, Kind: KindData})
	commit(t, b)
	b = x.NewBatch()
	b.DeleteInode(20)
	b.DeleteDirent(21, "g")
	commit(t, b)
	e2 := x.CutTree()
	// A change of the next epoch, not named by e2's marks.
	b = x.NewBatch()
	b.PutInode(&Inode{Ino: 30, Mode: 0o100644, Nlink: 1})
	commit(t, b)
	ch, complete := marksOf(t, x, e2, 6)
	if !complete || !sameSet(ch.Inodes, 10, 11, 12, 20) || !sameSet(ch.Dirs, 13, 21) {
		t.Fatalf("marks through epoch %d (max 6, 6 marks): inodes %v dirs %v complete %v; want inodes 10 11 12 20, dirs 13 21, complete", e2, ch.Inodes, ch.Dirs, complete)
	}
	if _, complete := marksOf(t, x, e2, 5); complete {
		t.Fatal("6 marks read with a max of 5 said complete")
	}
	e3 := x.CutTree()
	ch, _ = marksOf(t, x, e3, 100)
	if !sameSet(ch.Inodes, 10, 11, 12, 20, 30) {
		t.Fatalf("marks through epoch %d: inodes %v; want the later change (30) too", e3, ch.Inodes)
	}
	// The header's base e3 says the records describe the epochs before
	// it: their marks go, e3's stay.
	b = x.NewBatch()
	b.SetTreeCacheBase(e3)
	commit(t, b)
	ch, _ = marksOf(t, x, e3, 100)
	if !sameSet(ch.Inodes, 30) || len(ch.Dirs) != 0 {
		t.Fatalf("after a header of base %d: inodes %v dirs %v; want only inode 30 (epoch %d)", e3, ch.Inodes, ch.Dirs, e3)
	}
	if base, ok, err := x.TreeCacheBase(); base != e3 || !ok || err != nil {
		t.Fatalf("header: base %d, %v, %v; want %d", base, ok, err, e3)
	}
}

// TestTreeCacheHeaderSurvivesOnlyWhatItMay: a tree or pin record written
// keeps the header, one deleted drops it (what the cache names may be
// gone); ResetTreeCache drops the header and every `d` and `p` record and
// keeps the marks; a reopen continues the epochs after every mark and the
// header's base, with the marks on. Mutants: treefeed.go's `del &&
// !b.tree.broken` (negated), the `pTree, pPin` case, ResetTreeCache's
// `k + 1`, openTreeCache's `it.Last() && len(it.Key()) == 19` and
// `+1`, and `f.marks.Store(true)` after a header.
func TestTreeCacheHeaderSurvivesOnlyWhatItMay(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "index")
	keys := testKeys(t, 8)
	x := openTest(t, dir, keys)
	header := func(base uint64) {
		t.Helper()
		b := x.NewBatch()
		b.SetTreeCacheBase(base)
		commit(t, b)
	}
	has := func() bool {
		t.Helper()
		_, ok, err := x.TreeCacheBase()
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	e := x.CutTree()
	header(e)
	b := x.NewBatch()
	b.PutTree(TreeID{1}, []byte("tree"))
	b.PutPin(ChunkID{4}, Pin{Ino: 2, Index: 0, Version: 1, Len: 3})
	commit(t, b)
	if !has() {
		t.Fatal("writing a tree and a pin dropped the version cache's header")
	}
	b = x.NewBatch()
	b.DeletePin(ChunkID{4}, Pin{Ino: 2, Index: 0, Version: 1, Len: 3})
	commit(t, b)
	if has() {
		t.Fatal("deleting a pin kept the version cache's header")
	}
	header(e)
	b = x.NewBatch()
	b.DeleteTree(TreeID{1})
	b.DeleteTree(TreeID{2}) // a second deletion in one batch
	commit(t, b)
	if has() {
		t.Fatal("deleting a tree kept the version cache's header")
	}

	// Records of both kinds, for two inodes, and a mark.
	header(e)
	b = x.NewBatch()
	for _, ino := range []uint64{1, 1 << 40} {
		b.PutTreeCache(TreeCacheDir, ino, []byte("dir"))
		b.PutTreeCache(TreeCacheParents, ino, []byte("parents"))
	}
	b.PutInode(&Inode{Ino: 77, Mode: 0o100644, Nlink: 1})
	commit(t, b)
	b = x.NewBatch()
	b.ResetTreeCache()
	commit(t, b)
	if has() {
		t.Fatal("ResetTreeCache kept the header")
	}
	for _, kind := range []byte{TreeCacheDir, TreeCacheParents} {
		for _, ino := range []uint64{1, 1 << 40} {
			if v, err := x.GetTreeCache(kind, ino); !errors.Is(err, ErrNotFound) {
				t.Fatalf("ResetTreeCache kept record %c of inode %d: %q, %v", kind, ino, v, err)
			}
		}
	}
	if ch, _ := marksOf(t, x, 1000, 100); !sameSet(ch.Inodes, 77) {
		t.Fatalf("ResetTreeCache dropped the marks: %v", ch.Inodes)
	}

	// A header of base 5 and marks up to epoch 9: after a reopen the marks
	// are on and the next change lands after epoch 9.
	for x.CutTree() < 8 {
	}
	b = x.NewBatch()
	b.PutInode(&Inode{Ino: 90, Mode: 0o100644, Nlink: 1})
	commit(t, b) // epoch 9
	header(5)
	x.Close()
	x = openTest(t, dir, keys)
	b = x.NewBatch()
	b.PutInode(&Inode{Ino: 91, Mode: 0o100644, Nlink: 1})
	commit(t, b)
	ch, _ := marksOf(t, x, 9, 100)
	if !sameSet(ch.Inodes, 90) {
		t.Fatalf("after a reopen, marks through epoch 9: %v; want 90 only (91 came later)", ch.Inodes)
	}
	e2 := x.CutTree()
	if e2 <= 9 {
		t.Fatalf("after a reopen the epoch is %d, not after the last mark's (9)", e2)
	}
	if ch, _ := marksOf(t, x, e2, 100); !sameSet(ch.Inodes, 90, 91) {
		t.Fatalf("after a reopen the change was not marked: %v", ch.Inodes)
	}

	// A header alone (no marks) turns the marks on at a reopen, in an
	// epoch no earlier than its base.
	b = x.NewBatch()
	b.SetTreeCacheBase(40)
	commit(t, b)
	x.Close()
	x = openTest(t, dir, keys)
	b = x.NewBatch()
	b.PutInode(&Inode{Ino: 92, Mode: 0o100644, Nlink: 1})
	commit(t, b)
	if ch, _ := marksOf(t, x, 40, 100); !sameSet(ch.Inodes, 92) {
		t.Fatalf("after a reopen with a header of base 40 and no marks: %v; want inode 92 marked in epoch 40", ch.Inodes)
	}
	if e := x.CutTree(); e != 40 {
		t.Fatalf("the epoch after a reopen with a header of base 40 and no marks: %d", e)
	}
	x.Close()
}

// TestTreeCacheDamage: a header of another length or version is
// ErrCorrupt to TreeCacheBase but does not stop the index from opening (a
// damaged cache only costs a full read of the tree); a mark key of another
// length or kind is ErrCorrupt to TreeMarks. Mutants: TreeCacheBase's
// `len(v) != 9 || v[0] != tcHeaderV1`, openTreeCache's `!errors.Is(err,
// ErrCorrupt)`, TreeMarks' `len(key) != 19` and its `default` case.
func TestTreeCacheDamage(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "index")
	keys := testKeys(t, 9)
	for _, v := range [][]byte{{tcHeaderV1, 0, 0, 0, 0, 0, 0, 0}, {tcHeaderV1, 0, 0, 0, 0, 0, 0, 0, 1, 0}, {2, 0, 0, 0, 0, 0, 0, 0, 1}} {
		x := openTest(t, dir, keys)
		b := x.NewBatch()
		b.set(tcHeaderKey(), v)
		commit(t, b)
		if _, ok, err := x.TreeCacheBase(); ok || !errors.Is(err, ErrCorrupt) {
			t.Fatalf("header %x: ok %v, %v; want ErrCorrupt", v, ok, err)
		}
		x.Close()
		x2, err := Open(dir, keys, Options{})
		if err != nil {
			t.Fatalf("index with a damaged version cache header %x does not open: %v", v, err)
		}
		x2.Close()
	}
	x := openTest(t, dir, keys)
	defer x.Close()
	for _, key := range [][]byte{
		append(tcMarkKey(3, 'i', 1), 0),   // 20 bytes
		tcMarkKey(3, 'i', 1)[:18],         // 18 bytes
		tcMarkKey(3, 'x', 1),              // no such kind
		tcMarkKey(3, TreeCacheParents, 1), // a record kind, not a mark kind
	} {
		b := x.NewBatch()
		if err := b.b.Set(key, x.keys.Meta.Seal(nil, nil, key), nil); err != nil {
			t.Fatal(err)
		}
		commit(t, b)
		if _, _, err := x.TreeMarks(3, 100); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("mark key %x: %v, want ErrCorrupt", key, err)
		}
		b = x.NewBatch()
		if err := b.b.Delete(key, nil); err != nil {
			t.Fatal(err)
		}
		commit(t, b)
	}
	if _, _, err := x.TreeMarks(3, 100); err != nil {
		t.Fatalf("after the damaged marks were removed: %v", err)
	}
}
