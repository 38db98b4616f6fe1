package replicate

import (
	"math/rand/v2"
	"testing"
)

// TestStatusCostIgnoresDurableFiles: the records `fincrypt status` reads
// after a change depend on the pending work, not on how many files are
// already durable (counted in records read from the index, not in time).
func TestStatusCostIgnoresDurableFiles(t *testing.T) {
	e := newEngine(t, nil)
	rng := rand.New(rand.NewPCG(5, 6))
	// cost adds durable files, snapshots, writes one new chunk and returns
	// the records the next status reads.
	cost := func(durable int) int64 {
		t.Helper()
		for range durable {
			e.addChunks(t, rng, 200)
		}
		all, err := e.r.pending()
		if err != nil {
			t.Fatal(err)
		}
		if len(all) > 0 {
			p := &plannedSegment{chunks: all}
			for _, c := range all {
				p.used += c.size
			}
			e.upload(t, p)
		}
		if err := e.r.Snapshot(); err != nil {
			t.Fatal(err)
		}
		e.r.Status(e.p.Context()) // settles what a snapshot changed
		e.addChunks(t, rng, 300)
		before := e.idx.RecordsRead()
		st := e.r.Status(e.p.Context())
		if st.PendingChunks != 1 || st.PendingFiles != 1 || st.Restorable {
			t.Fatalf("status after one new chunk: %d pending chunks of %d files, restorable %v", st.PendingChunks, st.PendingFiles, st.Restorable)
		}
		return e.idx.RecordsRead() - before
	}
	small := cost(3)
	large := cost(400)
	t.Logf("records read by one status: %d with a few durable files, %d with 400 more", small, large)
	if large > small {
		t.Fatalf("status read %d records with 400 more durable files, %d without: its cost grows with the vault", large, small)
	}
}
