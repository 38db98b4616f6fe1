package chunkstore

// Tests written against the mutants that outlived the chunk store's own
// tests (issue 21, docs/TESTING.md lists each with its mutant): format
// boundaries, hostile pack contents, and what a torn tail leaves.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/fincrypt/fincrypt/meta"
)

// TestParseFormatBounds: FORMAT names format 1 or 2; anything else is
// refused.
func TestParseFormatBounds(t *testing.T) {
	for text, want := range map[string]int{
		"fincrypt chunk store 1\n": FormatFiles,
		"fincrypt chunk store 2\n": FormatPacks,
		"fincrypt chunk store 2":   FormatPacks,
	} {
		if got, err := parseFormat([]byte(text)); err != nil || got != want {
			t.Errorf("parseFormat(%q) = %d, %v; want %d", text, got, err, want)
		}
	}
	for _, text := range []string{
		"fincrypt chunk store 0\n",
		"fincrypt chunk store -1\n",
		"fincrypt chunk store 3\n",
		"fincrypt chunk store two\n",
		"fincrypt chunk store\n",
		"some other store 2\n",
		"",
	} {
		if got, err := parseFormat([]byte(text)); err == nil {
			t.Errorf("parseFormat(%q) = %d, want an error", text, got)
		}
	}
}

// writePack writes into f a pack holding a header and, for each
// payload, a chunk record; it returns the records' index entries and the
// pack's size.
func writePack(t *testing.T, f packFile, seq uint64, ids []meta.ChunkID, payloads [][]byte) ([]idxEntry, int64) {
	t.Helper()
	var h [packHeaderSize]byte
	copy(h[:], packMagic)
	binary.LittleEndian.PutUint64(h[8:], seq)
	if _, err := f.WriteAt(h[:], 0); err != nil {
		t.Fatal(err)
	}
	off := int64(packHeaderSize)
	var ents []idxEntry
	for i, pl := range payloads {
		var rh [recHeaderSize]byte
		putRecHeader(rh[:], kindChunk, ids[i], pl)
		if err := f.writeRecord(rh[:], pl, off); err != nil {
			t.Fatal(err)
		}
		ents = append(ents, idxEntry{off: off, n: uint32(len(pl)), kind: kindChunk, id: ids[i]})
		off += recHeaderSize + int64(len(pl))
	}
	return ents, off
}

// TestReadIndexBounds: every index the writer makes is read back, the
// index of a pack without records included (its entries checked only when
// it has some); a trailer that places the index record anywhere it cannot
// be (in the pack's header, too close to the end for a record header and
// a trailer, past the end) is refused, not read past the file.
// Mutants: index.go:108 and :119 (each bound moved or its arithmetic
// inverted), :137 (`len(body) > 0` → `>=`: the first entry of an empty
// index read).
func TestReadIndexBounds(t *testing.T) {
	sys := vfsFS{vfs.NewMem()}
	rng := rand.New(rand.NewPCG(21, 1))
	for nrec := range 4 {
		path := filepath.Join("/", packName(uint64(nrec+1)))
		f, err := sys.openPack(path, true, true)
		if err != nil {
			t.Fatal(err)
		}
		var ids []meta.ChunkID
		var pls [][]byte
		for range nrec {
			ids = append(ids, NewID())
			pls = append(pls, randBytes(rng, 1+rng.IntN(300)))
		}
		ents, at := writePack(t, f, uint64(nrec+1), ids, pls)
		idx := encodeIndex(uint64(nrec+1), 1234, ents, at)
		if _, err := f.WriteAt(idx, at); err != nil {
			t.Fatal(err)
		}
		size := at + int64(len(idx))
		p := &pack{seq: uint64(nrec + 1), path: path, f: f}
		pl, sealed, ok := readIndex(p, size)
		if !ok || sealed != 1234 {
			t.Fatalf("%d records: the index written is not read back (ok %v, sealed %d)", nrec, ok, sealed)
		}
		ps := newPackSet("/", sys, true)
		ps.applyIndex(p, pl, sealed)
		if ps.chunks.len() != nrec {
			t.Fatalf("%d records: the index gives %d chunks", nrec, ps.chunks.len())
		}

		// The trailer moved to claim an index record elsewhere (checksum
		// of the trailer fixed): refused without reading past the file.
		tr := make([]byte, idxTrailerSize)
		copy(tr, idx[len(idx)-idxTrailerSize:])
		for _, bad := range []int64{0, packHeaderSize - 1, size - recHeaderSize - idxTrailerSize + 1,
			size - idxTrailerSize - 8, size - idxTrailerSize, size - 1, size, size + 8, 1 << 62} {
			binary.LittleEndian.PutUint64(tr[8:], uint64(bad))
			binary.LittleEndian.PutUint32(tr[20:], crc32.Checksum(tr[:20], castagnoli))
			if _, err := f.WriteAt(tr, size-idxTrailerSize); err != nil {
				t.Fatal(err)
			}
			if _, _, ok := readIndex(p, size); ok {
				t.Fatalf("%d records: a trailer placing the index at %d of %d bytes is taken", nrec, bad, size)
			}
		}
		f.Close()
	}

	// A store whose only pack holds no record and an (empty) index opens
	// from that index.
	mem := newMem(t)
	s, err := OpenFS("/vault/store", mem)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	path := filepath.Join("/vault/store", packsDir, packName(1))
	f, err := vfsFS{mem}.openPack(path, true, true)
	if err != nil {
		t.Fatal(err)
	}
	writePack(t, f, 1, nil, nil)
	if _, err := f.WriteAt(encodeIndex(1, 1, nil, packHeaderSize), packHeaderSize); err != nil {
		t.Fatal(err)
	}
	f.Close()
	s, err = OpenFS("/vault/store", mem)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.packs.indexed != 1 || s.packs.scanned != 0 {
		t.Fatalf("a pack with an index of no record: %d read from their index, %d scanned; want 1 and 0", s.packs.indexed, s.packs.scanned)
	}
}

