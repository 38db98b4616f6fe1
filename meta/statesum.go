package meta

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
)

// The state sum: an order-free digest of what an index snapshot captures,
// kept by every commit so that a snapshot's state hash costs nothing that
// grows with the index.
//
// Each exported record but the format record and segment records is one
// element, SHA-256(stateDomain || len(key) || key || sealed value); each
// data segment's record is one element, SHA-256(segDomain || id || dead)
// (other segment kinds and the health fields are not snapshot state). The
// sum is the sum of the elements modulo 2^256.
//
// An index of format 4 (formatStateSum) keeps it in the record R
// stateSumName, written in the same Pebble batch as every change of an
// exported key: a commit subtracts the elements of the values it replaces
// (read under stMu, so that two commits never both subtract one value) and
// adds its new ones. StartStateSum computes it once by a walk and writes
// format 4, which an older fincrypt (which would not keep it) refuses to
// open. It is a check against client bugs (a change the change feed
// missed), not against someone who can write index records: they hold the
// index key.

const formatStateSum = 4

// stateSumName is the R record that holds the sum (not exported).
const stateSumName = "meta/state_sum"

const (
	stateDomain = "fincrypt state elem v2\x00"
	segDomain   = "fincrypt state seg v2\x00"
)

// StateSum is a sum of state elements modulo 2^256 (big-endian).
type StateSum [sha256.Size]byte

// StateElem is one element of a StateSum.
type StateElem [sha256.Size]byte

// Add adds e (sign > 0) or subtracts it.
func (s *StateSum) Add(e StateElem, sign int) {
	var carry uint64
	for i := len(s) - 8; i >= 0; i -= 8 {
		a := binary.BigEndian.Uint64(s[i:])
		b := binary.BigEndian.Uint64(e[i:])
		if sign > 0 {
			a, carry = bits.Add64(a, b, carry)
		} else {
			a, carry = bits.Sub64(a, b, carry)
		}
		binary.BigEndian.PutUint64(s[i:], a)
	}
}

// recordElem is the element of an exported record other than a segment's.
func recordElem(key, sealed []byte) StateElem {
	h := sha256.New()
	h.Write([]byte(stateDomain))
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(key)))
	h.Write(n[:])
	h.Write(key)
	h.Write(sealed)
	var e StateElem
	h.Sum(e[:0])
	return e
}

// segElem is the element of a segment record (ok false: not state).
func segElem(s *Segment) (StateElem, bool) {
	if s.Kind != KindData {
		return StateElem{}, false
	}
	var b [len(segDomain) + SegmentIDSize + 1]byte
	copy(b[:], segDomain)
	copy(b[len(segDomain):], s.ID[:])
	if s.DeadSince != 0 {
		b[len(b)-1] = 1
	}
	return sha256.Sum256(b[:]), true
}

// ElemOf returns the state element of an exported record (key and sealed
// value, as Export passes it); ok is false for a record that adds none
// (the format record, a segment record other than a data segment's, a key
// Export does not pass).
func (x *Index) ElemOf(key, sealed []byte) (e StateElem, ok bool, err error) {
	if len(key) == 0 || key[0] == pFormat || !snapshotted(key) {
		return e, false, nil
	}
	if s, isSeg, err := x.OpenSegmentRecord(key, sealed); err != nil {
		return e, false, err
	} else if isSeg {
		e, ok = segElem(&s)
		return e, ok, nil
	}
	return recordElem(key, sealed), true, nil
}

// SumRecords returns the StateSum of records (in any order).
func (x *Index) SumRecords(records func(fn func(key, sealed []byte) error) error) (StateSum, error) {
	var s StateSum
	err := records(func(key, sealed []byte) error {
		e, ok, err := x.ElemOf(key, sealed)
		if ok {
			s.Add(e, 1)
		}
		return err
	})
	return s, err
}

// stateSum is the index's state of the sum.
type stateSum struct {
	mu     sync.RWMutex // held by the commits of exported keys: shared while on is false
	on     atomic.Bool  // format 4: every commit keeps sum (set under mu)
	sum    StateSum     // of the live index (under mu)
	resets atomic.Int64 // ResetStateSum calls that changed the sum
}

// StateSumOn reports whether the index keeps the state sum (format 4).
func (x *Index) StateSumOn() bool {
	return x.st.on.Load()
}

// ErrNoStateSum means the index (or view) keeps no state sum.
var ErrNoStateSum = errors.New("the index keeps no state sum")

