package fs

import (
	"context"
	"errors"
	"sync/atomic"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/fincrypt/fincrypt/meta"
)

func badName(name string) syscall.Errno {
	if len(name) > MaxNameLen {
		return syscall.ENAMETOOLONG
	}
	return 0
}

// nameLookups counts the look-ups of a name in a directory's entries
// (tests: READDIRPLUS answers without them).
var nameLookups atomic.Int64

func (n *Node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if e := badName(name); e != 0 {
		return nil, e
	}
	nameLookups.Add(1)
	gen := n.r().idx.DirentGeneration() // before the look-up: see lookupMiss
	d, err := n.r().idx.Lookup(n.ino(), name)
	if errors.Is(err, meta.ErrNotFound) {
		n.r().missed.Store(&lookupMiss{parent: n.ino(), name: name, gen: gen})
	}
	if name == SnapshotsDirName && n.ino() == meta.RootIno {
		// A real entry of that name wins over the snapshot view (snapshots.go).
		if errors.Is(err, meta.ErrNotFound) {
			return n.r().snaps.lookupRoot(ctx, n.EmbeddedInode(), out)
		}
		if err == nil {
			n.r().snaps.shadowed()
		}
	}
	if err != nil {
		return nil, n.r().errno("lookup", err)
	}
	in, err := n.r().idx.GetInode(d.Ino)
	if err != nil {
		return nil, n.r().errno("lookup", err)
	}
	n.r().fillEntry(&in, out)
	return n.newChild(ctx, name, &in), 0
}

func (n *Node) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	list, errno := n.listDir()
	if errno != 0 {
		return nil, errno
	}
	return gofs.NewListDirStream(list), 0
}

// listDir lists directory n, "." and ".." first.
func (n *Node) listDir() ([]fuse.DirEntry, syscall.Errno) {
	ino := n.ino()
	parent := ino
	if _, p := n.Parent(); p != nil {
		parent = p.StableAttr().Ino
	}
	list := []fuse.DirEntry{{Name: ".", Ino: ino, Mode: syscall.S_IFDIR}, {Name: "..", Ino: parent, Mode: syscall.S_IFDIR}}
	err := n.r().idx.ListDir(ino, func(d meta.Dirent) error {
		list = append(list, fuse.DirEntry{Name: d.Name, Ino: d.Ino, Mode: d.Type})
		return nil
	})
	if err != nil {
		return nil, n.r().errno("readdir", err)
	}
	return list, 0
}

// newInode allocates an inode owned by the caller, inheriting the group of a
// set-group-id parent.
func (r *fsys) newInode(ctx context.Context, parent *meta.Inode, mode uint32) (meta.Inode, error) {
	ino, err := r.idx.NextIno()
	if err != nil {
		return meta.Inode{}, err
	}
	uid, gid := caller(ctx)
	if parent.Mode&syscall.S_ISGID != 0 {
		gid = parent.Gid
		if mode&syscall.S_IFMT == syscall.S_IFDIR {
			mode |= syscall.S_ISGID
		}
	}
	now := time.Now().UnixNano()
	return meta.Inode{Ino: ino, Mode: mode, Uid: uid, Gid: gid, Nlink: 1, Atime: now, Mtime: now, Ctime: now}, nil
}

// lookupMiss is a name that a LOOKUP found missing in directory parent,
// with the index's DirentGeneration read before that look-up. The kernel
// sends a LOOKUP of a new name right before its CREATE (or MKDIR, ...):
// create need not look the name up a second time while no entry changed
// since. Every change of an entry is committed under r.mu and counted in
// DirentGeneration before the commit returns, so a create, which holds
// r.mu, that still sees gen sees no entry committed after the look-up.
type lookupMiss struct {
	parent uint64
	name   string
	gen    uint64
}

// knownMissing reports whether name in directory parent is the last name a
// LOOKUP found missing and no entry changed since. Caller holds r.mu.
func (r *fsys) knownMissing(parent uint64, name string) bool {
	m := r.missed.Load()
	if m == nil || m.parent != parent || m.name != name || m.gen != r.idx.DirentGeneration() {
		return false
	}
	missedUsed.Add(1)
	return true
}

// missedUsed counts the creates that took a LOOKUP's miss instead of looking
// the name up again (tests).
var missedUsed atomic.Int64

