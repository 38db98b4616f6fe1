package replicate

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/fincrypt/fincrypt/meta"
	fnet "github.com/fincrypt/fincrypt/net"
	"github.com/fincrypt/fincrypt/vault"
)

// checkHealth asks the mediator how many pieces of each segment are healthy
// and records durable or degraded. It returns an error only for a failure of
// the network.
func (r *Replicator) checkHealth() error {
	var segs []meta.Segment
	if err := r.idx.Segments(func(s meta.Segment) error { segs = append(segs, s); return nil }); err != nil {
		r.noteErr(fmt.Errorf("reading segments: %w", err))
		return nil
	}
	if len(segs) == 0 {
		return nil
	}
	ids := make([]fnet.SegmentID, len(segs))
	for i, s := range segs {
		ids[i] = fnet.SegmentID(s.ID)
	}
	// One call per fnet.MaxHealthBatch segments, each with its own timeout.
	timeout := r.cfg.CallTimeout * time.Duration(1+len(ids)/fnet.MaxHealthBatch)
	ctx, cancel := context.WithTimeout(r.ctx, timeout)
	health, err := r.client.Health(ctx, ids)
	cancel()
	if err != nil {
		if r.ctx.Err() != nil {
			return nil
		}
		return err
	}
	r.mu.Lock()
	r.st.Online = true
	r.mu.Unlock()
	for i, s := range segs {
		h := health[i]
		if !h.Known {
			r.noteErr(fmt.Errorf("segment %s: the mediator does not know it (released or lost)", s.ID))
			// Never durable again: not counted so, and its local chunks
			// are kept (evict needs durable or more than K healthy).
			if s.State == meta.SegmentDurable || s.Healthy != 0 {
				s.Healthy, s.State, s.Checked = 0, meta.SegmentDegraded, time.Now().UnixNano()
				b := r.idx.NewBatch()
				b.PutSegment(&s)
				if err := b.Commit(false); err != nil {
					r.noteErr(fmt.Errorf("segment %s: %w", s.ID, err))
				}
			}
			continue
		}
		healthy := int(h.Healthy)
		state := healthState(healthy, s.N)
		// The record changes only with the health: an idle vault's index
		// stays unchanged, so nothing rescans it.
		if s.Healthy != uint8(healthy) || s.State != state {
			s.Healthy, s.State = uint8(healthy), state
			s.Checked = time.Now().UnixNano()
			b := r.idx.NewBatch()
			b.PutSegment(&s)
			if err := b.Commit(false); err != nil {
				r.noteErr(fmt.Errorf("segment %s: %w", s.ID, err))
			}
		}
	}
	return nil
}

// healthState is the state of a segment of n pieces with healthy of them
// healthy: durable only with all n.
func healthState(healthy int, n uint8) meta.SegmentState {
	if healthy >= int(n) {
		return meta.SegmentDurable
	}
	return meta.SegmentDegraded
}

// evictable reports whether the local copies of a segment's chunks may be
// dropped: the segment is durable, or degraded but still able to lose a
// piece (more than K healthy). At exactly K one more loss loses the data,
// so the local copy is kept.
func evictable(s meta.Segment) bool {
	return s.State == meta.SegmentDurable || s.Healthy > s.K
}

type segUsage struct {
	live, dead       uint64
	liveIDs, deadIDs []meta.ChunkID
	liveRefs         []liveRef // where each of liveIDs is referenced
}

// liveRef is where a chunk is referenced, and its sealed size.
type liveRef struct {
	ino, idx uint64
	size     uint32
}

