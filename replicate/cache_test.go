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
	c := mount(t, p, home, cfg)
	files := writeTree(t, c.mnt, 3)
	c.waitSynced("tree")
	deadline := time.Now().Add(30 * time.Second)
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
			t.Fatalf("cache holds %d bytes, limit %d", st.CacheBytes, cfg.CacheSize)
		}
		time.Sleep(100 * time.Millisecond)
	}
	os.WriteFile("/proc/sys/vm/drop_caches", []byte("1"), 0)
	checkTree(t, c.mnt, files)
}

// TestIdleMountDoesNotScan: once everything is on the network, the engine
// walks the index for pending chunks only after the index changed, not at
// every tick; a new write is still found and uploaded.
func TestIdleMountDoesNotScan(t *testing.T) {
	p, home := planetAndVault(t)
	cfg := fastConfig()
	c := mount(t, p, home, cfg)
	writeTree(t, c.mnt, 4)
	c.waitSyncedFor(t, "tree", 40*time.Second)

	gen0, scans0 := c.rep.idx.Generation(), c.rep.scans.Load()
	time.Sleep(20 * cfg.ScanInterval)
	gens, scans := c.rep.idx.Generation()-gen0, c.rep.scans.Load()-scans0
	t.Logf("idle for %s: %d index commits, %d scans", 20*cfg.ScanInterval, gens, scans)
	if scans > int64(gens)+1 {
		t.Fatalf("%d scans for pending chunks while the index changed %d times", scans, gens)
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
