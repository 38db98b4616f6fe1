package replicate

import (
	"crypto/sha256"
	"encoding/binary"
	"time"

	"github.com/fincrypt/fincrypt/meta"
)

// A clean stop leaves what the engine knew to be settled, so that the
// next start need not find it out again with a walk of the whole index
// (hash it for snapshot coverage, walk it for maintenance, list the store
// for the cache): the replication-state record R "idle_close" holds
//
//	flags (1: bit 0 snapshot covers the index, bit 1 maintenance idle,
//	       bit 2 cache counted) | SHA-256 of the key file (32)
//	| maintenance's next due time (8, ns) | cache bytes (8)
//
// New reads and deletes it (synced) before anything else, and trusts it
// only if nothing changed the index's snapshot state since it was opened
// (meta.Index.StateGeneration is 0: the file system's recovery purged no
// orphan). Nothing but the file system's clean-close mark is written after
// the engine stops, and a run that does not stop cleanly leaves no record.
const idleCloseName = "idle_close"

const (
	idleTied = 1 << iota
	idleMaint
	idleCache
)

const idleCloseLen = 1 + sha256.Size + 8 + 8

// liveCountName is the record R "live_count" a clean stop leaves beside
// idle_close: maintenance's count of each segment's live bytes, so that the
// next start follows the live-bytes feed from it instead of walking the
// index at its first change:
//
//	the index's RefSum (8 + 32: its chunk references, blobs and pins)
//	| (segment id (16) | live bytes (8)) repeated
//
// It is trusted on the terms of idle_close and only if the index's tracked
// RefSum (meta.Index.TrackedRefs) at the next start is the one recorded:
// no chunk reference, blob or pin changed in between (a command that
// changed them without the mount).
const liveCountName = "live_count"

const liveCountEntry = meta.SegmentIDSize + 8

const liveCountHead = 8 + 32

// saveIdle writes the idle_close record (Close, after the rounds stopped).
func (r *Replicator) saveIdle() {
	gen, sg := r.idx.Generation(), r.idx.StateGeneration()
	r.mu.Lock()
	b := make([]byte, idleCloseLen)
	if r.snapHash != nil && r.snapGen == sg+1 && r.protKey != nil {
		b[0] |= idleTied
		sum := sha256.Sum256(r.protKey)
		copy(b[1:], sum[:])
	}
	if r.maintGen == gen+1 {
		b[0] |= idleMaint
		binary.BigEndian.PutUint64(b[1+sha256.Size:], uint64(r.maintNext.UnixNano()))
	}
	if r.evictGen == gen+1 && !r.cacheDirty {
		b[0] |= idleCache
		binary.BigEndian.PutUint64(b[1+sha256.Size+8:], r.st.CacheBytes)
	}
	r.mu.Unlock()
	var count []byte
	if r.liveCount != nil {
		// The engine has stopped: its maintenance is not running.
		sum, tracked := r.idx.TrackedRefs()
		if changes, complete := r.idx.TakeLive(); complete && tracked {
			r.applyLive(changes)
			count = make([]byte, 0, liveCountHead+len(r.liveCount)*liveCountEntry)
			count = append(binary.BigEndian.AppendUint64(count, sum.N), sum.Sum[:]...)
			for id, n := range r.liveCount {
				count = binary.BigEndian.AppendUint64(append(count, id[:]...), n)
			}
		} else {
			r.liveCount = nil
		}
	}
	if b[0] == 0 && count == nil {
		return
	}
	batch := r.idx.NewBatch()
	if count != nil {
		batch.PutRepl(liveCountName, count)
	}
	batch.PutRepl(idleCloseName, b)
	if err := batch.Commit(false); err != nil { // the unmount syncs after
		r.log.Warn("idle record", "err", err)
	}
}

// loadIdle consumes the idle_close record (New) and applies what it says
// if the index's snapshot state has not changed since it was opened.
func (r *Replicator) loadIdle() {
	count, cerr := r.idx.GetRepl(liveCountName)
	b, err := r.idx.GetRepl(idleCloseName)
	if err != nil && cerr != nil {
		return
	}
	batch := r.idx.NewBatch()
	batch.DeleteRepl(idleCloseName)
	batch.DeleteRepl(liveCountName)
	if err := batch.Commit(true); err != nil {
		r.log.Warn("idle record", "err", err)
		return // kept: not trusted either
	}
	if r.idx.StateGeneration() != 0 {
		return
	}
	if sum, ok := r.idx.TrackedRefs(); ok && cerr == nil && len(count) >= liveCountHead &&
		(len(count)-liveCountHead)%liveCountEntry == 0 &&
		binary.BigEndian.Uint64(count) == sum.N && [32]byte(count[8:liveCountHead]) == sum.Sum {
		count = count[liveCountHead:]
		m := make(map[meta.SegmentID]uint64, len(count)/liveCountEntry)
		for ; len(count) > 0; count = count[liveCountEntry:] {
			m[meta.SegmentID(count[:meta.SegmentIDSize])] = binary.BigEndian.Uint64(count[meta.SegmentIDSize:])
		}
		r.liveCount = m // the feed follows on from the TrackLive in New
	}
	if len(b) != idleCloseLen {
		return
	}
	gen, sg := r.idx.Generation(), r.idx.StateGeneration()
	keyFile, kerr := r.readKeyFile()
	r.mu.Lock()
	defer r.mu.Unlock()
	if b[0]&idleTied != 0 && kerr == nil && r.snapHash != nil {
		if sum := sha256.Sum256(keyFile); [sha256.Size]byte(b[1:1+sha256.Size]) == sum {
			r.protKey, r.protGen, r.snapGen = keyFile, sg+1, sg+1
			r.lastChange = time.Now()
		}
	}
	if b[0]&idleMaint != 0 {
		r.maintGen, r.maintSnap = gen+1, r.snapCovers
		r.maintNext = time.Unix(0, int64(binary.BigEndian.Uint64(b[1+sha256.Size:])))
	}
	if b[0]&idleCache != 0 {
		r.evictGen, r.lastEvict = gen+1, time.Now()
		r.st.CacheBytes = binary.BigEndian.Uint64(b[1+sha256.Size+8:])
	}
}
