package meta

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
)

// locateBatch commits, in one batch, n new chunks of inode ino each put and
// located at once in segment seg (n live changes for the feed).
func locateBatch(t *testing.T, x *Index, ino uint64, first byte, n int, seg SegmentID) {
	t.Helper()
	b := x.NewBatch()
	for i := range n {
		id := ChunkID{0x10, first + byte(i)}
		b.PutChunk(ino, uint64(first)+uint64(i), &ChunkRef{ID: id, Version: 1, Len: 10})
		b.PutLocation(id, &Location{Segment: seg, Length: 38})
	}
	if err := b.Commit(false); err != nil {
		t.Fatal(err)
	}
}

// TestLiveFeedKeepsUpToItsBound: the live-bytes feed keeps exactly max
// changes between two takes (the bound is inclusive), and reports an
// overflow only past it.
func TestLiveFeedKeepsUpToItsBound(t *testing.T) {
	x := openTest(t, t.TempDir(), testKeys(t, 5))
	defer x.Close()
	seg := SegmentID{9}
	x.TrackLive(3)
	locateBatch(t, x, 2, 0, 3, seg)
	c, complete := x.TakeLive()
	if !complete || len(c) != 3 {
		t.Fatalf("three changes under a bound of three: %d kept, complete %v", len(c), complete)
	}
	for _, ch := range c {
		if ch.Segment != seg || ch.Bytes != 38 || !ch.Live {
			t.Fatalf("change %+v, want 38 live bytes of segment %s", ch, seg)
		}
	}
	locateBatch(t, x, 2, 3, 2, seg)
	locateBatch(t, x, 2, 5, 1, seg)
	if c, complete := x.TakeLive(); !complete || len(c) != 3 {
		t.Fatalf("2+1 changes under a bound of three: %d kept, complete %v", len(c), complete)
	}
	locateBatch(t, x, 2, 6, 2, seg)
	locateBatch(t, x, 2, 8, 2, seg)
	if c, complete := x.TakeLive(); complete || len(c) != 0 {
		t.Fatalf("2+2 changes past a bound of three: %d kept, complete %v", len(c), complete)
	}
}

// TestLiveByWalkCountsDataSegments: LiveByWalk lists every data segment,
// with 0 when nothing in it is live, and no snapshot segment; a segment's
// count is the length of its located chunks that something references.
func TestLiveByWalkCountsDataSegments(t *testing.T) {
	x := openTest(t, t.TempDir(), testKeys(t, 5))
	defer x.Close()
	live, dead, snap := SegmentID{1}, SegmentID{2}, SegmentID{3}
	b := x.NewBatch()
	b.PutSegment(&Segment{ID: live, Kind: KindData, State: SegmentDurable, K: 1, N: 1})
	b.PutSegment(&Segment{ID: dead, Kind: KindData, State: SegmentDurable, K: 1, N: 1})
	b.PutSegment(&Segment{ID: snap, Kind: KindSnapshot, State: SegmentDurable, K: 1, N: 1})
	b.PutChunk(2, 0, &ChunkRef{ID: ChunkID{1}, Version: 1, Len: 10})
	b.PutLocation(ChunkID{1}, &Location{Segment: live, Length: 100})
	b.PutBlob(ChunkID{2}, 5)
	b.PutLocation(ChunkID{2}, &Location{Segment: live, Offset: 100, Length: 20})
	b.PutLocation(ChunkID{3}, &Location{Segment: live, Offset: 120, Length: 1000}) // referenced by nothing
	b.PutLocation(ChunkID{4}, &Location{Segment: dead, Length: 7})                 // referenced by nothing
	if err := b.Commit(false); err != nil {
		t.Fatal(err)
	}
	got := liveByWalk(t, x)
	want := map[SegmentID]uint64{live: 120, dead: 0}
	if len(got) != len(want) || got[live] != 120 {
		t.Fatalf("LiveByWalk %v, want %v", got, want)
	}
	if n, ok := got[dead]; !ok || n != 0 {
		t.Fatalf("LiveByWalk %v: the dead data segment not listed with 0", got)
	}
	if _, ok := got[snap]; ok {
		t.Fatalf("LiveByWalk %v lists the snapshot segment", got)
	}
}

// failingIndex opens an index whose table reads fail with EIO while
// *failing is set (a disk that returns errors), after flushing what it
// holds into a table. The block cache is not warm: a read of a key written
// before the flush reaches the disk.
func failingIndex(t *testing.T, fill func(b *Batch)) (x *Index, failing *atomic.Bool) {
	t.Helper()
	failing = new(atomic.Bool)
	inj := errorfs.InjectorFunc(func(op errorfs.Op) error {
		if failing.Load() && op.Kind == errorfs.OpFileReadAt && strings.HasSuffix(op.Path, ".sst") {
			return syscall.EIO
		}
		return nil
	})
	x, err := Open(filepath.Join("/", "idx"), testKeys(t, 6), Options{FS: errorfs.Wrap(vfs.NewMem(), inj)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		failing.Store(false)
		x.Close()
	})
	b := x.NewBatch()
	fill(b)
	if err := b.Commit(false); err != nil {
		t.Fatal(err)
	}
	if err := x.Flush(); err != nil {
		t.Fatal(err)
	}
	return x, failing
}

