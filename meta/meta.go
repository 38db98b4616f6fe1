// Package meta is the client's local index: inodes, directory entries, chunk
// maps, extended attributes, counters and the orphan list, kept in Pebble.
//
// Every value is sealed with vault.Keys.Meta under its own Pebble key as
// associated data, so a value cannot be moved to another key. Keys hold no
// names: a directory entry's key carries a keyed hash of its name
// (vault.Keys.NameMAC) and the sealed value carries the name itself. The key
// layout is versioned by a format record; docs/FORMAT.md §2 describes it.
//
// The index also keeps the pending feed (feed.go): the chunks that still
// need uploading, maintained in the same batches that change chunk
// references and locations, so that the replication engine and `fincrypt
// status` find pending work at a cost proportional to it. A producer of
// chunks that are not chunk-map entries marks one as needing upload with
// Batch.MarkPending (and takes the mark back with Batch.ForgetPending);
// Batch.PutLocation clears it once the chunk is in a committed segment.
package meta

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/fincrypt/fincrypt/internal/pebblesched"
	"github.com/fincrypt/fincrypt/vault"
)

// FormatVersion is the newest version of the key layout this package
// reads and writes. It reads format 1 too: format 2 adds the pending feed
// (feed.go), which the first writable Open of a format 1 index builds from
// a walk; format 3 adds the change feed (changes.go), which only an index
// whose vault takes network snapshots keeps (StartChanges). A new index is
// format 2.
const FormatVersion = formatChanges

// formatNoFeed is the format before the pending feed; formatFeed has it;
// formatChanges keeps the change feed too.
const (
	formatNoFeed  = 1
	formatFeed    = 2
	formatChanges = 3
)

// Key prefixes (one byte each). Documented in docs/FORMAT.md §2.
const (
	pFormat  = 'F' // F                        -> format record
	pCounter = 'C' // C name                   -> uint64 (reserved ceiling)
	pInode   = 'I' // I ino(8)                 -> inode record
	pDirent  = 'D' // D parent(8) mac(16)      -> dirent record
	pChunk   = 'M' // M ino(8) index(8)        -> chunk reference
	pXattr   = 'X' // X ino(8) mac(16)         -> xattr record
	pOrphan  = 'O' // O ino(8)                 -> empty (unlinked while open)
	pPending = 'P' // P chunkid(16)            -> pending feed entry (format 2)
	// U ... -> the version cache (treecache.go)
	// K chunkid(16) -> pin record (pins.go, a version of the mount keeps the chunk)
)

// RootIno is the inode number of the root directory.
const RootIno = 1

// Counter reservation steps: a counter is persisted as a ceiling, and values
// below it are handed out from memory, so no value is ever handed out twice
// even if commits are lost in a crash.
const (
	inoStep     = 1 << 12
	versionStep = 1 << 16
)

// Errors callers test for.
var (
	// ErrNotFound means the record does not exist.
	ErrNotFound = errors.New("not found")
	// ErrCorrupt means a record failed to decrypt or decode.
	ErrCorrupt = errors.New("index record is corrupt")
	// ErrForeignIndex means the index's format record does not open with
	// this vault's key: the index belongs to another vault, or is damaged.
	ErrForeignIndex = errors.New("the index does not open with this vault's key (it belongs to another vault, or is damaged)")
)

// Options tune Open.
type Options struct {
	// ReadOnly opens the index without writing (used by Check).
	ReadOnly bool
	// Logger receives Pebble's messages at debug level; nil discards them.
	Logger *slog.Logger
	// FS is the file system the index lives on; nil means the operating
	// system's (tests pass a crashable in-memory one).
	FS vfs.FS
}

// Exists reports whether dir holds an index (a Pebble database), as
// opposed to nothing or an empty directory.
func Exists(dir string, fs vfs.FS) (bool, error) {
	if fs == nil {
		fs = vfs.Default
	}
	if _, err := fs.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	d, err := pebble.Peek(dir, fs)
	if err != nil {
		return false, fmt.Errorf("index %s: %w", dir, err)
	}
	return d.Exists, nil
}

