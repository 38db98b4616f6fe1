package chunkstore

// Tests written against the mutants of pack.go from line 329 (put, get,
// remove, sync, flush, compaction), store.go from line 213, upgrade.go and
// sysfs.go that outlived the chunk store's own tests (issue 21, sixth
// session; docs/TESTING.md lists each with its mutant).

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io/fs"
	"maps"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/fincrypt/fincrypt/meta"
)

// TestScanResyncsToTheLastRecord: in a pack read by scanning, the record
// after a damaged header is found whatever its kind and wherever it ends:
// a deletion right after the damage still deletes (the chunk it names does
// not come back), and an empty chunk whose record ends exactly at the end
// of the pack, right after the damage, still reads. Mutants: pack.go:339
// (`rest[i] != kindDelete` → `==`: the resync skips deletions), :338
// (`i+recHeaderSize <= len(rest)` → `<`) and :343 (`<= len(rest)` → `<`):
// the last record of the pack, after the damage, lost.
func TestScanResyncsToTheLastRecord(t *testing.T) {
	for _, damage := range []string{"before the deletion", "before the last record"} {
		rng := rand.New(rand.NewPCG(21, 6))
		dir := filepath.Join(t.TempDir(), "store")
		s, err := Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		put := func(b []byte) meta.ChunkID {
			id := NewID()
			if err := s.Put(id, b); err != nil {
				t.Fatal(err)
			}
			return id
		}
		a, b := put(randBytes(rng, 300)), put(randBytes(rng, 400))
		x := put(randBytes(rng, 500))
		if err := s.Delete(a); err != nil {
			t.Fatal(err)
		}
		y := put(randBytes(rng, 600))
		e := put(nil)
		want := map[meta.ChunkID]bool{b: true, x: true, y: true, e: true}
		hit := x
		if damage == "before the last record" {
			hit = y
		}
		hitOff := s.packs.lookup(hit).off
		delete(want, hit)
		damageBarePack(t, s, dir, hitOff+9, []byte{0xff}) // in the chunk id: the header's checksum fails
		s2, err := Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		if s2.packs.scanned != 1 {
			t.Fatalf("%s: %d packs scanned, want 1", damage, s2.packs.scanned)
		}
		for id := range want {
			if _, err := s2.Get(id, nil); err != nil {
				t.Errorf("damage %s: chunk %s (the empty last one: %v) lost: %v", damage, id, id == e, err)
			}
		}
		if _, _, err := s2.Info(a); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("damage %s: chunk %s came back after its deletion (the deletion record follows the damaged header): %v", damage, a, err)
		}
		s2.Close()
	}
}

// TestScanReadErrorFailsTheOpen: a read error while a scan looks for the
// next valid header after a damaged one fails the open (the chunks after
// the damage are not dropped from the store as if they were not there).
// Mutant: pack.go:332 (`err != io.EOF` → `==`: the error ignored, the rest
// of the pack read as zeroes, every later chunk lost).
func TestScanReadErrorFailsTheOpen(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 7))
	mem := newMem(t)
	const dir = "/vault/store"
	s, err := OpenFS(dir, mem)
	if err != nil {
		t.Fatal(err)
	}
	m := fillStore(t, s, rng, 6)
	hitOff := int64(1 << 40)
	for id := range m {
		if l := s.packs.lookup(id); l.off < hitOff {
			hitOff = l.off
		}
	}
	s.Close()
	packs, err := mem.List(filepath.Join(dir, packsDir))
	if err != nil || len(packs) != 1 {
		t.Fatalf("packs %v, %v; want one", packs, err)
	}
	path := filepath.Join(dir, packsDir, packs[0])
	f, err := mem.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := f.Stat()
	b := make([]byte, st.Size())
	if _, err := f.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	b = b[:indexAtOf(t, b)] // no index: the pack is scanned
	b[hitOff+9] ^= 0xff     // the first record's header fails its checksum
	f, err = mem.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	f.Close()
	// The scan reads the damaged header, then the rest of the pack from
	// there: that second read fails.
	reads := 0
	errRead := errors.New("injected read error")
	inj := errorfs.InjectorFunc(func(op errorfs.Op) error {
		if op.Kind == errorfs.OpFileReadAt && op.Path == path && op.Offset == hitOff {
			reads++
			if reads == 2 {
				return errRead
			}
		}
		return nil
	})
	s2, err := OpenFS(dir, errorfs.Wrap(mem, inj))
	if err == nil {
		n := 0
		for id := range m {
			if s2.packs.lookup(id) != nil {
				n++
			}
		}
		s2.Close()
		t.Fatalf("the store opened after a read error in the scan (%d reads at the damage), with %d of the %d chunks after the damaged one", reads, n, len(m)-1)
	}
	if !errors.Is(err, errRead) {
		t.Fatalf("open: %v, want the read error", err)
	}
}

