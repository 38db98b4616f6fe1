package meta

import (
	"errors"
	"fmt"
	"sync"

	"github.com/cockroachdb/pebble/v2"
)

// Visitor receives every record of the index from Walk. Nil fields are
// skipped. Bad is called for a record that does not decrypt or decode (or an
// unknown key), and the walk goes on.
type Visitor struct {
	Inode  func(Inode)
	Dirent func(Dirent)
	Chunk  func(ino, idx uint64, ref ChunkRef)
	Xattr  func(ino uint64, name string, value []byte)
	Orphan func(ino uint64)
	// Blob is every backup blob: a chunk that a backup keeps (package
	// backup). Whoever collects, checks, uploads or releases chunks must
	// count blobs as referenced as well as chunk map entries.
	Blob func(id ChunkID, plainLen uint32)
	// Pin is every chunk a version of the mount keeps (pins.go): counted
	// as referenced wherever blobs are, and opened as chunk p.Index of
	// file p.Ino.
	Pin func(id ChunkID, p Pin)
	Bad func(key []byte, err error)
}

// Walk visits every record of the index in key order.
func (x *Index) Walk(v Visitor) error {
	return x.walkRange(nil, nil, v, nil)
}

// WalkParallel visits every record of the index, as Walk does, with the
// records of each kind (inodes, directory entries, chunk references, ...)
// read and opened by a goroutine of their own: callbacks of one kind are
// called in key order from one goroutine, callbacks of different kinds run
// concurrently, and Bad calls are serialised. For a full walk that must be
// fast (`fincrypt check`).
func (x *Index) WalkParallel(v Visitor) error {
	_, err := x.walkParallel(v, false)
	return err
}

// WalkParallelRefSum is WalkParallel that also returns the RefSum of what it
// visits, the RefSum WalkRefSum returns: a full walk that compares the index
// with a clean-close record reads each record once, not its chunk
// references a second time.
func (x *Index) WalkParallelRefSum(v Visitor) (RefSum, error) {
	return x.walkParallel(v, true)
}

func (x *Index) walkParallel(v Visitor, sum bool) (RefSum, error) {
	var badMu sync.Mutex
	bounds := []byte{0, pDirent, pInode, pLocation, pChunk, pOrphan, pXattr + 1}
	errs := make([]error, len(bounds)-1)
	sums := make([]RefSum, len(bounds)-1) // each range's own: its callbacks run on its goroutine
	var wg sync.WaitGroup
	for i := range len(bounds) - 1 {
		vi := v
		if sum {
			vi = v.summing(&sums[i])
		}
		var lower, upper []byte
		if i > 0 {
			lower = []byte{bounds[i]}
		}
		if i < len(bounds)-2 {
			upper = []byte{bounds[i+1]}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = x.walkRange(lower, upper, vi, &badMu)
		}()
	}
	wg.Wait()
	var total RefSum
	for _, s := range sums {
		total = total.plus(s)
	}
	return total, errors.Join(errs...)
}

// summing returns v with every chunk reference, blob, pin and record that
// does not open also added to s, as WalkRefSum adds them.
func (v Visitor) summing(s *RefSum) Visitor {
	chunk, blob, pin, bad := v.Chunk, v.Blob, v.Pin, v.Bad
	v.Chunk = func(ino, idx uint64, ref ChunkRef) {
		s.add(chunkElem(ino, idx, &ref), 1)
		if chunk != nil {
			chunk(ino, idx, ref)
		}
	}
	v.Blob = func(id ChunkID, n uint32) {
		s.add(blobElem(id, n), 1)
		if blob != nil {
			blob(id, n)
		}
	}
	v.Pin = func(id ChunkID, p Pin) {
		s.add(pinElem(id, &p), 1)
		if pin != nil {
			pin(id, p)
		}
	}
	v.Bad = func(key []byte, err error) {
		s.add(badElem(key), 1)
		if bad != nil {
			bad(key, err)
		}
	}
	return v
}

