package replicate

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/fincrypt/fincrypt/meta"
	"github.com/fincrypt/fincrypt/vault"
)

// What a restore brings back is the newest stored index snapshot, so a
// change is protected only once such a snapshot covers it. The engine keeps
// a hash of the state a snapshot captures (stateHash) for the live index and
// for the newest stored snapshot; they are equal exactly when a restore
// would bring everything back. When they differ, a snapshot is taken:
//
//   - once the index has been quiet (no write, no upload) for SnapshotDelay,
//   - once the oldest unprotected change is SnapshotInterval/2 old, so that
//     under steady writes a restore misses at most SnapshotInterval,
//   - at once when asked (Sync, Finish) and at start (a previous run may
//     have ended before its last snapshot).
//
// A snapshot is consistent: its export is read from one view of the index,
// and the chunks that view references but no segment holds yet are uploaded
// first; their locations are then added to the snapshot.

// stateHash hashes what a snapshot captures: the key file, every record but
// the format record and segment records (key order), then the id and dead
// flag of each data segment. Health-check fields and the snapshot segments'
// records are left out, so that storing a snapshot (or checking health) does
// not by itself call for another one. records must come in key order.
func stateHash(idx *meta.Index, keyFile []byte, records func(fn func(key, sealed []byte) error) error) ([]byte, error) {
	h := sha256.New()
	h.Write(keyFile)
	var segs []byte
	err := records(func(key, sealed []byte) error {
		if len(key) == 0 || key[0] == 'F' {
			return nil
		}
		s, isSeg, err := idx.OpenSegmentRecord(key, sealed)
		if err != nil {
			return err
		}
		if !isSeg {
			h.Write(binary.BigEndian.AppendUint32(nil, uint32(len(key))))
			h.Write(key)
			h.Write(sealed)
		} else if s.Kind == meta.KindData {
			segs = append(segs, s.ID[:]...)
			segs = append(segs, boolByte(s.DeadSince != 0))
		}
		return nil
	})
	h.Write(segs)
	return h.Sum(nil), err
}

// stateHashV2 is the state hash of an index whose state sum (meta.StateSum,
// the same state stateHash hashes, order-free) is sum: what a chain of
// hash kind 2 records. Taken from a folded sum (meta.Index.Fold), it costs
// nothing that grows with the index.
func stateHashV2(keyFile []byte, sum meta.StateSum) []byte {
	h := sha256.New()
	h.Write([]byte("fincrypt state v2"))
	h.Write(keyFile)
	h.Write(sum[:])
	return h.Sum(nil)
}

// stateHashWalk is stateHashV2 of records, computed by walking them.
func stateHashWalk(idx *meta.Index, keyFile []byte, records func(fn func(key, sealed []byte) error) error) ([]byte, error) {
	s, err := idx.SumRecords(records)
	if err != nil {
		return nil, err
	}
	return stateHashV2(keyFile, s), nil
}

// liveHash is the state hash of the live index, by a walk (version 2: a
// restored index's R snapshot_hash is its chain's, v2 for every chain
// stored since list v3).
func (r *Replicator) liveHash(keyFile []byte) ([]byte, error) {
	r.hashes.Add(1)
	return stateHashWalk(r.idx, keyFile, r.idx.Export)
}

func (r *Replicator) readKeyFile() ([]byte, error) {
	return os.ReadFile(filepath.Join(r.v.Home, vault.KeyFileName))
}

// loadProtection reads what the newest stored snapshot covers (New).
func (r *Replicator) loadProtection() {
	if b, err := r.idx.GetRepl("snapshot_hash"); err == nil {
		r.snapHash = b
	}
	if b, err := r.idx.GetRepl("snapshot_covers"); err == nil && len(b) == 8 {
		r.snapCovers = time.Unix(0, int64(beUint64(b)))
	}
	r.snapBlob = storedSnapshotSize(r.idx) // sizes the first export's buffer
	// The chain the next delta follows: only while the index kept the
	// change feed since (a restored or rebuilt index holds no chain).
	if b, err := r.idx.GetRepl("snapshot_chain"); err == nil && r.idx.ChangesOn() {
		if c, err := decodeChain(b, 0); err == nil && c.hash != nil {
			r.chain = c
		}
	}
	// A previous run may have stopped before its last snapshot: take one
	// at once if anything is unprotected.
	r.syncWanted = time.Now()
}

