package meta

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/cockroachdb/pebble/v2"
)

// The change feed: which snapshot-exported keys changed since the stored
// index snapshot's export, so that the next snapshot can be a delta (the
// changed keys' values, or that they are gone) instead of the whole index.
//
// A record `Q key` exists for every key that Export passes (everything but
// R, P, U and Q) and that a commit set or deleted since the last
// DropChanges that covered it. It is written in the same Pebble batch as the
// change itself, so a crash never separates them. Its value is the feed's
// epoch at the commit: ChangeView ends an epoch and takes its view in one
// step, so every record of an epoch up to the view's is in the view, and
// DropChanges, after the snapshot of that view is stored, deletes exactly
// those (a key changed again later carries a later epoch and stays).
//
// The feed is kept only by an index of format 3 (formatChanges):
// StartChanges writes that format record once, so an older fincrypt, which
// does not keep the feed, refuses to open the index (its changes would be
// missing from the next delta). A vault that is never snapshotted never
// turns it on, and keeps no feed.

const pChange = 'Q' // Q key -> epoch (8)

// changeFeed is the index's state of the change feed.
type changeFeed struct {
	mu    sync.RWMutex // commits that write feed records hold it shared; a cut or drop exclusive
	on    bool         // format 3: every commit keeps the feed (under mu)
	epoch uint64       // the open epoch, stamped on new records (under mu)
	known bool         // epoch is past every stored record's (under mu)
}

// snapshotted reports whether key is one that Export passes (and so one the
// change feed follows).
func snapshotted(key []byte) bool {
	return len(key) == 0 || (key[0] != pRepl && key[0] != pPending && key[0] != pTreeCache && key[0] != pChange)
}

func changeKey(key []byte) []byte { return append([]byte{pChange}, key...) }

// noteChange records that the batch sets or deletes an exported key.
func (b *Batch) noteChange(key []byte) {
	if !snapshotted(key) {
		return
	}
	if b.changed == nil {
		b.changed = map[string]struct{}{}
	}
	b.changed[string(key)] = struct{}{}
}

// addChanges writes the feed's records of the batch's changes, stamped with
// the open epoch, into the batch; it returns the unlock to call once the
// batch is committed (or nil if the feed is off or the batch changed no
// exported key).
func (b *Batch) addChanges() func() {
	f := &b.x.chg
	if len(b.changed) == 0 {
		return nil
	}
	f.mu.RLock()
	if !f.on {
		f.mu.RUnlock()
		return nil
	}
	val := binary.BigEndian.AppendUint64(nil, f.epoch)
	for k := range b.changed {
		ck := changeKey([]byte(k))
		if err := b.b.Set(ck, b.x.keys.Meta.Seal(nil, val, ck), nil); err != nil {
			panic(err) // as Batch.set
		}
	}
	b.x.fold.touch(b.changed) // for the next cut's fold (fold.go)
	return f.mu.RUnlock
}

// ChangesOn reports whether the index keeps the change feed (format 3).
func (x *Index) ChangesOn() bool {
	x.chg.mu.RLock()
	defer x.chg.mu.RUnlock()
	return x.chg.on
}

// StartChanges makes the index keep the change feed from now on: it writes
// format 3, which an older fincrypt refuses to open, and returns whether
// the feed was off until now (then it holds nothing: no delta can be
// trusted to follow an earlier snapshot).
func (x *Index) StartChanges() (started bool, err error) {
	f := &x.chg
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.on {
		return false, nil
	}
	fk := []byte{pFormat}
	if err := x.db.Set(fk, x.keys.Meta.Seal(nil, binary.BigEndian.AppendUint32(nil, formatChanges), fk), pebble.Sync); err != nil {
		return false, fmt.Errorf("starting the change feed: %w", err)
	}
	x.format = formatChanges
	f.on, f.known = true, false
	return true, nil
}

// ChangeView is a read-only view of the index taken when an epoch of the
// change feed ended: its feed records are exactly the changes of that
// epoch and the earlier ones not yet dropped.
type ChangeView struct {
	*Index        // the view (Index.View): reads see no later commit
	Epoch  uint64 // the epoch it ended: DropChanges(Epoch) once its snapshot is stored
	close  func()

	seq    uint64           // its cut of the fold (fold.go)
	fsnap  *pebble.Snapshot // the fold's snapshot of the view, until folded or closed (under fold.run)
	folded bool             // a fold took fsnap (under fold.run)
}

// Close releases the view (and its fold snapshot, unless a fold kept it).
func (v *ChangeView) Close() { v.close() }

