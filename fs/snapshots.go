package fs

import (
	"context"
	"encoding/binary"
	"errors"
	"hash/fnv"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/fincrypt/fincrypt/backup"
	"github.com/fincrypt/fincrypt/meta"
)

// The read-only view of backup snapshots (docs/FORMAT.md §6): the root's
// SnapshotsDirName holds one directory per snapshot, named by its time,
// under which the snapshot's tree appears as a restore lays it out (the
// backed-up absolute paths as directories). The view is looked up, not
// listed in the root (find, du or a backup of the mount do not descend into
// every snapshot). Nothing in it can change: every write gets EROFS.
//
// Its inodes take go-fuse's automatic numbers (above 1<<63, never an index
// inode), live only while the kernel holds them, and load a directory's tree
// when it is looked up or listed; a small cache keeps the last trees.

// SnapshotsDirName is the name of the snapshot view in the mount's root.
const SnapshotsDirName = ".snapshots"

// SnapshotTimeFormat names a snapshot's directory (its time in UTC); a
// snapshot taken in the same second as an older one gets "-ID" appended.
const SnapshotTimeFormat = "2006-01-02T15:04:05Z"

// snapTreeCache is how many decoded trees the view keeps.
const snapTreeCache = 64

type snapView struct {
	r      *fsys
	mu     sync.Mutex
	trees  map[meta.TreeID]*backup.Tree
	order  []meta.TreeID // oldest first, for eviction
	warned atomic.Bool
}

func newSnapView(r *fsys) *snapView {
	return &snapView{r: r, trees: map[meta.TreeID]*backup.Tree{}}
}