// storedSnapshotSize returns the sealed size of the newest stored snapshot
// (R snapshot_size), 0 if unknown.
func storedSnapshotSize(idx *meta.Index) int {
	if b, err := idx.GetRepl("snapshot_size"); err == nil && len(b) == 8 {
		return int(min(beUint64(b), 1<<40))
	}
	return 0
}

// protection compares the live index with the newest stored snapshot. It
// returns whether the snapshot covers everything and, if not, the time of
// the oldest change it misses (as first seen by this engine).
//
// Once a snapshot taken by this engine (or one hash of the live index) ties
// the stored snapshot to an index state generation (meta.Index.
// StateGeneration), coverage is a comparison of generations: no walk of
// the index per change or per status call. The live index is hashed only
// when nothing ties them yet (the first round after start, or after a
// snapshot that had to upload chunks to complete its export) or the key
// file changed, and at most once for a stored snapshot it did not match.
func (r *Replicator) protection() (covered bool, since time.Time, err error) {
	keyFile, err := r.readKeyFile()
	if err != nil {
		return false, time.Time{}, fmt.Errorf("snapshot: %w", err)
	}
	r.protMu.Lock()
	defer r.protMu.Unlock()
	sg := r.idx.StateGeneration()
	r.mu.Lock()
	if !bytes.Equal(r.protKey, keyFile) {
		// A new key file (a password change) is not in the snapshot.
		r.protKey, r.protHash, r.snapGen, r.protMiss = keyFile, nil, 0, nil
	}
	if r.protGen != sg+1 {
		r.protGen, r.protHash = sg+1, nil // protHash was of another state
		r.lastChange = time.Now()
	}
	// Tied to a generation, the snapshot covers exactly that one; untied
	// (at start, after a snapshot completed by uploads), one hash of the
	// live index ties it if they agree.
	// Once such a hash missed, the index has moved on from the snapshot
	// (its changes only add: new numbers, versions, locations), and it is
	// not hashed again for it: while writes went on after a snapshot that
	// had to upload chunks to complete its export (not tied), every status
	// call and round after a change hashed the whole index. The next
	// snapshot ties it, or stores the state anew. A hash
	// that may have read the index before the snapshot's own records were
	// committed (snapStoring) does not count as a miss.
	hash := r.snapGen == 0 && r.protHash == nil && r.snapHash != nil && !bytes.Equal(r.protMiss, r.snapHash)
	settled, snapHash := !r.snapStoring, r.snapHash
	r.mu.Unlock()
	if hash {
		h, err := r.liveHash(keyFile)
		if err != nil {
			return false, time.Time{}, fmt.Errorf("snapshot: hashing the index: %w", err)
		}
		r.mu.Lock()
		if r.protGen == sg+1 && bytes.Equal(r.protKey, keyFile) {
			r.protHash = h
		}
		if settled && !bytes.Equal(h, snapHash) && bytes.Equal(r.snapHash, snapHash) && bytes.Equal(r.protKey, keyFile) {
			r.protMiss = snapHash
		}
		r.mu.Unlock()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.snapGen == 0 && r.protHash != nil && r.protGen == sg+1 && bytes.Equal(r.protHash, r.snapHash) {
		r.snapGen = sg + 1 // (read before the hash: never too new)
	}
	covered = r.snapHash != nil && r.snapGen == sg+1
	if covered {
		r.unprotectedSince = time.Time{}
		r.syncWanted = time.Time{} // nothing to wait for: no flushing either
	} else if r.unprotectedSince.IsZero() {
		r.unprotectedSince = time.Now()
	}
	return covered, r.unprotectedSince, nil
}

// urgent reports whether pending data must go out now: a snapshot, a sync
// or an unmount waits for it.
func (r *Replicator) urgent() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.urgentLocked()
}

func (r *Replicator) urgentLocked() bool {
	return r.flushing || r.closing || (!r.syncWanted.IsZero() && r.snapCovers.Before(r.syncWanted))
}

// tick is how often the engine looks for work: often enough for the
// bound on unprotected changes it keeps (the quiet delay is kept to within
// a ScanInterval).
func (r *Replicator) tick() time.Duration {
	return max(min(r.cfg.ScanInterval, r.cfg.SnapshotInterval/8), 100*time.Millisecond)
}

// maybeSnapshot stores a snapshot when one is due (see the top of this
// file). It returns an error only for a failure of the network.
func (r *Replicator) maybeSnapshot() error {
	if r.ctx.Err() != nil {
		return nil
	}
	covered, since, err := r.protection()
	if err != nil {
		r.noteErr(err)
		return nil
	}
	if covered {
		return nil
	}
	r.mu.Lock()
	urgent := r.urgentLocked()
	quiet := time.Since(r.lastChange) >= r.cfg.SnapshotDelay
	r.mu.Unlock()
	steady := time.Since(since) >= r.cfg.SnapshotInterval/2
	if !urgent && !quiet && !steady {
		return nil
	}
	return r.takeSnapshot()
}

