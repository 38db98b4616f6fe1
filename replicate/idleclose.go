package replicate

import (
	"crypto/sha256"
	"encoding/binary"
	"time"
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
	if b[0] == 0 {
		return
	}
	batch := r.idx.NewBatch()
	batch.PutRepl(idleCloseName, b)
	if err := batch.Commit(false); err != nil { // the unmount syncs after
		r.log.Warn("idle record", "err", err)
	}
}

// loadIdle consumes the idle_close record (New) and applies what it says
// if the index's snapshot state has not changed since it was opened.
func (r *Replicator) loadIdle() {
	b, err := r.idx.GetRepl(idleCloseName)
	if err != nil {
		return
	}
	batch := r.idx.NewBatch()
	batch.DeleteRepl(idleCloseName)
	if err := batch.Commit(true); err != nil {
		r.log.Warn("idle record", "err", err)
		return // kept: not trusted either
	}
	if len(b) != idleCloseLen || r.idx.StateGeneration() != 0 {
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
		r.maintGen, r.maintSnap = gen+1, r.lastSnapshot
		r.maintNext = time.Unix(0, int64(binary.BigEndian.Uint64(b[1+sha256.Size:])))
	}
	if b[0]&idleCache != 0 {
		r.evictGen, r.lastEvict = gen+1, time.Now()
		r.st.CacheBytes = binary.BigEndian.Uint64(b[1+sha256.Size+8:])
	}
}
