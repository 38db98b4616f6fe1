package meta

import (
	"bytes"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/vault"
)

// TestCutTreeLosesNoMark: while writers commit inode changes concurrently,
// each round cuts an epoch, reads its marks and writes the cache header
// (which deletes the marks before the next epoch), as a version does.
// Every change acknowledged before a cut is in that cut's marks (or an
// earlier one's), and no change is lost to a header's deletion: at the end
// every acknowledged change was seen. The marks persist across a reopen
// with the header, and a tree record's deletion deletes the header.
func TestCutTreeLosesNoMark(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "index")
	keys := testKeys(t, 3)
	x := openTest(t, dir, keys)
	x.CutTree() // marks on

	var mu sync.Mutex
	acked := map[uint64]bool{}
	var next atomic.Uint64
	next.Store(100)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				ino := next.Add(1)
				b := x.NewBatch()
				b.PutInode(&Inode{Ino: ino, Mode: 0o100644, Nlink: 1})
				if err := b.Commit(false); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				acked[ino] = true
				mu.Unlock()
			}
		}()
	}
	seen := map[uint64]bool{}
	// At least 40 rounds, and on until the writers have committed at
	// least 40 changes: with one CPU under load the writers may not
	// have run at all during the first 40 rounds. Bounded by a deadline.
	deadline := time.Now().Add(60 * time.Second)
	for round := 0; ; round++ {
		mu.Lock()
		before := make([]uint64, 0, len(acked))
		for ino := range acked {
			before = append(before, ino)
		}
		mu.Unlock()
		if round >= 40 && (len(before) >= 40 || time.Now().After(deadline)) {
			break
		}
		e := x.CutTree()
		ch, complete, err := x.TreeMarks(e, 1<<20)
		if err != nil || !complete {
			t.Fatal(complete, err)
		}
		for ino := range ch.Inodes {
			seen[ino] = true
		}
		for _, ino := range before {
			if !seen[ino] {
				t.Fatalf("round %d: inode %d was committed before the cut and has no mark", round, ino)
			}
		}
		b := x.NewBatch()
		b.SetTreeCacheBase(e + 1)
		if err := b.Commit(false); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	e := x.CutTree()
	ch, _, err := x.TreeMarks(e, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	for ino := range ch.Inodes {
		seen[ino] = true
	}
	for ino := range acked {
		if !seen[ino] {
			t.Fatalf("inode %d: its mark was lost", ino)
		}
	}
	if len(acked) < 40 {
		t.Fatalf("only %d commits ran", len(acked))
	}

	// Across a reopen: the header keeps the marks on, and a change after
	// it is marked in an epoch the header's base does not cover.
	b := x.NewBatch()
	b.SetTreeCacheBase(e + 1)
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	x.Close()
	x = openTest(t, dir, keys)
	defer x.Close()
	b = x.NewBatch()
	b.PutDirent(&Dirent{Parent: RootIno, Name: "a", Ino: 5, Type: 0o100000})
	if err := b.Commit(false); err != nil {
		t.Fatal(err)
	}
	base, ok, err := x.TreeCacheBase()
	if err != nil || !ok || base != e+1 {
		t.Fatalf("header after a reopen: %d %v %v", base, ok, err)
	}
	e2 := x.CutTree()
	ch, _, err = x.TreeMarks(e2, 1<<20)
	if err != nil || len(ch.Inodes) != 0 || len(ch.Dirs) != 1 {
		t.Fatalf("marks after a reopen: %v %v", ch, err)
	}
	if _, ok := ch.Dirs[RootIno]; !ok || e2 < base {
		t.Fatalf("marks after a reopen: %v in epoch %d, base %d", ch, e2, base)
	}
	b = x.NewBatch()
	b.DeleteTree(TreeID{1})
	if err := b.Commit(false); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := x.TreeCacheBase(); ok || err != nil {
		t.Fatalf("the header outlived a tree's deletion: %v %v", ok, err)
	}
}

// BenchmarkCommitMarks measures a file's creation as the mount commits it
// (inode, directory entry, chunk reference, in one batch), with the change
// marks off (a vault that never recorded a version) and on.
func BenchmarkCommitMarks(b *testing.B) {
	for _, on := range []bool{false, true} {
		b.Run(map[bool]string{false: "marks=off", true: "marks=on"}[on], func(b *testing.B) {
			x, err := Open(filepath.Join(b.TempDir(), "index"), testKeysB(b), Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer x.Close()
			if on {
				x.CutTree()
			}
			b.ReportAllocs()
			for i := range b.N {
				ino := uint64(100 + i)
				bt := x.NewBatch()
				bt.PutInode(&Inode{Ino: ino, Mode: 0o100644, Nlink: 1, Size: 10})
				bt.PutDirent(&Dirent{Parent: RootIno, Name: fmt.Sprintf("f%d", i), Ino: ino, Type: 0o100000})
				bt.PutChunk(ino, 0, &ChunkRef{ID: ChunkID{byte(i), byte(i >> 8), byte(i >> 16), 1}, Version: 1, Len: 10})
				if err := bt.Commit(false); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func testKeysB(b *testing.B) *vault.Keys {
	k, err := vault.DeriveKeys(bytes.Repeat([]byte{4}, vault.KeySize))
	if err != nil {
		b.Fatal(err)
	}
	return k
}