// create adds a new inode named name in directory n; it holds r.mu.
// With exclusive false, an existing entry is returned instead (found=true).
// created, if set, runs under r.mu once the new inode is committed, before
// any other operation can see it.
func (n *Node) create(ctx context.Context, name string, mode uint32, fill func(*meta.Inode), exclusive bool, created func(*meta.Inode)) (in meta.Inode, found bool, errno syscall.Errno) {
	if e := badName(name); e != 0 {
		return in, false, e
	}
	r := n.r()
	if e := r.space.room(0); e != 0 {
		return in, false, e
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	dir, err := r.idx.GetInode(n.ino())
	if err != nil {
		return in, false, r.errno("create", err)
	}
	if dir.Nlink == 0 {
		return in, false, syscall.ENOENT // removed directory
	}
	if r.knownMissing(dir.Ino, name) {
		// The kernel's LOOKUP of this name, just before, found nothing,
		// and no entry changed since.
	} else if d, err := r.idx.Lookup(dir.Ino, name); err == nil {
		if exclusive {
			return in, false, syscall.EEXIST
		}
		in, err = r.idx.GetInode(d.Ino)
		return in, true, r.errno("create", err)
	} else if !errors.Is(err, meta.ErrNotFound) {
		return in, false, r.errno("create", err)
	}
	in, err = r.newInode(ctx, &dir, mode)
	if err != nil {
		return in, false, r.errno("create", err)
	}
	if fill != nil {
		fill(&in)
	}
	b := r.idx.NewBatch()
	b.PutInode(&in)
	b.PutDirent(&meta.Dirent{Parent: dir.Ino, Name: name, Ino: in.Ino, Type: in.Mode & syscall.S_IFMT})
	if in.Mode&syscall.S_IFMT == syscall.S_IFDIR {
		dir.Nlink++
	}
	dir.Mtime, dir.Ctime = in.Mtime, in.Mtime
	b.PutInode(&dir)
	if err := b.Commit(false); err != nil {
		return in, false, r.errno("create", err)
	}
	if created != nil {
		created(&in)
	}
	return in, false, 0
}

func (n *Node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	in, _, errno := n.create(ctx, name, syscall.S_IFDIR|mode&0o7777, func(in *meta.Inode) { in.Nlink = 2 }, true, nil)
	if errno != 0 {
		return nil, errno
	}
	n.r().fillEntry(&in, out)
	return n.newChild(ctx, name, &in), 0
}

func (n *Node) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	switch mode & syscall.S_IFMT {
	case syscall.S_IFREG, syscall.S_IFIFO, syscall.S_IFSOCK, syscall.S_IFCHR, syscall.S_IFBLK:
	case 0:
		mode |= syscall.S_IFREG
	default:
		return nil, syscall.EINVAL
	}
	in, _, errno := n.create(ctx, name, mode, func(in *meta.Inode) { in.Rdev = dev }, true, nil)
	if errno != 0 {
		return nil, errno
	}
	n.r().fillEntry(&in, out)
	return n.newChild(ctx, name, &in), 0
}

func (n *Node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if len(target) > 4096 {
		return nil, syscall.ENAMETOOLONG
	}
	in, _, errno := n.create(ctx, name, syscall.S_IFLNK|0o777, func(in *meta.Inode) {
		in.Target = []byte(target)
		in.Size = uint64(len(target))
	}, true, nil)
	if errno != 0 {
		return nil, errno
	}
	n.r().fillEntry(&in, out)
	return n.newChild(ctx, name, &in), 0
}

func (n *Node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	in, err := n.r().idx.GetInode(n.ino())
	if err != nil {
		return nil, n.r().errno("readlink", err)
	}
	if in.Mode&syscall.S_IFMT != syscall.S_IFLNK {
		return nil, syscall.EINVAL
	}
	return in.Target, 0
}

func (n *Node) Link(ctx context.Context, target gofs.InodeEmbedder, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if e := badName(name); e != 0 {
		return nil, e
	}
	if !treeNode(target) {
		return nil, syscall.EXDEV // a file of the snapshot view
	}
	if e := n.r().space.room(0); e != 0 {
		return nil, e
	}
	in, errno := n.link(target.EmbeddedInode().StableAttr().Ino, name)
	if errno != 0 {
		return nil, errno
	}
	// Not under r.mu: fillAttr takes the open file's lock, which is
	// taken before r.mu elsewhere.
	n.r().fillEntry(&in, out)
	// The target's inode, which the kernel holds (go-fuse would otherwise
	// drop a new one for it).
	return target.EmbeddedInode(), 0
}

