package fs_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/fincrypt/fincrypt/backup"
	"github.com/fincrypt/fincrypt/fs"
	"github.com/fincrypt/fincrypt/meta"
	"github.com/fincrypt/fincrypt/vault"
)

// TestBackupBlobsAndTheCleanRecord: a pass on an unmounted vault keeps the
// clean-unmount record true (the next mount accepts the index and keeps
// every blob), and a lost blob record afterwards is caught like any lost
// chunk reference: the mount refuses, deleting nothing.
func TestBackupBlobsAndTheCleanRecord(t *testing.T) {
	requireFUSE(t)
	home, _ := vaultWithFiles(t, 2)
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "doc"), randBytes(7, 300<<10), 0o644)
	offline := func(fn func(v *vault.Vault, repo backup.Repo) error) {
		t.Helper()
		v, err := vault.Open(home, testPassword, vault.OpenOptions{Lock: true})
		if err != nil {
			t.Fatal(err)
		}
		defer v.Close()
		idx, store, err := fs.OpenOffline(v, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer idx.Close()
		if err := fs.ChangeOffline(v, idx, func() error { return fn(v, backup.Repo{Keys: v.Keys, Index: idx, Store: store}) }); err != nil {
			t.Fatal(err)
		}
	}
	var snapID string
	offline(func(_ *vault.Vault, repo backup.Repo) error {
		rep, err := backup.Run(context.Background(), repo, backup.Options{Paths: []string{src}})
		if err == nil {
			snapID = rep.Snapshot
		}
		return err
	})
	if _, err := os.Stat(filepath.Join(home, fs.CleanFileName)); err != nil {
		t.Fatalf("the pass dropped the clean-unmount record: %v", err)
	}
	if err := tryMount(t, home); err != nil { // collects unreferenced chunks
		t.Fatalf("mount after an offline pass: %v", err)
	}
	offline(func(_ *vault.Vault, repo backup.Repo) error {
		s, err := backup.FindSnapshot(repo.Index, snapID)
		if err != nil {
			return err
		}
		_, err = backup.Restore(context.Background(), repo, s, backup.RestoreOptions{Target: t.TempDir()})
		return err
	})
	// Lose one blob record behind the vault's back.
	before := storeFiles(t, filepath.Join(home, vault.StoreDirName))
	v, err := vault.Open(home, testPassword, vault.OpenOptions{Lock: true})
	if err != nil {
		t.Fatal(err)
	}
	idx, err := meta.Open(v.IndexDir(), v.Keys, meta.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var one meta.ChunkID
	idx.Blobs(func(id meta.ChunkID, _ uint32) error { one = id; return nil })
	b := idx.NewBatch()
	b.DeleteBlob(one)
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	idx.Close()
	v.Close()
	if err := tryMount(t, home); !errors.Is(err, fs.ErrIndexDamaged) {
		t.Fatalf("mount with a lost blob record: %v, want ErrIndexDamaged", err)
	}
	if after := storeFiles(t, filepath.Join(home, vault.StoreDirName)); len(after) != len(before) {
		t.Fatalf("the refused mount deleted chunks: %d -> %d", len(before), len(after))
	}
}
