package fs

import (
	"context"
	"errors"
	"strings"
	"syscall"
	"time"

	"github.com/fincrypt/fincrypt/meta"
)

// Extended attributes: only the user. namespace is stored. Reading any other
// name finds nothing (ENODATA), as on a file system without them; setting
// one fails with EOPNOTSUPP, which cp -a and tar treat as "not supported".

const (
	xattrCreate  = 0x1
	xattrReplace = 0x2
)

func xattrName(name string) syscall.Errno {
	if len(name) > 255 {
		return syscall.ERANGE
	}
	if !strings.HasPrefix(name, "user.") {
		return syscall.EOPNOTSUPP
	}
	if len(name) == len("user.") {
		return syscall.EINVAL
	}
	return 0
}

func (n *Node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if e := xattrName(attr); e != 0 {
		if e == syscall.EOPNOTSUPP {
			return 0, syscall.ENODATA
		}
		return 0, e
	}
	v, err := n.r().idx.GetXattr(n.ino(), attr)
	if errors.Is(err, meta.ErrNotFound) {
		return 0, syscall.ENODATA
	}
	if err != nil {
		return 0, n.r().errno("getxattr", err)
	}
	if len(dest) == 0 {
		return uint32(len(v)), 0
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

func (n *Node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	var list []byte
	err := n.r().idx.ListXattr(n.ino(), func(name string, _ []byte) error {
		list = append(append(list, name...), 0)
		return nil
	})
	if err != nil {
		return 0, n.r().errno("listxattr", err)
	}
	if len(dest) == 0 {
		return uint32(len(list)), 0
	}
	if len(dest) < len(list) {
		return uint32(len(list)), syscall.ERANGE
	}
	return uint32(copy(dest, list)), 0
}

func (n *Node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	if e := xattrName(attr); e != 0 {
		return e
	}
	if len(data) > MaxXattrSize {
		return syscall.E2BIG
	}
	if e := n.r().space.room(uint64(len(data))); e != 0 {
		return e
	}
	return n.changeXattr(attr, func(b *meta.Batch, exists bool) syscall.Errno {
		switch {
		case exists && flags&xattrCreate != 0:
			return syscall.EEXIST
		case !exists && flags&xattrReplace != 0:
			return syscall.ENODATA
		}
		b.PutXattr(n.ino(), attr, data)
		return 0
	})
}

func (n *Node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	if e := xattrName(attr); e != 0 {
		if e == syscall.EOPNOTSUPP {
			return syscall.ENODATA
		}
		return e
	}
	return n.changeXattr(attr, func(b *meta.Batch, exists bool) syscall.Errno {
		if !exists {
			return syscall.ENODATA
		}
		b.DeleteXattr(n.ino(), attr)
		return 0
	})
}

// changeXattr runs a change of attribute attr under the index lock and
// updates the inode's ctime with it.
func (n *Node) changeXattr(attr string, change func(b *meta.Batch, exists bool) syscall.Errno) syscall.Errno {
	r := n.r()
	r.mu.Lock()
	defer r.mu.Unlock()
	in, err := r.idx.GetInode(n.ino())
	if err != nil {
		return r.errno("xattr", err)
	}
	_, err = r.idx.GetXattr(in.Ino, attr)
	exists := err == nil
	if err != nil && !errors.Is(err, meta.ErrNotFound) {
		return r.errno("xattr", err)
	}
	b := r.idx.NewBatch()
	if e := change(b, exists); e != 0 {
		b.Discard()
		return e
	}
	in.Ctime = time.Now().UnixNano()
	b.PutInode(&in)
	return r.errno("xattr", b.Commit(false))
}