// tree loads tree id, through the cache (trees are immutable: named by
// their content).
func (v *snapView) tree(id meta.TreeID) (*backup.Tree, error) {
	v.mu.Lock()
	t := v.trees[id]
	v.mu.Unlock()
	if t != nil {
		return t, nil
	}
	t, err := backup.LoadTree(v.r.idx, id)
	if err != nil {
		return nil, err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, ok := v.trees[id]; !ok {
		if len(v.order) >= snapTreeCache {
			delete(v.trees, v.order[0])
			v.order = v.order[1:]
		}
		v.trees[id] = t
		v.order = append(v.order, id)
	}
	return t, nil
}

type namedSnap struct {
	name string
	s    backup.Snapshot
}

// SnapshotDirNames names the directories of snapshots (oldest first, as
// backup.Snapshots lists them) as the view shows them.
func SnapshotDirNames(all []backup.Snapshot) []string {
	out := make([]string, len(all))
	seen := map[string]bool{}
	for i, s := range all {
		name := s.Time.UTC().Format(SnapshotTimeFormat)
		if seen[name] {
			out[i] = name + "-" + s.ID.String()
			continue
		}
		seen[name] = true
		out[i] = name
	}
	return out
}

func (v *snapView) list() ([]namedSnap, error) {
	all, err := backup.Snapshots(v.r.idx)
	if err != nil {
		return nil, err
	}
	names := SnapshotDirNames(all)
	out := make([]namedSnap, len(all))
	for i := range all {
		out[i] = namedSnap{names[i], all[i]}
	}
	return out, nil
}

// any reports whether a backup snapshot exists: the view shows only then.
func (v *snapView) any() (bool, error) {
	found := false
	err := v.r.idx.BackupSnapshots(func(meta.BackupSnapID, []byte) error {
		found = true
		return errStopScan
	})
	if errors.Is(err, errStopScan) {
		err = nil
	}
	return found, err
}

var errStopScan = errors.New("stop")

// lookupRoot is the root's lookup of SnapshotsDirName once the index holds
// no such entry.
func (v *snapView) lookupRoot(ctx context.Context, parent *gofs.Inode, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	ok, err := v.any()
	if err != nil {
		return nil, v.r.errno("lookup "+SnapshotsDirName, err)
	}
	if !ok {
		return nil, syscall.ENOENT
	}
	e := &snapEntry{v: v, n: backup.Node{Type: backup.TypeDir, Mode: 0o555, Mtime: v.r.startTime.UnixNano(), Ctime: v.r.startTime.UnixNano()}}
	e.top = true
	ch := parent.NewInode(ctx, e, gofs.StableAttr{Mode: syscall.S_IFDIR})
	e.fill(&out.Attr)
	return ch, 0
}

// shadowed logs, once per mount, that a real entry hides the view.
func (v *snapView) shadowed() {
	if v.warned.CompareAndSwap(false, true) {
		if ok, _ := v.any(); ok {
			v.r.log.Warn("the root holds an entry named " + SnapshotsDirName + ": it hides the snapshot view (rename it to browse snapshots)")
		}
	}
}

// snapEntry is one inode of the view: the view's own directory (top), a
// snapshot's directory (its tree's root) or an entry of a tree.
type snapEntry struct {
	gofs.Inode
	v   *snapView
	n   backup.Node
	top bool // SnapshotsDirName itself: its children are the snapshots
	// snap is the root tree of the snapshot the entry is in (hard link
	// groups are per snapshot).
	snap meta.TreeID
}

func typeBits(t backup.Type) uint32 {
	switch t {
	case backup.TypeDir:
		return syscall.S_IFDIR
	case backup.TypeSymlink:
		return syscall.S_IFLNK
	}
	return syscall.S_IFREG
}

func (e *snapEntry) fill(out *fuse.Attr) {
	n := &e.n
	out.Ino = e.StableAttr().Ino
	out.Mode = typeBits(n.Type) | n.Mode&0o7777
	out.Nlink = 1
	if n.Type == backup.TypeFile && n.Nlink > 1 {
		out.Nlink = n.Nlink // the group's entries share this inode
	}
	out.Size = n.Size
	switch n.Type {
	case backup.TypeDir:
		out.Nlink, out.Size = 2, 0
	case backup.TypeSymlink:
		out.Size = uint64(len(n.Target))
	}
	out.Uid, out.Gid = n.Uid, n.Gid
	out.Blocks = (out.Size + 511) / 512
	out.Blksize = 1 << 20
	m, c := time.Unix(0, n.Mtime), time.Unix(0, n.Ctime)
	out.SetTimes(&m, &m, &c)
}

func (e *snapEntry) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	e.fill(&out.Attr)
	return 0
}

func (e *snapEntry) child(ctx context.Context, n backup.Node, out *fuse.EntryOut) *gofs.Inode {
	c := &snapEntry{v: e.v, n: n, snap: e.snap}
	if e.top {
		c.snap = n.Subtree // a snapshot's directory: its root tree names it
	}
	st := gofs.StableAttr{Mode: typeBits(n.Type)}
	if n.Type == backup.TypeFile && n.Nlink > 1 {
		// The entries of one hard link group share an inode: go-fuse gives
		// back the live inode of that number, if any.
		st.Ino = linkIno(c.snap, n.Dev, n.Inode)
	}
	ch := e.NewInode(ctx, c, st)
	if emb, ok := ch.Operations().(*snapEntry); ok {
		emb.fill(&out.Attr)
	} else {
		c.fill(&out.Attr)
	}
	return ch
}

// linkIno is the inode number of a hard link group of a snapshot: a hash
// of the snapshot's root tree and the group's (device, inode), with the two
// top bits set, apart from go-fuse's automatic numbers, which count up
// from 1<<63.
func linkIno(snap meta.TreeID, dev, ino uint64) uint64 {
	h := fnv.New64a()
	h.Write(snap[:])
	var b [16]byte
	binary.BigEndian.PutUint64(b[:], dev)
	binary.BigEndian.PutUint64(b[8:], ino)
	h.Write(b[:])
	return h.Sum64() | 3<<62
}

