package meta

import (
	"fmt"

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
	Bad  func(key []byte, err error)
}

// Walk visits every record of the index in key order.
func (x *Index) Walk(v Visitor) error {
	it, err := x.db.NewIter(&pebble.IterOptions{})
	if err != nil {
		return err
	}
	defer it.Close()
	bad := func(key []byte, err error) {
		if v.Bad != nil {
			v.Bad(append([]byte(nil), key...), err)
		}
	}
	var buf []byte
	for ok := it.First(); ok; ok = it.Next() {
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
		case len(key) > 1 && key[0] == pRepl:
		case len(key) == 1+ChunkIDSize && key[0] == pBlob:
			n, err := decodeBlob(buf)
			if err != nil {
				bad(key, err)
			} else if v.Blob != nil {
				v.Blob(ChunkID(key[1:]), n)
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
