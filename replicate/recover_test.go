package replicate

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/chunkstore"
	ffs "github.com/fincrypt/fincrypt/fs"
	"github.com/fincrypt/fincrypt/meta"
	"github.com/fincrypt/fincrypt/vault"
)

// TestRecoverIndexFromSnapshot loses a vault's index (its folder emptied)
// after a snapshot, and rebuilds it from the network snapshot: the mount
// refuses the lost index, RecoverIndex brings back every file of the
// snapshot, and the chunks of a file written after it are set aside, not
// deleted.
func TestRecoverIndexFromSnapshot(t *testing.T) {
	p, home := planetAndVault(t)
	c := mount(t, p, home, fastConfig())
	files := writeTree(t, c.mnt, 1)
	c.waitSynced("first tree")
	c.unmount()
	cfg := fastConfig()
	cfg.SnapshotInterval = time.Hour // no snapshot after this
	c = mount(t, p, home, cfg)
	// The engine takes a snapshot at start unless the stored one covers the
	// index: it must see that it does before the late file is written, or
	// that snapshot may hold the file (once under load).
	waitStatus(t, home, "restorable after the remount", func(st *Status) bool { return st.Restorable })
	late := bytes.Repeat([]byte("written after the snapshot "), 3000)
	if err := os.WriteFile(filepath.Join(c.mnt, "late"), late, 0o644); err != nil {
		t.Fatal(err)
	}
	c.unmount()

	v, err := vault.Open(home, testPassword, vault.OpenOptions{Lock: true})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	ents, err := os.ReadDir(v.IndexDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		os.RemoveAll(filepath.Join(v.IndexDir(), e.Name()))
	}
	chunksBefore := countFiles(t, v.StoreDir())
	if _, err := ffs.Mount(v, t.TempDir(), ffs.Options{}); !errors.Is(err, ffs.ErrIndexMissing) {
		t.Fatalf("mount of an emptied index: %v, want ErrIndexMissing", err)
	}

	res, err := RecoverIndex(p.Context(), RecoverOptions{Vault: v, Mediator: mediatorAddr(p)})
	if err != nil {
		t.Fatal(err)
	}
	if res.Records == 0 || res.Damaged == "" {
		t.Fatalf("recover result %+v", res)
	}
	n, lost, err := ffs.SetAsideUnreferenced(v)
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("the chunks of the file written after the snapshot were not set aside")
	}
	if got := countFiles(t, v.StoreDir()) + countFiles(t, lost); got != chunksBefore {
		t.Fatalf("%d chunks in the store and set aside, %d before: recovery deleted some", got, chunksBefore)
	}
	var report bytes.Buffer
	if problems, err := ffs.Check(v, &report); err != nil || problems != 0 {
		t.Fatalf("check after recovery: %d problems, %v\n%s", problems, err, report.String())
	}
	v.Close()

	c = mount(t, p, home, fastConfig())
	defer c.unmount()
	checkTree(t, c.mnt, files)
	if _, err := os.Stat(filepath.Join(c.mnt, "late")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a file newer than the snapshot: %v", err)
	}
}

func countFiles(t *testing.T, dir string) int {
	t.Helper()
	// The chunks, whether in chunk files or in packs.
	s, err := chunkstore.OpenExisting(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	n := 0
	if err := s.List(func(meta.ChunkID) error { n++; return nil }, nil); err != nil {
		t.Fatal(err)
	}
	return n
}
