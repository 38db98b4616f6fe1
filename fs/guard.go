package fs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/fincrypt/fincrypt/chunkstore"
	"github.com/fincrypt/fincrypt/internal/fsutil"
	"github.com/fincrypt/fincrypt/meta"
	"github.com/fincrypt/fincrypt/vault"
)

// Errors that stop a mount before anything is changed.
var (
	// ErrForeignStore means the configured store belongs to another vault.
	ErrForeignStore = errors.New("the local store belongs to another vault")
	// ErrIndexMissing means the index is gone (or its directory holds no
	// database) while the store holds chunks:
	// mounting would start an empty index and collect every chunk as garbage.
	ErrIndexMissing = errors.New("the index is missing but the local store holds chunks")
)

// guardStore runs before the index is opened. It refuses a store that carries
// another vault's id, and an index that is missing while the store is not
// empty; on a read-write open it marks the store as this vault's.
func guardStore(v *vault.Vault, readOnly bool) error {
	dir := v.StoreDir()
	owner := filepath.Join(dir, chunkstore.OwnerFile)
	b, err := os.ReadFile(owner)
	switch {
	case err == nil:
		if got := strings.TrimSpace(string(b)); got != v.KeyFile.VaultID {
			return fmt.Errorf("%s: %w (vault %s, this vault is %s); set `store` in %s to a directory of its own",
				dir, ErrForeignStore, got, v.KeyFile.VaultID, filepath.Join(v.Home, vault.ConfigFileName))
		}
	case !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("local store: %w", err)
	}
	exists, xerr := meta.Exists(v.IndexDir(), nil)
	if xerr != nil {
		return xerr
	}
	if !exists {
		// Missing, or a directory that holds no database (emptied).
		if n := countFiles(dir, chunkstore.OwnerFile); n > 0 {
			return fmt.Errorf("%s: %w (%d files in %s); refusing to mount so that nothing is deleted: put the index back, or run `fincrypt recover` to rebuild it from the network snapshot",
				v.IndexDir(), ErrIndexMissing, n, dir)
		}
	}
	if readOnly || err == nil {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("local store: %w", err)
	}
	return fsutil.WriteFileAtomic(owner, []byte(v.KeyFile.VaultID+"\n"), 0o600)
}

// countFiles counts regular files under dir, except one named skip at its
// top and the store's format file; a pack file that holds nothing (its
// header only) does not count.
func countFiles(dir, skip string) int {
	n := 0
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() || p == filepath.Join(dir, skip) || p == filepath.Join(dir, chunkstore.FormatFile) {
			return nil
		}
		if strings.HasSuffix(p, ".pack") {
			if info, err := d.Info(); err == nil && info.Size() <= chunkstore.PackHeaderSize {
				return nil
			}
		}
		n++
		return nil
	})
	return n
}