func (n *Node) link(tino uint64, name string) (meta.Inode, syscall.Errno) {
	r := n.r()
	r.mu.Lock()
	defer r.mu.Unlock()
	dir, err := r.idx.GetInode(n.ino())
	if err != nil {
		return dir, r.errno("link", err)
	}
	if _, err := r.idx.Lookup(dir.Ino, name); err == nil {
		return dir, syscall.EEXIST
	} else if !errors.Is(err, meta.ErrNotFound) {
		return dir, r.errno("link", err)
	}
	in, err := r.idx.GetInode(tino)
	if err != nil {
		return in, r.errno("link", err)
	}
	if in.Mode&syscall.S_IFMT == syscall.S_IFDIR {
		return in, syscall.EPERM
	}
	if in.Nlink == 0 {
		return in, syscall.ENOENT
	}
	now := time.Now().UnixNano()
	in.Nlink++
	in.Ctime = now
	dir.Mtime, dir.Ctime = now, now
	b := r.idx.NewBatch()
	b.PutInode(&in)
	b.PutInode(&dir)
	b.PutDirent(&meta.Dirent{Parent: dir.Ino, Name: name, Ino: in.Ino, Type: in.Mode & syscall.S_IFMT})
	if err := b.Commit(false); err != nil {
		return in, r.errno("link", err)
	}
	return in, 0
}

// dropLink removes one link to inode in (whose entry is being removed) in b,
// and purges it if that was the last link and it is not open. It returns
// chunk ids to supersede after the commit. Caller holds r.mu.
func (r *fsys) dropLink(b *meta.Batch, in *meta.Inode, now int64) ([]meta.ChunkID, error) {
	isDir := in.Mode&syscall.S_IFMT == syscall.S_IFDIR
	if isDir {
		in.Nlink = 0
	} else if in.Nlink > 0 {
		in.Nlink--
	}
	in.Ctime = now
	if in.Nlink > 0 {
		b.PutInode(in)
		return nil, nil
	}
	if !isDir && r.markUnlinked(in.Ino) {
		b.PutInode(in)
		b.AddOrphan(in.Ino)
		return nil, nil
	}
	return r.purgeInode(b, in.Ino)
}

func (n *Node) Unlink(ctx context.Context, name string) syscall.Errno {
	return n.remove(name, false)
}

func (n *Node) Rmdir(ctx context.Context, name string) syscall.Errno {
	return n.remove(name, true)
}

func (n *Node) remove(name string, dirWanted bool) syscall.Errno {
	n.r().space.freeing()
	r := n.r()
	r.mu.Lock()
	defer r.mu.Unlock()
	dir, err := r.idx.GetInode(n.ino())
	if err != nil {
		return r.errno("remove", err)
	}
	d, err := r.idx.Lookup(dir.Ino, name)
	if err != nil {
		return r.errno("remove", err)
	}
	in, err := r.idx.GetInode(d.Ino)
	if err != nil {
		return r.errno("remove", err)
	}
	isDir := in.Mode&syscall.S_IFMT == syscall.S_IFDIR
	switch {
	case dirWanted && !isDir:
		return syscall.ENOTDIR
	case !dirWanted && isDir:
		return syscall.EISDIR
	case isDir:
		empty, err := r.idx.DirEmpty(in.Ino)
		if err != nil {
			return r.errno("rmdir", err)
		}
		if !empty {
			return syscall.ENOTEMPTY
		}
	}
	now := time.Now().UnixNano()
	b := r.idx.NewBatch()
	b.DeleteDirent(dir.Ino, name)
	ids, err := r.dropLink(b, &in, now)
	if err != nil {
		b.Discard()
		return r.errno("remove", err)
	}
	if isDir {
		dir.Nlink--
	}
	dir.Mtime, dir.Ctime = now, now
	b.PutInode(&dir)
	if err := b.Commit(false); err != nil {
		return r.errno("remove", err)
	}
	r.supersede(ids...)
	return 0
}

// Rename flags (renameat2).
const (
	renameNoReplace = 0x1
	renameExchange  = 0x2
)