// TestCheckIndexStructure: an index payload whose last entry is cut
// short (checksums fixed, as a writer with a bug would leave it) is
// refused, not read past its end; so are entries whose records overlap.
// Mutants: index.go:156 (`o+idxEntrySize` → `o-idxEntrySize`), :170
// (`o+size` → `o-size`: a deletion entry cut short), :179 (`off +
// recHeaderSize` → `-`: the end of an entry's record).
func TestCheckIndexStructure(t *testing.T) {
	ents := []idxEntry{
		{off: packHeaderSize, n: 100, kind: kindChunk, id: NewID()},
		{off: packHeaderSize + 132, n: deleteSize, kind: kindDelete, id: NewID(), dseq: 1, doff: packHeaderSize},
	}
	rec := encodeIndex(1, 1, ents, 1000)
	pl := rec[recHeaderSize:]
	if _, ok := checkIndex(pl); !ok {
		t.Fatal("a well-formed index is refused")
	}
	body, tr := pl[:len(pl)-idxTrailerSize], pl[len(pl)-idxTrailerSize:]
	for _, cut := range []int{1, 8, 10, 13, 20, 31, idxDelSize - 1, idxDelSize - 10} {
		// The payload with its last cut bytes of entries dropped, the
		// trailer as it was.
		short := append(append([]byte{}, body[:len(body)-cut]...), tr...)
		if _, ok := checkIndex(short); ok {
			t.Fatalf("an index with its last entry %d bytes short is taken", cut)
		}
	}
	// Entries whose records would overlap: the second starting inside the
	// first's payload, by one byte or by a record header's length.
	for _, back := range []int64{1, recHeaderSize - 1, recHeaderSize, recHeaderSize + 50} {
		over := append([]idxEntry{}, ents...)
		over[1].off -= back
		if _, ok := checkIndex(encodeIndex(1, 1, over, 1000)[recHeaderSize:]); ok {
			t.Fatalf("entries overlapping by %d bytes are taken", back)
		}
	}
}