func (e *snapEntry) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if e.top {
		snaps, err := e.v.list()
		if err != nil {
			return nil, e.v.r.errno("lookup snapshot", err)
		}
		for _, s := range snaps {
			if s.name == name {
				t := s.s.Time.UnixNano()
				return e.child(ctx, backup.Node{Name: name, Type: backup.TypeDir, Mode: 0o555, Mtime: t, Ctime: t, Subtree: s.s.Tree}, out), 0
			}
		}
		return nil, syscall.ENOENT
	}
	if e.n.Type != backup.TypeDir {
		return nil, syscall.ENOTDIR
	}
	t, err := e.v.tree(e.n.Subtree)
	if err != nil {
		return nil, e.v.r.errno("lookup in snapshot", err)
	}
	nd := t.Find(name)
	if nd == nil {
		return nil, syscall.ENOENT
	}
	return e.child(ctx, *nd, out), 0
}

func (e *snapEntry) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	list := []fuse.DirEntry{{Name: ".", Ino: e.StableAttr().Ino, Mode: syscall.S_IFDIR}, {Name: "..", Mode: syscall.S_IFDIR}}
	if e.top {
		snaps, err := e.v.list()
		if err != nil {
			return nil, e.v.r.errno("readdir snapshots", err)
		}
		for _, s := range snaps {
			list = append(list, fuse.DirEntry{Name: s.name, Mode: syscall.S_IFDIR})
		}
		return gofs.NewListDirStream(list), 0
	}
	if e.n.Type != backup.TypeDir {
		return nil, syscall.ENOTDIR
	}
	t, err := e.v.tree(e.n.Subtree)
	if err != nil {
		return nil, e.v.r.errno("readdir in snapshot", err)
	}
	for i := range t.Nodes {
		list = append(list, fuse.DirEntry{Name: t.Nodes[i].Name, Mode: typeBits(t.Nodes[i].Type)})
	}
	return gofs.NewListDirStream(list), 0
}

func (e *snapEntry) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	if e.n.Type != backup.TypeSymlink {
		return nil, syscall.EINVAL
	}
	return []byte(e.n.Target), 0
}

func (e *snapEntry) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	for _, x := range e.n.Xattrs {
		if x.Name == attr {
			if len(dest) == 0 {
				return uint32(len(x.Value)), 0
			}
			if len(dest) < len(x.Value) {
				return uint32(len(x.Value)), syscall.ERANGE
			}
			return uint32(copy(dest, x.Value)), 0
		}
	}
	return 0, syscall.ENODATA
}

func (e *snapEntry) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	var list []byte
	for _, x := range e.n.Xattrs {
		list = append(append(list, x.Name...), 0)
	}
	if len(dest) == 0 {
		return uint32(len(list)), 0
	}
	if len(dest) < len(list) {
		return uint32(len(list)), syscall.ERANGE
	}
	return uint32(copy(dest, list)), 0
}

func (e *snapEntry) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	return e.v.r.statfs(out)
}

// Open opens a file of a snapshot for reading: its blobs' offsets come from
// their index records; the data is read blob by blob (ReadBlob fetches an
// evicted blob from the network and checks it against its id).
func (e *snapEntry) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&syscall.O_TRUNC != 0 {
		return nil, 0, syscall.EROFS
	}
	switch e.n.Type {
	case backup.TypeDir:
		return nil, 0, syscall.EISDIR
	case backup.TypeSymlink:
		return nil, 0, syscall.ELOOP
	}
	exts, err := backup.Extents(e.v.r.idx, &e.n)
	if err != nil {
		return nil, 0, e.v.r.errno("open in snapshot", err)
	}
	return &snapHandle{e: e, exts: exts, cur: -1}, fuse.FOPEN_KEEP_CACHE, 0
}

// snapHandle is an open file of a snapshot; it keeps the last extent read.
// Bytes no extent holds (a version's sparse file) read as zeros.
type snapHandle struct {
	e    *snapEntry
	exts []backup.Extent
	mu   sync.Mutex
	cur  int
	data []byte
	buf  []byte
}

