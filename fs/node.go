package fs

import (
	"context"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/fincrypt/fincrypt/meta"
)

// Node is one inode as the kernel sees it. It holds only the inode number;
// everything else is read from the index (or the open file's state), so the
// kernel may forget nodes at will.
//
// It holds no pointer to the file system either: the mount keeps a Node for
// every inode the kernel knows (a million after `find` over a million
// files), and a pointer would take it from 128 to 144 bytes (the next size
// class). The root (rootNode) holds the file system for all of them.
type Node struct {
	gofs.Inode
}

// rootNode is the tree's root.
type rootNode struct {
	Node
	fs *fsys
}

// treeNode reports whether x is a node of the vault's tree (not of the
// snapshot view).
func treeNode(x gofs.InodeEmbedder) bool {
	switch x.(type) {
	case *Node, *rootNode:
		return true
	}
	return false
}

// r is the file system n belongs to.
func (n *Node) r() *fsys { return n.Root().Operations().(*rootNode).fs }

func (n *Node) ino() uint64 { return n.StableAttr().Ino }

// newChild wraps an index inode as a go-fuse inode under n by name: the
// one the mount holds for the kernel under that name if there is one (a
// READDIRPLUS over names the kernel knows), else a new one, counted and
// queued for pruning (inodecap.go).
func (n *Node) newChild(ctx context.Context, name string, in *meta.Inode) *gofs.Inode {
	return n.adopt(ctx, n.GetChild(name), in)
}

// adopt is newChild with the node the mount holds under the name, ch (nil:
// none), already looked up.
func (n *Node) adopt(ctx context.Context, ch *gofs.Inode, in *meta.Inode) *gofs.Inode {
	st := gofs.StableAttr{Mode: in.Mode & syscall.S_IFMT, Ino: in.Ino}
	if ch != nil && ch.StableAttr() == st {
		return ch
	}
	ch = n.NewInode(ctx, &Node{}, st)
	n.r().inodes.learned(ch)
	return ch
}

// fillAttr copies an inode into a FUSE attribute, with the open file's
// unsaved size and times if it is open.
func (r *fsys) fillAttr(in *meta.Inode, out *fuse.Attr) {
	size, mtime, ctime := in.Size, in.Mtime, in.Ctime
	if in.Mode&syscall.S_IFMT == syscall.S_IFREG {
		if of, recent := r.peekRecent(in.Ino); of != nil {
			of.mu.Lock()
			size = of.size
			if of.attrDirty {
				cp := *in
				of.attr.applyTo(&cp)
				in = &cp
				mtime, ctime = in.Mtime, in.Ctime
			}
			if of.dirtyTimes {
				mtime, ctime = of.mtime, of.mtime
			} else if of.timesCommitted && !of.attrDirty {
				// in may predate the commit that wrote the file's times
				// and attributes (a chunk's, by the sealing worker): read
				// what it wrote.
				if now, err := r.idx.GetInode(in.Ino); err == nil {
					in = &now
					mtime, ctime = now.Mtime, now.Ctime
				}
			}
			of.mu.Unlock()
		} else if recent {
			// in may predate the release's commit (releaseGrace), which
			// also writes a SETATTR's mode, owner and times.
			if now, err := r.idx.GetInode(in.Ino); err == nil {
				in = &now
				size, mtime, ctime = now.Size, now.Mtime, now.Ctime
			}
		}
	}
	r.fillAttrRaw(in, out, size, mtime, ctime)
}

// fillEntry is fillAttr for a reply that names an inode of the vault's tree
// (lookup, create, mkdir, ...), with the tree's entry and attribute
// timeouts. The snapshot view and negative entries keep go-fuse's defaults
// (viewTimeout): they change without a request through this kernel.
func (r *fsys) fillEntry(in *meta.Inode, out *fuse.EntryOut) {
	r.fillAttr(in, &out.Attr)
	out.SetEntryTimeout(r.opt.EntryTimeout)
	out.SetAttrTimeout(r.opt.AttrTimeout)
}

// fillAttrRaw is fillAttr with the size and times given.
func (r *fsys) fillAttrRaw(in *meta.Inode, out *fuse.Attr, size uint64, mtime, ctime int64) {
	out.Ino = in.Ino
	out.Mode = in.Mode
	out.Nlink = in.Nlink
	out.Uid, out.Gid = in.Uid, in.Gid
	out.Rdev = in.Rdev
	out.Size = size
	out.Blocks = (size + 511) / 512
	out.Blksize = uint32(min(r.cs, 1<<20))
	a, m, c := time.Unix(0, in.Atime), time.Unix(0, mtime), time.Unix(0, ctime)
	out.SetTimes(&a, &m, &c)
}

func (n *Node) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	in, err := n.r().idx.GetInode(n.ino())
	if err != nil {
		return n.r().errno("getattr", err)
	}
	n.r().fillAttr(&in, &out.Attr)
	out.SetTimeout(n.r().opt.AttrTimeout)
	return 0
}

