package chunkstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fincrypt/fincrypt/meta"
)

// Chunk store format 2 (docs/FORMAT.md, "Local chunk store"): sealed chunks
// are appended to pack files, <dir>/packs/<16 hex digits of a sequence
// number>.pack. A pack is a header and a log of records; each record says
// what it is, so the store's map of chunk id -> (pack, offset, length) can
// be rebuilt at open by reading the record headers. A pack that takes no
// more records ends with an index of its records (index.go), read at open
// instead; a pack without a good index is scanned. A record is
//
//	kind (1 byte: 1 chunk, 2 deletion) | 3 zero bytes | payload length (uint32 LE) |
//	chunk id (16 bytes) | CRC-32C of the payload (uint32 LE) | CRC-32C of the 28 bytes before (uint32 LE) |
//	payload
//
// A chunk record's payload is the sealed chunk. A deletion's payload is the
// position (pack sequence number, offset; uint64 LE each) of the chunk
// record it deletes: it deletes that record and any older record of the
// same id (older = in a pack with a lower number, or earlier in the same
// pack), never a newer one (the chunk fetched again after its eviction).
const (
	// FormatFile, at the top of the store, holds the store's format; a store
	// without it is format 1 (a file per chunk).
	FormatFile = "FORMAT"
	// FormatFiles is chunk store format 1: one file per chunk.
	FormatFiles = 1
	// FormatPacks is chunk store format 2: chunks in append-only pack files.
	FormatPacks = 2
	// CurrentFormat is what new stores are created with.
	CurrentFormat = FormatPacks

	// PackHeaderSize is the size of a pack file that holds no record.
	PackHeaderSize = packHeaderSize

	packsDir       = "packs"
	packMagic      = "FCPACK\x00\x02" // 8 bytes, then the pack's sequence number (uint64 LE)
	packHeaderSize = 16
	recHeaderSize  = 32
	kindChunk      = 1
	kindDelete     = 2
	deleteSize     = 16
)

// ErrCorrupt means a chunk's bytes in the store fail their checksum (or its
// record cannot be read): the local copy is damaged.
var ErrCorrupt = errors.New("chunk store: damaged chunk record")

// packTarget is the size at which the store starts a new pack; a variable
// so that tests can make many small packs.
var packTarget int64 = 32 << 20

// compactHook, if set (tests), runs at each step of a compaction.
var compactHook func(stage string)

