package fs

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/fincrypt/fincrypt/chunkstore"
	"github.com/fincrypt/fincrypt/internal/readwin"
	"github.com/fincrypt/fincrypt/meta"
	"github.com/fincrypt/fincrypt/vault"
)

// errChunk reports a chunk that failed authentication or is missing; it
// reads as EIO.
var errChunk = errors.New("chunk unreadable")

// openFile is the data state of a regular file while any handle on it is
// open (or a truncate runs). All handles of one inode share it, so every
// process sees the same bytes. It buffers dirty chunks and caches the last
// chunk read; the index stays the authority for everything else.
type openFile struct {
	r   *fsys
	ino uint64

	refs     int  // guarded by r.openMu
	unlinked bool // its last link went while open; guarded by r.openMu

	mu         sync.Mutex
	size       uint64            // authoritative while open
	mtime      int64             // valid when dirtyTimes
	dirtyTimes bool              // mtime/ctime changed by a write, not yet in the index
	sizeDirty  bool              // size differs from the index
	attr       fileAttr          // valid when attrDirty
	attrDirty  bool              // a chmod, chown or utimens not yet in the index (Setattr)
	dirty      map[uint64][]byte // chunk index -> plaintext (len = valid bytes)
	cacheIdx   uint64
	cache      []byte // plaintext of chunk cacheIdx when cacheOK
	cacheOK    bool
	nextLoad   uint64      // index after the furthest chunk a sequential reader read
	ahead      uint64      // first chunk the reader's window has not loaded yet
	runStart   uint64      // first chunk of the sequential reader's current run
	pf         []*prefetch // chunks being loaded ahead, in index order

	// Full chunks are sealed and stored by a background worker, so the
	// FUSE write that filled a chunk returns at once and the next chunk's
	// data arrives while this one is sealed. Queued buffers are immutable
	// and stay readable through inflight until committed.
	cond     *sync.Cond // on mu; signals queue progress
	queue    []job
	inflight map[uint64][]byte // newest queued buffer per chunk index
	newest   map[uint64]uint64 // sequence number of that newest job
	seq      uint64            // jobs queued so far
	running  bool
	asyncErr error // first failure of the worker, reported by the next call

	unsynced []meta.ChunkID // chunks committed since the last fsync

	// touched is set by every change that leaves something outside the
	// index (write, truncate) and cleared by unsavedOpenFiles when it sees
	// the file holding nothing unsaved: a file it finds busy (of.mu held by
	// a read from the network) counts as unsaved while touched.
	// timesCommitted: times of its writes were committed while open
	// (fillAttr then reads them from the index, not from a caller's
	// inode that may predate that commit); guarded by mu.
	timesCommitted bool

	touched   atomic.Bool
	touchedAt time.Time // the first change since last seen clean; zero: none seen (guarded by mu)

	// seen is what the file held outside the index when mu was last let
	// go (unlock, wait): the count of a status that finds mu held (a read
	// waiting on the network, a release waiting for its chunks) without
	// waiting for it. Guarded by seenMu, which is only ever held to copy it.
	seenMu sync.Mutex
	seen   unsavedCount
}

// unsavedCount is what an open file holds outside the index: chunks
// written and not yet committed, their bytes, and whether anything at all
// (those, a size or times) is.
type unsavedCount struct {
	chunks int
	bytes  uint64
	any    bool
}

// fileAttr is what a SETATTR on an open file changed and has not committed
// yet: the file's mode, owner and times as that SETATTR left them. The
// file's next commit (release, fsync, sync, the sealing worker's, an old
// write's) writes them with its size and times, in the same batch; a write
// after the SETATTR sets the times again (dirtyTimes, applied after these).
type fileAttr struct {
	mode, uid, gid      uint32
	atime, mtime, ctime int64
}

func (a *fileAttr) from(n *meta.Inode) {
	*a = fileAttr{mode: n.Mode, uid: n.Uid, gid: n.Gid, atime: n.Atime, mtime: n.Mtime, ctime: n.Ctime}
}

// applyTo sets a's fields in n. A ctime the index holds that is later (a
// link, unlink or rename of the file since) is kept.
func (a *fileAttr) applyTo(n *meta.Inode) {
	n.Mode = n.Mode&syscall.S_IFMT | a.mode&^syscall.S_IFMT
	n.Uid, n.Gid = a.uid, a.gid
	n.Atime, n.Mtime = a.atime, a.mtime
	n.Ctime = max(n.Ctime, a.ctime)
}

// metaDirty reports whether the file's size, times or attributes differ
// from the index; caller holds of.mu.
func (of *openFile) metaDirty() bool { return of.sizeDirty || of.dirtyTimes || of.attrDirty }

// job is a full chunk queued for sealing. Jobs are sealed in parallel (up
// to sealParallel per mount) but committed in queue order, so a newer
// version of a chunk always wins.
type job struct {
	idx uint64
	seq uint64
	buf []byte
	res chan sealResult
}

type sealResult struct {
	s   sealed
	err error
}

// maxQueue bounds the chunks queued for sealing per file.
const maxQueue = 4

// acquire returns the shared state of inode ino, loading it on first use.
func (r *fsys) acquire(ino uint64) (*openFile, error) {
	r.openMu.Lock()
	if of := r.open[ino]; of != nil {
		of.refs++
		r.openMu.Unlock()
		return of, nil
	}
	r.openMu.Unlock()
	n, err := r.idx.GetInode(ino)
	if err != nil {
		return nil, err
	}
	if n.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return nil, syscall.EINVAL
	}
	r.openMu.Lock()
	defer r.openMu.Unlock()
	if of := r.open[ino]; of != nil { // raced with another acquire
		of.refs++
		return of, nil
	}
	return r.addOpenLocked(&n), nil
}

// openNew returns the state of regular file n, which the caller has just
// created and holds r.mu for: no other operation can have opened it yet, so
// its record need not be read back.
func (r *fsys) openNew(n *meta.Inode) *openFile {
	r.openMu.Lock()
	defer r.openMu.Unlock()
	if of := r.open[n.Ino]; of != nil { // cannot happen: inode numbers are never reused
		of.refs++
		return of
	}
	return r.addOpenLocked(n)
}