func (h *snapHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h.mu.Lock()
	defer h.mu.Unlock()
	size := h.e.n.Size
	pos := uint64(max(off, 0))
	n := 0
	for n < len(dest) && pos < size {
		i := sort.Search(len(h.exts), func(i int) bool { return h.exts[i].Off+uint64(h.exts[i].Len) > pos }) // first extent ending after pos
		if i == len(h.exts) || h.exts[i].Off > pos {
			// A hole up to the next extent (or the end).
			end := size
			if i < len(h.exts) {
				end = h.exts[i].Off
			}
			c := int(min(uint64(len(dest)-n), end-pos))
			clear(dest[n : n+c])
			n += c
			pos += uint64(c)
			continue
		}
		if i != h.cur {
			var err error
			repo := backup.Repo{Keys: h.e.v.r.v.Keys, Index: h.e.v.r.idx, Store: h.e.v.r.store}
			h.cur = -1
			if h.data, err = backup.ReadExtent(repo, h.exts[i], h.data[:0], &h.buf); err != nil {
				return nil, h.e.v.r.errno("read in snapshot", err)
			}
			h.cur = i
		}
		c := copy(dest[n:], h.data[pos-h.exts[i].Off:])
		n += c
		pos += uint64(c)
	}
	return fuse.ReadResultData(dest[:n]), 0
}

func (h *snapHandle) Release(ctx context.Context) syscall.Errno {
	h.mu.Lock()
	h.data, h.buf = nil, nil
	h.mu.Unlock()
	return 0
}

// Every change in the view is refused.

func (e *snapEntry) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return syscall.EROFS
}
func (e *snapEntry) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}
func (e *snapEntry) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}
func (e *snapEntry) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}
func (e *snapEntry) Link(ctx context.Context, target gofs.InodeEmbedder, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}
func (e *snapEntry) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.EROFS
}
func (e *snapEntry) Unlink(ctx context.Context, name string) syscall.Errno { return syscall.EROFS }
func (e *snapEntry) Rmdir(ctx context.Context, name string) syscall.Errno  { return syscall.EROFS }
func (e *snapEntry) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	return syscall.EROFS
}
func (e *snapEntry) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return syscall.EROFS
}
func (e *snapEntry) Removexattr(ctx context.Context, attr string) syscall.Errno { return syscall.EROFS }

var (
	_ = (gofs.NodeGetattrer)((*snapEntry)(nil))
	_ = (gofs.NodeSetattrer)((*snapEntry)(nil))
	_ = (gofs.NodeStatfser)((*snapEntry)(nil))
	_ = (gofs.NodeLookuper)((*snapEntry)(nil))
	_ = (gofs.NodeReaddirer)((*snapEntry)(nil))
	_ = (gofs.NodeMkdirer)((*snapEntry)(nil))
	_ = (gofs.NodeMknoder)((*snapEntry)(nil))
	_ = (gofs.NodeSymlinker)((*snapEntry)(nil))
	_ = (gofs.NodeReadlinker)((*snapEntry)(nil))
	_ = (gofs.NodeLinker)((*snapEntry)(nil))
	_ = (gofs.NodeUnlinker)((*snapEntry)(nil))
	_ = (gofs.NodeRmdirer)((*snapEntry)(nil))
	_ = (gofs.NodeRenamer)((*snapEntry)(nil))
	_ = (gofs.NodeOpener)((*snapEntry)(nil))
	_ = (gofs.NodeCreater)((*snapEntry)(nil))
	_ = (gofs.NodeGetxattrer)((*snapEntry)(nil))
	_ = (gofs.NodeListxattrer)((*snapEntry)(nil))
	_ = (gofs.NodeSetxattrer)((*snapEntry)(nil))
	_ = (gofs.NodeRemovexattrer)((*snapEntry)(nil))
	_ = (gofs.FileReader)((*snapHandle)(nil))
	_ = (gofs.FileReleaser)((*snapHandle)(nil))
)