// TestDeletionNeverDeletesANewerCopy: a deletion record deletes the record
// it names and older records of its chunk, never a newer one, also when
// the newer copy is later in the same pack (docs/FORMAT.md). The pack is
// written by hand: a chunk, a newer copy of it (a damaged copy replaced),
// then deletions of the first copy in that pack and in the next. Mutant:
// pack.go:110 (`l.p.seq < seq` → `<=`).
func TestDeletionNeverDeletesANewerCopy(t *testing.T) {
	mem := newMem(t)
	const dir = "/vault/store"
	s, err := OpenFS(dir, mem)
	if err != nil {
		t.Fatal(err)
	}
	id := NewID()
	if err := s.Put(id, []byte("first copy")); err != nil {
		t.Fatal(err)
	}
	first := s.packs.lookup(id)
	if err := s.packs.put(id, []byte("newer copy"), true); err != nil {
		t.Fatal(err)
	}
	var pl [deleteSize]byte
	binary.LittleEndian.PutUint64(pl[:], first.p.seq)
	binary.LittleEndian.PutUint64(pl[8:], uint64(first.off))
	s.packs.wmu.Lock()
	_, _, err = s.packs.appendRecord(kindDelete, id, pl[:])
	if err == nil {
		err = s.packs.rotate()
	}
	if err == nil {
		_, _, err = s.packs.appendRecord(kindDelete, id, pl[:])
	}
	s.packs.wmu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	// Synced without compaction (which would rewrite the pack).
	if err := s.SyncIDs([]meta.ChunkID{id}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = OpenFS(dir, mem)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.packs.indexed != 2 {
		t.Fatalf("%d packs read from their index, want 2", s.packs.indexed)
	}
	if got, err := s.Get(id, nil); err != nil || string(got) != "newer copy" {
		t.Fatalf("from the indexes: a deletion of the older copy took the newer one: %q, %v", got, err)
	}
	scan, _ := scanned(t, dir, vfsFS{mem})
	defer scan.close()
	if l := scan.lookup(id); l == nil || l.p.seq != first.p.seq || l.off <= first.off {
		t.Fatalf("scanned: a deletion of the older copy took the newer one (%v)", l)
	}
}

// TestPackAtTheSizeLimit: a pack of exactly maxPackSize bytes (the largest
// offset a slot holds) opens and its chunks read; one byte more is refused
// with a clear error. The pack is sparse: a chunk, a hole, its index.
// Mutant: pack.go:236 (`size > maxPackSize` → `>=`).
func TestPackAtTheSizeLimit(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	path := filepath.Join(dir, packsDir, packName(1))
	write := func(size int64) meta.ChunkID {
		os.Remove(path)
		f, err := osFS{}.openPack(path, true, true)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		id := NewID()
		ents, _ := writePack(t, f, 1, []meta.ChunkID{id}, [][]byte{[]byte("the chunk at the start of a full pack")})
		n := int64(len(encodeIndex(1, 1, ents, 0)))
		if _, err := f.WriteAt(encodeIndex(1, 1, ents, size-n), size-n); err != nil {
			t.Skipf("no sparse file of %d bytes here: %v", size, err)
		}
		return id
	}
	id := write(maxPackSize)
	s, err = Open(dir)
	if err != nil {
		t.Fatalf("a pack of exactly %d bytes: %v", int64(maxPackSize), err)
	}
	if got, err := s.Get(id, nil); err != nil || string(got) != "the chunk at the start of a full pack" {
		t.Fatalf("the chunk of a full pack: %q, %v", got, err)
	}
	s.Close()
	write(maxPackSize + 1)
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "more than a pack holds") {
		t.Fatalf("a pack one byte over the limit: %v, want refused", err)
	}
}

