// Package chunkstore is the local store of sealed chunks, under the vault's
// store directory. It never sees plaintext or keys; the file system seals
// chunks before Put and opens them after Get.
//
// Format 2 (new stores): chunks appended to pack files under <dir>/packs
// (pack.go). Format 1 (stores made before it, until `fincrypt upgrade`):
// one file per chunk, <dir>/<first two hex digits of the id>/<32 hex
// digits of the id>. Ids are random, so the store reveals only how many
// chunks there are and how big each is. Put does not sync; Sync makes every
// chunk written so far durable, and must be called before an index commit
// that backs an fsync.
package chunkstore

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"golang.org/x/sys/unix"

	"github.com/fincrypt/fincrypt/meta"
)

// ErrNotFound means the store holds no chunk with that id.
var ErrNotFound = errors.New("chunk not in the local store")

// syncfsThreshold is the number of unsynced chunks above which Sync flushes
// the whole file system (syncfs) instead of fsyncing each file.
const syncfsThreshold = 128

// Store is a directory of sealed chunks. It is safe for concurrent use.
type Store struct {
	dir string
	sys fileSystem

	readOnly bool // opened by OpenExisting: reads leave the files as they are

	format int      // FormatFiles or FormatPacks
	packs  *packSet // format 2; nil in format 1
	loose  bool     // chunk files of format 1 may be present (always in format 1)

	// syncMu makes syncs of chunk files (format 1) one at a time. A sync
	// takes the chunks written since the last one; another that started
	// meanwhile would find nothing left to sync and return before those
	// were on the disk. Waiting for the sync under way closes that gap.
	syncMu sync.Mutex

	mu       sync.Mutex
	unsynced map[meta.ChunkID]struct{}
	dirs     map[string]struct{} // subdirectories changed since the last Sync
	fetcher  FetcherKeep         // fills misses (SetFetcher); nil: none
	admit    admitter            // which fetched chunks are kept (SetAdmission)

	// writes holds, by shard of the id, the chunks that Put is writing.
	// Put registers a chunk (and counts a generation) before it creates the
	// file; Get waits for a chunk being written, and reads again when a Put
	// began in its shard while it read. So a Get never returns a chunk file
	// that exists but is not complete (two reads of one evicted chunk, the
	// first of which fetches and stores it): it waits for the write instead.
	writes [32]writeShard
}

type writeShard struct {
	mu      sync.Mutex
	writing map[meta.ChunkID]chan struct{} // closed when the file is whole (or removed)
	gen     uint64                         // Puts begun in the shard
}

// settled waits until no Put of id is in progress and returns the shard's
// generation then.
func (sh *writeShard) settled(id meta.ChunkID) uint64 {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	for sh.writing[id] != nil {
		busy := sh.writing[id]
		sh.mu.Unlock()
		<-busy
		sh.mu.Lock()
	}
	return sh.gen
}

// unchanged reports whether no Put began in the shard since generation gen.
func (sh *writeShard) unchanged(gen uint64) bool {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.gen == gen
}

func (s *Store) shard(id meta.ChunkID) *writeShard { return &s.writes[int(id[0])%len(s.writes)] }

// TouchAfter is how old a chunk file's modification time may grow before a
// read sets it to now. The cache evicts the chunks with the oldest times
// first, so a chunk read in the last TouchAfter counts as recently used;
// the coarse step keeps reads from writing to the disk each time.
const TouchAfter = time.Hour

// Open opens the store in dir, creating it if needed (in the current
// format; an existing store keeps its own).
func Open(dir string) (*Store, error) { return open(dir, osFS{}, CurrentFormat) }

// OpenFS is Open on a pebble vfs.FS instead of the operating system's file
// system (power-loss tests run the store and the index on one crashable
// in-memory file system).
func OpenFS(dir string, fsys vfs.FS) (*Store, error) { return open(dir, vfsFS{fsys}, CurrentFormat) }

// OpenFSFormat is OpenFS that creates a new store in the given format
// (tests of format 1 stores and of their upgrade).
func OpenFSFormat(dir string, fsys vfs.FS, format int) (*Store, error) {
	return open(dir, vfsFS{fsys}, format)
}

// OpenFormat is Open that creates a new store in the given format.
func OpenFormat(dir string, format int) (*Store, error) { return open(dir, osFS{}, format) }

