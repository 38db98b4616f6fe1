package meta

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
)

// The state sum: an order-free digest of what an index snapshot captures,
// so that a snapshot's state hash can be kept up to date from the records
// that changed instead of a walk of the index (fold.go).
//
// Each exported record but the format record and segment records is one
// element, SHA-256(stateDomain || len(key) || key || sealed value); each
// data segment's record is one element, SHA-256(segDomain || id || dead)
// (other segment kinds and the health fields are not snapshot state). The
// sum is the sum of the elements modulo 2^256. It is a check against client
// bugs (a change the change feed missed), not against someone who can write
// index records: they hold the index key.

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

// StateSumWith returns s, the sum of the index (or view), with extra's
// records (key and sealed value) set in it: less the elements of the values
// extra replaces, plus extra's. It reads one record per extra key, nothing
// that grows with the index.
func (x *Index) StateSumWith(s StateSum, extra func(fn func(key, sealed []byte) error) error) (StateSum, error) {
	seen := map[string]bool{}
	err := extra(func(key, sealed []byte) error {
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
