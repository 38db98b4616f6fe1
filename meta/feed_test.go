package meta

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/fincrypt/fincrypt/vault"
)

// feedOf reads the pending feed into a map.
func feedOf(t *testing.T, x *Index) map[ChunkID]Pending {
	t.Helper()
	out := map[ChunkID]Pending{}
	if err := x.PendingChunks(func(p Pending) error { out[p.ID] = p; return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// assertFeedExact compares the feed with a full walk of chunk references and
// locations, entry by entry (owner, index and size too), plus the owner-less
// marks the test made (blobs) that have no location.
func assertFeedExact(t *testing.T, x *Index, blobs map[ChunkID]uint32, when string) {
	t.Helper()
	want, err := x.FeedFromWalk()
	if err != nil {
		t.Fatal(err)
	}
	for id, size := range blobs {
		if ok, err := x.has(locationKey(id)); err != nil {
			t.Fatal(err)
		} else if !ok {
			want[id] = Pending{ID: id, Size: size}
		}
	}
	got := feedOf(t, x)
	for id, w := range want {
		if g, ok := got[id]; !ok {
			t.Fatalf("%s: chunk %s is pending (a walk says) but not in the feed", when, id)
		} else if g != w {
			t.Fatalf("%s: feed entry %+v, walk says %+v", when, g, w)
		}
	}
	for id := range got {
		if _, ok := want[id]; !ok {
			t.Fatalf("%s: feed holds chunk %s, which is located or unreferenced", when, id)
		}
	}
}

// TestFeedExact drives random batches of what the file system and the
// replication engine do (writes, rewrites, truncates, unlinks, uploads,
// repacks, segment releases, blobs) and after each one compares the pending
// feed with a full walk; then crashes the file system at a random point
// (unsynced writes lost or kept) and compares again after reopening.
func TestFeedExact(t *testing.T) {
	for seed := uint64(1); seed <= 6; seed++ {
		feedRun(t, seed)
	}
}

func feedRun(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 11))
	keys := testKeys(t, 3)
	mem := vfs.NewCrashableMem()
	x, err := Open("idx", keys, Options{FS: mem})
	if err != nil {
		t.Fatal(err)
	}
	newID := func() ChunkID {
		var id ChunkID
		for i := range id {
			id[i] = byte(rng.IntN(256))
		}
		return id
	}
	blobs := map[ChunkID]uint32{}
	const files = 8
	var crashAt = 20 + rng.IntN(60)
	for step := 0; step < 100; step++ {
		b := x.NewBatch()
		// Several operations per batch, so that later ones see earlier ones.
		for range 1 + rng.IntN(4) {
			ino := uint64(2 + rng.IntN(files))
			switch op := rng.IntN(10); {
			case op < 4: // write or overwrite a chunk
				b.PutChunk(ino, uint64(rng.IntN(4)), &ChunkRef{ID: newID(), Version: 1, Len: uint32(1 + rng.IntN(4096))})
			case op == 4: // truncate: drop the chunks from some index on
				from := uint64(rng.IntN(4))
				x.Chunks(ino, from, func(idx uint64, _ ChunkRef) error { b.DeleteChunk(ino, idx); return nil })
			case op == 5: // unlink: drop all chunks
				x.Chunks(ino, 0, func(idx uint64, _ ChunkRef) error { b.DeleteChunk(ino, idx); return nil })
			case op < 8: // upload some pending chunks into a segment
				var seg SegmentID
				copy(seg[:], newID().String())
				x.PendingChunks(func(p Pending) error {
					if rng.IntN(2) == 0 {
						b.PutLocation(p.ID, &Location{Segment: seg, Length: p.Size})
					}
					return nil
				})
			case op == 8: // repack: a located, referenced chunk is queued again
				x.Chunks(ino, 0, func(idx uint64, ref ChunkRef) error {
					if ok, _ := x.has(locationKey(ref.ID)); ok {
						b.DeleteLocation(ref.ID)
						b.MarkPending(ref.ID, ino, idx, ref.Len+vault.Overhead)
					}
					return nil
				})
			default: // a blob (no chunk map entry), or a released dead location
				if rng.IntN(2) == 0 {
					id := newID()
					blobs[id] = uint32(rng.IntN(1000))
					b.MarkPending(id, 0, 0, blobs[id])
				} else {
					x.Locations(func(id ChunkID, _ Location) error {
						if _, isBlob := blobs[id]; !isBlob && rng.IntN(3) == 0 {
							// only dead ones: not referenced any more
							if _, still := mustWalk(t, x)[id]; !still {
								b.DeleteLocation(id)
							}
						}
						return nil
					})
				}
			}
		}
		if err := b.Commit(rng.IntN(4) == 0); err != nil {
			t.Fatal(err)
		}
		assertFeedExact(t, x, blobs, "after a batch")
		if step == crashAt {
			clone := mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(100), RNG: rand.New(rand.NewPCG(seed, 12))})
			x.Close()
			mem = clone
			if x, err = Open("idx", keys, Options{FS: mem}); err != nil {
				t.Fatal(err)
			}
			// Blobs whose marking batch was lost are simply not marked.
			for id := range blobs {
				if ok, _ := x.IsPending(id); !ok {
					if located, _ := x.has(locationKey(id)); !located {
						delete(blobs, id)
					}
				}
			}
			assertFeedExact(t, x, blobs, "after a crash")
		}
	}
	if rep, err := x.VerifyFeed(); err != nil || !rep.OK() {
		t.Fatalf("VerifyFeed: %+v, %v", rep, err)
	}
	x.Close()
}