// maintain releases segments that have held no live chunk for ReleaseDelay
// (and whose death the stored snapshot covers: its export was read after
// it, R snapshot_covers), and repacks data segments whose
// live share fell below RepackBelow: their live chunks are brought back to
// the local store and queued again, which leaves the old segment dead. It
// returns an error only for a failure of the network.
//
// It is skipped while nothing it decides on changed: the index (its
// generation), what the stored snapshot covers, and the time the first dead segment
// becomes due for release. After a change it follows the index's live-bytes
// feed (meta.LiveChange) on its count of each segment's live bytes, and
// walks every chunk reference only when that count finds something to do
// (a segment to mark dead, repack or release: the walk recounts before
// acting), when the feed overflowed, and the first time (to count).
func (r *Replicator) maintain() error {
	gen := r.idx.Generation()
	r.mu.Lock()
	// A death the stored snapshot's export saw: compared with when that
	// export was read, not with when the snapshot was stored (a segment
	// that died in between is still live in it).
	covers := r.snapCovers
	idle := r.maintGen == gen+1 && r.maintSnap.Equal(covers) && time.Now().Before(r.maintNext)
	r.mu.Unlock()
	if idle {
		return nil
	}
	changes, complete := r.idx.TakeLive()
	if r.liveCount != nil && complete {
		var segs []meta.Segment
		if err := r.idx.Segments(func(s meta.Segment) error { segs = append(segs, s); return nil }); err != nil {
			r.noteErr(fmt.Errorf("reading segments: %w", err))
			return nil
		}
		if r.followLive(changes, segs, gen, covers) {
			return nil
		}
	}
	return r.maintainWalk(gen, covers)
}

// followLive applies the live-bytes feed's changes to the count and, if no
// segment is due for anything, records the pass as done and returns true.
func (r *Replicator) followLive(changes []meta.LiveChange, segs []meta.Segment, gen uint64, covers time.Time) bool {
	r.applyLive(changes)
	now := time.Now()
	next := now.Add(365 * 24 * time.Hour)
	var live uint64
	due := false
	known := make(map[meta.SegmentID]struct{}, len(segs))
	for _, s := range segs {
		known[s.ID] = struct{}{}
		n := r.liveCount[s.ID]
		if s.Kind == meta.KindData {
			live += n
		}
		switch {
		case s.DeadSince != 0:
			dead := time.Unix(0, s.DeadSince)
			if now.Sub(dead) >= r.cfg.ReleaseDelay && covers.After(dead) {
				due = true
			} else if at := dead.Add(r.cfg.ReleaseDelay); at.Before(next) {
				next = at
			}
		case s.Kind != meta.KindData:
		case n == 0:
			due = true // dead, or a segment the count has not seen: recount
		case s.State == meta.SegmentDurable && s.Used > 0 && float64(n) < r.cfg.RepackBelow*float64(s.Used):
			due = true
		}
	}
	if due {
		return false
	}
	for id := range r.liveCount {
		if _, ok := known[id]; !ok {
			delete(r.liveCount, id) // released
		}
	}
	r.mu.Lock()
	r.maintGen, r.maintSnap, r.maintNext = gen+1, covers, next
	r.st.LiveBytes = live
	counted := now
	r.st.LiveCounted = &counted
	r.mu.Unlock()
	return true
}

// applyLive applies the live-bytes feed's changes to the count.
func (r *Replicator) applyLive(changes []meta.LiveChange) {
	for _, c := range changes {
		n := r.liveCount[c.Segment]
		if c.Live {
			n += uint64(c.Bytes)
		} else {
			n -= min(n, uint64(c.Bytes))
		}
		r.liveCount[c.Segment] = n
	}
}

