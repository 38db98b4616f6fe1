package chunkstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/fincrypt/fincrypt/meta"
)

// packState is what opening a store built in memory: where each chunk is,
// which records failed their checksum, and each pack's live bytes and
// deletions.
type packState struct {
	chunks  map[meta.ChunkID][3]int64 // pack, offset, length
	damaged map[meta.ChunkID]bool
	live    map[uint64]int64
	dels    map[uint64]int
}

func stateOf(ps *packSet) packState {
	ps.mu.RLock()
	defer ps.mu.RUnlock()
	st := packState{chunks: map[meta.ChunkID][3]int64{}, damaged: map[meta.ChunkID]bool{}, live: map[uint64]int64{}, dels: map[uint64]int{}}
	for id, l := range ps.chunks.all() {
		st.chunks[id] = [3]int64{int64(ps.slots[l.pack].seq), int64(l.off), int64(l.n)}
	}
	for id := range ps.damaged {
		st.damaged[id] = true
	}
	for seq, p := range ps.packs {
		st.live[seq] = p.live
		st.dels[seq] = len(p.dels)
	}
	return st
}

// scanned loads the packs under dir read-only, scanning every record and
// ignoring the indexes: what the store held before indexes.
func scanned(t *testing.T, dir string, sys fileSystem) (*packSet, packState) {
	t.Helper()
	ps := newPackSet(filepath.Join(dir, packsDir), sys, true)
	ps.noIndex = true
	if err := ps.load(); err != nil {
		t.Fatalf("scan of %s: %v", dir, err)
	}
	return ps, stateOf(ps)
}

// sameState fails unless the store's map (loaded from indexes) is the one
// a scan of every record gives. A chunk record that the index marks damaged
// (its payload failed its checksum when the pack was last scanned with
// payloads checked) may be in the scan's map only if it does not read.
func sameState(t *testing.T, what string, got packState, scan *packSet, want packState) {
	t.Helper()
	for id, w := range want.chunks {
		g, ok := got.chunks[id]
		if !ok && got.damaged[id] {
			l := scan.lookup(id)
			l.p.mu.RLock()
			_, err := readRecord(l, id, nil)
			l.p.mu.RUnlock()
			if err == nil {
				t.Fatalf("%s: chunk %s is marked damaged by the index, and reads in the scan", what, id)
			}
			continue
		}
		if g != w {
			t.Fatalf("%s: chunk %s at %v (pack, offset, length), the scan finds it at %v", what, id, g, w)
		}
	}
	for id, g := range got.chunks {
		if _, ok := want.chunks[id]; !ok {
			t.Fatalf("%s: chunk %s at %v is not in the scan", what, id, g)
		}
	}
	for id := range want.damaged {
		if !got.damaged[id] {
			t.Fatalf("%s: chunk %s is damaged in the scan, not with the index", what, id)
		}
	}
	if len(got.damaged) == 0 {
		for seq, w := range want.live {
			if got.live[seq] != w || got.dels[seq] != want.dels[seq] {
				t.Fatalf("%s: pack %d: %d live bytes and %d deletions, the scan finds %d and %d", what, seq, got.live[seq], got.dels[seq], w, want.dels[seq])
			}
		}
	}
}

