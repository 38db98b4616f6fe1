package replicate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fincrypt/fincrypt/challenge"
	"github.com/fincrypt/fincrypt/chunkstore"
	"github.com/fincrypt/fincrypt/erasure"
	"github.com/fincrypt/fincrypt/internal/fault"
	"github.com/fincrypt/fincrypt/mediator"
	"github.com/fincrypt/fincrypt/meta"
	fnet "github.com/fincrypt/fincrypt/net"
	"github.com/fincrypt/fincrypt/vault"
)

// Replicator is the running engine of one mounted vault. Start it with New
// next to the mount (fs.Options.Attach) and Close it before the index closes.
type Replicator struct {
	cfg    Config
	log    *slog.Logger
	faults *fault.Board // what background work is failing (Status)
	v      *vault.Vault
	idx    *meta.Index
	store  *chunkstore.Store
	client *mediator.Client
	coder  *erasure.Coder
	snap   *vault.Sealer // seals index snapshots and their segment lists

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	kick   chan struct{}
	// replan is signalled with kick: a round whose uploads run plans
	// again at once (a segment's worth written, a sync asked for) rather
	// than when the next upload ends.
	replan chan struct{}

	mu           sync.Mutex
	inflight     map[meta.ChunkID]struct{} // chunks in segments being uploaded
	firstSeen    map[meta.ChunkID]time.Time
	st           Status // counters for Status (guarded by mu)
	errs         []timedErr
	retryAt      time.Time
	backoff      time.Duration
	cacheDirty   bool // segments were committed since the last cache trim
	intentsLeft  bool // upload intents may need cleanIntents (set at start)
	lastEvict    time.Time
	trimStuck    trimStuck // see evictTo
	lastSync     time.Time // last segment committed (persisted as R last_sync)
	lastSnapshot time.Time // last snapshot pointer stored (R last_snapshot)
	escrow       string    // the mediator's verdict on the account's escrow, when it warns
	// balance is the mediator's latest BalanceReply (at balanceAt);
	// refused the latest placement it refused, until a segment is placed;
	// escrowStale asks for a new balance at the next round.
	balance     *fnet.BalanceReply
	balanceAt   time.Time
	refused     *Refusal
	escrowStale bool
	// settledGen is 1 + the index generation at which a scan found nothing
	// pending (0: none did); until the index changes, nothing is.
	settledGen uint64
	scans      atomic.Int64 // full scans for pending chunks (tests)

	// Passes that would grow with the vault, gated on change (tests count
	// them in passes, rounds and hashes).
	rounds      atomic.Int64  // rounds run
	fetched     atomic.Uint64 // chunks fetched into the store (each one evictable)
	passes      passCounters  // periodic passes that read the whole index or store
	hashes      atomic.Int64  // full hashes of the live index (protect.go)
	sumResets   atomic.Int64  // bases whose records disagreed with the folded state sum (snapshot.go)
	segStats    segStats      // segment counts for Status
	segStatsGen uint64        // 1 + the segment generation they were read at
	// evictGen is 1 + the index generation at the last cache trim;
	// evictEvery how often a change of the index calls for one.
	evictEvery time.Duration
	evictGen   uint64
	// maintGen, maintSnap and maintNext say when maintain has nothing to
	// do: the index is at generation maintGen-1, the stored snapshot
	// covers maintSnap (snapCovers), and no dead segment is due for release before maintNext.
	maintGen  uint64
	maintSnap time.Time
	maintNext time.Time
	// liveCount is maintenance's count of each segment's live bytes,
	// followed by the index's live-bytes feed (nil: walk to count); only
	// maintain touches it.
	liveCount map[meta.SegmentID]uint64

	// Restorability (protect.go); guarded by mu.
	protMu           sync.Mutex   // serialises computing the live state hash
	snapMu           sync.Mutex   // serialises taking snapshots and marking data segments dead
	snapBlob         int          // the last export's size (under snapMu): the next one's buffer
	chain            *snapChain   // the stored pointer's chain, as recorded (R snapshot_chain; under snapMu): nil, the next snapshot is a base
	seqFloor         uint64       // the next pointer's number exceeds it (under snapMu)
	protGen          uint64       // 1 + the index generation protHash was computed at
	protKey          []byte       // the key file protHash covers
	protHash         []byte       // state hash of the live index
	protMiss         []byte       // a snapHash that a hash of the live index missed (protect.go)
	snapStoring      bool         // snapshot is committing a stored snapshot's records
	snapHash         []byte       // state hash of the newest stored snapshot (R snapshot_hash)
	snapCovers       time.Time    // when that snapshot's export was read (R snapshot_covers)
	unprotectedSince time.Time    // the oldest change not in a stored snapshot (zero: none)
	lastChange       time.Time    // when the live state hash last changed
	syncWanted       time.Time    // a snapshot exported after this is wanted now
	commitOpen       func() error // commits what open files hold (CommitBeforeSync), or nil
	flushing         bool         // upload partly filled segments at once
	closing          bool         // Finish runs
	netFails         int          // rounds in a row that failed on the network
	syncTimeout      time.Duration
	// snapGen is 1 + the index state generation (meta.Index.
	// StateGeneration) the stored snapshot covers; 0: not known.
	snapGen uint64

	// unsaved counts what open files hold outside the index (ReportUnsaved),
	// or is nil; guarded by mu.
	unsaved func() (inos []uint64, chunks int, bytes uint64)
	// inodes reports the mount's inode bound (ReportInodes), or is nil;
	// guarded by mu.
	inodes func() InodeStatus

	// uploads and fetches count segment transfers (metrics.go).
	uploads, fetches transferStats

	segBufs bufList // of EncodedSize(MaxSegment) bytes each (segBuf)

	fetchMu  sync.Mutex
	fetching map[meta.SegmentID]*fetchCall
	segCache []cachedSegment
	// segBudget is the bytes segCache may hold (segCacheBytes); segDone
	// the segments whose chunks were all taken, latest last (takeChunk).
	segBudget int
	segDone   []meta.SegmentID
	// fetchFree holds segment buffers no reader or cache entry uses any
	// more, for the next downloads (segBuf); bufReuses counts the downloads
	// that took one (tests).
	fetchFree [][]byte
	bufReuses atomic.Int64
	// piecePace is the typical piece download (the fetches' hedge);
	// pieceHook runs as each starts (tests).
	piecePace piecePace
	pieceHook atomic.Pointer[func(i int)]

	lastRead   meta.SegmentID // the segment a read needed last (prefetchAfter)
	segOrder   *segOrder      // data segments in the order stored (read-ahead)
	closed     bool           // Close began: no new prefetch
	prefetches sync.WaitGroup // prefetches running (Close waits)
	segFetches atomic.Int64   // segment downloads started (tests)
	refills    atomic.Int64   // plans uploadAll took on while uploading (tests)
	uploadBusy atomic.Int64   // nanoseconds spent in segment uploads, summed over slots (benchmarks)
	uploading  atomic.Int64   // segment uploads running now (benchmarks' timeline)
	// drained sums the slot time rounds cut by streamFor left idle
	// (slot-nanoseconds, benchmarks): from the cut until the round's last
	// upload ended, the slots that no upload held, and then every slot
	// until the next round launched an upload. cutEnd is when the last
	// such round's uploads ended (unix nanoseconds; 0: none waits).
	drained    atomic.Int64
	cutEnd     atomic.Int64
	streamFor  time.Duration // streamFor, or what a test sets
	prefetched atomic.Int64  // of which read-ahead (tests)
	stages     stageTimes    // time in each stage of uploads and fetches (benchmarks)
}

