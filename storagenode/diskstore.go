package storagenode

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/fincrypt/fincrypt/internal/fsutil"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/fincrypt/fincrypt/challenge"
	"github.com/fincrypt/fincrypt/internal/pebblesched"
	fnet "github.com/fincrypt/fincrypt/net"
)

// On-disk layout (docs/FORMAT.md §4).
const (
	piecesDir     = "pieces"
	tmpDir        = "tmp"
	indexDir      = "index"
	quarantineDir = "quarantine"

	pieceMagic      = "FCPIECE\x00"
	pieceVersion    = 1
	pieceHeaderSize = 64
	pieceExt        = ".piece"

	indexVersion   = 1
	indexValueSize = 1 + 8 + 8 + 8 + 32
	indexPrefix    = 'p'
	// releasePrefix keys the time a piece was deleted (u64 unix nanos),
	// kept for ReleaseWindow so that a put ticket issued before the delete
	// cannot store the piece again (Endpoint.checkReleased).
	releasePrefix = 'r'
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// PieceFileSize is the size of a piece file holding size bytes.
func PieceFileSize(size int64) int64 {
	return pieceHeaderSize + size + int64(challenge.TreeNodes(size))*challenge.HashSize
}

func encodePieceHeader(id challenge.PieceID, size int64) []byte {
	h := make([]byte, pieceHeaderSize)
	copy(h, pieceMagic)
	binary.BigEndian.PutUint16(h[8:], pieceVersion)
	binary.BigEndian.PutUint32(h[12:], challenge.LeafSize)
	binary.BigEndian.PutUint64(h[16:], uint64(size))
	copy(h[24:56], id[:])
	binary.BigEndian.PutUint32(h[56:], crc32.Checksum(h[:56], crcTable))
	return h
}

func parsePieceHeader(h []byte, want challenge.PieceID) (int64, error) {
	if len(h) != pieceHeaderSize {
		return 0, fmt.Errorf("%w: header of %d bytes, want %d", ErrCorrupt, len(h), pieceHeaderSize)
	}
	if string(h[:8]) != pieceMagic {
		return 0, fmt.Errorf("%w: magic %q, want %q", ErrCorrupt, h[:8], pieceMagic)
	}
	if got := binary.BigEndian.Uint32(h[56:]); got != crc32.Checksum(h[:56], crcTable) {
		return 0, fmt.Errorf("%w: header checksum", ErrCorrupt)
	}
	if v := binary.BigEndian.Uint16(h[8:]); v != pieceVersion {
		return 0, fmt.Errorf("%w: version %d, want %d", ErrCorrupt, v, pieceVersion)
	}
	if ls := binary.BigEndian.Uint32(h[12:]); ls != challenge.LeafSize {
		return 0, fmt.Errorf("%w: leaf size %d, want %d", ErrCorrupt, ls, challenge.LeafSize)
	}
	if challenge.PieceID(h[24:56]) != want {
		return 0, fmt.Errorf("%w: header names another piece", ErrCorrupt)
	}
	size := int64(binary.BigEndian.Uint64(h[16:]))
	if err := challenge.CheckSize(size); err != nil {
		return 0, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return size, nil
}

func indexKey(id challenge.PieceID) []byte { return append([]byte{indexPrefix}, id[:]...) }

func encodeIndex(p PieceInfo) []byte {
	b := make([]byte, 0, indexValueSize)
	b = append(b, indexVersion)
	b = binary.BigEndian.AppendUint64(b, uint64(p.Size))
	b = binary.BigEndian.AppendUint64(b, uint64(p.StoredAt.UnixNano()))
	var orphan int64
	if !p.OrphanedAt.IsZero() {
		orphan = p.OrphanedAt.UnixNano()
	}
	b = binary.BigEndian.AppendUint64(b, uint64(orphan))
	return append(b, p.Account[:]...)
}

func decodeIndex(key, v []byte) (PieceInfo, error) {
	var p PieceInfo
	if len(key) != 1+challenge.HashSize || key[0] != indexPrefix {
		return p, fmt.Errorf("%w: index key %x", ErrCorrupt, key)
	}
	copy(p.ID[:], key[1:])
	if len(v) != indexValueSize || v[0] != indexVersion {
		return p, fmt.Errorf("%w: index entry for %s: %d bytes, version %d", ErrCorrupt, p.ID, len(v), firstByte(v))
	}
	p.Size = int64(binary.BigEndian.Uint64(v[1:]))
	p.StoredAt = time.Unix(0, int64(binary.BigEndian.Uint64(v[9:])))
	if o := int64(binary.BigEndian.Uint64(v[17:])); o != 0 {
		p.OrphanedAt = time.Unix(0, o)
	}
	copy(p.Account[:], v[25:])
	return p, nil
}

func firstByte(b []byte) int {
	if len(b) == 0 {
		return -1
	}
	return int(b[0])
}

// DiskStore is the PieceStore on a local file system: one file per piece
// (header, bytes, Merkle tree) and a Pebble index.
type DiskStore struct {
	dir      string
	db       *pebble.DB
	dirLock  io.Closer // nil on a vfs.FS of a test
	fs       vfs.FS    // vfs.Default, or DiskStoreOptions.FS
	log      *slog.Logger
	capacity int64
	// NoSync skips fsyncs; only for populating benchmark stores.
	noSync bool
	// releaseWindow: see DiskStoreOptions.ReleaseWindow.
	releaseWindow time.Duration

	mu       sync.Mutex
	used     int64
	pieces   int64
	reserved int64

	locks [256]sync.Mutex
}

// DiskStoreOptions configures OpenDiskStore.
type DiskStoreOptions struct {
	Capacity int64 // bytes of piece data the store accepts
	Logger   *slog.Logger
	// NoSync turns off every fsync. Never for real nodes: benchmarks use it
	// to populate a store quickly.
	NoSync bool
	// ReleaseWindow is how long the store remembers that a piece was
	// deleted (default DefaultTicketTTL, the longest ticket lifetime).
	ReleaseWindow time.Duration
	// FS holds the store instead of the operating system's file system
	// (power-loss tests pass pebble's crashable in-memory one); the
	// directory lock is then not taken.
	FS vfs.FS
}

// OpenDiskStore opens (creating) the store in dir and reconciles the index
// with the piece files: temporary upload files are removed; a piece file
// without an index entry whose header, bytes and tree check out is
// re-indexed with an unknown (zero) account, and any other one is moved to
// DIR/quarantine/; an index entry without a whole piece file is dropped.
func OpenDiskStore(dir string, o DiskStoreOptions) (_ *DiskStore, err error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	fsys := o.FS
	if fsys == nil {
		fsys = vfs.Default
	}
	// Directories this open creates, whose entries must be synced in their
	// parents (a new node's --dir may be several levels deep).
	var created []string
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if _, err := fsys.Stat(d); err == nil || filepath.Dir(d) == d {
			break
		}
		created = append(created, d)
	}
	var lock io.Closer
	if o.FS == nil {
		f, err := lockDir(dir)
		if err != nil {
			return nil, err
		}
		lock = f
	} else if err := fsys.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("piece store: %w", err)
	}
	defer func() {
		if err != nil && lock != nil {
			lock.Close()
		}
	}()
	for _, d := range []string{filepath.Join(dir, piecesDir), filepath.Join(dir, tmpDir)} {
		if err := fsys.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("piece store: %w", err)
		}
	}
	for i := range 256 {
		if err := fsys.MkdirAll(filepath.Join(dir, piecesDir, fmt.Sprintf("%02x", i)), 0o700); err != nil {
			return nil, fmt.Errorf("piece store: %w", err)
		}
	}
	s := &DiskStore{dir: dir, fs: fsys, dirLock: lock, log: o.Logger, capacity: o.Capacity, noSync: o.NoSync}
	// The directories' entries: the pieces' subdirectories, the store's
	// own, and those of every directory created above.
	toSync := []string{dir, filepath.Join(dir, piecesDir)}
	for _, d := range created {
		toSync = append(toSync, filepath.Dir(d))
	}
	if err := s.syncDirs(toSync...); err != nil {
		return nil, fmt.Errorf("piece store: %w", err)
	}
	po := &pebble.Options{Logger: pebbleLogger{o.Logger}, FS: o.FS}
	pebblesched.Quiet(po) // nothing wakes the process while the database idles
	db, err := pebble.Open(filepath.Join(dir, indexDir), po)
	if err != nil {
		return nil, fmt.Errorf("piece store index: %w", err)
	}
	s.db = db
	if o.ReleaseWindow <= 0 {
		o.ReleaseWindow = DefaultTicketTTL
	}
	s.releaseWindow = o.ReleaseWindow
	if err := s.pruneReleases(time.Now()); err != nil {
		db.Close()
		return nil, fmt.Errorf("piece store: %w", err)
	}
	if err := s.reconcile(); err != nil {
		db.Close()
		return nil, fmt.Errorf("piece store: reconcile: %w", err)
	}
	return s, nil
}