func compactStep(stage string) {
	if compactHook != nil {
		compactHook(stage)
	}
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func formatText(f int) string { return fmt.Sprintf("fincrypt chunk store %d\n", f) }

func parseFormat(b []byte) (int, error) {
	s := strings.TrimSpace(string(b))
	rest, ok := strings.CutPrefix(s, "fincrypt chunk store ")
	if !ok {
		return 0, fmt.Errorf("%s: %q, want \"fincrypt chunk store N\"", FormatFile, s)
	}
	n, err := strconv.Atoi(rest)
	if err != nil || n < FormatFiles {
		return 0, fmt.Errorf("%s: bad format %q", FormatFile, rest)
	}
	if n > CurrentFormat {
		return 0, fmt.Errorf("%s: format %d, this fincrypt reads formats %d to %d", FormatFile, n, FormatFiles, CurrentFormat)
	}
	return n, nil
}

// loc is where a chunk's record is (a copy of the map's entry).
type loc struct {
	p     *pack
	off   int64 // of the record header
	n     uint32
	atime int64 // unix seconds of the last use (cache eviction order)
}

func (l *loc) recSize() int64 { return recHeaderSize + int64(l.n) }

// before reports whether l is at or before position (seq, off).
func (l *loc) atOrBefore(seq uint64, off int64) bool {
	return l.p.seq < seq || (l.p.seq == seq && l.off <= off)
}

// slot is the map's entry for a chunk: 16 bytes and no pointer, so that a
// million chunks take little memory and the garbage collector does not
// scan the map. A pack is at most maxPackSize bytes, so an offset fits.
type slot struct {
	pack  uint32 // index in packSet.slots
	off   uint32
	n     uint32
	atime uint32 // unix seconds
}

// maxPackSize is the largest pack the store opens (it starts a new pack
// from packTarget on, so its own are far smaller).
const maxPackSize = 1<<32 - 1

type deletion struct {
	id  meta.ChunkID
	seq uint64
	off int64
}

// hole is the payload of a deleted record, whose disk blocks are given
// back (hole punching) once the deletion is durable.
type hole struct{ off, n int64 }

type pack struct {
	seq  uint64
	slot uint32 // its index in packSet.slots
	path string
	f    packFile
	mu   sync.RWMutex // readers hold it shared while using f; closing takes it
	gone bool         // closed and removed by compaction

	// guarded by packSet.wmu (and mu of the set for live)
	size  int64 // where the next record goes (end of the valid log)
	live  int64 // bytes of records the map points to
	dels  []deletion
	dirty bool   // written since its last sync
	holes []hole // records deleted since the last sync: punched after it
	bad   bool   // holds a record that fails its checksum: never compacted

	// Its records, while it is the active pack (for its index, index.go),
	// and whether it stopped taking records and waits for its index.
	recs        []idxEntry
	sealPending bool

	// kicked: the bytes from the start whose writeback was started
	// (guarded by packSet.wmu).
	kicked int64
}

// writebackStep: once this many bytes of the active pack are written and
// their writeback not started, a put starts it (packFile.startWriteback),
// so that the disk writes while more records come and a sync after a large
// write waits for the last few MiB, not for everything written since the
// last one. Durability is the sync's alone: this only starts the writing
// earlier.
var writebackStep int64 = 8 << 20

// kick is a range of a pack whose writeback is to be started.
type kick struct {
	p      *pack
	off, n int64
}

// noteKick queues the writeback of p up to end (page-aligned), or, with
// all, up to its size; caller holds wmu.
func (ps *packSet) noteKick(p *pack, all bool) {
	end := p.size &^ (punchBlock - 1)
	if all {
		end = p.size
	} else if end-p.kicked < writebackStep {
		return
	}
	if end > p.kicked {
		ps.kicks = append(ps.kicks, kick{p, p.kicked, end - p.kicked})
		p.kicked = end
	}
}

// startKicks starts the writeback queued by noteKick; caller holds wmu,
// which it releases while the kernel queues the writes and takes again.
func (ps *packSet) startKicks() {
	ks := ps.kicks
	ps.kicks = nil
	if len(ks) == 0 {
		return
	}
	ps.wmu.Unlock()
	defer ps.wmu.Lock()
	for _, k := range ks {
		k.p.mu.RLock()
		if !k.p.gone {
			k.p.f.startWriteback(k.off, k.n)
		}
		k.p.mu.RUnlock()
	}
}

type packSet struct {
	dir      string // <store>/packs
	sys      fileSystem
	readOnly bool

	wmu     sync.Mutex // appends, deletions, compaction, rotation
	active  *pack
	kicks   []kick // writeback to start (noteKick)
	nextSeq uint64
	dirDirt bool // a pack was created or removed since the packs directory's sync

	mu      sync.RWMutex
	chunks  *chunkTable
	bytes   int64   // the sum of the chunks' sizes (slot.n), kept with chunks
	slots   []*pack // by pack.slot: every pack opened or started
	packs   map[uint64]*pack
	damaged map[meta.ChunkID]string // records dropped at open for a bad checksum
	skipped int64                   // bytes of unreadable log found at open

	freeing, freeAgain atomic.Bool // FreeDeleted running, and asked again

	// Syncs are one at a time (smu); gen counts the records appended
	// (under wmu), durable the records a finished sync made durable (under
	// smu), so that a sync that finds its records in a sync under way
	// waits for it instead of returning before they are on the disk.
	smu     sync.Mutex
	gen     uint64
	durable uint64

	noIndex                  bool // scan every pack (tests)
	indexed, scanned, sealed int  // packs loaded from their index, scanned; indexes written
}

func newPackSet(dir string, sys fileSystem, readOnly bool) *packSet {
	return &packSet{dir: dir, sys: sys, readOnly: readOnly, nextSeq: 1,
		chunks: newChunkTable(0), packs: map[uint64]*pack{}, damaged: map[meta.ChunkID]string{}}
}

func packName(seq uint64) string { return fmt.Sprintf("%016x.pack", seq) }

// load opens every pack and rebuilds the map, oldest pack first.
func (ps *packSet) load() error {
	ents, err := ps.sys.readDir(ps.dir)
	if errors.Is(err, fs.ErrNotExist) && ps.readOnly {
		return nil
	}
	if err != nil {
		return err
	}
	var seqs []uint64
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.name, ".pack")
		seq, err := strconv.ParseUint(name, 16, 64)
		if !ok || err != nil || len(name) != 16 || !e.regular {
			return fmt.Errorf("%s: unexpected file %q in the packs directory", ps.dir, e.name)
		}
		seqs = append(seqs, seq)
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	if !ps.noIndex {
		// The table sized once for the chunks the indexes list: it does
		// not grow (and rehash) while loading.
		ps.chunks = newChunkTable(ps.indexedRecords(seqs))
		ps.bytes = 0
	}
	for i, seq := range seqs {
		p := &pack{seq: seq, path: filepath.Join(ps.dir, packName(seq))}
		f, err := ps.sys.openPack(p.path, false, !ps.readOnly)
		if err != nil {
			return fmt.Errorf("pack %s: %w", p.path, err)
		}
		p.f = f
		ps.addPack(p)
		ps.nextSeq = seq + 1
		size, mtime, err := p.f.stat()
		if err != nil {
			return fmt.Errorf("pack %s: %w", p.path, err)
		}
		if size > maxPackSize {
			return fmt.Errorf("pack %s: %d bytes, more than a pack holds (%d)", p.path, size, int64(maxPackSize))
		}
		if !ps.noIndex {
			if pl, sealed, ok := readIndex(p, size); ok {
				p.size = size
				ps.applyIndex(p, pl, sealed)
				ps.indexed++
				continue
			}
		}
		ents, err := ps.scan(p, i == len(seqs)-1, size, mtime.Unix())
		if err != nil {
			return fmt.Errorf("pack %s: %w", p.path, err)
		}
		ps.scanned++
		if len(ents) > 0 {
			// No record is appended to a pack after a restart: it gets
			// its index now, and the next open reads that instead.
			ps.seal(p, ents, mtime.Unix())
		}
	}
	return nil
}

