package chunkstore

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/fincrypt/fincrypt/internal/powerloss"
	"github.com/fincrypt/fincrypt/meta"
)

// smallPacks makes packs of a few KiB for the test, so that a short
// workload rotates, fills and compacts many of them.
func smallPacks(t *testing.T, size int64) {
	old := packTarget
	packTarget = size
	t.Cleanup(func() { packTarget = old })
}

// smallPackStore opens a pack store at dir on mem with 8 KiB packs, and
// gives a put of n random bytes (seeded) returning the new chunk's id, and
// the sequence number of the pack holding a chunk.
func smallPackStore(t *testing.T, mem vfs.FS, dir string, seed1, seed2 uint64) (*Store, func(n int) meta.ChunkID, func(meta.ChunkID) uint64) {
	t.Helper()
	smallPacks(t, 8<<10)
	s, err := OpenFSFormat(dir, mem, FormatPacks)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed1, seed2))
	put := func(n int) meta.ChunkID {
		id := NewID()
		if err := s.Put(id, randBytes(rng, n)); err != nil {
			t.Fatal(err)
		}
		return id
	}
	seqOf := func(id meta.ChunkID) uint64 {
		l := s.packs.lookup(id)
		if l == nil {
			t.Fatalf("chunk %s in no pack", id)
		}
		return l.p.seq
	}
	return s, put, seqOf
}

func randBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// newMem is a crashable file system holding a synced /vault (the vault's
// home, which exists before its store).
func newMem(t *testing.T) *vfs.MemFS {
	mem := vfs.NewCrashableMem()
	if err := mem.MkdirAll("/vault", 0o700); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"/", "/vault"} {
		f, err := mem.OpenDir(d)
		if err != nil {
			t.Fatal(err)
		}
		f.Sync()
		f.Close()
	}
	return mem
}

// eagerRemoveFS is a file system that makes each removal durable at once
// (with the rest of its directory), as a journaling file system may commit
// an unlink at any moment: the store must have made durable whatever the
// removed file's content moved to before it removes the file.
type eagerRemoveFS struct{ vfs.FS }

