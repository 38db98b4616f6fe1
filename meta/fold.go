package meta

import (
	"errors"
	"fmt"
	"sync"

	"github.com/cockroachdb/pebble/v2"
)

// The fold: the state sum (statesum.go) of a change view, in time that
// follows the keys changed since the last folded view, not the index.
//
// A commit that writes change feed records (it holds the feed's lock
// shared) adds its exported keys to an in-memory set, touched; it reads
// nothing and hashes nothing. ChangeView (the feed's lock exclusive: no
// such commit runs) moves touched into a pending entry for its cut, and
// takes a Pebble snapshot of its own for the fold. Fold(view) then takes the
// previous folded view's sum and, for every key of the pending entries up to
// the view's, subtracts the element of the key's value in the previous
// snapshot and adds the element of its value in the view. Nothing is
// stored: the first fold of a process walks the view (SumRecords), and so
// does a fold after the touched keys passed FoldCap (they are dropped) or
// after an Import (which writes records outside the feed).

// FoldCap bounds the keys the fold holds (touched and pending, counted per
// entry); past it they are dropped and the next fold walks. A variable so
// that tests can lower it.
var FoldCap = 1 << 18

// foldEntry is the keys changed between one cut and the one before it.
type foldEntry struct {
	seq  uint64 // the cut's number (ChangeView.seq)
	keys map[string]struct{}
}

// foldState is the index's state of the fold.
type foldState struct {
	mu      sync.Mutex          // touched, n, seq, pending, floor
	touched map[string]struct{} // exported keys committed since the last cut
	n       int                 // keys in touched and pending
	seq     uint64              // cuts taken (ChangeView)
	pending []foldEntry         // cuts not folded yet, in order
	floor   uint64              // the first cut whose entry can follow a fold (past the last drop)

	run     sync.Mutex       // Fold and SeedFold; prev, prevSeq, sum; a view's snap
	prev    *pebble.Snapshot // the last folded view's own snapshot, or nil
	prevSeq uint64           // its cut
	sum     StateSum         // its sum
}

// touch records keys committed in the open cut (addChanges, under the
// feed's lock shared).
func (f *foldState) touch(keys map[string]struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.touched == nil {
		f.touched = make(map[string]struct{}, len(keys))
	}
	for k := range keys {
		if _, ok := f.touched[k]; !ok {
			f.touched[k] = struct{}{}
			f.n++
		}
	}
	if f.n > FoldCap {
		f.dropLocked()
	}
}

// drop forgets every key held: no view cut so far can follow a fold, and
// the next cut's entry misses keys, so a fold of it walks.
func (f *foldState) drop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dropLocked()
}

func (f *foldState) dropLocked() {
	f.touched, f.pending, f.n = nil, nil, 0
	f.floor = f.seq + 1
}

// cut ends the open cut (ChangeView, the feed's lock exclusive) and returns
// its number.
func (f *foldState) cut() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	f.pending = append(f.pending, foldEntry{seq: f.seq, keys: f.touched})
	f.touched = nil
	return f.seq
}

// take removes the pending entries up to cut seq and returns their keys
// (under f.mu).
func (f *foldState) take(seq uint64) map[string]struct{} {
	keys := map[string]struct{}{}
	n := 0
	for _, e := range f.pending {
		if e.seq > seq {
			break
		}
		n++
		f.n -= len(e.keys)
		for k := range e.keys {
			keys[k] = struct{}{}
		}
	}
	f.pending = f.pending[n:]
	return keys
}

// closeView releases a view's fold snapshot unless a fold kept it.
func (f *foldState) closeView(v *ChangeView) {
	f.run.Lock()
	defer f.run.Unlock()
	if v.fsnap != nil {
		v.fsnap.Close()
		v.fsnap = nil
	}
}

// closeAll releases the kept snapshot (Index.Close).
func (f *foldState) closeAll() {
	f.run.Lock()
	defer f.run.Unlock()
	if f.prev != nil {
		f.prev.Close()
		f.prev = nil
	}
}