// indexedRecords returns how many records the packs' index trailers list
// (unchecked, but bounded by the packs' sizes: a size hint).
func (ps *packSet) indexedRecords(seqs []uint64) int {
	n := 0
	for _, seq := range seqs {
		f, err := ps.sys.openPack(filepath.Join(ps.dir, packName(seq)), false, false)
		if err != nil {
			continue
		}
		var tr [idxTrailerSize]byte
		if size, _, err := f.stat(); err == nil && size >= idxTrailerSize {
			if _, err := f.ReadAt(tr[:], size-idxTrailerSize); err == nil && string(tr[:8]) == idxMagic {
				// No more entries than the pack has room for: a damaged
				// count must not size the table for millions of chunks.
				n += int(min(int64(binary.LittleEndian.Uint32(tr[16:])), size/idxEntrySize))
			}
		}
		f.Close()
	}
	return min(n, 1<<26)
}

func parseRecHeader(h []byte) (kind byte, n uint32, id meta.ChunkID, pcrc uint32, ok bool) {
	if (h[0] != kindChunk && h[0] != kindDelete && h[0] != kindIndex) || h[1] != 0 || h[2] != 0 || h[3] != 0 {
		return
	}
	if crc32.Checksum(h[:28], castagnoli) != binary.LittleEndian.Uint32(h[28:]) {
		return
	}
	kind, n = h[0], binary.LittleEndian.Uint32(h[4:])
	copy(id[:], h[8:24])
	pcrc = binary.LittleEndian.Uint32(h[24:])
	if kind == kindDelete && n != deleteSize {
		return 0, 0, id, 0, false
	}
	return kind, n, id, pcrc, true
}

func putRecHeader(h []byte, kind byte, id meta.ChunkID, payload []byte) {
	h[0], h[1], h[2], h[3] = kind, 0, 0, 0
	binary.LittleEndian.PutUint32(h[4:], uint32(len(payload)))
	copy(h[8:24], id[:])
	binary.LittleEndian.PutUint32(h[24:], crc32.Checksum(payload, castagnoli))
	binary.LittleEndian.PutUint32(h[28:], crc32.Checksum(h[:28], castagnoli))
}

