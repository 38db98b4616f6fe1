package replicate

import (
	"bytes"
	"slices"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/meta"
	fnet "github.com/fincrypt/fincrypt/net"
)

// lostReplyEngine is an engine on a fake network of four nodes whose
// index of 2000 inodes is backed up by a first snapshot (several segments
// of the smallest class), with ReleaseDelay a millisecond.
func lostReplyEngine(t *testing.T) (*engine, *fakeNet) {
	t.Helper()
	old := MaxSegment
	MaxSegment = SizeClasses[0]
	t.Cleanup(func() { MaxSegment = old })
	e, f := peerEngine(t, 4, func(c *Config) { c.ReleaseDelay = time.Millisecond })
	commit(t, e.idx, func(b *meta.Batch) {
		for i := range 2000 {
			b.PutInode(&meta.Inode{Ino: uint64(1000 + i), Mode: 0o100644, Size: uint64(i)})
		}
	})
	if err := e.r.Snapshot(); err != nil {
		t.Fatal(err)
	}
	return e, f
}

// rewriteAll changes every inode lostReplyEngine wrote: the next
// snapshot's delta would pass a quarter of the base, so it is a new base,
// which supersedes the chain before it.
func rewriteAll(t *testing.T, e *engine, size uint64) {
	t.Helper()
	commit(t, e.idx, func(b *meta.Batch) {
		for i := range 2000 {
			b.PutInode(&meta.Inode{Ino: uint64(1000 + i), Mode: 0o100644, Size: size + uint64(i)})
		}
	})
}

// ids of segments.
func segIDs(segs []meta.Segment) []meta.SegmentID {
	var out []meta.SegmentID
	for _, s := range segs {
		out = append(out, s.ID)
	}
	slices.SortFunc(out, func(a, b meta.SegmentID) int { return bytes.Compare(a[:], b[:]) })
	return out
}

// sortedIDs converts and sorts the mediator's segment ids.
func sortedIDs(ids []fnet.SegmentID) []meta.SegmentID {
	var out []meta.SegmentID
	for _, id := range ids {
		out = append(out, meta.SegmentID(id))
	}
	slices.SortFunc(out, func(a, b meta.SegmentID) int { return bytes.Compare(a[:], b[:]) })
	return out
}

// restoresLive checks that the mediator's pointer names no segment it was
// asked to release (the fake mediator still serves them) and that
// `fincrypt restore` into an empty home brings back the live index's state
// (the state hash, which the restore writes for the index it imports).
func restoresLive(t *testing.T, e *engine, f *fakeNet, what string) {
	t.Helper()
	p := f.snapshotPointer()
	b, err := e.r.snap.Open(nil, p.Sealed, snapshotAD("list", f.acct, p.Seq))
	if err != nil {
		t.Fatal(err)
	}
	chain, err := decodeChain(b, p.Seq)
	if err != nil {
		t.Fatal(err)
	}
	list := chain.segments() // the base's and every delta's
	for _, id := range f.released() {
		if slices.ContainsFunc(list, func(s snapSegment) bool { return s.id == meta.SegmentID(id) }) {
			t.Fatalf("%s: segment %s of the mediator's pointer released", what, meta.SegmentID(id))
		}
	}
	idx, _, _, err := restoreAccount(t, f, false)
	if err != nil {
		t.Fatalf("%s: restore: %v", what, err)
	}
	got, err := idx.GetRepl("snapshot_hash")
	if err != nil {
		t.Fatal(err)
	}
	kf, err := e.r.readKeyFile()
	if err != nil {
		t.Fatal(err)
	}
	want, err := stateHashWalk(e.idx, kf, e.idx.Export)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: the restored index is not the live one", what)
	}
}

