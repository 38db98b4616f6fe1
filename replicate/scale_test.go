package replicate

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
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
		e.uploadPending(t)
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

// TestCleanRestartWalksNothing: after a clean unmount of a settled vault
// (everything durable and in a snapshot), the next mount's engine does not
// hash the index, walk it for maintenance or list the store: the idle
// record the last stop left says what was settled. It still reports the
// vault restorable, and a write after the restart is uploaded, and the
// maintenance after it does not walk either.
func TestCleanRestartWalksNothing(t *testing.T) {
	p, home := planetAndVault(t)
	cfg := fastConfig()
	c := mount(t, p, home, cfg)
	writeTree(t, c.mnt, 5)
	waitStatus(t, home, "restorable", func(st *Status) bool { return st.Restorable })
	// Quiet: every pass that the last commits called for has run.
	for i := 0; i < 40; i++ {
		g := c.rep.idx.Generation()
		time.Sleep(2 * cfg.MaintainInterval)
		c.rep.mu.Lock()
		settled := c.rep.maintGen == g+1 && c.rep.evictGen == g+1
		c.rep.mu.Unlock()
		if c.rep.idx.Generation() == g && settled {
			break
		}
	}
	c.unmount()

	c = mount(t, p, home, cfg)
	defer c.unmount()
	st := waitStatus(t, home, "restorable after the restart", func(st *Status) bool { return st.Restorable })
	deadline := time.Now().Add(20 * time.Second)
	for c.rep.rounds.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	hashes, maint, evict := c.rep.hashes.Load(), c.rep.passes.maintain.Load(), c.rep.passes.evict.Load()
	t.Logf("after a clean restart: %d index hashes, %d maintenance walks, %d store listings; cache %d bytes", hashes, maint, evict, st.CacheBytes)
	if gens := c.rep.idx.StateGeneration(); gens != 0 {
		t.Fatalf("the index's snapshot state changed %d times after the restart of a settled vault", gens)
	}
	if hashes != 0 || maint != 0 || evict != 0 {
		t.Fatalf("the engine walked a settled vault after a clean restart: %d hashes, %d maintenance walks, %d store listings", hashes, maint, evict)
	}
	if st.CacheBytes == 0 {
		t.Fatal("the cache size was forgotten over the restart")
	}
	f := filepath.Join(c.mnt, "after-restart")
	if err := os.WriteFile(f, []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, home, "the new file uploaded", func(st *Status) bool { return st.PendingChunks == 0 && st.Restorable })
	// Maintenance after that change follows the count the stop left
	// (live_count) instead of walking to count again.
	deadline = time.Now().Add(60 * time.Second)
	for {
		g := c.rep.idx.Generation()
		c.rep.mu.Lock()
		settled := c.rep.maintGen == g+1
		c.rep.mu.Unlock()
		if settled {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("maintenance did not settle within 60s of the change after the restart")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if walks := c.rep.passes.maintain.Load(); walks != 0 {
		t.Fatalf("maintenance walked the index %d times after a change that followed a clean restart", walks)
	}
}