// addOpenLocked registers a fresh open state with one reference for inode
// n; caller holds r.openMu.
func (r *fsys) addOpenLocked(n *meta.Inode) *openFile {
	of := &openFile{r: r, ino: n.Ino, refs: 1, size: n.Size, dirty: map[uint64][]byte{},
		inflight: map[uint64][]byte{}, newest: map[uint64]uint64{}}
	of.cond = sync.NewCond(&of.mu)
	r.open[n.Ino] = of
	return of
}

// markUnlinked notes that inode ino lost its last link; if it is open, its
// last release purges it. It reports whether ino is open. Caller holds r.mu.
func (r *fsys) markUnlinked(ino uint64) bool {
	r.openMu.Lock()
	defer r.openMu.Unlock()
	of := r.open[ino]
	if of != nil {
		of.unlinked = true
	}
	return of != nil
}

// peek returns the open state of ino, if any, without taking a reference.
func (r *fsys) peek(ino uint64) *openFile {
	r.openMu.Lock()
	defer r.openMu.Unlock()
	return r.open[ino]
}

// releaseGrace is how long after a file's last release fillAttr reads its
// inode again. The release commits the file's size, then the file leaves
// the open files; a reply whose inode was read before that commit and
// whose open-file check came after it would carry the old size, which the
// kernel then keeps for AttrTimeout (an append through a hard link once
// landed at offset 0 this way).
const releaseGrace = 5 * time.Second

// noteReleasedLocked records that ino left the open files now. Caller
// holds r.openMu.
func (r *fsys) noteReleasedLocked(ino uint64) {
	now := time.Now()
	if r.released == nil {
		r.released = map[uint64]time.Time{}
	}
	if now.Sub(r.prunedAt) > releaseGrace {
		for i, t := range r.released {
			if now.Sub(t) > releaseGrace {
				delete(r.released, i)
			}
		}
		r.prunedAt = now
	}
	r.released[ino] = now
}

// peekRecent is peek, and for a file not open whether it left the open
// files within releaseGrace.
func (r *fsys) peekRecent(ino uint64) (of *openFile, recent bool) {
	r.openMu.Lock()
	defer r.openMu.Unlock()
	if of := r.open[ino]; of != nil {
		return of, false
	}
	t, ok := r.released[ino]
	return nil, ok && time.Since(t) <= releaseGrace
}

func (r *fsys) isOpen(ino uint64) bool { return r.peek(ino) != nil }

// release drops a reference; the last one flushes the file, frees its
// buffers and purges the inode if it was unlinked meanwhile. Other
// references keep the unsaved data (and any pending error) for their own
// flush, fsync or release.
func (r *fsys) release(of *openFile) error {
	of.mu.Lock()
	r.openMu.Lock()
	if of.refs > 1 {
		of.refs--
		r.openMu.Unlock()
		of.unlock()
		return nil
	}
	r.openMu.Unlock()
	var err error
	if of.sealInline() {
		// One small chunk and nothing queued (a small file written and
		// closed), and a sealing slot free: sealed, stored and committed
		// with the size and times right here, in one batch. Handing it to
		// the sealing worker cost two goroutines and their wake-ups for a
		// seal of a few microseconds.
		err = of.flushLocked()
		<-r.sealSem
	} else {
		// What a FLUSH did first (a new file's handle has none, Create):
		// queue the dirty chunks for the sealing worker, so that the wait
		// below releases of.mu while they are sealed, as it did after a
		// FLUSH.
		aerr := of.flushAsyncLocked()
		err = of.flushLocked() // may wait, releasing of.mu: another acquire may come
		if err == nil {
			err = aerr
		}
	}
	r.openMu.Lock()
	of.refs--
	last := of.refs == 0
	unlinked := of.unlinked
	if last {
		delete(r.open, of.ino)
		r.noteReleasedLocked(of.ino)
	}
	r.openMu.Unlock()
	if last {
		for idx, b := range of.dirty { // only after a failed flush
			r.putBuf(b)
			delete(of.dirty, idx)
		}
		if of.cache != nil {
			r.putBuf(of.cache)
			of.cache, of.cacheOK = nil, false
		}
		// Loads ahead nobody read (a file opened and closed unread) end
		// before the handle does, so none outlives the mount's index.
		for _, pf := range of.pf {
			<-pf.done
			r.putBuf(pf.buf)
		}
		of.pf = nil
	}
	of.unlock()
	if last && unlinked {
		if perr := r.purgeIfUnlinked(of.ino); err == nil {
			err = perr
		}
	}
	return err
}