// Index is an open index. Its methods are safe for concurrent use; callers
// serialise read-modify-write sequences themselves.
type Index struct {
	db   *pebble.DB
	keys *vault.Keys

	mu      sync.Mutex
	counter map[string]*counter
	log     *slog.Logger
	dir     string
	fs      vfs.FS

	gen    atomic.Uint64 // see Generation
	sgen   atomic.Uint64 // see StateGeneration
	seggen atomic.Uint64 // see SegmentGeneration
	dgen   atomic.Uint64 // see DirentGeneration

	feedReady bool          // the pending feed is kept (format 2)
	pinState  atomic.Int32  // pinsUnknown, pinsNone or pinsSome (pins.go)
	rd        pebble.Reader // a View's snapshot; nil: db
	dropMu    sync.Mutex    // see LockDrops

	refMu  sync.Mutex // serialises the commits that change refSum
	refSum RefSum     // see TrackRefs
	refOn  bool
	refs   refWrites     // which chunk references recent commits wrote (refsum.go)
	read   *atomic.Int64 // records read by scans (RecordsRead), shared with views
	points *atomic.Int64 // point reads (PointsRead), shared with views

	liveFeed liveFeed    // see TrackLive
	treeFeed treeFeed    // see CutTree
	chg      changeFeed  // see StartChanges
	fold     foldState   // see Fold
	format   uint32      // the format record's version
	wake     pendWake    // see OnPending
	icache   *inodeCache // inodes this process wrote last (inodecache.go); shared with views, read only by the index
}

// RecordsRead counts the records that scans and walks of the index have
// read since it was opened (point reads not included): what a cost that must
// not grow with the vault is measured in.
func (x *Index) RecordsRead() int64 { return x.read.Load() }

// PointsRead counts the point reads (records looked up by key, found or
// not) of the index and its views since it was opened.
func (x *Index) PointsRead() int64 { return x.points.Load() }

// Generation counts the batches committed to the index since it was opened.
// It grows after a commit is visible, so a reader that notes it before a
// scan and finds it unchanged later knows that nothing changed since.
func (x *Index) Generation() uint64 { return x.gen.Load() }

// StateGeneration counts the committed batches that changed what an index
// snapshot captures: every record but the replication engine's state, the
// pending feed, and the health of live segments (a data segment's death or
// release counts). It grows after the commit is visible.
func (x *Index) StateGeneration() uint64 { return x.sgen.Load() }

// SegmentGeneration counts the committed batches that wrote or deleted a
// segment record.
func (x *Index) SegmentGeneration() uint64 { return x.seggen.Load() }

// DirentGeneration counts the committed batches that wrote or deleted a
// directory entry. It grows after the commit is visible, so a listing made
// after noting it still names what each entry points to while it is
// unchanged.
func (x *Index) DirentGeneration() uint64 { return x.dgen.Load() }

type counter struct {
	next, ceiling uint64
}

type pebbleLogger struct{ l *slog.Logger }

func (p pebbleLogger) Infof(format string, args ...any) {
	p.l.Debug(fmt.Sprintf(format, args...))
}
func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...))
}
func (p pebbleLogger) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf("pebble: "+format, args...))
}

// BlockCacheSize bounds the index's block cache (Pebble's default is 8 MiB).
//
// Every request of a mount reads the index: a LOOKUP of a name a program is
// about to create reads, in each table that may hold it, the table's index
// and filter blocks; a create or close reads the directory's and the file's
// records. Once the index's tables outgrew 8 MiB (a few tens of thousands
// of files) those blocks were evicted by one another and read back from the
// files: creating 100,000 empty files on a fresh vault (19 MiB of tables
// by the end), 16 % of the mount's CPU was block reads that missed the
// cache, 8 % pread(2) itself. The cache holds only blocks that were read,
// so it never grows past the part of the index in use: a small vault's
// mount pays nothing for the larger bound, and 64 MiB keeps the index and
// filter blocks of an index of several hundred MiB (a million files)
// together with its recently used records, while bounding the mount's
// memory in any vault.
const BlockCacheSize = 64 << 20

