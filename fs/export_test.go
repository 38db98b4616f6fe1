package fs

import (
	"fmt"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/chunkstore"
	"github.com/fincrypt/fincrypt/meta"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// WaitIdle waits until no file of the mount is open (every handle
// released, so every closed file's chunks are sealed and committed), for
// tests and benchmarks that must not let one workload's background work
// spill into the next.
func (m *Mounted) WaitIdle(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		m.r.openMu.Lock()
		n := len(m.r.open)
		m.r.openMu.Unlock()
		if n == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d files still open after %v", n, timeout)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// UseFileStore makes the stores that a test's mounts create format 1 (a
// file per chunk), for tests that damage or count chunk files; the pack
// format has its own damage tests in chunkstore.
func UseFileStore(t testing.TB) {
	old := newStoreFormat
	newStoreFormat = chunkstore.FormatFiles
	t.Cleanup(func() { newStoreFormat = old })
}

// ChunkOpens returns how many chunks were loaded (read from the store or
// the network) and how many AEAD opens that took, since the process began.
func ChunkOpens() (loads, opens int64) { return chunkLoads.Load(), chunkOpens.Load() }

// BufGrowths counts the chunk buffers grown (and copied) by writes.
func BufGrowths() int64 { return bufGrowths.Load() }

// ChunksQueued returns how many chunks were handed to a sealing worker
// since the process began.
func ChunksQueued() int64 { return chunksQueued.Load() }

// HoldSealing takes every sealing slot of the mount, so chunks queued by a
// close wait unsealed until the returned func gives the slots back.
func (m *Mounted) HoldSealing() (release func()) {
	n := cap(m.r.sealSem)
	for range n {
		m.r.sealSem <- struct{}{}
	}
	return func() {
		for range n {
			<-m.r.sealSem
		}
	}
}

// StatAs returns the size the mount replies with for inode in, as a
// caller read it from the index.
func (m *Mounted) StatAs(in *meta.Inode) (size uint64) {
	var out fuse.Attr
	m.r.fillAttr(in, &out)
	return out.Size
}

// Index is the mount's index (tests read what it committed).
func (m *Mounted) Index() *meta.Index { return m.r.idx }

// ReadChunksInOrder opens inode ino as a read-only open(2) does and reads
// whole chunks in the order given, as the kernel's READs of one open file
// reach the mount (several at once, so not always in order), each into its
// own buffer; then it releases the file.
func (m *Mounted) ReadChunksInOrder(ino uint64, order []uint64) ([][]byte, error) {
	r := m.r
	of, err := r.acquire(ino)
	if err != nil {
		return nil, err
	}
	of.mu.Lock()
	of.prefetchOnOpen()
	of.mu.Unlock()
	var out [][]byte
	for _, idx := range order {
		b := make([]byte, r.cs)
		n, err := of.read(b, idx*r.cs)
		if err != nil {
			r.release(of)
			return nil, err
		}
		out = append(out, b[:n])
	}
	return out, r.release(of)
}

// StatfsCalls returns how many times the space guards looked at the free
// space, since the process began.
func StatfsCalls() int64 { return statfsCalls.Load() }

// SetSpaceStale sets how long a look at the free space serves, for the
// test.
func SetSpaceStale(t testing.TB, d time.Duration) {
	old := spaceStale
	spaceStale = d
	t.Cleanup(func() { spaceStale = old })
}

// NameLookups returns how many times a name was looked up in a
// directory's entries (LOOKUP, or READDIRPLUS after a change), since the
// process began.
func NameLookups() int64 { return nameLookups.Load() }

// InodePointReads returns how many inodes directory listings read one by
// one instead of in batches, since the process began.
func InodePointReads() int64 { return inodePointReads.Load() }

// InodeBatchReads returns how many inodes directory listings asked for in
// batches since the process began.
func InodeBatchReads() int64 { return inodeBatchReads.Load() }

// PlusKnown returns how many READDIRPLUS entries were answered without a
// node, the kernel holding them already.
func PlusKnown() int64 { return plusKnown.Load() }

// HoldOpenFile takes open file ino's lock (as a read waiting on the
// network does) until the returned func; ok is false if ino is not open.
func (m *Mounted) HoldOpenFile(ino uint64) (release func(), ok bool) {
	of := m.r.peek(ino)
	if of == nil {
		return nil, false
	}
	of.mu.Lock()
	return of.mu.Unlock, true
}

// ServeWrite writes data at off into open file ino as a WRITE from the
// kernel would, with no system call (the kernel's write-back may send one
// at any moment); ok is false if ino is not open.
func (m *Mounted) ServeWrite(ino uint64, data []byte, off uint64) (ok bool, err error) {
	of := m.r.peek(ino)
	if of == nil {
		return false, nil
	}
	return true, of.write(data, off)
}

// CheckedIndex makes the next Check give its index to the returned func
// (nil if none ran), for its counts of records read once Check returned.
func CheckedIndex(t testing.TB) func() *meta.Index {
	var idx *meta.Index
	checkOpened = func(x *meta.Index) { idx = x }
	t.Cleanup(func() { checkOpened = nil })
	return func() *meta.Index { return idx }
}

// MtimeAs returns the mtime the mount replies with for inode in, as a
// caller read it from the index.
func (m *Mounted) MtimeAs(in *meta.Inode) int64 {
	var out fuse.Attr
	m.r.fillAttr(in, &out)
	return int64(out.Mtime)*1e9 + int64(out.Mtimensec)
}

// KnownMissing reports whether a create of name in directory parent would
// take the last LOOKUP's miss instead of looking the name up.
func (m *Mounted) KnownMissing(parent uint64, name string) bool {
	m.r.mu.Lock()
	defer m.r.mu.Unlock()
	return m.r.knownMissing(parent, name)
}

// MissedUsed returns how many creates took a LOOKUP's miss since the
// process began.
func MissedUsed() int64 { return missedUsed.Load() }

// IdleReaders is idleReaders (procs.go): the most goroutines a go-fuse
// server made at GOMAXPROCS procs keeps blocked reading /dev/fuse.
func IdleReaders(procs int) int { return idleReaders(procs) }

// ServingExtraProcs is how many Ps serving mounts have added to GOMAXPROCS
// (procs.go): an unmounted server gives its own back once its serve loop
// has returned, a moment after the unmount.
func ServingExtraProcs() int {
	readerProcs.Lock()
	defer readerProcs.Unlock()
	return readerProcs.extra
}

// KernelInodes is how many inodes of the tree the mount holds for the
// kernel (inodecap.go).
func (m *Mounted) KernelInodes() int64 { return m.r.inodes.live() }

// PrunedInodes is how many inodes the mount has asked the kernel to forget.
func (m *Mounted) PrunedInodes() int64 { return m.r.inodes.pruned.Load() }

// CanPrune reports whether the kernel takes prune notifications.
func (m *Mounted) CanPrune() bool {
	return m.server.KernelSettings().SupportsNotify(fuse.NOTIFY_PRUNE)
}