// mustWalk is the set of referenced chunks.
func mustWalk(t *testing.T, x *Index) map[ChunkID]bool {
	refs := map[ChunkID]bool{}
	if err := x.Walk(Visitor{Chunk: func(_, _ uint64, ref ChunkRef) { refs[ref.ID] = true }}); err != nil {
		t.Fatal(err)
	}
	return refs
}

// TestFeedUpgradeFromFormat1: an index written without a feed (format 1) is
// read as it is when opened read-only, and gets its feed from one walk at
// the first writable open, with the format record raised to 2.
func TestFeedUpgradeFromFormat1(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "index")
	keys := testKeys(t, 4)
	x := openTest(t, dir, keys)
	b := x.NewBatch()
	a, c, located := ChunkID{1}, ChunkID{2}, ChunkID{3}
	b.PutChunk(5, 0, &ChunkRef{ID: a, Len: 10})
	b.PutChunk(5, 1, &ChunkRef{ID: c, Len: 20})
	b.PutChunk(6, 0, &ChunkRef{ID: located, Len: 30})
	b.PutLocation(located, &Location{Length: 58})
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	// Make it what format 1 wrote: no feed, format record 1.
	fk := []byte{pFormat}
	if err := x.db.DeleteRange([]byte{pPending}, []byte{pPending + 1}, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := x.db.Set(fk, keys.Meta.Seal(nil, []byte{0, 0, 0, 1}, fk), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	x.Close()

	ro, err := Open(dir, keys, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if ro.FeedReady() {
		t.Fatal("a format 1 index opened read-only says it has a feed")
	}
	if err := ro.PendingChunks(func(Pending) error { return nil }); err != ErrNoFeed {
		t.Fatalf("PendingChunks on format 1: %v", err)
	}
	ro.Close()

	x = openTest(t, dir, keys)
	if !x.FeedReady() {
		t.Fatal("no feed after a writable open")
	}
	got := feedOf(t, x)
	ids := make([]ChunkID, 0, len(got))
	for id := range got {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(p, q ChunkID) int { return int(p[0]) - int(q[0]) })
	if !slices.Equal(ids, []ChunkID{a, c}) || got[c].Size != 20+vault.Overhead || got[c].Owner != 5 || got[c].Index != 1 {
		t.Fatalf("rebuilt feed %v", got)
	}
	v, err := x.get(fk)
	if err != nil || beUint32(v) != formatFeed {
		t.Fatalf("format record after the upgrade: %x, %v", v, err)
	}
	x.Close()
}

func beUint32(b []byte) uint32 {
	if len(b) != 4 {
		return 0
	}
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// TestFeedCostFollowsPending: reading the feed reads the pending records
// only, however many durable chunks the index holds.
func TestFeedCostFollowsPending(t *testing.T) {
	x := openTest(t, filepath.Join(t.TempDir(), "index"), testKeys(t, 5))
	defer x.Close()
	b := x.NewBatch()
	for i := range 5000 {
		id := ChunkID{byte(i), byte(i >> 8), 1}
		b.PutChunk(uint64(100+i), 0, &ChunkRef{ID: id, Len: 100})
		b.PutLocation(id, &Location{Length: 128})
	}
	b.PutChunk(7, 0, &ChunkRef{ID: ChunkID{9, 9, 9}, Len: 1})
	if err := b.Commit(false); err != nil {
		t.Fatal(err)
	}
	before := x.RecordsRead()
	n := 0
	if err := x.PendingChunks(func(Pending) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	if read := x.RecordsRead() - before; n != 1 || read != 1 {
		t.Fatalf("feed of %d entries read %d records", n, read)
	}
}

// TestWalkParallelSeesEverything: the parallel walk visits the same
// records as the walk in key order, bad ones included.
func TestWalkParallelSeesEverything(t *testing.T) {
	x := openTest(t, filepath.Join(t.TempDir(), "index"), testKeys(t, 6))
	defer x.Close()
	b := x.NewBatch()
	for i := range 300 {
		ino := uint64(10 + i)
		b.PutInode(&Inode{Ino: ino, Mode: 0o100644, Nlink: 1})
		b.PutDirent(&Dirent{Parent: 1, Name: fmt.Sprintf("f%d", i), Ino: ino, Type: 0o100000})
		b.PutChunk(ino, 0, &ChunkRef{ID: ChunkID{byte(i), byte(i >> 8)}, Len: 5})
		b.PutXattr(ino, "user.a", []byte("v"))
		if i%7 == 0 {
			b.AddOrphan(ino)
		}
	}
	if err := b.Commit(false); err != nil {
		t.Fatal(err)
	}
	// One record that does not open.
	if err := x.db.Set(key8(pInode, 5), []byte("not sealed"), pebble.NoSync); err != nil {
		t.Fatal(err)
	}
	count := func(walk func(Visitor) error) [6]int {
		var n [6]int
		if err := walk(Visitor{
			Inode:  func(Inode) { n[0]++ },
			Dirent: func(Dirent) { n[1]++ },
			Chunk:  func(_, _ uint64, _ ChunkRef) { n[2]++ },
			Xattr:  func(uint64, string, []byte) { n[3]++ },
			Orphan: func(uint64) { n[4]++ },
			Bad:    func([]byte, error) { n[5]++ },
		}); err != nil {
			t.Fatal(err)
		}
		return n
	}
	seq, par := count(x.Walk), count(x.WalkParallel)
	if seq != par || seq != [6]int{300, 300, 300, 300, 43, 1} {
		t.Fatalf("walk counted %v, parallel walk %v", seq, par)
	}
}

// OnPending's hook runs after the commit that brings the bytes marked
// pending since its last call to its threshold, once however far past it
// a commit goes, and never for commits that mark nothing, for a batch
// not committed, or once removed.
func TestOnPendingCountsMarkedBytes(t *testing.T) {
	x := openTest(t, filepath.Join(t.TempDir(), "index"), testKeys(t, 5))
	defer x.Close()
	calls := 0
	x.OnPending(1000, func() { calls++ })
	seq := byte(0)
	mark := func(sizes ...uint32) {
		t.Helper()
		b := x.NewBatch()
		for _, n := range sizes {
			seq++
			b.MarkPending(ChunkID{seq, 7}, 0, 0, n)
		}
		if err := b.Commit(false); err != nil {
			t.Fatal(err)
		}
	}
	check := func(want int, when string) {
		t.Helper()
		if calls != want {
			t.Fatalf("%s: hook called %d times, want %d", when, calls, want)
		}
	}
	mark(400)
	mark(400)
	check(0, "800 bytes marked")
	mark(200)
	check(1, "1000 bytes marked")
	mark(999)
	check(1, "999 more")
	// A file's chunk counts too (its sealed size: 1+vault.Overhead).
	b := x.NewBatch()
	b.PutChunk(9, 0, &ChunkRef{ID: ChunkID{1, 2, 3}, Len: 1})
	if err := b.Commit(false); err != nil {
		t.Fatal(err)
	}
	check(2, "a file's chunk after 999")
	// One call for a commit far past the threshold; the count starts
	// again from nothing after it.
	mark(2500, 2500)
	check(3, "5000 bytes in one commit")
	mark(999)
	check(3, "999 after the call")
	// A commit that marks nothing, and a batch not committed.
	b = x.NewBatch()
	b.PutLocation(ChunkID{1, 7}, &Location{Length: 400})
	if err := b.Commit(false); err != nil {
		t.Fatal(err)
	}
	b = x.NewBatch()
	b.MarkPending(ChunkID{200, 7}, 0, 0, 5000)
	b.Discard()
	check(3, "a location put and a batch dropped")
	x.OnPending(0, nil)
	mark(5000)
	check(3, "after the hook's removal")
}