func (s *DiskStore) piecePath(id challenge.PieceID) string {
	h := id.String()
	return filepath.Join(s.dir, piecesDir, h[:2], h+pieceExt)
}

func (s *DiskStore) writeOpts() *pebble.WriteOptions {
	if s.noSync {
		return pebble.NoSync
	}
	return pebble.Sync
}

func (s *DiskStore) reconcile() error {
	// 1. Interrupted uploads: the only files deleted at start. A piece
	// reaches its final name by a rename after its fsync, so nothing in
	// tmp/ was ever acknowledged.
	tmp := filepath.Join(s.dir, tmpDir)
	ents, err := s.fs.List(tmp)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := s.fs.Remove(filepath.Join(tmp, e)); err != nil {
			return err
		}
	}
	if len(ents) > 0 {
		s.log.Info("removed interrupted uploads", "count", len(ents))
	}
	// 2. Index entries must have a whole piece file; a file of the wrong
	// size is quarantined, not deleted.
	seen := make(map[challenge.PieceID]struct{})
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{indexPrefix}, UpperBound: []byte{indexPrefix + 1}})
	if err != nil {
		return err
	}
	var drop [][]byte
	for it.First(); it.Valid(); it.Next() {
		p, err := decodeIndex(it.Key(), it.Value())
		if err != nil {
			s.log.Warn("dropping unreadable index entry", "key", hex.EncodeToString(it.Key()), "err", err)
			drop = append(drop, append([]byte{}, it.Key()...))
			continue
		}
		fi, err := s.fs.Stat(s.piecePath(p.ID))
		if err != nil || fi.Size() != PieceFileSize(p.Size) {
			if err == nil {
				err = fmt.Errorf("file of %d bytes, want %d", fi.Size(), PieceFileSize(p.Size))
			}
			s.log.Warn("dropping index entry without a whole piece file", "piece", p.ID, "err", err)
			drop = append(drop, append([]byte{}, it.Key()...))
			continue
		}
		seen[p.ID] = struct{}{}
		s.used += p.Size
		s.pieces++
	}
	if err := it.Close(); err != nil {
		return err
	}
	for _, k := range drop {
		if err := s.db.Delete(k, pebble.Sync); err != nil {
			return err
		}
	}
	// 3. Piece files without an index entry (the index was lost, or a
	// crash came between the rename and the index commit) are durable
	// pieces: re-index the valid ones with an unknown account, quarantine
	// the others.
	var found, quarantined int
	err = walkFiles(s.fs, filepath.Join(s.dir, piecesDir), func(path, name string) error {
		if !strings.HasSuffix(name, pieceExt) {
			return nil
		}
		id, perr := challenge.ParsePieceID(strings.TrimSuffix(name, pieceExt))
		// A file anywhere but at its id's path is never served nor
		// counted: quarantined, also when it is a copy of a piece indexed
		// at its own path (that copy is a different file, left alone).
		if perr == nil && path != s.piecePath(id) {
			perr = fmt.Errorf("%w: misplaced in %s", ErrCorrupt, filepath.Dir(path))
		}
		if _, ok := seen[id]; perr == nil && ok {
			return nil
		}
		var info PieceInfo
		if perr == nil {
			info, perr = checkPieceFile(s.fs, path, id, nil)
		}
		if perr != nil {
			quarantined++
			return s.quarantine(path, perr)
		}
		if err := s.db.Set(indexKey(id), encodeIndex(info), s.writeOpts()); err != nil {
			return fmt.Errorf("piece %s: index: %w", id, err)
		}
		seen[id] = struct{}{}
		s.used += info.Size
		s.pieces++
		found++
		return nil
	})
	if err != nil {
		return err
	}
	if found > 0 {
		s.log.Warn("re-indexed piece files that had no index entry (account unknown until the mediator's live list decides)",
			"count", found)
	}
	if quarantined > 0 {
		s.log.Warn("moved unreadable piece files to "+quarantineDir, "count", quarantined)
	}
	return nil
}