// readFormat returns the store's format: FORMAT's, else 1 if the store
// holds anything but the owner file, else 0 (a new store).
func readFormat(dir string, sys fileSystem) (int, error) {
	b, _, err := sys.read(filepath.Join(dir, FormatFile), nil)
	if err == nil {
		return parseFormat(b)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return 0, err
	}
	ents, err := sys.readDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	for _, e := range ents {
		if e.name != OwnerFile && e.name != FormatFile+".tmp" {
			return FormatFiles, nil
		}
	}
	return 0, nil
}

// writeFormat records the store's format (atomically, durably).
func writeFormat(dir string, sys fileSystem, format int) error {
	tmp := filepath.Join(dir, FormatFile+".tmp")
	sys.remove(tmp)
	if err := sys.create(tmp, []byte(formatText(format))); err != nil {
		return err
	}
	if err := sys.sync(tmp); err != nil {
		return err
	}
	if err := sys.rename(tmp, filepath.Join(dir, FormatFile)); err != nil {
		return err
	}
	return sys.sync(dir)
}

func open(dir string, sys fileSystem, newFormat int) (*Store, error) {
	if err := sys.mkdirAll(dir); err != nil {
		return nil, fmt.Errorf("chunk store: %w", err)
	}
	format, err := readFormat(dir, sys)
	if err != nil {
		return nil, fmt.Errorf("chunk store: %w", err)
	}
	if format == 0 {
		format = newFormat
		if format == FormatPacks {
			if err := writeFormat(dir, sys, format); err != nil {
				return nil, fmt.Errorf("chunk store: %w", err)
			}
		}
	}
	s := &Store{dir: dir, sys: sys, format: format, unsynced: map[meta.ChunkID]struct{}{}, dirs: map[string]struct{}{}}
	if format == FormatFiles {
		s.loose = true
		for i := 0; i < 256; i++ {
			if err := sys.mkdir(filepath.Join(dir, fmt.Sprintf("%02x", i))); err != nil {
				return nil, fmt.Errorf("chunk store: %w", err)
			}
		}
	} else {
		if err := sys.mkdir(filepath.Join(dir, packsDir)); err != nil {
			return nil, fmt.Errorf("chunk store: %w", err)
		}
		if err := s.openPacks(false); err != nil {
			return nil, err
		}
	}
	// The subdirectories' entries, and the store's own entry in its parent
	// (new at the first mount): else a power cut can take the whole store.
	if err := sys.sync(dir); err != nil {
		return nil, fmt.Errorf("chunk store: %w", err)
	}
	if err := sys.sync(filepath.Dir(dir)); err != nil {
		return nil, fmt.Errorf("chunk store: %w", err)
	}
	return s, nil
}

// Dir is the store's directory.
func (s *Store) Dir() string { return s.dir }

// NewID returns a fresh random chunk id.
func NewID() meta.ChunkID {
	var id meta.ChunkID
	if _, err := rand.Read(id[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err))
	}
	return id
}

// Path is where chunk id lives.
func (s *Store) Path(id meta.ChunkID) string {
	h := hex.EncodeToString(id[:])
	return filepath.Join(s.dir, h[:2], h)
}

// Put stores a sealed chunk under a new id. It fails if the id exists.
func (s *Store) Put(id meta.ChunkID, sealed []byte) error {
	if s.packs != nil {
		return s.packs.put(id, sealed, false)
	}
	return s.putFile(id, sealed)
}

func (s *Store) putFile(id meta.ChunkID, sealed []byte) error {
	p := s.Path(id)
	sh := s.shard(id)
	sh.mu.Lock()
	if sh.writing[id] != nil {
		sh.mu.Unlock()
		return fmt.Errorf("chunk %s: %w", id, fs.ErrExist)
	}
	done := make(chan struct{})
	if sh.writing == nil {
		sh.writing = map[meta.ChunkID]chan struct{}{}
	}
	sh.writing[id] = done
	sh.gen++
	sh.mu.Unlock()
	err := s.sys.create(p, sealed)
	sh.mu.Lock()
	delete(sh.writing, id)
	sh.mu.Unlock()
	close(done)
	if err != nil {
		return fmt.Errorf("chunk %s: %w", id, err)
	}
	s.mu.Lock()
	s.unsynced[id] = struct{}{}
	s.dirs[filepath.Dir(p)] = struct{}{}
	s.mu.Unlock()
	return nil
}