// indexAtOf is indexAt of a pack's bytes.
func indexAtOf(t *testing.T, b []byte) int64 {
	t.Helper()
	tr := b[len(b)-idxTrailerSize:]
	if string(tr[:8]) != idxMagic {
		t.Fatal("the pack has no index")
	}
	return int64(binary.LittleEndian.Uint64(tr[8:]))
}

// faultFS is a file system whose pack writes can hit a full disk (a write
// then puts part of its bytes down and fails with ENOSPC, as write(2) may)
// and whose syncs can fail, each while its switch is on.
type faultFS struct {
	vfs.FS
	full atomic.Bool // pack writes fail with ENOSPC after writing half
	// failSync, when set, says which syncs fail with EIO.
	failSync atomic.Pointer[func(name string) bool]
	writes   atomic.Int64
}

func (f *faultFS) wrap(file vfs.File, name string) vfs.File {
	return &faultFile{File: file, fs: f, name: name}
}

func (f *faultFS) Create(name string, cat vfs.DiskWriteCategory) (vfs.File, error) {
	file, err := f.FS.Create(name, cat)
	if err != nil {
		return nil, err
	}
	return f.wrap(file, name), nil
}

func (f *faultFS) Open(name string, opts ...vfs.OpenOption) (vfs.File, error) {
	file, err := f.FS.Open(name, opts...)
	if err != nil {
		return nil, err
	}
	return f.wrap(file, name), nil
}

func (f *faultFS) OpenReadWrite(name string, cat vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	file, err := f.FS.OpenReadWrite(name, cat, opts...)
	if err != nil {
		return nil, err
	}
	return f.wrap(file, name), nil
}

func (f *faultFS) OpenDir(name string) (vfs.File, error) {
	file, err := f.FS.OpenDir(name)
	if err != nil {
		return nil, err
	}
	return f.wrap(file, name), nil
}

type faultFile struct {
	vfs.File
	fs   *faultFS
	name string
}

func (f *faultFile) WriteAt(p []byte, off int64) (int, error) {
	if f.fs.full.Load() && strings.Contains(f.name, "/"+packsDir+"/") {
		n, _ := f.File.WriteAt(p[:len(p)/2], off)
		return n, syscall.ENOSPC
	}
	f.fs.writes.Add(1)
	return f.File.WriteAt(p, off)
}

func (f *faultFile) Write(p []byte) (int, error) {
	if f.fs.full.Load() {
		n, _ := f.File.Write(p[:len(p)/2])
		return n, syscall.ENOSPC
	}
	return f.File.Write(p)
}

func (f *faultFile) Sync() error {
	if fail := f.fs.failSync.Load(); fail != nil && (*fail)(f.name) {
		return syscall.EIO
	}
	return f.File.Sync()
}

// crash is a power cut: the file system as the disk holds it, without
// anything not synced.
func crash(mem *vfs.MemFS) *vfs.MemFS {
	return mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 0})
}

