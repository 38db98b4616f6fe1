package meta

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// Records of the replication engine (package replicate). They share the
// index, and its sealing, with the file system's records; docs/FORMAT.md §2
// lists the prefixes.
const (
	pLocation = 'L' // L chunkid(16)  -> location of a chunk inside a segment
	pSegment  = 'S' // S segid(16)    -> segment record
	pRepl     = 'R' // R name         -> replication engine state (not in snapshots)
)

// SegmentIDSize is the size of a segment id (assigned by the mediator).
const SegmentIDSize = 16

// SegmentID names a segment stored on the network.
type SegmentID [SegmentIDSize]byte

// String is the hex form.
func (s SegmentID) String() string { return fmt.Sprintf("%x", s[:]) }

// Location says where a sealed chunk lives inside a segment.
type Location struct {
	Segment SegmentID
	Offset  uint32
	Length  uint32
}

const locationSize = SegmentIDSize + 8

// SegmentState is a segment's replication state.
type SegmentState uint8

// Segment states.
const (
	SegmentDurable  SegmentState = 1 // committed with all N pieces healthy
	SegmentDegraded SegmentState = 2 // committed, fewer than N pieces healthy
)

func (s SegmentState) String() string {
	switch s {
	case SegmentDurable:
		return "durable"
	case SegmentDegraded:
		return "degraded"
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// SegmentKind says what a segment holds.
type SegmentKind uint8

// Segment kinds.
const (
	KindData     SegmentKind = 1 // sealed chunks
	KindSnapshot SegmentKind = 2 // part of an index snapshot
)

// SegmentPiece is where one piece of a segment was stored.
type SegmentPiece struct {
	Node  [32]byte // storage node id
	Piece [32]byte // piece id (Merkle root)
}

// Segment is the index record of a committed segment.
type Segment struct {
	ID      SegmentID
	Kind    SegmentKind
	State   SegmentState
	K, N    uint8
	Healthy uint8  // healthy pieces at the last check
	Used    uint32 // bytes of content (sealed chunks) before padding
	Class   uint32 // padded size: one of the size classes
	Created int64  // unix nanoseconds
	Checked int64  // last health check, unix nanoseconds
	// DeadSince is when the segment was found holding no live data (0: live).
	DeadSince int64
	Pieces    []SegmentPiece
}

const segmentRecV1 = 1
const segmentFixed = 1 + 1 + 1 + 3 + 4 + 4 + 8*3 + 1

func (s *Segment) encode() []byte {
	b := make([]byte, segmentFixed, segmentFixed+64*len(s.Pieces))
	b[0] = segmentRecV1
	b[1] = byte(s.Kind)
	b[2] = byte(s.State)
	b[3], b[4], b[5] = s.K, s.N, s.Healthy
	binary.BigEndian.PutUint32(b[6:], s.Used)
	binary.BigEndian.PutUint32(b[10:], s.Class)
	binary.BigEndian.PutUint64(b[14:], uint64(s.Created))
	binary.BigEndian.PutUint64(b[22:], uint64(s.Checked))
	binary.BigEndian.PutUint64(b[30:], uint64(s.DeadSince))
	b[38] = byte(len(s.Pieces))
	for _, p := range s.Pieces {
		b = append(b, p.Node[:]...)
		b = append(b, p.Piece[:]...)
	}
	return b
}

func decodeSegment(id SegmentID, b []byte) (Segment, error) {
	if len(b) < segmentFixed || b[0] != segmentRecV1 || len(b) != segmentFixed+64*int(b[38]) {
		return Segment{}, fmt.Errorf("segment %s: record of %d bytes, version %v: %w", id, len(b), firstByte(b), ErrCorrupt)
	}
	s := Segment{ID: id, Kind: SegmentKind(b[1]), State: SegmentState(b[2]), K: b[3], N: b[4], Healthy: b[5],
		Used: binary.BigEndian.Uint32(b[6:]), Class: binary.BigEndian.Uint32(b[10:]),
		Created: int64(beUint64(b[14:])), Checked: int64(beUint64(b[22:])), DeadSince: int64(beUint64(b[30:]))}
	s.Pieces = make([]SegmentPiece, b[38])
	for i := range s.Pieces {
		o := segmentFixed + 64*i
		copy(s.Pieces[i].Node[:], b[o:])
		copy(s.Pieces[i].Piece[:], b[o+32:])
	}
	return s, nil
}

func locationKey(id ChunkID) []byte  { return append([]byte{pLocation}, id[:]...) }
func segmentKey(id SegmentID) []byte { return append([]byte{pSegment}, id[:]...) }

func decodeLocation(b []byte) (Location, error) {
	if len(b) != locationSize {
		return Location{}, fmt.Errorf("location of %d bytes, want %d: %w", len(b), locationSize, ErrCorrupt)
	}
	var l Location
	copy(l.Segment[:], b)
	l.Offset = binary.BigEndian.Uint32(b[16:])
	l.Length = binary.BigEndian.Uint32(b[20:])
	return l, nil
}

func (l *Location) encode() []byte {
	b := make([]byte, locationSize)
	copy(b, l.Segment[:])
	binary.BigEndian.PutUint32(b[16:], l.Offset)
	binary.BigEndian.PutUint32(b[20:], l.Length)
	return b
}

// GetLocation reads where chunk id is stored on the network; ErrNotFound if
// it is not (yet) in a committed segment.
func (x *Index) GetLocation(id ChunkID) (Location, error) {
	b, err := x.get(locationKey(id))
	if err != nil {
		return Location{}, fmt.Errorf("location of chunk %s: %w", id, err)
	}
	return decodeLocation(b)
}

// Locations calls fn with every chunk location.
func (x *Index) Locations(fn func(ChunkID, Location) error) error {
	return x.scan([]byte{pLocation}, func(key, val []byte) error {
		if len(key) != 1+ChunkIDSize {
			return fmt.Errorf("location key %x: %w", key, ErrCorrupt)
		}
		l, err := decodeLocation(val)
		if err != nil {
			return err
		}
		return fn(ChunkID(key[1:]), l)
	})
}

// GetSegment reads a segment record; ErrNotFound if absent.
func (x *Index) GetSegment(id SegmentID) (Segment, error) {
	b, err := x.get(segmentKey(id))
	if err != nil {
		return Segment{}, fmt.Errorf("segment %s: %w", id, err)
	}
	return decodeSegment(id, b)
}

// Segments calls fn with every segment record.
func (x *Index) Segments(fn func(Segment) error) error {
	return x.scan([]byte{pSegment}, func(key, val []byte) error {
		if len(key) != 1+SegmentIDSize {
			return fmt.Errorf("segment key %x: %w", key, ErrCorrupt)
		}
		s, err := decodeSegment(SegmentID(key[1:]), val)
		if err != nil {
			return err
		}
		return fn(s)
	})
}

// GetRepl reads a named replication state record; ErrNotFound if absent.
func (x *Index) GetRepl(name string) ([]byte, error) {
	return x.get(append([]byte{pRepl}, name...))
}

// PutLocation records where chunk id is stored, and takes it off the
// pending feed in the same batch.
func (b *Batch) PutLocation(id ChunkID, l *Location) {
	b.set(locationKey(id), l.encode())
	if b.x.tracksLive() {
		if b.isPending(id) {
			b.live = append(b.live, LiveChange{Segment: l.Segment, Bytes: l.Length, Live: true})
		}
		b.noteLoc(id, l)
	}
	b.noteLocated(id, true)
	b.unmarkPending(id)
}

// DeleteLocation forgets where chunk id is stored. A chunk that is still
// needed must be marked again (MarkPending) in the same batch: a repack
// does, a released segment's dead chunks are not.
func (b *Batch) DeleteLocation(id ChunkID) {
	b.del(locationKey(id))
	if b.x.tracksLive() {
		b.noteLoc(id, nil)
	}
	b.noteLocated(id, false)
}

// PutSegment writes a segment record. A dead data segment's record is
// snapshot state (StateGeneration); a live one's health is not.
func (b *Batch) PutSegment(s *Segment) {
	b.set(segmentKey(s.ID), s.encode())
	if s.Kind == KindData && s.DeadSince != 0 {
		b.state = true
	}
}

// DeleteSegment removes a segment record.
func (b *Batch) DeleteSegment(id SegmentID) {
	b.del(segmentKey(id))
	b.state = true
}

// PutRepl writes a named replication state record.
func (b *Batch) PutRepl(name string, val []byte) { b.set(append([]byte{pRepl}, name...), val) }

// Export calls fn with every record of the index as stored (key and sealed
// value), except the replication engine's own state and the pending feed
// (derived: Import rebuilds it); the slices are valid only during the call.
// It reads one consistent snapshot of the index.
func (x *Index) Export(fn func(key, sealed []byte) error) error {
	var rd pebble.Reader = x.rd // a view reads its own snapshot
	if rd == nil {
		snap := x.db.NewSnapshot()
		defer snap.Close()
		rd = snap
	}
	it, err := rd.NewIter(&pebble.IterOptions{})
	if err != nil {
		return err
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		x.read.Add(1)
		if !snapshotted(k) {
			continue
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return err
		}
		if err := fn(k, v); err != nil {
			return err
		}
	}
	return it.Error()
}

// ErrNotEmpty means Import was asked to fill an index that holds records.
var ErrNotEmpty = errors.New("index is not empty")

// Import writes records produced by Export into this index, which must hold
// nothing but its format record. Every value must open under this vault's
// key with its own key as associated data, so a record from another vault
// or a tampered one is refused and nothing is written.
func (x *Index) Import(records func(fn func(key, sealed []byte) error) error) error {
	empty := true
	if err := x.scan([]byte{pCounter}, func(_, _ []byte) error { empty = false; return errStop }); err != nil && !errors.Is(err, errStop) {
		return err
	}
	if err := x.scan([]byte{pInode}, func(_, _ []byte) error { empty = false; return errStop }); err != nil && !errors.Is(err, errStop) {
		return err
	}
	if !empty {
		return ErrNotEmpty
	}
	x.stopTracking() // raw records: a RefSum cannot follow them (nor change marks: an empty index has no version cache)
	b := x.db.NewBatch()
	defer b.Close()
	var buf []byte
	err := records(func(key, sealed []byte) error {
		if len(key) == 0 {
			return fmt.Errorf("empty key: %w", ErrCorrupt)
		}
		var err error
		if buf, err = x.keys.Meta.Open(buf[:0], sealed, key); err != nil {
			return fmt.Errorf("record %x: %w: %w", key, ErrCorrupt, err)
		}
		if key[0] == pFormat {
			if v := binary.BigEndian.Uint32(buf); len(buf) != 4 || v < formatNoFeed || v > FormatVersion {
				return fmt.Errorf("snapshot of index format %x, this fincrypt reads formats %d to %d", buf, formatNoFeed, FormatVersion)
			}
			return nil
		}
		if key[0] == pPending || key[0] == pTreeCache || key[0] == pChange {
			return nil // derived: rebuilt below, or by the next version (or the next snapshot: a base)
		}
		return b.Set(key, sealed, nil)
	})
	if err != nil {
		return err
	}
	x.mu.Lock()
	x.counter = map[string]*counter{}
	x.mu.Unlock()
	if err := b.Commit(pebble.Sync); err != nil {
		return err
	}
	x.icache.reset(uint64(b.SeqNum())) // raw inode records, not seen by the inode cache
	x.fold.drop()                      // records written outside the change feed: the next fold walks
	x.gen.Add(1)
	x.sgen.Add(1)
	x.seggen.Add(1)
	x.dgen.Add(1)
	_, err = x.rebuildFeed()
	return err
}

// ReplRecords calls fn with every replication state record whose name
// starts with prefix.
func (x *Index) ReplRecords(prefix string, fn func(name string, val []byte) error) error {
	p := append([]byte{pRepl}, prefix...)
	return x.scan(p, func(key, val []byte) error { return fn(string(key[1:]), val) })
}

// DeleteRepl removes a named replication state record.
func (b *Batch) DeleteRepl(name string) { b.del(append([]byte{pRepl}, name...)) }

// ExportState is Export that also returns, read from the same consistent
// view, the chunks that chunk maps reference but no location record places:
// what a snapshot of this view still needs uploaded before a restore of it
// can read every file. (Location keys sort before chunk-map keys, so one
// pass sees every location before the references.)
func (x *Index) ExportState(fn func(key, sealed []byte) error) (missing []ChunkID, err error) {
	located := map[ChunkID]struct{}{}
	listed := map[ChunkID]struct{}{}
	var blobs []ChunkID // blob keys sort before locations: checked at the end
	var buf []byte
	err = x.Export(func(key, sealed []byte) error {
		switch {
		case len(key) == 1+ChunkIDSize && (key[0] == pBlob || key[0] == pPin):
			blobs = append(blobs, ChunkID(key[1:])) // pins too sort before locations
		case len(key) == 1+ChunkIDSize && key[0] == pLocation:
			located[ChunkID(key[1:])] = struct{}{}
		case len(key) == 17 && key[0] == pChunk:
			var err error
			if buf, err = x.keys.Meta.Open(buf[:0], sealed, key); err != nil {
				return fmt.Errorf("record %x: %w: %w", key, ErrCorrupt, err)
			}
			ref, err := decodeChunkRef(buf)
			if err != nil {
				return err
			}
			if _, ok := located[ref.ID]; !ok {
				if _, ok := listed[ref.ID]; !ok {
					listed[ref.ID] = struct{}{}
					missing = append(missing, ref.ID)
				}
			}
		}
		return fn(key, sealed)
	})
	for _, id := range blobs {
		_, dup := listed[id] // a pinned chunk its file still references
		if _, ok := located[id]; !ok && !dup {
			missing = append(missing, id)
		}
	}
	return missing, err
}

// LocatedRecords calls fn with the stored location record of each chunk in
// ids that has one, and once with the record of each segment those
// locations name; it returns the chunks without a location.
func (x *Index) LocatedRecords(ids []ChunkID, fn func(key, sealed []byte) error) (missing []ChunkID, err error) {
	segs := map[SegmentID]struct{}{}
	for _, id := range ids {
		k := locationKey(id)
		sealed, err := x.raw(k)
		if errors.Is(err, ErrNotFound) {
			missing = append(missing, id)
			continue
		}
		if err != nil {
			return nil, err
		}
		pt, err := x.keys.Meta.Open(nil, sealed, k)
		if err != nil {
			return nil, fmt.Errorf("record %x: %w: %w", k, ErrCorrupt, err)
		}
		l, err := decodeLocation(pt)
		if err != nil {
			return nil, err
		}
		if err := fn(k, sealed); err != nil {
			return nil, err
		}
		if _, ok := segs[l.Segment]; ok {
			continue
		}
		segs[l.Segment] = struct{}{}
		sk := segmentKey(l.Segment)
		sv, err := x.raw(sk)
		if err != nil {
			return nil, fmt.Errorf("segment %s of chunk %s: %w", l.Segment, id, err)
		}
		if err := fn(sk, sv); err != nil {
			return nil, err
		}
	}
	return missing, nil
}

// OpenSegmentRecord decodes a segment record as Export passes it (key and
// sealed value); ok is false for a record that is not a segment's.
func (x *Index) OpenSegmentRecord(key, sealed []byte) (s Segment, ok bool, err error) {
	if len(key) != 1+SegmentIDSize || key[0] != pSegment {
		return Segment{}, false, nil
	}
	b, err := x.keys.Meta.Open(nil, sealed, key)
	if err != nil {
		return Segment{}, true, fmt.Errorf("segment record %x: %w: %w", key, ErrCorrupt, err)
	}
	s, err = decodeSegment(SegmentID(key[1:]), b)
	return s, true, err
}

// raw returns a copy of the sealed value stored under key.
func (x *Index) raw(key []byte) ([]byte, error) {
	v, closer, err := x.reader().Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	defer closer.Close()
	return append([]byte(nil), v...), nil
}
