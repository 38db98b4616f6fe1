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
	buf  *segBuf
	data []byte // buf.data
	// used is the segment's bytes of sealed chunks; taken the offsets of
	// the chunks handed out, and takenBytes their length: at used, every
	// chunk is in the store and the segment is taken whole.
	used       uint64
	taken      map[uint32]struct{}
	takenBytes uint64
	whole      bool
	passed     bool // a chunk was handed out that the store did not keep
}

type fetchCall struct {
	done chan struct{}
	// readers is how many readers wait for the download (the one that
	// started it included; guarded by fetchMu): each gets a reference to
	// buf when it ends.
	readers int
	buf     *segBuf
	err     error
}

// segBuf is a decoded segment's buffer, shared by the segment cache and the
// readers copying chunks out of it. refs (guarded by fetchMu) counts the
// cache's hold and each reader's: at zero nothing reads it any more and it
// goes back to the free buffers (fetchFree) for the next download, instead
// of a fresh 16 MiB that the kernel must fault in page by page (which cost
// more than the copy into it).
type segBuf struct {
	data []byte // the segment's content, in full
	full []byte // the whole buffer data is the start of
	refs int
}

// fetchFreeMax bounds the free segment buffers kept for downloads: a
// sequential reader's download takes one while the cache gives one back
// at every segment it lets go, so a few cover the read-ahead.
const fetchFreeMax = prefetchAhead + 1

// takeBuf returns a buffer of n bytes for a download: a free one of that
// size, else that of the least recently used cached segment taken whole
// that no reader holds (its chunks are in the store; segDone keeps the
// read-ahead from fetching it again), else a new one. So a sequential
// reader's downloads cycle through a few buffers rather than letting the
// cache fill to its bound with segments no read needs again.
func (r *Replicator) takeBuf(n int) []byte {
	r.fetchMu.Lock()
	defer r.fetchMu.Unlock()
	for i, b := range r.fetchFree {
		if len(b) == n {
			r.fetchFree = slices.Delete(r.fetchFree, i, i+1)
			r.bufReuses.Add(1)
			return b
		}
	}
	for i, c := range r.segCache {
		if c.whole && c.buf.refs == 1 && len(c.buf.full) == n {
			b := c.buf.full
			c.buf.refs, c.buf.data, c.buf.full = 0, nil, nil
			r.segCache = slices.Delete(r.segCache, i, i+1)
			r.bufReuses.Add(1)
			return b
		}
	}
	return make([]byte, n)
}

// releaseLocked drops one reference to b; the last one gives the buffer
// back. Caller holds fetchMu.
func (r *Replicator) releaseLocked(b *segBuf) {
	if b.refs--; b.refs > 0 {
		return
	}
	if b.refs < 0 {
		panic("replicate: segment buffer released twice")
	}
	full := b.full
	b.data, b.full = nil, nil
	if full == nil {
		return
	}
	if len(r.fetchFree) >= fetchFreeMax {
		r.fetchFree = r.fetchFree[1:]
	}
	r.fetchFree = append(r.fetchFree, full)
}

// release drops a reader's reference to b.
func (r *Replicator) release(b *segBuf) {
	r.fetchMu.Lock()
	r.releaseLocked(b)
	r.fetchMu.Unlock()
}

// fetchChunk is the store's fetcher: it appends the sealed bytes of an
// evicted chunk, from its segment on the network, to dst. It runs in the
// reader's FUSE request, but its work is the engine's: a fault in it fails
// that read (EIO), is recorded as a fault of "fetch", and leaves the mount
// serving; the next read tries again.
// keep says whether the store keeps the chunk (chunkstore.Admission).
func (r *Replicator) fetchChunk(id meta.ChunkID, dst []byte, keep bool) (out []byte, err error) {
	out = dst
	err = r.faults.Protect("fetch", func() error {
		r.faults.Hook("fetch")
		out, err = r.fetchChunkUnprotected(id, dst, keep)
		return err
	})
	if err != nil {
		out = dst
	}
	switch {
	case err == nil:
		r.faults.OK("fetch")
		r.noteFetched()
	case !errors.Is(err, chunkstore.ErrNotFound):
		r.faults.Fail("fetch", err)
	}
	return out, err
}

// noteFetched records that the store holds one more chunk, from the
// network: one a trim can evict.
func (r *Replicator) noteFetched() {
	r.fetched.Add(1)
	r.mu.Lock()
	r.cacheDirty = true // trim it
	r.mu.Unlock()
}

