package chunkstore

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"time"

	"github.com/fincrypt/fincrypt/meta"
)

// A pack's index (docs/FORMAT.md, "Pack index"): once a pack is sealed (no
// record will be appended to it again), a last record of kind 3 lists
// every record before it, so that opening the store reads one index per
// pack instead of every record header. The packs stay the truth: an index
// that is missing, torn, damaged, or does not describe its pack is
// ignored, the pack is scanned as before, and a new index is written
// after the scan. The index record is
//
//	record header (kind 3; the id field holds the pack's sequence number,
//	for people reading the file, and the unix time it was sealed, uint64
//	LE each) |
//	entries | trailer
//
// an entry is
//
//	record offset (uint64 LE) | payload length (uint32 LE) | kind (1 chunk,
//	2 deletion, 4 a chunk record whose payload failed its checksum when the
//	pack was scanned) | 3 zero bytes | chunk id (16 bytes) |
//	for a deletion: the position it deletes (pack number, offset; uint64 LE)
//
// in the order of the records, and the trailer, the last 24 bytes of the
// pack, is
//
//	"FCPINDEX" | offset of the index record (uint64 LE) | entries (uint32 LE) |
//	CRC-32C of the 20 bytes before (uint32 LE)
//
// A store whose packs carry no index (written before indexes) opens as
// before, and each pack gets its index at that open. A fincrypt without
// indexes skips the index record as bytes holding no record.
const (
	kindIndex   = 3
	kindDamaged = 4 // in an index only

	idxEntrySize   = 32
	idxDelSize     = idxEntrySize + deleteSize
	idxTrailerSize = 24
	idxMagic       = "FCPINDEX"
)

// idxEntry is one record of a pack, as its index lists it.
type idxEntry struct {
	off  int64
	n    uint32
	kind byte
	id   meta.ChunkID
	dseq uint64 // a deletion's target
	doff int64
}

func (e *idxEntry) size() int {
	if e.kind == kindDelete {
		return idxDelSize
	}
	return idxEntrySize
}

// encodeIndex returns the index record (header and payload) of a pack
// whose records are ents, to be written at offset at.
func encodeIndex(seq uint64, sealed int64, ents []idxEntry, at int64) []byte {
	n := idxTrailerSize
	for i := range ents {
		n += ents[i].size()
	}
	buf := make([]byte, recHeaderSize+n)
	pl := buf[recHeaderSize:]
	o := 0
	for i := range ents {
		e := &ents[i]
		binary.LittleEndian.PutUint64(pl[o:], uint64(e.off))
		binary.LittleEndian.PutUint32(pl[o+8:], e.n)
		pl[o+12] = e.kind
		copy(pl[o+16:o+32], e.id[:])
		if e.kind == kindDelete {
			binary.LittleEndian.PutUint64(pl[o+32:], e.dseq)
			binary.LittleEndian.PutUint64(pl[o+40:], uint64(e.doff))
		}
		o += e.size()
	}
	tr := pl[o:]
	copy(tr, idxMagic)
	binary.LittleEndian.PutUint64(tr[8:], uint64(at))
	binary.LittleEndian.PutUint32(tr[16:], uint32(len(ents)))
	binary.LittleEndian.PutUint32(tr[20:], crc32.Checksum(tr[:20], castagnoli))
	var hid meta.ChunkID
	binary.LittleEndian.PutUint64(hid[:], seq)
	binary.LittleEndian.PutUint64(hid[8:], uint64(sealed))
	putRecHeader(buf, kindIndex, hid, pl)
	return buf
}

// readIndex reads and checks the index at the end of pack p (size bytes
// long). It returns the index's payload (entries and trailer, checked by
// checkIndex) and when the pack was sealed; ok is false if the pack has no
// index that describes it.
func readIndex(p *pack, size int64) (payload []byte, sealed int64, ok bool) {
	if size < packHeaderSize+recHeaderSize+idxTrailerSize {
		return nil, 0, false
	}
	var tr [idxTrailerSize]byte
	if _, err := p.f.ReadAt(tr[:], size-idxTrailerSize); err != nil {
		return nil, 0, false
	}
	if string(tr[:8]) != idxMagic || crc32.Checksum(tr[:20], castagnoli) != binary.LittleEndian.Uint32(tr[20:]) {
		return nil, 0, false
	}
	at := int64(binary.LittleEndian.Uint64(tr[8:]))
	if at < packHeaderSize || at > size-recHeaderSize-idxTrailerSize {
		return nil, 0, false
	}
	buf := make([]byte, size-at)
	if _, err := p.f.ReadAt(buf, at); err != nil {
		return nil, 0, false
	}
	kind, n, hid, pcrc, hok := parseRecHeader(buf[:recHeaderSize])
	pl := buf[recHeaderSize:]
	if !hok || kind != kindIndex || int(n) != len(pl) || crc32.Checksum(pl, castagnoli) != pcrc {
		return nil, 0, false
	}
	last, ok := checkIndex(pl)
	if !ok {
		return nil, 0, false
	}
	// The first and last entries against their records' headers: an index
	// that is not this pack's (misplaced, or written wrong) fails here.
	if body := pl[:len(pl)-idxTrailerSize]; len(body) > 0 {
		if !entryMatches(p, body) || !entryMatches(p, body[last:]) {
			return nil, 0, false
		}
	}
	return pl, int64(binary.LittleEndian.Uint64(hid[8:])), true
}