// TestTornPayloadInLastPack: after a power cut, the last pack (the one
// being written) can hold a whole record whose payload never reached the
// disk (the file's size was, its data not). The open checks the payloads
// of that pack: the record is not a chunk of the store (not listed, not
// counted, Has false, Get says ErrCorrupt), and its pack is not taken for
// damaged: compaction rewrites it and removes it. Mutants: pack.go:247
// (`i == len(seqs)-1` → `!=`, `-1` → `+1`: the last pack's payloads not
// checked).
func TestTornPayloadInLastPack(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 2))
	dir := filepath.Join(t.TempDir(), "store")
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := fillStore(t, s, rng, 20)
	torn := NewID()
	if err := s.Put(torn, randBytes(rng, 3000)); err != nil {
		t.Fatal(err)
	}
	l := s.packs.lookup(torn)
	pack := damageBarePack(t, s, dir, l.off+recHeaderSize+500, make([]byte, 2000))

	s2, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	checkAll(t, s2, m)
	if _, ok := s2.Has(torn); ok {
		t.Fatal("a record whose payload fails its checksum in the last pack is a chunk of the store")
	}
	if _, err := s2.Get(torn, nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("the torn chunk: %v, want ErrCorrupt", err)
	}
	var want int64
	n := 0
	s2.List(func(id meta.ChunkID) error {
		if id == torn {
			t.Error("the torn chunk is listed")
		}
		n++
		want += int64(len(m[id]))
		return nil
	}, nil)
	if got, _ := s2.Bytes(); got != want || n != len(m) {
		t.Fatalf("%d chunks of %d bytes, want %d of %d", n, got, len(m), want)
	}
	if _, err := s2.Compact(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(pack); !os.IsNotExist(err) {
		t.Fatalf("the pack with the torn record was taken for damaged and kept: %v", err)
	}
	checkAll(t, s2, m)
	if err := s2.Sync(); err != nil {
		t.Fatal(err)
	}
}

// TestIndexedRecordsHint: the size hint that presizes the map at open is
// the number of records the packs' indexes list (each index read and
// checked here), leaving out a pack without an index and one whose
// trailer is damaged: a wrong hint grows the map while loading, or (a
// count read from bytes that are no trailer) allocates up to 1<<26 slots.
// Mutants: pack.go:267, :271, :272 (each check negated, the trailer's
// offset moved).
func TestIndexedRecordsHint(t *testing.T) {
	smallPacks(t, 8<<10)
	rng := rand.New(rand.NewPCG(21, 3))
	dir := filepath.Join(t.TempDir(), "store")
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	indexWorkload(t, s, rng)
	s.Close()
	packs := packFiles(t, dir)
	if len(packs) < 5 {
		t.Fatalf("only %d packs", len(packs))
	}
	stripIndex(t, packs[1])
	// packs[1] has no index: its last bytes (a record's), taken for a
	// trailer, would claim any number of records.
	f, err := os.OpenFile(packs[2], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, size := indexAt(t, packs[2])
	f.WriteAt([]byte("XX"), size-idxTrailerSize) // the magic damaged
	f.Close()
	sys := osFS{}
	ps := newPackSet(filepath.Join(dir, packsDir), sys, true)
	want := 0
	var seqs []uint64
	for i, path := range packs {
		seq := packSeq(t, path)
		seqs = append(seqs, seq)
		f, err := sys.openPack(path, false, false)
		if err != nil {
			t.Fatal(err)
		}
		st, _ := os.Stat(path)
		pl, _, ok := readIndex(&pack{seq: seq, path: path, f: f}, st.Size())
		f.Close()
		if ok != (i != 1 && i != 2) {
			t.Fatalf("pack %d: index read %v", i, ok)
		}
		if ok {
			want += len(entries(pl))
		}
	}
	if got := ps.indexedRecords(seqs); got != want || want == 0 {
		t.Fatalf("indexedRecords = %d, the indexes list %d records", got, want)
	}
}

// TestScanResyncsAfterADamagedHeader: a pack without an index (or whose
// index fails) is scanned; a record header damaged in the middle of it
// loses that record only: the scan finds the next valid header, and every
// later chunk, down to an empty chunk whose record ends exactly at the end
// of the pack, reads back. Mutants: pack.go:318 (`restAt := -1` → `1`: the
// rest of the pack never read, everything after the damage lost), :321
// (`off+recHeaderSize <= size` → `<`: the last record header, ending at the
// pack's end, not read).
func TestScanResyncsAfterADamagedHeader(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 4))
	dir := filepath.Join(t.TempDir(), "store")
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := fillStore(t, s, rng, 30)
	empty := NewID()
	if err := s.Put(empty, nil); err != nil {
		t.Fatal(err)
	}
	m[empty] = nil
	var hit meta.ChunkID
	var hitOff int64 = -1
	for id := range m {
		// A chunk in the middle of the pack.
		if l := s.packs.lookup(id); l.off > hitOff && l.off < 10<<10 && id != empty {
			hit, hitOff = id, l.off
		}
	}
	damageBarePack(t, s, dir, hitOff+9, []byte{0xff}) // in the chunk id: the header's checksum fails
	delete(m, hit)
	s2, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if s2.packs.scanned != 1 {
		t.Fatalf("%d packs scanned, want 1", s2.packs.scanned)
	}
	for id, want := range m {
		got, err := s2.Get(id, nil)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("chunk %s (after the damaged header: %v, the empty last one: %v): %d bytes, %v", id, s2.packs.lookup(id) != nil, id == empty, len(got), err)
		}
	}
	if _, err := s2.Get(hit, nil); err == nil {
		t.Fatal("the chunk with the damaged header reads")
	}
}

