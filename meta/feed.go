package meta

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/cockroachdb/pebble/v2"

	"github.com/fincrypt/fincrypt/vault"
)

// The pending feed: what still needs uploading, kept in the index itself so
// that finding it costs in proportion to the pending work, not the vault.
//
// A record `P chunk id (16)` exists exactly while the chunk needs uploading:
// the batch that adds a chunk reference (PutChunk) to a chunk without a
// location adds it, the batch that records the chunk's location
// (PutLocation) or drops its last reference (DeleteChunk, or a PutChunk over
// it) deletes it, in the same atomic Pebble batch, so a crash can never
// separate the feed from the records it follows. Its value names the owner
// (an inode number, 0 for chunks that belong to no file), the chunk's index
// within the owner and the sealed size in the local store.
//
// Producers of chunks that are not chunk-map entries (backup blobs, a
// repack that brings a segment's live chunks back) mark them with
// Batch.MarkPending: the one way to say "upload this". Indexes written by
// format 1 have no feed; the first writable Open rebuilds it once from a
// walk (format 2), and `fincrypt check` verifies it (VerifyFeed).

// Pending is one entry of the pending feed.
type Pending struct {
	ID ChunkID
	// Owner is the inode the chunk belongs to (0: none, e.g. a backup
	// blob); Index is the chunk's index within it.
	Owner, Index uint64
	// Size is the chunk's sealed size in the local store, in bytes.
	Size uint32
}

const pendingValSize = 8 + 8 + 4

func pendingKey(id ChunkID) []byte { return append([]byte{pPending}, id[:]...) }

func (p *Pending) encode() []byte {
	b := make([]byte, pendingValSize)
	binary.BigEndian.PutUint64(b, p.Owner)
	binary.BigEndian.PutUint64(b[8:], p.Index)
	binary.BigEndian.PutUint32(b[16:], p.Size)
	return b
}

func decodePending(id ChunkID, b []byte) (Pending, error) {
	if len(b) != pendingValSize {
		return Pending{}, fmt.Errorf("pending record of chunk %s: %d bytes, want %d: %w", id, len(b), pendingValSize, ErrCorrupt)
	}
	return Pending{ID: id, Owner: beUint64(b), Index: beUint64(b[8:]), Size: binary.BigEndian.Uint32(b[16:])}, nil
}

// MarkPending records in the batch that chunk id needs uploading: the
// replication engine packs it into a segment, and PutLocation (in the batch
// that records where it went) clears the mark. owner is the inode the chunk
// belongs to (0 for none: status counts its bytes but no file), index its
// position there, size its sealed size in the local store. PutChunk marks
// the chunks of files itself; call this for any other chunk that must reach
// the network (backup blobs, a chunk whose location was dropped to repack
// it), in the same batch that makes it needed. With an owner, the mark is
// made only while chunk index of owner is id (as of this batch): a chunk
// that its file dropped meanwhile is not queued.
func (b *Batch) MarkPending(id ChunkID, owner, index uint64, size uint32) {
	if owner != 0 {
		if cur, ok := b.chunkAt(owner, index); !ok || cur != id {
			return
		}
	}
	b.markPending(id, owner, index, size)
}

func (b *Batch) markPending(id ChunkID, owner, index uint64, size uint32) {
	p := Pending{ID: id, Owner: owner, Index: index, Size: size}
	b.set(pendingKey(id), p.encode())
	b.pend(id, true)
	b.pendBytes += uint64(size)
}

// OnPending has fn called each time the sealed bytes that commits marked
// pending (PutChunk, MarkPending) since its last call reach every bytes,
// right after the commit that made them so: the replication engine plans
// a full segment as soon as one is written instead of at its next scan
// (until the thirteenth session the first upload of a large write began
// up to a scan interval, 2 s, after its first segment was filled). The
// count is of marks, not of the feed's size: a chunk marked and cleared
// again still counts. fn runs in the committing goroutine and must not
// block. One hook an index; fn nil removes it. Views do not call it.
func (x *Index) OnPending(every uint64, fn func()) {
	x.wake.mu.Lock()
	defer x.wake.mu.Unlock()
	x.wake.every, x.wake.fn, x.wake.added = max(every, 1), fn, 0
}

// pendWake is OnPending's state.
type pendWake struct {
	mu    sync.Mutex
	every uint64
	fn    func()
	added uint64 // bytes marked since fn was last called
}

func (w *pendWake) add(n uint64) {
	w.mu.Lock()
	fn := w.fn
	if fn == nil {
		w.mu.Unlock()
		return
	}
	w.added += n
	due := w.added >= w.every
	if due {
		w.added = 0
	}
	w.mu.Unlock()
	if due {
		fn()
	}
}

// ForgetPending takes chunk id off the pending feed without recording a
// location: its producer no longer needs it uploaded (a blob it dropped).
// The replication engine uses it for a file's chunk that is gone from the
// store and no longer referenced.
func (b *Batch) ForgetPending(id ChunkID) { b.unmarkPending(id) }

