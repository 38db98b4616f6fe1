package meta

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"

	"github.com/fincrypt/fincrypt/vault"
)

// Inode is an inode record.
type Inode struct {
	Ino   uint64
	Mode  uint32 // type and permission bits, as st_mode
	Uid   uint32
	Gid   uint32
	Nlink uint32
	Rdev  uint32
	Size  uint64
	Atime int64 // nanoseconds since the Unix epoch
	Mtime int64
	Ctime int64
	// Target is a symlink's target; empty for other types.
	Target []byte
}

const inodeRecV1 = 1
const inodeFixed = 1 + 4*5 + 8 + 8*3 // version, mode..rdev, size, times

func (n *Inode) encode() []byte {
	b := make([]byte, inodeFixed, inodeFixed+len(n.Target))
	b[0] = inodeRecV1
	binary.BigEndian.PutUint32(b[1:], n.Mode)
	binary.BigEndian.PutUint32(b[5:], n.Uid)
	binary.BigEndian.PutUint32(b[9:], n.Gid)
	binary.BigEndian.PutUint32(b[13:], n.Nlink)
	binary.BigEndian.PutUint32(b[17:], n.Rdev)
	binary.BigEndian.PutUint64(b[21:], n.Size)
	binary.BigEndian.PutUint64(b[29:], uint64(n.Atime))
	binary.BigEndian.PutUint64(b[37:], uint64(n.Mtime))
	binary.BigEndian.PutUint64(b[45:], uint64(n.Ctime))
	return append(b, n.Target...)
}

func decodeInode(ino uint64, b []byte) (Inode, error) {
	if len(b) < inodeFixed || b[0] != inodeRecV1 {
		return Inode{}, fmt.Errorf("inode %d: record of %d bytes, version %v: %w", ino, len(b), firstByte(b), ErrCorrupt)
	}
	n := Inode{
		Ino:   ino,
		Mode:  binary.BigEndian.Uint32(b[1:]),
		Uid:   binary.BigEndian.Uint32(b[5:]),
		Gid:   binary.BigEndian.Uint32(b[9:]),
		Nlink: binary.BigEndian.Uint32(b[13:]),
		Rdev:  binary.BigEndian.Uint32(b[17:]),
		Size:  binary.BigEndian.Uint64(b[21:]),
		Atime: int64(binary.BigEndian.Uint64(b[29:])),
		Mtime: int64(binary.BigEndian.Uint64(b[37:])),
		Ctime: int64(binary.BigEndian.Uint64(b[45:])),
	}
	if len(b) > inodeFixed {
		n.Target = append([]byte(nil), b[inodeFixed:]...)
	}
	return n, nil
}

func firstByte(b []byte) any {
	if len(b) == 0 {
		return "none"
	}
	return b[0]
}

// Dirent is a directory entry: Name in directory Parent names inode Ino,
// whose file type (S_IFMT bits) is Type.
type Dirent struct {
	Parent uint64
	Name   string
	Ino    uint64
	Type   uint32
}

func (d *Dirent) encode() []byte {
	b := make([]byte, 12, 12+len(d.Name))
	binary.BigEndian.PutUint64(b, d.Ino)
	binary.BigEndian.PutUint32(b[8:], d.Type)
	return append(b, d.Name...)
}

func decodeDirent(parent uint64, b []byte) (Dirent, error) {
	if len(b) < 13 {
		return Dirent{}, fmt.Errorf("dirent in %d: record of %d bytes: %w", parent, len(b), ErrCorrupt)
	}
	return Dirent{Parent: parent, Ino: binary.BigEndian.Uint64(b), Type: binary.BigEndian.Uint32(b[8:]), Name: string(b[12:])}, nil
}

// ChunkIDSize is the size of a chunk id.
const ChunkIDSize = 16

// ChunkID names a sealed chunk wherever it is stored; it is random, so it
// reveals nothing about the file or position it belongs to.
type ChunkID [ChunkIDSize]byte