// TestSnapshotReplyLost: the mediator stores a snapshot's pointer and the
// reply is lost (the stream closes, as when a connection drops); the
// client's second try hears "not newer", a refusal. The engine asks which pointer the mediator holds,
// finds its own and records the snapshot as stored: its segments alive,
// the superseded snapshot's dead, the index covered (a snapshot now stores
// nothing), and a maintenance pass releases none of the pointer's
// segments; a restore from the mediator's pointer brings the live index
// back. Before, the snapshot failed and the segments of the account's
// only restorable snapshot were recorded dead, to be released.
func TestSnapshotReplyLost(t *testing.T) {
	e, f := lostReplyEngine(t)
	first, _ := snapshotSegments(t, e.idx)
	rewriteAll(t, e, 5000) // a new base: it supersedes the first
	nc := f.committed()
	f.mu.Lock()
	f.lostPointerReplies = 1
	f.mu.Unlock()
	if err := e.r.Snapshot(); err != nil {
		t.Fatalf("a snapshot whose pointer the mediator stored, its reply lost: %v", err)
	}
	p := f.snapshotPointer()
	named := sortedIDs(f.committedSince(nc))
	live, dead := snapshotSegments(t, e.idx)
	if len(named) == 0 || !slices.Equal(segIDs(live), named) || !slices.Equal(segIDs(dead), segIDs(first)) {
		t.Fatalf("after a pointer stored with its reply lost: live %v, dead %v; want live %v (the pointer's), dead %v", segIDs(live), segIDs(dead), named, segIDs(first))
	}
	if covered, _, err := e.r.protection(); err != nil || !covered {
		t.Fatalf("the index the stored pointer holds: covered %v (%v)", covered, err)
	}
	if err := e.r.Snapshot(); err != nil || f.snapshotPointer().Seq != p.Seq {
		t.Fatalf("a snapshot of the state the stored pointer holds stored another (%v)", err)
	}
	if err := e.r.maintain(); err != nil {
		t.Fatal(err)
	}
	for _, id := range f.released() {
		if slices.Contains(named, meta.SegmentID(id)) {
			t.Fatalf("segment %s of the mediator's pointer released", meta.SegmentID(id))
		}
	}
	restoresLive(t, e, f, "after the reply was lost")
}

// TestSnapshotReplyLostOutcomeUnknown: the pointer is stored, its reply
// is lost and so is the answer to the question which pointer the mediator
// holds: the snapshot fails, and its segments stay alive (named by the
// stored pointer, as far as the engine knows), not dead. The next
// snapshot supersedes them and a restore brings the index back.
func TestSnapshotReplyLostOutcomeUnknown(t *testing.T) {
	e, f := lostReplyEngine(t)
	commit(t, e.idx, func(b *meta.Batch) { b.PutInode(&meta.Inode{Ino: 77, Mode: 0o100644, Size: 7}) })
	nc := f.committed()
	f.mu.Lock()
	f.lostPointerReplies, f.lostPointerGets = 1, 2 // (each get is tried twice)
	f.mu.Unlock()
	if err := e.r.Snapshot(); err == nil {
		t.Fatal("a snapshot whose outcome the mediator did not say returned no error")
	}
	named := sortedIDs(f.committedSince(nc))
	live, _ := snapshotSegments(t, e.idx)
	for _, id := range named {
		if !slices.Contains(segIDs(live), id) {
			t.Fatalf("segment %s of the pointer the mediator stored (outcome unknown to the engine) not alive", id)
		}
	}
	if err := e.r.maintain(); err != nil {
		t.Fatal(err)
	}
	restoresLive(t, e, f, "after the outcome was lost")
	commit(t, e.idx, func(b *meta.Batch) { b.PutInode(&meta.Inode{Ino: 78, Mode: 0o100644, Size: 8}) })
	if err := e.r.Snapshot(); err != nil {
		t.Fatal(err)
	}
	_, dead := snapshotSegments(t, e.idx)
	for _, id := range named {
		if !slices.Contains(segIDs(dead), id) {
			t.Fatalf("segment %s of a superseded snapshot not dead after the next snapshot", id)
		}
	}
	restoresLive(t, e, f, "after the next snapshot")
}