// Get appends the sealed chunk id to dst. On an error it returns dst as it
// was (its length unchanged, though bytes past its length may be written),
// so that a caller packing chunks into one buffer keeps what it packed.
func (s *Store) Get(id meta.ChunkID, dst []byte) ([]byte, error) {
	return s.GetVerify(id, dst, nil)
}

// GetVerify is Get that, when the chunk has to be fetched from the network
// (or replaces a damaged local copy), checks the fetched bytes with verify
// before keeping them: a fetch that fails verify returns its error and
// leaves nothing in the store. nil verify keeps what is fetched unchecked.
func (s *Store) GetVerify(id meta.ChunkID, dst []byte, verify func(sealed []byte) error) ([]byte, error) {
	return s.GetVerifyAt(id, dst, verify, 0)
}

// GetVerifyAt is GetVerify for a reader runPos bytes into a sequential run
// through a file (0: not a sequential reader, or at its start): a chunk it
// has to fetch from the network is kept under the store's Admission.
func (s *Store) GetVerifyAt(id meta.ChunkID, dst []byte, verify func(sealed []byte) error, runPos uint64) ([]byte, error) {
	if s.packs != nil {
		out, found, err := s.packs.get(id, dst, !s.readOnly)
		if found {
			if errors.Is(err, ErrCorrupt) && s.hasFetcher() {
				return s.fetch(id, dst, verify, err, runPos)
			}
			return out, err
		}
		if !s.loose {
			return s.fetch(id, dst, verify, nil, runPos)
		}
	}
	sh := s.shard(id)
	var (
		out   []byte
		mtime time.Time
		err   error
	)
	for {
		gen := sh.settled(id)
		out, mtime, err = s.sys.read(s.Path(id), dst)
		if sh.unchanged(gen) {
			break
		}
		// A Put began while we read: the file may have been partial (or
		// just created). Read again once it is whole.
	}
	if errors.Is(err, fs.ErrNotExist) {
		return s.fetch(id, dst, verify, nil, runPos)
	}
	if err != nil {
		return dst, fmt.Errorf("chunk %s: %w", id, err)
	}
	if !s.readOnly && time.Since(mtime) > TouchAfter {
		// Best effort: a chunk that keeps its old time is only evicted sooner.
		s.sys.touch(s.Path(id), time.Now())
	}
	return out, nil
}

// openRetry is open(2), retried when a signal interrupts it.
func openRetry(p string, flags int, mode uint32) (int, error) {
	for {
		fd, err := unix.Open(p, flags, mode)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

// writeAll writes b to fd, continuing after short writes and interruptions.
func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return io.ErrShortWrite
		}
		b = b[n:]
	}
	return nil
}

// readFull fills b from fd; a file shorter than b is an error.
func readFull(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Read(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return io.ErrUnexpectedEOF
		}
		b = b[n:]
	}
	return nil
}

// Delete removes chunk id; a missing chunk is not an error.
func (s *Store) Delete(id meta.ChunkID) error {
	if s.packs != nil {
		// While chunk files are left (an upgrade cut half-way), a chunk
		// copied into a pack may still have its old file: both go.
		if _, err := s.packs.remove(id); err != nil || !s.loose {
			return err
		}
	}
	p := s.Path(id)
	err := s.sys.remove(p)
	s.mu.Lock()
	delete(s.unsynced, id)
	s.dirs[filepath.Dir(p)] = struct{}{}
	s.mu.Unlock()
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("chunk %s: %w", id, err)
	}
	return nil
}

// Sync makes every chunk Put so far, and every deletion, durable. In a
// format 2 store it then compacts the packs that are mostly dead chunks.
func (s *Store) Sync() error {
	if s.packs != nil {
		if err := s.packs.sync(); err != nil {
			return fmt.Errorf("chunk store sync: %w", err)
		}
		if _, err := s.packs.compact(); err != nil {
			return fmt.Errorf("chunk store: %w", err)
		}
		if !s.loose {
			return nil
		}
	}
	return s.syncFiles()
}

// Compact rewrites the packs that are mostly dead chunks (or small) and
// returns how many it removed.
func (s *Store) Compact() (int, error) {
	if s.packs == nil {
		return 0, nil
	}
	return s.packs.compact()
}

