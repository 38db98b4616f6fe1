package meta

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// The version cache: what a version of the mount (backup.Versioner) needs
// to build the next one from what changed, kept in the index so that the
// first version after a remount reads the changes since the last version
// instead of the whole tree (docs/FORMAT.md §6, "Versions of the mount").
//
//	U h                         -> header: version (1) = 1, base epoch (8)
//	U d ino (8)                 -> a directory's state in the last version (backup's encoding)
//	U p ino (8)                 -> the directories holding an entry (backup's encoding)
//	U m epoch (8) kind (1) id (8) -> empty: a change mark
//
// Change marks: while the header exists (or a Versioner cut an epoch in
// this process), every batch that writes or deletes an inode, chunk-map or
// xattr record (kind 'i', the inode) or a directory entry (kind 'd', the
// directory) writes a mark of the current epoch in the same Pebble batch,
// so a crash cannot separate a change from its mark. CutTree ends the
// current epoch: it waits for the commits of that epoch to be visible, so a
// View opened after it holds every change its marks name. The header's base
// epoch B says that the `d` and `p` records describe every change of the
// epochs before B; the batch that writes it (the last of a version) deletes
// the marks before B. A missing header means the records describe nothing:
// the next version reads the whole tree and writes them again. Deleting a
// tree or a pin record (a forget's sweep) deletes the header in the same
// batch: what the records name may be gone. The records are the client's
// own cache: not in index snapshots, not snapshot state.
const pTreeCache = 'U'

const (
	tcHeader = 'h'
	tcMark   = 'm'
	// TreeCacheDir and TreeCacheParents are the kinds of records a
	// Versioner keeps per inode.
	TreeCacheDir     = 'd'
	TreeCacheParents = 'p'
)

const tcHeaderV1 = 1

func tcHeaderKey() []byte { return []byte{pTreeCache, tcHeader} }

func tcKey(kind byte, ino uint64) []byte {
	k := make([]byte, 10)
	k[0], k[1] = pTreeCache, kind
	binary.BigEndian.PutUint64(k[2:], ino)
	return k
}

func tcMarkKey(epoch uint64, kind byte, id uint64) []byte {
	k := make([]byte, 19)
	k[0], k[1] = pTreeCache, tcMark
	binary.BigEndian.PutUint64(k[2:], epoch)
	k[10] = kind
	binary.BigEndian.PutUint64(k[11:], id)
	return k
}

// openTreeCache reads, at Open, whether the index keeps change marks and
// the epoch to write them in (after every mark and the header's base).
func (x *Index) openTreeCache() error {
	f := &x.treeFeed
	f.epoch = 1
	base, ok, err := x.TreeCacheBase()
	if err != nil && !errors.Is(err, ErrCorrupt) {
		return err
	}
	if ok {
		f.epoch = max(f.epoch, base)
		f.marks.Store(true)
	}
	it, err := x.db.NewIter(&pebble.IterOptions{LowerBound: []byte{pTreeCache, tcMark}, UpperBound: []byte{pTreeCache, tcMark + 1}})
	if err != nil {
		return err
	}
	defer it.Close()
	if it.Last() && len(it.Key()) == 19 {
		f.epoch = max(f.epoch, binary.BigEndian.Uint64(it.Key()[2:])+1)
	}
	return it.Error()
}