// scan reads p's records into the map. The record headers carry their own
// checksum; the payloads are checked here only in the last pack (the one
// that was being written when the store last stopped, whose tail may be
// torn), else when read. Bytes that hold no valid record header (a torn
// tail, a damaged header) are skipped up to the next valid header. It
// returns the records it took, for the pack's index; an earlier index
// record is skipped.
func (ps *packSet) scan(p *pack, last bool, size, at int64) ([]idxEntry, error) {
	var ents []idxEntry
	p.size = size
	var h [recHeaderSize]byte
	off := int64(packHeaderSize)
	var rest []byte // the file from restAt on, read when a resync needs it
	restAt := int64(-1)
	for off < size {
		kind, n, id, pcrc, ok := byte(0), uint32(0), meta.ChunkID{}, uint32(0), false
		if off+recHeaderSize <= size {
			if _, err := p.f.ReadAt(h[:], off); err != nil {
				return nil, err
			}
			kind, n, id, pcrc, ok = parseRecHeader(h[:])
			ok = ok && off+recHeaderSize+int64(n) <= size
		}
		if !ok {
			// Find the next valid header after off.
			if restAt < 0 {
				rest = make([]byte, size-off)
				if _, err := p.f.ReadAt(rest, off); err != nil && err != io.EOF {
					return nil, err
				}
				restAt = off
			}
			next := size
			for i := off + 1 - restAt; i+recHeaderSize <= int64(len(rest)); i++ {
				if rest[i] != kindChunk && rest[i] != kindDelete && rest[i] != kindIndex {
					continue
				}
				_, n2, _, _, ok2 := parseRecHeader(rest[i : i+recHeaderSize])
				if ok2 && i+recHeaderSize+int64(n2) <= int64(len(rest)) {
					next = restAt + i
					break
				}
			}
			ps.skipped += next - off
			off = next
			continue
		}
		if kind == kindIndex {
			off += recHeaderSize + int64(n)
			continue
		}
		var payload []byte
		e := idxEntry{off: off, n: n, kind: kind, id: id}
		if kind == kindDelete || last {
			payload = make([]byte, n)
			if _, err := p.f.ReadAt(payload, off+recHeaderSize); err != nil {
				return nil, err
			}
			if crc32.Checksum(payload, castagnoli) != pcrc {
				// A record whose payload did not reach the disk before a
				// power cut (it was not synced, so never acknowledged), or
				// damaged since.
				e.kind = kindDamaged
				p.bad = p.bad || !last
			}
		}
		if e.kind == kindDelete {
			e.dseq, e.doff = binary.LittleEndian.Uint64(payload), int64(binary.LittleEndian.Uint64(payload[8:]))
		}
		ps.apply(p, &e, at)
		ents = append(ents, e)
		off += recHeaderSize + int64(n)
	}
	return ents, nil
}

// addPack makes p one of the store's packs; caller holds ps.mu or is
// loading.
func (ps *packSet) addPack(p *pack) {
	p.slot = uint32(len(ps.slots))
	ps.slots = append(ps.slots, p)
	ps.packs[p.seq] = p
}

// at returns chunk id's location; caller holds ps.mu.
func (ps *packSet) at(id meta.ChunkID) *loc {
	e, ok := ps.chunks.get(id)
	if !ok {
		return nil
	}
	return &loc{p: ps.slots[e.pack], off: int64(e.off), n: e.n, atime: int64(e.atime)}
}

// setChunk points the map at a chunk record; caller holds ps.mu or is
// loading.
func (ps *packSet) setChunk(id meta.ChunkID, p *pack, off int64, n uint32, atime int64) {
	if cur, ok := ps.chunks.put(id, slot{pack: p.slot, off: uint32(off), n: n, atime: uint32(atime)}); ok {
		ps.slots[cur.pack].live -= recHeaderSize + int64(cur.n)
		ps.bytes -= int64(cur.n)
	}
	p.live += recHeaderSize + int64(n)
	ps.bytes += int64(n)
	delete(ps.damaged, id)
}