// checkPieceFile reads a whole piece file and checks everything it holds
// against id: the header (magic, version, CRC, id), the file's size, the
// Merkle root of the bytes and every stored tree node. StoredAt is the
// file's modification time; the account is unknown (zero). Every failure
// to read or to match after the file is open wraps ErrCorrupt. wrap, if
// not nil, wraps the file's reader (the scrubber limits the rate with it);
// it gets the file's size.
func checkPieceFile(fsys vfs.FS, path string, id challenge.PieceID, wrap func(r io.Reader, size int64) io.Reader) (PieceInfo, error) {
	f, err := fsys.Open(path)
	if err != nil {
		return PieceInfo{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return PieceInfo{}, err
	}
	var src io.Reader = f
	if wrap != nil {
		src = wrap(f, fi.Size())
	}
	r := bufio.NewReaderSize(src, 1<<20)
	h := make([]byte, pieceHeaderSize)
	if _, err := io.ReadFull(r, h); err != nil {
		return PieceInfo{}, fmt.Errorf("%w: header: %w", ErrCorrupt, err)
	}
	size, err := parsePieceHeader(h, id)
	if err != nil {
		return PieceInfo{}, err
	}
	if want := PieceFileSize(size); fi.Size() != want {
		return PieceInfo{}, fmt.Errorf("%w: file of %d bytes, header says %d", ErrCorrupt, fi.Size(), want)
	}
	b, err := challenge.NewBuilder(size)
	if err != nil {
		return PieceInfo{}, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	// The bytes go to the builder in writes of up to 1 MiB, not
	// io.CopyN's 32 KiB, so that it hashes 16 leaves at a time where it
	// can (challenge.Builder.Write).
	n, err := io.CopyBuffer(b, io.LimitReader(r, size), make([]byte, 1<<20))
	if err == nil && n < size {
		err = io.EOF
	}
	if err != nil {
		return PieceInfo{}, fmt.Errorf("%w: bytes: %w", ErrCorrupt, err)
	}
	tree, err := b.Tree()
	if err != nil {
		return PieceInfo{}, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	if tree.Root() != id {
		return PieceInfo{}, fmt.Errorf("%w: bytes hash to %s", ErrCorrupt, tree.Root())
	}
	var node challenge.Hash
	for l, level := range tree.Levels {
		for i := range level {
			if _, err := io.ReadFull(r, node[:]); err != nil {
				return PieceInfo{}, fmt.Errorf("%w: tree: %w", ErrCorrupt, err)
			}
			if node != level[i] {
				return PieceInfo{}, fmt.Errorf("%w: stored tree node (%d,%d) is wrong", ErrCorrupt, l, i)
			}
		}
	}
	return PieceInfo{ID: id, Size: size, StoredAt: fi.ModTime()}, nil
}

// quarantine moves an unreadable piece file to DIR/quarantine/, keeping
// its name, so that an operator can look at it; nothing there is served.
func (s *DiskStore) quarantine(path string, why error) error {
	qdir := filepath.Join(s.dir, quarantineDir)
	if err := s.fs.MkdirAll(qdir, 0o700); err != nil {
		return fmt.Errorf("quarantine: %w", err)
	}
	dst := filepath.Join(qdir, filepath.Base(path))
	if _, err := s.fs.Stat(dst); err == nil {
		dst = fmt.Sprintf("%s.%d", dst, time.Now().UnixNano())
	}
	if err := s.fs.Rename(path, dst); err != nil {
		return fmt.Errorf("quarantine %s: %w", path, err)
	}
	if err := s.syncDirs(filepath.Dir(path), qdir); err != nil {
		return fmt.Errorf("quarantine %s: %w", path, err)
	}
	s.log.Warn("quarantined a piece file", "file", path, "to", dst, "err", why)
	return nil
}

// Capacity implements PieceStore.
func (s *DiskStore) Capacity() int64 { return s.capacity }

// Usage implements PieceStore.
func (s *DiskStore) Usage() (int64, int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.used, s.pieces
}

func (s *DiskStore) reserve(size int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.used+s.reserved+size > s.capacity {
		return fmt.Errorf("%w: %d bytes free of %d, piece needs %d", ErrFull, max(0, s.capacity-s.used-s.reserved), s.capacity, size)
	}
	s.reserved += size
	return nil
}

func (s *DiskStore) unreserve(size int64) {
	s.mu.Lock()
	s.reserved -= size
	s.mu.Unlock()
}

func (s *DiskStore) lock(id challenge.PieceID) func() {
	m := &s.locks[id[0]]
	m.Lock()
	return m.Unlock
}

func diskErr(err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("%w: disk full: %w", ErrFull, err)
	}
	return err
}

// ctxReader fails reads once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// pipeBufs buffers of pipeBufSize each are in flight in one pipeCopy;
// they come from a pool, since every piece upload would otherwise
// allocate (and clear) all of them afresh.
const pipeBufs, pipeBufSize = 4, 1 << 20

var pipeBufPool sync.Pool

func getPipeBuf() []byte {
	if b, ok := pipeBufPool.Get().(*[]byte); ok {
		return *b
	}
	return make([]byte, pipeBufSize)
}

// putPipeBuf returns a buffer no goroutine uses any more. The buffers of a
// pipeCopy that failed are left to the collector: its reader may still be
// filling one.
func putPipeBuf(b []byte) {
	b = b[:cap(b)]
	pipeBufPool.Put(&b)
}

// pipeCopy is io.Copy with the reads in their own goroutine, a few MiB
// ahead of the writes, so that receiving from the network overlaps with
// hashing and with write(2) calls that the kernel throttles to disk speed.
func pipeCopy(dst io.Writer, src io.Reader) (int64, error) {
	type chunk struct {
		b   []byte
		err error
	}
	free := make(chan []byte, pipeBufs)
	for range pipeBufs {
		free <- getPipeBuf()
	}
	full := make(chan chunk, pipeBufs)
	done := make(chan struct{})
	defer close(done)
	go func() {
		defer close(full)
		for {
			var b []byte
			select {
			case b = <-free:
			case <-done:
				return
			}
			n, err := io.ReadFull(src, b)
			if err == io.ErrUnexpectedEOF {
				err = io.EOF
			}
			select {
			case full <- chunk{b[:n], err}:
			case <-done:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	var total int64
	for c := range full {
		if len(c.b) > 0 {
			m, err := dst.Write(c.b)
			total += int64(m)
			if err != nil {
				return total, err
			}
		}
		if c.err == io.EOF {
			// The reader has stopped: every buffer is back in free or
			// in hand, and goes back to the pool.
			putPipeBuf(c.b)
			for range pipeBufs - 1 {
				putPipeBuf(<-free)
			}
			return total, nil
		}
		if c.err != nil {
			return total, c.err
		}
		free <- c.b[:cap(c.b)]
	}
	return total, nil
}

// tmpSeq makes the names of upload files unique within the process (those
// of earlier processes are removed at start).
var tmpSeq atomic.Uint64

// walkFiles calls fn with every regular file under dir, recursively.
func walkFiles(fsys vfs.FS, dir string, fn func(path, name string) error) error {
	names, err := fsys.List(dir)
	if err != nil {
		return err
	}
	sort.Strings(names)
	for _, n := range names {
		p := filepath.Join(dir, n)
		st, err := fsys.Stat(p)
		if err != nil {
			return err
		}
		if st.IsDir() {
			if err := walkFiles(fsys, p, fn); err != nil {
				return err
			}
		} else if st.Mode().IsRegular() {
			if err := fn(p, n); err != nil {
				return err
			}
		}
	}
	return nil
}

// writebackWriter starts the kernel's writeback every writebackChunk bytes.
type writebackWriter struct {
	f       vfs.File
	off     int64
	started int64
}

const writebackChunk = 8 << 20

func (w *writebackWriter) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.off += int64(n)
	if w.off-w.started >= writebackChunk {
		if fd := w.f.Fd(); fd != vfs.InvalidFd {
			startWriteback(fd, w.started, w.off-w.started)
		}
		w.started = w.off
	}
	return n, err
}

// Put implements PieceStore.
func (s *DiskStore) Put(ctx context.Context, id challenge.PieceID, size int64, account fnet.AccountID, r io.Reader) (err error) {
	if err := challenge.CheckSize(size); err != nil {
		return fmt.Errorf("piece %s: %w: %w", id, fnet.ErrPieceTooLarge, err)
	}
	if held, err := s.keepHeld(id); held {
		return err
	}
	if err := s.reserve(size); err != nil {
		return fmt.Errorf("piece %s: %w", id, err)
	}
	defer s.unreserve(size)

	tmpName := filepath.Join(s.dir, tmpDir, fmt.Sprintf("%s.%d.part", id.String()[:16], tmpSeq.Add(1)))
	f, err := s.fs.Create(tmpName, vfs.WriteCategoryUnspecified)
	if err != nil {
		return fmt.Errorf("piece %s: %w", id, diskErr(err))
	}
	if s.fs == vfs.Default {
		os.Chmod(tmpName, 0o600) // vfs creates files 0666 less the umask
	}
	defer func() {
		if f != nil {
			f.Close()
		}
		if err != nil {
			s.fs.Remove(tmpName)
		}
	}()
	b, _ := challenge.NewBuilder(size)
	var fw io.Writer = f
	if !s.noSync {
		fw = &writebackWriter{f: f}
	}
	if _, err := fw.Write(encodePieceHeader(id, size)); err != nil {
		return fmt.Errorf("piece %s: %w", id, diskErr(err))
	}
	// The piece's bytes go from pipeCopy's buffers to the file and the
	// tree builder as they are (1 MiB writes, no second copy); the tree
	// after them goes through a buffer.
	n, err := pipeCopy(io.MultiWriter(b, fw), io.LimitReader(ctxReader{ctx, r}, size+1))
	switch {
	case errors.Is(err, challenge.ErrTooLong) || (err == nil && n > size):
		return fmt.Errorf("piece %s: %w: more than the %d bytes announced", id, fnet.ErrBadRequest, size)
	case err != nil:
		return fmt.Errorf("piece %s: after %d bytes: %w", id, n, diskErr(err))
	case n < size:
		return fmt.Errorf("piece %s: %w: upload ended after %d of %d bytes", id, fnet.ErrBadRequest, n, size)
	}
	tree, err := b.Tree()
	if err != nil {
		return fmt.Errorf("piece %s: %w", id, err)
	}
	if tree.Root() != id {
		return fmt.Errorf("piece %s: %w (root is %s)", id, ErrMismatch, tree.Root())
	}
	w := bufio.NewWriterSize(fw, 64<<10)
	for _, level := range tree.Levels {
		for i := range level {
			if _, err := w.Write(level[i][:]); err != nil {
				return fmt.Errorf("piece %s: tree: %w", id, diskErr(err))
			}
		}
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("piece %s: %w", id, diskErr(err))
	}
	if !s.noSync {
		if err := f.Sync(); err != nil {
			return fmt.Errorf("piece %s: fsync: %w", id, diskErr(err))
		}
	}
	if err := f.Close(); err != nil {
		f = nil
		return fmt.Errorf("piece %s: %w", id, diskErr(err))
	}
	f = nil

	unlock := s.lock(id)
	defer unlock()
	if _, err := s.Stat(id); err == nil {
		return s.fs.Remove(tmpName) // a concurrent upload won
	}
	final := s.piecePath(id)
	if err := s.fs.MkdirAll(filepath.Dir(final), 0o700); err != nil {
		return fmt.Errorf("piece %s: %w", id, diskErr(err))
	}
	if err := s.fs.Rename(tmpName, final); err != nil {
		return fmt.Errorf("piece %s: %w", id, diskErr(err))
	}
	// The piece's directory only: the rename is durable with its entry. The
	// temporary name's removal need not be (tmp/ is emptied at start, and
	// the piece keeps its final name), and syncing tmp/ too cost a journal
	// commit per piece whenever another upload had touched it meanwhile.
	if err := s.syncDirs(filepath.Dir(final)); err != nil {
		s.fs.Remove(final)
		return fmt.Errorf("piece %s: %w", id, diskErr(err))
	}
	info := PieceInfo{ID: id, Size: size, StoredAt: time.Now(), Account: account}
	if err := s.indexPut(info); err != nil {
		s.fs.Remove(final)
		return fmt.Errorf("piece %s: index: %w", id, diskErr(err))
	}
	s.mu.Lock()
	s.used += size
	s.pieces++
	s.mu.Unlock()
	return nil
}

func (s *DiskStore) syncDirs(dirs ...string) error {
	if s.noSync {
		return nil
	}
	for _, d := range dirs {
		f, err := s.fs.OpenDir(d)
		if err != nil {
			return err
		}
		err = f.Sync()
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// Stat implements PieceStore.
func (s *DiskStore) Stat(id challenge.PieceID) (PieceInfo, error) {
	v, closer, err := s.db.Get(indexKey(id))
	if errors.Is(err, pebble.ErrNotFound) {
		return PieceInfo{}, fmt.Errorf("piece %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return PieceInfo{}, fmt.Errorf("piece %s: index: %w", id, err)
	}
	defer closer.Close()
	return decodeIndex(indexKey(id), v)
}

// SetOrphaned implements PieceStore.
func (s *DiskStore) SetOrphaned(id challenge.PieceID, since time.Time) error {
	unlock := s.lock(id)
	defer unlock()
	p, err := s.Stat(id)
	if err != nil {
		return err
	}
	p.OrphanedAt = since
	return s.db.Set(indexKey(id), encodeIndex(p), s.writeOpts())
}

// keepHeld reports whether piece id is held; an upload of a held piece is
// a new placement, so its orphan mark (if any) goes and the collector's
// grace starts over.
func (s *DiskStore) keepHeld(id challenge.PieceID) (bool, error) {
	unlock := s.lock(id)
	defer unlock()
	p, err := s.Stat(id)
	if err != nil {
		return false, nil
	}
	if p.OrphanedAt.IsZero() {
		return true, nil
	}
	p.OrphanedAt = time.Time{}
	if err := s.db.Set(indexKey(id), encodeIndex(p), s.writeOpts()); err != nil {
		return true, fmt.Errorf("piece %s: index: %w", id, diskErr(err))
	}
	return true, nil
}

// Delete implements PieceStore: the file goes first, so that a crash in
// between leaves only an index entry without a file, which the next start
// drops (a file without an entry would be re-indexed as a piece).
func (s *DiskStore) Delete(id challenge.PieceID) error {
	unlock := s.lock(id)
	defer unlock()
	p, err := s.Stat(id)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	return s.deleteLocked(p)
}

// DeleteOrphan implements PieceStore.
func (s *DiskStore) DeleteOrphan(id challenge.PieceID, since time.Time) (bool, error) {
	unlock := s.lock(id)
	defer unlock()
	p, err := s.Stat(id)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if p.OrphanedAt.IsZero() || !p.OrphanedAt.Equal(since) {
		return false, nil // unmarked or stored again meanwhile
	}
	return true, s.deleteLocked(p)
}

// deleteLocked deletes piece p, under its lock.
func (s *DiskStore) deleteLocked(p PieceInfo) error {
	id := p.ID
	if err := s.fs.Remove(s.piecePath(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("piece %s: %w", id, err)
	}
	if err := s.syncDirs(filepath.Dir(s.piecePath(id))); err != nil {
		return fmt.Errorf("piece %s: %w", id, err)
	}
	b := s.db.NewBatch()
	b.Delete(indexKey(id), nil)
	b.Set(releaseKey(id), binary.BigEndian.AppendUint64(nil, uint64(time.Now().UnixNano())), nil)
	if err := b.Commit(s.writeOpts()); err != nil {
		b.Close()
		return fmt.Errorf("piece %s: index: %w", id, err)
	}
	b.Close()
	s.mu.Lock()
	s.used -= p.Size
	s.pieces--
	s.mu.Unlock()
	return nil
}

func releaseKey(id challenge.PieceID) []byte { return append([]byte{releasePrefix}, id[:]...) }

// ReleasedAt reports when piece id was last deleted, if within the release
// window (Endpoint.checkReleased).
func (s *DiskStore) ReleasedAt(id challenge.PieceID) (time.Time, bool) {
	v, closer, err := s.db.Get(releaseKey(id))
	if err != nil {
		return time.Time{}, false
	}
	defer closer.Close()
	if len(v) != 8 {
		return time.Time{}, false
	}
	at := time.Unix(0, int64(binary.BigEndian.Uint64(v)))
	if time.Since(at) > s.releaseWindow {
		return time.Time{}, false
	}
	return at, true
}

// pruneReleases forgets releases older than the window.
func (s *DiskStore) pruneReleases(now time.Time) error {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{releasePrefix}, UpperBound: []byte{releasePrefix + 1}})
	if err != nil {
		return err
	}
	b := s.db.NewBatch()
	defer b.Close()
	for it.First(); it.Valid(); it.Next() {
		v := it.Value()
		if len(v) != 8 || now.Sub(time.Unix(0, int64(binary.BigEndian.Uint64(v)))) > s.releaseWindow {
			b.Delete(append([]byte{}, it.Key()...), nil)
		}
	}
	if err := it.Close(); err != nil {
		return err
	}
	if b.Empty() {
		return nil
	}
	return b.Commit(pebble.Sync)
}

// List implements PieceStore.
func (s *DiskStore) List(after *challenge.PieceID, limit int) ([]PieceInfo, error) {
	lower := []byte{indexPrefix}
	if after != nil {
		lower = append(indexKey(*after), 0)
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: []byte{indexPrefix + 1}})
	if err != nil {
		return nil, err
	}
	var out []PieceInfo
	for it.First(); it.Valid() && len(out) < limit; it.Next() {
		p, err := decodeIndex(it.Key(), it.Value())
		if err != nil {
			it.Close()
			return nil, err
		}
		out = append(out, p)
	}
	return out, it.Close()
}

// Open implements PieceStore.
func (s *DiskStore) Open(id challenge.PieceID) (Piece, error) {
	info, err := s.Stat(id)
	if err != nil {
		return nil, err
	}
	f, err := s.fs.Open(s.piecePath(id))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("piece %s: %w: file missing", id, ErrCorrupt)
		}
		return nil, fmt.Errorf("piece %s: %w", id, err)
	}
	h := make([]byte, pieceHeaderSize)
	if _, err := io.ReadFull(f, h); err != nil {
		f.Close()
		return nil, fmt.Errorf("piece %s: %w: header: %w", id, ErrCorrupt, err)
	}
	size, err := parsePieceHeader(h, id)
	if err == nil && size != info.Size {
		err = fmt.Errorf("%w: header size %d, index %d", ErrCorrupt, size, info.Size)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("piece %s: %w", id, err)
	}
	levelOff := make([]int64, 0, 20)
	off := int64(pieceHeaderSize) + size
	for _, c := range challenge.LevelCounts(size) {
		levelOff = append(levelOff, off)
		off += int64(c) * challenge.HashSize
	}
	return &diskPiece{f: f, size: size, levelOff: levelOff, counts: challenge.LevelCounts(size)}, nil
}

// Close implements PieceStore.
func (s *DiskStore) Close() error {
	err := s.db.Close()
	if s.dirLock != nil {
		s.dirLock.Close() // releases the flock
	}
	return err
}

// ErrLocked means another process has the directory open.
var ErrLocked = errors.New("the directory is in use by another storage node")

// lockDir takes an exclusive flock on DIR/lock for the store's lifetime.
func lockDir(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("piece store: %w", err)
	}
	f, err := fsutil.Lock(filepath.Join(dir, "lock"))
	if errors.Is(err, fsutil.ErrLocked) {
		return nil, fmt.Errorf("%s: %w", dir, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("piece store: %w", err)
	}
	return f, nil
}

type diskPiece struct {
	f        vfs.File
	size     int64
	levelOff []int64
	counts   []int
}

func (p *diskPiece) Size() int64 { return p.size }

func (p *diskPiece) ReadAt(b []byte, off int64) (int, error) {
	if off < 0 || off > p.size {
		return 0, fmt.Errorf("offset %d outside piece of %d bytes", off, p.size)
	}
	if rest := p.size - off; int64(len(b)) > rest {
		n, err := p.f.ReadAt(b[:rest], pieceHeaderSize+off)
		if err == nil {
			err = io.EOF
		}
		return n, err
	}
	return p.f.ReadAt(b, pieceHeaderSize+off)
}

func (p *diskPiece) ReadLeaf(i int, buf []byte) (int, error) {
	if i < 0 || i >= p.counts[0] {
		return 0, fmt.Errorf("leaf %d out of range", i)
	}
	n := challenge.LeafLen(p.size, i)
	got, err := p.f.ReadAt(buf[:n], pieceHeaderSize+int64(i)*challenge.LeafSize)
	if err != nil && !(errors.Is(err, io.EOF) && got == n) {
		return got, err
	}
	return n, nil
}

func (p *diskPiece) Node(level, index int) (challenge.Hash, error) {
	var h challenge.Hash
	if level < 0 || level >= len(p.counts) || index < 0 || index >= p.counts[level] {
		return h, fmt.Errorf("tree node (%d,%d) out of range", level, index)
	}
	_, err := p.f.ReadAt(h[:], p.levelOff[level]+int64(index)*challenge.HashSize)
	return h, err
}

func (p *diskPiece) Close() error { return p.f.Close() }

// pebbleLogger sends Pebble's messages to slog.
type pebbleLogger struct{ l *slog.Logger }

func (p pebbleLogger) Infof(format string, args ...any) {
	p.l.Debug("pebble: " + fmt.Sprintf(format, args...))
}
func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error("pebble: " + fmt.Sprintf(format, args...))
}
func (p pebbleLogger) Fatalf(format string, args ...any) {
	p.l.Error("pebble: fatal: " + fmt.Sprintf(format, args...))
	os.Exit(1)
}

var _ PieceStore = (*DiskStore)(nil)