func (e eagerRemoveFS) Remove(name string) error {
	if err := e.FS.Remove(name); err != nil {
		return err
	}
	d, err := e.FS.OpenDir(e.FS.PathDir(name))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// chunkState is what the test knows of a chunk id: its bytes, and which of
// its put and its deletion a sync acknowledged.
type chunkState struct {
	data     []byte
	putAcked bool // a sync after the put returned
	deleted  bool
	delAcked bool // a sync after the deletion returned
}

// TestPackPowerLoss drives a format 2 store with a seeded workload of puts,
// deletions (of files and cache evictions), chunks fetched again after
// their eviction, syncs of some ids and of everything, and compactions, on
// pebble's crashable file system with packs of a few KiB; it cuts the power
// at a random step, or in the middle of a compaction (at a random point
// between its copies, its syncs and its removal of the old pack), and
// checks after the "reboot" that the store opens, that every chunk whose
// put was acknowledged by a sync (and not deleted since) reads back
// intact, that no chunk whose deletion was acknowledged comes back, that
// any other chunk is either absent or intact, and that the store takes new
// chunks and compacts again. The cut also comes right after a pack's index
// is written (compactHook runs then too; the cut keeps a random part of
// it), and the map the store loads (from the indexes that survived whole,
// else by scanning) must be what a scan of every record gives, after the
// cut and after a clean reopen, which reads every pack from its index.
func TestPackPowerLoss(t *testing.T) {
	smallPacks(t, 4096)
	runs := powerloss.Runs(t, 150)
	for seed := 0; seed < runs; seed++ {
		packPowerLossRun(t, uint64(seed))
	}
}

func packPowerLossRun(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 11))
	mem := newMem(t)
	const dir = "/vault/store"
	var fsys vfs.FS = mem
	if seed%2 == 1 {
		fsys = eagerRemoveFS{mem}
	}
	s, err := OpenFS(dir, fsys)
	if err != nil {
		t.Fatal(err)
	}
	chunks := map[meta.ChunkID]*chunkState{}
	var order []meta.ChunkID
	var unsynced []meta.ChunkID
	ack := func() {
		for _, c := range chunks {
			if c.deleted {
				c.delAcked = true
			} else {
				c.putAcked = true
			}
		}
		unsynced = unsynced[:0]
	}
	var clone *vfs.MemFS
	crashAt := -1 // a compaction step to crash at, if >= 0
	compactionSteps := 0
	cutStage := ""
	compactHook = func(stage string) {
		if compactionSteps == crashAt && clone == nil {
			cutStage = stage
			clone = mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(60), RNG: rand.New(rand.NewPCG(seed, 12))})
		}
		compactionSteps++
	}
	defer func() { compactHook = nil }()
	steps := 30 + rng.IntN(120)
	cut := rng.IntN(steps)
	if rng.IntN(3) == 0 {
		crashAt = rng.IntN(40) // somewhere inside the compactions
		cut = steps
	}
	live := func() []meta.ChunkID {
		var out []meta.ChunkID
		for _, id := range order {
			if !chunks[id].deleted {
				out = append(out, id)
			}
		}
		return out
	}
	for step := 0; step < cut && clone == nil; step++ {
		switch op := rng.IntN(20); {
		case op < 8: // a new chunk
			id := NewID()
			c := &chunkState{data: randBytes(rng, 16+rng.IntN(900))}
			if err := s.Put(id, bytes.Clone(c.data)); err != nil {
				t.Fatal(err)
			}
			chunks[id] = c
			order = append(order, id)
			unsynced = append(unsynced, id)
		case op < 12: // deletions (superseded chunks, evictions)
			l := live()
			for range 1 + rng.IntN(4) {
				if len(l) == 0 {
					break
				}
				id := l[rng.IntN(len(l))]
				if err := s.Delete(id); err != nil {
					t.Fatal(err)
				}
				c := chunks[id]
				c.deleted, c.delAcked = true, false
			}
		case op < 13: // an evicted chunk fetched again and cached
			for _, id := range order {
				c := chunks[id]
				if c.deleted && c.delAcked {
					if err := s.Put(id, bytes.Clone(c.data)); err != nil {
						t.Fatal(err)
					}
					c.deleted, c.delAcked, c.putAcked = false, false, false
					unsynced = append(unsynced, id)
					break
				}
			}
		case op < 15: // fsync of a file: its chunks
			n := rng.IntN(len(unsynced) + 1)
			if err := s.SyncIDs(unsynced[:n]); err != nil {
				t.Fatal(err)
			}
			for _, id := range unsynced[:n] {
				if c := chunks[id]; !c.deleted {
					c.putAcked = true
				}
			}
			unsynced = append(unsynced[:0], unsynced[n:]...)
		case op < 18: // Sync: everything, then compaction
			if err := s.Sync(); err != nil {
				t.Fatal(err)
			}
			ack()
		default: // reads
			for _, id := range live() {
				c := chunks[id]
				got, err := s.Get(id, nil)
				if err != nil || !bytes.Equal(got, c.data) {
					t.Fatalf("seed %d: live chunk %s: %v", seed, id, err)
				}
			}
		}
	}
	if clone == nil {
		if crashAt >= 0 {
			// No compaction reached the step: cut at the end instead.
			crashAt = -1
		}
		clone = mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(60), RNG: rand.New(rand.NewPCG(seed, 13))})
	}
	compactHook = nil
	s.Close()

	s2, err := OpenFS(dir, clone)
	if err != nil {
		t.Fatalf("seed %d: the store does not open after the power cut: %v", seed, err)
	}
	defer s2.Close()
	// What the store loaded (from the packs' indexes where they survived
	// whole, else by scanning) is what a scan of every record gives.
	scan, want := scanned(t, dir, vfsFS{clone})
	sameState(t, fmt.Sprintf("seed %d after the cut", seed), stateOf(s2.packs), scan, want)
	scan.close()
	checkAfterCut := func(s2 *Store, when string) {
		t.Helper()
		for id, c := range chunks {
			got, err := s2.Get(id, nil)
			switch {
			case !c.deleted && c.putAcked:
				if err != nil || !bytes.Equal(got, c.data) {
					t.Fatalf("seed %d %s: acknowledged chunk %s: %d bytes, %v", seed, when, id, len(got), err)
				}
			case c.deleted && c.delAcked:
				if err == nil {
					t.Fatalf("seed %d %s: chunk %s came back after its deletion was acknowledged", seed, when, id)
				}
			default:
				if err == nil && !bytes.Equal(got, c.data) {
					t.Fatalf("seed %d %s: unacknowledged chunk %s reads %d wrong bytes", seed, when, id, len(got))
				}
				if err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrCorrupt) {
					t.Fatalf("seed %d %s: unacknowledged chunk %s: %v", seed, when, id, err)
				}
			}
		}
	}
	checkAfterCut(s2, "after the cut")
	// The store works on: new chunks, deletions of whatever survived
	// unacknowledged, compaction, and a clean reopen.
	fresh := NewID()
	if err := s2.Put(fresh, []byte("after the reboot")); err != nil {
		t.Fatalf("seed %d: %v", seed, err)
	}
	for id, c := range chunks {
		if !c.putAcked || c.deleted {
			if err := s2.Delete(id); err != nil {
				t.Fatal(err)
			}
			c.deleted, c.delAcked = true, true
		}
	}
	if err := s2.Sync(); err != nil {
		t.Fatalf("seed %d: sync after the reboot: %v", seed, err)
	}
	if _, err := s2.Compact(); err != nil {
		t.Fatal(err)
	}
	s2.Close()
	s3, err := OpenFS(dir, clone)
	if err != nil {
		t.Fatalf("seed %d: reopen: %v", seed, err)
	}
	defer s3.Close()
	if s3.packs.scanned != 0 {
		t.Fatalf("seed %d: after a clean close, %d packs were scanned, not read from their index", seed, s3.packs.scanned)
	}
	scan, want = scanned(t, dir, vfsFS{clone})
	sameState(t, fmt.Sprintf("seed %d after compaction and reopen", seed), stateOf(s3.packs), scan, want)
	scan.close()
	checkAfterCut(s3, "after compaction and reopen")
	if got, err := s3.Get(fresh, nil); err != nil || string(got) != "after the reboot" {
		t.Fatalf("seed %d: chunk written after the reboot: %q, %v", seed, got, err)
	}
	if testing.Verbose() {
		fmt.Printf("seed %d: cut at step %d of %d (compaction or index step %d: %q), %d chunks\n", seed, cut, steps, crashAt, cutStage, len(chunks))
	}
}