// TestFullDiskLosesNothing: on a full disk a put and a deletion fail with
// an error that says so (ENOSPC), the chunk put is not in the store, the
// chunk whose deletion failed still reads, and a new pack that could not
// be started is not left behind; once space is freed the store takes
// chunks and deletions again, and after a sync and a power cut every
// chunk acknowledged before, during and after the full disk reads back,
// every acknowledged deletion holds, and nothing that failed is there.
// Mutants: the error checks of appendRecord, rotate, put and remove
// (pack.go), negated: a failed write acknowledged, or a half-written
// record taken as the chunk.
func TestFullDiskLosesNothing(t *testing.T) {
	smallPacks(t, 4<<10)
	rng := rand.New(rand.NewPCG(21, 8))
	mem, ffs, s := newFaultStore(t)
	live := fillStore(t, s, rng, 12)
	gone := map[meta.ChunkID]bool{}
	var failed []meta.ChunkID
	ffs.full.Store(true)
	for i := range 8 {
		id := NewID()
		// Chunks too big for the active pack: each put starts a new pack,
		// whose header does not reach the disk either.
		err := s.Put(id, randBytes(rng, 4000))
		if !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("put %d on a full disk: %v, want ENOSPC", i, err)
		}
		failed = append(failed, id)
	}
	var keep meta.ChunkID
	for id := range live {
		keep = id
		break
	}
	if err := s.Delete(keep); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("delete on a full disk: %v, want ENOSPC", err)
	}
	for _, id := range failed {
		if _, _, err := s.Info(id); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("chunk %s whose put failed is in the store: %v", id, err)
		}
	}
	checkAll(t, s, live)
	// Syncs while the disk is full work (nothing was written).
	if err := s.Sync(); err != nil {
		t.Fatalf("sync on a full disk: %v", err)
	}
	ffs.full.Store(false)
	for id, b := range fillStore(t, s, rng, 12) {
		live[id] = b
	}
	n := 0
	for id := range live {
		if n++; n > 5 {
			break
		}
		if err := s.Delete(id); err != nil {
			t.Fatal(err)
		}
		delete(live, id)
		gone[id] = true
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	checkAll(t, s, live)
	s.Close()
	for _, fsys := range []vfs.FS{crash(mem), mem} {
		s2, err := OpenFS(faultDir, fsys)
		if err != nil {
			t.Fatalf("open after the full disk: %v", err)
		}
		checkAll(t, s2, live)
		for _, id := range append(failed, slices.Collect(maps.Keys(gone))...) {
			if _, _, err := s2.Info(id); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("chunk %s (put failed: %v) is in the store after reopening: %v", id, !gone[id], err)
			}
		}
		ids := map[meta.ChunkID]bool{}
		if err := s2.List(func(id meta.ChunkID) error { ids[id] = true; return nil }, nil); err != nil {
			t.Fatal(err)
		}
		if len(ids) != len(live) {
			t.Fatalf("%d chunks listed after reopening, want %d", len(ids), len(live))
		}
		s2.Close()
	}
}

// syncsFail makes the syncs of the paths fail chooses fail (nil: none).
func (f *faultFS) syncsFail(fail func(name string) bool) {
	if fail == nil {
		f.failSync.Store(nil)
		return
	}
	f.failSync.Store(&fail)
}

func isPackFile(name string) bool { return strings.HasSuffix(name, ".pack") }

func isPacksDir(name string) bool { return strings.HasSuffix(name, "/"+packsDir) }

// TestSyncErrorNotAcknowledged: a sync that fails (a pack's fsync, or the
// packs directory's after a new pack) returns the error, and what it
// failed to make durable is synced by the next sync that works: after a
// power cut then, the chunks put and the deletions made before the failed
// sync hold. Mutants: flush (pack.go:690 `err != nil` and `first == nil`,
// :698, :700: the error dropped, the failed sync acknowledged) and the
// remarks of what was not synced (a later sync skipping the pack or the
// directory).
func TestSyncErrorNotAcknowledged(t *testing.T) {
	smallPacks(t, 4<<10)
	for _, what := range []string{"pack", "packs directory"} {
		rng := rand.New(rand.NewPCG(21, 9))
		mem, ffs, s := newFaultStore(t)
		live := fillStore(t, s, rng, 8)
		var gone meta.ChunkID
		for id := range live {
			gone = id
			break
		}
		if err := s.Delete(gone); err != nil {
			t.Fatal(err)
		}
		delete(live, gone)
		// Enough to start a new pack: the directory has a new entry.
		more := map[meta.ChunkID][]byte{}
		for range 6 {
			id, b := NewID(), randBytes(rng, 900)
			if err := s.Put(id, b); err != nil {
				t.Fatal(err)
			}
			more[id] = b
		}
		fail := isPackFile
		if what == "packs directory" {
			fail = isPacksDir
		}
		ffs.syncsFail(fail)
		if err := s.Sync(); !errors.Is(err, syscall.EIO) {
			t.Fatalf("%s: sync with the %s's fsync failing: %v, want EIO", what, what, err)
		}
		if err := s.SyncIDs(slices.Collect(maps.Keys(more))); !errors.Is(err, syscall.EIO) {
			t.Fatalf("%s: SyncIDs with the %s's fsync failing: %v, want EIO", what, what, err)
		}
		ffs.syncsFail(nil)
		if err := s.Sync(); err != nil {
			t.Fatalf("%s: sync once the disk works: %v", what, err)
		}
		maps.Copy(live, more)
		s2, err := OpenFS(faultDir, crash(mem))
		if err != nil {
			t.Fatal(err)
		}
		for id, want := range live {
			if got, err := s2.Get(id, nil); err != nil || !bytes.Equal(got, want) {
				t.Fatalf("%s: chunk %s acknowledged by the sync after the failed one lost in the power cut: %v", what, id, err)
			}
		}
		if _, _, err := s2.Info(gone); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("%s: chunk %s deleted before the failed sync came back after the power cut: %v", what, gone, err)
		}
		s2.Close()
		s.Close()
	}
}