func (s *Store) syncFiles() error {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	s.mu.Lock()
	ids := s.unsynced
	dirs := s.dirs
	s.unsynced = map[meta.ChunkID]struct{}{}
	s.dirs = map[string]struct{}{}
	s.mu.Unlock()
	restore := func() {
		s.mu.Lock()
		for id := range ids {
			s.unsynced[id] = struct{}{}
		}
		for d := range dirs {
			s.dirs[d] = struct{}{}
		}
		s.mu.Unlock()
	}
	if len(ids)+len(dirs) == 0 {
		return nil
	}
	if len(ids) > syncfsThreshold {
		if err := s.sys.syncAll(s.dir); err != nil {
			restore()
			return fmt.Errorf("chunk store sync: %w", err)
		}
		return nil
	}
	paths := make([]string, 0, len(ids)+len(dirs))
	for id := range ids {
		paths = append(paths, s.Path(id))
	}
	for d := range dirs {
		paths = append(paths, d)
	}
	first := s.syncPaths(paths)
	if first != nil {
		restore()
		return fmt.Errorf("chunk store sync: %w", first)
	}
	return nil
}

// SyncIDs makes the given chunks durable: each file, then the directories
// that hold them. Chunks deleted meanwhile are skipped.
func (s *Store) SyncIDs(ids []meta.ChunkID) error {
	if len(ids) == 0 {
		return nil
	}
	if s.packs != nil {
		if err := s.packs.sync(); err != nil {
			return fmt.Errorf("chunk store sync: %w", err)
		}
		if !s.loose {
			return nil
		}
	}
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	if len(ids) > syncfsThreshold {
		// One syncfs beats hundreds of fsyncs of files and directories.
		if err := s.sys.syncAll(s.dir); err != nil {
			return fmt.Errorf("chunk store sync: %w", err)
		}
		s.mu.Lock()
		for _, id := range ids {
			delete(s.unsynced, id)
		}
		s.mu.Unlock()
		return nil
	}
	paths := make([]string, 0, len(ids))
	dirs := map[string]struct{}{}
	s.mu.Lock()
	for _, id := range ids {
		delete(s.unsynced, id)
		p := s.Path(id)
		paths = append(paths, p)
		dirs[filepath.Dir(p)] = struct{}{}
	}
	s.mu.Unlock()
	// On a failure the chunks stay unsynced: the next Sync syncs them
	// (it would skip them otherwise, and acknowledge them not durable).
	unsyncedAgain := func() {
		s.mu.Lock()
		for _, id := range ids {
			s.unsynced[id] = struct{}{}
		}
		for d := range dirs {
			s.dirs[d] = struct{}{}
		}
		s.mu.Unlock()
	}
	if err := s.syncPaths(paths); err != nil {
		unsyncedAgain()
		return fmt.Errorf("chunk store sync: %w", err)
	}
	dirList := make([]string, 0, len(dirs))
	for d := range dirs {
		dirList = append(dirList, d)
	}
	if err := s.syncPaths(dirList); err != nil {
		unsyncedAgain()
		return fmt.Errorf("chunk store sync: %w", err)
	}
	return nil
}

// syncPaths fsyncs files in parallel; missing files are skipped.
func (s *Store) syncPaths(paths []string) error {
	var (
		wg    sync.WaitGroup
		errMu sync.Mutex
		first error
	)
	work := make(chan string)
	for w := 0; w < min(4, len(paths)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range work {
				if err := s.sys.sync(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
					errMu.Lock()
					if first == nil {
						first = err
					}
					errMu.Unlock()
				}
			}
		}()
	}
	for _, p := range paths {
		work <- p
	}
	close(work)
	wg.Wait()
	return first
}

// OwnerFile, at the top of the store, names the vault the store belongs to
// (written and checked by the file system, so that two vaults pointed at one
// directory cannot collect each other's chunks). List passes over it.
const OwnerFile = "VAULT"

// List calls fn with the id of every chunk in the store, and bad with the
// path of every file that is not a chunk.
func (s *Store) List(fn func(id meta.ChunkID) error, bad func(path string)) error {
	if s.packs != nil {
		for _, id := range s.packs.ids() {
			if err := fn(id); err != nil {
				return err
			}
		}
		if s.loose {
			// An upgrade cut half-way leaves chunks both in a pack and in
			// their old file: each is listed once (its pack's copy).
			files := fn
			fn = func(id meta.ChunkID) error {
				if s.packs.lookup(id) != nil {
					return nil
				}
				return files(id)
			}
		}
	}
	return s.listFiles(fn, bad)
}

