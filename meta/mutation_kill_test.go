package meta

import (
	"testing"

	"github.com/fincrypt/fincrypt/vault"
)

// Tests written against the mutants gremlins left alive in this package
// (docs/TESTING.md); each was run by hand against the mutant it names.

// TestBlobPendingSize: a blob no segment holds joins the pending feed with
// its sealed size (plaintext plus vault.Overhead), owner-less; a located
// blob does not, and DeleteBlob takes it off (kills `plainLen+Overhead` →
// `plainLen-Overhead` in PutBlob); FeedFromWalk finds the same (kills,
// in its blob scan, `n+Overhead` → `n-Overhead` and decodeBlob's
// `err != nil` negated).
func TestBlobPendingSize(t *testing.T) {
	x := openTest(t, t.TempDir(), testKeys(t, 1))
	b := x.NewBatch()
	b.PutBlob(ChunkID{1}, 100)
	b.PutLocation(ChunkID{2}, &Location{Segment: SegmentID{9}, Length: 228})
	b.PutBlob(ChunkID{2}, 200)
	b.PutBlob(ChunkID{3}, 300)
	b.DeleteBlob(ChunkID{3})
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	var got []Pending
	if err := x.PendingChunks(func(p Pending) error { got = append(got, p); return nil }); err != nil {
		t.Fatal(err)
	}
	want := Pending{ID: ChunkID{1}, Size: 100 + vault.Overhead}
	if len(got) != 1 || got[0] != want {
		t.Fatalf("pending feed %+v, want [%+v]", got, want)
	}
	walk, err := x.FeedFromWalk()
	if err != nil || len(walk) != 1 || walk[ChunkID{1}] != want {
		t.Fatalf("feed from the walk %+v, %v; want %+v alone", walk, err, want)
	}

	// A version's pin of an unlocated chunk is in the walk's feed too,
	// after the blobs (kills the blob scan's `err != nil` negated, which
	// returns before the pins).
	b = x.NewBatch()
	b.PutPin(ChunkID{5}, Pin{Ino: 7, Version: 1, Len: 50})
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	walk, err = x.FeedFromWalk()
	pin := Pending{ID: ChunkID{5}, Size: 50 + vault.Overhead}
	if err != nil || len(walk) != 2 || walk[ChunkID{1}] != want || walk[ChunkID{5}] != pin {
		t.Fatalf("feed from the walk %+v, %v; want %+v and %+v", walk, err, want, pin)
	}
}

// TestVerifyFeedReports: VerifyFeed counts the feed's entries and names a
// pending chunk the feed lacks (kills `rep.Entries++` → `--`, and the
// error checks after FeedFromWalk and PendingChunks negated, which return
// an empty or a partial report).
func TestVerifyFeedReports(t *testing.T) {
	x := openTest(t, t.TempDir(), testKeys(t, 1))
	b := x.NewBatch()
	b.PutBlob(ChunkID{1}, 10)
	b.PutBlob(ChunkID{2}, 20)
	b.PutBlob(ChunkID{3}, 30)
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	rep, err := x.VerifyFeed()
	if err != nil || !rep.OK() || rep.Entries != 3 {
		t.Fatalf("VerifyFeed: %+v, %v; want 3 entries, nothing missing", rep, err)
	}
	b = x.NewBatch()
	b.ForgetPending(ChunkID{2})
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	rep, err = x.VerifyFeed()
	if err != nil || rep.Entries != 2 || len(rep.Missing) != 1 || rep.Missing[0] != (ChunkID{2}) || rep.OK() {
		t.Fatalf("VerifyFeed: %+v, %v; want 2 entries and blob 2 missing", rep, err)
	}
}

// TestRebuildFeedDropsStale: RebuildFeed replaces the feed, so a stale
// file-chunk mark (an owner whose chunk map does not hold it) is gone and
// an owner-less mark of an unlocated chunk is kept (kills `pPending + 1` →
// `pPending - 1`, the end of the range rebuildFeed deletes), and the count
// it returns is of the records it wrote.
func TestRebuildFeedDropsStale(t *testing.T) {
	x := openTest(t, t.TempDir(), testKeys(t, 1))
	b := x.NewBatch()
	// Every batch keeps the feed exact, so the stale mark is made below
	// the check MarkPending does (as damage or another writer would).
	b.markPending(ChunkID{4}, 9, 0, 100)
	b.PutBlob(ChunkID{1}, 10)
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	if rep, err := x.VerifyFeed(); err != nil || len(rep.Stale) != 1 || rep.Stale[0] != (ChunkID{4}) {
		t.Fatalf("VerifyFeed before the rebuild: %+v, %v; want chunk 4 stale", rep, err)
	}
	n, err := x.RebuildFeed()
	if err != nil {
		t.Fatal(err)
	}
	var got []Pending
	if err := x.PendingChunks(func(p Pending) error { got = append(got, p); return nil }); err != nil {
		t.Fatal(err)
	}
	if want := (Pending{ID: ChunkID{1}, Size: 10 + vault.Overhead}); len(got) != 1 || got[0] != want {
		t.Fatalf("feed after the rebuild %+v, want [%+v]", got, want)
	}
	// The blob's mark is both what the walk finds and an owner-less mark
	// kept: one record, counted once.
	if n != len(got) {
		t.Fatalf("RebuildFeed counts %d records, the feed holds %d", n, len(got))
	}
}

