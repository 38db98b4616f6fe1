package fsutil

import (
	"path/filepath"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// MkdirAllSyncedFS creates dir and its missing parents (mode 0700) in fs and
// syncs the parent of each one created, so that a power cut after a file in
// dir is acknowledged cannot take the new directory, and the file with it.
// The node identity and the wallet seed go through it, over a vfs.FS so
// that their power-loss tests can cut the power (vfs.NewCrashableMem).
func MkdirAllSyncedFS(fs vfs.FS, dir string) error {
	dir = filepath.Clean(dir)
	var created []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := fs.Stat(d); err == nil {
			break
		}
		created = append(created, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	if err := fs.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for i := len(created) - 1; i >= 0; i-- {
		if err := SyncDirFS(fs, filepath.Dir(created[i])); err != nil {
			return err
		}
	}
	return nil
}

// SyncDirFS syncs directory dir of fs: what was created, linked or removed
// in it survives a power cut.
func SyncDirFS(fs vfs.FS, dir string) error {
	d, err := fs.OpenDir(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
