package fs

import "github.com/hanwen/go-fuse/v2/fuse"

// With Options.WritebackCache the mount negotiates FUSE_WRITEBACK_CACHE
// (Documentation/filesystems/fuse-io.rst): write(2) copies into the kernel's
// page cache and returns, and the kernel sends the dirty pages as WRITEs
// later (by its writeback, memory pressure, and at the latest before the
// FSYNC of fsync(2) and the FLUSH/RELEASE of close(2), which it sends only
// once the pages are written). What that changes here:
//
//   - The kernel owns a regular file's size and times while it is cached:
//     it keeps its own size and mtime over a GETATTR's, and sends the times
//     of its writes as a SETATTR (FATTR_MTIME|FATTR_CTIME) when it writes
//     the inode back. Setattr stores them as any utimens.
//   - It may READ a page through a handle opened O_WRONLY (to fill the rest
//     of a page a write covers partly); handles here never check the
//     access mode, the kernel already did at open.
//   - It handles O_APPEND itself: WRITEs carry the offset to write at, as
//     they always do here.
//   - fsync(2) waits for the dirty pages to be written (WRITE) before it
//     sends FSYNC, whose handler makes everything the mount has durable:
//     fsync's promise is unchanged. Without fsync, a kill -9 of the mount
//     loses what was still in the page cache as well as what the mount had
//     not committed, as a power cut loses a local file system's unsynced
//     pages.
//   - A WRITE the mount refuses (ENOSPC near a full disk, a storage error)
//     fails the kernel's writeback, not the write(2): the program sees it
//     from fsync(2) or close(2), as with a local file system's delayed
//     allocation.
func writebackCaps(on bool) uint64 {
	if on {
		return fuse.CAP_WRITEBACK_CACHE
	}
	return 0
}
