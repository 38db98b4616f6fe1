package replicate

import (
	"bytes"
	"path/filepath"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/chunkstore"
	"github.com/fincrypt/fincrypt/meta"
	"github.com/fincrypt/fincrypt/vault"
)

// TestDeltaAfterAResumedFold: an engine whose index was closed with its
// state sum kept (as a clean unmount does) and reopened with it resumed
// takes its first delta without a walk of the index, and the chain
// restores to exactly the live index (the restore recomputes the state
// hash and would refuse a wrong one); after a reopen that cannot resume
// (the record was consumed: a crash) the first delta walks and still
// restores. It fails if the first delta of a resumed process walks or if
// the resumed sum is not the index's.
func TestDeltaAfterAResumedFold(t *testing.T) {
	old := MaxSegment
	MaxSegment = SizeClasses[0]
	t.Cleanup(func() { MaxSegment = old })
	home := filepath.Join(t.TempDir(), "home")
	if err := vault.Create(home, testPassword, vault.CreateOptions{KDF: vault.KDFParams{Time: 1, MemoryK: 64, Threads: 1}}); err != nil {
		t.Fatal(err)
	}
	v, err := vault.Open(home, testPassword, vault.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var idx *meta.Index
	open := func() {
		if idx, err = meta.Open(v.IndexDir(), v.Keys, meta.Options{}); err != nil {
			t.Fatal(err)
		}
	}
	open()
	t.Cleanup(func() { idx.Close() })
	store, err := chunkstore.Open(v.StoreDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	id, err := AccountIdentity(v)
	if err != nil {
		t.Fatal(err)
	}
	f := newFakeNet(t, 4, id)
	engineOn := func() *engine {
		r := offlineReplicatorOver(t, v, idx, store, func(c *Config) { c.CallTimeout, c.ReleaseDelay = 20*time.Second, time.Millisecond })
		r.client = f.client
		r.loadProtection()
		return &engine{v: v, idx: idx, store: store, r: r, ino: 100}
	}
	e := engineOn()
	commit(t, idx, func(b *meta.Batch) {
		for i := range 2000 {
			b.PutInode(&meta.Inode{Ino: uint64(1000 + i), Mode: 0o100644, Size: uint64(i)})
		}
	})
	snap := func(what string) (scanned int64) {
		t.Helper()
		r0 := idx.RecordsRead()
		if err := e.r.Snapshot(); err != nil {
			t.Fatal(err)
		}
		return idx.RecordsRead() - r0
	}
	snap("the base")
	commit(t, idx, func(b *meta.Batch) { b.PutInode(&meta.Inode{Ino: 1000, Mode: 0o100600, Size: 7}) })
	snap("a delta")
	// Changes the close folds.
	commit(t, idx, func(b *meta.Batch) {
		b.PutInode(&meta.Inode{Ino: 1001, Mode: 0o100600, Size: 8})
		b.DeleteInode(1002)
	})
	tag := bytes.Repeat([]byte{9}, 16)
	b := idx.NewBatch()
	b.PutRepl("clean_close", tag)
	if saved, err := idx.CommitFoldSum(b, tag); err != nil || !saved {
		t.Fatalf("CommitFoldSum: %v, %v", saved, err)
	}
	idx.Close()

	open()
	if !idx.ResumeFold(tag) {
		t.Fatal("the kept sum did not resume")
	}
	e = engineOn()
	commit(t, idx, func(b *meta.Batch) { b.PutInode(&meta.Inode{Ino: 1003, Mode: 0o100600, Size: 9}) })
	n := snap("the first delta after a resume")
	c := pointerChain(t, e, f.snapshotPointer())
	t.Logf("the first delta after a resume read %d records by scans (%d parts)", n, len(c.parts))
	if len(c.parts) < 3 || !c.parts[len(c.parts)-1].delta {
		t.Fatalf("the first snapshot after a resume: %d parts, want a delta", len(c.parts))
	}
	if n >= 2000 {
		t.Fatalf("the first delta after a resume read %d records by scans: it walked the index", n)
	}
	if !bytes.Equal(c.hash, liveHash(t, e)) {
		t.Fatal("the first delta after a resume: its state hash is not the live index's")
	}
	if got, err := restoredHash(t, e, f); err != nil || !bytes.Equal(got, liveHash(t, e)) {
		t.Fatalf("restore of the chain after a resume: not the live index (%v)", err)
	}

	// A reopen that cannot resume (the record went with the resume, as
	// after a crash): the first delta walks, and restores.
	commit(t, idx, func(b *meta.Batch) { b.PutInode(&meta.Inode{Ino: 1004, Mode: 0o100600, Size: 10}) })
	idx.Close()
	open()
	if idx.ResumeFold(tag) {
		t.Fatal("a kept sum resumed twice")
	}
	e = engineOn()
	commit(t, idx, func(b *meta.Batch) { b.PutInode(&meta.Inode{Ino: 1005, Mode: 0o100600, Size: 11}) })
	if n := snap("the first delta after a crash"); n < 2000 {
		t.Fatalf("the first delta after a reopen without a kept sum read %d records: it cannot have walked", n)
	}
	if c := pointerChain(t, e, f.snapshotPointer()); !c.parts[len(c.parts)-1].delta || !bytes.Equal(c.hash, liveHash(t, e)) {
		t.Fatal("the first snapshot after a crash: not a delta of the live index")
	}
	if got, err := restoredHash(t, e, f); err != nil || !bytes.Equal(got, liveHash(t, e)) {
		t.Fatalf("restore after a crash: not the live index (%v)", err)
	}
}
