package meta

import (
	"errors"
	"testing"

	"github.com/cockroachdb/pebble/v2"

	"github.com/fincrypt/fincrypt/vault"
)

// TestBackupTreesAndSnapshots: the backup package's records read back:
// a tree by id (and HasTree says which exist), every tree id listed once,
// every snapshot listed with its bytes; a tree or snapshot key of the
// wrong length is ErrCorrupt to the listing.
func TestBackupTreesAndSnapshots(t *testing.T) {
	x := openTest(t, t.TempDir(), testKeys(t, 3))
	defer x.Close()
	b := x.NewBatch()
	b.PutTree(TreeID{1}, []byte("one"))
	b.PutTree(TreeID{2}, []byte("two"))
	b.PutBackupSnapshot(BackupSnapID{1}, []byte("s1"))
	b.PutBackupSnapshot(BackupSnapID{2}, []byte("s2"))
	commit(t, b)
	if v, err := x.GetTree(TreeID{1}); err != nil || string(v) != "one" {
		t.Fatalf("GetTree: %q, %v", v, err)
	}
	if _, err := x.GetTree(TreeID{3}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetTree of a tree never written: %v", err)
	}
	for id, want := range map[TreeID]bool{{1}: true, {2}: true, {3}: false} {
		if ok, err := x.HasTree(id); err != nil || ok != want {
			t.Fatalf("HasTree(%x): %v, %v; want %v", id[:1], ok, err, want)
		}
	}
	var trees []TreeID
	if err := x.Trees(func(id TreeID) error { trees = append(trees, id); return nil }); err != nil ||
		len(trees) != 2 || trees[0] != (TreeID{1}) || trees[1] != (TreeID{2}) {
		t.Fatalf("Trees: %x, %v", trees, err)
	}
	snaps := map[BackupSnapID]string{}
	if err := x.BackupSnapshots(func(id BackupSnapID, enc []byte) error { snaps[id] = string(enc); return nil }); err != nil ||
		len(snaps) != 2 || snaps[BackupSnapID{1}] != "s1" || snaps[BackupSnapID{2}] != "s2" {
		t.Fatalf("BackupSnapshots: %v, %v", snaps, err)
	}
	seal := func(key []byte) {
		if err := x.db.Set(key, x.keys.Meta.Seal(nil, []byte("x"), key), pebble.NoSync); err != nil {
			t.Fatal(err)
		}
	}
	seal(append(treeKey(TreeID{4}), 0))
	seal(append(backupSnapKey(BackupSnapID{4}), 0))
	if err := x.Trees(func(TreeID) error { return nil }); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Trees over a key one byte long: %v, want ErrCorrupt", err)
	}
	if err := x.BackupSnapshots(func(BackupSnapID, []byte) error { return nil }); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("BackupSnapshots over a key one byte long: %v, want ErrCorrupt", err)
	}
}

// TestRebuildFeedKeepsOwnerlessMarks: RebuildFeed keeps an owner-less mark
// of a chunk no record names and no location places (a repacked chunk the
// engine marked again), drops one whose chunk is located, and counts what
// it wrote.
func TestRebuildFeedKeepsOwnerlessMarks(t *testing.T) {
	x := openTest(t, t.TempDir(), testKeys(t, 3))
	defer x.Close()
	b := x.NewBatch()
	b.MarkPending(ChunkID{7}, 0, 0, 100)
	b.PutBlob(ChunkID{1}, 10)
	commit(t, b)
	b = x.NewBatch()
	// Located below the batch's own bookkeeping, so the mark stays.
	if err := b.b.Set(locationKey(ChunkID{8}), x.keys.Meta.Seal(nil, (&Location{Length: 5}).encode(), locationKey(ChunkID{8})), nil); err != nil {
		t.Fatal(err)
	}
	b.markPending(ChunkID{8}, 0, 0, 50)
	commit(t, b)
	n, err := x.RebuildFeed()
	if err != nil {
		t.Fatal(err)
	}
	got := map[ChunkID]Pending{}
	if err := x.PendingChunks(func(p Pending) error { got[p.ID] = p; return nil }); err != nil {
		t.Fatal(err)
	}
	want := map[ChunkID]Pending{
		{1}: {ID: ChunkID{1}, Size: 10 + vault.Overhead},
		{7}: {ID: ChunkID{7}, Size: 100},
	}
	if len(got) != len(want) || got[ChunkID{1}] != want[ChunkID{1}] || got[ChunkID{7}] != want[ChunkID{7}] {
		t.Fatalf("feed after the rebuild %v, want %v", got, want)
	}
	if n != len(got) {
		t.Fatalf("RebuildFeed counts %d records, the feed holds %d", n, len(got))
	}
}

// TestGetPin: GetPin gives back the pin written, ErrNotFound for a chunk
// not pinned, and ErrCorrupt for a pin record that does not decode.
func TestGetPin(t *testing.T) {
	x := openTest(t, t.TempDir(), testKeys(t, 3))
	defer x.Close()
	p := Pin{Ino: 5, Index: 6, Version: 7, Len: 8, Offset: 9}
	b := x.NewBatch()
	b.PutPin(ChunkID{1}, p)
	commit(t, b)
	if got, err := x.GetPin(ChunkID{1}); err != nil || got != p {
		t.Fatalf("GetPin: %+v, %v; want %+v", got, err, p)
	}
	if p, err := x.Pinned(ChunkID{1}); err != nil || !p {
		t.Fatalf("Pinned of a pinned chunk: %v, %v", p, err)
	}
	if _, err := x.GetPin(ChunkID{2}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetPin of a chunk not pinned: %v", err)
	}
	key := pinKey(ChunkID{3})
	if err := x.db.Set(key, x.keys.Meta.Seal(nil, []byte{1, 2}, key), pebble.NoSync); err != nil {
		t.Fatal(err)
	}
	if _, err := x.GetPin(ChunkID{3}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("GetPin of a pin that does not decode: %v, want ErrCorrupt", err)
	}
}

// TestSyncedCommitWithTrackedRefs: with the RefSum tracked, a batch of
// chunk references commits without a sync under the RefSum's lock and
// syncs after it: Commit(true) returns only once the batch is durable (a
// power cut then keeps it), and moves the generation. (A failing sync is
// fatal to Pebble: it panics, so there is no error to return.)
func TestSyncedCommitWithTrackedRefs(t *testing.T) {
	x, reboot := crashableIndex(t)
	start, err := x.WalkRefSum()
	if err != nil {
		t.Fatal(err)
	}
	x.TrackRefs(start)
	ref := ChunkRef{ID: ChunkID{1}, Version: 1, Len: 10}
	g := x.Generation()
	b := x.NewBatch()
	b.PutChunk(2, 0, &ref)
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	if x.Generation() == g {
		t.Fatal("a synced commit of chunk references left the generation as it was")
	}
	y := reboot()
	got, ok, err := y.GetChunk(2, 0)
	if err != nil || !ok || got != ref {
		t.Fatalf("after a power cut the synced chunk reference reads %+v, %v, %v", got, ok, err)
	}
}