// TestIndexesDurableAfterSync: a pack that stopped taking records gets its
// index once its records are synced, and the next sync makes the index
// durable: a power cut then leaves every full pack readable from its index
// (only the active one is scanned). Mutant: index.go:248 (the index
// write's error check negated: the pack not marked written, its index
// never synced).
func TestIndexesDurableAfterSync(t *testing.T) {
	smallPacks(t, 4<<10)
	rng := rand.New(rand.NewPCG(21, 5))
	mem := newMem(t)
	s, err := OpenFS("/vault/store", mem)
	if err != nil {
		t.Fatal(err)
	}
	m := map[meta.ChunkID][]byte{}
	for range 40 {
		id := NewID()
		m[id] = randBytes(rng, 200+rng.IntN(600))
		if err := s.Put(id, bytes.Clone(m[id])); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 { // the first writes the indexes, the second syncs them
		if err := s.SyncIDs([]meta.ChunkID{NewID()}); err != nil {
			t.Fatal(err)
		}
	}
	npacks, _, _ := s.packs.stats()
	clone := mem.CrashClone(vfs.CrashCloneCfg{})
	s.Close()
	s2, err := OpenFS("/vault/store", clone)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	checkAll(t, s2, m)
	if npacks < 5 || s2.packs.indexed != npacks-1 || s2.packs.scanned != 1 {
		t.Fatalf("after a power cut: %d of %d packs read from their index, %d scanned; want all but the active one indexed", s2.packs.indexed, npacks, s2.packs.scanned)
	}
}

// TestTornTailByAFewBytes: a last record that lacks only its last bytes
// (up to a record header's length) is a torn tail like any other: the
// store opens, every earlier chunk reads, the torn one is not there.
// Mutant: pack.go:326 (`off+recHeaderSize+int64(n)` → `off-recHeaderSize+`:
// a record up to 32 bytes past the end taken, its payload read past the
// end of the file, and the open failing).
func TestTornTailByAFewBytes(t *testing.T) {
	for _, cut := range []int64{1, 10, recHeaderSize - 1, recHeaderSize} {
		rng := rand.New(rand.NewPCG(21, uint64(cut)))
		dir := filepath.Join(t.TempDir(), "store")
		s, err := Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		m := fillStore(t, s, rng, 10)
		torn := NewID()
		if err := s.Put(torn, randBytes(rng, 500)); err != nil {
			t.Fatal(err)
		}
		if err := s.Sync(); err != nil {
			t.Fatal(err)
		}
		s.Close()
		packs := packFiles(t, dir)
		stripIndex(t, packs[len(packs)-1])
		st, err := os.Stat(packs[len(packs)-1])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(packs[len(packs)-1], st.Size()-cut); err != nil {
			t.Fatal(err)
		}
		s2, err := Open(dir)
		if err != nil {
			t.Fatalf("the last record %d bytes short: %v", cut, err)
		}
		checkAll(t, s2, m)
		if _, err := s2.Get(torn, nil); !errors.Is(err, ErrNotFound) {
			t.Fatalf("the last record %d bytes short: %v, want ErrNotFound", cut, err)
		}
		s2.Close()
	}
}

// damageBarePack syncs and closes s, strips the index of its one pack (as a
// power cut before the index was written leaves it) and writes b at off in
// the pack; it returns the pack's path.
func damageBarePack(t *testing.T, s *Store, dir string, off int64, b []byte) string {
	t.Helper()
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	packs := packFiles(t, dir)
	if len(packs) != 1 {
		t.Fatalf("%d packs, want 1", len(packs))
	}
	stripIndex(t, packs[0])
	f, err := os.OpenFile(packs[0], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	return packs[0]
}