// TestCompactionSyncErrorKeepsThePack: compaction removes a pack only once
// the copies of its live chunks are durable. When that sync fails,
// Compact returns the error and leaves the pack: a power cut then loses no
// live chunk and brings back no deleted one; once the disk works the next
// sync compacts it away, and Compact says how many packs it removed.
// Mutants: compactOne's flush error check (pack.go:811), compact's (:747),
// `done++` → `done--` (:753) and stats' `packs++` (:850).
func TestCompactionSyncErrorKeepsThePack(t *testing.T) {
	smallPacks(t, 4<<10)
	rng := rand.New(rand.NewPCG(21, 10))
	mem, ffs, s := newFaultStore(t)
	defer s.Close()
	live := fillStore(t, s, rng, 40)
	gone := map[meta.ChunkID]bool{}
	for id := range live {
		if rng.IntN(4) != 0 {
			if err := s.Delete(id); err != nil {
				t.Fatal(err)
			}
			delete(live, id)
			gone[id] = true
		}
	}
	if err := s.packs.sync(); err != nil {
		t.Fatal(err)
	}
	ffs.syncsFail(isPackFile)
	n, err := s.Compact()
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("compaction with failing syncs: %d packs removed, %v; want EIO", n, err)
	}
	ffs.syncsFail(nil)
	// The count the working compaction starts from: packs before the
	// failing one in compaction's order that held no live chunk went
	// without a pack sync (which chunks are deleted follows map order;
	// counting from before, about 1 run in 50 failed).
	mid, _, _ := s.packs.stats()
	check := func(s2 *Store, when string) {
		t.Helper()
		for id, want := range live {
			if got, err := s2.Get(id, nil); err != nil || !bytes.Equal(got, want) {
				t.Fatalf("%s: live chunk %s lost: %v", when, id, err)
			}
		}
		for id := range gone {
			if _, _, err := s2.Info(id); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("%s: deleted chunk %s came back: %v", when, id, err)
			}
		}
	}
	afterPowerCut := func(when string) {
		t.Helper()
		s2, err := OpenFS(faultDir, crash(mem))
		if err != nil {
			t.Fatal(err)
		}
		defer s2.Close()
		check(s2, when)
	}
	afterPowerCut("power cut after the failed compaction")
	check(s, "after the failed compaction")
	removed, err := s.Compact()
	if err != nil {
		t.Fatal(err)
	}
	after, _, _ := s.packs.stats()
	if after >= mid || removed < mid-after {
		t.Fatalf("%d packs after compacting once the disk works, %d before, %d said removed", after, mid, removed)
	}
	afterPowerCut("power cut after the compaction")
}

// checkLive checks the store's accounting against its map: each pack's
// live bytes are the records of the chunks the map points into it, and the
// store's byte count the chunks' sizes (Bytes, and which packs compaction
// rewrites, go by these).
func checkLive(t *testing.T, what string, ps *packSet) {
	t.Helper()
	ps.mu.RLock()
	defer ps.mu.RUnlock()
	want := map[uint32]int64{}
	var bytes int64
	for _, e := range ps.chunks.all() {
		want[e.pack] += recHeaderSize + int64(e.n)
		bytes += int64(e.n)
	}
	for _, p := range ps.packs {
		if p.live != want[p.slot] {
			t.Errorf("%s: pack %s counts %d live bytes, its chunks' records are %d", what, packName(p.seq), p.live, want[p.slot])
		}
	}
	if ps.bytes != bytes {
		t.Errorf("%s: the store counts %d bytes, its chunks are %d", what, ps.bytes, bytes)
	}
}