// Open opens (creating it if needed, unless read-only) the index in dir.
func Open(dir string, keys *vault.Keys, opt Options) (*Index, error) {
	lg := opt.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	cache := pebble.NewCache(BlockCacheSize)
	defer cache.Unref() // the database holds its own reference
	po := &pebble.Options{ReadOnly: opt.ReadOnly, Logger: pebbleLogger{lg}, FS: opt.FS, Cache: cache}
	// Bloom filters in the tables: most point reads of a mount's writes
	// look for what is not there (a new file's chunk entry, a new chunk's
	// location), which without a filter reads a block of every table that
	// might hold it.
	for i := range po.Levels {
		po.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	// Compactions are granted on the database's events, not by a goroutine
	// polling ten times a second for the mount's whole life, and no
	// disk-health ticker wakes it every 2 s (pebblesched.Quiet).
	pebblesched.Quiet(po)
	if opt.ReadOnly {
		po.ErrorIfNotExists = true
	}
	db, err := pebble.Open(dir, po)
	if err != nil {
		return nil, fmt.Errorf("index %s: %w", dir, err)
	}
	fsys := opt.FS
	if fsys == nil {
		fsys = vfs.Default
	}
	x := &Index{db: db, keys: keys, counter: map[string]*counter{}, log: lg, dir: dir, fs: fsys,
		read: new(atomic.Int64), points: new(atomic.Int64), icache: newInodeCache()}
	if err := x.checkFormat(opt.ReadOnly); err != nil {
		db.Close()
		return nil, err
	}
	if err := x.openTreeCache(); err != nil {
		db.Close()
		return nil, fmt.Errorf("index %s: %w", dir, err)
	}
	return x, nil
}

func (x *Index) checkFormat(readOnly bool) error {
	key := []byte{pFormat}
	val, err := x.get(key)
	if errors.Is(err, ErrNotFound) {
		if readOnly {
			return fmt.Errorf("index has no format record: %w", ErrCorrupt)
		}
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], formatFeed)
		x.feedReady = true // a new index: its feed is empty, and exact
		x.format = formatFeed
		return x.db.Set(key, x.keys.Meta.Seal(nil, b[:], key), pebble.Sync)
	}
	if errors.Is(err, ErrCorrupt) {
		return fmt.Errorf("index format record: %w: %w", ErrForeignIndex, err)
	}
	if err != nil {
		return fmt.Errorf("index format record: %w", err)
	}
	if len(val) != 4 {
		return fmt.Errorf("index format record is %d bytes, want 4: %w", len(val), ErrCorrupt)
	}
	v := binary.BigEndian.Uint32(val)
	x.format = v
	switch {
	case v == formatChanges:
		x.feedReady = true
		x.chg.on = true
	case v == formatFeed:
		x.feedReady = true
	case v == formatNoFeed && readOnly:
		// Read as it is: everything but the feed is the same.
	case v == formatNoFeed:
		n, err := x.rebuildFeed()
		if err != nil {
			return fmt.Errorf("upgrading the index from format %d to %d: %w", v, FormatVersion, err)
		}
		x.log.Info("index upgraded: pending feed built from a walk", "from", v, "to", FormatVersion, "pending", n)
	default:
		return fmt.Errorf("index format %d, this fincrypt reads formats %d to %d", v, formatNoFeed, FormatVersion)
	}
	return nil
}

// CheckTables verifies that every table file the index's manifest lists
// is there with its recorded size: a check that costs a stat per table,
// not a read of every record (the mount's check after a clean unmount).
func (x *Index) CheckTables() error {
	levels, err := x.db.SSTables()
	if err != nil {
		return err
	}
	seen := map[uint64]bool{}
	for _, level := range levels {
		for _, t := range level {
			n := uint64(t.BackingSSTNum)
			if seen[n] {
				continue
			}
			seen[n] = true
			p := x.fs.PathJoin(x.dir, fmt.Sprintf("%06d.sst", n))
			st, err := x.fs.Stat(p)
			if err != nil {
				return fmt.Errorf("index table %s: %w", p, err)
			}
			if !t.Virtual && uint64(st.Size()) != t.Size {
				return fmt.Errorf("index table %s is %d bytes, the manifest says %d: %w", p, st.Size(), t.Size, ErrCorrupt)
			}
		}
	}
	return nil
}

// Close closes the index.
func (x *Index) Close() error {
	x.fold.closeAll()
	return x.db.Close()
}