// unmarkPending drops chunk id from the feed in the batch.
func (b *Batch) unmarkPending(id ChunkID) {
	b.del(pendingKey(id))
	b.pend(id, false)
}

func (b *Batch) pend(id ChunkID, on bool) {
	if b.feed == nil {
		b.feed = map[ChunkID]bool{}
	}
	b.feed[id] = on
}

// batchState is what a batch changed of the records the feed follows, so
// that later calls in the same batch see it (Pebble's batch is write-only).
type batchState struct {
	chunks  map[[2]uint64]*ChunkID // chunk map entries set (nil: deleted)
	located map[ChunkID]bool       // locations put (true) or deleted
	feed    map[ChunkID]bool       // pending marks set or cleared
	pins    map[ChunkID]*Pin       // pins put (nil: deleted)
	err     error                  // a failed read; Commit returns it
	refs    map[string]refChange   // chunk references and blobs written, when the RefSum is tracked
	state   bool                   // touched snapshot state (StateGeneration)
	segs    bool                   // touched segment records
	dirents bool                   // touched directory entries (DirentGeneration)
	locs    map[ChunkID]*Location  // locations put (nil: deleted), while the live feed is tracked
	live    []LiveChange           // for the live-bytes feed (live.go)
	dead    map[ChunkID]struct{}   // chunks whose death live holds
	tree    treeBatch              // for the tree feed (treefeed.go)
	olds    map[[2]uint64]oldChunk // chunk-map entries as read from the index (refsum.go)
	changed map[string]struct{}    // exported keys set or deleted, for the change feed (changes.go)

	pendBytes uint64       // sealed bytes marked pending, for OnPending
	inodes    []inodeWrite // inode records written, for the inode cache (inodecache.go)
}

// chunkAt is the chunk id referenced at (ino, idx) as of this batch.
func (b *Batch) chunkAt(ino, idx uint64) (ChunkID, bool) {
	if id, ok := b.chunks[[2]uint64{ino, idx}]; ok {
		if id == nil {
			return ChunkID{}, false
		}
		return *id, true
	}
	seq := b.x.refReadSeq()
	ref, ok, err := b.x.GetChunk(ino, idx)
	if err != nil {
		b.fail(err)
		return ChunkID{}, false
	}
	b.noteOld(ino, idx, ref, ok, seq)
	return ref.ID, ok
}

// isLocated reports whether chunk id has a location as of this batch.
func (b *Batch) isLocated(id ChunkID) bool {
	if l, ok := b.located[id]; ok {
		return l
	}
	ok, err := b.x.has(locationKey(id))
	if err != nil {
		b.fail(err)
	}
	return ok
}

func (b *Batch) fail(err error) {
	if b.err == nil {
		b.err = err
	}
}

func (b *Batch) noteChunk(ino, idx uint64, id *ChunkID) {
	if b.chunks == nil {
		b.chunks = map[[2]uint64]*ChunkID{}
	}
	b.chunks[[2]uint64{ino, idx}] = id
}

func (b *Batch) noteLocated(id ChunkID, on bool) {
	if b.located == nil {
		b.located = map[ChunkID]bool{}
	}
	b.located[id] = on
}

// has reports whether key exists (its value is not opened).
func (x *Index) has(key []byte) (bool, error) {
	x.points.Add(1)
	_, closer, err := x.reader().Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	closer.Close()
	return true, nil
}

// FeedReady reports whether the index keeps the pending feed (format 2); a
// format 1 index opened read-only does not.
func (x *Index) FeedReady() bool { return x.feedReady }

// ErrNoFeed means the index was written by format 1 and opened read-only:
// it has no pending feed.
var ErrNoFeed = errors.New("the index has no pending feed (format 1, opened read-only)")

// PendingChunks calls fn with every entry of the pending feed, in chunk id
// order. Its cost is proportional to the pending work, not to the index.
func (x *Index) PendingChunks(fn func(Pending) error) error {
	if !x.feedReady {
		return ErrNoFeed
	}
	return x.scan([]byte{pPending}, func(key, val []byte) error {
		if len(key) != 1+ChunkIDSize {
			return fmt.Errorf("pending key %x: %w", key, ErrCorrupt)
		}
		p, err := decodePending(ChunkID(key[1:]), val)
		if err != nil {
			return err
		}
		return fn(p)
	})
}

// IsPending reports whether chunk id is in the pending feed.
func (x *Index) IsPending(id ChunkID) (bool, error) { return x.has(pendingKey(id)) }