// TestCounterAcrossCeilings: versions drawn past several reserved ranges,
// with a reopen after each, never repeat (kills `c.next >= c.ceiling` →
// `>` in next, which hands out the ceiling itself unreserved: the reopened
// index hands it out again).
func TestCounterAcrossCeilings(t *testing.T) {
	dir := t.TempDir()
	keys := testKeys(t, 1)
	seen := map[uint64]bool{}
	for round := 0; round < 3; round++ {
		x := openTest(t, dir, keys)
		for i := 0; i < versionStep+1; i++ {
			v, err := x.NextVersion()
			if err != nil {
				t.Fatal(err)
			}
			if seen[v] {
				t.Fatalf("round %d: version %d handed out twice", round, v)
			}
			seen[v] = true
		}
		x.Close()
	}
}

// TestCommitSyncWithRefsSurvivesPowerLoss: a synced batch that changes
// chunk references while the RefSum is tracked survives a power cut (kills
// commitRefs' error check negated in Commit, which returns before the
// sync).
func TestCommitSyncWithRefsSurvivesPowerLoss(t *testing.T) {
	x, reboot := crashableIndex(t)
	sum, err := x.WalkRefSum()
	if err != nil {
		t.Fatal(err)
	}
	x.TrackRefs(sum)
	b := x.NewBatch()
	b.PutBlob(ChunkID{7}, 70)
	if len(b.refs) == 0 {
		t.Fatal("the batch tracks no reference change")
	}
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	if n, err := reboot().GetBlob(ChunkID{7}); err != nil || n != 70 {
		t.Fatalf("blob committed with sync, after a power cut: %d, %v", n, err)
	}
}

// TestDroppedPinnedChunkStaysPending: a file chunk a version pins, not
// yet on the network, stays in the pending feed owner-less with its sealed
// size when the file drops it, also in an index reopened since the pin
// (kills `mayPin`'s answer after its scan negated, pins.go:120, and
// `p.Len+Overhead` → `-` in dropRef).
func TestDroppedPinnedChunkStaysPending(t *testing.T) {
	dir := t.TempDir()
	keys := testKeys(t, 1)
	x := openTest(t, dir, keys)
	b := x.NewBatch()
	b.PutChunk(5, 0, &ChunkRef{ID: ChunkID{8}, Version: 1, Len: 40})
	b.PutPin(ChunkID{8}, Pin{Ino: 5, Index: 0, Version: 1, Len: 40})
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	x.Close()
	x = openTest(t, dir, keys)
	b = x.NewBatch()
	b.DeleteChunk(5, 0)
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	var got []Pending
	if err := x.PendingChunks(func(p Pending) error { got = append(got, p); return nil }); err != nil {
		t.Fatal(err)
	}
	if want := (Pending{ID: ChunkID{8}, Size: 40 + vault.Overhead}); len(got) != 1 || got[0] != want {
		t.Fatalf("pending feed %+v, want [%+v]", got, want)
	}
}

// TestDeletePinKeepsFileMark: a version's pin deleted while its file still
// references the chunk leaves the file's pending mark (kills `cur != id`
// negated in DeletePin: the chunk would leave the feed and never upload).
func TestDeletePinKeepsFileMark(t *testing.T) {
	x := openTest(t, t.TempDir(), testKeys(t, 1))
	b := x.NewBatch()
	b.PutChunk(5, 0, &ChunkRef{ID: ChunkID{8}, Version: 1, Len: 40})
	pin := Pin{Ino: 5, Index: 0, Version: 1, Len: 40}
	b.PutPin(ChunkID{8}, pin)
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	b = x.NewBatch()
	b.DeletePin(ChunkID{8}, pin)
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	if ok, err := x.IsPending(ChunkID{8}); err != nil || !ok {
		t.Fatalf("the file's chunk left the pending feed with the pin: pending %v, %v", ok, err)
	}
}
