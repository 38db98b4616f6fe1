package meta

import (
	"crypto/sha256"
	"fmt"

	"encoding/binary"
	"errors"
	"github.com/cockroachdb/pebble/v2"
	"math/bits"
	"sync/atomic"
)

// RefSum is an order-free digest of the index's chunk references, blobs and pins
// (and of the keys of records that do not open): their count, and the sum
// modulo 2^256 of the SHA-256 of each. A change adds and subtracts only the
// elements it writes or removes, so an index that tracks it (TrackRefs)
// knows the digest of its whole state without reading it, and a walk
// (WalkRefSum) recomputes it to compare. It detects lost or changed records
// (the clean-close record of package fs); it is not meant to resist someone
// who can write index records, who holds the index key anyway.
type RefSum struct {
	N   uint64
	Sum [sha256.Size]byte
}

// refElem is the hash of one element of a RefSum.
type refElem [sha256.Size]byte

func chunkElem(ino, idx uint64, ref *ChunkRef) refElem {
	var b [1 + 8 + 8 + ChunkIDSize + 8]byte
	b[0] = pChunk
	binary.BigEndian.PutUint64(b[1:], ino)
	binary.BigEndian.PutUint64(b[9:], idx)
	copy(b[17:], ref.ID[:])
	binary.BigEndian.PutUint64(b[17+ChunkIDSize:], ref.Version)
	return sha256.Sum256(b[:])
}

func blobElem(id ChunkID, plainLen uint32) refElem {
	var b [1 + ChunkIDSize + 4]byte
	b[0] = pBlob
	copy(b[1:], id[:])
	binary.BigEndian.PutUint32(b[1+ChunkIDSize:], plainLen)
	return sha256.Sum256(b[:])
}

func pinElem(id ChunkID, p *Pin) refElem {
	return sha256.Sum256(append(append([]byte{pPin}, id[:]...), p.encode()...))
}

func badElem(key []byte) refElem {
	return sha256.Sum256(append([]byte("bad\x00"), key...))
}

// add adds e (sign +1) or subtracts it (sign -1).
func (s *RefSum) add(e refElem, sign int) {
	var carry uint64
	for i := len(s.Sum) - 8; i >= 0; i -= 8 {
		a := binary.BigEndian.Uint64(s.Sum[i:])
		b := binary.BigEndian.Uint64(e[i:])
		if sign > 0 {
			a, carry = bits.Add64(a, b, carry)
		} else {
			a, carry = bits.Sub64(a, b, carry)
		}
		binary.BigEndian.PutUint64(s.Sum[i:], a)
	}
	if sign > 0 {
		s.N++
	} else {
		s.N--
	}
}

// plus returns s with every element of d added (d's count may wrap: it is
// a difference).
func (s RefSum) plus(d RefSum) RefSum {
	n := s.N + d.N
	s.add(refElem(d.Sum), 1)
	s.N = n
	return s
}

// WalkRefSum reads every record of the index and returns its RefSum.
func (x *Index) WalkRefSum() (RefSum, error) {
	var s RefSum
	err := x.Walk(Visitor{
		Chunk: func(ino, idx uint64, ref ChunkRef) { s.add(chunkElem(ino, idx, &ref), 1) },
		Blob:  func(id ChunkID, n uint32) { s.add(blobElem(id, n), 1) },
		Pin:   func(id ChunkID, p Pin) { s.add(pinElem(id, &p), 1) },
		Bad:   func(key []byte, _ error) { s.add(badElem(key), 1) },
	})
	return s, err
}

// TrackRefs makes the index keep its RefSum from now on, starting at start,
// which must be the RefSum of the index as it is (read from a record made
// when it was last closed, or from WalkRefSum): every commit adds what it
// changes of chunk references and blobs. Call it before any change.
func (x *Index) TrackRefs(start RefSum) {
	x.refMu.Lock()
	defer x.refMu.Unlock()
	x.refSum, x.refOn = start, true
	x.refs.last, x.refs.floor = nil, x.refs.seq.Add(1) // what batches read before is read again
}

// TrackedRefs returns the RefSum the index tracks, and false if it does
// not track one (TrackRefs was not called, or a change it cannot follow,
// Import, stopped it).
func (x *Index) TrackedRefs() (RefSum, bool) {
	x.refMu.Lock()
	defer x.refMu.Unlock()
	return x.refSum, x.refOn
}

func (x *Index) stopTracking() {
	x.refMu.Lock()
	defer x.refMu.Unlock()
	x.refOn = false
}

// refChange is a chunk reference, blob or pin a batch writes (nil: deletes).
type refChange struct {
	key   []byte
	chunk *ChunkRef
	blob  *uint32
	pin   *Pin
	kind  byte // pChunk, pBlob or pPin
}

func (b *Batch) noteRef(key []byte, c refChange) {
	if !b.x.tracking() {
		return
	}
	if b.refs == nil {
		b.refs = map[string]refChange{}
	}
	c.key = key
	b.refs[string(key)] = c
}

func (x *Index) tracking() bool {
	x.refMu.Lock()
	defer x.refMu.Unlock()
	return x.refOn
}

// The values a batch replaces are read once. PutChunk and DeleteChunk read
// the chunk-map entry they replace (chunkAt, for the pending feed) before
// the commit; refDelta, under refMu, takes that value instead of reading it
// again when no commit wrote the entry since (refWrites), and reads it
// again otherwise.