// ChangeView ends the feed's open epoch and returns a view of the index
// taken at that moment: no commit stamped with that epoch or an earlier one
// is missing from it, and every later one is. ErrNoChanges if the index
// does not keep the feed.
func (x *Index) ChangeView() (*ChangeView, error) {
	f := &x.chg
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.on {
		return nil, ErrNoChanges
	}
	if !f.known {
		// After an open: past every stored record's epoch, so that a
		// drop covers each of them.
		var top uint64
		err := x.scan([]byte{pChange}, func(_, val []byte) error {
			if len(val) != 8 {
				return fmt.Errorf("change record of %d bytes: %w", len(val), ErrCorrupt)
			}
			top = max(top, beUint64(val))
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("reading the change feed: %w", err)
		}
		f.epoch, f.known = max(f.epoch, top+1), true
	}
	e := f.epoch
	f.epoch++
	v, closeView := x.View()
	// No commit that keeps the feed runs: the cut's keys are exactly those
	// of the commits since the last cut.
	cv := &ChangeView{Index: v, Epoch: e, seq: x.fold.cut(), fsnap: x.db.NewSnapshot()}
	cv.close = func() {
		x.fold.closeView(cv)
		closeView()
	}
	return cv, nil
}

// ErrNoChanges means the index does not keep the change feed.
var ErrNoChanges = errors.New("the index keeps no change feed")

// Changes calls fn, in key order, with every key the view's change feed
// names: its stored (sealed) value, or deleted true and no value if the key
// is gone. The slices are valid only during the call. Its cost is
// proportional to the changes, not to the index.
func (x *Index) Changes(fn func(key, sealed []byte, deleted bool) error) error {
	return x.scan([]byte{pChange}, func(ck, _ []byte) error {
		key := ck[1:]
		if !snapshotted(key) {
			return fmt.Errorf("change record of key %x: %w", key, ErrCorrupt)
		}
		x.points.Add(1)
		v, closer, err := x.reader().Get(key)
		if errors.Is(err, pebble.ErrNotFound) {
			return fn(key, nil, true)
		}
		if err != nil {
			return err
		}
		defer closer.Close()
		return fn(key, v, false)
	})
}

// PendingIDs returns the chunks of the pending feed (what the index
// references and no location places yet), in chunk id order.
func (x *Index) PendingIDs() ([]ChunkID, error) {
	var ids []ChunkID
	err := x.PendingChunks(func(p Pending) error { ids = append(ids, p.ID); return nil })
	return ids, err
}

// DropChanges deletes the change feed's records of epoch upTo and earlier:
// a snapshot of the view that ended upTo is stored. It returns how many it
// deleted. Records of later epochs (keys changed again since) stay.
//
// Each run of consecutive dropped records goes as one range deletion, not
// a point deletion per record: Pebble keeps a point deletion until a
// compaction reaches the bottom level, and every later scan of the feed
// (each delta's export, the next drop) steps over each one, so that after
// a vault's first 100,000 files every delta read 400,000 deleted records.
// An iterator seeks past a range deletion in one step.
func (x *Index) DropChanges(upTo uint64) (int, error) {
	f := &x.chg
	f.mu.Lock() // no commit stamps a record between the read and the delete
	defer f.mu.Unlock()
	if !f.on {
		return 0, nil
	}
	b := x.db.NewBatch()
	defer b.Close()
	n := 0
	var run, last []byte // the open run of dropped records: its first and last key
	endRun := func(end []byte) error {
		if run == nil {
			return nil
		}
		err := b.DeleteRange(run, end, nil)
		run = nil
		return err
	}
	err := x.scan([]byte{pChange}, func(ck, val []byte) error {
		if len(val) != 8 {
			return fmt.Errorf("change record of %d bytes: %w", len(val), ErrCorrupt)
		}
		if beUint64(val) > upTo {
			return endRun(ck) // [run, ck) holds only dropped records
		}
		n++
		if run == nil {
			run = bytes.Clone(ck)
		}
		last = append(last[:0], ck...)
		return nil
	})
	if err == nil {
		err = endRun(append(last, 0)) // the successor of the run's last key
	}
	if err != nil {
		return 0, fmt.Errorf("dropping the change feed: %w", err)
	}
	if n == 0 {
		return 0, nil
	}
	// Not synced: records a crash brings back name keys again, which the
	// next delta carries once more (never fewer).
	if err := b.Commit(pebble.NoSync); err != nil {
		return 0, fmt.Errorf("dropping the change feed: %w", err)
	}
	x.gen.Add(1)
	return n, nil
}

// ChangeCount returns the number of records in the change feed (tests).
func (x *Index) ChangeCount() (int, error) {
	n := 0
	err := x.scan([]byte{pChange}, func(_, _ []byte) error { n++; return nil })
	return n, err
}
