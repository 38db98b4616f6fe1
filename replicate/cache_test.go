package replicate

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/mediator/testplanet"
)

// TestCacheLimit: with a small --cache-size the local store shrinks to the
// limit once the data is durable, and every file still reads back.
func TestCacheLimit(t *testing.T) {
	if _, err := os.Stat("/dev/fuse"); err != nil || os.Geteuid() != 0 {
		t.Skip("needs /dev/fuse and root")
	}
	p := testplanet.New(t, testplanet.Config{StorageNodes: 5})
	home := filepath.Join(t.TempDir(), "home")
	newVault(t, home)
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