// packFiles lists a store's pack files, oldest first.
func packFiles(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, packsDir))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, filepath.Join(dir, packsDir, e.Name()))
	}
	sort.Strings(out)
	return out
}

func fillStore(t *testing.T, s *Store, rng *rand.Rand, n int) map[meta.ChunkID][]byte {
	t.Helper()
	m := map[meta.ChunkID][]byte{}
	for range n {
		id := NewID()
		b := randBytes(rng, 100+rng.IntN(1000))
		// A copy: under -race Pebble's in-memory FS flips the bytes of a
		// buffer once written (to catch callers that reuse it), and a store
		// of chunk files writes the buffer Put is given.
		if err := s.Put(id, bytes.Clone(b)); err != nil {
			t.Fatal(err)
		}
		m[id] = b
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	return m
}

func checkAll(t *testing.T, s *Store, m map[meta.ChunkID][]byte) {
	t.Helper()
	for id, want := range m {
		got, err := s.Get(id, nil)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("chunk %s: %d bytes, %v", id, len(got), err)
		}
	}
}

// TestPackTornTail: a pack whose last record was cut short (kill -9 or a
// power cut while it was written) opens with every earlier chunk intact;
// the torn bytes are ignored, new chunks go to a new pack, and the torn
// pack is compacted away without losing its chunks.
func TestPackTornTail(t *testing.T) {
	for _, cut := range []string{"header", "payload", "garbage"} {
		t.Run(cut, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, 2))
			dir := filepath.Join(t.TempDir(), "store")
			s, err := Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			m := fillStore(t, s, rng, 50)
			// The next record, torn.
			torn := NewID()
			if err := s.Put(torn, randBytes(rng, 3000)); err != nil {
				t.Fatal(err)
			}
			s.Close()
			packs := packFiles(t, dir)
			last := packs[len(packs)-1]
			st, _ := os.Stat(last)
			switch cut {
			case "header":
				os.Truncate(last, st.Size()-3000-recHeaderSize+10)
			case "payload":
				os.Truncate(last, st.Size()-1000)
			case "garbage":
				os.Truncate(last, st.Size()-3000-recHeaderSize)
				f, _ := os.OpenFile(last, os.O_WRONLY|os.O_APPEND, 0)
				f.Write(bytes.Repeat([]byte{0}, 700)) // zeroes where a write never landed
				f.Close()
			}
			s2, err := Open(dir)
			if err != nil {
				t.Fatalf("store with a torn pack tail: %v", err)
			}
			checkAll(t, s2, m)
			if _, err := s2.Get(torn, nil); err == nil {
				t.Fatal("the torn chunk reads back")
			}
			more := fillStore(t, s2, rng, 10)
			if n := len(packFiles(t, dir)); n < len(packs) {
				t.Fatalf("%d packs after new chunks, had %d", n, len(packs))
			}
			// The torn pack is small: compaction rewrites and removes it.
			if _, err := s2.Compact(); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(last); !os.IsNotExist(err) {
				t.Fatalf("the torn pack is still there after compaction: %v", err)
			}
			s2.Close()
			s3, err := Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer s3.Close()
			checkAll(t, s3, m)
			checkAll(t, s3, more)
		})
	}
}

