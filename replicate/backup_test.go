package replicate

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/backup"
	"github.com/fincrypt/fincrypt/meta"
)

// TestBackupBlobsUploadedFetchedReleased: a backup pass's blobs are
// uploaded like file chunks; evicted, they restore from the network; after
// forget their segment is released (stored bytes go down) while the kept
// snapshot still restores byte-identical.
func TestBackupBlobsUploadedFetchedReleased(t *testing.T) {
	p, home := planetAndVault(t)
	cfg := fastConfig()
	cfg.ReleaseDelay = time.Second
	c := mount(t, p, home, cfg)
	repo := backup.Repo{Keys: c.v.Keys, Index: c.rep.idx, Store: c.rep.store}
	ctx := context.Background()
	src := t.TempDir()
	old, young := make([]byte, 600<<10), make([]byte, 100<<10)
	for i := range old {
		old[i] = byte(i*7 + i>>9)
	}
	for i := range young {
		young[i] = byte(i*13 + i>>7)
	}
	os.WriteFile(filepath.Join(src, "old.bin"), old, 0o644)
	t0 := time.Now().Add(-time.Hour)
	r1, err := backup.Run(ctx, repo, backup.Options{Paths: []string{src}, Time: t0})
	if err != nil {
		t.Fatal(err)
	}
	c.waitSynced("first pass")
	os.Remove(filepath.Join(src, "old.bin"))
	os.WriteFile(filepath.Join(src, "young.bin"), young, 0o644)
	r2, err := backup.Run(ctx, repo, backup.Options{Paths: []string{src}, Time: t0.Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	st := c.waitSynced("second pass")
	located := 0
	c.rep.idx.Blobs(func(id meta.ChunkID, _ uint32) error {
		if _, err := c.rep.idx.GetLocation(id); err == nil {
			located++
		}
		return nil
	})
	if located == 0 || uint64(located) != r1.NewBlobs+r2.NewBlobs {
		t.Fatalf("%d blobs on the network, want %d", located, r1.NewBlobs+r2.NewBlobs)
	}
	if _, err := c.rep.EvictAll(); err != nil {
		t.Fatal(err)
	}
	n := 0
	c.rep.store.List(func(meta.ChunkID) error { n++; return nil }, nil)
	if n != 0 {
		t.Fatalf("%d chunks left in the store after evicting", n)
	}
	restore := func(id string, name string, want []byte) {
		t.Helper()
		s, err := backup.FindSnapshot(c.rep.idx, id)
		if err != nil {
			t.Fatal(err)
		}
		dst := t.TempDir()
		if _, err := backup.Restore(ctx, repo, s, backup.RestoreOptions{Target: dst}); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(dst, src, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("snapshot %s: %s does not restore from the network: %v", id, name, err)
		}
	}
	restore(r1.Snapshot, "old.bin", old)

	stored := st.StoredBytes
	res, err := backup.Forget(repo, backup.Policy{Last: 1}, false)
	if err != nil || len(res.Forget) != 1 || res.Sweep.Blobs != r1.NewBlobs {
		t.Fatalf("forget: %+v %v; want the first pass's %d blobs swept", res, err, r1.NewBlobs)
	}
	deadline := time.Now().Add(40 * time.Second)
	for {
		c.rep.Kick()
		st, err := QueryStatus(home)
		if err != nil {
			t.Fatal(err)
		}
		if st.StoredBytes < stored && st.SegmentsDead == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stored bytes %d, %d before forget: nothing released after 40s: %+v", st.StoredBytes, stored, st)
		}
		time.Sleep(200 * time.Millisecond)
	}
	c.rep.EvictAll()
	restore(r2.Snapshot, "young.bin", young)
}