// TestLiveBytesAccounting: a pack's live bytes follow its chunks when a
// chunk gets a newer copy elsewhere (a damaged copy replaced by a fetched
// one; both copies of a compaction cut short by a power cut after its
// sync, loaded at the next open). Mutant: pack.go:402 (the older copy's
// pack loses `recHeaderSize - n` bytes instead of `recHeaderSize + n`:
// mostly dead packs counted live, never compacted).
func TestLiveBytesAccounting(t *testing.T) {
	smallPacks(t, 4<<10)
	rng := rand.New(rand.NewPCG(21, 11))
	mem := newMem(t)
	const dir = "/vault/store"
	s, err := OpenFS(dir, mem)
	if err != nil {
		t.Fatal(err)
	}
	live := fillStore(t, s, rng, 16)
	checkLive(t, "after the puts", s.packs)
	// A chunk in the first pack damaged on disk, fetched again.
	var bad meta.ChunkID
	var badLoc *loc
	for id := range live {
		if l := s.packs.lookup(id); badLoc == nil || l.p.seq < badLoc.p.seq {
			bad, badLoc = id, l
		}
	}
	if _, err := badLoc.p.f.WriteAt([]byte{^live[bad][0]}, badLoc.off+recHeaderSize); err != nil {
		t.Fatal(err)
	}
	s.SetFetcher(func(id meta.ChunkID) ([]byte, error) { return bytes.Clone(live[id]), nil })
	if got, err := s.Get(bad, nil); err != nil || !bytes.Equal(got, live[bad]) {
		t.Fatalf("damaged chunk fetched again: %v", err)
	}
	if s.packs.lookup(bad).p == badLoc.p {
		t.Fatal("the fetched copy did not replace the damaged one")
	}
	checkLive(t, "after a damaged copy was replaced", s.packs)
	s.SetFetcher(nil)
	// Most chunks deleted: compaction cut by a power cut once its copies
	// are synced, before it removes the old packs.
	for id := range live {
		if id != bad && rng.IntN(3) != 0 {
			if err := s.Delete(id); err != nil {
				t.Fatal(err)
			}
			delete(live, id)
		}
	}
	checkLive(t, "after the deletions", s.packs)
	var clone *vfs.MemFS
	compactHook = func(stage string) {
		if stage == "synced" && clone == nil {
			clone = crash(mem)
		}
	}
	defer func() { compactHook = nil }()
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	compactHook = nil
	checkLive(t, "after compaction", s.packs)
	s.Close()
	if clone == nil {
		t.Fatal("no compaction")
	}
	s2, err := OpenFS(dir, clone)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	checkAll(t, s2, live)
	checkLive(t, "after a power cut in compaction (both copies on disk)", s2.packs)
}