// purgeIfUnlinked removes inode ino if it has no links and is not open.
func (r *fsys) purgeIfUnlinked(ino uint64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	n, err := r.idx.GetInode(ino)
	if errors.Is(err, meta.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if n.Nlink > 0 || r.isOpen(ino) {
		return nil
	}
	b := r.idx.NewBatch()
	ids, err := r.purgeInode(b, ino)
	if err != nil {
		b.Discard()
		return err
	}
	if err := b.Commit(false); err != nil {
		return err
	}
	r.supersede(ids...)
	return nil
}

func (r *fsys) getBuf() []byte { return (*r.bufs.Get().(*[]byte))[:0] }

// newBuf returns an empty buffer for at least n bytes: a pooled full-chunk
// buffer for large chunks, a small one otherwise, so many open small files
// do not each pin a full chunk of memory. Small buffers are pooled too, by
// power-of-two size from smallBufMin up to cs/4: every small file written
// had cost a fresh buffer (zeroed, then collected), the largest allocation
// of a small file's requests.
func (r *fsys) newBuf(n uint64) []byte {
	if n > r.cs/4 {
		return r.getBuf()
	}
	k := smallClass(n)
	if k < len(r.smallBufs) {
		if b, ok := r.smallBufs[k].Get().(*[]byte); ok {
			return (*b)[:0]
		}
	}
	return make([]byte, 0, smallBufMin<<k)
}

// smallBufMin is the smallest buffer newBuf returns.
const smallBufMin = 4096

// newSmallBufs returns the pools of newBuf's small buffers for chunk size
// cs: one per size class up to cs/4.
func newSmallBufs(cs uint64) []sync.Pool {
	if cs/4 < smallBufMin {
		return nil
	}
	return make([]sync.Pool, smallClass(cs/4)+1)
}

// smallClass is the size class of a small buffer for n bytes: the k with
// smallBufMin<<k the smallest power of two at least max(n, smallBufMin).
func smallClass(n uint64) int {
	if n <= smallBufMin {
		return 0
	}
	return bits.Len64(n-1) - bits.Len64(smallBufMin-1)
}

// bufGrowths counts growBuf's new buffers (tests).
var bufGrowths atomic.Int64

// growBuf returns buf with capacity for at least n bytes (n <= cs).
func (r *fsys) growBuf(buf []byte, n uint64) []byte {
	if uint64(cap(buf)) >= n {
		return buf
	}
	bufGrowths.Add(1)
	nb := append(r.newBuf(min(r.cs, max(n, 2*uint64(cap(buf))))), buf...)
	r.putBuf(buf)
	return nb
}

func (r *fsys) putBuf(b []byte) {
	c := uint64(cap(b))
	if c == r.cs {
		b = b[:0]
		r.bufs.Put(&b)
		return
	}
	// A small buffer goes back to its class if its capacity is exactly
	// the class's size (newBuf's buffers are; others are left to the GC).
	if c < smallBufMin || c > r.cs/4 || c&(c-1) != 0 {
		return
	}
	if k := smallClass(c); k < len(r.smallBufs) {
		b = b[:0]
		r.smallBufs[k].Put(&b)
	}
}

// loadChunk returns the plaintext of chunk idx (nil for a hole), appended
// to dst; runPos is runPos's.
func (of *openFile) loadChunk(idx uint64, dst []byte, runPos uint64) ([]byte, bool, error) {
	ref, ok, err := of.r.idx.GetChunk(of.ino, idx)
	if err != nil || !ok {
		return dst, false, err
	}
	out, err := of.openChunk(idx, ref, dst, runPos)
	return out, err == nil, err
}

// chunkLoads counts openChunk's calls and chunkOpens the AEAD opens they
// made (tests: a chunk fetched from the network is opened once).
var chunkLoads, chunkOpens atomic.Int64

// runPos is how far into the reader's sequential run chunk idx lies, in
// bytes: the chunk store keeps a chunk it fetches for a reader streaming
// through a large file only on a second read (chunkstore.Admission), so
// that reading a big file once does not push the rest of the cache out.
// Caller holds of.mu.
func (of *openFile) runPos(idx uint64) uint64 {
	if idx < of.runStart {
		return 0
	}
	return (idx - of.runStart) * of.r.cs
}

// openChunk reads the sealed chunk ref of chunk idx and appends its
// plaintext to dst; runPos is runPos's. It touches no field of of that can
// change, so it runs without of.mu.
func (of *openFile) openChunk(idx uint64, ref meta.ChunkRef, dst []byte, runPos uint64) ([]byte, error) {
	r := of.r
	chunkLoads.Add(1)
	sb := r.sealBufs.Get().(*[]byte)
	defer r.sealBufs.Put(sb)
	ad := vault.ChunkAD(of.ino, idx, ref.Version)
	// A chunk fetched from the network is kept only if it opens: a bad copy
	// would otherwise stay in the store and fail every later read. The
	// plaintext that check opens is the read's: the chunk is opened once.
	var opened []byte
	verify := func(sealed []byte) error {
		chunkOpens.Add(1)
		out, err := r.v.Keys.Chunk.Open(dst, sealed, ad)
		if err == nil {
			opened = out
		}
		return err
	}
	sealed, err := r.store.GetVerifyAt(ref.ID, (*sb)[:0], verify, runPos)
	if err != nil {
		return dst, fmt.Errorf("inode %d chunk %d: %w: %w", of.ino, idx, errChunk, err)
	}
	if cap(sealed) <= cap(*sb) {
		*sb = sealed[:0]
	}
	out := opened
	if out == nil {
		chunkOpens.Add(1)
		if out, err = r.v.Keys.Chunk.Open(dst, sealed, ad); err != nil {
			return dst, fmt.Errorf("inode %d chunk %d (%s): %w: %w", of.ino, idx, ref.ID, errChunk, err)
		}
	}
	if uint64(len(out)-len(dst)) != uint64(ref.Len) || uint64(ref.Len) > r.cs {
		return dst, fmt.Errorf("inode %d chunk %d: %d bytes, index says %d: %w", of.ino, idx, len(out)-len(dst), ref.Len, errChunk)
	}
	return out, nil
}

// prefetch is the next chunk of a sequential reader, loaded in the
// background while the reader is served the current one, so that reading a
// chunk file from disk overlaps with opening (decrypting) the one before.
type prefetch struct {
	idx  uint64
	done chan struct{} // closed when the fields below are set
	ref  meta.ChunkRef // the chunk loaded, valid if err is nil
	buf  []byte        // its plaintext (a pooled buffer)
	err  error
	// served counts the bytes read from buf; once it covers the chunk the
	// reader is past it and it leaves the window (guarded by of.mu).
	served uint64
}

// readAhead is how many chunks a sequential reader gets loaded ahead, in
// parallel: reading chunk files from disk and opening them overlap with each
// other and with the reader. It bounds the memory too (readAhead chunks per
// sequential reader, and the reorderChunks before them).
const readAhead = readwin.Ahead

// reorderChunks is how far out of order, in chunks, a sequential reader's
// READs may arrive and still count as sequential, and how far behind the
// furthest chunk read a chunk of the window stays until it has been read
// whole. The kernel has up to readAheadKB of a sequential reader's
// read-ahead in flight, as several requests (1 MiB each, not aligned to
// chunks) that take the file's lock in any order and overtake each other by
// as much (chunk 439 after 445 with 1 MiB chunks): a request for an earlier
// chunk, or for the rest of a chunk another request began, comes late and
// finds it still loaded. So twice that, and never less than twice
// readAhead (256 MiB read back after a restore: 1.6 loads per chunk keeping
// 2 behind, 1.03 keeping 8).
func (r *fsys) reorderChunks() uint64 {
	return readwin.ReorderChunks(r.cs)
}

// near reports whether a read of chunk idx continues a sequential reader
// whose furthest chunk so far is of.nextLoad-1: the next chunk, or one
// within reorderChunks of it either way (READs that arrived out of order).
func (of *openFile) near(idx uint64) bool {
	w := of.r.reorderChunks()
	return idx+w >= of.nextLoad && idx <= of.nextLoad+w
}

// startPrefetch loads chunk idx in the background; caller holds of.mu. The
// window stays in index order.
func (of *openFile) startPrefetch(idx uint64) {
	pf := &prefetch{idx: idx, done: make(chan struct{})}
	i := len(of.pf)
	for i > 0 && of.pf[i-1].idx > idx {
		i--
	}
	of.pf = slices.Insert(of.pf, i, pf)
	runPos := of.runPos(idx)
	if !of.r.loads.start() {
		pf.err = errUnmounting // shutting down: the load that follows reports it
		close(pf.done)
		return
	}
	go func() {
		defer of.r.loads.done()
		defer close(pf.done)
		ref, ok, err := of.r.idx.GetChunk(of.ino, idx)
		if err == nil && !ok {
			err = meta.ErrNotFound // a hole: nothing to load ahead
		}
		if err != nil {
			pf.err = err
			return
		}
		pf.ref = ref
		pf.buf, pf.err = of.openChunk(idx, ref, of.r.getBuf(), runPos)
	}()
}

// bgLoads counts the chunk loads running in the background (a reader's
// window), so that shutdown closes the index and the store only once the
// last has ended: one still reading the index then panicked ("pebble:
// closed") when an unmount came right after a read.
type bgLoads struct {
	mu     sync.Mutex
	idle   sync.Cond // on mu; signalled when n drops to 0
	n      int
	closed bool
}

var errUnmounting = errors.New("file system unmounting")

// start counts a load that is to begin; false once closing.
func (l *bgLoads) start() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.n++
	return true
}

