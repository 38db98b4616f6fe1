package meta

import (
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
)

// TestOpenWithAnotherKeyReleasesTheIndex: an open refused because the index
// belongs to another vault closes what it opened: the right vault's open
// then succeeds (an index left open would hold its lock; the in-memory
// file system's lock, unlike a POSIX one, is held against the same process).
func TestOpenWithAnotherKeyReleasesTheIndex(t *testing.T) {
	mem := vfs.NewMem()
	x, err := Open("/idx", testKeys(t, 1), Options{FS: mem})
	if err != nil {
		t.Fatal(err)
	}
	x.Close()
	if _, err := Open("/idx", testKeys(t, 2), Options{FS: mem}); !errors.Is(err, ErrForeignIndex) {
		t.Fatalf("open with another vault's key: %v, want ErrForeignIndex", err)
	}
	y, err := Open("/idx", testKeys(t, 1), Options{FS: mem})
	if err != nil {
		t.Fatalf("open with the right key after a refused one: %v", err)
	}
	y.Close()
}

// TestPebbleFatalStops: Pebble's fatal messages stop the process (a panic
// naming them); Pebble does not expect Fatalf to return.
func TestPebbleFatalStops(t *testing.T) {
	defer func() {
		r := recover()
		if s, ok := r.(string); !ok || !strings.Contains(s, "disk on fire 7") {
			t.Fatalf("Fatalf recovered %v, want a panic naming the message", r)
		}
	}()
	pebbleLogger{l: nil}.Fatalf("disk on fire %d", 7)
	t.Fatal("Fatalf returned")
}

// TestReadErrorsFailTheBatchOnTheirOwn: a batch whose only failing read is
// the one at hand is refused with the disk's error: the chunk-map entry an
// overwrite replaces; whether a located blob put again still has its
// record (its location, in memory, reads fine).
func TestReadErrorsFailTheBatchOnTheirOwn(t *testing.T) {
	t.Run("chunk entry", func(t *testing.T) {
		ref := ChunkRef{ID: ChunkID{1}, Version: 1, Len: 10}
		x, failing := failingIndex(t, func(b *Batch) { b.PutChunk(2, 0, &ref) })
		failing.Store(true)
		b := x.NewBatch()
		// Located first in the batch: the entry it replaces is the only read.
		b.PutLocation(ChunkID{2}, &Location{Segment: SegmentID{1}, Length: 40})
		b.PutChunk(2, 0, &ChunkRef{ID: ChunkID{2}, Version: 1, Len: 10})
		err := b.Commit(false)
		failing.Store(false)
		if !errors.Is(err, syscall.EIO) {
			t.Fatalf("an overwrite whose entry does not read: Commit %v, want EIO", err)
		}
		if got, ok, err := x.GetChunk(2, 0); err != nil || !ok || got != ref {
			t.Fatalf("the entry after a refused overwrite: %+v, %v, %v", got, ok, err)
		}
	})
	t.Run("blob record", func(t *testing.T) {
		id := ChunkID{0xb}
		// The blob record alone in a table (below the pin and pending
		// prefixes, which other reads look at); its location in memory.
		x, failing := failingIndex(t, func(b *Batch) {
			k := blobKey(id)
			if err := b.x.db.Set(k, b.x.keys.Meta.Seal(nil, []byte{blobRecV1, 0, 0, 0, 10}, k), pebble.NoSync); err != nil {
				t.Fatal(err)
			}
		})
		x.TrackLive(100)
		b := x.NewBatch()
		b.PutLocation(id, &Location{Segment: SegmentID{1}, Length: 40})
		commit(t, b)
		if p, err := x.Pinned(ChunkID{9}); err != nil || p {
			t.Fatal(p, err)
		}
		failing.Store(true)
		b = x.NewBatch()
		b.PutBlob(id, 11)
		err := b.Commit(false)
		failing.Store(false)
		if !errors.Is(err, syscall.EIO) {
			t.Fatalf("a located blob put again whose record does not read: Commit %v, want EIO", err)
		}
		if n, err := x.GetBlob(id); err != nil || n != 10 {
			t.Fatalf("the blob after a refused batch: %d, %v", n, err)
		}
	})
}