// maintainWalk is maintain's pass over every chunk reference and location;
// covers is when the stored snapshot's export was read.
func (r *Replicator) maintainWalk(gen uint64, covers time.Time) error {
	r.passes.maintain.Add(1)
	r.liveCount = nil
	refs := map[meta.ChunkID]liveRef{}
	if err := r.idx.Walk(meta.Visitor{
		Chunk: func(ino, idx uint64, ref meta.ChunkRef) {
			refs[ref.ID] = liveRef{ino: ino, idx: idx, size: ref.Len + vault.Overhead}
		},
		// Kept by a backup: an owner-less mark when a repack queues it again.
		Blob: func(id meta.ChunkID, n uint32) {
			if _, dup := refs[id]; !dup {
				refs[id] = liveRef{size: n + vault.Overhead}
			}
		},
		// Kept by a version of the mount: owner-less too, unless its file
		// still references it (pins sort before chunk-map entries, whose
		// callback then names the file).
		Pin: func(id meta.ChunkID, p meta.Pin) {
			if _, dup := refs[id]; !dup {
				refs[id] = liveRef{size: p.Len + vault.Overhead}
			}
		},
	}); err != nil {
		r.noteErr(fmt.Errorf("scanning the index: %w", err))
		return nil
	}
	usage := map[meta.SegmentID]*segUsage{}
	err := r.idx.Locations(func(id meta.ChunkID, l meta.Location) error {
		u := usage[l.Segment]
		if u == nil {
			u = &segUsage{}
			usage[l.Segment] = u
		}
		if ref, ok := refs[id]; ok {
			u.live += uint64(l.Length)
			u.liveIDs = append(u.liveIDs, id)
			u.liveRefs = append(u.liveRefs, ref)
		} else {
			u.dead += uint64(l.Length)
			u.deadIDs = append(u.deadIDs, id)
		}
		return nil
	})
	if err != nil {
		r.noteErr(fmt.Errorf("scanning locations: %w", err))
		return nil
	}
	var segs []meta.Segment
	if err := r.idx.Segments(func(s meta.Segment) error { segs = append(segs, s); return nil }); err != nil {
		r.noteErr(fmt.Errorf("reading segments: %w", err))
		return nil
	}
	count := make(map[meta.SegmentID]uint64, len(segs))
	for _, s := range segs {
		if u := usage[s.ID]; u != nil {
			count[s.ID] = u.live
		}
	}
	now := time.Now()
	next := now.Add(365 * 24 * time.Hour) // no dead segment waits
	changed := false
	var live uint64
	repacked := false
	var held map[meta.SegmentID]bool // the stored pointer's segments, once asked
	keepSnapshots := false           // its list did not open: release none
	for _, s := range segs {
		u := usage[s.ID]
		if u == nil {
			u = &segUsage{}
		}
		live += u.live
		if s.Kind == meta.KindData && u.live == 0 && s.DeadSince == 0 {
			r.markDead(s)
			changed = true
			continue
		}
		if s.DeadSince != 0 && s.Kind == meta.KindData && u.live > 0 {
			// A chunk of it lives again (a backup stored a dropped blob
			// again: its location is kept): alive, or the release would
			// leave that location naming a released segment.
			r.revive(s, "dead segment holds a live chunk again: kept")
			changed = true
			continue
		}
		if s.DeadSince != 0 {
			dead := time.Unix(0, s.DeadSince)
			if now.Sub(dead) < r.cfg.ReleaseDelay || !covers.After(dead) {
				if due := dead.Add(r.cfg.ReleaseDelay); due.Before(next) {
					next = due // (a newer snapshot changes covers)
				}
				continue
			}
			if s.Kind == meta.KindSnapshot {
				// Never release what the mediator's pointer names, whatever
				// the index says (a clock stepped back between two
				// snapshots makes a death look older than the newest
				// snapshot): ask once per walk, and revive such a segment
				// (a snapshot stored later supersedes it).
				if held == nil {
					var err error
					if held, err = r.heldSegments(); errors.Is(err, ErrSnapshot) {
						r.noteErr(fmt.Errorf("releasing snapshot segments: %w", err))
						held = map[meta.SegmentID]bool{}
						keepSnapshots = true
					} else if err != nil {
						return err
					}
				}
				if keepSnapshots || held[s.ID] {
					if held[s.ID] {
						r.revive(s, "snapshot segment recorded dead is named by the mediator's pointer: kept")
						changed = true
					}
					continue
				}
			}
			changed = true
			ctx, cancel := context.WithTimeout(r.ctx, r.cfg.CallTimeout)
			err := r.client.Release(ctx, fnet.SegmentID(s.ID))
			cancel()
			if err != nil && !errors.Is(err, fnet.ErrNotFound) {
				return err
			}
			b := r.idx.NewBatch()
			b.DeleteSegment(s.ID)
			for _, id := range u.deadIDs {
				b.DeleteLocation(id)
			}
			if err := b.Commit(true); err != nil {
				r.noteErr(err)
				continue
			}
			r.log.Info("segment released", "segment", s.ID, "kind", s.Kind)
			continue
		}
		if s.Kind == meta.KindData && s.State == meta.SegmentDurable && s.Used > 0 &&
			float64(u.live) < r.cfg.RepackBelow*float64(s.Used) {
			changed = true
			if err := r.repack(s, u.liveIDs, u.liveRefs); err != nil {
				r.noteErr(err)
				continue
			}
			repacked = true
		}
	}
	if !changed {
		r.mu.Lock()
		r.maintGen, r.maintSnap, r.maintNext = gen+1, covers, next
		r.mu.Unlock()
		// Followed from here by the live-bytes feed; a pass that changed
		// something walks again next time (the segments it marked dead,
		// repacked or released are counted then).
		r.liveCount = count
	}
	r.mu.Lock()
	r.st.LiveBytes = live
	counted := time.Now()
	r.st.LiveCounted = &counted
	r.mu.Unlock()
	if repacked {
		r.Kick()
	}
	return nil
}