// maxLiveChanges bounds the live-bytes changes (meta.LiveChange, 24 bytes
// each) kept between two maintenance passes; past it the next pass walks.
const maxLiveChanges = 1 << 18

// passCounters count the periodic passes whose cost grows with the vault,
// so that tests can assert that an idle mount runs none of them.
type passCounters struct {
	evict    atomic.Int64 // listings of the local store (evictTo)
	maintain atomic.Int64 // walks of every chunk reference
}

// trimStuck is what the last trim that listed the store left: still over
// the limit (set), at segment generation segGen, after fetched fetches
// into the store.
type trimStuck struct {
	set     bool
	segGen  uint64
	fetched uint64
}

type timedErr struct {
	at  time.Time
	msg string
}

// New starts a replicator for the unlocked vault v over the mount's index
// and store, talking to the mediator through client (owned by the caller).
// It installs itself as the store's fetcher.
func New(v *vault.Vault, idx *meta.Index, store *chunkstore.Store, client *mediator.Client, cfg Config) (*Replicator, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	coder, err := erasure.New(cfg.Scheme)
	if err != nil {
		return nil, err
	}
	snap, err := vault.NewSealer(v.Keys.Segment[:], "fincrypt snapshot v1")
	if err != nil {
		return nil, err
	}
	r := &Replicator{streamFor: streamFor, cfg: cfg, log: cfg.Logger, faults: cfg.Faults, v: v, idx: idx, store: store, client: client, coder: coder, snap: snap,
		done: make(chan struct{}), kick: make(chan struct{}, 1), replan: make(chan struct{}, 1),
		inflight: map[meta.ChunkID]struct{}{}, firstSeen: map[meta.ChunkID]time.Time{},
		fetching: map[meta.SegmentID]*fetchCall{}, intentsLeft: true, evictEvery: evictEvery}
	r.segBudget = segCacheBytes(uint64(v.KeyFile.ChunkSize))
	r.uploads = newTransferStats("upload", "uploads", "uploaded to the nodes")
	r.fetches = newTransferStats("fetch", "fetches", "fetched from the network")
	r.ctx, r.cancel = context.WithCancel(context.Background())
	r.st.Account = fnet.NodeID(client.Account()).String()
	r.st.Scheme = cfg.Scheme.String()
	r.st.CacheLimit = cfg.CacheSize
	if b, err := idx.GetRepl("last_snapshot"); err == nil && len(b) == 8 {
		r.lastSnapshot = time.Unix(0, int64(beUint64(b)))
		r.seqFloor = beUint64(b) // no older than the last pointer stored
	}
	if b, err := idx.GetRepl("last_sync"); err == nil && len(b) == 8 {
		r.lastSync = time.Unix(0, int64(beUint64(b)))
	}
	r.loadProtection()
	idx.TrackLive(maxLiveChanges)
	r.loadIdle()
	store.SetAdmission(admission(cfg.CacheSize))
	store.SetFetcherKeep(r.fetchChunk)
	// A segment's worth written starts a round (or the running one
	// plans again) now rather than at the next scan.
	if !cfg.noWake {
		idx.OnPending(uint64(MaxSegment), r.Kick)
	}
	go r.run()
	return r, nil
}