// done ends a load start counted.
func (l *bgLoads) done() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n--; l.n == 0 && l.idle.L != nil {
		l.idle.Broadcast()
	}
}

// closeAndWait starts no more loads and waits for those running.
func (l *bgLoads) closeAndWait() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	l.idle.L = &l.mu
	for l.n > 0 {
		l.idle.Wait()
	}
}

// dropPrefetch forgets the window's chunks before index idx (a reader that
// went past them, or skipped them); their buffers go back to the pool once
// loaded. Caller holds of.mu.
func (of *openFile) dropPrefetch(idx uint64) {
	i := 0
	for i < len(of.pf) && of.pf[i].idx < idx {
		of.freePrefetch(of.pf[i])
		i++
	}
	of.pf = of.pf[i:]
}

// freePrefetch gives pf's buffer back to the pool once it is loaded.
func (of *openFile) freePrefetch(pf *prefetch) {
	select {
	case <-pf.done:
		of.r.putBuf(pf.buf)
	default:
		go func() {
			<-pf.done
			of.r.putBuf(pf.buf)
		}()
	}
}

// takePrefetch returns the plaintext of chunk idx if the window holds it
// (loaded ahead, or read a moment ago) and it is still the chunk the index
// holds; caller holds of.mu (and keeps it while it waits: the loader does
// not need it). The chunk stays in the window, for a request that comes
// late, until the reader's furthest chunk is reorderChunks past it; the
// result is valid while of.mu is held.
func (of *openFile) takePrefetch(idx uint64) ([]byte, bool) {
	w := of.r.reorderChunks()
	of.dropPrefetch(of.nextLoad - min(of.nextLoad, w+1))
	i := slices.IndexFunc(of.pf, func(pf *prefetch) bool { return pf.idx == idx })
	if i < 0 {
		if len(of.pf) > 0 && idx+w < of.pf[0].idx {
			// The reader went back past the window: it is refilled from
			// where it reads, in order, once it is sequential again.
			of.dropPrefetch(math.MaxUint64)
			of.ahead = 0
		}
		return nil, false
	}
	pf := of.pf[i]
	<-pf.done
	if pf.err == nil {
		// Dirty and queued chunks are served before this is asked for, so
		// the index is the authority: the chunk must not have been
		// replaced (by a commit or a truncate) since it was loaded.
		ref, ok, err := of.r.idx.GetChunk(of.ino, idx)
		if err == nil && ok && ref == pf.ref {
			return pf.buf, true
		}
	}
	// A failure is reported by the load that follows.
	of.pf = slices.Delete(of.pf, i, i+1)
	of.r.putBuf(pf.buf)
	return nil, false
}

// servedPrefetch notes that n bytes of chunk idx were read from the window
// (data is what takePrefetch returned); a chunk read whole leaves it, its
// buffer back in the pool. Caller holds of.mu.
func (of *openFile) servedPrefetch(idx uint64, data []byte, n uint64) {
	i := slices.IndexFunc(of.pf, func(pf *prefetch) bool { return pf.idx == idx })
	if i < 0 || len(data) == 0 {
		return
	}
	pf := of.pf[i]
	select {
	case <-pf.done:
	default:
		return // still loading: data came from elsewhere (a load of its own)
	}
	if len(pf.buf) == 0 || &pf.buf[0] != &data[0] {
		return // not from the window
	}
	if pf.served += n; pf.served >= uint64(len(pf.buf)) {
		of.pf = slices.Delete(of.pf, i, i+1)
		of.r.putBuf(pf.buf)
	}
}