// CommitBeforeSync makes RequestSync run commit first (fs.Mount passes the
// step that puts what open and just-closed files hold into the index).
func (r *Replicator) CommitBeforeSync(commit func() error) {
	r.mu.Lock()
	r.commitOpen = commit
	r.mu.Unlock()
}

// ReportUnsaved makes Status count what open files of the mount hold and
// the index does not yet (fs.Mount passes it): their chunks and bytes are
// pending, and the vault is not restorable while there are any.
func (r *Replicator) ReportUnsaved(unsaved func() (inos []uint64, chunks int, bytes uint64)) {
	r.mu.Lock()
	r.unsaved = unsaved
	r.mu.Unlock()
}

// RequestSync asks for a snapshot that covers everything written so far,
// as soon as possible; it returns the mark that such a snapshot's
// SnapshotCovers reaches (or Restorable is true). Written so far includes
// files closed but not yet sealed: they are committed (CommitBeforeSync)
// before the mark is taken. A failure to commit them (a full disk) is
// reported by the files' next write or fsync and shown by status; the mark
// still covers everything committed.
func (r *Replicator) RequestSync() time.Time {
	r.mu.Lock()
	commit := r.commitOpen
	r.mu.Unlock()
	if commit != nil {
		if err := commit(); err != nil {
			r.noteErr(fmt.Errorf("sync: committing open files: %w", err))
		}
	}
	now := time.Now()
	r.mu.Lock()
	if now.After(r.syncWanted) {
		r.syncWanted = now
	}
	r.retryAt = time.Time{} // the user is waiting: try the network now
	r.mu.Unlock()
	r.Kick()
	return now
}

// SetSyncTimeout overrides Config.SyncTimeout for Finish (`fincrypt umount
// --sync-timeout`).
func (r *Replicator) SetSyncTimeout(d time.Duration) {
	r.mu.Lock()
	r.syncTimeout = d
	r.mu.Unlock()
}

// Covered reports whether st shows everything up to mark restorable.
func (st *Status) Covered(mark time.Time) bool {
	return st.Restorable || (st.SnapshotCovers != nil && !st.SnapshotCovers.Before(mark))
}

// Finish is the last duty of an unmount: it uploads what is pending and
// stores a snapshot that covers everything, within Config.SyncTimeout and
// while the network answers (it gives up after three failed rounds in a
// row). progress, if set, is called with the status now and then. It
// returns the last status and whether everything is restorable.
func (r *Replicator) Finish(progress func(Status)) (Status, bool) {
	mark := time.Now()
	r.mu.Lock()
	r.closing = true
	r.syncWanted = mark
	r.retryAt = time.Time{}
	r.netFails = 0
	timeout := r.cfg.SyncTimeout
	if r.syncTimeout > 0 {
		timeout = r.syncTimeout
	}
	r.mu.Unlock()
	r.Kick()
	deadline := mark.Add(timeout)
	for {
		st := r.Status(context.Background())
		if st.Covered(mark) {
			return st, true
		}
		r.mu.Lock()
		fails := r.netFails
		r.mu.Unlock()
		if fails >= 3 || !time.Now().Before(deadline) {
			return st, false
		}
		if progress != nil {
			progress(st)
		}
		select {
		case <-time.After(200 * time.Millisecond):
		case <-r.done:
			return r.Status(context.Background()), false
		}
		r.Kick()
	}
}

func boolByte(b bool) byte {
	if b {
		return 1
	}
	return 0
}

// restorability fills the Restorable block of st (after its pending counts).
func (r *Replicator) restorability(st *Status) {
	covered, since, err := r.protection()
	if err != nil {
		st.Errors = append(st.Errors, err.Error())
	}
	st.Restorable = err == nil && covered && st.PendingChunks == 0 && st.UnsavedOpenFiles == 0
	if !st.Restorable {
		if since.IsZero() {
			since = time.Now()
		}
		t := since.UTC()
		st.UnprotectedSince = &t
	}
	r.mu.Lock()
	if !r.snapCovers.IsZero() {
		t := r.snapCovers.UTC()
		st.SnapshotCovers = &t
	}
	r.mu.Unlock()
}