// Close stops the engine; work in progress is abandoned and resumes at the
// next start (nothing is recorded until a segment is committed).
func (r *Replicator) Close() error {
	r.idx.OnPending(0, nil)
	r.cancel()
	<-r.done
	r.fetchMu.Lock()
	r.closed = true
	r.fetchMu.Unlock()
	r.prefetches.Wait()
	r.store.SetFetcher(nil)
	r.store.SetAdmission(chunkstore.Admission{})
	r.saveIdle()
	return nil
}

// Kick asks for a scan now (tests, a sync, or after a burst of writes):
// a round starts, or the running one plans again.
func (r *Replicator) Kick() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
	select {
	case r.replan <- struct{}{}:
	default:
	}
}

func (r *Replicator) noteErr(err error) {
	r.log.Warn("replication", "err", err)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, timedErr{time.Now(), err.Error()})
	if len(r.errs) > 10 {
		r.errs = r.errs[len(r.errs)-10:]
	}
}

func (r *Replicator) run() {
	defer close(r.done)
	t := time.NewTicker(r.tick())
	defer t.Stop()
	var lastCheck, lastMaintain, lastEscrow time.Time
	for {
		// Each duty of a round is protected on its own; this catches a
		// fault in the round's own bookkeeping, so that the engine keeps
		// running whatever happens.
		r.faults.Run("replication", func() error {
			r.round(&lastCheck, &lastMaintain, &lastEscrow)
			return nil
		})
		r.rounds.Add(1)
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
		case <-r.kick:
		}
	}
}