// String is the hex form used in file names and messages.
func (c ChunkID) String() string { return fmt.Sprintf("%x", c[:]) }

// ChunkRef is a chunk map entry: chunk Index of a file is sealed chunk ID,
// sealed under version Version, holding Len plaintext bytes.
type ChunkRef struct {
	ID      ChunkID
	Version uint64
	Len     uint32
}

const chunkRefSize = ChunkIDSize + 8 + 4

func (c *ChunkRef) encode() []byte {
	b := make([]byte, chunkRefSize)
	copy(b, c.ID[:])
	binary.BigEndian.PutUint64(b[16:], c.Version)
	binary.BigEndian.PutUint32(b[24:], c.Len)
	return b
}

func decodeChunkRef(b []byte) (ChunkRef, error) {
	if len(b) != chunkRefSize {
		return ChunkRef{}, fmt.Errorf("chunk reference of %d bytes, want %d: %w", len(b), chunkRefSize, ErrCorrupt)
	}
	var c ChunkRef
	copy(c.ID[:], b)
	c.Version = binary.BigEndian.Uint64(b[16:])
	c.Len = binary.BigEndian.Uint32(b[24:])
	return c, nil
}

// xattrMAC keys an xattr name within an inode. The index prefix keeps it
// apart from directory entries.
func (x *Index) xattrMAC(ino uint64, name string) [16]byte {
	return x.keys.NameMAC(ino, "xattr\x00"+name)
}

// ---- reads ----

// GetInode reads inode ino; ErrNotFound if it does not exist.
func (x *Index) GetInode(ino uint64) (Inode, error) {
	if x.rd == nil && x.icache != nil {
		if in, ok := x.icache.get(ino); ok {
			return in, nil
		}
	}
	b, err := x.get(key8(pInode, ino))
	if err != nil {
		return Inode{}, fmt.Errorf("inode %d: %w", ino, err)
	}
	return decodeInode(ino, b)
}

// GetInodes reads the inodes inos, which must be in ascending order, with
// one iterator (a directory's entries, read for a listing: cheaper than a
// point read each, and read ahead from the disk when they lie together),
// and calls fn for each one found. An inode not in the index is skipped.
func (x *Index) GetInodes(inos []uint64, fn func(Inode)) error {
	if len(inos) == 0 {
		return nil
	}
	it, err := x.reader().NewIter(&pebble.IterOptions{LowerBound: key8(pInode, inos[0]), UpperBound: key8(pInode, inos[len(inos)-1]+1)})
	if err != nil {
		return err
	}
	defer it.Close()
	var buf []byte
	key := make([]byte, 9) // each inode's key in turn: Open keeps no reference
	key[0] = pInode
	for _, ino := range inos {
		binary.BigEndian.PutUint64(key[1:], ino)
		if !it.SeekGE(key) {
			break
		}
		if !bytes.Equal(it.Key(), key) {
			continue
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return err
		}
		if buf, err = x.keys.Meta.Open(buf[:0], v, key); err != nil {
			return fmt.Errorf("record %x: %w: %w", key, ErrCorrupt, err)
		}
		in, err := decodeInode(ino, buf)
		if err != nil {
			return fmt.Errorf("inode %d: %w", ino, err)
		}
		fn(in)
	}
	return it.Error()
}

// Lookup finds name in directory parent; ErrNotFound if absent.
func (x *Index) Lookup(parent uint64, name string) (Dirent, error) {
	b, err := x.get(keyMAC(pDirent, parent, x.keys.NameMAC(parent, name)))
	if err != nil {
		return Dirent{}, err
	}
	d, err := decodeDirent(parent, b)
	if err != nil {
		return d, err
	}
	if d.Name != name {
		return d, fmt.Errorf("dirent in %d: name does not match its key: %w", parent, ErrCorrupt)
	}
	return d, nil
}

// ListDir calls fn for every entry of directory parent, in key order.
func (x *Index) ListDir(parent uint64, fn func(Dirent) error) error {
	return x.scan(key8(pDirent, parent), func(_, val []byte) error {
		d, err := decodeDirent(parent, val)
		if err != nil {
			return err
		}
		return fn(d)
	})
}