// revive records segment s, recorded dead, alive again (synced): why
// says what still needs it.
func (r *Replicator) revive(s meta.Segment, why string) {
	s.DeadSince = 0
	b := r.idx.NewBatch()
	b.PutSegment(&s)
	if err := b.Commit(true); err != nil {
		r.noteErr(err)
	}
	r.log.Warn(why, "segment", s.ID)
}

// markDead records data segment s dead now. The time is read and the
// record committed under snapMu, so that no snapshot's export is read in
// between: an export read later sees the death, one read earlier covers a
// time before it (and the segment waits for the next snapshot).
func (r *Replicator) markDead(s meta.Segment) {
	r.snapMu.Lock()
	defer r.snapMu.Unlock()
	s.DeadSince = time.Now().UnixNano()
	b := r.idx.NewBatch()
	b.PutSegment(&s)
	if err := b.Commit(false); err != nil {
		r.noteErr(err)
	}
}

// repack brings a segment's live chunks into the local store and forgets
// their location, so that the next scan packs them into a new segment.
func (r *Replicator) repack(s meta.Segment, live []meta.ChunkID, refs []liveRef) error {
	var buf []byte
	for _, id := range live {
		var err error
		if buf, err = r.store.Get(id, buf[:0]); err != nil {
			return fmt.Errorf("repacking segment %s: chunk %s: %w", s.ID, id, err)
		}
		// A fetch that could not keep the chunk (a full disk) still reads:
		// its location must then stay, or the chunk would be pending with
		// no copy left once the segment is released.
		if _, ok := r.store.Has(id); !ok {
			return fmt.Errorf("repacking segment %s: chunk %s could not be kept in the local store", s.ID, id)
		}
	}
	if err := r.store.SyncIDs(live); err != nil {
		return fmt.Errorf("repacking segment %s: %w", s.ID, err)
	}
	b := r.idx.NewBatch()
	for i, id := range live {
		b.DeleteLocation(id)
		// Queued again, unless its file dropped it since the walk.
		b.MarkPending(id, refs[i].ino, refs[i].idx, refs[i].size)
	}
	if err := b.Commit(true); err != nil {
		return fmt.Errorf("repacking segment %s: %w", s.ID, err)
	}
	r.log.Info("repacking segment", "segment", s.ID, "live_chunks", len(live), "used", s.Used)
	return nil
}

type localChunk struct {
	id    meta.ChunkID
	size  int64
	mtime time.Time
}

// evict trims the local store to the cache size, oldest chunks first, among
// those whose segment is durable (or degraded with more than K healthy
// pieces, so that it still survives the loss of one). It also updates CacheBytes.
func (r *Replicator) evict() error {
	_, err := r.evictTo(r.cfg.CacheSize, r.cfg.CacheSize == 0)
	return err
}

// EvictAll drops from the local store every chunk whose segment is durable
// (as a cache of size zero would) and returns how many it dropped.
func (r *Replicator) EvictAll() (int, error) {
	r.dropSegmentCache()
	return r.evictTo(0, false)
}

// trimLow is the share of the cache limit a trim that must evict brings the
// store down to (7/8): the next trims then find the store within the limit
// from its byte count alone, until an eighth of the limit came in again.
func trimLow(limit uint64) uint64 { return limit - limit/8 }