// StateSum returns the sum of the index, or of the view, as committed:
// read from its record, so a view's agrees with its Export.
func (x *Index) StateSum() (StateSum, error) {
	var s StateSum
	b, err := x.GetRepl(stateSumName)
	if errors.Is(err, ErrNotFound) {
		return s, ErrNoStateSum
	}
	if err != nil {
		return s, err
	}
	if len(b) != len(s) {
		return s, fmt.Errorf("state sum record of %d bytes: %w", len(b), ErrCorrupt)
	}
	copy(s[:], b)
	return s, nil
}

// StartStateSum makes the index keep the state sum from now on (it must
// keep the change feed already: StartChanges): it computes the sum by a
// walk, and writes it with format 4 in one batch. Commits of exported keys
// wait meanwhile. It returns whether the sum was off until now.
func (x *Index) StartStateSum() (started bool, err error) {
	if !x.ChangesOn() { // checked first: a commit takes chg.mu, then st.mu
		return false, errors.New("state sum: the index keeps no change feed")
	}
	st := &x.st
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.on.Load() {
		return false, nil
	}
	// No commit of an exported key runs meanwhile (they hold st.mu).
	sum, err := x.SumRecords(x.Export)
	if err != nil {
		return false, fmt.Errorf("starting the state sum: %w", err)
	}
	b := x.db.NewBatch()
	defer b.Close()
	fk := []byte{pFormat}
	if err := b.Set(fk, x.keys.Meta.Seal(nil, binary.BigEndian.AppendUint32(nil, formatStateSum), fk), nil); err != nil {
		return false, err
	}
	x.putSum(b, &sum)
	if err := b.Commit(pebble.Sync); err != nil {
		return false, fmt.Errorf("starting the state sum: %w", err)
	}
	x.format = formatStateSum
	st.sum = sum
	st.on.Store(true)
	return true, nil
}

// putSum writes the sum's record into b.
func (x *Index) putSum(b *pebble.Batch, s *StateSum) {
	k := append([]byte{pRepl}, stateSumName...)
	if err := b.Set(k, x.keys.Meta.Seal(nil, s[:], k), nil); err != nil {
		panic(err) // as Batch.set
	}
}

// loadStateSum reads the sum of a format 4 index (Open). The sum is derived
// state: a record that is missing or does not open leaves it off for this
// open (with a warning), and the next snapshot's StartStateSum computes it
// again by a walk; the index itself opens as before.
func (x *Index) loadStateSum() error {
	s, err := x.StateSum()
	if errors.Is(err, ErrCorrupt) || errors.Is(err, ErrNoStateSum) {
		x.log.Warn("index: the state sum record is unreadable; the next snapshot computes it again", "err", err)
		return nil
	}
	if err != nil {
		return fmt.Errorf("index of format %d: %w", formatStateSum, err)
	}
	x.st.sum = s
	x.st.on.Store(true)
	return nil
}

// ResetStateSum adds to the sum the difference between walked, a sum
// computed from the records of an export, and expected, the sum that
// export's view kept: after it, the live sum is what a walk of the live
// index would give if the view's one was wrong. It returns whether they
// differed.
func (x *Index) ResetStateSum(expected, walked StateSum) (bool, error) {
	if expected == walked {
		return false, nil
	}
	st := &x.st
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.on.Load() {
		return true, ErrNoStateSum
	}
	s := st.sum
	s.Add(StateElem(walked), 1)
	s.Add(StateElem(expected), -1)
	b := x.db.NewBatch()
	defer b.Close()
	x.putSum(b, &s)
	if err := b.Commit(pebble.Sync); err != nil {
		return true, err
	}
	st.sum = s
	st.resets.Add(1)
	return true, nil
}

// StateSumResets counts the resets (ResetStateSum) that changed the sum
// since the index was opened.
func (x *Index) StateSumResets() int64 { return x.st.resets.Load() }

// stateChange is a batch's last record of an exported key that may add an
// element: its sealed value, or nil if the batch deletes the key.
type stateChange struct {
	key, sealed []byte
}

