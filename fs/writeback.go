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
//     the inode back. Setattr stores them as any utimens. A WRITE sets no
//     times here: the kernel writes a file's pages and its inode back
//     apart, and the mount serves requests concurrently, so a WRITE may
//     arrive after the SETATTR that carries its times; stamping the
//     mount's clock then left a later mtime than stat showed at fsync
//     (TestWritebackWriteKeepsTheKernelsTimes).
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
//
// It is off by default because it did not pay here (2026-12-06, 2 cores
// at load 25-36, same binary with and without the flag, 3 interleaved
// rounds, /tmp/wb scripts of the wbcache session): 256 MiB write+fsync
// 51-77 MB/s against 89-168 without, at about twice the mount's CPU
// (0.84-1.06 s against 0.45-0.57 s); 3000 small files 229-512 files/s
// against 91-615 (CPU 2.1-2.8 s against 1.7-4.4 s); mktree of 20000
// entries 451-1468 against 469-1500 entries/s. The kernel throttles a
// FUSE device's dirty pages hard (its bdi has max_ratio 1 and
// strict_limit): with both lifted by hand the seq-write CPU came back to
// 0.41-0.48 s, but the wall time (82-121 MB/s) still did not beat the
// direct path (101-163 MB/s), and those knobs are system-wide policy a
// mount should not change. Close also costs more round trips with it: the
// kernel sends a FLUSH despite FOPEN_NOFLUSH and a SETATTR for the times.
func writebackCaps(on bool) uint64 {
	if on {
		return fuse.CAP_WRITEBACK_CACHE
	}
	return 0
}