// TestPackCorrupt: bytes flipped in a pack give a clear error (ErrCorrupt,
// naming the pack and offset) for the chunk they hit and for no other; a
// flipped record header loses only its chunk (the scan finds the next
// record); a damaged pack is never compacted (which would launder its bad
// bytes under a new checksum); and with a fetcher, a damaged chunk is
// replaced by a verified copy from the network.
func TestPackCorrupt(t *testing.T) {
	smallPacks(t, 16<<10)
	rng := rand.New(rand.NewPCG(3, 4))
	dir := filepath.Join(t.TempDir(), "store")
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := fillStore(t, s, rng, 80)
	// Locate two chunks in the first pack: flip a payload byte of one and a
	// header byte of the other.
	var inFirst []meta.ChunkID
	for id := range m {
		if l := s.packs.lookup(id); l.p.seq == 1 {
			inFirst = append(inFirst, id)
		}
	}
	if len(inFirst) < 3 {
		t.Fatalf("only %d chunks in the first pack", len(inFirst))
	}
	payloadHit, headerHit := inFirst[0], inFirst[1]
	lp, lh := s.packs.lookup(payloadHit), s.packs.lookup(headerHit)
	path := lp.p.path
	s.Close()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	flip := func(off int64) {
		b := []byte{0}
		f.ReadAt(b, off)
		b[0] ^= 0x40
		f.WriteAt(b, off)
	}
	flip(lp.off + recHeaderSize + int64(lp.n)/2)
	flip(lh.off + 9) // in the chunk id
	f.Close()

	s2, err := Open(dir)
	if err != nil {
		t.Fatalf("store with a damaged pack: %v", err)
	}
	_, err = s2.Get(payloadHit, nil)
	if !errors.Is(err, ErrCorrupt) || !bytes.Contains([]byte(err.Error()), []byte(packName(1))) {
		t.Fatalf("chunk with a flipped byte: %v, want ErrCorrupt naming pack %s", err, packName(1))
	}
	if _, err := s2.Get(headerHit, nil); err == nil {
		t.Fatal("chunk with a damaged header reads")
	}
	others := map[meta.ChunkID][]byte{}
	for id, b := range m {
		if id != payloadHit && id != headerHit {
			others[id] = b
		}
	}
	checkAll(t, s2, others)
	// Delete everything else in the damaged pack: compaction must keep it.
	for _, id := range inFirst[2:] {
		if err := s2.Delete(id); err != nil {
			t.Fatal(err)
		}
		delete(others, id)
	}
	if err := s2.Sync(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the damaged pack was removed: %v", err)
	}
	if _, err := s2.Get(payloadHit, nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("after compaction, the damaged chunk: %v, want ErrCorrupt still", err)
	}
	checkAll(t, s2, others)
	// A lying network copy is refused and leaves the damage as it was; the
	// true copy replaces it.
	good := m[payloadHit]
	s2.SetFetcher(func(meta.ChunkID) ([]byte, error) { return bytes.Repeat([]byte{1}, len(good)), nil })
	verify := func(b []byte) error {
		if !bytes.Equal(b, good) {
			return errors.New("authentication failed")
		}
		return nil
	}
	if _, err := s2.GetVerify(payloadHit, nil, verify); !errors.Is(err, ErrBadFetch) {
		t.Fatalf("damaged chunk, lying source: %v, want ErrBadFetch", err)
	}
	s2.SetFetcher(func(meta.ChunkID) ([]byte, error) { return bytes.Clone(good), nil })
	if got, err := s2.GetVerify(payloadHit, nil, verify); err != nil || !bytes.Equal(got, good) {
		t.Fatalf("damaged chunk, good source: %v", err)
	}
	s2.SetFetcher(nil)
	if got, err := s2.Get(payloadHit, nil); err != nil || !bytes.Equal(got, good) {
		t.Fatalf("the refetched chunk is not kept: %v", err)
	}
	s2.Close()
}

