package backup

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"

	"github.com/fincrypt/fincrypt/meta"
)

// ErrCorrupt means a tree or snapshot record does not decode.
var ErrCorrupt = errors.New("backup record is corrupt")

// Type is the kind of a tree entry.
type Type uint8

// Entry types. Sockets, devices and fifos are not kept (a pass says so).
const (
	TypeFile    Type = 'f'
	TypeDir     Type = 'd'
	TypeSymlink Type = 'l'
)

// Xattr is one extended attribute.
type Xattr struct {
	Name  string
	Value []byte
}

// Node is one entry of a tree: a file, a directory or a symlink, with the
// metadata a restore gives back. Files whose Nlink is above 1 form a hard
// link group with every file of the snapshot of the same (Dev, Inode).
type Node struct {
	Name   string
	Type   Type
	Mode   uint32 // permission bits, setuid, setgid, sticky (st_mode & 07777)
	Uid    uint32
	Gid    uint32
	Mtime  int64 // nanoseconds since the Unix epoch
	Ctime  int64
	Dev    uint64
	Inode  uint64
	Nlink  uint32
	Size   uint64
	Target string // a symlink's target
	Xattrs []Xattr
	// Subtree is a directory's tree.
	Subtree meta.TreeID
	// Blobs are a file's contents, in order.
	Blobs []meta.ChunkID
}

// Tree is one directory's entries, sorted by name.
type Tree struct {
	Nodes []Node
}

// Find returns the entry called name, or nil.
func (t *Tree) Find(name string) *Node {
	i := sort.Search(len(t.Nodes), func(i int) bool { return t.Nodes[i].Name >= name })
	if i < len(t.Nodes) && t.Nodes[i].Name == name {
		return &t.Nodes[i]
	}
	return nil
}

const treeRecV1 = 1

// encode is the tree record (docs/FORMAT.md §6).
func (t *Tree) encode() []byte {
	b := []byte{treeRecV1}
	b = binary.BigEndian.AppendUint32(b, uint32(len(t.Nodes)))
	for i := range t.Nodes {
		n := &t.Nodes[i]
		b = appendStr(b, n.Name)
		b = append(b, byte(n.Type))
		b = binary.BigEndian.AppendUint32(b, n.Mode)
		b = binary.BigEndian.AppendUint32(b, n.Uid)
		b = binary.BigEndian.AppendUint32(b, n.Gid)
		b = binary.BigEndian.AppendUint64(b, uint64(n.Mtime))
		b = binary.BigEndian.AppendUint64(b, uint64(n.Ctime))
		b = binary.BigEndian.AppendUint64(b, n.Dev)
		b = binary.BigEndian.AppendUint64(b, n.Inode)
		b = binary.BigEndian.AppendUint32(b, n.Nlink)
		b = binary.BigEndian.AppendUint64(b, n.Size)
		b = appendStr(b, n.Target)
		b = binary.BigEndian.AppendUint16(b, uint16(len(n.Xattrs)))
		for _, x := range n.Xattrs {
			b = appendStr(b, x.Name)
			b = binary.BigEndian.AppendUint32(b, uint32(len(x.Value)))
			b = append(b, x.Value...)
		}
		b = append(b, n.Subtree[:]...)
		b = binary.BigEndian.AppendUint32(b, uint32(len(n.Blobs)))
		for _, id := range n.Blobs {
			b = append(b, id[:]...)
		}
	}
	return b
}

func appendStr(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// reader decodes a record; the first failure sticks.
type reader struct {
	b   []byte
	err error
}

func (r *reader) take(n int) []byte {
	if r.err != nil || n > len(r.b) || n < 0 {
		if r.err == nil {
			r.err = fmt.Errorf("record ends early: %w", ErrCorrupt)
		}
		return make([]byte, max(n, 0))
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}
func (r *reader) u8() uint8   { return r.take(1)[0] }
func (r *reader) u16() uint16 { return binary.BigEndian.Uint16(r.take(2)) }
func (r *reader) u32() uint32 { return binary.BigEndian.Uint32(r.take(4)) }
func (r *reader) u64() uint64 { return binary.BigEndian.Uint64(r.take(8)) }
func (r *reader) str() string { return string(r.take(int(r.u16()))) }

func decodeTree(b []byte) (*Tree, error) {
	r := &reader{b: b}
	if v := r.u8(); r.err == nil && v != treeRecV1 {
		return nil, fmt.Errorf("tree record version %d, this fincrypt reads %d: %w", v, treeRecV1, ErrCorrupt)
	}
	n := r.u32()
	if r.err == nil && uint64(n) > uint64(len(b)) {
		return nil, fmt.Errorf("tree of %d entries in %d bytes: %w", n, len(b), ErrCorrupt)
	}
	t := &Tree{Nodes: make([]Node, 0, n)}
	for i := uint32(0); i < n && r.err == nil; i++ {
		var nd Node
		nd.Name = r.str()
		nd.Type = Type(r.u8())
		nd.Mode, nd.Uid, nd.Gid = r.u32(), r.u32(), r.u32()
		nd.Mtime, nd.Ctime = int64(r.u64()), int64(r.u64())
		nd.Dev, nd.Inode = r.u64(), r.u64()
		nd.Nlink = r.u32()
		nd.Size = r.u64()
		nd.Target = r.str()
		for x := r.u16(); x > 0 && r.err == nil; x-- {
			name := r.str()
			val := append([]byte(nil), r.take(int(r.u32()))...)
			nd.Xattrs = append(nd.Xattrs, Xattr{name, val})
		}
		copy(nd.Subtree[:], r.take(meta.TreeIDSize))
		nb := r.u32()
		if r.err == nil && uint64(nb)*meta.ChunkIDSize > uint64(len(r.b)) {
			return nil, fmt.Errorf("entry %q lists %d blobs in %d bytes: %w", nd.Name, nb, len(r.b), ErrCorrupt)
		}
		for j := uint32(0); j < nb && r.err == nil; j++ {
			nd.Blobs = append(nd.Blobs, meta.ChunkID(r.take(meta.ChunkIDSize)))
		}
		switch nd.Type {
		case TypeFile, TypeDir, TypeSymlink:
		default:
			if r.err == nil {
				r.err = fmt.Errorf("entry %q has type %d: %w", nd.Name, nd.Type, ErrCorrupt)
			}
		}
		t.Nodes = append(t.Nodes, nd)
	}
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("%d bytes after the last entry: %w", len(r.b), ErrCorrupt)
	}
	if r.err != nil {
		return nil, r.err
	}
	return t, nil
}