// appendRecord writes a record to the active pack (starting a new one when
// it is full) and returns the pack and offset; caller holds wmu.
func (ps *packSet) appendRecord(kind byte, id meta.ChunkID, payload []byte) (*pack, int64, error) {
	need := int64(recHeaderSize + len(payload))
	if ps.active == nil || (ps.active.size+need > packTarget && ps.active.size > packHeaderSize) {
		if err := ps.rotate(); err != nil {
			return nil, 0, err
		}
	}
	p := ps.active
	var h [recHeaderSize]byte
	putRecHeader(h[:], kind, id, payload)
	off := p.size
	if err := p.f.writeRecord(h[:], payload, off); err != nil {
		// The next record overwrites whatever part of this one was written.
		return nil, 0, err
	}
	p.size += need
	p.dirty = true
	ps.gen++
	ps.noteKick(p, false)
	e := idxEntry{off: off, n: uint32(len(payload)), kind: kind, id: id}
	if kind == kindDelete {
		e.dseq, e.doff = binary.LittleEndian.Uint64(payload), int64(binary.LittleEndian.Uint64(payload[8:]))
	}
	p.recs = append(p.recs, e)
	return p, off, nil
}

// rotate starts a new pack; caller holds wmu.
func (ps *packSet) rotate() error {
	if ps.readOnly {
		return errors.New("chunk store opened read-only")
	}
	seq := ps.nextSeq
	p := &pack{seq: seq, path: filepath.Join(ps.dir, packName(seq))}
	f, err := ps.sys.openPack(p.path, true, true)
	if err != nil {
		return fmt.Errorf("new pack: %w", err)
	}
	var h [packHeaderSize]byte
	copy(h[:], packMagic)
	binary.LittleEndian.PutUint64(h[8:], seq)
	if _, err := f.WriteAt(h[:], 0); err != nil {
		f.Close()
		ps.sys.remove(p.path)
		return fmt.Errorf("new pack: %w", err)
	}
	ps.nextSeq++
	if old := ps.active; old != nil && len(old.recs) > 0 {
		// Its index is written once its records are synced.
		old.sealPending = true
		ps.noteKick(old, true)
	}
	p.f, p.size, p.dirty = f, packHeaderSize, true
	ps.dirDirt = true
	ps.mu.Lock()
	ps.addPack(p)
	ps.mu.Unlock()
	ps.active = p
	return nil
}

// put appends a chunk; replace lets it supersede a damaged copy.
func (ps *packSet) put(id meta.ChunkID, sealed []byte, replace bool) error {
	ps.wmu.Lock()
	defer ps.wmu.Unlock()
	ps.mu.RLock()
	exists := ps.chunks.has(id)
	ps.mu.RUnlock()
	if exists && !replace {
		return fmt.Errorf("chunk %s: %w", id, fs.ErrExist)
	}
	p, off, err := ps.appendRecord(kindChunk, id, sealed)
	if err != nil {
		return fmt.Errorf("chunk %s: %w", id, err)
	}
	ps.mu.Lock()
	ps.setChunk(id, p, off, uint32(len(sealed)), time.Now().Unix())
	ps.mu.Unlock()
	ps.startKicks()
	return nil
}

// lookup returns chunk id's location.
func (ps *packSet) lookup(id meta.ChunkID) *loc {
	ps.mu.RLock()
	defer ps.mu.RUnlock()
	return ps.at(id)
}

// get appends chunk id to dst; found is false if the packs do not hold it.
func (ps *packSet) get(id meta.ChunkID, dst []byte, touch bool) (out []byte, found bool, err error) {
	for {
		l := ps.lookup(id)
		if l == nil {
			ps.mu.RLock()
			where, bad := ps.damaged[id]
			ps.mu.RUnlock()
			if bad {
				return dst, true, fmt.Errorf("chunk %s: its record (%s) fails its checksum: %w", id, where, ErrCorrupt)
			}
			return dst, false, nil
		}
		l.p.mu.RLock()
		if l.p.gone {
			// Compaction moved it meanwhile: look again.
			l.p.mu.RUnlock()
			continue
		}
		out, err = readRecord(l, id, dst)
		l.p.mu.RUnlock()
		if err == nil && touch {
			if now := time.Now().Unix(); now-l.atime > 1 {
				ps.mu.Lock()
				if e, ok := ps.chunks.get(id); ok && e.pack == l.p.slot && int64(e.off) == l.off {
					e.atime = uint32(now)
					ps.chunks.put(id, e)
				}
				ps.mu.Unlock()
			}
		}
		return out, true, err
	}
}