// TestPackCompaction: deleting most chunks (files removed, cache
// evictions) frees their disk space at the next Sync: the packs that are
// mostly dead are rewritten with their live chunks, which all read back,
// before and after a reopen; the deleted ones stay deleted.
func TestPackCompaction(t *testing.T) {
	smallPacks(t, 32<<10)
	rng := rand.New(rand.NewPCG(5, 6))
	dir := filepath.Join(t.TempDir(), "store")
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := fillStore(t, s, rng, 600)
	du := func() int64 {
		var n int64
		for _, p := range packFiles(t, dir) {
			st, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			n += st.Size()
		}
		return n
	}
	before := du()
	deleted := map[meta.ChunkID]bool{}
	for id := range m {
		if rng.IntN(10) < 8 {
			if err := s.Delete(id); err != nil {
				t.Fatal(err)
			}
			deleted[id] = true
			delete(m, id)
		}
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	after := du()
	if after > before/2 {
		t.Fatalf("after deleting 80%% of the chunks the packs take %d bytes, %d before", after, before)
	}
	checkAll(t, s, m)
	_, size, live := s.packs.stats()
	if live*2 < size-packTarget {
		t.Fatalf("after compaction %d of %d bytes are live", live, size)
	}
	s.Close()
	s2, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	checkAll(t, s2, m)
	for id := range deleted {
		if _, err := s2.Get(id, nil); !errors.Is(err, ErrNotFound) {
			t.Fatalf("deleted chunk %s after compaction and reopen: %v", id, err)
		}
	}
	n := 0
	s2.List(func(meta.ChunkID) error { n++; return nil }, nil)
	if n != len(m) {
		t.Fatalf("list: %d chunks, want %d", n, len(m))
	}
}

// TestFetchVerifiesBeforeKeeping: a chunk fetched from the network is
// verified before the store keeps it: a lying source gives an error and
// leaves nothing behind (so the next read asks the network again, instead
// of reading the bad copy forever), and a good source afterwards works and
// its copy is kept.
func TestFetchVerifiesBeforeKeeping(t *testing.T) {
	for _, format := range []int{FormatFiles, FormatPacks} {
		t.Run(fmt.Sprintf("format%d", format), func(t *testing.T) {
			s, err := OpenFormat(filepath.Join(t.TempDir(), "store"), format)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			id := NewID()
			good := []byte("the sealed chunk, as written")
			verify := func(b []byte) error {
				if !bytes.Equal(b, good) {
					return errors.New("message authentication failed")
				}
				return nil
			}
			calls := 0
			s.SetFetcher(func(meta.ChunkID) ([]byte, error) { calls++; return []byte("a lying node's bytes!!"), nil })
			for range 2 {
				if _, err := s.GetVerify(id, nil, verify); !errors.Is(err, ErrBadFetch) {
					t.Fatalf("lying source: %v, want ErrBadFetch", err)
				}
				if _, ok := s.Has(id); ok {
					t.Fatal("the store kept a chunk that failed verification")
				}
			}
			if calls != 2 {
				t.Fatalf("the second read asked the network %d times in all, want 2 (no bad copy kept)", calls)
			}
			s.SetFetcher(func(meta.ChunkID) ([]byte, error) { return bytes.Clone(good), nil })
			if got, err := s.GetVerify(id, nil, verify); err != nil || !bytes.Equal(got, good) {
				t.Fatalf("good source: %q, %v", got, err)
			}
			s.SetFetcher(nil)
			if got, err := s.Get(id, nil); err != nil || !bytes.Equal(got, good) {
				t.Fatalf("the verified chunk is not kept: %q, %v", got, err)
			}
		})
	}
}

// TestUpgradePowerLoss converts a format 1 store to packs and cuts the
// power at a random chunk of the conversion; after the "reboot" the store
// opens with every chunk (from its file or its pack), and a rerun of the
// upgrade finishes: format 2, no chunk files left, every chunk intact.
func TestUpgradePowerLoss(t *testing.T) {
	smallPacks(t, 8<<10)
	runs := powerloss.Runs(t, 20)
	for seed := 0; seed < runs; seed++ {
		rng := rand.New(rand.NewPCG(uint64(seed), 31))
		mem := newMem(t)
		const dir = "/vault/store"
		var fsys vfs.FS = mem
		if seed%2 == 1 {
			fsys = eagerRemoveFS{mem}
		}
		s, err := OpenFSFormat(dir, fsys, FormatFiles)
		if err != nil {
			t.Fatal(err)
		}
		m := map[meta.ChunkID][]byte{}
		for range 40 + rng.IntN(40) {
			id := NewID()
			m[id] = randBytes(rng, 50+rng.IntN(2000))
			if err := s.Put(id, bytes.Clone(m[id])); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Sync(); err != nil {
			t.Fatal(err)
		}
		at := 1 + rng.IntN(len(m)+len(m)/2) // past the end: a cut after it returned
		var clone *vfs.MemFS
		upgradeHook = func(moved int) {
			if moved == at && clone == nil {
				clone = mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(60), RNG: rand.New(rand.NewPCG(uint64(seed), 32))})
			}
		}
		upgradeBatchTest(t, 4<<10)
		if err := s.Upgrade(nil); err != nil {
			t.Fatal(err)
		}
		upgradeHook = nil
		finished := clone == nil
		if finished {
			clone = mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(60), RNG: rand.New(rand.NewPCG(uint64(seed), 33))})
		}
		s.Close()
		s2, err := OpenFS(dir, clone)
		if err != nil {
			t.Fatalf("seed %d: store after a cut during its upgrade: %v", seed, err)
		}
		checkAll(t, s2, m)
		if finished && (s2.Format() != FormatPacks || s2.loose) {
			// An upgrade that returned is durable.
			t.Fatalf("seed %d: a cut after the upgrade returned: format %d, chunk files left: %v", seed, s2.Format(), s2.loose)
		}
		if err := s2.Upgrade(nil); err != nil {
			t.Fatalf("seed %d: upgrade rerun: %v", seed, err)
		}
		s2.Close()
		s3, err := OpenFS(dir, clone)
		if err != nil {
			t.Fatal(err)
		}
		if s3.Format() != FormatPacks || s3.loose {
			t.Fatalf("seed %d: after the rerun: format %d, chunk files left: %v", seed, s3.Format(), s3.loose)
		}
		checkAll(t, s3, m)
		n := 0
		s3.List(func(meta.ChunkID) error { n++; return nil }, func(p string) { t.Errorf("seed %d: stray %s", seed, p) })
		if n != len(m) {
			t.Fatalf("seed %d: %d chunks listed, want %d", seed, n, len(m))
		}
		s3.Close()
	}
}