// TestLiveFeedBlobDroppedAndPutBack: a located blob dropped and put back in
// one batch is as live as before: the feed's changes cancel out.
func TestLiveFeedBlobDroppedAndPutBack(t *testing.T) {
	x := openTest(t, t.TempDir(), testKeys(t, 5))
	defer x.Close()
	seg, id := SegmentID{4}, ChunkID{0xa}
	b := x.NewBatch()
	b.PutSegment(&Segment{ID: seg, Kind: KindData, State: SegmentDurable, K: 1, N: 1})
	b.PutBlob(id, 10)
	b.PutLocation(id, &Location{Segment: seg, Length: 100})
	commit(t, b)
	x.TrackLive(100)
	b = x.NewBatch()
	b.DeleteBlob(id)
	b.PutBlob(id, 10)
	commit(t, b)
	c, complete := x.TakeLive()
	var net int64
	for _, ch := range c {
		if ch.Live {
			net += int64(ch.Bytes)
		} else {
			net -= int64(ch.Bytes)
		}
	}
	if !complete || net != 0 {
		t.Fatalf("a blob dropped and put back: net change %d (changes %+v, complete %v), want 0", net, c, complete)
	}
	if w := liveByWalk(t, x); w[seg] != 100 {
		t.Fatalf("LiveByWalk %v", w)
	}
}

// TestRebuildFeedMovesTheGeneration: a rebuilt feed is a change of the
// index: the generation moves.
func TestRebuildFeedMovesTheGeneration(t *testing.T) {
	x := openTest(t, t.TempDir(), testKeys(t, 5))
	defer x.Close()
	g := x.Generation()
	if _, err := x.RebuildFeed(); err != nil {
		t.Fatal(err)
	}
	if x.Generation() == g {
		t.Fatal("RebuildFeed left the generation as it was")
	}
}

// TestBackupDeletesRemoveTheirRecords: DeleteBackupSnapshot and
// DeleteBackupRoot remove their record and only it.
func TestBackupDeletesRemoveTheirRecords(t *testing.T) {
	x := openTest(t, t.TempDir(), testKeys(t, 5))
	defer x.Close()
	b := x.NewBatch()
	b.PutBackupSnapshot(BackupSnapID{1}, []byte("a"))
	b.PutBackupSnapshot(BackupSnapID{2}, []byte("b"))
	b.PutBackupRoot("/a")
	b.PutBackupRoot("/b")
	commit(t, b)
	b = x.NewBatch()
	b.DeleteBackupSnapshot(BackupSnapID{1})
	b.DeleteBackupRoot("/a")
	commit(t, b)
	var snaps []string
	if err := x.BackupSnapshots(func(id BackupSnapID, enc []byte) error {
		snaps = append(snaps, fmt.Sprintf("%x=%s", id[:1], enc))
		return nil
	}); err != nil || len(snaps) != 1 || snaps[0] != "02=b" {
		t.Fatalf("snapshots after deleting 01: %v, %v", snaps, err)
	}
	if roots, err := x.BackupRoots(); err != nil || len(roots) != 1 || roots[0] != "/b" {
		t.Fatalf("roots after deleting /a: %v, %v", roots, err)
	}
}

// TestOpenFailingReadReleasesTheIndex: an open that fails on a disk error
// after the format check (reading the version cache's header) returns the
// error and closes what it opened: the next open, the disk well again,
// succeeds.
func TestOpenFailingReadReleasesTheIndex(t *testing.T) {
	var failing atomic.Bool
	bad := map[string]bool{} // the table holding the header
	inj := errorfs.InjectorFunc(func(op errorfs.Op) error {
		if failing.Load() && op.Kind == errorfs.OpFileReadAt && bad[filepath.Base(op.Path)] {
			return syscall.EIO
		}
		return nil
	})
	fsys := errorfs.Wrap(vfs.NewMem(), inj)
	keys := testKeys(t, 1)
	x, err := Open("/idx", keys, Options{FS: fsys})
	if err != nil {
		t.Fatal(err)
	}
	b := x.NewBatch()
	b.SetTreeCacheBase(1)
	commit(t, b)
	if err := x.Flush(); err != nil { // the header in a table
		t.Fatal(err)
	}
	names, err := fsys.List("/idx")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if strings.HasSuffix(n, ".sst") {
			bad[n] = true
		}
	}
	if len(bad) == 0 {
		t.Fatal("no table after a flush")
	}
	// The format record again, in the log: the next open reads it from
	// there (or the table its replay makes), the header from the failing
	// table.
	fk := []byte{pFormat}
	if err := x.db.Set(fk, x.keys.Meta.Seal(nil, binary.BigEndian.AppendUint32(nil, FormatVersion), fk), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	x.Close()
	failing.Store(true)
	if _, err := Open("/idx", keys, Options{FS: fsys}); !errors.Is(err, syscall.EIO) || errors.Is(err, ErrForeignIndex) || !strings.Contains(err.Error(), "index /idx") {
		t.Fatalf("open with the version cache header unreadable: %v, want EIO from the header's read", err)
	}
	failing.Store(false)
	y, err := Open("/idx", keys, Options{FS: fsys})
	if err != nil {
		t.Fatalf("open after a failed one, the disk well: %v", err)
	}
	y.Close()
}