func (r *Replicator) fetchChunkUnprotected(id meta.ChunkID, dst []byte, keep bool) ([]byte, error) {
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
	buf, err := r.segment(seg)
	if err != nil {
		return nil, err
	}
	// The segment's bytes are not written while a reader holds it (the
	// cache and every reader share them); the chunk is copied out into the
	// reader's buffer, and the segment's buffer serves another download
	// once the cache and every reader let it go.
	defer r.release(buf)
	data := buf.data
	end := uint64(loc.Offset) + uint64(loc.Length)
	if end > uint64(len(data)) {
		return nil, fmt.Errorf("segment %s: location %d+%d beyond its %d bytes: %w", seg.ID, loc.Offset, loc.Length, len(data), meta.ErrCorrupt)
	}
	r.takeChunk(seg.ID, loc, keep)
	return append(dst, data[loc.Offset:end]...), nil
}

// segment returns a segment's padded content, from memory or the network,
// with a reference the caller releases (release) once it has copied what
// it needs; concurrent requests for one segment share one download. A
// reader that moves on to the data segment stored after the one it read
// last is taken to read sequentially: the next ones are fetched ahead
// (prefetch).
func (r *Replicator) segment(seg meta.Segment) (*segBuf, error) {
	r.prefetchAfter(seg)
	r.fetchMu.Lock()
	if c, ok := r.cachedLocked(seg.ID); ok {
		c.buf.refs++
		r.fetchMu.Unlock()
		return c.buf, nil
	}
	if call := r.fetching[seg.ID]; call != nil {
		call.readers++
		r.fetchMu.Unlock()
		<-call.done
		return call.buf, call.err
	}
	call := r.startFetchLocked(seg.ID, 1)
	r.fetchMu.Unlock()
	r.download(seg, call, false)
	return call.buf, call.err
}

// cachedLocked returns a decoded segment from the cache, which it marks
// the most recently used; caller holds fetchMu.
func (r *Replicator) cachedLocked(id meta.SegmentID) (cachedSegment, bool) {
	for i, c := range r.segCache {
		if c.id == id {
			r.segCache = append(append(r.segCache[:i:i], r.segCache[i+1:]...), c)
			return c, true
		}
	}
	return cachedSegment{}, false
}

// startFetchLocked registers the download of segment id for readers (0 for
// a read-ahead), which concurrent requests for it then join; caller holds
// fetchMu and runs download.
func (r *Replicator) startFetchLocked(id meta.SegmentID, readers int) *fetchCall {
	call := &fetchCall{done: make(chan struct{}), readers: readers}
	r.fetching[id] = call
	r.segFetches.Add(1)
	return call
}

