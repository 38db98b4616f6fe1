package fs

import (
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// The mount negotiates FUSE_HANDLE_KILLPRIV_V2: the file system, not the
// kernel, clears a file's set-user-ID and set-group-ID bits when it is
// written or truncated by a caller without CAP_FSETID, or its owner changes.
// Without it the kernel asks, before every WRITE, whether the file has a
// security.capability attribute to drop (a GETXATTR round trip per write),
// and before every chown it reads the attributes again (a GETATTR). This
// file system stores no security.* attribute, so only the mode bits are
// left to clear, as Linux does: set-user-ID always, set-group-ID when the
// group may execute (otherwise it marks mandatory locking, kept).

// killPrivCaps are the capabilities asked of the kernel for this.
const killPrivCaps = fuse.CAP_HANDLE_KILLPRIV_V2

// killSetID returns mode without the set-id bits a write, a truncate or a
// chown by an unprivileged caller clears.
func killSetID(mode uint32) uint32 {
	mode &^= syscall.S_ISUID
	if mode&syscall.S_IXGRP != 0 {
		mode &^= syscall.S_ISGID
	}
	return mode
}

// killPrivFS passes the kernel's "clear the set-id bits" flag of a WRITE
// (FUSE_WRITE_KILL_SUIDGID), which go-fuse's node API drops, on as a
// SETATTR of FATTR_KILL_SUIDGID alone before the write; Setattr answers one
// that has nothing to clear without a commit. A SETATTR (truncate, chown)
// carries the flag itself.
type killPrivFS struct{ fuse.RawFileSystem }

func (k killPrivFS) kill(c <-chan struct{}, in *fuse.WriteIn) fuse.Status {
	if in.WriteFlags&fuse.WRITE_KILL_SUIDGID == 0 {
		return fuse.OK
	}
	sa := fuse.SetAttrIn{SetAttrInCommon: fuse.SetAttrInCommon{InHeader: in.InHeader,
		Valid: fuse.FATTR_KILL_SUIDGID | fuse.FATTR_FH, Fh: in.Fh}}
	var out fuse.AttrOut
	return k.RawFileSystem.SetAttr(c, &sa, &out)
}

func (k killPrivFS) Write(c <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	if st := k.kill(c, in); !st.Ok() {
		return 0, st
	}
	return k.RawFileSystem.Write(c, in, data)
}

func (k killPrivFS) Writev(c <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	if st := k.kill(c, in); !st.Ok() {
		return 0, st
	}
	return k.RawFileSystem.Writev(c, in, data)
}