// Fold returns the state sum of the view (what SumRecords(v.Export)
// returns): folded from the last folded view's when it can, else by a walk
// of the view.
func (x *Index) Fold(v *ChangeView) (StateSum, error) {
	s, ok, err := x.FoldKept(v)
	if ok || err != nil {
		return s, err
	}
	if s, err = x.SumRecords(v.Export); err != nil {
		return s, err
	}
	x.SeedFold(v, s)
	return s, nil
}

// FoldKept is Fold without the walk: ok false if the view cannot be folded
// (the first fold of the process, a view older than the last folded one,
// keys dropped); then the view can still seed the fold (SeedFold).
func (x *Index) FoldKept(v *ChangeView) (s StateSum, ok bool, err error) {
	f := &x.fold
	f.run.Lock()
	defer f.run.Unlock()
	if v.fsnap == nil {
		if v.folded {
			return s, false, errors.New("state sum: a change view folded twice")
		}
		return s, false, errors.New("state sum: a closed change view")
	}
	f.mu.Lock()
	chain := f.prev != nil && f.prevSeq >= f.floor && v.seq > f.prevSeq
	var keys map[string]struct{}
	if chain {
		keys = f.take(v.seq)
	}
	f.mu.Unlock()
	if !chain {
		return s, false, nil
	}
	s = f.sum
	for k := range keys {
		key := []byte(k)
		if err := x.foldElem(&s, f.prev, key, -1); err != nil {
			f.prev.Close() // its pending keys are gone: the next fold walks
			f.prev = nil
			return s, false, err
		}
		if err := x.foldElem(&s, v.fsnap, key, 1); err != nil {
			f.prev.Close()
			f.prev = nil
			return s, false, err
		}
	}
	f.prev.Close()
	f.prev, f.prevSeq, f.sum = v.fsnap, v.seq, s
	v.fsnap, v.folded = nil, true
	return s, true, nil
}

// foldElem adds to s (sign > 0) or subtracts the element of key's value in
// snap, if any. A damaged old value is skipped (its element is unknown; a
// base's walk finds the difference).
func (x *Index) foldElem(s *StateSum, snap *pebble.Snapshot, key []byte, sign int) error {
	x.points.Add(1)
	val, closer, err := snap.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	defer closer.Close()
	e, ok, err := x.ElemOf(key, val)
	if errors.Is(err, ErrCorrupt) && sign < 0 {
		x.log.Warn("index: a replaced record does not open; the state sum waits for the next base", "key", fmt.Sprintf("%x", key), "err", err)
		return nil
	}
	if err != nil {
		return fmt.Errorf("state sum: record %x: %w", key, err)
	}
	if ok {
		s.Add(e, sign)
	}
	return nil
}

// SeedFold makes s, the view's state sum found by a walk (a base's), the
// one the next fold starts from, unless the view is older than the last
// folded one or keys of its cut were dropped. A view folded already
// (FoldKept) takes s in place of its folded sum.
func (x *Index) SeedFold(v *ChangeView, s StateSum) {
	f := &x.fold
	f.run.Lock()
	defer f.run.Unlock()
	if v.fsnap == nil {
		if v.folded && f.prev != nil && f.prevSeq == v.seq {
			f.sum = s
		}
		return
	}
	f.mu.Lock()
	seed := v.seq >= f.floor && (f.prev == nil || f.prevSeq < f.floor || v.seq > f.prevSeq)
	if seed {
		f.take(v.seq)
	}
	f.mu.Unlock()
	if !seed {
		return // closed with the view
	}
	if f.prev != nil {
		f.prev.Close()
	}
	f.prev, f.prevSeq, f.sum = v.fsnap, v.seq, s
	v.fsnap, v.folded = nil, true
}

// SkewFold adds d to the kept sum, as a change the fold missed would
// (tests).
func (x *Index) SkewFold(d StateSum) {
	f := &x.fold
	f.run.Lock()
	defer f.run.Unlock()
	f.sum.Add(StateElem(d), 1)
}

// FoldHeld returns the number of keys the fold holds (tests).
func (x *Index) FoldHeld() int {
	x.fold.mu.Lock()
	defer x.fold.mu.Unlock()
	return x.fold.n
}
