package replicate

import (
	"bytes"
	"errors"
	"testing"

	"github.com/fincrypt/fincrypt/meta"
	fnet "github.com/fincrypt/fincrypt/net"
)

// resealed is the pointer p with its list replaced by c's.
func resealed(t *testing.T, e *engine, p fnet.SnapshotPointer, c *snapChain) *fnet.SnapshotPointer {
	t.Helper()
	p.Sealed = e.r.snap.Seal(nil, encodeChain(c), snapshotAD("list", p.Account, p.Seq))
	id, err := AccountIdentity(e.v)
	if err != nil {
		t.Fatal(err)
	}
	p.Sign(id)
	return &p
}

// TestSnapshotChainOfStateHashV1: a chain stored before the state sum (a
// list of magic v2, whose hash is the sequential stateHash) still
// restores, and is still refused when its records miss a change the hash
// covers (a change behind the feed); a new chain records hash kind 2. It
// fails if a v1 list's hash were checked as a v2 one (the good chain is
// refused) or not checked at all (the bad one restores).
func TestSnapshotChainOfStateHashV1(t *testing.T) {
	e, f := lostReplyEngine(t)
	for i := range 2 {
		commit(t, e.idx, func(b *meta.Batch) { b.PutInode(&meta.Inode{Ino: uint64(7000 + i), Mode: 0o100644, Size: 1}) })
		if err := e.r.Snapshot(); err != nil {
			t.Fatal(err)
		}
	}
	p := *f.snapshotPointer()
	c := pointerChain(t, e, &p)
	if c.v1 || len(c.parts) != 3 || !bytes.Equal(c.hash, liveHash(t, e)) {
		t.Fatalf("a new chain: v1 %v, %d parts, hash of the live index %v", c.v1, len(c.parts), bytes.Equal(c.hash, liveHash(t, e)))
	}
	kf, err := e.r.readKeyFile()
	if err != nil {
		t.Fatal(err)
	}
	old := *c
	old.v1 = true
	if old.hash, err = stateHash(e.idx, kf, e.idx.Export); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.pointer = resealed(t, e, p, &old)
	f.mu.Unlock()
	if got, res, covered, err := restoreState(t, f, false); err != nil || res.Mismatch || !bytes.Equal(got, liveHash(t, e)) || !bytes.Equal(covered, old.hash) {
		t.Fatalf("restore of a v1 chain: %v (mismatch %v; the live index restored: %v)", err, res != nil && res.Mismatch, bytes.Equal(got, liveHash(t, e)))
	}
	// A change the chain's records miss, which its (v1) hash covers.
	commit(t, e.idx, func(b *meta.Batch) { b.PutInode(&meta.Inode{Ino: 7100, Mode: 0o100644, Size: 2}) })
	if old.hash, err = stateHash(e.idx, kf, e.idx.Export); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.pointer = resealed(t, e, p, &old)
	f.mu.Unlock()
	if _, err := restoredHash(t, e, f); !errors.Is(err, ErrStateMismatch) {
		t.Fatalf("restore of a v1 chain that misses a change: %v, want ErrStateMismatch", err)
	}
}

// TestBaseResetsAWrongStateSum: a base walks its records and, when the
// state sum folded from the changes disagrees with them, logs and counts it
// and seeds the fold with theirs, so that the next delta's hash is right
// again. A base whose fold agrees counts nothing. It fails if the base did
// not check the folded sum, or kept it (the next delta's hash would not be
// the live index's and its restore would refuse).
func TestBaseResetsAWrongStateSum(t *testing.T) {
	e, f := lostReplyEngine(t)
	base := func(ino uint64) {
		t.Helper()
		commit(t, e.idx, func(b *meta.Batch) { b.PutInode(&meta.Inode{Ino: ino, Mode: 0o100644, Size: 1}) })
		e.r.snapMu.Lock()
		e.r.chain = nil // the next snapshot is a base
		e.r.snapMu.Unlock()
		if err := e.r.Snapshot(); err != nil {
			t.Fatal(err)
		}
	}
	// A delta folds (the base before it seeded the fold), then a base
	// checks the folded sum: right, no reset.
	commit(t, e.idx, func(b *meta.Batch) { b.PutInode(&meta.Inode{Ino: 7199, Mode: 0o100644, Size: 1}) })
	if err := e.r.Snapshot(); err != nil {
		t.Fatal(err)
	}
	base(7200)
	if n := e.r.sumResets.Load(); n != 0 {
		t.Fatalf("%d resets after a base whose folded sum was right", n)
	}
	// Skew the folded sum, as a change it missed would.
	var skew meta.StateSum
	skew[3] = 7
	e.idx.SkewFold(skew)
	base(7201)
	if n := e.r.sumResets.Load(); n != 1 {
		t.Fatalf("%d resets after the base over a wrong folded sum, want 1", n)
	}
	if c := pointerChain(t, e, f.snapshotPointer()); len(c.parts) != 1 || !bytes.Equal(c.hash, liveHash(t, e)) {
		t.Fatalf("the base: %d parts, hash of the live index %v", len(c.parts), bytes.Equal(c.hash, liveHash(t, e)))
	}
	// A delta after it folds from the base's walk: right again.
	commit(t, e.idx, func(b *meta.Batch) { b.PutInode(&meta.Inode{Ino: 7202, Mode: 0o100644, Size: 1}) })
	if err := e.r.Snapshot(); err != nil {
		t.Fatal(err)
	}
	if c := pointerChain(t, e, f.snapshotPointer()); len(c.parts) != 2 || !bytes.Equal(c.hash, liveHash(t, e)) {
		t.Fatalf("the delta: %d parts, hash of the live index %v", len(c.parts), bytes.Equal(c.hash, liveHash(t, e)))
	}
	if _, err := restoredHash(t, e, f); err != nil {
		t.Fatalf("restore after the reset: %v", err)
	}
}

