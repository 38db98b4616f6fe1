package replicate

import (
	"math/rand/v2"
	"testing"

	"github.com/fincrypt/fincrypt/chunkstore"
	"github.com/fincrypt/fincrypt/meta"
	"github.com/fincrypt/fincrypt/vault"
)

// TestMaintainFollowsChanges: after a change, maintenance reads what the
// change touched (the index's live-bytes feed, and the segment records),
// not every chunk reference of the vault: no walk, and the records it
// reads do not grow with the files already durable. Its count of live
// bytes stays what a walk finds through uploads, overwrites, deletions,
// pins and forgotten pins, and a segment whose live share falls below the
// repack threshold is still found and repacked (after a walk that recounts).
func TestMaintainFollowsChanges(t *testing.T) {
	e := newEngine(t, nil)
	rng := rand.New(rand.NewPCG(11, 12))
	const size = 600
	// durable adds n one-chunk files in one new segment and returns their
	// inodes and chunk ids.
	durable := func(n int) ([]uint64, []meta.ChunkID) {
		t.Helper()
		var inos []uint64
		var ids []meta.ChunkID
		for range n {
			got, _ := e.addChunks(t, rng, size)
			inos, ids = append(inos, e.ino), append(ids, got[0])
		}
		e.upload(t, e.planFor(t, ids))
		return inos, ids
	}
	agree := func(when string) {
		t.Helper()
		want, err := e.idx.LiveByWalk()
		if err != nil {
			t.Fatal(err)
		}
		for seg, n := range want {
			if got := e.r.liveCount[seg]; got != n {
				t.Fatalf("%s: maintenance counts %d live bytes in segment %s, a walk %d", when, got, seg, n)
			}
		}
	}
	// pass runs one maintenance pass and returns whether it walked and the
	// records it read.
	pass := func() (bool, int64) {
		t.Helper()
		walks, read := e.r.passes.maintain.Load(), e.idx.RecordsRead()
		if err := e.r.maintain(); err != nil {
			t.Fatal(err)
		}
		return e.r.passes.maintain.Load() > walks, e.idx.RecordsRead() - read
	}
	segments := func() int64 {
		n := int64(0)
		e.idx.Segments(func(meta.Segment) error { n++; return nil })
		return n
	}

	aInos, aIDs := durable(40)
	bInos, bIDs := durable(5)
	pass() // the engine's first round walked to count (or this pass does)
	if e.r.passes.maintain.Load() == 0 || e.r.liveCount == nil {
		t.Fatal("maintenance has not counted live bytes after its first passes")
	}
	agree("after the first passes")

	// cost is what a pass reads after one overwrite of a durable file.
	overwrite := func(ino uint64) meta.ChunkID {
		t.Helper()
		id := chunkstore.NewID()
		if err := e.store.Put(id, make([]byte, size)); err != nil {
			t.Fatal(err)
		}
		b := e.idx.NewBatch()
		b.PutChunk(ino, 0, &meta.ChunkRef{ID: id, Version: 2, Len: size - vault.Overhead})
		if err := b.Commit(true); err != nil {
			t.Fatal(err)
		}
		return id
	}
	cost := func(ino uint64) int64 {
		t.Helper()
		overwrite(ino)
		walked, read := pass()
		if walked {
			t.Fatal("maintenance walked the whole index after one overwrite")
		}
		if limit := segments() + 2; read > limit {
			t.Fatalf("maintenance read %d records after one overwrite, more than the %d segments (+2)", read, limit-2)
		}
		return read
	}
	small := cost(aInos[0])
	agree("after an overwrite")
	durable(400) // ten times the files, durable: the vault grows, a change does not
	if walked, _ := pass(); walked {
		t.Fatal("maintenance walked after an upload")
	}
	agree("after an upload")
	large := cost(aInos[1])
	t.Logf("records read by a maintenance pass after one overwrite: %d (44 durable files), %d (444)", small, large)
	if large > small+1 {
		t.Fatalf("a pass after one overwrite read %d records with 400 more durable files, %d without", large, small)
	}

	// A pinned chunk stays live when its file drops it, dies with its pin.
	pin := meta.Pin{Ino: aInos[2], Index: 0, Version: 1, Len: size - vault.Overhead}
	b := e.idx.NewBatch()
	b.PutPin(aIDs[2], pin)
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	overwrite(aInos[2])
	pass()
	agree("after overwriting a pinned chunk")
	b = e.idx.NewBatch()
	b.DeletePin(aIDs[2], pin)
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	pass()
	agree("after forgetting the pin")

	// Deleting four of segment B's five files leaves it under the repack
	// threshold: the pass walks and queues the live one again.
	bSeg := segOf(t, e.idx, bIDs[0])
	b = e.idx.NewBatch()
	for _, ino := range bInos[:4] {
		b.DeleteChunk(ino, 0)
	}
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	if walked, _ := pass(); !walked {
		t.Fatal("a segment fell under the repack threshold and maintenance did not walk to act on it")
	}
	if ok, err := e.idx.IsPending(bIDs[4]); err != nil || !ok {
		t.Fatalf("the live chunk of a segment under the repack threshold was not queued again (pending %v, %v)", ok, err)
	}
	if _, err := e.idx.GetSegment(bSeg); err != nil {
		t.Fatal(err)
	}
}

func segOf(t *testing.T, idx *meta.Index, id meta.ChunkID) meta.SegmentID {
	t.Helper()
	l, err := idx.GetLocation(id)
	if err != nil {
		t.Fatal(err)
	}
	return l.Segment
}
