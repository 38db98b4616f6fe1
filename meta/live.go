package meta

import (
	"errors"
	"sync"
)

// The live-bytes feed: how the share of a data segment that files still
// need changes, told by the batches that change it, so that the
// replication engine's maintenance follows the changes instead of walking
// every chunk reference after each one (replicate.Replicator.maintain).
//
// A committed batch reports a LiveChange for each chunk that
//   - is located in a segment and lost its last reference in the batch
//     (its file overwrote or dropped it and no version pins it, a version
//     that pinned it was forgotten, a backup blob was dropped): Bytes of
//     the segment died;
//   - was pending and got a location in the batch (an upload committed it):
//     Bytes of the segment became live. A chunk located while nothing needs
//     it any more (dropped during its upload) reports nothing: it was dead
//     on arrival.
//
// The feed lives in memory only, for the process that tracks it
// (TrackLive), and is a hint: its consumer recounts with a walk before it
// acts (releases or repacks), and whenever the feed overflowed.

// LiveChange is one change of a data segment's live bytes.
type LiveChange struct {
	Segment SegmentID
	Bytes   uint32
	Live    bool // true: the bytes became live; false: they died
}

type liveFeed struct {
	mu       sync.Mutex
	on       bool
	max      int
	changes  []LiveChange
	overflow bool
}

// TrackLive starts recording the LiveChanges of committed batches, at most
// max of them between two TakeLive calls (more make TakeLive report an
// overflow and drop them).
func (x *Index) TrackLive(max int) {
	f := &x.liveFeed
	f.mu.Lock()
	defer f.mu.Unlock()
	f.on, f.max, f.changes, f.overflow = true, max, nil, false
}

// TakeLive returns the LiveChanges committed since the last call (or since
// TrackLive) and forgets them. complete is false if some were dropped
// (more than max, or nothing tracks the feed): the caller must recount.
func (x *Index) TakeLive() (changes []LiveChange, complete bool) {
	f := &x.liveFeed
	f.mu.Lock()
	defer f.mu.Unlock()
	changes, complete = f.changes, f.on && !f.overflow
	f.changes, f.overflow = nil, false
	return changes, complete
}

// noteLive records a committed batch's changes (after its commit is
// visible, before its generation counts it).
func (x *Index) noteLive(c []LiveChange) {
	if len(c) == 0 {
		return
	}
	f := &x.liveFeed
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.on || f.overflow {
		return
	}
	if len(f.changes)+len(c) > f.max {
		f.changes, f.overflow = nil, true
		return
	}
	f.changes = append(f.changes, c...)
}

// tracksLive reports whether batches need to work out their LiveChanges.
func (x *Index) tracksLive() bool {
	f := &x.liveFeed
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.on && !f.overflow
}

// died notes in the batch that chunk id lost its last reference: if it is
// located (as of the batch), its bytes died in its segment.
func (b *Batch) died(id ChunkID) {
	if !b.x.tracksLive() {
		return
	}
	if _, dup := b.dead[id]; dup {
		return // a second DeletePin or DeleteBlob of it in this batch
	}
	if l, ok := b.locationOf(id); ok {
		if b.dead == nil {
			b.dead = map[ChunkID]struct{}{}
		}
		b.dead[id] = struct{}{}
		b.live = append(b.live, LiveChange{Segment: l.Segment, Bytes: l.Length})
	}
}

// revived notes in the batch that chunk id, referenced by nothing, got a
// reference again (a pin): if it is located, its bytes live again.
func (b *Batch) revived(id ChunkID) {
	if l, ok := b.locationOf(id); ok {
		delete(b.dead, id)
		b.live = append(b.live, LiveChange{Segment: l.Segment, Bytes: l.Length, Live: true})
	}
}

// locationOf is chunk id's location as of this batch.
func (b *Batch) locationOf(id ChunkID) (Location, bool) {
	if l, ok := b.locs[id]; ok {
		if l == nil {
			return Location{}, false
		}
		return *l, true
	}
	l, err := b.x.GetLocation(id)
	if err != nil {
		if !errors.Is(err, ErrNotFound) {
			b.fail(err)
		}
		return Location{}, false
	}
	return l, true
}

// isPending reports whether chunk id is on the pending feed as of this batch.
func (b *Batch) isPending(id ChunkID) bool {
	if on, ok := b.feed[id]; ok {
		return on
	}
	ok, err := b.x.has(pendingKey(id))
	if err != nil {
		b.fail(err)
	}
	return ok
}

func (b *Batch) noteLoc(id ChunkID, l *Location) {
	if b.locs == nil {
		b.locs = map[ChunkID]*Location{}
	}
	if l != nil {
		c := *l
		l = &c
	}
	b.locs[id] = l
}

// Referenced is the set of chunks that a chunk-map entry, a backup blob or
// a pin references: the chunks that keep their locations live.
func (x *Index) Referenced() (map[ChunkID]bool, error) {
	refs := map[ChunkID]bool{}
	err := x.Walk(Visitor{
		Chunk: func(_, _ uint64, ref ChunkRef) { refs[ref.ID] = true },
		Blob:  func(id ChunkID, _ uint32) { refs[id] = true },
		Pin:   func(id ChunkID, _ Pin) { refs[id] = true },
	})
	return refs, err
}

// LiveByWalk counts each segment's live bytes from a walk of everything:
// the lengths of its located chunks that are Referenced, with every data
// segment present (0 when nothing in it is live). It is what the
// live-bytes feed, applied to a count, must agree with.
func (x *Index) LiveByWalk() (map[SegmentID]uint64, error) {
	refs, err := x.Referenced()
	if err != nil {
		return nil, err
	}
	out := map[SegmentID]uint64{}
	if err := x.Segments(func(s Segment) error {
		if s.Kind == KindData {
			out[s.ID] = 0
		}
		return nil
	}); err != nil {
		return nil, err
	}
	err = x.Locations(func(id ChunkID, l Location) error {
		if refs[id] {
			out[l.Segment] += uint64(l.Length)
		}
		return nil
	})
	return out, err
}