// Setattr changes mode, owner, times or size. On an open file, a size
// change goes through the file's data state (truncate); other changes need
// only its unsaved size and times, under its lock, and leave its unsaved
// data buffered or queued: chmod, chown or utimes on a file being written
// (as tar and cp -p do before close) does not wait for its chunks.
func (n *Node) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	r := n.r()
	ino := n.ino()
	size, setSize := in.GetSize()
	var of *openFile
	if n.StableAttr().Mode&syscall.S_IFMT == syscall.S_IFREG {
		if fh, ok := f.(*fileHandle); ok {
			of = fh.of
			of.r.openMu.Lock()
			of.refs++
			of.r.openMu.Unlock()
		} else if setSize || r.isOpen(ino) {
			var err error
			if of, err = r.acquire(ino); err != nil {
				return r.errno("setattr", err)
			}
		}
	} else if setSize {
		if n.StableAttr().Mode&syscall.S_IFMT == syscall.S_IFDIR {
			return syscall.EISDIR
		}
		return syscall.EINVAL
	}
	if of != nil {
		defer func() {
			if err := r.release(of); err != nil {
				r.log.Error("setattr release", "err", err)
			}
		}()
		of.mu.Lock()
		defer of.unlock()
		if setSize {
			if err := of.truncateLocked(size); err != nil {
				return r.errno("truncate", err)
			}
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	node, err := r.idx.GetInode(ino)
	if err != nil {
		return r.errno("setattr", err)
	}
	if of != nil && of.attrDirty {
		// A SETATTR before this one, not yet committed.
		of.attr.applyTo(&node)
	}
	if of != nil && of.dirtyTimes {
		// Times of writes not yet committed: they are the file's times
		// unless this call sets others.
		node.Mtime, node.Ctime = of.mtime, of.mtime
	}
	now := time.Now().UnixNano()
	changed := setSize
	if mode, ok := in.GetMode(); ok {
		node.Mode = node.Mode&syscall.S_IFMT | mode&0o7777
		changed = true
	}
	if uid, ok := in.GetUID(); ok {
		node.Uid, changed = uid, true
	}
	if gid, ok := in.GetGID(); ok {
		node.Gid, changed = gid, true
	}
	if _, ok := in.GetUID(); ok && node.Mode&syscall.S_IFDIR == 0 {
		node.Mode &^= syscall.S_ISUID | syscall.S_ISGID // chown clears set-id bits
	}
	if in.Valid&fuse.FATTR_KILL_SUIDGID != 0 && node.Mode&syscall.S_IFDIR == 0 {
		// A write, truncate or chown that clears the set-id bits (killpriv.go).
		if m := killSetID(node.Mode); m != node.Mode {
			node.Mode, changed = m, true
		}
	}
	if t, ok := in.GetATime(); ok {
		node.Atime, changed = t.UnixNano(), true
	}
	if t, ok := in.GetMTime(); ok {
		node.Mtime, changed = t.UnixNano(), true
	}
	if t, ok := in.GetCTime(); ok {
		node.Ctime = t.UnixNano()
	} else if changed {
		node.Ctime = now
	}
	if of != nil {
		node.Size = of.size
	}
	if !changed && in.Valid&^(fuse.FATTR_KILL_SUIDGID|fuse.FATTR_FH|fuse.FATTR_LOCKOWNER) == 0 {
		// Only set-id bits to clear, and none set: nothing to commit.
		r.fillAttrRaw(&node, &out.Attr, node.Size, node.Mtime, node.Ctime)
		out.SetTimeout(r.opt.AttrTimeout)
		return 0
	}
	if of != nil && !setSize {
		// An open file's chmod, chown or utimens rides on the file's next
		// commit (its release, an fsync, a sync, the sealing worker's),
		// with its size and times, as its writes do: tar sets the mode,
		// owner and times of each file it extracts on the handle it wrote
		// with, and each had cost a commit of its own.
		of.attr.from(&node)
		of.attrDirty, of.dirtyTimes = true, false
		of.touch()
	} else {
		b := r.idx.NewBatch()
		b.PutInode(&node)
		if err := b.Commit(false); err != nil {
			return r.errno("setattr", err)
		}
		if of != nil {
			// The times just written are the file's times.
			of.dirtyTimes, of.attrDirty = false, false
		}
	}
	// of.mu is held: the node now carries the file's size and times.
	r.fillAttrRaw(&node, &out.Attr, node.Size, node.Mtime, node.Ctime)
	// go-fuse sets no timeout on a SETATTR reply; without one, the kernel
	// asks again (GETATTR) at the next stat.
	out.SetTimeout(r.opt.AttrTimeout)
	return 0
}

// Statfs reports the space of the file system that holds the chunk store.
func (n *Node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	return n.r().statfs(out)
}

// statfs answers STATFS with the figures of the disk the store is on.
func (r *fsys) statfs(out *fuse.StatfsOut) syscall.Errno {
	var st syscall.Statfs_t
	if err := syscall.Statfs(r.store.Dir(), &st); err != nil {
		return r.errno("statfs", err)
	}
	out.Blocks, out.Bfree, out.Bavail = st.Blocks, st.Bfree, st.Bavail
	out.Files, out.Ffree = st.Files, st.Ffree
	out.Bsize, out.Frsize = uint32(st.Bsize), uint32(st.Frsize)
	out.NameLen = MaxNameLen
	return 0
}

// Fsync makes a file (with a handle) or everything (a directory) durable.
func (n *Node) Fsync(ctx context.Context, f gofs.FileHandle, flags uint32) syscall.Errno {
	if fh, ok := f.(*fileHandle); ok {
		return n.r().errno("fsync", fh.of.fsync())
	}
	return n.r().errno("fsync", n.r().syncAll())
}

// caller returns the uid and gid of the process making the request.
func caller(ctx context.Context) (uint32, uint32) {
	if c, ok := fuse.FromContext(ctx); ok {
		return c.Uid, c.Gid
	}
	return 0, 0
}