// checkIndex reports whether an index payload is well formed: entries of
// known kinds, in the order of their records, which do not overlap and
// start after the pack's header, as many as the trailer says (that the
// last one ends before the index is checked against its record). It
// returns where the last entry starts.
func checkIndex(pl []byte) (last int, ok bool) {
	body := pl[:len(pl)-idxTrailerSize]
	want := binary.LittleEndian.Uint32(pl[len(pl)-idxTrailerSize+16:])
	next := int64(packHeaderSize) // the lowest offset the next record may have
	count := uint32(0)
	for o := 0; o < len(body); {
		if o+idxEntrySize > len(body) {
			return 0, false
		}
		off := int64(binary.LittleEndian.Uint64(body[o:]))
		n := binary.LittleEndian.Uint32(body[o+8:])
		kind := body[o+12]
		if body[o+13] != 0 || body[o+14] != 0 || body[o+15] != 0 {
			return 0, false
		}
		size := idxEntrySize
		switch kind {
		case kindChunk, kindDamaged:
		case kindDelete:
			size = idxDelSize
			if n != deleteSize || o+size > len(body) {
				return 0, false
			}
		default:
			return 0, false
		}
		if off < next {
			return 0, false
		}
		next = off + recHeaderSize + int64(n)
		last = o
		o += size
		count++
	}
	return last, count == want
}

// entryMatches reports whether the record header at the offset the index
// entry e gives is the record e describes.
func entryMatches(p *pack, e []byte) bool {
	var h [recHeaderSize]byte
	if _, err := p.f.ReadAt(h[:], int64(binary.LittleEndian.Uint64(e))); err != nil {
		return false
	}
	kind, n, id, _, ok := parseRecHeader(h[:])
	want := e[12]
	if want == kindDamaged {
		// Its header was whole, its payload failed its checksum.
		want = kindChunk
	}
	return ok && kind == want && n == binary.LittleEndian.Uint32(e[8:]) && bytes.Equal(id[:], e[16:32])
}

// applyIndex replays a checked index payload into the map, as a scan of
// the pack would.
func (ps *packSet) applyIndex(p *pack, pl []byte, sealed int64) {
	body := pl[:len(pl)-idxTrailerSize]
	for o := 0; o < len(body); {
		var e idxEntry
		e.off = int64(binary.LittleEndian.Uint64(body[o:]))
		e.n = binary.LittleEndian.Uint32(body[o+8:])
		e.kind = body[o+12]
		copy(e.id[:], body[o+16:o+32])
		if e.kind == kindDelete {
			e.dseq = binary.LittleEndian.Uint64(body[o+32:])
			e.doff = int64(binary.LittleEndian.Uint64(body[o+40:]))
		}
		ps.apply(p, &e, sealed)
		o += e.size()
	}
}

// apply adds one record of pack p to the map; caller is loading.
func (ps *packSet) apply(p *pack, e *idxEntry, atime int64) {
	switch e.kind {
	case kindChunk:
		ps.setChunk(e.id, p, e.off, e.n, atime)
	case kindDamaged:
		ps.damaged[e.id] = fmt.Sprintf("pack %s offset %d", packName(p.seq), e.off)
	case kindDelete:
		p.dels = append(p.dels, deletion{id: e.id, seq: e.dseq, off: e.doff})
		delete(ps.damaged, e.id) // its record's blocks may have been given back
		if cur := ps.at(e.id); cur != nil && cur.atOrBefore(e.dseq, e.doff) {
			cur.p.live -= cur.recSize()
			ps.bytes -= int64(cur.n)
			ps.chunks.del(e.id)
		}
	}
}

// seal writes pack p's index after its last record (best effort: a pack
// without an index is scanned at the next open); caller holds wmu, or is
// loading. The index is synced with the next sync of the pack.
func (ps *packSet) seal(p *pack, ents []idxEntry, sealed int64) {
	if ps.readOnly || p.gone {
		return
	}
	buf := encodeIndex(p.seq, sealed, ents, p.size)
	if _, err := p.f.WriteAt(buf, p.size); err != nil {
		// Whatever part was written is bytes holding no record.
		return
	}
	p.size += int64(len(buf))
	p.dirty = true
	// A record for sync to make durable: without it a sync that finds no
	// record appended since the last one skips the packs, and the index
	// stays unsynced until more chunks come.
	ps.gen++
	p.recs, p.sealPending = nil, false
	ps.sealed++
	compactStep("index written")
}

// sealSynced writes the index of every pack that stopped taking records
// and whose records are all synced; caller holds wmu.
func (ps *packSet) sealSynced() {
	ps.mu.RLock()
	var todo []*pack
	for _, p := range ps.packs {
		if p.sealPending && !p.dirty && p != ps.active {
			todo = append(todo, p)
		}
	}
	ps.mu.RUnlock()
	now := time.Now().Unix()
	for _, p := range todo {
		p.mu.RLock()
		ps.seal(p, p.recs, now)
		p.mu.RUnlock()
	}
}