// readRecord appends the payload of the chunk record at l to dst, checking
// it; caller holds l.p.mu shared.
func readRecord(l *loc, id meta.ChunkID, dst []byte) ([]byte, error) {
	// The header goes to its own buffer and the payload straight to dst:
	// dst needs room for the payload only (a caller's buffer sized for a
	// sealed chunk suffices) and the payload is not moved after the read.
	need := int(l.n)
	if cap(dst)-len(dst) < need {
		nd := make([]byte, len(dst), len(dst)+need)
		copy(nd, dst)
		dst = nd
	}
	var h [recHeaderSize]byte
	payload := dst[len(dst) : len(dst)+need]
	where := func() string { return fmt.Sprintf("pack %s offset %d", packName(l.p.seq), l.off) }
	if err := l.p.f.readRecord(h[:], payload, l.off); err != nil {
		return dst, fmt.Errorf("chunk %s (%s): %w", id, where(), err)
	}
	kind, n, rid, pcrc, ok := parseRecHeader(h[:])
	if !ok || kind != kindChunk || n != l.n || rid != id {
		return dst, fmt.Errorf("chunk %s (%s): the record header is damaged: %w", id, where(), ErrCorrupt)
	}
	if crc32.Checksum(payload, castagnoli) != pcrc {
		return dst, fmt.Errorf("chunk %s (%s): the chunk's bytes fail their checksum: %w", id, where(), ErrCorrupt)
	}
	return dst[:len(dst)+int(l.n)], nil
}

// remove records the deletion of chunk id; found is false if the packs do
// not hold it.
func (ps *packSet) remove(id meta.ChunkID) (found bool, err error) {
	ps.wmu.Lock()
	defer ps.wmu.Unlock()
	ps.mu.Lock()
	l := ps.at(id)
	_, damaged := ps.damaged[id]
	delete(ps.damaged, id)
	ps.mu.Unlock()
	if l == nil {
		return damaged, nil
	}
	var pl [deleteSize]byte
	binary.LittleEndian.PutUint64(pl[:], l.p.seq)
	binary.LittleEndian.PutUint64(pl[8:], uint64(l.off))
	p, _, err := ps.appendRecord(kindDelete, id, pl[:])
	if err != nil {
		return true, fmt.Errorf("chunk %s: %w", id, err)
	}
	p.dels = append(p.dels, deletion{id: id, seq: l.p.seq, off: l.off})
	ps.mu.Lock()
	if e, ok := ps.chunks.get(id); ok && e.pack == l.p.slot && int64(e.off) == l.off {
		ps.chunks.del(id)
		ps.bytes -= int64(e.n)
		l.p.live -= l.recSize()
	}
	ps.mu.Unlock()
	l.p.holes = append(l.p.holes, hole{l.off + recHeaderSize, int64(l.n)})
	return true, nil
}

// sync makes every record appended so far durable: the packs written, then
// the packs directory if a pack was created or removed. Concurrent syncs
// share the work: one that finds its records in a sync under way waits for
// it (and syncs again only if records came after it).
func (ps *packSet) sync() error {
	ps.wmu.Lock()
	target := ps.gen
	holes := map[*pack][]hole{}
	ps.mu.RLock()
	for _, p := range ps.packs {
		if len(p.holes) > 0 {
			holes[p], p.holes = p.holes, nil
		}
	}
	ps.mu.RUnlock()
	ps.wmu.Unlock()
	ps.smu.Lock()
	if ps.durable < target || ps.dirDirtAny() {
		ps.wmu.Lock()
		dirty, dirDirt := ps.takeDirty(nil)
		g := ps.gen
		ps.wmu.Unlock()
		// Outside wmu: appends go on while the disk syncs.
		if err := ps.flush(dirty, dirDirt, false); err != nil {
			ps.smu.Unlock()
			ps.wmu.Lock()
			for p, h := range holes {
				p.holes = append(p.holes, h...)
			}
			ps.wmu.Unlock()
			return err
		}
		ps.durable = g
		// The packs that stopped taking records and are synced now get
		// their index (synced with the next sync).
		ps.wmu.Lock()
		ps.sealSynced()
		ps.wmu.Unlock()
	}
	ps.smu.Unlock()
	// The deletions are durable: give the deleted chunks' disk blocks back
	// at once (compaction rewrites the pack later). Best effort.
	for p, hs := range holes {
		p.mu.RLock()
		if !p.gone {
			for _, h := range hs {
				p.f.punch(h.off, h.n)
			}
		}
		p.mu.RUnlock()
	}
	return nil
}