// round is one pass of every duty that is due.
func (r *Replicator) round(lastCheck, lastMaintain, lastEscrow *time.Time) {
	now := time.Now()
	r.mu.Lock()
	wait := now.Before(r.retryAt)
	r.mu.Unlock()
	if wait {
		return
	}
	var netErr error
	r.mu.Lock()
	clean := r.intentsLeft
	r.intentsLeft = false
	r.mu.Unlock()
	if clean {
		if netErr = r.faults.Run("release", r.cleanIntents); netErr != nil {
			r.mu.Lock()
			r.intentsLeft = true
			r.mu.Unlock()
		}
	}
	// Every duty runs as a unit of work (fault.Board.Run): a panic in one
	// fails it like a network error does (recorded, retried with backoff)
	// and leaves the mount serving.
	if netErr == nil {
		netErr = r.faults.Run("upload", r.uploadPending)
	}
	// The escrow is asked even when uploads fail: an empty escrow is one
	// reason they do.
	if r.escrowDue(now, *lastEscrow) {
		r.faults.Run("escrow", func() error { r.checkEscrow(); return nil })
		*lastEscrow = now
	}
	if netErr == nil && now.Sub(*lastCheck) >= r.cfg.CheckInterval {
		if netErr = r.faults.Run("health", r.checkHealth); netErr == nil {
			*lastCheck = now
		}
	}
	if netErr == nil && now.Sub(*lastMaintain) >= r.cfg.MaintainInterval {
		if netErr = r.faults.Run("maintain", r.maintain); netErr == nil {
			*lastMaintain = now
		}
	}
	if netErr == nil {
		netErr = r.faults.Run("snapshot", r.maybeSnapshot)
	}
	// Trimming the cache lists the store: do it after uploads made chunks
	// evictable, and otherwise now and then (reads refill the cache).
	// Nothing changes what the store holds but the index's commits (writes,
	// uploads) and fetches (cacheDirty): an idle mount does not list it.
	gen := r.idx.Generation()
	r.mu.Lock()
	trim := r.trimDueLocked(gen)
	if trim {
		r.cacheDirty = false
	}
	r.mu.Unlock()
	if trim {
		r.mu.Lock()
		r.evictGen = gen + 1
		r.mu.Unlock()
		if err := r.faults.Run("evict", r.evict); err != nil {
			r.noteErr(err)
		}
		r.mu.Lock()
		r.lastEvict = time.Now()
		r.mu.Unlock()
	}
	if netErr != nil && r.ctx.Err() == nil {
		r.noteErr(netErr)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if netErr != nil && r.ctx.Err() == nil {
		if r.backoff == 0 {
			r.backoff = r.cfg.RetryMin
		} else {
			r.backoff = min(2*r.backoff, r.cfg.RetryMax)
		}
		if r.closing {
			r.backoff = r.cfg.RetryMin // an unmount waits: retry at once
		}
		r.retryAt = time.Now().Add(r.backoff)
		r.st.Online = false
		r.netFails++
	} else if netErr == nil {
		r.backoff = 0
		r.netFails = 0
	}
}

// pendingChunk is a chunk that no committed segment holds yet.
type pendingChunk struct {
	id    meta.ChunkID
	ino   uint64 // owner: 0 for a chunk of no file
	index uint64
	size  int // sealed size
}

// pending lists the chunks that no segment holds yet, from the index's
// pending feed (meta.Index.PendingChunks): its cost follows the pending
// work, not the vault. An index without a feed (never the case for a
// mounted one: opening it writable builds the feed) falls back to a walk.
func (r *Replicator) pending() ([]pendingChunk, error) {
	gen := r.idx.Generation()
	r.mu.Lock()
	settled := r.settledGen == gen+1
	r.mu.Unlock()
	if settled {
		return nil, nil
	}
	var out []pendingChunk
	var err error
	if r.idx.FeedReady() {
		err = r.idx.PendingChunks(func(p meta.Pending) error {
			out = append(out, pendingChunk{id: p.ID, ino: p.Owner, index: p.Index, size: int(p.Size)})
			return nil
		})
		if err != nil {
			err = fmt.Errorf("reading the pending feed: %w", err)
		}
	} else {
		out, err = r.scanPending()
	}
	if err == nil && len(out) == 0 {
		r.mu.Lock()
		r.settledGen = gen + 1
		r.mu.Unlock()
	}
	return out, err
}

// scanPending finds the pending chunks by a walk of the whole index (an
// index without a feed; tests compare it with the feed).
func (r *Replicator) scanPending() ([]pendingChunk, error) {
	r.scans.Add(1)
	located := map[meta.ChunkID]struct{}{}
	if err := r.idx.Locations(func(id meta.ChunkID, _ meta.Location) error {
		located[id] = struct{}{}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("scanning locations: %w", err)
	}
	var out []pendingChunk
	pins := map[meta.ChunkID]meta.Pin{} // chunks versions keep, owner-less unless a file has them
	err := r.idx.Walk(meta.Visitor{Chunk: func(ino, idx uint64, ref meta.ChunkRef) {
		delete(pins, ref.ID)
		if _, ok := located[ref.ID]; !ok {
			out = append(out, pendingChunk{id: ref.ID, ino: ino, index: idx, size: int(ref.Len) + vault.Overhead})
		}
	}, Blob: pendingBlob(located, &out), Pin: func(id meta.ChunkID, p meta.Pin) {
		if _, ok := located[id]; !ok {
			pins[id] = p
		}
	}})
	if err != nil {
		return nil, fmt.Errorf("scanning the index: %w", err)
	}
	for id, p := range pins {
		out = append(out, pendingChunk{id: id, size: int(p.Len) + vault.Overhead})
	}
	return out, nil
}

// pendingBlob is where backup blobs (package backup) join the chunks to
// upload in a walk: every blob the index records that no segment holds,
// owner-less as in the pending feed (meta.Batch.PutBlob marks them there).
func pendingBlob(located map[meta.ChunkID]struct{}, out *[]pendingChunk) func(meta.ChunkID, uint32) {
	return func(id meta.ChunkID, plainLen uint32) {
		if _, ok := located[id]; !ok {
			*out = append(*out, pendingChunk{id: id, size: int(plainLen) + vault.Overhead})
		}
	}
}

// plannedSegment is a group of chunks to upload together.
type plannedSegment struct {
	chunks []pendingChunk
	used   int
}

// uploadPending packs pending chunks into segments and uploads them. It
// returns an error only for a failure of the network (to back off).
func (r *Replicator) uploadPending() error {
	plan := r.planPending(false)
	if len(plan) == 0 {
		r.cutEnd.Store(0) // nothing waited for the slots
		r.segBufs.drop()  // an idle engine holds no segment buffers
		return nil
	}
	return r.uploadAll(plan)
}

// planPending packs the pending chunks that no upload holds into segments:
// every full one (the last too, when no chunk fits in what is left), and
// (unless fullOnly) a partly filled one too once its oldest chunk has
// waited FlushAfter or something waits for it (urgent).
func (r *Replicator) planPending(fullOnly bool) []*plannedSegment {
	all, err := r.pending()
	if err != nil {
		r.noteErr(err)
		return nil
	}
	now := time.Now()
	r.mu.Lock()
	seen := make(map[meta.ChunkID]time.Time, len(all))
	var todo []pendingChunk
	var bytes uint64
	files := map[uint64]struct{}{}
	oldest := now
	for _, c := range all {
		t, ok := r.firstSeen[c.id]
		if !ok {
			t = now
		}
		seen[c.id] = t
		bytes += uint64(c.size)
		if c.ino != 0 {
			files[c.ino] = struct{}{}
		}
		if _, busy := r.inflight[c.id]; !busy {
			todo = append(todo, c)
			if t.Before(oldest) {
				oldest = t
			}
		}
	}
	r.firstSeen = seen
	r.st.PendingBytes, r.st.PendingFiles, r.st.PendingChunks = bytes, len(files), len(all)
	r.mu.Unlock()
	if len(todo) == 0 {
		return nil
	}
	// Group by file first, so a file's chunks sit together, in order.
	sort.Slice(todo, func(i, j int) bool {
		if todo[i].ino != todo[j].ino {
			return todo[i].ino < todo[j].ino
		}
		return todo[i].index < todo[j].index
	})
	var plan []*plannedSegment
	cur := &plannedSegment{}
	for _, c := range todo {
		if c.size > MaxSegment {
			r.noteErr(fmt.Errorf("chunk %s of %d bytes exceeds the largest segment", c.id, c.size))
			continue
		}
		if cur.used+c.size > MaxSegment {
			plan = append(plan, cur)
			cur = &plannedSegment{}
		}
		cur.chunks = append(cur.chunks, c)
		cur.used += c.size
	}
	// The last segment is full when no chunk fits in what is left (the
	// smallest sealed chunk, of no plaintext, is vault.Overhead bytes): it
	// goes at once like the others. A partly filled one waits for more
	// chunks, unless its oldest chunk has waited long enough or a
	// snapshot, a sync or an unmount waits for it.
	full := MaxSegment-cur.used < vault.Overhead
	if len(cur.chunks) > 0 && (full || !fullOnly && (now.Sub(oldest) >= r.cfg.FlushAfter || r.urgent())) {
		plan = append(plan, cur)
	}
	return plan
}

// trimDueLocked says whether the cache is to be trimmed (the store listed)
// now, at index generation gen: after a fetch, or after a commit once
// evictEvery has passed since the last trim.
// Without a cache limit a trim only counts the store's bytes, at most every
// CountInterval.
func (r *Replicator) trimDueLocked(gen uint64) bool {
	if r.cfg.CacheSize == 0 {
		return (r.cacheDirty || r.evictGen != gen+1) && time.Since(r.lastEvict) >= r.cfg.CountInterval
	}
	return r.cacheDirty || (time.Since(r.lastEvict) >= r.evictEvery && r.evictGen != gen+1)
}

// evictEvery is how often the cache is trimmed when nothing was uploaded.
const evictEvery = 10 * time.Second

// streamFor bounds how long one round keeps taking newly written chunks
// into its uploads (uploadAll), so that the round's other duties (the
// snapshot, health checks, trimming the cache) still come around while a
// writer never stops.
const streamFor = 10 * time.Second

// uploadAll uploads the planned segments, Parallel at a time. Whenever a
// slot frees up once the plan is done, it plans again from the pending
// feed: chunks written while the round uploads go out in the same round,
// as soon as they fill a segment, and no slot waits for the slowest
// upload of the round to end (for up to streamFor).
func (r *Replicator) uploadAll(plan []*plannedSegment) error {
	begin := time.Now()
	mark := func(more []*plannedSegment) {
		r.mu.Lock()
		for _, p := range more {
			for _, c := range p.chunks {
				r.inflight[c.id] = struct{}{}
			}
			r.st.UploadTotal += uint64(p.used)
		}
		r.mu.Unlock()
	}
	mark(plan)
	defer func() {
		r.mu.Lock()
		for _, p := range plan {
			for _, c := range p.chunks {
				delete(r.inflight, c.id)
			}
		}
		r.st.UploadTotal, r.st.UploadDone = 0, 0
		r.mu.Unlock()
	}()
	sem := make(chan struct{}, r.cfg.Parallel)
	var wg sync.WaitGroup
	var errMu sync.Mutex
	var netErr error
	failed := func() bool {
		errMu.Lock()
		defer errMu.Unlock()
		return netErr != nil
	}
	var running atomic.Int64
	finished := make(chan struct{}, r.cfg.Parallel)
	// cut is when the round stopped taking segments at streamFor (unix
	// nanoseconds; 0: not yet); afterCut sums the uploads' time past it.
	var cut, afterCut atomic.Int64
	for next := 0; r.ctx.Err() == nil; {
		sem <- struct{}{}
		if next == len(plan) {
			// A slot is free and the plan is done: take the full
			// segments written since (a partly filled one waits for the
			// next round, it may fill yet, unless a sync or an unmount
			// waits for it: then it goes now, beside the uploads still
			// running, instead of alone in a round of its own after
			// them), unless the round has run long enough or an upload
			// failed (the round's backoff applies).
			if time.Since(begin) >= r.streamFor || failed() || r.ctx.Err() != nil {
				if !failed() && r.ctx.Err() == nil {
					cut.Store(time.Now().UnixNano())
				}
				<-sem
				break
			}
			more := r.planPending(!r.urgent())
			if len(more) == 0 {
				<-sem
				if running.Load() == 0 {
					break
				}
				// Uploads still run: look again when one ends, when a
				// segment's worth is written or a sync asked for
				// (Kick), or after a scan interval.
				t := time.NewTimer(r.tick())
				select {
				case <-finished:
				case <-r.replan:
				case <-t.C:
				case <-r.ctx.Done():
				}
				t.Stop()
				continue
			}
			mark(more)
			plan = append(plan, more...)
			r.refills.Add(1)
		}
		p := plan[next]
		next++
		if c := r.cutEnd.Swap(0); c != 0 {
			r.drained.Add(int64(r.cfg.Parallel) * max(0, time.Now().UnixNano()-c))
		}
		running.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				running.Add(-1)
				<-sem
				select {
				case finished <- struct{}{}:
				default:
				}
			}()
			// A goroutine of its own: a panic here would escape the
			// round's protection.
			t0 := time.Now()
			r.uploading.Add(1)
			defer func() {
				end := time.Now()
				r.uploadBusy.Add(int64(end.Sub(t0)))
				r.uploading.Add(-1)
				if c := cut.Load(); c != 0 {
					afterCut.Add(max(0, end.UnixNano()-c))
				}
			}()
			if err := r.faults.Protect("upload", func() error {
				r.faults.Hook("upload segment")
				return r.uploadSegment(p)
			}); err != nil {
				errMu.Lock()
				if netErr == nil {
					netErr = err
				}
				errMu.Unlock()
			}
		}()
	}
	wg.Wait()
	if c := cut.Load(); c != 0 {
		end := time.Now().UnixNano()
		r.drained.Add(max(0, int64(r.cfg.Parallel)*(end-c)-afterCut.Load()))
		r.cutEnd.Store(end)
	}
	return netErr
}