// errStop ends a scan early.
var errStop = errors.New("stop")

// DirEmpty reports whether directory parent has no entries.
func (x *Index) DirEmpty(parent uint64) (bool, error) {
	empty := true
	err := x.scan(key8(pDirent, parent), func(_, _ []byte) error { empty = false; return errStop })
	if err != nil && !errors.Is(err, errStop) {
		return false, err
	}
	return empty, nil
}

// GetChunk reads the chunk map entry of chunk idx of inode ino; ok is false
// for a hole.
func (x *Index) GetChunk(ino, idx uint64) (ref ChunkRef, ok bool, err error) {
	b, err := x.get(key16(pChunk, ino, idx))
	if errors.Is(err, ErrNotFound) {
		return ChunkRef{}, false, nil
	}
	if err != nil {
		return ChunkRef{}, false, fmt.Errorf("inode %d chunk %d: %w", ino, idx, err)
	}
	ref, err = decodeChunkRef(b)
	if err != nil {
		return ref, false, fmt.Errorf("inode %d chunk %d: %w", ino, idx, err)
	}
	return ref, true, nil
}

// Chunks calls fn for every chunk of inode ino with index >= from, in order.
func (x *Index) Chunks(ino, from uint64, fn func(idx uint64, ref ChunkRef) error) error {
	lower := key16(pChunk, ino, from)
	return x.scanRange(lower, prefixEnd(key8(pChunk, ino)), func(key, val []byte) error {
		idx := beUint64(key[9:])
		ref, err := decodeChunkRef(val)
		if err != nil {
			return fmt.Errorf("inode %d chunk %d: %w", ino, idx, err)
		}
		return fn(idx, ref)
	})
}

// GetXattr reads extended attribute name of inode ino; ErrNotFound if absent.
func (x *Index) GetXattr(ino uint64, name string) ([]byte, error) {
	b, err := x.get(keyMAC(pXattr, ino, x.xattrMAC(ino, name)))
	if err != nil {
		return nil, err
	}
	n, v, err := decodeXattr(b)
	if err != nil {
		return nil, fmt.Errorf("inode %d xattr: %w", ino, err)
	}
	if n != name {
		return nil, fmt.Errorf("inode %d xattr: name does not match its key: %w", ino, ErrCorrupt)
	}
	return v, nil
}

// ListXattr calls fn with every extended attribute of inode ino.
func (x *Index) ListXattr(ino uint64, fn func(name string, value []byte) error) error {
	return x.scan(key8(pXattr, ino), func(_, val []byte) error {
		n, v, err := decodeXattr(val)
		if err != nil {
			return fmt.Errorf("inode %d xattr: %w", ino, err)
		}
		return fn(n, v)
	})
}

func encodeXattr(name string, value []byte) []byte {
	b := make([]byte, 2, 2+len(name)+len(value))
	binary.BigEndian.PutUint16(b, uint16(len(name)))
	b = append(b, name...)
	return append(b, value...)
}

func decodeXattr(b []byte) (string, []byte, error) {
	if len(b) < 2 || int(binary.BigEndian.Uint16(b))+2 > len(b) {
		return "", nil, fmt.Errorf("xattr record of %d bytes: %w", len(b), ErrCorrupt)
	}
	n := int(binary.BigEndian.Uint16(b))
	return string(b[2 : 2+n]), append([]byte(nil), b[2+n:]...), nil
}

// Orphans lists inodes unlinked while open, to be purged.
func (x *Index) Orphans() ([]uint64, error) {
	var out []uint64
	err := x.scan([]byte{pOrphan}, func(key, _ []byte) error {
		if len(key) != 9 {
			return fmt.Errorf("orphan key %x: %w", key, ErrCorrupt)
		}
		out = append(out, beUint64(key[1:]))
		return nil
	})
	return out, err
}