// dirDirtAny reports whether the packs directory changed since its sync.
func (ps *packSet) dirDirtAny() bool {
	ps.wmu.Lock()
	defer ps.wmu.Unlock()
	return ps.dirDirt
}

// takeDirty returns the packs written since their last sync (but skip) and
// whether the packs directory changed, and clears both marks; caller holds
// wmu.
func (ps *packSet) takeDirty(skip *pack) ([]*pack, bool) {
	var dirty []*pack
	ps.mu.RLock()
	for _, p := range ps.packs {
		if p.dirty && p != skip {
			p.dirty = false
			dirty = append(dirty, p)
		}
	}
	ps.mu.RUnlock()
	dirDirt := ps.dirDirt
	ps.dirDirt = false
	return dirty, dirDirt
}

// flush syncs the packs given and, if dirDirt, the packs directory (the
// entry of a new pack). What it fails to sync is marked again. Sync and
// compaction both go through here; held says whether the caller holds wmu.
func (ps *packSet) flush(dirty []*pack, dirDirt, held bool) error {
	var first error
	if len(dirty) > 1 {
		// Start every pack's writeback first: the disk then writes them
		// together instead of one after the other's sync.
		for _, p := range dirty {
			p.mu.RLock()
			if !p.gone {
				p.f.startWriteback(0, 0)
			}
			p.mu.RUnlock()
		}
	}
	remark := func(f func()) {
		if !held {
			ps.wmu.Lock()
			defer ps.wmu.Unlock()
		}
		f()
	}
	for _, p := range dirty {
		p.mu.RLock()
		var err error
		if !p.gone {
			err = p.f.Sync()
		}
		p.mu.RUnlock()
		if err != nil {
			if first == nil {
				first = fmt.Errorf("pack %s: %w", p.path, err)
			}
			remark(func() { p.dirty = true })
		}
	}
	if dirDirt {
		if err := ps.sys.sync(ps.dir); err != nil {
			if first == nil {
				first = err
			}
			remark(func() { ps.dirDirt = true })
		}
	}
	return first
}

// compactable reports whether pack p is worth rewriting: mostly dead, or a
// small pack left by an earlier session.
func compactable(p *pack) bool {
	return !p.bad && (p.live*2 < p.size || p.size < packTarget/8)
}

// compact rewrites the live chunks of mostly dead (or small) packs into the
// active pack, syncs it, and removes them. A crash at any point leaves each
// chunk in its old pack, its new one, or both (the newer copy is used, the
// older counts as dead); the deletions an old pack holds are carried over
// while an older pack they may apply to remains.
func (ps *packSet) compact() (int, error) {
	if ps.readOnly {
		return 0, nil
	}
	ps.wmu.Lock()
	defer ps.wmu.Unlock()
	ps.mu.RLock()
	var cands []*pack
	for _, p := range ps.packs {
		if p != ps.active && compactable(p) {
			cands = append(cands, p)
		}
	}
	ps.mu.RUnlock()
	if len(cands) == 0 {
		return 0, nil
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].seq < cands[j].seq })
	members := map[*pack][]meta.ChunkID{}
	ps.mu.RLock()
	for id, e := range ps.chunks.all() {
		if p := ps.slots[e.pack]; compactable(p) && p != ps.active {
			members[p] = append(members[p], id)
		}
	}
	ps.mu.RUnlock()
	done := 0
	for _, p := range cands {
		if err := ps.compactOne(p, members[p]); err != nil {
			return done, err
		}
		if !p.gone {
			continue
		}
		done++
	}
	return done, nil
}

