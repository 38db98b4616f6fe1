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

	// Restorability (protect.go); guarded by mu.
	protMu           sync.Mutex // serialises computing the live state hash
	snapMu           sync.Mutex // serialises taking snapshots
	protGen          uint64     // 1 + the index generation protHash was computed at
	protKey          []byte     // the key file protHash covers
	protHash         []byte     // state hash of the live index
	snapHash         []byte     // state hash of the newest stored snapshot (R snapshot_hash)
	snapCovers       time.Time  // when that snapshot's export was read (R snapshot_covers)
	unprotectedSince time.Time  // the oldest change not in a stored snapshot (zero: none)
	lastChange       time.Time  // when the live state hash last changed
	syncWanted       time.Time  // a snapshot exported after this is wanted now
	flushing         bool       // upload partly filled segments at once
	closing          bool       // Finish runs
	netFails         int        // rounds in a row that failed on the network
	syncTimeout      time.Duration

	// uploads and fetches count segment transfers (metrics.go).
	uploads, fetches transferStats

	fetchMu  sync.Mutex
	fetching map[meta.SegmentID]*fetchCall
	segCache []cachedSegment
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
	r := &Replicator{cfg: cfg, log: cfg.Logger, faults: cfg.Faults, v: v, idx: idx, store: store, client: client, coder: coder, snap: snap,
		done: make(chan struct{}), kick: make(chan struct{}, 1),
		inflight: map[meta.ChunkID]struct{}{}, firstSeen: map[meta.ChunkID]time.Time{},
		fetching: map[meta.SegmentID]*fetchCall{}, intentsLeft: true}
	r.uploads = newTransferStats("upload", "uploads", "uploaded to the nodes")
	r.fetches = newTransferStats("fetch", "fetches", "fetched from the network")
	r.ctx, r.cancel = context.WithCancel(context.Background())
	r.st.Account = fnet.NodeID(client.Account()).String()
	r.st.Scheme = cfg.Scheme.String()
	r.st.CacheLimit = cfg.CacheSize
	if b, err := idx.GetRepl("last_snapshot"); err == nil && len(b) == 8 {
		r.lastSnapshot = time.Unix(0, int64(beUint64(b)))
	}
	if b, err := idx.GetRepl("last_sync"); err == nil && len(b) == 8 {
		r.lastSync = time.Unix(0, int64(beUint64(b)))
	}
	r.loadProtection()
	store.SetFetcher(r.fetchChunk)
	go r.run()
	return r, nil
}

// Close stops the engine; work in progress is abandoned and resumes at the
// next start (nothing is recorded until a segment is committed).
func (r *Replicator) Close() error {
	r.cancel()
	<-r.done
	r.store.SetFetcher(nil)
	return nil
}