// TreeCacheBase returns the header's base epoch; ok is false without a
// header (or with one that does not decode: err says why).
func (x *Index) TreeCacheBase() (base uint64, ok bool, err error) {
	v, err := x.get(tcHeaderKey())
	if errors.Is(err, ErrNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	if len(v) != 9 || v[0] != tcHeaderV1 {
		return 0, false, fmt.Errorf("version cache header of %d bytes, version %v: %w", len(v), firstByte(v), ErrCorrupt)
	}
	return beUint64(v[1:]), true, nil
}

// CutTree ends the current epoch of change marks and returns it: every
// batch marked in it is committed and visible when CutTree returns, every
// later one is marked in a later epoch. It turns the marks on (in this
// process) if they were off: a version that will write the header calls it
// before it opens its view, so nothing committed after the view goes
// unmarked.
func (x *Index) CutTree() uint64 {
	f := &x.treeFeed
	f.cut.Lock()
	defer f.cut.Unlock()
	e := f.epoch
	f.epoch++
	f.marks.Store(true)
	return e
}

// TreeMarks returns what the marks of the epochs up to through name: the
// inodes and the directories changed. complete is false if there are more
// than max (the caller then reads the whole tree). It reads the marks only.
func (x *Index) TreeMarks(through uint64, max int) (ch TreeChanges, complete bool, err error) {
	ch = TreeChanges{Inodes: map[uint64]struct{}{}, Dirs: map[uint64]struct{}{}}
	n := 0
	err = x.scanRange([]byte{pTreeCache, tcMark}, tcMarkKey(through+1, 0, 0), func(key, _ []byte) error {
		if len(key) != 19 {
			return fmt.Errorf("change mark %x: %w", key, ErrCorrupt)
		}
		if n++; n > max {
			return errStop
		}
		id := beUint64(key[11:])
		switch key[10] {
		case 'i':
			ch.Inodes[id] = struct{}{}
		case 'd':
			ch.Dirs[id] = struct{}{}
		default:
			return fmt.Errorf("change mark %x: %w", key, ErrCorrupt)
		}
		return nil
	})
	if errors.Is(err, errStop) {
		return TreeChanges{}, false, nil
	}
	if err != nil {
		return TreeChanges{}, false, err
	}
	return ch, true, nil
}

// GetTreeCache returns the version cache record of kind for ino
// (ErrNotFound if there is none).
func (x *Index) GetTreeCache(kind byte, ino uint64) ([]byte, error) {
	return x.get(tcKey(kind, ino))
}

// PutTreeCache writes the version cache record of kind for ino.
func (b *Batch) PutTreeCache(kind byte, ino uint64, val []byte) { b.set(tcKey(kind, ino), val) }

// DeleteTreeCache deletes the version cache record of kind for ino.
func (b *Batch) DeleteTreeCache(kind byte, ino uint64) { b.del(tcKey(kind, ino)) }

// SetTreeCacheBase writes the header with base epoch base, and deletes the
// marks of the epochs before it: the batch's records describe them.
func (b *Batch) SetTreeCacheBase(base uint64) {
	b.set(tcHeaderKey(), binary.BigEndian.AppendUint64([]byte{tcHeaderV1}, base))
	if err := b.b.DeleteRange([]byte{pTreeCache, tcMark}, tcMarkKey(base, 0, 0), nil); err != nil {
		panic(err)
	}
}

// ResetTreeCache deletes the header and every `d` and `p` record: a
// version that reads the whole tree starts its records afresh.
func (b *Batch) ResetTreeCache() {
	b.del(tcHeaderKey())
	for _, k := range []byte{TreeCacheDir, TreeCacheParents} {
		if err := b.b.DeleteRange([]byte{pTreeCache, k}, []byte{pTreeCache, k + 1}, nil); err != nil {
			panic(err)
		}
	}
}

// addMarks writes the batch's change marks in epoch (Commit, holding the
// cut's read lock).
func (b *Batch) addMarks(epoch uint64) {
	for ino := range b.tree.inodes {
		k := tcMarkKey(epoch, 'i', ino)
		if err := b.b.Set(k, b.x.keys.Meta.Seal(nil, nil, k), nil); err != nil {
			panic(err)
		}
	}
	for d := range b.tree.dirs {
		k := tcMarkKey(epoch, 'd', d)
		if err := b.b.Set(k, b.x.keys.Meta.Seal(nil, nil, k), nil); err != nil {
			panic(err)
		}
	}
}
