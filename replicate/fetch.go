package replicate

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/fincrypt/fincrypt/chunkstore"
	"github.com/fincrypt/fincrypt/erasure"
	"github.com/fincrypt/fincrypt/internal/fault"
	"github.com/fincrypt/fincrypt/mediator"
	"github.com/fincrypt/fincrypt/meta"
	fnet "github.com/fincrypt/fincrypt/net"
)

// fetchTimeout bounds the fetch of one evicted chunk's segment.
const fetchTimeout = 2 * time.Minute

// segCacheSize is how many decoded segments are kept in memory, so that
// reading a segment's chunks one after another downloads it once.
const segCacheSize = 2

type cachedSegment struct {
	id   meta.SegmentID
	data []byte
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
	case !errors.Is(err, chunkstore.ErrNotFound):
		r.faults.Fail("fetch", err)
	}
	return sealed, err
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
	return append([]byte(nil), data[loc.Offset:end]...), nil
}

// segment returns a segment's padded content, from memory or the network;
// concurrent requests for one segment share one download.
func (r *Replicator) segment(seg meta.Segment) ([]byte, error) {
	r.fetchMu.Lock()
	for _, c := range r.segCache {
		if c.id == seg.ID {
			r.fetchMu.Unlock()
			return c.data, nil
		}
	}
	if call := r.fetching[seg.ID]; call != nil {
		r.fetchMu.Unlock()
		<-call.done
		return call.data, call.err
	}
	call := &fetchCall{done: make(chan struct{})}
	r.fetching[seg.ID] = call
	r.fetchMu.Unlock()

	// Protected, so that a fault cannot leave the call open: every reader
	// waiting on it would wait forever.
	call.err = r.faults.Protect("fetch", func() error {
		ctx, cancel := context.WithTimeout(r.ctx, fetchTimeout)
		defer cancel()
		var err error
		start := time.Now()
		call.data, err = FetchSegment(ctx, r.client, fnet.SegmentID(seg.ID), int(seg.Class), r.cfg.PieceTimeout, r.cfg.HedgeAfter)
		r.fetches.done(start, len(call.data), err)
		return err
	})
	r.fetchMu.Lock()
	delete(r.fetching, seg.ID)
	if call.err == nil {
		r.segCache = append(r.segCache, cachedSegment{seg.ID, call.data})
		if len(r.segCache) > segCacheSize {
			r.segCache = r.segCache[1:]
		}
	}
	r.fetchMu.Unlock()
	close(call.done)
	if call.err != nil {
		r.noteErr(call.err)
	}
	return call.data, call.err
}

// dropSegmentCache forgets decoded segments (tests that drop the cache).
func (r *Replicator) dropSegmentCache() {
	r.fetchMu.Lock()
	r.segCache = nil
	r.fetchMu.Unlock()
}

// FetchSegment downloads any K pieces of segment seg and decodes its first
// size bytes. Pieces are asked from K nodes at once; a node that fails,
// returns bytes that do not hash to the piece id, or takes longer than
// hedge is backed up by the next one, and none is waited for longer than
// pieceTimeout.
func FetchSegment(ctx context.Context, c *mediator.Client, seg fnet.SegmentID, size int, pieceTimeout, hedge time.Duration) ([]byte, error) {
	info, err := c.Segment(ctx, seg)
	if err != nil {
		return nil, err
	}
	coder, err := erasure.New(erasure.Scheme{K: int(info.K), N: int(info.N)})
	if err != nil {
		return nil, fmt.Errorf("segment %x: %w", seg, err)
	}
	k := int(info.K)
	var cands []int
	for i, p := range info.Pieces {
		if p.Healthy {
			cands = append(cands, i)
		}
	}
	if len(cands) < k {
		return nil, fmt.Errorf("segment %x: %d healthy pieces, need %d: %w", seg, len(cands), k, erasure.ErrTooFew)
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
			var d []byte
			err := fault.Protect(nil, "fetch", func() (err error) {
				d, err = c.GetPiece(pctx, info.Pieces[i].Target)
				return err
			})
			results <- result{i, d, err}
		}()
	}
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
	psize := 0
	for _, p := range pieces {
		if p != nil {
			psize = len(p)
		}
	}
	if size <= 0 || size > psize*k {
		size = psize * k
	}
	return coder.Decode(pieces, size)
}
