package replicate

import (
	"fmt"
	"log/slog"
	"testing"

	"github.com/fincrypt/fincrypt/chunkstore"
	"github.com/fincrypt/fincrypt/meta"
)

// TestTrimFollowsChanges: a cache trim lists the local store only when it
// has to evict, and then brings it to 7/8 of the limit, so that the
// listings follow the bytes that come in, not the size of the store: in
// stores of 200 and 2,000 durable chunks, counting the cache lists nothing,
// a trim within the limit lists nothing, and a quarter of the limit
// written one chunk (and one durable segment) at a time over the limit
// costs the same two or three listings at both sizes (one a round before).
// The count the trims report stays the store's bytes throughout.
func TestTrimFollowsChanges(t *testing.T) {
	const chunk = 1024
	var listings []int64
	for _, n := range []int{200, 2000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			_, idx, store := localVault(t)
			if _, ok := store.Bytes(); !ok {
				t.Fatal("a new store does not count its bytes")
			}
			segNo := 0
			add := func(k int) {
				segNo++
				seg := &meta.Segment{ID: meta.SegmentID{byte(segNo), byte(segNo >> 8), 1}, Kind: meta.KindData, State: meta.SegmentDurable, K: 2, N: 4, Healthy: 4, Class: 1 << 20}
				b := idx.NewBatch()
				b.PutSegment(seg)
				for i := 0; i < k; i++ {
					id := chunkstore.NewID()
					if err := store.Put(id, make([]byte, chunk)); err != nil {
						t.Fatal(err)
					}
					b.PutLocation(id, &meta.Location{Segment: seg.ID, Offset: uint32(i * chunk), Length: chunk})
				}
				if err := b.Commit(false); err != nil {
					t.Fatal(err)
				}
			}
			add(n)
			r := &Replicator{idx: idx, store: store, log: slog.New(slog.DiscardHandler)}
			limit := uint64(n*chunk + chunk/2)
			for range 5 {
				if _, err := r.evictTo(0, true); err != nil { // counting only
					t.Fatal(err)
				}
				if _, err := r.evictTo(limit, false); err != nil {
					t.Fatal(err)
				}
			}
			if got := r.passes.evict.Load(); got != 0 || r.st.CacheBytes != uint64(n*chunk) {
				t.Fatalf("within the limit: %d listings, %d bytes counted (want 0, %d)", got, r.st.CacheBytes, n*chunk)
			}
			for range int(limit / 4 / chunk) {
				add(1)
				if _, err := r.evictTo(limit, false); err != nil {
					t.Fatal(err)
				}
				if b, _ := store.Bytes(); r.st.CacheBytes != uint64(b) || uint64(b) > limit {
					t.Fatalf("the trim reports %d bytes, the store holds %d (limit %d)", r.st.CacheBytes, b, limit)
				}
			}
			got := r.passes.evict.Load()
			t.Logf("%d chunks: %d listings for %d chunks written over the limit", n, got, limit/4/chunk)
			if got < 1 || got > 3 {
				t.Fatalf("%d listings of the store for a quarter of the limit written over it, want 1 to 3", got)
			}
			listings = append(listings, got)
		})
	}
	if len(listings) == 2 && listings[1] > listings[0] {
		t.Fatalf("listings grow with the store: %d at 200 chunks, %d at 2,000", listings[0], listings[1])
	}
}

// TestTrimWaitsForEvictable: a store held over its limit by chunks no
// segment holds yet (written, not uploaded) is listed once, however much
// more unuploaded data comes in (the old trim listed it again at every
// eighth of the limit: 16 times here); a segment committed or a chunk
// fetched from the network (each can make chunks evictable) makes the next
// trim list it, once, and a trim that then evicts brings it under.
func TestTrimWaitsForEvictable(t *testing.T) {
	const chunk = 1024
	_, idx, store := localVault(t)
	r := &Replicator{idx: idx, store: store, log: slog.New(slog.DiscardHandler)}
	const limit = 64 * chunk
	put := func(n int) []meta.ChunkID {
		var ids []meta.ChunkID
		for range n {
			id := chunkstore.NewID()
			if err := store.Put(id, make([]byte, chunk)); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
		return ids
	}
	trim := func() {
		t.Helper()
		if _, err := r.evictTo(limit, false); err != nil {
			t.Fatal(err)
		}
	}
	// One durable segment (of other chunks), then three times the limit
	// of pending chunks, a trim after each.
	seg := &meta.Segment{ID: meta.SegmentID{1}, Kind: meta.KindData, State: meta.SegmentDurable, K: 2, N: 4, Healthy: 4, Class: 1 << 20}
	b := idx.NewBatch()
	b.PutSegment(seg)
	if err := b.Commit(false); err != nil {
		t.Fatal(err)
	}
	var pending []meta.ChunkID
	for range 3 * limit / chunk {
		pending = append(pending, put(1)...)
		trim()
	}
	n, _ := store.Bytes()
	got := r.passes.evict.Load()
	t.Logf("%d listings while %d bytes of unuploaded chunks came in, over a limit of %d", got, n, limit)
	if got != 1 {
		t.Fatalf("%d listings of a store that only unuploaded chunks keep over its limit, want 1", got)
	}
	if uint64(n) != 3*limit {
		t.Fatalf("the store holds %d bytes, want %d (every pending chunk)", n, 3*limit)
	}
	// A fetch: the next trim lists (once) and evicts the fetched chunk.
	fetched := put(1)
	b = idx.NewBatch()
	b.PutLocation(fetched[0], &meta.Location{Segment: seg.ID, Length: chunk})
	if err := b.Commit(false); err != nil {
		t.Fatal(err)
	}
	r.noteFetched()
	trim()
	trim()
	if got := r.passes.evict.Load(); got != 2 {
		t.Fatalf("%d listings after a fetch, want 2", got)
	}
	if _, err := store.Size(fetched[0]); err == nil {
		t.Fatal("the fetched chunk was not evicted")
	}
	// The pending chunks are uploaded: one segment; the next trim lists
	// and brings the store under the limit.
	seg2 := &meta.Segment{ID: meta.SegmentID{2}, Kind: meta.KindData, State: meta.SegmentDurable, K: 2, N: 4, Healthy: 4, Class: 1 << 20}
	b = idx.NewBatch()
	b.PutSegment(seg2)
	for i, id := range pending {
		b.PutLocation(id, &meta.Location{Segment: seg2.ID, Offset: uint32(i * chunk), Length: chunk})
	}
	if err := b.Commit(false); err != nil {
		t.Fatal(err)
	}
	trim()
	trim()
	if n, _ := store.Bytes(); uint64(n) > limit || r.passes.evict.Load() != 3 {
		t.Fatalf("after the upload: %d bytes (limit %d), %d listings (want 3)", n, limit, r.passes.evict.Load())
	}
}
