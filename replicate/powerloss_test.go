package replicate

import (
	"bytes"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/fincrypt/fincrypt/chunkstore"
	"github.com/fincrypt/fincrypt/internal/powerloss"
	"github.com/fincrypt/fincrypt/meta"
	fnet "github.com/fincrypt/fincrypt/net"
	"github.com/fincrypt/fincrypt/vault"
)

// powerLossRuns is how many seeds TestPowerLossUpload runs in `make test`
// (FINCRYPT_POWERLOSS_RUNS overrides it): each is a vault, a fake network
// of four nodes, two segments' uploads and two snapshots, well under a
// second.
const powerLossRuns = 10

// TestPowerLossUpload runs the engine's upload over an index and a chunk
// store on a crashable disk, against a fake mediator and nodes, and cuts
// the power at the two moments the engine acknowledges something:
//
//   - when the mediator records the segment's commit (it charges for the
//     segment from then on): after the cut, the next start's intent
//     cleaning releases that segment at the mediator, since its record
//     cannot be there yet (the intent, synced before the commit, says it
//     may exist);
//   - when uploadSegment has returned (the chunks may be evicted from
//     then on): the segment is recorded, every packed chunk located in
//     it, its bytes readable from the network, and the intent cleaning
//     releases nothing.
//
// Then a snapshot: a cut when the mediator stores its pointer or once it
// returned leaves the pointer's segments recorded alive, and the next start
// releases none of them; a cut after a refused pointer leaves every segment
// committed for it recorded (the snapshot's as dead) or released. A delta
// cut the same two ways leaves its chain alive, and the next start's
// snapshot after a change restores that start's index. Last the
// chunks are evicted and the power cut once more: every chunk still reads,
// from the store or from the network.
func TestPowerLossUpload(t *testing.T) {
	powerloss.Seeds(t, powerLossRuns, func(seed uint64) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) { powerLossUpload(t, seed) })
	})
}

// diskEngine opens the vault's index and chunk store on fsys and an
// offline engine over them that talks to f, started as New starts one. They close at the test's end.
func diskEngine(t *testing.T, v *vault.Vault, fsys vfs.FS, f *fakeNet) *engine {
	t.Helper()
	idx, err := meta.Open(v.IndexDir(), v.Keys, meta.Options{FS: fsys})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { idx.Close() })
	store, err := chunkstore.OpenFS(v.StoreDir(), fsys)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	// Calls to the fake mediator get peerEngine's timeout: the offline
	// engine's 300 ms (for a mediator that never answers) is missed by a
	// dial under -race on a loaded machine.
	r := offlineReplicatorOver(t, v, idx, store, func(c *Config) { c.CallTimeout = 20 * time.Second })
	r.client = f.client
	r.loadProtection() // as New: what the stored snapshot covers, the chain a delta follows
	return &engine{v: v, idx: idx, store: store, r: r, ino: 100}
}