// uploadSegment builds, uploads and commits one data segment.
func (r *Replicator) uploadSegment(p *plannedSegment) error {
	// A full segment is packed into a pooled buffer with room for its
	// padding and parity, so that put pads and encodes it without a copy
	// or a fresh 2x-segment allocation; the buffer comes back once put has
	// returned (every piece upload has ended by then).
	t0 := time.Now()
	var buf []byte
	if planned := plannedBytes(p.chunks); planned > MaxSegment/2 {
		bp := r.segBuf()
		defer r.segBufs.put(bp, r.cfg.Parallel)
		buf = *bp
	} else {
		buf = make([]byte, 0, r.coder.EncodedSize(classFor(max(1, min(planned, MaxSegment)))))
	}
	pk, skipped, err := packSegmentInto(r.store.Get, p.chunks, MaxSegment, buf)
	since(&r.stages.pack, t0)
	for _, e := range skipped {
		r.noteErr(e)
	}
	if err != nil {
		return err
	}
	if len(pk.ids) < len(p.chunks) {
		r.forgetGone(p.chunks, pk.ids)
	}
	if len(pk.ids) == 0 {
		return nil
	}
	locs, ids := pk.locs, pk.ids
	used := len(pk.content)
	class := classFor(used)
	start := time.Now()
	seg, pieces, err := r.put(pk.content, class)
	r.uploads.done(start, used, err)
	if err != nil {
		return err
	}
	seg.Kind = meta.KindData
	seg.Used = uint32(used)
	now := time.Now()
	defer since(&r.stages.commit, now)
	b := r.idx.NewBatch()
	b.PutSegment(seg)
	b.DeleteRepl(intentName(seg.ID))
	b.PutRepl("last_sync", putUint64(uint64(now.UnixNano())))
	for i, id := range ids {
		locs[i].Segment = seg.ID
		b.PutLocation(id, &locs[i])
	}
	if err := b.Commit(true); err != nil {
		return fmt.Errorf("recording segment %s: %w", seg.ID, err)
	}
	r.mu.Lock()
	r.lastSync = now
	r.st.Online = true
	r.cacheDirty = true
	r.refused = nil
	r.mu.Unlock()
	r.log.Info("segment durable", "segment", seg.ID, "chunks", len(ids), "bytes", used, "class", class, "pieces", pieces)
	return nil
}