// compactOne moves pack p's live chunks and needed deletions to the active
// pack and removes p; caller holds wmu.
func (ps *packSet) compactOne(p *pack, ids []meta.ChunkID) error {
	var buf []byte
	for _, id := range ids {
		l := ps.lookup(id)
		if l == nil || l.p != p {
			continue
		}
		var err error
		p.mu.RLock()
		buf, err = readRecord(l, id, buf[:0])
		p.mu.RUnlock()
		if err != nil {
			// Keep the pack (and its damaged chunk's error) as it is.
			p.bad = true
			return nil
		}
		np, off, err := ps.appendRecord(kindChunk, id, buf)
		if err != nil {
			return fmt.Errorf("compacting %s: %w", p.path, err)
		}
		ps.mu.Lock()
		ps.setChunk(id, np, off, l.n, l.atime)
		ps.mu.Unlock()
		compactStep("copied")
	}
	for _, d := range p.dels {
		carry := false
		ps.mu.RLock()
		for seq := range ps.packs {
			if seq <= d.seq && seq != p.seq {
				carry = true
				break
			}
		}
		ps.mu.RUnlock()
		if !carry {
			continue
		}
		var pl [deleteSize]byte
		binary.LittleEndian.PutUint64(pl[:], d.seq)
		binary.LittleEndian.PutUint64(pl[8:], uint64(d.off))
		np, _, err := ps.appendRecord(kindDelete, d.id, pl[:])
		if err != nil {
			return fmt.Errorf("compacting %s: %w", p.path, err)
		}
		np.dels = append(np.dels, d)
		compactStep("deletion carried")
	}
	// The copies are durable (data, and the entry of a new pack) before the
	// original goes.
	dirty, dirDirt := ps.takeDirty(p)
	if err := ps.flush(dirty, dirDirt, true); err != nil {
		return fmt.Errorf("compacting %s: %w", p.path, err)
	}
	compactStep("synced")
	p.mu.Lock()
	p.gone = true
	p.f.Close()
	p.mu.Unlock()
	ps.mu.Lock()
	delete(ps.packs, p.seq)
	ps.mu.Unlock()
	if err := ps.sys.remove(p.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("compacting %s: %w", p.path, err)
	}
	// The removal becomes durable with the next sync of the directory; if
	// a crash undoes it, the old pack only holds older copies again.
	ps.dirDirt = true
	compactStep("removed")
	return nil
}

// ids returns a snapshot of the chunk ids in the packs.
func (ps *packSet) ids() []meta.ChunkID {
	ps.mu.RLock()
	defer ps.mu.RUnlock()
	out := make([]meta.ChunkID, 0, ps.chunks.len())
	for id := range ps.chunks.all() {
		out = append(out, id)
	}
	return out
}

// stats is for tests and `status`: packs, bytes on disk, bytes live.
func (ps *packSet) stats() (packs int, size, live int64) {
	ps.wmu.Lock()
	defer ps.wmu.Unlock()
	ps.mu.RLock()
	defer ps.mu.RUnlock()
	for _, p := range ps.packs {
		packs++
		size += p.size
		live += p.live
	}
	return
}

func (ps *packSet) close() error {
	ps.wmu.Lock()
	defer ps.wmu.Unlock()
	if a := ps.active; a != nil && !a.dirty && len(a.recs) > 0 {
		// Synced and taking no more records: its index spares the next
		// open a scan.
		a.sealPending = true
	}
	ps.active = nil
	ps.sealSynced()
	ps.mu.Lock()
	defer ps.mu.Unlock()
	var first error
	for _, p := range ps.packs {
		p.mu.Lock()
		if !p.gone {
			if err := p.f.Close(); err != nil && first == nil {
				first = err
			}
			p.gone = true
		}
		p.mu.Unlock()
	}
	return first
}

// FreeDeleted makes the deletions so far durable and gives the deleted
// chunks' disk blocks back, in the background (the caller, which just
// deleted chunks on a fsync path, does not wait for another disk sync).
// Calls while one runs make it run once more.
func (s *Store) FreeDeleted() {
	if s.packs == nil || s.readOnly {
		return
	}
	ps := s.packs
	if ps.freeing.Swap(true) {
		ps.freeAgain.Store(true)
		return
	}
	go func() {
		for {
			ps.freeAgain.Store(false)
			ps.sync() // best effort: a failure leaves the holes for the next sync
			if !ps.freeAgain.Load() {
				ps.freeing.Store(false)
				if !ps.freeAgain.Load() || ps.freeing.Swap(true) {
					return
				}
			}
		}
	}()
}