func upgradeBatchTest(t *testing.T, n int) {
	old := upgradeBatch
	upgradeBatch = n
	t.Cleanup(func() { upgradeBatch = old })
}

// TestDeleteDuringUpgrade: a store cut half-way through its upgrade holds
// some chunks in packs and the rest still in their old files. A deletion
// removes either kind for good: after a sync and a power cut, neither
// comes back, and the other chunks are intact.
func TestDeleteDuringUpgrade(t *testing.T) {
	smallPacks(t, 8<<10)
	mem := newMem(t)
	const dir = "/vault/store"
	s, err := OpenFSFormat(dir, mem, FormatFiles)
	if err != nil {
		t.Fatal(err)
	}
	m := fillStore(t, s, rand.New(rand.NewPCG(5, 6)), 40)
	var half *vfs.MemFS
	upgradeHook = func(moved int) {
		if moved == len(m)/2 && half == nil {
			half = mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 0})
		}
	}
	t.Cleanup(func() { upgradeHook = nil })
	upgradeBatchTest(t, 4<<10)
	if err := s.Upgrade(nil); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if half == nil {
		t.Fatal("the upgrade never reached half-way")
	}
	s2, err := OpenFS(dir, half)
	if err != nil {
		t.Fatal(err)
	}
	if !s2.loose || s2.packs == nil {
		t.Fatal("the store cut half-way holds no chunk files or no packs: the test cannot tell")
	}
	// A chunk only in its old file, and one already copied into a pack
	// whose old file the upgrade has not removed yet.
	var inFile, inBoth meta.ChunkID
	for id := range m {
		_, err := half.Stat(s2.Path(id))
		switch packed := s2.packs.lookup(id) != nil; {
		case err == nil && !packed:
			inFile = id
		case err == nil && packed:
			inBoth = id
		}
	}
	if inFile == (meta.ChunkID{}) || inBoth == (meta.ChunkID{}) {
		t.Fatalf("half-way: a chunk in its file %v, in a pack and its file %v; want one of each", inFile, inBoth)
	}
	for _, id := range []meta.ChunkID{inFile, inBoth} {
		if err := s2.Delete(id); err != nil {
			t.Fatal(err)
		}
		delete(m, id)
	}
	if err := s2.Sync(); err != nil {
		t.Fatal(err)
	}
	cut := half.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 0})
	s2.Close()
	s3, err := OpenFS(dir, cut)
	if err != nil {
		t.Fatal(err)
	}
	defer s3.Close()
	for what, id := range map[string]meta.ChunkID{"its old file": inFile, "a pack and its old file": inBoth} {
		if _, err := s3.Get(id, nil); err == nil {
			t.Fatalf("a chunk deleted from %s came back after a sync and a power cut", what)
		}
	}
	checkAll(t, s3, m)
}