// FeedFromWalk computes the pending feed from a walk of every chunk
// reference and location: what the feed must hold for the chunks of files.
// Marks of chunks that belong to no file (MarkPending with owner 0) cannot
// be derived and are not in it.
func (x *Index) FeedFromWalk() (map[ChunkID]Pending, error) {
	located := map[ChunkID]struct{}{}
	out := map[ChunkID]Pending{}
	err := x.scan([]byte{pLocation}, func(key, _ []byte) error {
		if len(key) == 1+ChunkIDSize {
			located[ChunkID(key[1:])] = struct{}{}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = x.scan([]byte{pChunk}, func(key, val []byte) error {
		if len(key) != 17 {
			return fmt.Errorf("chunk key %x: %w", key, ErrCorrupt)
		}
		ref, err := decodeChunkRef(val)
		if err != nil {
			return err
		}
		if _, ok := located[ref.ID]; !ok {
			out[ref.ID] = Pending{ID: ref.ID, Owner: beUint64(key[1:]), Index: beUint64(key[9:]), Size: ref.Len + vault.Overhead}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// Backup blobs (owner-less marks), unless a file chunk has the same id.
	err = x.scan([]byte{pBlob}, func(key, val []byte) error {
		if len(key) != 1+ChunkIDSize {
			return fmt.Errorf("blob key %x: %w", key, ErrCorrupt)
		}
		n, err := decodeBlob(val)
		if err != nil {
			return err
		}
		id := ChunkID(key[1:])
		if _, ok := located[id]; !ok {
			if _, dup := out[id]; !dup {
				out[id] = Pending{ID: id, Size: n + vault.Overhead}
			}
		}
		return nil
	})
	if err != nil {
		return out, err
	}
	// Chunks versions pin (owner-less marks), unless a file still has them.
	err = x.scan([]byte{pPin}, func(key, val []byte) error {
		if len(key) != 1+ChunkIDSize {
			return fmt.Errorf("pin key %x: %w", key, ErrCorrupt)
		}
		p, err := decodePin(val)
		if err != nil {
			return err
		}
		id := ChunkID(key[1:])
		if _, ok := located[id]; !ok {
			if _, dup := out[id]; !dup {
				out[id] = Pending{ID: id, Size: p.Len + vault.Overhead}
			}
		}
		return nil
	})
	return out, err
}

// FeedReport compares the pending feed with a walk (VerifyFeed).
type FeedReport struct {
	Entries int // records in the feed
	// Missing are chunks the walk finds pending and the feed lacks: they
	// would never be uploaded.
	Missing []ChunkID
	// Stale are feed records of file chunks that are located or no longer
	// referenced (owner-less marks are not judged).
	Stale []ChunkID
}

// OK reports whether the feed agrees with the walk.
func (f *FeedReport) OK() bool { return len(f.Missing) == 0 && len(f.Stale) == 0 }

// VerifyFeed compares the pending feed with what a full walk finds.
func (x *Index) VerifyFeed() (FeedReport, error) {
	var rep FeedReport
	want, err := x.FeedFromWalk()
	if err != nil {
		return rep, err
	}
	seen := map[ChunkID]bool{}
	err = x.PendingChunks(func(p Pending) error {
		rep.Entries++
		seen[p.ID] = true
		if _, ok := want[p.ID]; !ok && p.Owner != 0 {
			rep.Stale = append(rep.Stale, p.ID)
		}
		return nil
	})
	if err != nil {
		return rep, err
	}
	for id := range want {
		if !seen[id] {
			rep.Missing = append(rep.Missing, id)
		}
	}
	return rep, nil
}

// rebuildFeed replaces the pending feed with what a walk finds (keeping
// owner-less marks whose chunk has no location) and writes the format
// record, in one batch: an index written by format 1 gets its feed once.
// It returns the number of records in the feed.
func (x *Index) rebuildFeed() (int, error) {
	want, err := x.FeedFromWalk()
	if err != nil {
		return 0, fmt.Errorf("rebuilding the pending feed: %w", err)
	}
	keep := map[ChunkID]Pending{}
	if x.feedReady {
		err = x.PendingChunks(func(p Pending) error {
			if _, found := want[p.ID]; p.Owner == 0 && !found {
				if ok, err := x.has(locationKey(p.ID)); err != nil {
					return err
				} else if !ok {
					keep[p.ID] = p
				}
			}
			return nil
		})
		if err != nil {
			return 0, fmt.Errorf("rebuilding the pending feed: %w", err)
		}
	}
	b := x.db.NewBatch()
	defer b.Close()
	if err := b.DeleteRange([]byte{pPending}, []byte{pPending + 1}, nil); err != nil {
		return 0, err
	}
	for _, m := range []map[ChunkID]Pending{want, keep} {
		for id, p := range m {
			k := pendingKey(id)
			if err := b.Set(k, x.keys.Meta.Seal(nil, p.encode(), k), nil); err != nil {
				return 0, err
			}
		}
	}
	// Format 2, or the format it had if that is newer (a repair keeps
	// the change feed on).
	format := max(x.format, formatFeed)
	fk := []byte{pFormat}
	if err := b.Set(fk, x.keys.Meta.Seal(nil, binary.BigEndian.AppendUint32(nil, format), fk), nil); err != nil {
		return 0, err
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return 0, fmt.Errorf("rebuilding the pending feed: %w", err)
	}
	x.gen.Add(1)
	x.feedReady = true
	x.format = format
	return len(want) + len(keep), nil
}

// RebuildFeed rebuilds the pending feed from a full walk (a repair: the
// feed is kept exact by every batch, so this is needed only for an index
// that something other than this package changed).
func (x *Index) RebuildFeed() (int, error) { return x.rebuildFeed() }
