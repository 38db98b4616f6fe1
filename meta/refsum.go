package meta

import (
	"crypto/sha256"
	"fmt"

	"encoding/binary"
	"errors"
	"github.com/cockroachdb/pebble/v2"
	"math/bits"
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

// refDelta is what the batch's chunk reference and blob changes add to the
// RefSum: the new values, less the values in the index now. Called with
// refMu held, so that no other batch commits in between.
func (b *Batch) refDelta() (RefSum, error) {
	var d RefSum
	for _, c := range b.refs {
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
		switch {
		case c.chunk != nil:
			d.add(chunkElem(beUint64(c.key[1:]), beUint64(c.key[9:]), c.chunk), 1)
		case c.blob != nil:
			d.add(blobElem(ChunkID(c.key[1:]), *c.blob), 1)
		case c.pin != nil:
			d.add(pinElem(ChunkID(c.key[1:]), c.pin), 1)
		}
	}
	return d, nil
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
	return nil
}
