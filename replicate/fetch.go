package replicate

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync/atomic"
	"time"

	"github.com/fincrypt/fincrypt/challenge"
	"github.com/fincrypt/fincrypt/chunkstore"
	"github.com/fincrypt/fincrypt/erasure"
	"github.com/fincrypt/fincrypt/internal/fault"
	"github.com/fincrypt/fincrypt/internal/readwin"
	"github.com/fincrypt/fincrypt/mediator"
	"github.com/fincrypt/fincrypt/meta"
	fnet "github.com/fincrypt/fincrypt/net"
)

// fetchTimeout bounds the fetch of one evicted chunk's segment.
const fetchTimeout = 2 * time.Minute

// segCacheMin is the least memory the decoded segments may take.
const segCacheMin = 72 << 20

// segCacheBytes bounds the decoded segments kept in memory for readers of
// chunks of cs bytes. Segments whose chunks have all been handed to the
// store (which keeps them) leave first, so that a segment is kept until
// every chunk it holds has been taken and reading a segment's chunks, in
// any order the file system's read-ahead asks for them, downloads it once.
// The segments a sequential reader has not taken
// whole are those its window overlaps (readwin.Bytes of the file, plus one
// segment at either end) and those fetched ahead of it (prefetchAhead):
// the bound holds them all at the largest size class, and never less than
// segCacheMin. A segment that leaves under this bound (random reads, or a
// segment with chunks no reader asks for: superseded, or another file's)
// is the least recently used of those not taken whole.
func segCacheBytes(cs uint64) int {
	largest := uint64(SizeClasses[len(SizeClasses)-1])
	return int(max(segCacheMin, readwin.Bytes(cs)+(prefetchAhead+2)*largest))
}

// segDoneMax bounds the segments remembered as taken whole (segDone), which
// the read-ahead does not fetch again.
const segDoneMax = 256

type cachedSegment struct {
	id   meta.SegmentID
	data []byte
	// used is the segment's bytes of sealed chunks; taken the offsets of
	// the chunks handed out, and takenBytes their length: at used, every
	// chunk is in the store and the segment is taken whole.
	used       uint64
	taken      map[uint32]struct{}
	takenBytes uint64
	whole      bool
}

type fetchCall struct {
	done chan struct{}
	data []byte
	err  error
}

// fetchChunk is the store's Fetcher: it returns the sealed bytes of an
// evicted chunk from its segment on the network. It runs in the reader's
// FUSE request, but its work is the engine's: a fault in it fails that
// read (EIO), is recorded as a fault of "fetch", and leaves the mount
// serving; the next read tries again.
func (r *Replicator) fetchChunk(id meta.ChunkID) (sealed []byte, err error) {
	err = r.faults.Protect("fetch", func() error {
		r.faults.Hook("fetch")
		sealed, err = r.fetchChunkUnprotected(id)
		return err
	})
	switch {
	case err == nil:
		r.faults.OK("fetch")
		r.noteFetched()
	case !errors.Is(err, chunkstore.ErrNotFound):
		r.faults.Fail("fetch", err)
	}
	return sealed, err
}

// noteFetched records that the store holds one more chunk, from the
// network: one a trim can evict.
func (r *Replicator) noteFetched() {
	r.fetched.Add(1)
	r.mu.Lock()
	r.cacheDirty = true // trim it
	r.mu.Unlock()
}