func (r *Replicator) evictTo(limit uint64, countOnly bool) (int, error) {
	// A store of packs knows its bytes: no listing while it is within the
	// limit, nor again after a trim that could not bring it under until
	// something it holds may have become evictable: a segment written or
	// changed (an upload committed, a segment became durable), or a chunk
	// fetched from the network. What else comes in (writes, backup blobs)
	// waits for its upload, which writes a segment: unuploaded data alone
	// over the limit is listed once, however much of it comes.
	segGen, fetched := r.idx.SegmentGeneration(), r.fetched.Load()
	if n, ok := r.store.Bytes(); ok {
		r.mu.Lock()
		r.st.CacheBytes = uint64(n)
		stuck := r.trimStuck
		r.mu.Unlock()
		if countOnly || uint64(n) <= limit {
			return 0, nil
		}
		if stuck.set && stuck.segGen == segGen && stuck.fetched == fetched {
			return 0, nil
		}
	}
	r.passes.evict.Add(1)
	var local []localChunk
	var total uint64
	err := r.store.List(func(id meta.ChunkID) error {
		size, used, err := r.store.Info(id)
		if err != nil {
			return nil // deleted meanwhile
		}
		local = append(local, localChunk{id, size, used})
		total += uint64(size)
		return nil
	}, nil)
	if err != nil {
		return 0, err
	}
	defer func() {
		r.mu.Lock()
		r.st.CacheBytes = total
		r.mu.Unlock()
	}()
	if countOnly || total <= limit {
		return 0, nil
	}
	sort.Slice(local, func(i, j int) bool { return local[i].mtime.Before(local[j].mtime) })
	durable := map[meta.SegmentID]bool{}
	evicted := 0
	low := trimLow(limit)
	defer func() {
		r.mu.Lock()
		r.trimStuck = trimStuck{set: total > limit, segGen: segGen, fetched: fetched}
		r.mu.Unlock()
	}()
	for _, c := range local {
		if total <= low {
			break
		}
		loc, err := r.idx.GetLocation(c.id)
		if err != nil {
			continue // pending: never evicted
		}
		ok, seen := durable[loc.Segment]
		if !seen {
			s, err := r.idx.GetSegment(loc.Segment)
			ok = err == nil && evictable(s)
			durable[loc.Segment] = ok
		}
		if !ok {
			continue
		}
		if err := r.store.Delete(c.id); err != nil {
			return evicted, err
		}
		total -= uint64(c.size)
		evicted++
	}
	if evicted > 0 {
		r.log.Debug("evicted chunks", "count", evicted, "cache_bytes", total)
	}
	return evicted, r.store.Sync()
}

// checkEscrow asks the mediator about the account's escrow, so that status
// warns well before an empty escrow stops placements and, after the grace
// period, releases the data. A mediator without payments, or one that cannot
// answer, leaves no warning.
func (r *Replicator) checkEscrow() {
	ctx, cancel := context.WithTimeout(r.ctx, r.cfg.CallTimeout)
	defer cancel()
	verdict := ""
	b, err := r.client.Balance(ctx)
	if err == nil && b.Warns() {
		verdict = b.Verdict()
	}
	r.mu.Lock()
	r.escrow = verdict
	r.escrowStale = false
	if err == nil {
		r.balance, r.balanceAt = b, time.Now()
	}
	r.mu.Unlock()
}

// escrowDue reports whether the escrow is to be asked again: every
// CheckInterval, or every period of the mediator's when that is shorter
// (so that a devnet's status follows its charges), and at once after a
// placement was refused.
func (r *Replicator) escrowDue(now, last time.Time) bool {
	every := r.cfg.CheckInterval
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.balance != nil && r.balance.Metered && r.balance.Period > 0 {
		every = min(every, max(r.balance.Period, time.Second))
	}
	return r.escrowStale || now.Sub(last) >= every
}

// notePlaceRefused records a placement the mediator refused (it answered,
// so it is online); a refusal for want of escrow asks for the balance at
// the next round, so that status says why in words.
func (r *Replicator) notePlaceRefused(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	since := time.Now()
	if r.refused != nil && r.refused.Since != nil {
		since = *r.refused.Since
	}
	if f := placeRefusal(err, since); f != nil {
		r.refused = f
		if errors.Is(err, fnet.ErrUnauthorized) {
			r.escrowStale = true
		}
	}
}
