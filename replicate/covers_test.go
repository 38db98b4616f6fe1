package replicate

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/meta"
	fnet "github.com/fincrypt/fincrypt/net"
	"github.com/fincrypt/fincrypt/vault"
)

// TestReleaseWaitsForASnapshotThatCoversTheDeath: a data segment that
// dies after a snapshot's export was read but before its pointer is stored
// (its file drops its chunk and maintenance, beside the snapshot, records
// it dead) is still live in that snapshot: a restore from it finds the
// file's chunk in the segment. Maintenance keeps the segment until a
// snapshot whose export saw the death is stored, then releases it. Before,
// it compared the death with the time the snapshot was stored, released
// the segment at once, and the restorable snapshot's file lost its data.
func TestReleaseWaitsForASnapshotThatCoversTheDeath(t *testing.T) {
	const delay = time.Millisecond
	e, f := peerEngine(t, 4, func(c *Config) { c.ReleaseDelay = delay })
	class := SizeClasses[0]
	x := meta.SegmentID{0x42}
	ids := putDataSegment(t, e, f, x, segmentData(3, class), class, []meta.Location{{Offset: 0, Length: 1000}})
	const ino = 500
	commit(t, e.idx, func(b *meta.Batch) {
		b.PutInode(&meta.Inode{Ino: ino, Mode: 0o100644, Size: 1000 - vault.Overhead})
		b.PutChunk(ino, 0, &meta.ChunkRef{ID: ids[0], Version: 1, Len: 1000 - vault.Overhead})
	})
	if err := e.r.Snapshot(); err != nil {
		t.Fatal(err)
	}

	// The next snapshot's export holds the file; before its pointer is
	// stored, the file drops the chunk and the segment is recorded dead.
	commit(t, e.idx, func(b *meta.Batch) { b.PutInode(&meta.Inode{Ino: 77, Mode: 0o100644, Size: 7}) })
	var died time.Time
	var hookErr error
	f.mu.Lock()
	f.onPointer = func() {
		f.onPointer = nil
		s, err := e.idx.GetSegment(x)
		if err != nil {
			hookErr = err
			return
		}
		died = time.Now()
		s.DeadSince = died.UnixNano()
		b := e.idx.NewBatch()
		b.DeleteChunk(ino, 0)
		b.PutSegment(&s)
		hookErr = b.Commit(true)
	}
	f.mu.Unlock()
	if err := e.r.Snapshot(); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock() // (written by the mediator's handler, under mu)
	dead, err := died, hookErr
	f.mu.Unlock()
	if err != nil || dead.IsZero() {
		t.Fatalf("the death beside the snapshot: %v (recorded %v)", err, !dead.IsZero())
	}
	for time.Since(dead) <= delay {
		time.Sleep(time.Millisecond) // the release delay passes
	}
	if err := e.r.maintain(); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(f.released(), fnet.SegmentID(x)) {
		t.Fatal("a segment that died after the stored snapshot's export was read was released")
	}
	if _, err := e.idx.GetLocation(ids[0]); err != nil {
		t.Fatalf("the chunk's location: %v", err)
	}
	// The stored snapshot needs it: its file's chunk lies in the segment.
	restored := restoreIndex(t, f)
	ref, ok, err := restored.GetChunk(ino, 0)
	if err != nil || !ok || ref.ID != ids[0] {
		t.Fatalf("the restored file's chunk: %v %v %v, want %s", ref.ID, ok, err, ids[0])
	}
	if l, err := restored.GetLocation(ids[0]); err != nil || l.Segment != x {
		t.Fatalf("the restored chunk's location: %v %v, want segment %s", l.Segment, err, x)
	}

	// A snapshot whose export saw the death supersedes it: released.
	if err := e.r.Snapshot(); err != nil {
		t.Fatal(err)
	}
	if err := e.r.maintain(); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(f.released(), fnet.SegmentID(x)) {
		t.Fatal("the dead segment not released after a snapshot that covers its death")
	}
	if _, err := e.idx.GetSegment(x); !errors.Is(err, meta.ErrNotFound) {
		t.Fatalf("the released segment's record: %v, want gone", err)
	}
	if err := e.r.Snapshot(); err != nil {
		t.Fatal(err)
	}
	restoresLive(t, e, f, "after the release")
}