// forgetGone takes off the pending feed the planned chunks that were not
// packed because they are gone from the store and no file references them
// any more (superseded while a repack queued them again). A referenced
// chunk missing from the store stays pending: `fincrypt check` reports it.
func (r *Replicator) forgetGone(planned []pendingChunk, packed []meta.ChunkID) {
	in := make(map[meta.ChunkID]struct{}, len(packed))
	for _, id := range packed {
		in[id] = struct{}{}
	}
	b := r.idx.NewBatch()
	for _, c := range planned {
		if _, ok := in[c.id]; ok || c.ino == 0 {
			continue
		}
		if _, ok := r.store.Has(c.id); ok {
			continue // left for another segment
		}
		ref, ok, err := r.idx.GetChunk(c.ino, c.index)
		if err != nil || (ok && ref.ID == c.id) {
			continue
		}
		b.ForgetPending(c.id)
	}
	if b.Empty() {
		b.Discard()
		return
	}
	if err := b.Commit(false); err != nil {
		r.noteErr(fmt.Errorf("pending feed: %w", err))
	}
}

// put pads content with random bytes to class, erasure-codes, places,
// uploads and commits it. It returns the segment record (not yet written)
// and the number of pieces stored.
func (r *Replicator) put(content []byte, class int) (*meta.Segment, int, error) {
	t := time.Now()
	data, err := padToClass(content, class)
	if err != nil {
		return nil, 0, err
	}
	pieces, err := r.coder.Encode(data)
	if err != nil {
		return nil, 0, err
	}
	t = since(&r.stages.encode, t)
	s := r.cfg.Scheme
	ids, err := pieceIDs(pieces)
	if err != nil {
		return nil, 0, err
	}
	t = since(&r.stages.hash, t)
	ctx, cancel := context.WithTimeout(r.ctx, r.cfg.CallTimeout)
	pl, err := r.client.Place(ctx, s, int64(len(pieces[0])), ids)
	cancel()
	if err != nil {
		r.notePlaceRefused(err)
		return nil, 0, err
	}
	// Record the intent before the mediator's commit, so that a crash
	// between the commit and our record leaves something to release. It is
	// synced while the pieces upload, not before: a crash before the commit
	// leaves an uncommitted placement, which expires at the mediator (its
	// pieces are then collected by the nodes), intent or not; the intent
	// only releases it sooner.
	intent := r.recordIntent(meta.SegmentID(pl.Segment))
	committed := false
	defer func() {
		if !committed {
			intent() // abandon deletes the intent: not before its batch is in
			r.abandon(meta.SegmentID(pl.Segment))
		}
	}()
	t = since(&r.stages.place, t)
	stored, errs := r.uploadPieces(r.ctx, pl, pieces)
	t = since(&r.stages.send, t)
	if len(stored) < s.K+1 && len(stored) < s.N {
		return nil, 0, fmt.Errorf("upload: %d of %d pieces stored: %w", len(stored), len(pieces), errors.Join(errs...))
	}
	if err := intent(); err != nil {
		return nil, 0, fmt.Errorf("recording upload intent: %w", err)
	}
	ctx, cancel = context.WithTimeout(r.ctx, r.cfg.CallTimeout)
	err = r.client.Commit(ctx, pl.Segment, stored)
	cancel()
	since(&r.stages.commit, t)
	if err != nil {
		return nil, 0, err
	}
	committed = true
	seg := &meta.Segment{ID: meta.SegmentID(pl.Segment), State: meta.SegmentDurable, K: uint8(s.K), N: uint8(s.N),
		Healthy: uint8(len(stored)), Class: uint32(class), Created: time.Now().UnixNano(), Checked: time.Now().UnixNano(),
		Pieces: make([]meta.SegmentPiece, s.N)}
	for _, sp := range stored {
		seg.Pieces[sp.Index] = meta.SegmentPiece{Node: sp.Node, Piece: sp.Piece}
	}
	if len(stored) < s.N {
		seg.State = meta.SegmentDegraded
	}
	return seg, len(stored), nil
}