// chunkData returns chunk idx's current plaintext (dirty, cached or loaded);
// nil means a hole. The result is valid while of.mu is held. A reader that
// goes from one chunk to the next gets the chunks after loaded ahead.
func (of *openFile) chunkData(idx uint64) ([]byte, error) {
	if b, ok := of.dirty[idx]; ok {
		return b, nil
	}
	if b, ok := of.inflight[idx]; ok {
		return b, nil
	}
	if of.cacheOK && of.cacheIdx == idx {
		return of.cache, nil
	}
	// A reader is sequential when it reads the chunk after the furthest
	// one it read, and stays so while each chunk it reads is near that one
	// and its window loads: behind (a request that came late), or ahead
	// (one that came early).
	sequential := idx == of.nextLoad || (len(of.pf) > 0 && of.near(idx))
	if !sequential {
		of.ahead = idx + 1 // a new run: its window starts after idx
		if !of.near(idx) {
			// A jump, not a late request of the run: the chunk store
			// keeps the start of a run at once (runPos).
			of.runStart = idx
		}
	}
	if !sequential || idx >= of.nextLoad {
		of.nextLoad = idx + 1
	}
	if b, ok := of.takePrefetch(idx); ok {
		of.prefetchAfter(of.nextLoad - 1)
		return b, nil
	}
	if sequential {
		of.prefetchAfter(of.nextLoad - 1)
	}
	of.cacheOK = false
	b, ok, err := of.loadChunk(idx, of.cache[:0], of.runPos(idx)) // grows the buffer as needed
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, nil
	}
	of.cache, of.cacheIdx, of.cacheOK = b, idx, true
	return b, nil
}

// prefetchOnOpen starts loading the first chunk for a reader that has just
// opened the file, unless it is already at hand (buffered, queued, cached or
// loading); caller holds of.mu.
func (of *openFile) prefetchOnOpen() {
	if of.nextLoad != 0 || (of.cacheOK && of.cacheIdx == 0) {
		return
	}
	of.maybePrefetch(0)
}

// prefetchAfter keeps the readAhead chunks after idx loading. A chunk the
// window loaded once in this run is not loaded again (it was read whole and
// left the window, or is in it): a request that comes late starts nothing.
func (of *openFile) prefetchAfter(idx uint64) {
	for i := max(idx+1, of.ahead); i <= idx+readAhead; i++ {
		of.maybePrefetch(i)
	}
	of.ahead = max(of.ahead, idx+readAhead+1)
}

// maybePrefetch starts loading chunk idx ahead if it lies within the file
// and is neither buffered nor queued nor already being loaded.
func (of *openFile) maybePrefetch(idx uint64) {
	if idx*of.r.cs >= of.size {
		return
	}
	for _, pf := range of.pf {
		if pf.idx == idx {
			return
		}
	}
	if _, ok := of.dirty[idx]; ok {
		return
	}
	if _, ok := of.inflight[idx]; ok {
		return
	}
	if of.cacheOK && of.cacheIdx == idx {
		return
	}
	of.startPrefetch(idx)
}

// read fills dest from offset off and returns the byte count.
func (of *openFile) read(dest []byte, off uint64) (int, error) {
	of.mu.Lock()
	defer of.mu.Unlock()
	if off >= of.size {
		return 0, nil
	}
	n := min(uint64(len(dest)), of.size-off)
	done := uint64(0)
	for _, s := range spans(off, n, of.r.cs) {
		out := dest[done : done+s.n]
		data, err := of.chunkData(s.idx)
		if err != nil {
			return 0, err
		}
		c := 0
		if s.within < uint64(len(data)) {
			c = copy(out, data[s.within:])
		}
		clear(out[c:])
		of.servedPrefetch(s.idx, data, uint64(c))
		done += s.n
	}
	return int(n), nil
}

// write stores data at offset off.
func (of *openFile) write(data []byte, off uint64) error {
	of.mu.Lock()
	defer of.unlock()
	of.touch()
	if err := of.takeAsyncErr(); err != nil {
		return err
	}
	r := of.r
	cs := r.cs
	pos := uint64(0)
	for _, s := range spans(off, uint64(len(data)), cs) {
		buf, ok := of.dirty[s.idx]
		if !ok {
			if (s.within == 0 && s.n == cs) || (s.within == 0 && s.idx > 0 && s.idx*cs == of.size) {
				// A whole chunk, or the next chunk of a file already a
				// chunk long written on from its very end, which a writer
				// appending will fill: a full-chunk buffer at once, not
				// one doubled (and copied) from 4 KiB as for a small file
				// or a write far past the end.
				buf = r.getBuf()
			} else {
				var err error
				buf, err = of.loadForWrite(s.idx)
				if err != nil {
					return err
				}
			}
		}
		end := s.within + s.n
		if l := uint64(len(buf)); l < end {
			buf = r.growBuf(buf, end)[:end]
			if l < s.within {
				clear(buf[l:s.within])
			}
		}
		copy(buf[s.within:end], data[pos:pos+s.n])
		of.dirty[s.idx] = buf
		if of.cacheOK && of.cacheIdx == s.idx {
			of.cacheOK = false
		}
		pos += s.n
		if e := s.idx*cs + end; e > of.size {
			of.size, of.sizeDirty = e, true
		}
		if !r.opt.WritebackCache {
			// With the write-back cache the kernel owns the times
			// (writeback.go): it sends those of the write(2) as a
			// SETATTR, and this WRITE may come after it.
			of.mtime, of.dirtyTimes = time.Now().UnixNano(), true
		}
		if end == cs {
			// The chunk is full: hand it to the sealing worker.
			delete(of.dirty, s.idx)
			of.enqueue(s.idx, buf)
		}
	}
	if len(of.dirty) > r.opt.MaxDirtyChunks {
		return of.flushDirty()
	}
	return nil
}

// touch notes a change that leaves something outside the index; caller
// holds of.mu.
func (of *openFile) touch() {
	of.touched.Store(true)
	if of.touchedAt.IsZero() {
		of.touchedAt = time.Now()
	}
}