// Flush writes what the index holds in memory to table files (tests of
// damaged tables use it).
func (x *Index) Flush() error { return x.db.Flush() }

// Sync makes every commit so far durable.
func (x *Index) Sync() error { return x.db.LogData(nil, pebble.Sync) }

// get returns the opened value stored under key.
func (x *Index) get(key []byte) ([]byte, error) {
	x.points.Add(1)
	v, closer, err := x.reader().Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	defer closer.Close()
	pt, err := x.keys.Meta.Open(nil, v, key)
	if err != nil {
		return nil, fmt.Errorf("record %x: %w: %w", key, ErrCorrupt, err)
	}
	return pt, nil
}

// scan calls fn with every key with the given prefix and its opened value.
// Both slices are valid only during the call.
func (x *Index) scan(prefix []byte, fn func(key, val []byte) error) error {
	return x.scanRange(prefix, prefixEnd(prefix), fn)
}

// scanRange is scan over the keys in [lower, upper).
func (x *Index) scanRange(lower, upper []byte, fn func(key, val []byte) error) error {
	it, err := x.reader().NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return err
	}
	defer it.Close()
	var buf []byte
	for ok := it.First(); ok; ok = it.Next() {
		x.read.Add(1)
		v, err := it.ValueAndErr()
		if err != nil {
			return err
		}
		buf, err = x.keys.Meta.Open(buf[:0], v, it.Key())
		if err != nil {
			return fmt.Errorf("record %x: %w: %w", it.Key(), ErrCorrupt, err)
		}
		if err := fn(it.Key(), buf); err != nil {
			return err
		}
	}
	return it.Error()
}

// prefixEnd returns the smallest key greater than every key with prefix.
func prefixEnd(prefix []byte) []byte {
	end := append([]byte(nil), prefix...)
	for i := len(end) - 1; i >= 0; i-- {
		end[i]++
		if end[i] != 0 {
			return end[:i+1]
		}
	}
	return nil
}

func key8(p byte, a uint64) []byte {
	k := make([]byte, 9)
	k[0] = p
	binary.BigEndian.PutUint64(k[1:], a)
	return k
}

func key16(p byte, a, b uint64) []byte {
	k := make([]byte, 17)
	k[0] = p
	binary.BigEndian.PutUint64(k[1:], a)
	binary.BigEndian.PutUint64(k[9:], b)
	return k
}

func keyMAC(p byte, a uint64, mac [16]byte) []byte {
	k := make([]byte, 25)
	k[0] = p
	binary.BigEndian.PutUint64(k[1:], a)
	copy(k[9:], mac[:])
	return k
}

// next hands out the next value of a named counter, first persisting a new
// ceiling when the reserved range is used up.
func (x *Index) next(name string, step uint64, first uint64) (uint64, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	c := x.counter[name]
	key := append([]byte{pCounter}, name...)
	if c == nil {
		c = &counter{next: first, ceiling: first}
		val, err := x.get(key)
		switch {
		case errors.Is(err, ErrNotFound):
		case err != nil:
			return 0, fmt.Errorf("counter %s: %w", name, err)
		case len(val) != 8:
			return 0, fmt.Errorf("counter %s is %d bytes: %w", name, len(val), ErrCorrupt)
		default:
			c.next = binary.BigEndian.Uint64(val)
			c.ceiling = c.next
		}
		x.counter[name] = c
	}
	if c.next >= c.ceiling {
		// Commit order in the WAL makes this reservation durable before any
		// later commit that uses a value from it.
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], c.ceiling+step)
		cb := &Batch{x: x, b: x.db.NewBatch()}
		if err := cb.b.Set(key, x.keys.Meta.Seal(nil, b[:], key), nil); err != nil {
			cb.b.Close()
			return 0, fmt.Errorf("counter %s: %w", name, err)
		}
		cb.noteChange(key) // the change feed follows counters too
		unlock := cb.addChanges()
		err := cb.b.Commit(pebble.NoSync)
		cb.b.Close()
		if unlock != nil {
			unlock()
		}
		if err != nil {
			return 0, fmt.Errorf("counter %s: %w", name, err)
		}
		c.ceiling += step
	}
	v := c.next
	c.next++
	return v, nil
}