// recordIntent syncs the intent record of segment id in a goroutine of its
// own; the function it returns waits for that and returns its error.
func (r *Replicator) recordIntent(id meta.SegmentID) func() error {
	done := make(chan error, 1)
	go func() {
		// A goroutine of its own: a panic here would escape the
		// upload's protection.
		done <- r.faults.Protect("upload", func() error {
			r.faults.Hook("upload intent")
			ib := r.idx.NewBatch()
			ib.PutRepl(intentName(id), nil)
			return ib.Commit(true)
		})
	}()
	return sync.OnceValue(func() error { return <-done })
}

// pieceIDs computes the Merkle root of every piece, each on its own
// goroutine (all cores hash while other segments wait on the network).
func pieceIDs(pieces [][]byte) ([]challenge.PieceID, error) {
	ids := make([]challenge.PieceID, len(pieces))
	errs := make([]error, len(pieces))
	var wg sync.WaitGroup
	for i, pc := range pieces {
		wg.Go(func() { ids[i], errs[i] = challenge.ComputeID(pc) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return ids, nil
}

// segBuf returns a buffer (length 0) with room for a full segment's
// pieces: EncodedSize of the largest size class.
func (r *Replicator) segBuf() *[]byte {
	return r.segBufs.get(r.coder.EncodedSize(MaxSegment))
}

// bufList is a free list of segment buffers. Unlike a sync.Pool, which
// every garbage collection empties (and an upload collects several times a
// segment), it keeps them across collections: with the pool, most full
// segments allocated and cleared a fresh 2x-segment buffer. It holds at
// most Parallel buffers, and a round with nothing to upload empties it
// (drop), so that an idle engine keeps none. (Emptied at the end of every
// round instead, it allocated more than the pool: while a writer is
// slower than the uploads, rounds end after a segment or two.)
type bufList struct {
	mu   sync.Mutex
	free []*[]byte
	made atomic.Int64 // buffers allocated, for tests
}

// get returns a buffer of length 0 and capacity at least size.
func (l *bufList) get(size int) *[]byte {
	l.mu.Lock()
	for len(l.free) > 0 {
		bp := l.free[len(l.free)-1]
		l.free = l.free[:len(l.free)-1]
		if cap(*bp) >= size {
			l.mu.Unlock()
			*bp = (*bp)[:0]
			return bp
		}
	}
	l.mu.Unlock()
	l.made.Add(1)
	b := make([]byte, 0, size)
	return &b
}

// put returns a buffer no one uses any more; beyond keep buffers it is
// left to the collector.
func (l *bufList) put(bp *[]byte, keep int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.free) < keep {
		l.free = append(l.free, bp)
	}
}

// drop leaves every buffer to the collector.
func (l *bufList) drop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	clear(l.free)
	l.free = l.free[:0]
}

// pieceUploadTimeout bounds the upload of a piece of size bytes:
// PieceTimeout, and a second more per MiB (a node on a slow link, or a
// loaded machine, takes its time over a large piece).
func (r *Replicator) pieceUploadTimeout(size int) time.Duration {
	return r.cfg.PieceTimeout + time.Duration(size>>20)*time.Second
}

// uploadPieces is mediator.Client.Upload with progress accounting.
func (r *Replicator) uploadPieces(ctx context.Context, pl *fnet.PlacementReply, pieces [][]byte) ([]fnet.StoredPiece, []error) {
	errs := make([]error, len(pieces))
	var (
		mu     sync.Mutex
		wg     sync.WaitGroup
		stored []fnet.StoredPiece
	)
	share := uint64(len(pieces[0])) * uint64(r.cfg.Scheme.K) / uint64(len(pieces))
	for i, t := range pl.Targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pctx, cancel := context.WithTimeout(ctx, r.pieceUploadTimeout(len(pieces[i])))
			err := r.faults.Protect("upload", func() error { return r.client.PutPiece(pctx, t, pieces[i]) })
			cancel()
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs[i] = fmt.Errorf("piece %d to %s: %w", i, t.Ticket.Node, err)
				return
			}
			r.mu.Lock()
			r.st.UploadDone += share
			r.mu.Unlock()
			stored = append(stored, fnet.StoredPiece{Index: uint8(i), Node: t.Ticket.Node, Piece: t.Ticket.Piece, Size: uint64(len(pieces[i]))})
		}()
	}
	wg.Wait()
	return stored, errs
}

