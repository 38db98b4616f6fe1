package storagenode

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/fincrypt/fincrypt/challenge"
)

// Index entries of the scrubber (docs/FORMAT.md §4, "node index"): the
// cursor of the current pass under the single key "s", and one entry per
// damaged piece not yet reported to the mediator under 'd' || piece id.
const (
	scrubCursorKey     = "s"
	damagePrefix       = 'd'
	scrubCursorVersion = 1
	scrubCursorSize    = 1 + 1 + 8 + challenge.HashSize
	damageVersion      = 1
	damageValueSize    = 1 + 8 + 8

	cursorHasLast = 1 << 0 // Last is set: the pass checked pieces up to it
	cursorDone    = 1 << 1 // the pass that started at Start has ended
)

// scrubCursor is where the scrubber stands: the pass that started at Start
// has checked every piece up to and including Last (none if !HasLast), or
// has ended (Done). A zero cursor means no pass ever started.
type scrubCursor struct {
	Start   time.Time
	Last    challenge.PieceID
	HasLast bool
	Done    bool
}

func encodeScrubCursor(c scrubCursor) []byte {
	b := make([]byte, 0, scrubCursorSize)
	var flags byte
	if c.HasLast {
		flags |= cursorHasLast
	}
	if c.Done {
		flags |= cursorDone
	}
	b = append(b, scrubCursorVersion, flags)
	b = binary.BigEndian.AppendUint64(b, uint64(c.Start.UnixNano()))
	return append(b, c.Last[:]...)
}

func decodeScrubCursor(v []byte) (scrubCursor, error) {
	var c scrubCursor
	if len(v) != scrubCursorSize || v[0] != scrubCursorVersion {
		return c, fmt.Errorf("%w: scrub cursor: %d bytes, version %d (want %d bytes, version %d)",
			ErrCorrupt, len(v), firstByte(v), scrubCursorSize, scrubCursorVersion)
	}
	if v[1]&^(cursorHasLast|cursorDone) != 0 {
		return c, fmt.Errorf("%w: scrub cursor: flags %#x", ErrCorrupt, v[1])
	}
	c.HasLast = v[1]&cursorHasLast != 0
	c.Done = v[1]&cursorDone != 0
	c.Start = time.Unix(0, int64(binary.BigEndian.Uint64(v[2:])))
	copy(c.Last[:], v[10:])
	return c, nil
}

// loadScrubCursor returns the stored cursor, or a zero one if there is
// none. An unreadable cursor is logged and replaced by a zero one: the
// worst outcome is one pass too many.
func (s *DiskStore) loadScrubCursor() (scrubCursor, error) {
	v, closer, err := s.db.Get([]byte(scrubCursorKey))
	if errors.Is(err, pebble.ErrNotFound) {
		return scrubCursor{}, nil
	}
	if err != nil {
		return scrubCursor{}, fmt.Errorf("scrub cursor: %w", err)
	}
	defer closer.Close()
	c, err := decodeScrubCursor(v)
	if err != nil {
		s.log.Warn("starting a new scrub pass: the stored cursor is unreadable", "err", err)
		return scrubCursor{}, nil
	}
	return c, nil
}

// saveScrubCursor stores the cursor; sync makes it durable at once (a
// cursor lost in a crash only makes the scrubber check a few pieces again).
func (s *DiskStore) saveScrubCursor(c scrubCursor, sync bool) error {
	opts := pebble.NoSync
	if sync {
		opts = s.writeOpts()
	}
	if err := s.db.Set([]byte(scrubCursorKey), encodeScrubCursor(c), opts); err != nil {
		return fmt.Errorf("scrub cursor: %w", err)
	}
	return nil
}

func damageKey(id challenge.PieceID) []byte { return append([]byte{damagePrefix}, id[:]...) }

// Damage is a damaged piece that the node has dropped and not yet reported.
type Damage struct {
	ID    challenge.PieceID
	Size  int64
	Found time.Time
}

// dropDamaged moves a damaged piece's file to quarantine/, and in one index
// commit drops its entry and records it as damage to report. It does
// nothing and returns false if the piece is no longer the one that was
// checked (deleted, or deleted and stored again, meanwhile).
func (s *DiskStore) dropDamaged(checked PieceInfo, why error) (bool, error) {
	unlock := s.lock(checked.ID)
	defer unlock()
	p, err := s.Stat(checked.ID)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if !p.StoredAt.Equal(checked.StoredAt) {
		return false, nil
	}
	// On the store's file system (DiskStoreOptions.FS), not the operating
	// system's: a file that is there is moved, a missing one only logged.
	if err := s.quarantine(s.piecePath(p.ID), why); errors.Is(err, os.ErrNotExist) {
		s.log.Warn("indexed piece has no file", "piece", p.ID, "err", why)
	} else if err != nil {
		return false, fmt.Errorf("piece %s: %w", p.ID, err)
	}
	v := make([]byte, 0, damageValueSize)
	v = append(v, damageVersion)
	v = binary.BigEndian.AppendUint64(v, uint64(time.Now().UnixNano()))
	v = binary.BigEndian.AppendUint64(v, uint64(p.Size))
	b := s.db.NewBatch()
	defer b.Close()
	b.Delete(indexKey(p.ID), nil)
	b.Set(damageKey(p.ID), v, nil)
	if err := b.Commit(s.writeOpts()); err != nil {
		return false, fmt.Errorf("piece %s: index: %w", p.ID, err)
	}
	s.mu.Lock()
	s.used -= p.Size
	s.pieces--
	s.mu.Unlock()
	return true, nil
}

// indexPut commits a new piece's index entry. A damage entry for the same
// id not yet reported is dropped in the same commit: the piece is whole
// again, and a late report would make the mediator count the new copy lost.
func (s *DiskStore) indexPut(info PieceInfo) error {
	_, closer, err := s.db.Get(damageKey(info.ID))
	if errors.Is(err, pebble.ErrNotFound) {
		return s.db.Set(indexKey(info.ID), encodeIndex(info), s.writeOpts())
	}
	if err != nil {
		return err
	}
	closer.Close()
	b := s.db.NewBatch()
	defer b.Close()
	b.Set(indexKey(info.ID), encodeIndex(info), nil)
	b.Delete(damageKey(info.ID), nil)
	return b.Commit(s.writeOpts())
}

// Damaged lists up to limit damaged pieces not yet reported, in id order.
// An unreadable entry is returned with its id only, so that it is still
// reported and then cleared.
func (s *DiskStore) Damaged(limit int) ([]Damage, error) {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{damagePrefix}, UpperBound: []byte{damagePrefix + 1}})
	if err != nil {
		return nil, err
	}
	var out []Damage
	for it.First(); it.Valid() && len(out) < limit; it.Next() {
		k, v := it.Key(), it.Value()
		if len(k) != 1+challenge.HashSize {
			s.log.Warn("ignoring an unreadable damage entry", "key", fmt.Sprintf("%x", k))
			continue
		}
		d := Damage{ID: challenge.PieceID(k[1:])}
		if len(v) == damageValueSize && v[0] == damageVersion {
			d.Found = time.Unix(0, int64(binary.BigEndian.Uint64(v[1:])))
			d.Size = int64(binary.BigEndian.Uint64(v[9:]))
		}
		out = append(out, d)
	}
	return out, it.Close()
}

// clearDamaged forgets damage entries once the mediator has them.
func (s *DiskStore) clearDamaged(ids []challenge.PieceID) error {
	b := s.db.NewBatch()
	defer b.Close()
	for _, id := range ids {
		b.Delete(damageKey(id), nil)
	}
	return b.Commit(s.writeOpts())
}