// countLocked returns what the file holds outside the index (a chunk
// queued and written again counts once, at its newest size). Caller holds
// of.mu.
func (of *openFile) countLocked() unsavedCount {
	var c unsavedCount
	c.chunks = len(of.dirty)
	for _, b := range of.dirty {
		c.bytes += uint64(len(b))
	}
	for idx, b := range of.inflight {
		if _, again := of.dirty[idx]; !again {
			c.chunks++
			c.bytes += uint64(len(b))
		}
	}
	c.any = c.chunks > 0 || of.metaDirty()
	return c
}

// unsavedLocked is countLocked, and marks a file holding nothing clean
// (touched). Caller holds of.mu.
func (of *openFile) unsavedLocked() unsavedCount {
	c := of.countLocked()
	if !c.any {
		of.touched.Store(false)
		of.touchedAt = time.Time{}
	}
	return c
}

// publishLocked records what the file holds now as seen, for a count that
// finds of.mu held. Caller holds of.mu and is about to let it go.
func (of *openFile) publishLocked() {
	c := of.countLocked()
	of.seenMu.Lock()
	of.seen = c
	of.seenMu.Unlock()
}

// lastSeen returns what the file held when of.mu was last let go; it does
// not need of.mu.
func (of *openFile) lastSeen() unsavedCount {
	of.seenMu.Lock()
	defer of.seenMu.Unlock()
	return of.seen
}

// unlock lets of.mu go after publishing what the file holds (seen). Every
// holder of of.mu that may have changed what is outside the index lets it
// go this way, or through wait.
func (of *openFile) unlock() {
	of.publishLocked()
	of.mu.Unlock()
}

// wait is of.cond.Wait, publishing first what the file holds: mu is let go
// while it waits.
func (of *openFile) wait() {
	of.publishLocked()
	of.cond.Wait()
}

// chunksQueued counts the chunks handed to a sealing worker (tests: a
// small file's release seals its chunk itself).
var chunksQueued atomic.Int64

// enqueue queues a full chunk for sealing; caller holds of.mu. It waits
// while the queue is full.
func (of *openFile) enqueue(idx uint64, buf []byte) {
	chunksQueued.Add(1)
	of.seq++
	j := job{idx: idx, seq: of.seq, buf: buf, res: make(chan sealResult, 1)}
	pt := buf[:min(uint64(len(buf)), chunkLimit(idx, of.size, of.r.cs))]
	go func() {
		of.r.sealSem <- struct{}{}
		s, err := of.sealOne(idx, pt)
		<-of.r.sealSem
		j.res <- sealResult{s, err}
	}()
	of.queue = append(of.queue, j)
	of.inflight[idx] = buf
	of.newest[idx] = j.seq
	if of.cacheOK && of.cacheIdx == idx {
		of.cacheOK = false
	}
	if !of.running {
		of.running = true
		go of.worker()
	}
	for len(of.queue) > maxQueue {
		of.wait()
	}
}

// worker commits queued chunks in queue order as their sealing finishes,
// without holding of.mu while it waits.
func (of *openFile) worker() {
	r := of.r
	of.mu.Lock()
	defer of.unlock()
	for len(of.queue) > 0 {
		j := of.queue[0]
		of.unlock()
		res := <-j.res
		done, err := res.s, res.err
		of.mu.Lock()
		if err == nil {
			var old []meta.ChunkID
			old, err = of.commit([]sealed{done}, nil)
			if err != nil {
				r.discard(done.ref.ID)
			} else {
				r.supersede(old...)
			}
		}
		of.queue = of.queue[1:]
		isLatest := of.newest[j.idx] == j.seq
		if isLatest {
			delete(of.inflight, j.idx)
			delete(of.newest, j.idx)
		}
		switch {
		case err != nil:
			if of.asyncErr == nil {
				of.asyncErr = err
			}
			// Keep the data: a later flush retries it, unless newer data exists.
			if _, newer := of.dirty[j.idx]; !newer && isLatest {
				of.dirty[j.idx] = j.buf
			} else {
				r.putBuf(j.buf)
			}
		case isLatest && !(of.cacheOK && of.cacheIdx == j.idx):
			if of.cache != nil {
				r.putBuf(of.cache)
			}
			of.cache, of.cacheIdx, of.cacheOK = j.buf[:done.ref.Len], j.idx, true
		default:
			r.putBuf(j.buf)
		}
		of.cond.Broadcast()
	}
	of.running = false
	of.cond.Broadcast()
}

// drainLocked waits until the worker has committed every queued chunk.
func (of *openFile) drainLocked() {
	for of.running || len(of.queue) > 0 {
		of.wait()
	}
}

// takeAsyncErr returns and clears the worker's first failure.
func (of *openFile) takeAsyncErr() error {
	err := of.asyncErr
	of.asyncErr = nil
	return err
}

// loadForWrite returns a writable copy of chunk idx's current plaintext.
func (of *openFile) loadForWrite(idx uint64) ([]byte, error) {
	if b, ok := of.inflight[idx]; ok {
		return append(of.r.newBuf(uint64(len(b))), b...), nil
	}
	if of.cacheOK && of.cacheIdx == idx {
		return append(of.r.newBuf(uint64(len(of.cache))), of.cache...), nil
	}
	if idx*of.r.cs >= of.size {
		// The chunk starts at or past the end: the index holds nothing
		// there (truncation drops such chunks), so there is nothing to
		// read. This spares a lookup for every new file's first write.
		return nil, nil
	}
	b, _, err := of.loadChunk(idx, nil, 0)
	return b, err
}

// flushDirty seals every dirty chunk.
func (of *openFile) flushDirty() error {
	if len(of.dirty) == 0 {
		return nil
	}
	idxs := make([]uint64, 0, len(of.dirty))
	for idx := range of.dirty {
		idxs = append(idxs, idx)
	}
	return of.flushChunks(idxs)
}