// download fetches segment seg for call, keeps it decoded until its
// chunks are taken (takeChunk) and ends the call, giving each of its
// readers a reference to the segment.
func (r *Replicator) download(seg meta.Segment, call *fetchCall, prefetch bool) {
	// Protected, so that a fault cannot leave the call open: every reader
	// waiting on it would wait forever.
	var data, full []byte
	hooks := &fetchHooks{st: &r.stages, pace: &r.piecePace}
	if h := r.pieceHook.Load(); h != nil {
		hooks.piece = *h
	}
	hooks.alloc = func(n int) []byte {
		full = r.takeBuf(n)
		return full
	}
	call.err = r.faults.Protect("fetch", func() error {
		ctx, cancel := context.WithTimeout(r.ctx, fetchTimeout)
		defer cancel()
		var err error
		start := time.Now()
		data, err = fetchSegment(ctx, r.client, fnet.SegmentID(seg.ID), int(seg.Class), r.cfg.PieceTimeout, r.cfg.HedgeAfter, hooks)
		r.fetches.done(start, len(data), err)
		return err
	})
	r.fetchMu.Lock()
	delete(r.fetching, seg.ID)
	if call.err == nil {
		if i := slices.Index(r.segDone, seg.ID); i >= 0 {
			r.segDone = slices.Delete(r.segDone, i, i+1)
		}
		// One reference for the cache and one for each reader.
		call.buf = &segBuf{data: data, full: full, refs: 1 + call.readers}
		r.segCache = append(r.segCache, cachedSegment{id: seg.ID, buf: call.buf, data: data, used: uint64(seg.Used)})
		total := 0
		for _, c := range r.segCache {
			total += len(c.data)
		}
		for len(r.segCache) > 1 && total > r.segBudget {
			// Segments taken whole go first, then the least recently
			// used.
			i := max(0, slices.IndexFunc(r.segCache, func(c cachedSegment) bool { return c.whole }))
			total -= len(r.segCache[i].data)
			r.releaseLocked(r.segCache[i].buf)
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
// segment (to the store, which keeps it unless kept is false: a streaming
// reader's, chunkstore.Admission). A segment whose chunks have all been
// taken is the first to leave the cache when it is full: no read needs it
// again. If the store kept every one, it is remembered (segDone) so that
// read-ahead does not fetch it again once it has left; one a stream passed
// through is fetched ahead again when it is streamed again.
func (r *Replicator) takeChunk(id meta.SegmentID, loc meta.Location, kept bool) {
	r.fetchMu.Lock()
	defer r.fetchMu.Unlock()
	i := slices.IndexFunc(r.segCache, func(c cachedSegment) bool { return c.id == id })
	if i < 0 {
		return
	}
	c := &r.segCache[i]
	c.passed = c.passed || !kept
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
	if c.passed {
		return
	}
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
			call = r.startFetchLocked(next.ID, 0)
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
	for _, c := range r.segCache {
		r.releaseLocked(c.buf)
	}
	r.segCache, r.segDone, r.fetchFree = nil, nil, nil
	r.fetchMu.Unlock()
}

// FetchSegment downloads any K pieces of segment seg and decodes its first
// size bytes. Pieces are asked from K nodes at once; a node that fails,
// returns bytes that do not hash to the piece id, or takes longer than
// hedge is backed up by the next one, and none is waited for longer than
// pieceTimeout. (The engine's fetches back a node up once it takes longer
// than hedge and twice the typical piece download: piecePace.)
//
// The data pieces are read straight into one buffer, back to back, and
// the parity pieces into their own: when every data piece arrives the
// segment is that buffer with nothing decoded or copied, and a missing
// data piece is rebuilt into its place in it. Every download has ended
// when FetchSegment returns (none writes to the buffer afterwards).
func FetchSegment(ctx context.Context, c *mediator.Client, seg fnet.SegmentID, size int, pieceTimeout, hedge time.Duration) ([]byte, error) {
	return fetchSegment(ctx, c, seg, size, pieceTimeout, hedge, &fetchHooks{})
}

// fetchHooks is what the engine adds to a segment's fetch; each may be nil.
type fetchHooks struct {
	st    *stageTimes      // adds the time of the fetch's stages
	alloc func(int) []byte // gives the segment's buffer of n bytes, whatever it holds
	pace  *piecePace       // the typical piece download, for the hedge
	piece func(i int)      // runs as the download of piece i starts (tests)
}

// piecePace keeps the typical time of a piece download: an average over
// the recent downloads that completed, in nanoseconds.
type piecePace struct{ avg atomic.Int64 }

// note adds a completed download of d.
func (p *piecePace) note(d time.Duration) {
	if old := p.avg.Load(); old > 0 {
		d = (7*time.Duration(old) + d) / 8
	}
	p.avg.Store(int64(max(d, 1)))
}

// hedgeAfter is when a fetch asks another node as well: hedge, or twice
// the typical piece download when pieces take longer (a loaded machine, a
// slow link), at most four times hedge. A backup then goes to a node slow
// against the others, not to every fetch while all are slow alike: it
// would only add its piece's bytes to the load that slows them.
func (p *piecePace) hedgeAfter(hedge time.Duration) time.Duration {
	if p == nil {
		return hedge
	}
	return min(max(hedge, 2*time.Duration(p.avg.Load())), 4*hedge)
}

// fetchSegment is FetchSegment with the engine's hooks.
func fetchSegment(ctx context.Context, c *mediator.Client, seg fnet.SegmentID, size int, pieceTimeout, hedge time.Duration, hk *fetchHooks) ([]byte, error) {
	var piecesT, decodeT, gets *atomic.Int64
	if st := hk.st; st != nil {
		piecesT, decodeT, gets = &st.pieces, &st.decode, &st.pieceGets
	}
	hedge = hk.pace.hedgeAfter(hedge)
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
	var data []byte
	if hk.alloc != nil {
		data = hk.alloc(p * k)
	} else {
		data = make([]byte, p*k)
	}
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
		if gets != nil {
			gets.Add(1)
		}
		go func() {
			pctx, pcancel := context.WithTimeout(ctx, pieceTimeout)
			defer pcancel()
			d := dst(i)
			t0 := time.Now()
			err := fault.Protect(nil, "fetch", func() error {
				if hk.piece != nil {
					hk.piece(i)
				}
				return c.GetPieceInto(pctx, info.Pieces[i].Target, d)
			})
			if err == nil && hk.pace != nil {
				hk.pace.note(time.Since(t0))
			}
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