// TestPackFillsToItsTarget: a record that brings its pack to exactly the
// target size goes in that pack; the next one starts a new pack. Mutant:
// pack.go:415 (`size+need > packTarget` → `>=`).
func TestPackFillsToItsTarget(t *testing.T) {
	smallPacks(t, 4<<10)
	s, err := OpenFS("/vault/store", newMem(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a, b, c := NewID(), NewID(), NewID()
	if err := s.Put(a, make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	rest := packTarget - s.packs.active.size - recHeaderSize
	if err := s.Put(b, make([]byte, rest)); err != nil {
		t.Fatal(err)
	}
	if pa, pb := s.packs.lookup(a).p, s.packs.lookup(b).p; pa != pb || pb.size != packTarget {
		t.Fatalf("a record filling its pack to exactly %d bytes went to a new pack", packTarget)
	}
	if err := s.Put(c, []byte{1}); err != nil {
		t.Fatal(err)
	}
	if s.packs.lookup(c).p == s.packs.lookup(b).p {
		t.Fatalf("a record went past the target size of %d bytes", packTarget)
	}
}

// TestPackReadsRefreshAge: in a store of packs a read sets the time of a
// chunk last used more than a second ago to now (the cache evicts the
// least recently used first, so what is read stays); a read through a
// read-only store changes nothing. Mutants: pack.go:523 (either half of
// the check that the chunk has not moved negated: no read refreshes it).
func TestPackReadsRefreshAge(t *testing.T) {
	s, err := OpenFS("/vault/store", newMem(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	id := NewID()
	if err := s.Put(id, []byte("data")); err != nil {
		t.Fatal(err)
	}
	past := time.Now().Add(-time.Hour).Unix()
	setAtime := func() {
		s.packs.mu.Lock()
		e, _ := s.packs.chunks.get(id)
		e.atime = uint32(past)
		s.packs.chunks.put(id, e)
		s.packs.mu.Unlock()
	}
	setAtime()
	if _, err := s.Get(id, nil); err != nil {
		t.Fatal(err)
	}
	if _, at, err := s.Info(id); err != nil || time.Since(at) > time.Minute {
		t.Fatalf("a chunk read an hour after its last use kept its time %v (%v)", at, err)
	}
	setAtime()
	s.readOnly = true // as OpenExisting opens it
	if _, err := s.Get(id, nil); err != nil {
		t.Fatal(err)
	}
	if _, at, _ := s.Info(id); at.Unix() != past {
		t.Fatalf("a read through a read-only store changed the time to %v", at)
	}
}

// TestGetAppendsToDst: Get appends the chunk to dst whatever room dst has
// left: none, less than the chunk, or enough; the bytes dst held stay.
// Mutant: pack.go:538 (`cap(dst)-len(dst)` → `+`: a dst with too little
// room taken as big enough, a panic).
func TestGetAppendsToDst(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 12))
	s, err := OpenFS("/vault/store", newMem(t))
	if err != nil {
		t.Fatal(err)
	}
	id, chunk := NewID(), randBytes(rng, 500)
	if err := s.Put(id, bytes.Clone(chunk)); err != nil {
		t.Fatal(err)
	}
	head := randBytes(rng, 300)
	for _, room := range []int{0, 100, 600} {
		dst := append(make([]byte, 0, len(head)+room), head...)
		got, err := s.Get(id, dst)
		if err != nil || !bytes.Equal(got, append(bytes.Clone(head), chunk...)) {
			t.Fatalf("Get into a buffer of %d bytes with room for %d: %d bytes, %v", len(head), room, len(got), err)
		}
	}
	// Not deferred: a panic in Get (holding the pack's lock) then fails
	// the test at once instead of hanging in Close.
	s.Close()
}

// TestPunchedHoleSparesTheNeighbours: the disk blocks given back after a
// deletion lie inside the deleted chunk's payload: the chunk before it,
// whose record ends just past a block boundary, still reads. Mutant:
// pack.go:588 (`l.off + recHeaderSize` → `-`: the hole starts 32 bytes
// early and zeroes the previous chunk's last bytes) and :602
// (`len(p.holes) > 0` → `<= 0`: no blocks given back until compaction).
func TestPunchedHoleSparesTheNeighbours(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 13))
	s, err := OpenFS("/vault/store", newMem(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a, b := NewID(), NewID()
	// a's record ends 16 bytes past the first block boundary; b follows.
	da := randBytes(rng, punchBlock-recHeaderSize)
	if err := s.Put(a, bytes.Clone(da)); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(b, randBytes(rng, 3*punchBlock)); err != nil {
		t.Fatal(err)
	}
	if off := s.packs.lookup(b).off; off != punchBlock+16 {
		t.Fatalf("b's record at %d, want %d", off, punchBlock+16)
	}
	if err := s.Delete(b); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(); err != nil { // gives b's blocks back
		t.Fatal(err)
	}
	if got, err := s.Get(a, nil); err != nil || !bytes.Equal(got, da) {
		t.Fatalf("the chunk before a deleted one damaged by the hole punched for it: %v", err)
	}
	// The whole blocks of b's payload were given back (they read as zeroes).
	blk := make([]byte, punchBlock)
	if _, err := s.packs.lookup(a).p.f.ReadAt(blk, 2*punchBlock); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(blk, make([]byte, punchBlock)) {
		t.Fatal("the disk blocks of a deleted chunk were not given back after the sync")
	}
}

// faultDir is where newFaultStore's store lives.
const faultDir = "/vault/store"

// newFaultStore opens a store at faultDir on a crashable in-memory file
// system behind a faultFS, which starts with no fault set.
func newFaultStore(t *testing.T) (*vfs.MemFS, *faultFS, *Store) {
	t.Helper()
	mem := newMem(t)
	ffs := &faultFS{FS: mem}
	s, err := OpenFS(faultDir, ffs)
	if err != nil {
		t.Fatal(err)
	}
	return mem, ffs, s
}