// sealed is a chunk sealed and written to the store, not yet in the index.
type sealed struct {
	idx uint64
	ref meta.ChunkRef
}

// sealChunks seals and stores the given dirty chunks, in parallel when there
// are several.
func (of *openFile) sealChunks(idxs []uint64) ([]sealed, error) {
	r := of.r
	out := make([]sealed, len(idxs))
	errs := make([]error, len(idxs))
	pts := make([][]byte, len(idxs))
	for i, idx := range idxs {
		pts[i] = of.dirty[idx]
		if lim := chunkLimit(idx, of.size, r.cs); uint64(len(pts[i])) > lim {
			pts[i] = pts[i][:lim]
		}
	}
	one := func(i int) { out[i], errs[i] = of.sealOne(idxs[i], pts[i]) }
	if len(idxs) == 1 {
		one(0)
	} else {
		var wg sync.WaitGroup
		sem := make(chan struct{}, 4)
		for i := range idxs {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				one(i)
				<-sem
			}()
		}
		wg.Wait()
	}
	if err := errors.Join(errs...); err != nil {
		for _, s := range out {
			if s.ref.Version != 0 {
				r.discard(s.ref.ID)
			}
		}
		return nil, err
	}
	return out, nil
}

// sealOne seals plaintext pt as chunk idx under a fresh version and id and
// writes it to the store. It does not touch of's fields, so it runs without
// of.mu.
func (of *openFile) sealOne(idx uint64, pt []byte) (sealed, error) {
	r := of.r
	ver, err := r.idx.NextVersion()
	if err != nil {
		return sealed{}, err
	}
	id := chunkstore.NewID()
	sb := r.sealBufs.Get().(*[]byte)
	ct := r.v.Keys.Chunk.Seal((*sb)[:0], pt, vault.ChunkAD(of.ino, idx, ver))
	err = r.store.Put(id, ct)
	if cap(ct) <= cap(*sb) {
		*sb = ct[:0]
	}
	r.sealBufs.Put(sb)
	if err != nil {
		r.owe.Store(true) // a partly written chunk may be left
		return sealed{}, fmt.Errorf("inode %d chunk %d: %w", of.ino, idx, err)
	}
	return sealed{idx: idx, ref: meta.ChunkRef{ID: id, Version: ver, Len: uint32(len(pt))}}, nil
}

// flushChunks seals the given dirty chunks and commits them, with the
// file's size and times, in one index batch.
func (of *openFile) flushChunks(idxs []uint64) error {
	r := of.r
	done, err := of.sealChunks(idxs)
	if err != nil {
		return err
	}
	old, err := of.commit(done, nil)
	if err != nil {
		for _, s := range done {
			r.discard(s.ref.ID)
		}
		return err
	}
	r.supersede(old...)
	for i, d := range done {
		buf := of.dirty[d.idx]
		delete(of.dirty, d.idx)
		if i < len(done)-1 {
			r.putBuf(buf)
			continue
		}
		// Keep the last sealed chunk as the read cache.
		if of.cache != nil {
			r.putBuf(of.cache)
		}
		of.cache, of.cacheIdx, of.cacheOK = buf[:d.ref.Len], d.idx, true
	}
	return nil
}

// commit writes chunk references, removes the chunks in drop, and persists
// the file's size and times, in one batch; it returns the chunk ids no longer
// referenced, to be superseded.
func (of *openFile) commit(done []sealed, drop func(b *meta.Batch) ([]meta.ChunkID, error)) ([]meta.ChunkID, error) {
	r := of.r
	r.mu.Lock()
	defer r.mu.Unlock()
	n, err := r.idx.GetInode(of.ino)
	if err != nil {
		return nil, err
	}
	b := r.idx.NewBatch()
	var old []meta.ChunkID
	for _, s := range done {
		// Every sealed chunk has a fresh id (sealOne): it has no location
		// to look up.
		if s.idx*r.cs >= n.Size {
			// Past the indexed end the index holds no chunk (a truncate
			// drops them in the batch that shrinks the size, and a chunk
			// is committed with a size that covers it), and r.mu keeps
			// any from being committed: a new file's chunks need no
			// look-up.
			b.PutNewChunk(of.ino, s.idx, &s.ref, true)
			continue
		}
		prev, ok, err := r.idx.GetChunk(of.ino, s.idx)
		if err != nil {
			b.Discard()
			return nil, err
		}
		if ok {
			old = append(old, prev.ID)
		}
		b.PutNewChunk(of.ino, s.idx, &s.ref, false)
	}
	if drop != nil {
		ids, err := drop(b)
		if err != nil {
			b.Discard()
			return nil, err
		}
		old = append(old, ids...)
	}
	if of.attrDirty {
		of.attr.applyTo(&n)
		of.timesCommitted = true
	}
	n.Size = of.size
	if of.dirtyTimes {
		n.Mtime, n.Ctime = of.mtime, of.mtime
		of.timesCommitted = true
	}
	b.PutInode(&n)
	if err := b.Commit(false); err != nil {
		return nil, err
	}
	of.dirtyTimes, of.sizeDirty, of.attrDirty = false, false, false
	for _, s := range done {
		of.unsynced = append(of.unsynced, s.ref.ID)
	}
	return old, nil
}

// flushLocked seals every dirty chunk and persists size and times.
func (of *openFile) flushLocked() error {
	of.drainLocked()
	if err := of.takeAsyncErr(); err != nil {
		return err
	}
	if err := of.flushDirty(); err != nil {
		return err
	}
	if of.metaDirty() {
		old, err := of.commit(nil, nil)
		if err != nil {
			return err
		}
		of.r.supersede(old...)
	}
	return nil
}

// inlineSealMax is the most a last release seals and stores itself, rather
// than through the sealing worker (sealInline).
const inlineSealMax = 64 << 10

