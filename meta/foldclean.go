package meta

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// The fold across a clean close, and the live index's sum.
//
// The fold (fold.go) lives in memory: the first fold of a process walks
// the index, once a mount (about 1 s of CPU at a million files). Its sum is
// kept across a clean close instead: the last batch the index takes before
// it closes (the file system's clean-close mark, package fs) also holds
// `R fold_sum` = tag || the sum of the index at that batch, computed from
// the fold (the keys changed since the last folded view, not a walk) while
// no commit that changes an exported record can run (CommitFoldSum). The
// next process trusts it only when the caller shows that nothing was
// written since that batch: it passes the tag it verified (the clean-close
// mark, which every writer of the index consumes before it changes
// anything, and replaces at its own clean close), and ResumeFold refuses
// once the index took any batch since it opened. A crash, a kill -9 or a
// torn log loses or outdates the mark, and an older fincrypt writes a new
// mark without the sum: then the record's tag does not match and the first
// fold walks, as before. A commit after the tagged batch cannot be covered
// by a sum that was not written in its own batch: keeping the sum right
// across a crash would need each commit to subtract the elements of the
// values it replaces (a read of each, the price the fold took away).

const foldSumName = "fold_sum" // R fold_sum -> tag(16) || StateSum(32)

const foldTagSize = 16

// liveSumOf returns the sum of rd, the index as it stood with no commit of
// exported records in flight (x.chg.mu held exclusive, or rd a snapshot
// taken under it), keys being the fold's keys read at that moment: the last
// folded view's sum with keys set from rd. f.run held.
func (x *Index) liveSumOf(rd pebble.Reader, keys map[string]struct{}) (StateSum, error) {
	f := &x.fold
	s := f.sum
	for k := range keys {
		key := []byte(k)
		if err := x.foldElem(&s, f.prev, key, -1); err != nil {
			return s, err
		}
		if err := x.foldElem(&s, rd, key, 1); err != nil {
			return s, err
		}
	}
	return s, nil
}

// liveKeysLocked returns the keys changed since the last folded view
// (pending cuts and the open one), ok false if the fold holds no chain.
// f.run and x.chg.mu (exclusive) held.
func (x *Index) liveKeysLocked() (map[string]struct{}, bool) {
	f := &x.fold
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.prev == nil || f.prevSeq < f.floor {
		return nil, false
	}
	keys := make(map[string]struct{}, f.n)
	for _, e := range f.pending {
		for k := range e.keys {
			keys[k] = struct{}{}
		}
	}
	for k := range f.touched {
		keys[k] = struct{}{}
	}
	return keys, true
}

// LiveSum returns the state sum of the live index (what SumRecords(
// x.Export) returns) from the fold, reading the keys changed since the last
// folded view and nothing else; ok false if the fold holds no chain (none
// folded yet in this process, keys dropped, an Import). It takes no cut.
func (x *Index) LiveSum() (s StateSum, ok bool, err error) {
	f := &x.fold
	f.run.Lock()
	defer f.run.Unlock()
	x.chg.mu.Lock()
	keys, ok := x.liveKeysLocked()
	if !ok {
		x.chg.mu.Unlock()
		return s, false, nil
	}
	snap := x.db.NewSnapshot() // no commit of exported records in flight
	x.chg.mu.Unlock()
	defer snap.Close()
	s, err = x.liveSumOf(snap, keys)
	return s, err == nil, err
}

// CommitFoldSum commits b, which must change no exported record (the
// clean-close mark), with `R fold_sum` = tag || the index's state sum set in
// it when the fold can give the sum without a walk (saved), else with any
// such record deleted. Commits of exported records wait until it returns;
// the caller makes it the index's last batch before closing. It syncs.
func (x *Index) CommitFoldSum(b *Batch, tag []byte) (saved bool, err error) {
	if len(tag) != foldTagSize {
		return false, fmt.Errorf("fold sum: a tag of %d bytes", len(tag))
	}
	if len(b.changed) != 0 {
		return false, errors.New("fold sum: the batch changes exported records")
	}
	f := &x.fold
	f.run.Lock()
	defer f.run.Unlock()
	x.chg.mu.Lock() // b takes no part of it (it changes no exported key)
	defer x.chg.mu.Unlock()
	var s StateSum
	keys, ok := x.liveKeysLocked()
	if ok && x.chg.on {
		if s, err = x.liveSumOf(x.db, keys); err != nil {
			x.log.Warn("index: the state sum is not kept across the close", "err", err)
			ok = false
		}
	}
	name := foldSumName
	if ok && x.chg.on {
		b.PutRepl(name, append(bytes.Clone(tag), s[:]...))
	} else {
		ok = false
		b.DeleteRepl(name)
	}
	if err := b.Commit(true); err != nil {
		return false, err
	}
	return ok, nil
}

// ResumeFold makes the state sum that CommitFoldSum kept with tag the one
// the next fold starts from, so that the first fold of this process reads
// only the keys changed since it opened. The caller vouches that the index
// took no batch since the one CommitFoldSum committed with tag (package fs:
// tag is the clean-close mark it verified). It refuses (false) if the
// record is missing or holds another tag, if the index took a batch since it
// opened, if the fold already holds a view, or if the index keeps no change
// feed. It deletes the record (synced) before it seeds the fold: after this
// process, crashed or not, the record is gone or a new one.
func (x *Index) ResumeFold(tag []byte) bool {
	val, err := x.GetRepl(foldSumName)
	if err != nil {
		if !errors.Is(err, ErrNotFound) {
			x.log.Warn("index: the kept state sum does not read; the first fold walks", "err", err)
		}
		return false
	}
	if len(tag) != foldTagSize || len(val) != foldTagSize+len(StateSum{}) || !bytes.Equal(val[:foldTagSize], tag) {
		return false
	}
	f := &x.fold
	f.run.Lock()
	defer f.run.Unlock()
	x.chg.mu.Lock()
	defer x.chg.mu.Unlock()
	f.mu.Lock()
	defer f.mu.Unlock()
	if !x.chg.on || x.gen.Load() != 0 || f.prev != nil || f.seq != 0 || f.n != 0 || f.floor != 0 {
		return false
	}
	// Gone before anything else is written (synced), so that whatever
	// happens to this process, no later open finds it.
	b := x.NewBatch()
	b.DeleteRepl(foldSumName)
	if err := b.Commit(true); err != nil {
		x.log.Warn("index: the kept state sum is not deleted; the first fold walks", "err", err)
		return false
	}
	f.prev, f.prevSeq = x.db.NewSnapshot(), 0
	copy(f.sum[:], val[foldTagSize:])
	x.log.Debug("index: state sum resumed from the clean close")
	return true
}