// Kick asks for a scan now (tests, or after a burst of writes).
func (r *Replicator) Kick() {
	select {
	case r.kick <- struct{}{}:
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
	r.mu.Lock()
	trim := r.cacheDirty || time.Since(r.lastEvict) >= evictEvery
	r.cacheDirty = false
	r.mu.Unlock()
	if trim {
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
	id   meta.ChunkID
	ino  uint64
	size int // sealed size
}

// pending lists the chunks referenced by the index that no segment holds,
// in index order. The scan decrypts the whole index, so it is skipped while
// nothing was committed since a scan found nothing pending: an idle mount
// whose data is all on the network does no work.
func (r *Replicator) pending() ([]pendingChunk, error) {
	gen := r.idx.Generation()
	r.mu.Lock()
	settled := r.settledGen == gen+1
	r.mu.Unlock()
	if settled {
		return nil, nil
	}
	out, err := r.scanPending()
	if err == nil && len(out) == 0 {
		r.mu.Lock()
		r.settledGen = gen + 1
		r.mu.Unlock()
	}
	return out, err
}

// scanPending is pending without the shortcut.
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
	err := r.idx.Walk(meta.Visitor{Chunk: func(ino, _ uint64, ref meta.ChunkRef) {
		if _, ok := located[ref.ID]; !ok {
			out = append(out, pendingChunk{id: ref.ID, ino: ino, size: int(ref.Len) + vault.Overhead})
		}
	}})
	if err != nil {
		return nil, fmt.Errorf("scanning the index: %w", err)
	}
	return out, nil
}

// plannedSegment is a group of chunks to upload together.
type plannedSegment struct {
	chunks []pendingChunk
	used   int
}

// uploadPending packs pending chunks into segments and uploads them. It
// returns an error only for a failure of the network (to back off).
func (r *Replicator) uploadPending() error {
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
		files[c.ino] = struct{}{}
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
	// Group by file first, so a file's chunks sit together.
	sort.SliceStable(todo, func(i, j int) bool { return todo[i].ino < todo[j].ino })
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
	// A partly filled segment waits for more chunks, unless its oldest
	// chunk has waited long enough or a snapshot, a sync or an unmount
	// waits for it.
	if len(cur.chunks) > 0 && (now.Sub(oldest) >= r.cfg.FlushAfter || r.urgent()) {
		plan = append(plan, cur)
	}
	if len(plan) == 0 {
		return nil
	}
	return r.uploadAll(plan)
}

// evictEvery is how often the cache is trimmed when nothing was uploaded.
const evictEvery = 10 * time.Second

// uploadAll uploads the planned segments, Parallel at a time.
func (r *Replicator) uploadAll(plan []*plannedSegment) error {
	r.mu.Lock()
	for _, p := range plan {
		for _, c := range p.chunks {
			r.inflight[c.id] = struct{}{}
		}
		r.st.UploadTotal += uint64(p.used)
	}
	r.mu.Unlock()
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
	for _, p := range plan {
		if r.ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			// A goroutine of its own: a panic here would escape the
			// round's protection.
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
	return netErr
}

// uploadSegment builds, uploads and commits one data segment.
func (r *Replicator) uploadSegment(p *plannedSegment) error {
	pk, skipped, err := packSegment(r.store.Get, p.chunks, MaxSegment)
	for _, e := range skipped {
		r.noteErr(e)
	}
	if err != nil {
		return err
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

// put pads content with random bytes to class, erasure-codes, places,
// uploads and commits it. It returns the segment record (not yet written)
// and the number of pieces stored.
func (r *Replicator) put(content []byte, class int) (*meta.Segment, int, error) {
	data, err := padToClass(content, class)
	if err != nil {
		return nil, 0, err
	}
	pieces, err := r.coder.Encode(data)
	if err != nil {
		return nil, 0, err
	}
	s := r.cfg.Scheme
	ids := make([]challenge.PieceID, len(pieces))
	for i, pc := range pieces {
		if ids[i], err = challenge.ComputeID(pc); err != nil {
			return nil, 0, err
		}
	}
	ctx, cancel := context.WithTimeout(r.ctx, r.cfg.CallTimeout)
	pl, err := r.client.Place(ctx, s, int64(len(pieces[0])), ids)
	cancel()
	if err != nil {
		r.notePlaceRefused(err)
		return nil, 0, err
	}
	// Record the intent before anything is stored, so that a crash between
	// the mediator's commit and our record leaves something to release.
	ib := r.idx.NewBatch()
	ib.PutRepl(intentName(meta.SegmentID(pl.Segment)), nil)
	if err := ib.Commit(true); err != nil {
		return nil, 0, fmt.Errorf("recording upload intent: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			r.abandon(meta.SegmentID(pl.Segment))
		}
	}()
	stored, errs := r.uploadPieces(r.ctx, pl, pieces)
	if len(stored) < s.K+1 && len(stored) < s.N {
		return nil, 0, fmt.Errorf("upload: %d of %d pieces stored: %w", len(stored), len(pieces), errors.Join(errs...))
	}
	ctx, cancel = context.WithTimeout(r.ctx, r.cfg.CallTimeout)
	err = r.client.Commit(ctx, pl.Segment, stored)
	cancel()
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
			pctx, cancel := context.WithTimeout(ctx, r.cfg.PieceTimeout+time.Duration(len(pieces[i])>>20)*time.Second)
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