// sealInline reports whether what the file holds unsealed is at most one
// chunk of at most inlineSealMax bytes, with nothing queued for the worker,
// and takes a sealing slot (r.sealSem) if one is free now: its release then
// seals it without the worker and gives the slot back. When every slot is
// taken (other files sealing), the release queues its chunk and waits
// without of.mu, as before. Caller holds of.mu.
func (of *openFile) sealInline() bool {
	if of.running || len(of.queue) > 0 || len(of.dirty) > 1 {
		return false
	}
	for _, b := range of.dirty {
		if len(b) > inlineSealMax {
			return false
		}
	}
	select {
	case of.r.sealSem <- struct{}{}:
		return true
	default:
		return false
	}
}

// flushAsyncLocked queues every dirty chunk for the sealing worker.
func (of *openFile) flushAsyncLocked() error {
	if err := of.takeAsyncErr(); err != nil {
		return err
	}
	idxs := make([]uint64, 0, len(of.dirty))
	for idx := range of.dirty {
		idxs = append(idxs, idx)
	}
	for _, idx := range idxs {
		if buf, ok := of.dirty[idx]; ok { // enqueue may wait, releasing of.mu
			delete(of.dirty, idx)
			of.enqueue(idx, buf)
		}
	}
	if len(of.queue) == 0 && of.metaDirty() {
		old, err := of.commit(nil, nil)
		if err != nil {
			return err
		}
		of.r.supersede(old...)
	}
	return nil
}

// fsync makes the file's data and metadata, and every index commit before,
// durable: the file's new chunks first, then the index.
func (of *openFile) fsync() error {
	of.mu.Lock()
	err := of.flushLocked()
	ids := of.unsynced
	of.unsynced = nil
	of.unlock()
	if err != nil {
		return err
	}
	if err := of.r.store.SyncIDs(ids); err != nil {
		of.mu.Lock()
		of.unsynced = append(of.unsynced, ids...)
		of.unlock()
		return err
	}
	return of.r.syncIndex()
}

// truncate sets the file's size; caller holds of.mu.
func (of *openFile) truncateLocked(size uint64) error {
	of.touch()
	r := of.r
	cs := r.cs
	of.drainLocked()
	if err := of.takeAsyncErr(); err != nil {
		return err
	}
	if size >= of.size {
		if size > of.size {
			of.size, of.sizeDirty = size, true
		}
		of.mtime, of.dirtyTimes = time.Now().UnixNano(), true
		return of.flushLocked()
	}
	p := planTruncate(size, cs)
	for idx, b := range of.dirty {
		if idx >= p.dropFrom {
			r.putBuf(b)
			delete(of.dirty, idx)
		}
	}
	of.cacheOK = false
	// The chunk that holds the new end is resealed now, trimmed, so no stale
	// byte past the end survives (it would reappear if the file grew again).
	var done []sealed
	reseal := false
	if p.keepLen > 0 {
		buf, ok := of.dirty[p.keepIdx]
		if !ok {
			ref, has, err := r.idx.GetChunk(of.ino, p.keepIdx)
			if err != nil {
				return err
			}
			if has && uint64(ref.Len) > p.keepLen {
				if buf, err = of.loadForWrite(p.keepIdx); err != nil {
					return err
				}
				ok = true
			}
		}
		if ok {
			if uint64(len(buf)) > p.keepLen {
				clear(buf[p.keepLen:])
				buf = buf[:p.keepLen]
			}
			of.dirty[p.keepIdx] = buf
			reseal = true
		}
	}
	of.size, of.sizeDirty = size, true
	of.mtime, of.dirtyTimes = time.Now().UnixNano(), true
	if reseal {
		var err error
		if done, err = of.sealChunks([]uint64{p.keepIdx}); err != nil {
			return err
		}
	}
	old, err := of.commit(done, func(b *meta.Batch) ([]meta.ChunkID, error) {
		var ids []meta.ChunkID
		err := r.idx.Chunks(of.ino, p.dropFrom, func(idx uint64, ref meta.ChunkRef) error {
			b.DeleteChunk(of.ino, idx)
			ids = append(ids, ref.ID)
			return nil
		})
		return ids, err
	})
	if err != nil {
		for _, s := range done {
			r.discard(s.ref.ID)
		}
		return err
	}
	r.supersede(old...)
	if reseal {
		r.putBuf(of.dirty[p.keepIdx])
		delete(of.dirty, p.keepIdx)
	}
	return nil
}

// fileHandle is one open(2) of a regular file.
type fileHandle struct {
	of    *openFile
	flags uint32
	once  sync.Once
}

func (f *fileHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	n, err := f.of.read(dest, uint64(off))
	if err != nil {
		return nil, f.of.r.errno("read", err)
	}
	return fuse.ReadResultData(dest[:n]), 0
}

func (f *fileHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if e := f.of.r.space.room(writeCharge(uint64(off), uint64(len(data)), f.of.r.cs)); e != 0 {
		return 0, e
	}
	if err := f.of.write(data, uint64(off)); err != nil {
		return 0, f.of.r.errno("write", err)
	}
	return uint32(len(data)), 0
}

// Flush runs on every close(2). It queues the dirty chunks for sealing and
// returns, so a program writing many small files does not wait for each
// chunk file; a sealing or storage error (a full disk) is returned by the
// next write, flush, fsync or truncate of the file, and fsync waits for all.
func (f *fileHandle) Flush(ctx context.Context) syscall.Errno {
	f.of.mu.Lock()
	err := f.of.flushAsyncLocked()
	f.of.unlock()
	return f.of.r.errno("flush", err)
}

func (f *fileHandle) Release(ctx context.Context) syscall.Errno {
	var err error
	f.once.Do(func() { err = f.of.r.release(f.of) })
	return f.of.r.errno("release", err)
}

func (f *fileHandle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	return f.of.r.errno("fsync", f.of.fsync())
}

var _ gofs.FileHandle = (*fileHandle)(nil)

// discard deletes a chunk that an operation which failed had stored; if
// that fails too, the next mount collects it.
func (r *fsys) discard(id meta.ChunkID) {
	if err := r.store.Delete(id); err != nil {
		r.owe.Store(true)
	}
}
