package replicate

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestCacheLimit: with a small --cache-size the local store shrinks to the
// limit once the data is durable, and every file still reads back.
func TestCacheLimit(t *testing.T) {
	p, home := planetAndVault(t)
	cfg := fastConfig()
	cfg.CacheSize = 128 << 10
	// Under heavy load the fast config's 2-3 s timeouts fail piece uploads
	// (the segment stays degraded, its chunks are kept until a repair) and
	// the reads from the network at the end (EIO): give them room. The
	// waits below end as soon as their condition holds.
	cfg.PieceTimeout, cfg.CallTimeout = 20*time.Second, 20*time.Second
	const bound = 3 * time.Minute
	c := mount(t, p, home, cfg)
	files := writeTree(t, c.mnt, 3)
	c.waitSyncedFor(t, "tree", bound)
	deadline := time.Now().Add(bound)
	for {
		c.rep.Kick()
		st, err := QueryStatus(home)
		if err != nil {
			t.Fatal(err)
		}
		if st.CacheBytes > 0 && st.CacheBytes <= cfg.CacheSize {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cache holds %d bytes after %v, limit %d: %+v", st.CacheBytes, bound, cfg.CacheSize, st)
		}
		time.Sleep(100 * time.Millisecond)
	}
	os.WriteFile("/proc/sys/vm/drop_caches", []byte("1"), 0)
	checkTree(t, c.mnt, files)
}

// TestIdleMountDoesNotScan: once everything is on the network, no periodic
// pass that grows with the vault runs while the index does not change: no
// walk for pending chunks (the feed replaces it), no listing of the local
// store for the cache, no maintenance walk, no hash of the whole index. A
// new write is still found and uploaded.
func TestIdleMountDoesNotScan(t *testing.T) {
	p, home := planetAndVault(t)
	cfg := fastConfig()
	c := mount(t, p, home, cfg)
	c.rep.mu.Lock()
	c.rep.evictEvery = cfg.ScanInterval // as often as the engine looks
	c.rep.mu.Unlock()
	writeTree(t, c.mnt, 4)
	c.waitSyncedFor(t, "tree", 40*time.Second)

	type counts struct{ gen, scans, evict, maintain, hashes int64 }
	now := func() counts {
		return counts{int64(c.rep.idx.Generation()), c.rep.scans.Load(), c.rep.passes.evict.Load(),
			c.rep.passes.maintain.Load(), c.rep.hashes.Load()}
	}
	// Let the passes that the last commits called for run first: wait
	// for a quiet spell longer than any pass's interval.
	for i := 0; i < 40; i++ {
		g := c.rep.idx.Generation()
		time.Sleep(2 * cfg.MaintainInterval)
		if c.rep.idx.Generation() == g {
			break
		}
	}
	// Idle for longer than every interval of a pass (maintenance 300 ms,
	// cache trim 100 ms here), so that each would have run several times.
	a := now()
	time.Sleep(max(20*cfg.ScanInterval, 6*cfg.MaintainInterval))
	b := now()
	gens := b.gen - a.gen
	t.Logf("idle: %d index commits, %d pending walks, %d store listings, %d maintenance walks, %d index hashes",
		gens, b.scans-a.scans, b.evict-a.evict, b.maintain-a.maintain, b.hashes-a.hashes)
	if b.scans != a.scans {
		t.Errorf("%d walks for pending chunks on an idle mount (the feed makes none)", b.scans-a.scans)
	}
	// A commit (a health check that changed a segment, a snapshot) may
	// call for one pass of each; without one, none runs.
	for _, pass := range []struct {
		name string
		n    int64
	}{{"store listings", b.evict - a.evict}, {"maintenance walks", b.maintain - a.maintain}, {"index hashes", b.hashes - a.hashes}} {
		if pass.n > gens {
			t.Errorf("%d %s while the index changed %d times", pass.n, pass.name, gens)
		}
	}
	f, err := os.Create(filepath.Join(c.mnt, "late"))
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("written after the engine settled")
	if err := f.Sync(); err != nil { // the chunk is in the index now
		t.Fatal(err)
	}
	f.Close()
	written := time.Now()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c.rep.Kick()
		st, err := QueryStatus(home)
		if err != nil {
			t.Fatal(err)
		}
		if st.PendingChunks == 0 && st.LastSync != nil && st.LastSync.After(written) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the file written after the idle time was not uploaded: %+v", st)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestUnlimitedCacheCountsRarely: without a cache limit, the listing of the
// local store (a stat of every chunk, only to count its bytes for status)
// runs at most once per CountInterval, not after every uploaded segment or
// write: three trees written and uploaded one after another cost one
// listing.
func TestUnlimitedCacheCountsRarely(t *testing.T) {
	p, home := planetAndVault(t)
	cfg := fastConfig()
	cfg.CountInterval = time.Hour
	c := mount(t, p, home, cfg)
	defer c.unmount()
	for i := range 3 {
		writeTree(t, c.mnt, int64(10+i))
		c.waitSyncedFor(t, "tree", 60*time.Second)
	}
	st, err := QueryStatus(home)
	if err != nil {
		t.Fatal(err)
	}
	listings := c.rep.passes.evict.Load()
	t.Logf("%d store listings, %d segments durable, cache %d bytes", listings, st.SegmentsDurable, st.CacheBytes)
	if st.SegmentsDurable < 3 {
		t.Fatalf("only %d segments durable: the test uploads too little to tell", st.SegmentsDurable)
	}
	if listings > 1 {
		t.Fatalf("%d listings of the store within one CountInterval", listings)
	}
}
