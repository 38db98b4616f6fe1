package fs

import (
	"context"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/fincrypt/fincrypt/meta"
)

// openHandle opens the data state of inode ino for a new handle, applying
// O_TRUNC.
func (r *fsys) openHandle(ino uint64, flags uint32) (*fileHandle, syscall.Errno) {
	of, err := r.acquire(ino)
	if err != nil {
		return nil, r.errno("open", err)
	}
	if flags&syscall.O_TRUNC != 0 && flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		of.mu.Lock()
		err := of.truncateLocked(0)
		of.unlock()
		if err != nil {
			r.release(of)
			return nil, r.errno("open", err)
		}
	}
	return &fileHandle{of: of, flags: flags}, 0
}

// Open and Create return FOPEN_KEEP_CACHE: every change to a file goes
// through this mount's kernel, so its page cache never holds stale data and
// need not be dropped on each open.
func (n *Node) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	switch n.StableAttr().Mode & syscall.S_IFMT {
	case syscall.S_IFREG:
	case syscall.S_IFDIR:
		return nil, 0, syscall.EISDIR
	default:
		return nil, 0, syscall.ENXIO // fifos, sockets and devices are not served by this file system
	}
	fh, errno := n.r().openHandle(n.ino(), flags)
	if errno != 0 {
		return nil, 0, errno
	}
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		return fh, fuse.FOPEN_KEEP_CACHE, 0
	}
	// A read-only handle has nothing to flush (dirty data belongs to the
	// handles that wrote it, and is flushed by their close), and the
	// kernel holds POSIX locks itself (no Getlk here): FOPEN_NOFLUSH
	// spares the FLUSH round trip of its close(2). Its first chunk starts
	// loading now, while the kernel comes back with the first READ.
	fh.of.mu.Lock()
	fh.of.prefetchOnOpen()
	fh.of.mu.Unlock()
	return fh, fuse.FOPEN_KEEP_CACHE | fuse.FOPEN_NOFLUSH, 0
}

// Create opens a new file's state while it creates it (under r.mu), so it
// neither reads the inode back nor commits an O_TRUNC: a new file is empty
// and its times were just set. An existing file (no O_EXCL) is opened as by
// Open.
//
// A new file's handle is opened with FOPEN_NOFLUSH: its close(2) sends no
// FLUSH, and the RELEASE the kernel queues before close returns seals and
// commits what was written (as the FLUSH queued it before). That is one
// round trip fewer for every file a program creates (5 -> 4 requests for
// an empty file, 7 -> 6 for a small one); nothing changes for what close
// reports (a storage error is reported by the next write, fsync or
// truncate, docs/FORMAT.md) or for fsync, which waits for everything, and
// a sync commits the open files' unsaved data (flushOpenFiles) as it did
// their queued chunks.
func (n *Node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	var of *openFile
	in, found, errno := n.create(ctx, name, syscall.S_IFREG|mode&0o7777, nil, flags&syscall.O_EXCL != 0,
		func(in *meta.Inode) { of = n.r().openNew(in) })
	if errno != 0 {
		return nil, nil, 0, errno
	}
	var fh *fileHandle
	flush := uint32(fuse.FOPEN_NOFLUSH)
	if found {
		flush = 0
		if in.Mode&syscall.S_IFMT != syscall.S_IFREG {
			if in.Mode&syscall.S_IFMT == syscall.S_IFDIR {
				return nil, nil, 0, syscall.EISDIR
			}
			return nil, nil, 0, syscall.EEXIST
		}
		if fh, errno = n.r().openHandle(in.Ino, flags); errno != 0 {
			return nil, nil, 0, errno
		}
		if in2, err := n.r().idx.GetInode(in.Ino); err == nil {
			in = in2
		}
	} else {
		fh = &fileHandle{of: of, flags: flags}
	}
	n.r().fillEntry(&in, out)
	return n.newChild(ctx, name, &in), fh, fuse.FOPEN_KEEP_CACHE | flush, 0
}