// TestCompactionCarriesDeletionsOfOlderPacks: a deletion is a record in
// the pack active when it was made, while the deleted chunk's record stays
// in its older pack. Compacting the pack that holds the deletion must carry
// the deletion over while that older pack remains, or the deleted chunk is
// back at the next open.
func TestCompactionCarriesDeletionsOfOlderPacks(t *testing.T) {
	mem := newMem(t)
	const dir = "/vault/store"
	s, put, seqOf := smallPackStore(t, mem, dir, 8, 9)
	// The deleted chunk, in a pack kept whole by live chunks beside it.
	gone := put(500)
	var keep, doomed []meta.ChunkID
	for {
		id := put(1000)
		if seqOf(id) != seqOf(gone) {
			doomed = append(doomed, id)
			break
		}
		keep = append(keep, id)
	}
	// The next pack: chunks deleted later, so that it is worth compacting,
	// and the deletion of the first chunk.
	for range 3 {
		doomed = append(doomed, put(1000))
	}
	next := seqOf(doomed[0])
	if err := s.Delete(gone); err != nil {
		t.Fatal(err)
	}
	for _, id := range doomed {
		if err := s.Delete(id); err != nil {
			t.Fatal(err)
		}
	}
	// Move on to newer packs, so that the one holding the deletions is not
	// the active one.
	for {
		if id := put(1000); seqOf(id) > next+1 {
			break
		}
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Compact(); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2, err := OpenFS(dir, mem)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if _, err := s2.Get(gone, nil); err == nil {
		t.Fatal("a deleted chunk came back once the pack holding its deletion was compacted")
	}
	for _, id := range keep {
		if _, err := s2.Get(id, nil); err != nil {
			t.Fatalf("live chunk %s lost: %v", id, err)
		}
	}
}