// oldChunk is a chunk-map entry as a batch read it from the index, when
// the ref commit sequence was seq.
type oldChunk struct {
	ref ChunkRef
	ok  bool // false: there was none
	seq uint64
}

// refWrites says which chunk-map entries the commits that changed the
// RefSum wrote, by the sequence number of the last one that wrote each,
// since floor (guarded by refMu). It is emptied (floor raised) past
// refWritesMax keys: a value read before the floor is read again.
type refWrites struct {
	seq   atomic.Uint64
	floor uint64
	last  map[string]uint64
	reads atomic.Int64 // values read again under refMu (RefRereads)
}

const refWritesMax = 1 << 16

// refReadSeq is the ref commit sequence before a read: every commit with
// this number or lower is visible to it.
func (x *Index) refReadSeq() uint64 { return x.refs.seq.Load() }

// noteOld keeps the chunk-map entry (ino, idx) read at seq for refDelta.
func (b *Batch) noteOld(ino, idx uint64, ref ChunkRef, ok bool, seq uint64) {
	if !b.x.tracking() {
		return
	}
	if b.olds == nil {
		b.olds = map[[2]uint64]oldChunk{}
	}
	b.olds[[2]uint64{ino, idx}] = oldChunk{ref: ref, ok: ok, seq: seq}
}

// wroteRefs records a committed batch's keys; caller holds refMu.
func (x *Index) wroteRefs(b *Batch) {
	w := &x.refs
	seq := w.seq.Load() + 1
	if w.last == nil || len(w.last)+len(b.refs) > refWritesMax {
		w.last, w.floor = map[string]uint64{}, seq
	}
	for k := range b.refs {
		w.last[k] = seq
	}
	w.seq.Store(seq) // after the commit is visible
}

// oldUnchanged returns the value the batch read of chunk-map key, if no
// commit wrote it since; caller holds refMu.
func (b *Batch) oldUnchanged(key []byte) (oldChunk, bool) {
	if len(key) != 17 || key[0] != pChunk {
		return oldChunk{}, false
	}
	o, ok := b.olds[[2]uint64{beUint64(key[1:]), beUint64(key[9:])}]
	w := &b.x.refs
	if !ok || o.seq < w.floor || w.last[string(key)] > o.seq {
		return oldChunk{}, false
	}
	return o, true
}

// RefRereads counts the replaced values commits read again under the
// RefSum's lock (another commit wrote them after the batch read them).
func (x *Index) RefRereads() int64 { return x.refs.reads.Load() }

// refDelta is what the batch's chunk reference and blob changes add to the
// RefSum: the new values, less the values in the index now. Called with
// refMu held, so that no other batch commits in between.
func (b *Batch) refDelta() (RefSum, error) {
	var d RefSum
	for _, c := range b.refs {
		if o, ok := b.oldUnchanged(c.key); ok {
			if o.ok {
				d.add(chunkElem(beUint64(c.key[1:]), beUint64(c.key[9:]), &o.ref), -1)
			}
			b.addNew(&d, c)
			continue
		}
		if c.kind == pChunk {
			b.x.refs.reads.Add(1)
		}
		old, err := b.x.get(c.key)
		switch {
		case errors.Is(err, ErrNotFound):
		case err != nil && !errors.Is(err, ErrCorrupt):
			return d, err
		case err != nil:
			d.add(badElem(c.key), -1)
		case c.kind == pChunk:
			ref, err := decodeChunkRef(old)
			if err != nil {
				d.add(badElem(c.key), -1)
			} else {
				d.add(chunkElem(beUint64(c.key[1:]), beUint64(c.key[9:]), &ref), -1)
			}
		case c.kind == pPin:
			p, err := decodePin(old)
			if err != nil {
				d.add(badElem(c.key), -1)
			} else {
				d.add(pinElem(ChunkID(c.key[1:]), &p), -1)
			}
		default:
			n, err := decodeBlob(old)
			if err != nil {
				d.add(badElem(c.key), -1)
			} else {
				d.add(blobElem(ChunkID(c.key[1:]), n), -1)
			}
		}
		b.addNew(&d, c)
	}
	return d, nil
}

// addNew adds change c's new value to d.
func (b *Batch) addNew(d *RefSum, c refChange) {
	switch {
	case c.chunk != nil:
		d.add(chunkElem(beUint64(c.key[1:]), beUint64(c.key[9:]), c.chunk), 1)
	case c.blob != nil:
		d.add(blobElem(ChunkID(c.key[1:]), *c.blob), 1)
	case c.pin != nil:
		d.add(pinElem(ChunkID(c.key[1:]), c.pin), 1)
	}
}

// commitRefs applies the batch without syncing and adds its change to the
// tracked RefSum, both under refMu: the values it replaces are read with no
// other such commit in between.
func (b *Batch) commitRefs() error {
	x := b.x
	x.refMu.Lock()
	defer x.refMu.Unlock()
	if !x.refOn {
		return b.b.Commit(pebble.NoSync)
	}
	d, err := b.refDelta()
	if err != nil {
		return fmt.Errorf("index batch not applied: %w", err)
	}
	if err := b.b.Commit(pebble.NoSync); err != nil {
		return err
	}
	x.refSum = x.refSum.plus(d)
	x.wroteRefs(b)
	return nil
}
