package meta

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"

	"github.com/fincrypt/fincrypt/vault"
)

// Pins: a version of the mount (package backup, docs/FORMAT.md §6) keeps
// the file chunks its trees name. A pin record `K chunk id (16)` says that a
// chunk is needed by a version even once no file references it: every place
// that collects, evicts-and-forgets, releases, uploads or checks chunks
// counts it as a reference, as it counts chunk-map entries and backup
// blobs. Its value says how to open and place the chunk: the file it was
// sealed for, its index there and version (the chunk's associated data),
// its plaintext length, and the byte offset of its first byte in the file.
const pPin = 'K' // K chunkid(16) -> pin record

const pinRecV1 = 1
const pinRecSize = 1 + 8 + 8 + 8 + 4 + 8

// PinRecordSize is the size of a pin record's value before sealing.
const PinRecordSize = pinRecSize

// Pin is a pinned chunk: chunk Index of inode Ino, sealed under Version,
// holding Len plaintext bytes that start at byte Offset of the file.
type Pin struct {
	Ino, Index, Version uint64
	Len                 uint32
	Offset              uint64
}

// Ref is the chunk reference the pin keeps.
func (p Pin) Ref(id ChunkID) ChunkRef { return ChunkRef{ID: id, Version: p.Version, Len: p.Len} }

func pinKey(id ChunkID) []byte { return append([]byte{pPin}, id[:]...) }

func (p *Pin) encode() []byte {
	b := make([]byte, 1, pinRecSize)
	b[0] = pinRecV1
	b = binary.BigEndian.AppendUint64(b, p.Ino)
	b = binary.BigEndian.AppendUint64(b, p.Index)
	b = binary.BigEndian.AppendUint64(b, p.Version)
	b = binary.BigEndian.AppendUint32(b, p.Len)
	return binary.BigEndian.AppendUint64(b, p.Offset)
}

func decodePin(b []byte) (Pin, error) {
	if len(b) != pinRecSize || b[0] != pinRecV1 {
		return Pin{}, fmt.Errorf("pin record of %d bytes, version %v: %w", len(b), firstByte(b), ErrCorrupt)
	}
	return Pin{
		Ino: beUint64(b[1:]), Index: beUint64(b[9:]), Version: beUint64(b[17:]),
		Len: binary.BigEndian.Uint32(b[25:]), Offset: beUint64(b[29:]),
	}, nil
}

// GetPin reads the pin of chunk id; ErrNotFound if it is not pinned.
func (x *Index) GetPin(id ChunkID) (Pin, error) {
	if !x.mayPin() {
		return Pin{}, ErrNotFound
	}
	b, err := x.get(pinKey(id))
	if err != nil {
		return Pin{}, err
	}
	p, err := decodePin(b)
	if err != nil {
		return p, fmt.Errorf("chunk %s: %w", id, err)
	}
	return p, nil
}

// Pinned reports whether chunk id is pinned by a version.
func (x *Index) Pinned(id ChunkID) (bool, error) {
	if !x.mayPin() {
		return false, nil
	}
	return x.has(pinKey(id))
}

// Pins calls fn with every pinned chunk.
func (x *Index) Pins(fn func(id ChunkID, p Pin) error) error {
	return x.scan([]byte{pPin}, func(key, val []byte) error {
		if len(key) != 1+ChunkIDSize {
			return fmt.Errorf("pin key %x: %w", key, ErrCorrupt)
		}
		p, err := decodePin(val)
		if err != nil {
			return err
		}
		return fn(ChunkID(key[1:]), p)
	})
}

// mayPin reports whether the index may hold pins: false only while it is
// known to hold none (checked once at first use, then set by PutPin), so
// that an index that never took a version pays no read per dropped chunk.
func (x *Index) mayPin() bool {
	switch x.pinState.Load() {
	case pinsNone:
		return false
	case pinsSome:
		return true
	}
	found := false
	err := x.scan([]byte{pPin}, func(_, _ []byte) error { found = true; return errStop })
	if err != nil && !errors.Is(err, errStop) {
		return true // unknown: look each time
	}
	if found {
		x.pinState.CompareAndSwap(pinsUnknown, pinsSome)
	} else {
		x.pinState.CompareAndSwap(pinsUnknown, pinsNone)
	}
	return x.pinState.Load() != pinsNone
}