// stateChanges returns the batch's last record of each exported key (but
// the format record), in key order: read from the batch itself, so that
// what the sum adds is what the commit writes. The slices point into the
// batch's memory.
func (b *Batch) stateChanges() ([]stateChange, error) {
	r := b.b.Reader()
	var cs []stateChange
	for {
		kind, key, val, ok, err := r.Next()
		if err != nil {
			return nil, fmt.Errorf("state sum: reading the batch: %w", err)
		}
		if !ok {
			break
		}
		exported := len(key) > 0 && snapshotted(key) && key[0] != pFormat
		switch {
		case kind == pebble.InternalKeyKindRangeDelete:
			// Only the tree cache's (treecache.go): one prefix, not exported.
			if len(key) == 0 || len(val) == 0 || key[0] != val[0] || snapshotted(key) {
				return nil, fmt.Errorf("state sum: batch deletes the range %x-%x", key, val)
			}
		case !exported:
		case kind == pebble.InternalKeyKindSet:
			cs = append(cs, stateChange{key, val})
		case kind == pebble.InternalKeyKindDelete:
			cs = append(cs, stateChange{key, nil})
		default:
			return nil, fmt.Errorf("state sum: batch record of kind %v for key %x", kind, key)
		}
	}
	// Stable: of the records of one key, the batch's last stays last.
	slices.SortStableFunc(cs, func(a, b stateChange) int { return bytes.Compare(a.key, b.key) })
	n := 0
	for i := range cs {
		if i+1 < len(cs) && bytes.Equal(cs[i].key, cs[i+1].key) {
			continue
		}
		cs[n] = cs[i]
		n++
	}
	return cs[:n], nil
}

// stateDelta adds to s what the batch's changes of exported keys change:
// their new elements, less those of the values in the index now. Called
// with st.mu held.
func (b *Batch) stateDelta(s *StateSum) error {
	cs, err := b.stateChanges()
	if err != nil {
		return err
	}
	for _, c := range cs {
		v, closer, err := b.x.db.Get(c.key)
		switch {
		case errors.Is(err, pebble.ErrNotFound):
		case err != nil:
			return err
		default:
			e, ok, err := b.x.ElemOf(c.key, v)
			closer.Close()
			if errors.Is(err, ErrCorrupt) {
				// A damaged record (a segment's, which is opened) must
				// stay replaceable: its element is unknown, so the sum is
				// now off by it, until the next base walks the records
				// and resets it (counted).
				b.x.log.Warn("index: a replaced record does not open; the state sum waits for the next base", "key", fmt.Sprintf("%x", c.key), "err", err)
				ok, err = false, nil
			}
			if err != nil {
				return err
			}
			if ok {
				s.Add(e, -1)
			}
		}
		if c.sealed != nil {
			e, ok, err := b.x.ElemOf(c.key, c.sealed)
			if err != nil {
				return fmt.Errorf("record %x: %w", c.key, err)
			}
			if ok {
				s.Add(e, 1)
			}
		}
	}
	return nil
}

// apply commits the batch, keeping the state sum (and the RefSum) under
// their locks; it returns whether the caller must still sync the log for a
// sync commit (a commit under a lock does not sync: the sync runs outside
// it, so that concurrent commits still share one).
func (b *Batch) apply(sync bool) (needSync bool, err error) {
	opt := pebble.NoSync
	if sync {
		opt = pebble.Sync
	}
	plain := func() (bool, error) {
		if len(b.refs) > 0 {
			return sync, b.commitRefs()
		}
		return false, b.b.Commit(opt)
	}
	st := &b.x.st
	if len(b.changed) == 0 {
		return plain()
	}
	if !st.on.Load() {
		// Shared: StartStateSum waits for these commits, and they for it.
		st.mu.RLock()
		if !st.on.Load() {
			defer st.mu.RUnlock()
			return plain()
		}
		st.mu.RUnlock()
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	sum := st.sum
	if err := b.stateDelta(&sum); err != nil {
		return false, fmt.Errorf("index batch not applied: %w", err)
	}
	b.x.putSum(b.b, &sum)
	if len(b.refs) > 0 {
		err = b.commitRefs()
	} else {
		err = b.b.Commit(pebble.NoSync)
	}
	if err == nil {
		st.sum = sum
	}
	return sync, err
}

// StateSumWith returns the sum of the index (or view) with extra's records
// (key and sealed value) set in it: the sum record, less the elements of
// the values extra replaces, plus extra's. It reads one record per extra
// key, nothing that grows with the index.
func (x *Index) StateSumWith(extra func(fn func(key, sealed []byte) error) error) (StateSum, error) {
	s, err := x.StateSum()
	if err != nil {
		return s, err
	}
	seen := map[string]bool{}
	err = extra(func(key, sealed []byte) error {
		if seen[string(key)] {
			return fmt.Errorf("state sum: key %x twice", key)
		}
		seen[string(key)] = true
		old, err := x.raw(key)
		switch {
		case errors.Is(err, ErrNotFound):
		case err != nil:
			return err
		default:
			e, ok, err := x.ElemOf(key, old)
			if err != nil {
				return err
			}
			if ok {
				s.Add(e, -1)
			}
		}
		e, ok, err := x.ElemOf(key, sealed)
		if ok {
			s.Add(e, 1)
		}
		return err
	})
	return s, err
}