// TestBatchReadErrorsFailTheCommit: while the live feed is tracked, a batch
// that cannot read what it must (whether a chunk it locates is pending,
// where a chunk that lost its last reference was, whether a blob put again
// is located) is not applied: Commit returns the disk's error, and once
// the disk reads again the index holds nothing of the batch. Each case on
// an index of its own, whose table no read has brought into the cache.
func TestBatchReadErrorsFailTheCommit(t *testing.T) {
	pending, located := ChunkID{0xa1}, ChunkID{0xa2}
	seg := SegmentID{7}
	steps := []struct {
		what  string
		fn    func(b *Batch)
		check func(x *Index) error
	}{
		{"locating a pending chunk", func(b *Batch) {
			b.PutLocation(pending, &Location{Segment: seg, Offset: 40, Length: 40})
		}, func(x *Index) error {
			if _, err := x.GetLocation(pending); !errors.Is(err, ErrNotFound) {
				return fmt.Errorf("the chunk's location: %v", err)
			}
			return nil
		}},
		{"dropping a located blob", func(b *Batch) { b.DeleteBlob(located) }, func(x *Index) error {
			_, err := x.GetBlob(located)
			return err
		}},
		{"putting a located blob again", func(b *Batch) { b.PutBlob(located, 11) }, func(x *Index) error {
			if n, err := x.GetBlob(located); err != nil || n != 10 {
				return fmt.Errorf("the blob reads %d, %v; want 10", n, err)
			}
			return nil
		}},
	}
	for _, st := range steps {
		x, failing := failingIndex(t, func(b *Batch) {
			b.PutChunk(2, 0, &ChunkRef{ID: pending, Version: 1, Len: 10})
			b.PutBlob(located, 10)
			b.PutLocation(located, &Location{Segment: seg, Length: 40})
		})
		x.TrackLive(100)
		failing.Store(true)
		b := x.NewBatch()
		st.fn(b)
		err := b.Commit(false)
		failing.Store(false)
		if !errors.Is(err, syscall.EIO) {
			t.Fatalf("%s with failing reads: Commit %v, want EIO", st.what, err)
		}
		if err := st.check(x); err != nil {
			t.Fatalf("%s: a failed batch was applied: %v", st.what, err)
		}
		if c, complete := x.TakeLive(); !complete || len(c) != 0 {
			t.Fatalf("%s: a failed batch reported %d live changes (complete %v)", st.what, len(c), complete)
		}
	}
}

// TestLiveFeedFollowsABatchsOwnChanges: within one batch the feed sees the
// batch's own earlier changes: a located blob dropped, put again and
// dropped again has died once, net (the feed, applied to a count, agrees
// with a walk); a blob whose location the batch deleted first reports no
// death (its bytes are no longer in the segment as of the batch).
func TestLiveFeedFollowsABatchsOwnChanges(t *testing.T) {
	x := openTest(t, t.TempDir(), testKeys(t, 5))
	defer x.Close()
	seg := SegmentID{4}
	a, c := ChunkID{0xa}, ChunkID{0xc}
	b := x.NewBatch()
	b.PutSegment(&Segment{ID: seg, Kind: KindData, State: SegmentDurable, K: 1, N: 1})
	for i, id := range []ChunkID{a, c} {
		b.PutBlob(id, 10)
		b.PutLocation(id, &Location{Segment: seg, Offset: uint32(i) * 100, Length: 100})
	}
	commit(t, b)
	x.TrackLive(100)
	count := liveByWalk(t, x)
	if count[seg] != 200 {
		t.Fatalf("LiveByWalk %v, want 200 live bytes in %s", count, seg)
	}
	b = x.NewBatch()
	b.DeleteBlob(a)
	b.PutBlob(a, 10)
	b.DeleteBlob(a)
	commit(t, b)
	changes, complete := x.TakeLive()
	if !complete {
		t.Fatal("the feed overflowed")
	}
	for _, ch := range changes {
		if ch.Live {
			count[ch.Segment] += uint64(ch.Bytes)
		} else {
			count[ch.Segment] -= uint64(ch.Bytes)
		}
	}
	if w := liveByWalk(t, x); count[seg] != w[seg] {
		t.Fatalf("a blob dropped, put again and dropped in one batch: the feed counts %d live bytes, a walk %d (changes %+v)", count[seg], w[seg], changes)
	}
	b = x.NewBatch()
	b.DeleteLocation(c)
	b.DeleteBlob(c)
	commit(t, b)
	if changes, complete := x.TakeLive(); !complete || len(changes) != 0 {
		t.Fatalf("a blob dropped after its location in the same batch: changes %+v (complete %v), want none", changes, complete)
	}
}