// walkRange is Walk over the keys in [lower, upper) (nil: unbounded); a
// non-nil badMu serialises Bad calls.
func (x *Index) walkRange(lower, upper []byte, v Visitor, badMu *sync.Mutex) error {
	it, err := x.reader().NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return err
	}
	defer it.Close()
	bad := func(key []byte, err error) {
		if v.Bad != nil {
			if badMu != nil {
				badMu.Lock()
				defer badMu.Unlock()
			}
			v.Bad(append([]byte(nil), key...), err)
		}
	}
	var buf []byte
	for ok := it.First(); ok; ok = it.Next() {
		x.read.Add(1)
		key := it.Key()
		val, err := it.ValueAndErr()
		if err != nil {
			return err
		}
		buf, err = x.keys.Meta.Open(buf[:0], val, key)
		if err != nil {
			bad(key, err)
			continue
		}
		switch {
		case len(key) == 1 && key[0] == pFormat:
		case len(key) > 1 && key[0] == pCounter:
		case len(key) == 9 && key[0] == pInode:
			n, err := decodeInode(beUint64(key[1:]), buf)
			if err != nil {
				bad(key, err)
			} else if v.Inode != nil {
				v.Inode(n)
			}
		case len(key) == 25 && key[0] == pDirent:
			parent := beUint64(key[1:])
			d, err := decodeDirent(parent, buf)
			if err == nil && x.keys.NameMAC(parent, d.Name) != [16]byte(key[9:25]) {
				err = fmt.Errorf("dirent %q in %d: name does not match its key: %w", d.Name, parent, ErrCorrupt)
			}
			if err != nil {
				bad(key, err)
			} else if v.Dirent != nil {
				v.Dirent(d)
			}
		case len(key) == 17 && key[0] == pChunk:
			ref, err := decodeChunkRef(buf)
			if err != nil {
				bad(key, err)
			} else if v.Chunk != nil {
				v.Chunk(beUint64(key[1:]), beUint64(key[9:]), ref)
			}
		case len(key) == 25 && key[0] == pXattr:
			ino := beUint64(key[1:])
			name, val, err := decodeXattr(buf)
			if err == nil && x.xattrMAC(ino, name) != [16]byte(key[9:25]) {
				err = fmt.Errorf("xattr of %d: name does not match its key: %w", ino, ErrCorrupt)
			}
			if err != nil {
				bad(key, err)
			} else if v.Xattr != nil {
				v.Xattr(ino, name, val)
			}
		case len(key) == 9 && key[0] == pOrphan:
			if v.Orphan != nil {
				v.Orphan(beUint64(key[1:]))
			}
		case len(key) == 1+ChunkIDSize && key[0] == pLocation:
			if _, err := decodeLocation(buf); err != nil {
				bad(key, err)
			}
		case len(key) == 1+SegmentIDSize && key[0] == pSegment:
			if _, err := decodeSegment(SegmentID(key[1:]), buf); err != nil {
				bad(key, err)
			}
		case len(key) == 1+ChunkIDSize && key[0] == pPending:
			if _, err := decodePending(ChunkID(key[1:]), buf); err != nil {
				bad(key, err)
			}
		case len(key) > 1 && key[0] == pRepl:
		case len(key) > 1 && key[0] == pChange: // the change feed (changes.go)
			if len(buf) != 8 {
				bad(key, fmt.Errorf("change record of %d bytes: %w", len(buf), ErrCorrupt))
			}
		case len(key) > 1 && key[0] == pTreeCache: // the version cache, the backup package's to judge
		case len(key) == 1+ChunkIDSize && key[0] == pBlob:
			n, err := decodeBlob(buf)
			if err != nil {
				bad(key, err)
			} else if v.Blob != nil {
				v.Blob(ChunkID(key[1:]), n)
			}
		case len(key) == 1+ChunkIDSize && key[0] == pPin:
			p, err := decodePin(buf)
			if err != nil {
				bad(key, err)
			} else if v.Pin != nil {
				v.Pin(ChunkID(key[1:]), p)
			}
		case len(key) == 1+TreeIDSize && key[0] == pTree:
		case len(key) == 9 && key[0] == pBackupSnap:
		case len(key) == 17 && key[0] == pBackupRoot:
		default:
			bad(key, fmt.Errorf("unknown key: %w", ErrCorrupt))
		}
	}
	return it.Error()
}

// WalkTree visits, as Walk does, only the records a version of the mount
// reads: directory entries, inodes, pins, chunk-map entries and extended
// attributes (each kind in key order), skipping the replication engine's.
func (x *Index) WalkTree(v Visitor) error {
	for _, p := range []byte{pDirent, pInode, pPin, pChunk, pXattr} {
		if err := x.walkRange([]byte{p}, []byte{p + 1}, v, nil); err != nil {
			return err
		}
	}
	return nil
}