// abandonGrace is how long abandon may go on after the engine stops.
const abandonGrace = 2 * time.Second

// intentName is the R record kept while segment id is being stored.
func intentName(id meta.SegmentID) string { return "up/" + string(id[:]) }

// abandon releases a segment whose upload or commit failed (the mediator
// may have committed it anyway) and forgets the intent once that is done;
// otherwise cleanIntents tries again later.
func (r *Replicator) abandon(id meta.SegmentID) {
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.CallTimeout)
	defer cancel()
	// It may outlive a stop of the engine, but not by much: the intent is
	// recorded, so the next start releases the segment anyway.
	stop := context.AfterFunc(r.ctx, func() { time.AfterFunc(abandonGrace, cancel) })
	defer stop()
	if err := r.client.Release(ctx, fnet.SegmentID(id)); err != nil && !errors.Is(err, fnet.ErrNotFound) {
		r.mu.Lock()
		r.intentsLeft = true // cleanIntents retries once the network is back
		r.mu.Unlock()
		return
	}
	b := r.idx.NewBatch()
	b.DeleteRepl(intentName(id))
	if err := b.Commit(false); err != nil {
		r.noteErr(err)
	}
}

// cleanIntents releases segments that a previous run placed (and perhaps
// committed) but never recorded: it crashed in between. It returns an error
// only for a failure of the network.
func (r *Replicator) cleanIntents() error {
	var ids []meta.SegmentID
	err := r.idx.ReplRecords("up/", func(name string, _ []byte) error {
		if len(name) == 3+meta.SegmentIDSize {
			ids = append(ids, meta.SegmentID([]byte(name[3:])))
		}
		return nil
	})
	if err != nil {
		r.noteErr(err)
		return nil
	}
	for _, id := range ids {
		if _, err := r.idx.GetSegment(id); err == nil {
			b := r.idx.NewBatch() // recorded after all
			b.DeleteRepl(intentName(id))
			b.Commit(false)
			continue
		}
		ctx, cancel := context.WithTimeout(r.ctx, r.cfg.CallTimeout)
		err := r.client.Release(ctx, fnet.SegmentID(id))
		cancel()
		if err != nil && !errors.Is(err, fnet.ErrNotFound) {
			return err
		}
		b := r.idx.NewBatch()
		b.DeleteRepl(intentName(id))
		if err := b.Commit(false); err != nil {
			r.noteErr(err)
		}
		r.log.Info("released a segment left by an interrupted upload", "segment", id)
	}
	return nil
}

func beUint64(b []byte) uint64 {
	var v uint64
	for _, c := range b[:8] {
		v = v<<8 | uint64(c)
	}
	return v
}

func putUint64(v uint64) []byte {
	b := make([]byte, 8)
	for i := 7; i >= 0; i-- {
		b[i] = byte(v)
		v >>= 8
	}
	return b
}