// listFiles is List of the format 1 chunk files.
func (s *Store) listFiles(fn func(id meta.ChunkID) error, bad func(path string)) error {
	top, err := s.sys.readDir(s.dir)
	if err != nil {
		return fmt.Errorf("chunk store: %w", err)
	}
	for _, t := range top {
		sub := filepath.Join(s.dir, t.name)
		if (t.name == OwnerFile || t.name == FormatFile) && t.regular {
			continue
		}
		if t.name == packsDir && t.dir && s.packs != nil {
			continue
		}
		if !t.dir || len(t.name) != 2 {
			if bad != nil {
				bad(sub)
			}
			continue
		}
		ents, err := s.sys.readDir(sub)
		if err != nil {
			return fmt.Errorf("chunk store: %w", err)
		}
		for _, e := range ents {
			var id meta.ChunkID
			b, err := hex.DecodeString(e.name)
			if err != nil || len(b) != len(id) || !e.regular || e.name[:2] != t.name {
				if bad != nil {
					bad(filepath.Join(sub, e.name))
				}
				continue
			}
			copy(id[:], b)
			if err := fn(id); err != nil {
				return err
			}
		}
	}
	return nil
}

// Bytes returns the sum of the sizes of the store's chunks, kept as chunks
// come and go: known (ok) for a store of packs that holds no chunk files
// of format 1 (those are only counted by listing them).
func (s *Store) Bytes() (n int64, ok bool) {
	if s.packs == nil || s.loose {
		return 0, false
	}
	s.packs.mu.RLock()
	defer s.packs.mu.RUnlock()
	return s.packs.bytes, true
}

// Size is the size of chunk id in the store.
func (s *Store) Size(id meta.ChunkID) (int64, error) {
	n, _, err := s.Info(id)
	return n, err
}

// Info returns chunk id's size and when it was last used (written, or read
// by the file system): the cache evicts the least recently used first. A
// chunk not in the store gives an error wrapping fs.ErrNotExist.
func (s *Store) Info(id meta.ChunkID) (int64, time.Time, error) {
	if s.packs != nil {
		if l := s.packs.lookup(id); l != nil {
			return int64(l.n), time.Unix(l.atime, 0), nil
		}
		if !s.loose {
			return 0, time.Time{}, fmt.Errorf("chunk %s: %w", id, fs.ErrNotExist)
		}
	}
	return s.sys.stat(s.Path(id))
}

// OpenExisting opens a store without creating anything (for offline checks).
func OpenExisting(dir string) (*Store, error) {
	isDir, err := osFS{}.isDir(dir)
	if err != nil {
		return nil, fmt.Errorf("chunk store: %w", err)
	}
	if !isDir {
		return nil, fmt.Errorf("chunk store %s: not a directory", dir)
	}
	s := &Store{dir: dir, sys: osFS{}, readOnly: true, unsynced: map[meta.ChunkID]struct{}{}, dirs: map[string]struct{}{}}
	if s.format, err = readFormat(dir, s.sys); err != nil {
		return nil, fmt.Errorf("chunk store: %w", err)
	}
	if s.format == FormatPacks {
		if err := s.openPacks(true); err != nil {
			return nil, err
		}
	} else {
		s.format, s.loose = FormatFiles, true
	}
	return s, nil
}

// openPacks loads the packs of a format 2 store and notes whether format 1
// chunk files remain (an upgrade under way).
func (s *Store) openPacks(readOnly bool) error {
	s.packs = newPackSet(filepath.Join(s.dir, packsDir), s.sys, readOnly)
	if err := s.packs.load(); err != nil {
		return fmt.Errorf("chunk store: %w", err)
	}
	ents, err := s.sys.readDir(s.dir)
	if err != nil {
		return fmt.Errorf("chunk store: %w", err)
	}
	for _, e := range ents {
		if e.dir && len(e.name) == 2 {
			s.loose = true
		}
	}
	return nil
}

// Format is the store's format (FormatFiles or FormatPacks).
func (s *Store) Format() int { return s.format }

// Close releases the store's open files.
func (s *Store) Close() error {
	if s.packs == nil {
		return nil
	}
	return s.packs.close()
}
