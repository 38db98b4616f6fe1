package replicate

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
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
	o := newReopenable(t)
	f := o.f
	var idx *meta.Index
	open := func() { o.open(); idx = o.idx }
	open()
	engineOn := o.engine
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
	o.close(true, tag)

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
	o.close(false, nil)
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

// reopenable is a vault on the fake network whose index a test can close
// and open again under a new engine (as a new mount's).
type reopenable struct {
	t     testing.TB
	v     *vault.Vault
	idx   *meta.Index
	store *chunkstore.Store
	f     *fakeNet
}

func newReopenable(t testing.TB) *reopenable {
	t.Helper()
	home := filepath.Join(t.TempDir(), "home")
	if err := vault.Create(home, testPassword, vault.CreateOptions{KDF: vault.KDFParams{Time: 1, MemoryK: 64, Threads: 1}}); err != nil {
		t.Fatal(err)
	}
	v, err := vault.Open(home, testPassword, vault.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	o := &reopenable{t: t, v: v}
	if o.store, err = chunkstore.Open(v.StoreDir()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.store.Close() })
	t.Cleanup(func() {
		if o.idx != nil {
			o.idx.Close()
		}
	})
	id, err := AccountIdentity(v)
	if err != nil {
		t.Fatal(err)
	}
	o.f = newFakeNet(t, 4, id)
	return o
}

// open opens the index (closed, or never opened).
func (o *reopenable) open() {
	o.t.Helper()
	idx, err := meta.Open(o.v.IndexDir(), o.v.Keys, meta.Options{})
	if err != nil {
		o.t.Fatal(err)
	}
	o.idx = idx
}

// close closes the index, keeping its state sum with tag if keep (a clean
// unmount).
func (o *reopenable) close(keep bool, tag []byte) {
	o.t.Helper()
	if keep {
		b := o.idx.NewBatch()
		b.PutRepl("clean_close", tag)
		if saved, err := o.idx.CommitFoldSum(b, tag); err != nil || !saved {
			o.t.Fatalf("CommitFoldSum: %v, %v", saved, err)
		}
	}
	if err := o.idx.Close(); err != nil {
		o.t.Fatal(err)
	}
	o.idx = nil
}

// engine starts an engine (not running: the test calls it) on the open
// index, which loads what the stored snapshot covers, as New does.
func (o *reopenable) engine() *engine {
	r := offlineReplicatorOver(o.t, o.v, o.idx, o.store, func(c *Config) { c.CallTimeout, c.ReleaseDelay = 20*time.Second, time.Millisecond })
	r.client = o.f.client
	r.loadProtection()
	return &engine{v: o.v, idx: o.idx, store: o.store, r: r, ino: 100}
}

// BenchmarkFirstDeltaAfterOpen: the first snapshot (a delta) of an engine
// on an index just opened, after one new file, in a vault of
// FIRST_DELTA_RECORDS index records (default 100,000: a quarter files, each
// an inode, a directory entry, a chunk reference and a location in a data
// segment). Each iteration opens the index twice, alternated: without the
// kept state sum (walk: what every mount did before it was kept) and
// resuming it (resumed); both close keeping it. Reported per snapshot: the
// process's CPU (walk-cpu-ms, resumed-cpu-ms: the engine, the fake mediator
// and nodes) and the index records read by scans.
func BenchmarkFirstDeltaAfterOpen(b *testing.B) {
	records := 100_000
	if s := os.Getenv("FIRST_DELTA_RECORDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			b.Fatal(err)
		}
		records = n
	}
	o := newReopenable(b)
	o.open()
	e := o.engine()
	seg := meta.Segment{ID: meta.SegmentID{0xda}, Kind: meta.KindData, State: meta.SegmentDurable, K: 2, N: 4, Healthy: 4,
		Used: 1 << 30, Class: 1 << 30, Created: time.Now().UnixNano()}
	commit(b, o.idx, func(bt *meta.Batch) { bt.PutSegment(&seg) })
	file := func(bt *meta.Batch, i int) {
		ino := uint64(100 + i)
		var id meta.ChunkID
		binary.BigEndian.PutUint64(id[:], ino)
		bt.PutLocation(id, &meta.Location{Segment: seg.ID, Offset: uint32(i) * 4124, Length: 4124})
		bt.PutInode(&meta.Inode{Ino: ino, Mode: 0o100644, Size: 4096, Nlink: 1})
		bt.PutDirent(&meta.Dirent{Parent: meta.RootIno, Name: fmt.Sprintf("file-%07d", i), Ino: ino, Type: 0o100000})
		bt.PutChunk(ino, 0, &meta.ChunkRef{ID: id, Version: 1, Len: 4096})
	}
	files := records / 4
	for start := 0; start < files; start += 2000 {
		commit(b, o.idx, func(bt *meta.Batch) {
			for i := start; i < min(start+2000, files); i++ {
				file(bt, i)
			}
		})
	}
	if err := e.r.Snapshot(); err != nil { // the base
		b.Fatal(err)
	}
	tag := bytes.Repeat([]byte{9}, 16)
	o.close(true, tag)
	next := files
	first := func(resume bool) (time.Duration, int64) {
		o.open()
		if resume && !o.idx.ResumeFold(tag) {
			b.Fatal("the kept sum did not resume")
		}
		e := o.engine()
		commit(b, o.idx, func(bt *meta.Batch) { file(bt, next) })
		next++
		r0 := o.idx.RecordsRead()
		c0, _ := cpuTime(b)
		if err := e.r.Snapshot(); err != nil {
			b.Fatal(err)
		}
		c1, _ := cpuTime(b)
		n := o.idx.RecordsRead() - r0
		if c := pointerChain(b, e, o.f.snapshotPointer()); !c.parts[len(c.parts)-1].delta {
			b.Fatal("the first snapshot after the open is not a delta")
		}
		o.close(true, tag)
		return c1 - c0, n
	}
	var walk, resumed time.Duration
	var walkRead, resumedRead int64
	b.ResetTimer()
	for range b.N {
		d, n := first(false)
		walk, walkRead = walk+d, walkRead+n
		d, n = first(true)
		resumed, resumedRead = resumed+d, resumedRead+n
	}
	b.ReportMetric(float64(walk.Microseconds())/1000/float64(b.N), "walk-cpu-ms")
	b.ReportMetric(float64(resumed.Microseconds())/1000/float64(b.N), "resumed-cpu-ms")
	b.ReportMetric(float64(walkRead)/float64(b.N), "walk-records")
	b.ReportMetric(float64(resumedRead)/float64(b.N), "resumed-records")
}