func (n *Node) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if e := badName(newName); e != 0 {
		return e
	}
	n.r().space.freeing()
	if flags&^(renameNoReplace|renameExchange) != 0 || flags == renameNoReplace|renameExchange {
		return syscall.EINVAL // RENAME_WHITEOUT is not supported
	}
	if !treeNode(newParent) {
		return syscall.EROFS // into the snapshot view
	}
	r := n.r()
	r.mu.Lock()
	defer r.mu.Unlock()
	srcDir, err := r.idx.GetInode(n.ino())
	if err != nil {
		return r.errno("rename", err)
	}
	dstIno := newParent.EmbeddedInode().StableAttr().Ino
	dstDir := srcDir
	same := dstIno == srcDir.Ino
	if !same {
		if dstDir, err = r.idx.GetInode(dstIno); err != nil {
			return r.errno("rename", err)
		}
	}
	src, err := r.idx.Lookup(srcDir.Ino, name)
	if err != nil {
		return r.errno("rename", err)
	}
	srcIn, err := r.idx.GetInode(src.Ino)
	if err != nil {
		return r.errno("rename", err)
	}
	srcIsDir := srcIn.Mode&syscall.S_IFMT == syscall.S_IFDIR
	dst, err := r.idx.Lookup(dstDir.Ino, newName)
	exists := err == nil
	if err != nil && !errors.Is(err, meta.ErrNotFound) {
		return r.errno("rename", err)
	}
	if exists && flags&renameNoReplace != 0 {
		return syscall.EEXIST
	}
	if !exists && flags&renameExchange != 0 {
		return syscall.ENOENT
	}
	if exists && dst.Ino == src.Ino {
		return 0 // two links to the same inode: nothing to do
	}
	now := time.Now().UnixNano()
	b := r.idx.NewBatch()
	var ids []meta.ChunkID
	// Directory link counts: a directory moving between parents moves its ".." link.
	moveDirLink := func(in *meta.Inode, from, to *meta.Inode) {
		if in.Mode&syscall.S_IFMT == syscall.S_IFDIR && from.Ino != to.Ino {
			from.Nlink--
			to.Nlink++
		}
	}
	if flags&renameExchange != 0 {
		dstIn, err := r.idx.GetInode(dst.Ino)
		if err != nil {
			b.Discard()
			return r.errno("rename", err)
		}
		b.PutDirent(&meta.Dirent{Parent: dstDir.Ino, Name: newName, Ino: src.Ino, Type: src.Type})
		b.PutDirent(&meta.Dirent{Parent: srcDir.Ino, Name: name, Ino: dst.Ino, Type: dst.Type})
		if !same {
			moveDirLink(&srcIn, &srcDir, &dstDir)
			moveDirLink(&dstIn, &dstDir, &srcDir)
		}
		dstIn.Ctime = now
		b.PutInode(&dstIn)
	} else {
		if exists {
			dstIn, err := r.idx.GetInode(dst.Ino)
			if err != nil {
				b.Discard()
				return r.errno("rename", err)
			}
			dstIsDir := dstIn.Mode&syscall.S_IFMT == syscall.S_IFDIR
			switch {
			case srcIsDir && !dstIsDir:
				b.Discard()
				return syscall.ENOTDIR
			case !srcIsDir && dstIsDir:
				b.Discard()
				return syscall.EISDIR
			case dstIsDir:
				empty, err := r.idx.DirEmpty(dstIn.Ino)
				if err != nil {
					b.Discard()
					return r.errno("rename", err)
				}
				if !empty {
					b.Discard()
					return syscall.ENOTEMPTY
				}
				// The replaced directory's ".." link goes.
				if same {
					srcDir.Nlink--
				} else {
					dstDir.Nlink--
				}
			}
			if ids, err = r.dropLink(b, &dstIn, now); err != nil {
				b.Discard()
				return r.errno("rename", err)
			}
		}
		b.DeleteDirent(srcDir.Ino, name)
		b.PutDirent(&meta.Dirent{Parent: dstDir.Ino, Name: newName, Ino: src.Ino, Type: src.Type})
		if !same {
			moveDirLink(&srcIn, &srcDir, &dstDir)
		}
	}
	srcIn.Ctime = now
	b.PutInode(&srcIn)
	srcDir.Mtime, srcDir.Ctime = now, now
	b.PutInode(&srcDir)
	if !same {
		dstDir.Mtime, dstDir.Ctime = now, now
		b.PutInode(&dstDir)
	}
	if err := b.Commit(false); err != nil {
		return r.errno("rename", err)
	}
	r.supersede(ids...)
	return 0
}