// TestReleaseKeepsTheStoredPointersSegments: whatever the index says, a
// maintenance pass never releases a segment that the mediator's pointer
// names. The index here records the stored snapshot's segments dead an
// hour before the newest snapshot, as a clock stepped back between a
// snapshot and the next one would leave them; the pass keeps every one,
// records it alive again, and a restore works. Before, the pass released
// them all and the account had no restorable snapshot.
func TestReleaseKeepsTheStoredPointersSegments(t *testing.T) {
	e, f := lostReplyEngine(t)
	live, _ := snapshotSegments(t, e.idx)
	if len(live) < 2 {
		t.Fatalf("%d snapshot segments: the test wants several", len(live))
	}
	long := time.Now().Add(-time.Hour).UnixNano()
	recordDead := func() { // the pointer's segments, dead an hour ago
		commit(t, e.idx, func(b *meta.Batch) {
			for _, s := range live {
				s.DeadSince = long
				b.PutSegment(&s)
			}
		})
	}
	recordDead()
	if err := e.r.maintain(); err != nil {
		t.Fatal(err)
	}
	if got := f.released(); len(got) != 0 {
		t.Fatalf("a maintenance pass released %v, named by the mediator's pointer", got)
	}
	after, dead := snapshotSegments(t, e.idx)
	if !slices.Equal(segIDs(after), segIDs(live)) || len(dead) != 0 {
		t.Fatalf("the stored pointer's segments after the pass: live %v, dead %v; want %v alive", segIDs(after), segIDs(dead), segIDs(live))
	}
	restoresLive(t, e, f, "after the maintenance pass")

	// A superseded snapshot's segments are still released (a new base
	// supersedes the chain before it).
	rewriteAll(t, e, 5000)
	if err := e.r.Snapshot(); err != nil {
		t.Fatal(err)
	}
	recordDead()
	if err := e.r.maintain(); err != nil {
		t.Fatal(err)
	}
	if got := sortedIDs(f.released()); !slices.Equal(got, segIDs(live)) {
		t.Fatalf("released %v after a newer snapshot, want the superseded %v", got, segIDs(live))
	}
	restoresLive(t, e, f, "after the superseded snapshot was released")
}

// TestSnapshotAfterClockSetBack: the mediator holds a pointer numbered an
// hour ahead of the engine's clock (stored before the clock was set back,
// or by the machine a vault was restored from, whose clock ran ahead). The
// first snapshot after a change is refused as not newer; the engine learns
// the number the mediator holds and the next snapshot is stored, numbered
// past it, and restores the live index. Before, every snapshot was refused
// until the clock caught up: an hour with nothing restorable.
func TestSnapshotAfterClockSetBack(t *testing.T) {
	e, f := lostReplyEngine(t)
	id, err := AccountIdentity(e.v)
	if err != nil {
		t.Fatal(err)
	}
	ahead := *f.snapshotPointer()
	ahead.Seq += uint64(time.Hour)
	ahead.Sign(id)
	f.mu.Lock()
	f.pointer = &ahead
	f.mu.Unlock()
	commit(t, e.idx, func(b *meta.Batch) { b.PutInode(&meta.Inode{Ino: 77, Mode: 0o100644, Size: 7}) })
	if err := e.r.Snapshot(); err == nil {
		t.Fatal("a snapshot numbered below the mediator's pointer was stored")
	}
	if err := e.r.Snapshot(); err != nil {
		t.Fatalf("the snapshot after the refusal: %v", err)
	}
	if p := f.snapshotPointer(); p.Seq <= ahead.Seq {
		t.Fatalf("pointer %d stored, not past the one held (%d)", p.Seq, ahead.Seq)
	}
	restoresLive(t, e, f, "after the clock was set back")
}
