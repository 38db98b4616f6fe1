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