// indexWorkload fills a store with small packs holding chunks, chunks
// replaced by a later copy (fetched again), and deletions of chunks in
// older packs, and returns what it should hold.
func indexWorkload(t *testing.T, s *Store, rng *rand.Rand) (live map[meta.ChunkID][]byte, deleted map[meta.ChunkID]bool) {
	t.Helper()
	live, deleted = map[meta.ChunkID][]byte{}, map[meta.ChunkID]bool{}
	var order []meta.ChunkID
	for i := range 400 {
		id := NewID()
		b := randBytes(rng, 50+rng.IntN(700))
		if err := s.Put(id, b); err != nil {
			t.Fatal(err)
		}
		live[id] = b
		order = append(order, id)
		if i%7 == 6 {
			victim := order[rng.IntN(len(order))]
			if _, ok := live[victim]; ok {
				if err := s.Delete(victim); err != nil {
					t.Fatal(err)
				}
				deleted[victim] = true
				if rng.IntN(2) == 0 {
					// Evicted, then fetched again: a newer copy.
					b := live[victim]
					if err := s.Put(victim, b); err != nil {
						t.Fatal(err)
					}
					delete(deleted, victim)
				} else {
					delete(live, victim)
				}
			}
		}
		if i%50 == 49 {
			if err := s.Sync(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	return live, deleted
}

func checkDeleted(t *testing.T, s *Store, deleted map[meta.ChunkID]bool) {
	t.Helper()
	for id := range deleted {
		if _, err := s.Get(id, nil); !errors.Is(err, ErrNotFound) {
			t.Fatalf("deleted chunk %s: %v, want ErrNotFound", id, err)
		}
	}
}

// TestPackIndex: a store reopened after a clean close reads every pack's
// index and scans no record, and what it loads is exactly what a scan of
// every record gives (chunks, newer copies, deletions across packs, live
// bytes); a store whose packs have no index (written before indexes) opens
// by scanning them, gives each its index, and the next open reads those.
func TestPackIndex(t *testing.T) {
	smallPacks(t, 8<<10)
	rng := rand.New(rand.NewPCG(7, 8))
	dir := filepath.Join(t.TempDir(), "store")
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	live, deleted := indexWorkload(t, s, rng)
	s.Close()
	npacks := len(packFiles(t, dir))
	if npacks < 10 {
		t.Fatalf("only %d packs", npacks)
	}
	reopen(t, dir, "after a clean close", npacks, 0, live, deleted).Close()

	// The same store as a fincrypt before indexes left it: no index.
	for _, p := range packFiles(t, dir) {
		stripIndex(t, p)
	}
	s3 := reopen(t, dir, "packs without an index", 0, npacks, live, deleted)
	if err := s3.Sync(); err != nil {
		t.Fatal(err)
	}
	s3.Close()
	reopen(t, dir, "the indexes written at the open before", npacks, 0, live, deleted).Close()
}

// reopen opens the store in dir and checks it: how many packs were read
// from their index and how many were scanned, that every live chunk reads
// back and no deleted one does, and that its map equals a full scan's.
func reopen(t *testing.T, dir, what string, indexed, scans int, live map[meta.ChunkID][]byte, deleted map[meta.ChunkID]bool) *Store {
	t.Helper()
	s, err := Open(dir)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if s.packs.indexed != indexed || s.packs.scanned != scans {
		s.Close()
		t.Fatalf("%s: %d packs read from their index and %d scanned, want %d and %d", what, s.packs.indexed, s.packs.scanned, indexed, scans)
	}
	checkAll(t, s, live)
	checkDeleted(t, s, deleted)
	scan, want := scanned(t, dir, osFS{})
	sameState(t, what, stateOf(s.packs), scan, want)
	scan.close()
	return s
}

// indexAt returns the offset of pack p's index record (p must have one).
func indexAt(t *testing.T, path string) (at, size int64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	tr := b[len(b)-idxTrailerSize:]
	if string(tr[:8]) != idxMagic {
		t.Fatalf("%s has no index", path)
	}
	return int64(binary.LittleEndian.Uint64(tr[8:])), int64(len(b))
}

// stripIndex cuts a pack's index off, as packs were before indexes.
func stripIndex(t *testing.T, path string) {
	t.Helper()
	at, _ := indexAt(t, path)
	if err := os.Truncate(path, at); err != nil {
		t.Fatal(err)
	}
}

// rewriteIndex lets edit change an index payload (entries and trailer),
// then makes the index claim this pack (its number, the trailer's record
// offset) and fixes its checksums, as a writer with a bug would leave it:
// only the structure checks and the pack's records can refuse it.
func rewriteIndex(t *testing.T, path string, edit func(pl []byte)) {
	t.Helper()
	at, _ := indexAt(t, path)
	b, _ := os.ReadFile(path)
	rec := b[at:]
	pl := rec[recHeaderSize:]
	edit(pl)
	tr := pl[len(pl)-idxTrailerSize:]
	binary.LittleEndian.PutUint64(tr[8:], uint64(at))
	binary.LittleEndian.PutUint32(tr[20:], crc32.Checksum(tr[:20], castagnoli))
	var hid meta.ChunkID
	copy(hid[:], rec[8:24])
	binary.LittleEndian.PutUint64(hid[:], packSeq(t, path))
	putRecHeader(rec, kindIndex, hid, pl)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestPackIndexDamaged: an index that is torn, damaged, another pack's, or
// wrong about its pack is never used: the pack is scanned, every chunk reads
// back and no deleted chunk returns (the map is what a scan gives), and
// the pack gets a good index that the next open reads.
func TestPackIndexDamaged(t *testing.T) {
	smallPacks(t, 8<<10)
	type damage struct {
		name string
		do   func(t *testing.T, path, other string)
	}
	flipAt := func(t *testing.T, path string, off int64) {
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		b := []byte{0}
		f.ReadAt(b, off)
		b[0] ^= 0x10
		f.WriteAt(b, off)
	}
	damages := []damage{
		{"entry offset", func(t *testing.T, path, _ string) {
			// One entry points at the next chunk record: the index's
			// checksum no longer matches.
			at, _ := indexAt(t, path)
			b, _ := os.ReadFile(path)
			pl := b[at+recHeaderSize:]
			o1 := binary.LittleEndian.Uint64(pl[idxEntrySize:])
			binary.LittleEndian.PutUint64(pl, o1)
			os.WriteFile(path, b, 0o600)
		}},
		{"middle entry offset, checksums fixed", func(t *testing.T, path, _ string) {
			// A middle entry points at the next record, checksummed:
			// the entries overlap.
			rewriteIndex(t, path, func(pl []byte) {
				e := entries(pl)
				k := len(e) / 2
				copy(pl[e[k]:e[k]+8], pl[e[k+1]:e[k+1]+8])
			})
		}},
		{"entry past the records, checksums fixed", func(t *testing.T, path, _ string) {
			rewriteIndex(t, path, func(pl []byte) {
				e := pl[len(pl)-idxTrailerSize-idxEntrySize:]
				binary.LittleEndian.PutUint64(e, binary.LittleEndian.Uint64(e)+100)
			})
		}},
		{"first entry's id, checksums fixed", func(t *testing.T, path, _ string) {
			rewriteIndex(t, path, func(pl []byte) { pl[20] ^= 1 })
		}},
		{"last entry's length, checksums fixed", func(t *testing.T, path, _ string) {
			rewriteIndex(t, path, func(pl []byte) {
				e := entries(pl)
				o := e[len(e)-1]
				binary.LittleEndian.PutUint32(pl[o+8:], binary.LittleEndian.Uint32(pl[o+8:])-1)
			})
		}},
		{"entry count, checksums fixed", func(t *testing.T, path, _ string) {
			rewriteIndex(t, path, func(pl []byte) {
				tr := pl[len(pl)-idxTrailerSize:]
				binary.LittleEndian.PutUint32(tr[16:], binary.LittleEndian.Uint32(tr[16:])-1)
			})
		}},
		{"entry count of 4 billion, checksums fixed", func(t *testing.T, path, _ string) {
			// Opening sizes the chunk table from the counts before it
			// checks any index: this one must not size it for them.
			rewriteIndex(t, path, func(pl []byte) {
				binary.LittleEndian.PutUint32(pl[len(pl)-idxTrailerSize+16:], 1<<32-1)
			})
		}},
		{"flipped id", func(t *testing.T, path, _ string) {
			at, _ := indexAt(t, path)
			flipAt(t, path, at+recHeaderSize+20)
		}},
		{"flipped id in a middle entry", func(t *testing.T, path, _ string) {
			at, _ := indexAt(t, path)
			b, _ := os.ReadFile(path)
			e := entries(b[at+recHeaderSize:])
			flipAt(t, path, at+recHeaderSize+int64(e[len(e)/2])+20)
		}},
		{"flipped trailer", func(t *testing.T, path, _ string) {
			_, size := indexAt(t, path)
			flipAt(t, path, size-10)
		}},
		{"torn", func(t *testing.T, path, _ string) {
			at, size := indexAt(t, path)
			os.Truncate(path, at+(size-at)/2)
		}},
		{"zeroed block", func(t *testing.T, path, _ string) {
			// A block of the index lost in a power cut, its trailer kept.
			at, _ := indexAt(t, path)
			f, _ := os.OpenFile(path, os.O_RDWR, 0)
			f.WriteAt(make([]byte, 64), at+recHeaderSize+8)
			f.Close()
		}},
		{"appended after", func(t *testing.T, path, _ string) {
			f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
			f.Write(make([]byte, 40))
			f.Close()
		}},
		{"another pack's index", func(t *testing.T, path, other string) {
			// The index of the pack after it, in place of its own: it
			// names another pack.
			at, _ := indexAt(t, other)
			b, _ := os.ReadFile(other)
			stripIndex(t, path)
			f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
			f.Write(b[at:])
			f.Close()
		}},
		{"another pack's index, renumbered", func(t *testing.T, path, other string) {
			// As above, made to claim this pack, checksums fixed: its
			// entries do not match the records.
			at, _ := indexAt(t, other)
			b, _ := os.ReadFile(other)
			stripIndex(t, path)
			f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
			f.Write(b[at:])
			f.Close()
			rewriteIndex(t, path, func([]byte) {})
		}},
	}
	for i, d := range damages {
		t.Run(d.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(9, uint64(i)))
			dir := filepath.Join(t.TempDir(), "store")
			s, err := Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			live, deleted := indexWorkload(t, s, rng)
			s.Close()
			packs := packFiles(t, dir)
			victim := len(packs) / 2
			d.do(t, packs[victim], packs[victim+1])
			s2 := reopen(t, dir, "a damaged index", len(packs)-1, 1, live, deleted)
			// The chunk table holds no more entries than the packs have
			// room for index entries (and growth): a damaged count in a
			// trailer sized it for 67 million chunks (2 GB) before.
			var bytes int64
			for _, p := range packs {
				if fi, err := os.Stat(p); err == nil {
					bytes += fi.Size()
				}
			}
			if n, most := len(s2.packs.chunks.ents), tableMinSize+int(2*float64(bytes/idxEntrySize)/tableOpenLoad); n > most {
				t.Errorf("the chunk table has %d entries for %d bytes of packs, want at most %d", n, bytes, most)
			}
			if err := s2.Sync(); err != nil {
				t.Fatal(err)
			}
			s2.Close()
			reopen(t, dir, "the damaged index replaced", len(packs), 0, live, deleted).Close()
		})
	}
}

// entries returns where each entry of an index payload starts.
func entries(pl []byte) []int {
	var out []int
	for o := 0; o < len(pl)-idxTrailerSize; {
		out = append(out, o)
		if pl[o+12] == kindDelete {
			o += idxDelSize
		} else {
			o += idxEntrySize
		}
	}
	return out
}

func packSeq(t *testing.T, path string) uint64 {
	t.Helper()
	var seq uint64
	if _, err := fmt.Sscanf(filepath.Base(path), "%016x.pack", &seq); err != nil {
		t.Fatal(err)
	}
	return seq
}

// blockingSyncFS holds the first Sync of a pack until released.
type blockingSyncFS struct {
	vfs.FS
	once     sync.Once
	entered  chan struct{}
	released chan struct{}
	reads    bool // files opened to read hold their Sync too (chunk files are synced so)
}

func (b *blockingSyncFS) Open(name string, opts ...vfs.OpenOption) (vfs.File, error) {
	f, err := b.FS.Open(name, opts...)
	if err != nil || !b.reads {
		return f, err
	}
	return blockingSyncFile{f, b}, nil
}

type blockingSyncFile struct {
	vfs.File
	fs *blockingSyncFS
}

func (b *blockingSyncFS) OpenReadWrite(name string, cat vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	f, err := b.FS.OpenReadWrite(name, cat, opts...)
	if err != nil {
		return nil, err
	}
	return blockingSyncFile{f, b}, nil
}

func (f blockingSyncFile) Sync() error {
	first := false
	f.fs.once.Do(func() { first = true })
	if first {
		close(f.fs.entered)
		<-f.fs.released
	}
	return f.File.Sync()
}

// TestSyncWaitsForSyncUnderWay: two chunks put, the first fsync (or the
// background sync that frees deleted chunks) starts syncing the pack, and a
// second fsync for the other chunk comes while that sync is under way: it
// must not return before the chunk is on the disk (it found nothing left
// to sync, since the first sync took the pack, and returned at once).
func TestSyncWaitsForSyncUnderWay(t *testing.T) {
	mem := newMem(t)
	bfs := &blockingSyncFS{FS: mem, entered: make(chan struct{}), released: make(chan struct{})}
	s, err := OpenFS("/vault/store", bfs)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a, b := NewID(), NewID()
	if err := s.Put(a, []byte("first file")); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(b, []byte("second file")); err != nil {
		t.Fatal(err)
	}
	clone := syncWhileHeld(t, mem, bfs, func() error { return s.SyncIDs([]meta.ChunkID{a}) }, func() error { return s.SyncIDs([]meta.ChunkID{b}) })
	s2, err := OpenFS("/vault/store", clone)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if got, err := s2.Get(b, nil); err != nil || !bytes.Equal(got, []byte("second file")) {
		t.Fatalf("a chunk whose sync returned is lost in a power cut: %q, %v", got, err)
	}
}

// TestSyncWaitsForSyncUnderWayFiles: the same in a store of chunk files
// (format 1). The first Sync takes both chunks and is held in an fsync; a
// second Sync, which must cover both, waits for it (it found nothing left
// to sync and returned at once).
func TestSyncWaitsForSyncUnderWayFiles(t *testing.T) {
	mem := newMem(t)
	bfs := &blockingSyncFS{FS: mem, entered: make(chan struct{}), released: make(chan struct{}), reads: true}
	s, err := OpenFSFormat("/vault/store", bfs, FormatFiles)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	chunks := map[meta.ChunkID][]byte{NewID(): []byte("first file"), NewID(): []byte("second file")}
	for id, b := range chunks {
		// A copy: under the race detector's build Pebble's in-memory
		// file scribbles over the buffers written to it.
		if err := s.Put(id, bytes.Clone(b)); err != nil {
			t.Fatal(err)
		}
	}
	clone := syncWhileHeld(t, mem, bfs, s.Sync, s.Sync)
	s2, err := OpenFSFormat("/vault/store", clone, FormatFiles)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	for id, want := range chunks {
		if got, err := s2.Get(id, nil); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("a chunk whose sync returned is lost in a power cut: %q, %v", got, err)
		}
	}
}

// syncWhileHeld runs first until its fsync is held in bfs, then second,
// and returns what a power cut leaves on mem once second has returned
// (first still held, if second did not wait for it).
func syncWhileHeld(t *testing.T, mem *vfs.MemFS, bfs *blockingSyncFS, first, second func() error) *vfs.MemFS {
	t.Helper()
	firstDone := make(chan error, 1)
	go func() { firstDone <- first() }()
	<-bfs.entered
	secondDone := make(chan error, 1)
	go func() { secondDone <- second() }()
	var clone *vfs.MemFS
	select {
	case err := <-secondDone:
		// Returned while the first sync is held: what is on the disk now
		// is all a power cut would leave.
		if err != nil {
			t.Fatal(err)
		}
		clone = mem.CrashClone(vfs.CrashCloneCfg{})
		close(bfs.released)
	case <-time.After(2 * time.Second):
		// Waiting, as it should: let the first sync finish.
		close(bfs.released)
		if err := <-secondDone; err != nil {
			t.Fatal(err)
		}
		clone = mem.CrashClone(vfs.CrashCloneCfg{})
	}
	if err := <-firstDone; err != nil {
		t.Fatal(err)
	}
	return clone
}