func (r *Replicator) fetchChunkUnprotected(id meta.ChunkID) ([]byte, error) {
	loc, err := r.idx.GetLocation(id)
	if errors.Is(err, meta.ErrNotFound) {
		return nil, chunkstore.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	seg, err := r.idx.GetSegment(loc.Segment)
	if err != nil {
		return nil, err
	}
	data, err := r.segment(seg)
	if err != nil {
		return nil, err
	}
	end := uint64(loc.Offset) + uint64(loc.Length)
	if end > uint64(len(data)) {
		return nil, fmt.Errorf("segment %s: location %d+%d beyond its %d bytes: %w", seg.ID, loc.Offset, loc.Length, len(data), meta.ErrCorrupt)
	}
	r.takeChunk(seg.ID, loc)
	// The segment's bytes are never written once decoded (the cache and
	// every reader share them), and the store only reads what a fetcher
	// returns: the chunk is handed over without a copy.
	return data[loc.Offset:end:end], nil
}

// segment returns a segment's padded content, from memory or the network;
// concurrent requests for one segment share one download. A reader that
// moves on to the data segment stored after the one it read last is taken
// to read sequentially: the next ones are fetched ahead (prefetch).
func (r *Replicator) segment(seg meta.Segment) ([]byte, error) {
	r.prefetchAfter(seg)
	return r.fetchSegment(seg, false)
}

// fetchSegment is segment without the read-ahead; a prefetch records no
// error (the read that needs the segment will).
func (r *Replicator) fetchSegment(seg meta.Segment, prefetch bool) ([]byte, error) {
	r.fetchMu.Lock()
	if data, ok := r.cachedLocked(seg.ID); ok {
		r.fetchMu.Unlock()
		return data, nil
	}
	if call := r.fetching[seg.ID]; call != nil {
		r.fetchMu.Unlock()
		<-call.done
		return call.data, call.err
	}
	call := r.startFetchLocked(seg.ID)
	r.fetchMu.Unlock()
	r.download(seg, call, prefetch)
	return call.data, call.err
}

// cachedLocked returns a decoded segment from the cache, which it marks
// the most recently used; caller holds fetchMu.
func (r *Replicator) cachedLocked(id meta.SegmentID) ([]byte, bool) {
	for i, c := range r.segCache {
		if c.id == id {
			r.segCache = append(append(r.segCache[:i:i], r.segCache[i+1:]...), c)
			return c.data, true
		}
	}
	return nil, false
}

// startFetchLocked registers the download of segment id, which concurrent
// requests for it then wait for; caller holds fetchMu and runs download.
func (r *Replicator) startFetchLocked(id meta.SegmentID) *fetchCall {
	call := &fetchCall{done: make(chan struct{})}
	r.fetching[id] = call
	r.segFetches.Add(1)
	return call
}

// download fetches segment seg for call, keeps it decoded until its
// chunks are taken (takeChunk) and ends the call.
func (r *Replicator) download(seg meta.Segment, call *fetchCall, prefetch bool) {
	// Protected, so that a fault cannot leave the call open: every reader
	// waiting on it would wait forever.
	call.err = r.faults.Protect("fetch", func() error {
		ctx, cancel := context.WithTimeout(r.ctx, fetchTimeout)
		defer cancel()
		var err error
		start := time.Now()
		call.data, err = fetchSegment(ctx, r.client, fnet.SegmentID(seg.ID), int(seg.Class), r.cfg.PieceTimeout, r.cfg.HedgeAfter, &r.stages)
		r.fetches.done(start, len(call.data), err)
		return err
	})
	r.fetchMu.Lock()
	delete(r.fetching, seg.ID)
	if call.err == nil {
		if i := slices.Index(r.segDone, seg.ID); i >= 0 {
			r.segDone = slices.Delete(r.segDone, i, i+1)
		}
		r.segCache = append(r.segCache, cachedSegment{id: seg.ID, data: call.data, used: uint64(seg.Used)})
		total := 0
		for _, c := range r.segCache {
			total += len(c.data)
		}
		for len(r.segCache) > 1 && total > r.segBudget {
			// Segments taken whole go first, then the least recently
			// used.
			i := max(0, slices.IndexFunc(r.segCache, func(c cachedSegment) bool { return c.whole }))
			total -= len(r.segCache[i].data)
			r.segCache = slices.Delete(r.segCache, i, i+1)
		}
	}
	r.fetchMu.Unlock()
	close(call.done)
	if call.err != nil && !prefetch {
		r.noteErr(call.err)
	}
}

// takeChunk notes that the chunk at loc was handed out of its decoded
// segment (to the store, which keeps it). A segment whose chunks have all
// been taken is the first to leave the cache when it is full: no read
// needs it again. It is remembered (segDone) so that read-ahead does not
// fetch it again once it has left.
func (r *Replicator) takeChunk(id meta.SegmentID, loc meta.Location) {
	r.fetchMu.Lock()
	defer r.fetchMu.Unlock()
	i := slices.IndexFunc(r.segCache, func(c cachedSegment) bool { return c.id == id })
	if i < 0 {
		return
	}
	c := &r.segCache[i]
	if _, ok := c.taken[loc.Offset]; ok || c.whole {
		return
	}
	if c.taken == nil {
		c.taken = map[uint32]struct{}{}
	}
	c.taken[loc.Offset] = struct{}{}
	if c.takenBytes += uint64(loc.Length); c.used == 0 || c.takenBytes < c.used {
		return
	}
	c.whole = true
	if len(r.segDone) >= segDoneMax {
		r.segDone = r.segDone[1:]
	}
	r.segDone = append(r.segDone, id)
}

// prefetchAhead is how many data segments are fetched ahead of a
// sequential reader: two, because segments uploaded in parallel may be
// committed out of the order they were packed in.
const prefetchAhead = 2

// segOrderTTL bounds how stale the order of segments used for read-ahead
// may be (it is only a hint).
const segOrderTTL = 10 * time.Second

// prefetchAfter starts fetching the data segments that follow seg in the
// order they were stored, when the reader came to seg from the one before
// it (within prefetchAhead): a file written in one go is packed into
// segments in its order.
func (r *Replicator) prefetchAfter(seg meta.Segment) {
	if seg.Kind != meta.KindData {
		return
	}
	r.fetchMu.Lock()
	prev := r.lastRead
	r.lastRead = seg.ID
	r.fetchMu.Unlock()
	if prev == seg.ID || prev == (meta.SegmentID{}) {
		return
	}
	order := r.segmentOrder()
	pos, ok := order.pos[seg.ID]
	if !ok {
		return
	}
	if pp, ok := order.pos[prev]; !ok || pp >= pos || pos-pp > prefetchAhead {
		return // not a sequential reader
	}
	for _, next := range order.segs[pos+1 : min(pos+1+prefetchAhead, len(order.segs))] {
		// Not a segment being fetched or decoded, nor one whose chunks
		// were all taken (they are in the store). The download is
		// registered before the lock is let go: a read that needs the
		// segment meanwhile waits for it rather than fetching it too.
		r.fetchMu.Lock()
		busy := r.fetching[next.ID] != nil || r.closed || slices.Contains(r.segDone, next.ID) ||
			slices.ContainsFunc(r.segCache, func(c cachedSegment) bool { return c.id == next.ID })
		var call *fetchCall
		if !busy {
			r.prefetches.Add(1)
			r.prefetched.Add(1)
			call = r.startFetchLocked(next.ID)
		}
		r.fetchMu.Unlock()
		if busy {
			continue
		}
		go func() {
			defer r.prefetches.Done()
			r.download(next, call, true)
		}()
	}
}

// segOrder is the data segments in the order they were stored.
type segOrder struct {
	at   time.Time
	gen  uint64
	segs []meta.Segment
	pos  map[meta.SegmentID]int
}

// segmentOrder returns the order of data segments, listed again when the
// index changed and the list is older than segOrderTTL.
func (r *Replicator) segmentOrder() *segOrder {
	gen := r.idx.Generation()
	r.fetchMu.Lock()
	o := r.segOrder
	r.fetchMu.Unlock()
	if o != nil && (o.gen == gen || time.Since(o.at) < segOrderTTL) {
		return o
	}
	o = &segOrder{at: time.Now(), gen: gen, pos: map[meta.SegmentID]int{}}
	r.idx.Segments(func(s meta.Segment) error {
		if s.Kind == meta.KindData {
			s.Pieces = nil
			o.segs = append(o.segs, s)
		}
		return nil
	})
	sort.SliceStable(o.segs, func(i, j int) bool { return o.segs[i].Created < o.segs[j].Created })
	for i, s := range o.segs {
		o.pos[s.ID] = i
	}
	r.fetchMu.Lock()
	r.segOrder = o
	r.fetchMu.Unlock()
	return o
}

// dropSegmentCache forgets decoded segments (tests that drop the cache).
func (r *Replicator) dropSegmentCache() {
	r.fetchMu.Lock()
	r.segCache, r.segDone = nil, nil
	r.fetchMu.Unlock()
}

// FetchSegment downloads any K pieces of segment seg and decodes its first
// size bytes. Pieces are asked from K nodes at once; a node that fails,
// returns bytes that do not hash to the piece id, or takes longer than
// hedge is backed up by the next one, and none is waited for longer than
// pieceTimeout.
//
// The data pieces are read straight into one buffer, back to back, and
// the parity pieces into their own: when every data piece arrives the
// segment is that buffer with nothing decoded or copied, and a missing
// data piece is rebuilt into its place in it. Every download has ended
// when FetchSegment returns (none writes to the buffer afterwards).
func FetchSegment(ctx context.Context, c *mediator.Client, seg fnet.SegmentID, size int, pieceTimeout, hedge time.Duration) ([]byte, error) {
	return fetchSegment(ctx, c, seg, size, pieceTimeout, hedge, nil)
}

// fetchSegment is FetchSegment adding the time of its stages to st (when
// not nil).
func fetchSegment(ctx context.Context, c *mediator.Client, seg fnet.SegmentID, size int, pieceTimeout, hedge time.Duration, st *stageTimes) ([]byte, error) {
	var piecesT, decodeT *atomic.Int64
	if st != nil {
		piecesT, decodeT = &st.pieces, &st.decode
	}
	t0 := time.Now()
	info, err := c.Segment(ctx, seg)
	if err != nil {
		return nil, err
	}
	coder, err := erasure.New(erasure.Scheme{K: int(info.K), N: int(info.N)})
	if err != nil {
		return nil, fmt.Errorf("segment %x: %w", seg, err)
	}
	if len(info.Pieces) != int(info.N) {
		return nil, fmt.Errorf("segment %x: %d pieces listed for scheme %d/%d: %w", seg, len(info.Pieces), info.K, info.N, fnet.ErrMalformed)
	}
	k := int(info.K)
	var cands []int
	psize := int64(-1)
	for i, p := range info.Pieces {
		if !p.Healthy {
			continue
		}
		// Every piece of a segment has one size; the tickets say it.
		if ts := p.Target.Ticket.Size; psize < 0 {
			psize = ts
		} else if ts != psize {
			return nil, fmt.Errorf("segment %x: piece %d of %d bytes, others %d: %w", seg, i, ts, psize, erasure.ErrPieceSize)
		}
		cands = append(cands, i)
	}
	if len(cands) < k {
		return nil, fmt.Errorf("segment %x: %d healthy pieces, need %d: %w", seg, len(cands), k, erasure.ErrTooFew)
	}
	if err := challenge.CheckSize(psize); err != nil {
		return nil, fmt.Errorf("segment %x: %w", seg, err)
	}
	p := int(psize)
	data := make([]byte, p*k)
	// dst is where piece i is read: its place among the data pieces, or a
	// buffer of its own for a parity piece.
	dst := func(i int) []byte {
		if i < k {
			return data[i*p : (i+1)*p : (i+1)*p]
		}
		return make([]byte, p)
	}
	// Nodes that failed reads before are asked last.
	c.ByStrikes(cands, func(i int) fnet.Target { return info.Pieces[i].Target })
	type result struct {
		i    int
		data []byte
		err  error
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make(chan result, len(cands))
	next, running, have := 0, 0, 0
	start := func() {
		i := cands[next]
		next++
		running++
		go func() {
			pctx, pcancel := context.WithTimeout(ctx, pieceTimeout)
			defer pcancel()
			d := dst(i)
			err := fault.Protect(nil, "fetch", func() error {
				return c.GetPieceInto(pctx, info.Pieces[i].Target, d)
			})
			results <- result{i, d, err}
		}()
	}
	// Whatever happens, no download outlives the call: the buffer is the
	// caller's once it returns.
	defer func() {
		cancel()
		for ; running > 0; running-- {
			<-results
		}
	}()
	for running < k && next < len(cands) {
		start()
	}
	pieces := make([][]byte, len(info.Pieces))
	var errs []error
	hedgeT := time.NewTimer(hedge)
	defer hedgeT.Stop()
	for have < k && running > 0 {
		select {
		case res := <-results:
			running--
			if res.err != nil {
				errs = append(errs, fmt.Errorf("piece %d: %w", res.i, res.err))
				if next < len(cands) && running+have < k+1 {
					start()
				}
				continue
			}
			if pieces[res.i] == nil {
				pieces[res.i] = res.data
				have++
			}
		case <-hedgeT.C:
			if next < len(cands) {
				start() // a node is slow: ask another as well
			}
			hedgeT.Reset(hedge)
		}
		// Keep enough requests running to reach K.
		for running+have < k && next < len(cands) {
			start()
		}
	}
	if have < k {
		return nil, fmt.Errorf("segment %x: %d of %d pieces readable: %w", seg, have, k, errors.Join(errs...))
	}
	cancel()
	for ; running > 0; running-- {
		<-results // slower pieces still running are not needed
	}
	t0 = since(piecesT, t0)
	defer since(decodeT, t0)
	if size <= 0 || size > p*k {
		size = p * k
	}
	for i := range k {
		if pieces[i] == nil {
			pieces[i] = data[i*p : i*p : (i+1)*p] // rebuilt in place
		}
	}
	if err := coder.ReconstructData(pieces); err != nil {
		return nil, fmt.Errorf("segment %x: %w", seg, err)
	}
	for i := range k {
		if &pieces[i][:1][0] != &data[i*p] {
			copy(data[i*p:(i+1)*p], pieces[i]) // the coder used its own array
		}
	}
	return data[:size:size], nil
}