// TestMarkDeadWaitsForASnapshot: maintenance records a data segment dead
// only while no snapshot is being taken (it holds snapMu from reading the
// time to committing), so a snapshot's export read after the death's time
// sees the death. Here a snapshot holds snapMu while a pass runs: the
// death is recorded after it lets go, with a later time. (On a fast
// machine the pass has long finished within the second the test holds the
// lock; the test passes whatever the timing when the pass waits.)
func TestMarkDeadWaitsForASnapshot(t *testing.T) {
	r := offlineReplicator(t, nil)
	x := meta.SegmentID{7}
	commit(t, r.idx, func(b *meta.Batch) {
		b.PutSegment(&meta.Segment{ID: x, Kind: meta.KindData, State: meta.SegmentDurable, K: 2, N: 4, Healthy: 4, Class: 4096, Used: 1000})
	})
	r.snapMu.Lock()
	done := make(chan error, 1)
	go func() { done <- r.maintainWalk(r.idx.Generation(), time.Time{}) }()
	select {
	case err := <-done:
		r.snapMu.Unlock()
		s, _ := r.idx.GetSegment(x)
		t.Fatalf("a pass finished (%v) while a snapshot was being taken, the segment dead since %d", err, s.DeadSince)
	case <-time.After(time.Second):
	}
	if s, err := r.idx.GetSegment(x); err != nil || s.DeadSince != 0 {
		t.Fatalf("the segment while a snapshot is taken: dead since %d (%v), want alive", s.DeadSince, err)
	}
	exportAt := time.Now() // the latest a snapshot holding the lock reads its export
	r.snapMu.Unlock()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	s, err := r.idx.GetSegment(x)
	if err != nil || s.DeadSince <= exportAt.UnixNano() {
		t.Fatalf("dead since %d (%v), want after %d, when the snapshot let go", s.DeadSince, err, exportAt.UnixNano())
	}
}

// restoreIndex restores the account's stored snapshot into a new home and
// opens its index.
func restoreIndex(t *testing.T, f *fakeNet) *meta.Index {
	t.Helper()
	idx, _, _, err := restoreAccount(t, f, false)
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	return idx
}

// restoreAccount restores the account's stored snapshot into a new home
// (with accept as RestoreOptions.AcceptMismatch) and opens the restored
// index (closed at the test's end) and key file. A restore that fails must
// leave no key file behind.
func restoreAccount(t *testing.T, f *fakeNet, accept bool) (*meta.Index, []byte, *RestoreResult, error) {
	t.Helper()
	home := filepath.Join(t.TempDir(), "restored")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := Restore(ctx, RestoreOptions{Home: home, Mediator: f.med.Address(), Account: f.acct, Password: testPassword, AcceptMismatch: accept})
	if err != nil {
		if _, serr := os.Stat(filepath.Join(home, vault.KeyFileName)); serr == nil {
			t.Fatalf("a restore that failed (%v) left a key file in the home", err)
		}
		return nil, nil, nil, err
	}
	v, err := vault.Open(home, testPassword, vault.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	idx, err := meta.Open(v.IndexDir(), v.Keys, meta.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { idx.Close() })
	kf, err := os.ReadFile(filepath.Join(home, vault.KeyFileName))
	if err != nil {
		t.Fatal(err)
	}
	return idx, kf, res, nil
}

// TestDeadSegmentWithARevivedBlobKept: a backup blob dropped (its data
// segment recorded dead) and stored again before the release (a backup of
// the same content: the index keeps its location, in the dead segment)
// makes the segment live again: maintenance records it alive and releases
// nothing. Before, it released the segment, and the blob's location named
// a released segment: never uploaded again, lost to a restore.
func TestDeadSegmentWithARevivedBlobKept(t *testing.T) {
	e, f := peerEngine(t, 4, func(c *Config) { c.ReleaseDelay = time.Millisecond })
	class := SizeClasses[0]
	x := meta.SegmentID{0x43}
	ids := putDataSegment(t, e, f, x, segmentData(4, class), class, []meta.Location{{Offset: 0, Length: 1000}})
	commit(t, e.idx, func(b *meta.Batch) { b.PutBlob(ids[0], 1000-vault.Overhead) })
	commit(t, e.idx, func(b *meta.Batch) { b.DeleteBlob(ids[0]) })
	if err := e.r.maintain(); err != nil {
		t.Fatal(err)
	}
	s, err := e.idx.GetSegment(x)
	if err != nil || s.DeadSince == 0 {
		t.Fatalf("the segment of a dropped blob: dead since %d (%v), want dead", s.DeadSince, err)
	}
	commit(t, e.idx, func(b *meta.Batch) { b.PutBlob(ids[0], 1000-vault.Overhead) })
	for time.Since(time.Unix(0, s.DeadSince)) <= time.Millisecond {
		time.Sleep(time.Millisecond) // the release delay passes
	}
	e.r.mu.Lock()
	e.r.snapCovers = time.Now() // a snapshot covers the death
	e.r.mu.Unlock()
	if err := e.r.maintain(); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(f.released(), fnet.SegmentID(x)) {
		t.Fatal("a dead segment released though a blob stored again lies in it")
	}
	if s, err := e.idx.GetSegment(x); err != nil || s.DeadSince != 0 {
		t.Fatalf("the segment of the blob stored again: dead since %d (%v), want alive", s.DeadSince, err)
	}
	if l, err := e.idx.GetLocation(ids[0]); err != nil || l.Segment != x {
		t.Fatalf("the blob's location: %v %v", l.Segment, err)
	}
}