// NextIno returns a fresh inode number, never handed out before.
func (x *Index) NextIno() (uint64, error) { return x.next("ino", inoStep, RootIno+1) }

// NextVersion returns a fresh chunk version, never handed out before.
func (x *Index) NextVersion() (uint64, error) { return x.next("version", versionStep, 1) }

// Batch collects changes that commit atomically.
type Batch struct {
	x *Index
	b *pebble.Batch
	batchState
}

// NewBatch starts a batch.
func (x *Index) NewBatch() *Batch { return &Batch{x: x, b: x.db.NewBatch()} }

func (b *Batch) set(key, val []byte) {
	b.touch(key)
	b.noteChange(key)
	b.noteTreeKey(key, false)
	// The value is sealed straight into the batch's own memory (a Set
	// would copy a sealed copy made first: one allocation per value, three
	// or more for every file created or closed). Finish fails only in an
	// indexed batch (NewBatch's is not).
	op := b.b.SetDeferred(len(key), len(val)+vault.Overhead)
	copy(op.Key, key)
	if sealed := b.x.keys.Meta.Seal(op.Value[:0], val, key); len(sealed) != len(op.Value) || &sealed[0] != &op.Value[0] {
		panic(fmt.Sprintf("meta: sealed value of %d bytes, room for %d", len(sealed), len(op.Value)))
	}
	if err := op.Finish(); err != nil {
		panic(err)
	}
}

func (b *Batch) del(key []byte) {
	b.touch(key)
	b.noteChange(key)
	b.noteTreeKey(key, true)
	if err := b.b.Delete(key, nil); err != nil {
		panic(err)
	}
}

// Empty reports whether the batch holds no change.
func (b *Batch) Empty() bool { return b.b.Empty() }

// Commit applies the batch. With sync, it and every earlier commit are
// durable when Commit returns.
func (b *Batch) Commit(sync bool) error {
	defer b.b.Close()
	if b.err != nil {
		return fmt.Errorf("index batch not applied: %w", b.err)
	}
	if b.b.Empty() {
		if sync {
			return b.x.Sync()
		}
		return nil
	}
	opt := pebble.NoSync
	if sync {
		opt = pebble.Sync
	}
	if f := &b.x.treeFeed; f.marks.Load() && (len(b.tree.inodes) > 0 || len(b.tree.dirs) > 0) {
		// Marked in the current epoch, visible before CutTree ends it.
		f.cut.RLock()
		defer f.cut.RUnlock()
		b.addMarks(f.epoch)
	}
	if unlock := b.addChanges(); unlock != nil {
		// Stamped with the open epoch, visible before ChangeView ends it.
		defer unlock()
	}
	if len(b.refs) > 0 {
		if err := b.commitRefs(); err != nil {
			return err
		}
		if sync {
			// Syncing the log makes this batch durable with it; the
			// sync runs outside refMu, so concurrent commits still
			// share one.
			if err := b.x.Sync(); err != nil {
				return err
			}
		}
	} else if err := b.b.Commit(opt); err != nil {
		return err
	}
	if len(b.inodes) > 0 {
		b.x.icache.wrote(uint64(b.b.SeqNum()), b.inodes)
	}
	if b.state {
		b.x.sgen.Add(1)
	}
	if b.segs {
		b.x.seggen.Add(1)
	}
	if b.dirents {
		b.x.dgen.Add(1)
	}
	b.x.noteLive(b.live)
	b.x.gen.Add(1)
	if b.pendBytes > 0 {
		b.x.wake.add(b.pendBytes)
	}
	return nil
}

// touch notes what kind of record a change touches: engine state (R), the
// pending feed (P) and segment records (S) are not snapshot state by
// themselves (PutSegment and DeleteSegment say when they are).
func (b *Batch) touch(key []byte) {
	switch {
	case len(key) > 0 && key[0] == pSegment:
		b.segs = true
	case len(key) > 0 && (key[0] == pRepl || key[0] == pPending || key[0] == pTreeCache || key[0] == pChange):
	default:
		b.state = true
		b.dirents = b.dirents || (len(key) > 0 && key[0] == pDirent)
	}
}

// Discard drops the batch without applying it.
func (b *Batch) Discard() { b.b.Close() }