func powerLossUpload(t *testing.T, seed uint64) {
	disk := powerloss.NewDisk(seed, 0)
	rng := disk.Rand
	home := filepath.Join(t.TempDir(), "home")
	if err := vault.Create(home, testPassword, vault.CreateOptions{KDF: vault.KDFParams{Time: 1, MemoryK: 64, Threads: 1}}); err != nil {
		t.Fatal(err)
	}
	v, err := vault.Open(home, testPassword, vault.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	id, err := AccountIdentity(v)
	if err != nil {
		t.Fatal(err)
	}
	f := newFakeNet(t, 4, id)
	e := diskEngine(t, v, disk, f)

	sizes := make([]int, 1+rng.IntN(4))
	for i := range sizes {
		sizes[i] = vault.Overhead + 1 + rng.IntN(40<<10)
	}
	ids, data := e.addChunks(t, rng, sizes...)
	if err := e.store.Sync(); err != nil { // as a file's fsync does
		t.Fatal(err)
	}
	p := e.planFor(t, ids)

	var atCommit *vfs.MemFS
	var committed fnet.SegmentID
	f.mu.Lock()
	f.onCommit = func(seg fnet.SegmentID) {
		if atCommit == nil {
			atCommit, committed = disk.Cut(), seg
		}
	}
	f.mu.Unlock()
	if err := e.r.uploadSegment(p); err != nil {
		t.Fatalf("seed %d: the upload: %v", seed, err)
	}
	acked := disk.Cut()
	f.mu.Lock()
	f.onCommit = nil
	f.mu.Unlock()
	if atCommit == nil {
		t.Fatalf("seed %d: the upload returned without a commit at the mediator", seed)
	}
	seg := meta.SegmentID(committed)

	// The cut at the mediator's commit: the next start releases the
	// segment, which the index cannot have recorded yet.
	c := diskEngine(t, v, atCommit, f)
	if _, err := c.idx.GetSegment(seg); err == nil {
		t.Fatalf("seed %d: segment %s recorded before the mediator answered its commit", seed, seg)
	}
	if err := c.r.cleanIntents(); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(f.released(), committed) {
		t.Fatalf("seed %d: the mediator committed segment %s at the power cut, and the index afterwards holds neither its record nor its upload intent: the next start does not release it (released %v)", seed, seg, f.released())
	}
	c.r.cancel()

	// The cut once uploadSegment returned: the segment and its locations
	// are there, and nothing is released.
	before := len(f.released())
	a := diskEngine(t, v, acked, f)
	s, err := a.idx.GetSegment(seg)
	if err != nil {
		t.Fatalf("seed %d: segment %s, committed at the mediator and acknowledged by the upload, after a power cut: %v", seed, seg, err)
	}
	if s.State != meta.SegmentDurable || s.Kind != meta.KindData {
		t.Fatalf("seed %d: segment %s after a power cut: state %v, kind %v", seed, seg, s.State, s.Kind)
	}
	for _, id := range ids {
		loc, err := a.idx.GetLocation(id)
		if err != nil || loc.Segment != seg {
			t.Fatalf("seed %d: chunk %s of the uploaded segment %s after a power cut: location %+v, %v", seed, id, seg, loc, err)
		}
		got, err := a.r.fetchChunk(id, nil, false)
		if err != nil || !bytes.Equal(got, data[id]) {
			t.Fatalf("seed %d: chunk %s from the network after a power cut: %d bytes, %v", seed, id, len(got), err)
		}
	}
	if err := a.r.cleanIntents(); err != nil {
		t.Fatal(err)
	}
	if got := f.released(); len(got) != before {
		t.Fatalf("seed %d: the next start after an acknowledged upload released %v", seed, got[before:])
	}

	// A snapshot stored, then the power cut: the segments of the snapshot
	// the mediator's pointer names are recorded, alive, and the next
	// start releases none of them.
	// The same once the mediator has stored the pointer, before the
	// snapshot returns: the pointer replaced the previous one, so its
	// segments are the account's only restorable snapshot.
	nc := f.committed()
	var atPointer *vfs.MemFS
	f.mu.Lock()
	f.onPointer = func() { atPointer = acked.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(50), RNG: rng}) }
	f.mu.Unlock()
	if err := snapshotWith(t, a.r, "the snapshot"); err != nil {
		t.Fatalf("seed %d: the snapshot: %v", seed, err)
	}
	f.mu.Lock()
	f.onPointer = nil
	f.mu.Unlock()
	snapSegs := f.committedSince(nc)
	if f.snapshotPointer() == nil || atPointer == nil || len(snapSegs) == 0 {
		t.Fatalf("seed %d: no snapshot stored (%d segments committed)", seed, len(snapSegs))
	}
	for _, cut := range []struct {
		when string
		fs   *vfs.MemFS
	}{
		{"when the mediator stored its pointer", atPointer},
		{"once it returned", acked.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(50), RNG: rng})},
	} {
		sc := diskEngine(t, v, cut.fs, f)
		for _, id := range snapSegs {
			s, err := sc.idx.GetSegment(meta.SegmentID(id))
			if err != nil || s.Kind != meta.KindSnapshot || s.DeadSince != 0 {
				t.Fatalf("seed %d: segment %s of the snapshot the mediator's pointer names, power cut %s: kind %v, dead since %d, %v", seed, meta.SegmentID(id), cut.when, s.Kind, s.DeadSince, err)
			}
		}
		before = len(f.released())
		if err := sc.r.cleanIntents(); err != nil {
			t.Fatal(err)
		}
		if got := f.released(); len(got) != before {
			t.Fatalf("seed %d: the next start after a power cut %s released %v, of the snapshot the mediator's pointer names", seed, cut.when, got[before:])
		}
		sc.r.cancel()
	}

	// A delta, then the power cut: when the mediator stored its pointer
	// (the chain record and the change feed's drop not yet written) and
	// once it returned (the feed's drop not synced). The next start
	// releases none of the pointer's chain, and its next snapshot after a
	// change (a delta on the chain it finds recorded) restores its index.
	commit(t, a.idx, func(b *meta.Batch) { // a base a small change is well under a quarter of
		for i := range 2000 {
			b.PutInode(&meta.Inode{Ino: uint64(10_000 + i), Mode: 0o100644, Size: uint64(i)})
		}
	})
	if err := snapshotWith(t, a.r, "a larger base"); err != nil {
		t.Fatalf("seed %d: a larger base: %v", seed, err)
	}
	commit(t, a.idx, func(b *meta.Batch) { b.PutInode(&meta.Inode{Ino: 900, Mode: 0o100644, Size: 9}) })
	var atDelta *vfs.MemFS
	f.mu.Lock()
	f.onPointer = func() { atDelta = acked.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(50), RNG: rng}) }
	f.mu.Unlock()
	if err := snapshotWith(t, a.r, "a delta"); err != nil {
		t.Fatalf("seed %d: the delta: %v", seed, err)
	}
	f.mu.Lock()
	f.onPointer = nil
	f.mu.Unlock()
	deltaPtr := f.snapshotPointer()
	chain := pointerChain(t, a, deltaPtr)
	if len(chain.parts) != 2 || atDelta == nil {
		t.Fatalf("seed %d: the snapshot after a small change: %d parts, want a base and a delta", seed, len(chain.parts))
	}
	for i, cut := range []struct {
		when string
		fs   *vfs.MemFS
	}{
		{"when the mediator stored the delta's pointer", atDelta},
		{"once the delta returned", acked.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(50), RNG: rng})},
	} {
		sc := diskEngine(t, v, cut.fs, f)
		before = len(f.released())
		if err := sc.r.cleanIntents(); err != nil {
			t.Fatal(err)
		}
		for _, s := range chain.segments() {
			if seg, err := sc.idx.GetSegment(s.id); err != nil || seg.DeadSince != 0 || slices.Contains(f.released()[before:], fnet.SegmentID(s.id)) {
				t.Fatalf("seed %d: segment %s of the delta's chain after a power cut %s: dead since %d, %v", seed, s.id, cut.when, seg.DeadSince, err)
			}
		}
		commit(t, sc.idx, func(b *meta.Batch) { b.PutInode(&meta.Inode{Ino: uint64(901 + i), Mode: 0o100644, Size: 1}) })
		if err := snapshotWith(t, sc.r, "the snapshot after the cut"); err != nil {
			t.Fatalf("seed %d: the snapshot after a power cut %s: %v", seed, cut.when, err)
		}
		got, err := restoredHash(t, sc, f)
		if err != nil || !bytes.Equal(got, liveHash(t, sc)) {
			t.Fatalf("seed %d: power cut %s, then a change and a snapshot: the restore is not the live index (%v)", seed, cut.when, err)
		}
		sc.r.cancel()
	}

	// A snapshot whose pointer the mediator refuses, then the power cut:
	// every segment committed for it (the new chunks' and the snapshot's)
	// is recorded (the snapshot's as dead, to be released) or released at
	// the next start.
	a.ino = 1000
	more, moreData := a.addChunks(t, rng, vault.Overhead+1+rng.IntN(20<<10))
	if err := a.store.Sync(); err != nil {
		t.Fatal(err)
	}
	ids = append(ids, more...)
	for id, d := range moreData {
		data[id] = d
	}
	nc = f.committed()
	f.refuse(0, fnet.CodeInternal)
	if err := snapshotWith(t, a.r, "a refused snapshot"); err == nil {
		t.Fatalf("seed %d: a snapshot whose pointer the mediator refused returned no error", seed)
	}
	f.refuse(0, 0)
	refused := f.committedSince(nc)
	dc := diskEngine(t, v, acked.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(50), RNG: rng}), f)
	before = len(f.released())
	if err := dc.r.cleanIntents(); err != nil {
		t.Fatal(err)
	}
	for _, id := range refused {
		s, err := dc.idx.GetSegment(meta.SegmentID(id))
		switch {
		case slices.Contains(f.released()[before:], id):
		case err != nil:
			t.Fatalf("seed %d: segment %s, committed for a refused snapshot, after a power cut: neither recorded nor released (%v)", seed, meta.SegmentID(id), err)
		case s.Kind == meta.KindSnapshot && s.DeadSince == 0:
			t.Fatalf("seed %d: segment %s of a refused snapshot after a power cut: recorded alive: kept (and paid for) until a later snapshot supersedes it", seed, meta.SegmentID(id))
		}
	}
	dc.r.cancel()

	// Evicted, then the power cut: every chunk still reads.
	n, err := a.r.EvictAll()
	if err != nil || n != len(ids) {
		t.Fatalf("seed %d: evicted %d of %d chunks: %v", seed, n, len(ids), err)
	}
	a.r.cancel()
	ev := diskEngine(t, v, acked.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(50), RNG: rng}), f)
	for _, id := range ids {
		got, err := ev.store.Get(id, nil)
		if err != nil {
			got, err = ev.r.fetchChunk(id, nil, false)
		}
		if err != nil || !bytes.Equal(got, data[id]) {
			t.Fatalf("seed %d: evicted chunk %s after a power cut: %d bytes, %v", seed, id, len(got), err)
		}
	}
	ev.r.cancel()
}