func beUint64(b []byte) uint64 { return binary.BigEndian.Uint64(b) }

// ---- writes ----

// PutInode writes an inode record.
func (b *Batch) PutInode(n *Inode) {
	b.set(key8(pInode, n.Ino), n.encode())
	b.noteInode(n, false)
}

// DeleteInode removes an inode record.
func (b *Batch) DeleteInode(ino uint64) {
	b.del(key8(pInode, ino))
	b.noteInode(&Inode{Ino: ino}, true)
}

// PutDirent writes a directory entry.
func (b *Batch) PutDirent(d *Dirent) {
	b.set(keyMAC(pDirent, d.Parent, b.x.keys.NameMAC(d.Parent, d.Name)), d.encode())
}

// DeleteDirent removes name from directory parent.
func (b *Batch) DeleteDirent(parent uint64, name string) {
	b.del(keyMAC(pDirent, parent, b.x.keys.NameMAC(parent, name)))
}

// PutChunk writes the chunk map entry of chunk idx of inode ino. In the
// same batch it keeps the pending feed: the chunk it replaces there leaves
// the feed, and ref's chunk joins it unless it already has a location.
func (b *Batch) PutChunk(ino, idx uint64, ref *ChunkRef) {
	if old, ok := b.chunkAt(ino, idx); ok && old != ref.ID {
		b.dropRef(old)
	}
	key := key16(pChunk, ino, idx)
	b.set(key, ref.encode())
	r := *ref
	b.noteRef(key, refChange{chunk: &r, kind: pChunk})
	id := ref.ID
	b.noteChunk(ino, idx, &id)
	if !b.isLocated(ref.ID) {
		b.markPending(ref.ID, ino, idx, ref.Len+vault.Overhead)
	}
}

// PutNewChunk is PutChunk for a chunk just sealed under a fresh random id
// (chunkstore.NewID: never referenced, never located), which spares
// PutChunk's look-up of the chunk's location. With empty, the caller also
// vouches that (ino, idx) holds no entry now and that none can be committed
// before this batch (the position is past the inode's indexed size, and
// the caller holds the lock under which the inode's entries change): that
// spares the look-up of the entry it would replace. A new small file's
// commit then reads nothing but its inode.
func (b *Batch) PutNewChunk(ino, idx uint64, ref *ChunkRef, empty bool) {
	k := [2]uint64{ino, idx}
	if _, seen := b.chunks[k]; empty && !seen {
		b.noteOld(ino, idx, ChunkRef{}, false, b.x.refReadSeq())
		b.noteChunk(ino, idx, nil)
	}
	if _, seen := b.located[ref.ID]; !seen {
		b.noteLocated(ref.ID, false)
	}
	b.PutChunk(ino, idx, ref)
}

// DeleteChunk removes the chunk map entry of chunk idx of inode ino, and its
// chunk from the pending feed.
func (b *Batch) DeleteChunk(ino, idx uint64) {
	if old, ok := b.chunkAt(ino, idx); ok {
		b.dropRef(old)
	}
	key := key16(pChunk, ino, idx)
	b.del(key)
	b.noteRef(key, refChange{kind: pChunk})
	b.noteChunk(ino, idx, nil)
}

// PutXattr writes an extended attribute.
func (b *Batch) PutXattr(ino uint64, name string, value []byte) {
	b.set(keyMAC(pXattr, ino, b.x.xattrMAC(ino, name)), encodeXattr(name, value))
}

// DeleteXattr removes an extended attribute.
func (b *Batch) DeleteXattr(ino uint64, name string) {
	b.del(keyMAC(pXattr, ino, b.x.xattrMAC(ino, name)))
}

// AddOrphan records that inode ino has no links but is still open.
func (b *Batch) AddOrphan(ino uint64) { b.set(key8(pOrphan, ino), nil) }

// DeleteOrphan removes inode ino from the orphan list.
func (b *Batch) DeleteOrphan(ino uint64) { b.del(key8(pOrphan, ino)) }