const (
	pinsUnknown = iota
	pinsNone
	pinsSome
)

// PutPin pins chunk id for a version. A pin never changes: a chunk id is
// sealed once, for one place of one file.
func (b *Batch) PutPin(id ChunkID, p Pin) {
	if b.x.tracksLive() && b.pinOf(id) == nil {
		if cur, ok := b.chunkAt(p.Ino, p.Index); !ok || cur != id {
			b.revived(id) // a chunk nothing referenced any more
		}
	}
	b.x.pinState.Store(pinsSome)
	b.set(pinKey(id), p.encode())
	b.noteRef(pinKey(id), refChange{pin: &p, kind: pPin})
	if b.pins == nil {
		b.pins = map[ChunkID]*Pin{}
	}
	b.pins[id] = &p
}

// DeletePin drops the pin of chunk id. A chunk that its file no longer
// references and that is still waiting for its upload leaves the pending
// feed with it; one its file still references keeps its mark.
func (b *Batch) DeletePin(id ChunkID, p Pin) {
	b.del(pinKey(id))
	b.noteRef(pinKey(id), refChange{kind: pPin})
	if b.pins == nil {
		b.pins = map[ChunkID]*Pin{}
	}
	b.pins[id] = nil
	if cur, ok := b.chunkAt(p.Ino, p.Index); !ok || cur != id {
		b.unmarkPending(id)
		b.died(id)
	}
}

// pinOf returns the pin of chunk id as of this batch, or nil.
func (b *Batch) pinOf(id ChunkID) *Pin {
	if p, ok := b.pins[id]; ok {
		return p
	}
	if !b.x.mayPin() {
		return nil
	}
	v, err := b.x.get(pinKey(id))
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err == nil {
		var p Pin
		if p, err = decodePin(v); err == nil {
			return &p
		}
	}
	b.fail(fmt.Errorf("pin of chunk %s: %w", id, err))
	return nil
}

// dropRef is what a batch does with the pending mark of chunk old when its
// file stops referencing it: an unpinned chunk leaves the feed; a pinned one
// that no segment holds yet stays there, owner-less (a version needs it on
// the network).
func (b *Batch) dropRef(old ChunkID) {
	if p := b.pinOf(old); p != nil {
		if !b.isLocated(old) {
			b.markPending(old, 0, 0, p.Len+vault.Overhead)
		}
		return
	}
	b.unmarkPending(old)
	b.died(old)
}

// View returns a read-only view of the index as it is now: its reads (and
// scans, walks) see no later commit. Close it with the returned function;
// it must not be written to.
func (x *Index) View() (*Index, func()) {
	snap := x.db.NewSnapshot()
	v := &Index{db: x.db, rd: snap, keys: x.keys, counter: map[string]*counter{}, log: x.log, dir: x.dir, fs: x.fs, feedReady: x.feedReady,
		read: x.read, points: x.points, icache: x.icache}
	v.pinState.Store(x.pinState.Load())
	return v, func() { snap.Close() }
}

// reader is where the index's reads go: the database, or a view's snapshot.
func (x *Index) reader() pebble.Reader {
	if x.rd != nil {
		return x.rd
	}
	return x.db
}

// LockDrops keeps chunks that files dropped from being deleted from the
// store until the returned function is called. A version takes it before
// it reads the index and holds it until its pins are committed, so that a
// chunk it saw cannot vanish before the pin that keeps it; whoever deletes
// chunks a commit dropped takes it (TryLockDrops) and checks Pinned first.
func (x *Index) LockDrops() func() {
	x.dropMu.Lock()
	return x.dropMu.Unlock
}

// TryLockDrops is LockDrops without waiting: ok is false while a version
// holds it (the caller deletes later).
func (x *Index) TryLockDrops() (unlock func(), ok bool) {
	if !x.dropMu.TryLock() {
		return nil, false
	}
	return x.dropMu.Unlock, true
}
