package fs_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/fincrypt/fincrypt/chunkstore"
	"github.com/fincrypt/fincrypt/fs"
	"github.com/fincrypt/fincrypt/vault"
)

// countChunks counts the chunk files of a store, the owner file aside.
func countChunks(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() && filepath.Base(p) != chunkstore.OwnerFile {
			n++
		}
		return nil
	})
	return n
}

// A lost index must not turn every chunk into garbage, and two vaults
// pointed at one store must not collect each other's chunks.
func TestStoreGuards(t *testing.T) {
	requireFUSE(t)
	homeA := newVault(t, vault.CreateOptions{})
	m := mountVault(t, homeA)
	if err := os.WriteFile(filepath.Join(m.dir, "f"), []byte("data that must survive"), 0o644); err != nil {
		t.Fatal(err)
	}
	m.unmount()
	vA, err := vault.Open(homeA, testPassword, vault.OpenOptions{Lock: true})
	if err != nil {
		t.Fatal(err)
	}
	defer vA.Close()
	store := vA.StoreDir()
	before := countChunks(t, store)
	if before == 0 {
		t.Fatal("no chunk stored: the test proves nothing")
	}

	// The index is moved away: the mount is refused and no chunk is deleted.
	if err := os.Rename(vA.IndexDir(), vA.IndexDir()+".moved"); err != nil {
		t.Fatal(err)
	}
	if mm, err := fs.Mount(vA, t.TempDir(), fs.Options{}); !errors.Is(err, fs.ErrIndexMissing) {
		if err == nil {
			mm.Unmount()
		}
		t.Fatalf("mount without the index: %v, want ErrIndexMissing", err)
	}
	if got := countChunks(t, store); got != before {
		t.Fatalf("%d chunks left of %d", got, before)
	}
	if err := os.Rename(vA.IndexDir()+".moved", vA.IndexDir()); err != nil {
		t.Fatal(err)
	}

	// Vault B is configured to use A's store: refused, nothing deleted.
	homeB := newVault(t, vault.CreateOptions{})
	cfg := vault.DefaultConfig()
	cfg.Store = store
	if err := vault.SaveConfig(homeB, cfg); err != nil {
		t.Fatal(err)
	}
	vB, err := vault.Open(homeB, testPassword, vault.OpenOptions{Lock: true})
	if err != nil {
		t.Fatal(err)
	}
	defer vB.Close()
	if mm, err := fs.Mount(vB, t.TempDir(), fs.Options{}); !errors.Is(err, fs.ErrForeignStore) {
		if err == nil {
			mm.Unmount()
		}
		t.Fatalf("mount on another vault's store: %v, want ErrForeignStore", err)
	}
	if got := countChunks(t, store); got != before {
		t.Fatalf("%d chunks left of %d", got, before)
	}
	vA.Close()
	m2 := mountVault(t, homeA)
	b, err := os.ReadFile(filepath.Join(m2.dir, "f"))
	if err != nil || string(b) != "data that must survive" {
		t.Fatalf("after the refused mounts: %q, %v", b, err)
	}
}