// TestDeltaSnapshotReadsNoIndexWalk: a delta snapshot of one change reads
// a number of records that follows the change, not the index (before the
// state sum, its state hash walked every record).
func TestDeltaSnapshotReadsNoIndexWalk(t *testing.T) {
	e, _ := lostReplyEngine(t) // a base of 2000 inodes
	commit(t, e.idx, func(b *meta.Batch) { b.PutInode(&meta.Inode{Ino: 7300, Mode: 0o100644, Size: 1}) })
	r0 := e.idx.RecordsRead()
	if err := e.r.Snapshot(); err != nil {
		t.Fatal(err)
	}
	if n := e.idx.RecordsRead() - r0; n > 200 {
		t.Fatalf("a delta snapshot of one change read %d records of an index of 2000 inodes", n)
	}
}

// TestRestoredIndexStartsCovered: a restored index keeps no state sum yet;
// its live hash (a walk) is still the one its chain recorded (R
// snapshot_hash), so that its first mount finds everything restorable
// without storing a snapshot. It fails if the live hash of an index without
// the sum were the version 1 walk (a new chain's hash is version 2).
func TestRestoredIndexStartsCovered(t *testing.T) {
	e, f := lostReplyEngine(t)
	commit(t, e.idx, func(b *meta.Batch) { b.PutInode(&meta.Inode{Ino: 7300, Mode: 0o100644, Size: 1}) })
	if err := e.r.Snapshot(); err != nil {
		t.Fatal(err)
	}
	idx, kf, _, err := restoreAccount(t, f, false)
	if err != nil {
		t.Fatal(err)
	}
	covered, err := idx.GetRepl("snapshot_hash")
	if err != nil {
		t.Fatalf("the restored index records no snapshot hash: %v", err)
	}
	h, err := (&Replicator{idx: idx}).liveHash(kf)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(h, covered) {
		t.Fatalf("a restored index hashes %x, its chain says %x: not covered", h[:8], covered[:8])
	}
}

// TestDeltaOverAChangeBehindTheFeed: a change committed while the engine
// runs, whose change feed record is then dropped (a client bug: the delta
// misses it), still moves the folded state sum, which is made from the
// commits, not from the feed's records: the delta's hash is the live
// index's, and the restore refuses the chain (ErrStateMismatch). It fails
// if the fold followed the feed's records (the hash would match the
// records and the chain restore without the change).
func TestDeltaOverAChangeBehindTheFeed(t *testing.T) {
	e, f := lostReplyEngine(t)
	commit(t, e.idx, func(b *meta.Batch) { b.PutInode(&meta.Inode{Ino: 7400, Mode: 0o100644, Size: 1}) })
	if err := e.r.Snapshot(); err != nil { // a delta: the fold follows from here
		t.Fatal(err)
	}
	e.r.snapMu.Lock() // no snapshot of the engine's own in between
	commit(t, e.idx, func(b *meta.Batch) { b.PutInode(&meta.Inode{Ino: 7400, Mode: 0o100600, Size: 2}) })
	view, err := e.idx.ChangeView() // a view closed unfolded: its keys carry to the next fold
	if err != nil {
		e.r.snapMu.Unlock()
		t.Fatal(err)
	}
	n, err := e.idx.DropChanges(view.Epoch)
	view.Close()
	e.r.snapMu.Unlock()
	if err != nil || n < 1 {
		t.Fatalf("dropping the change's feed record: %d dropped, %v", n, err)
	}
	commit(t, e.idx, func(b *meta.Batch) { b.PutInode(&meta.Inode{Ino: 7401, Mode: 0o100644, Size: 1}) })
	if err := e.r.Snapshot(); err != nil {
		t.Fatal(err)
	}
	c := pointerChain(t, e, f.snapshotPointer())
	if len(c.parts) < 3 || !bytes.Equal(c.hash, liveHash(t, e)) {
		t.Fatalf("the delta: %d parts, hash of the live index %v", len(c.parts), bytes.Equal(c.hash, liveHash(t, e)))
	}
	if _, err := restoredHash(t, e, f); !errors.Is(err, ErrStateMismatch) {
		t.Fatalf("restore of a chain that misses a change: %v, want ErrStateMismatch", err)
	}
}
