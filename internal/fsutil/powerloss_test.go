package fsutil

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/fincrypt/fincrypt/internal/powerloss"
)

// TestPowerLossWriteFileAtomic replaces a file and cuts the power before
// each step of the replacement in turn (the temporary file created,
// written, synced, renamed over the file, the directory synced), keeping
// only what was synced: the file then holds its old bytes or its new ones,
// never a mix or nothing, and once WriteFileAtomicFS has returned, the new
// ones. The vault's key and config files, the clean-unmount record, the
// store's owner file and the PSBT file are written this way.
func TestPowerLossWriteFileAtomic(t *testing.T) {
	oldData, newData := bytes.Repeat([]byte("o"), 5000), bytes.Repeat([]byte("n"), 7000)
	for cut := 0; ; cut++ {
		mem := vfs.NewCrashableMem()
		if err := MkdirAllSyncedFS(mem, "/home/v"); err != nil {
			t.Fatal(err)
		}
		// The old file, written and synced by hand (not by the code tested).
		f, err := mem.Create("/home/v/key", vfs.WriteCategoryUnspecified)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(oldData); err != nil {
			t.Fatal(err)
		}
		if err := errors.Join(f.Sync(), f.Close(), SyncDirFS(mem, "/home/v")); err != nil {
			t.Fatal(err)
		}
		c := &powerloss.CutFS{FS: mem, Mem: mem, CutAt: cut}
		err = WriteFileAtomicFS(c, "/home/v/key", newData, 0o600)
		returned := c.Clone == nil
		if returned && err != nil {
			t.Fatalf("without a power cut: %v", err)
		}
		disk := c.CutNow()
		f, err = disk.Open("/home/v/key")
		if err != nil {
			t.Fatalf("power cut before step %d (returned: %v): the file is gone: %v", cut, returned, err)
		}
		got, err := io.ReadAll(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case returned && !bytes.Equal(got, newData):
			t.Fatalf("power cut after WriteFileAtomicFS returned: the file holds %d bytes %q..., want the new %d", len(got), got[:min(len(got), 8)], len(newData))
		case !bytes.Equal(got, oldData) && !bytes.Equal(got, newData):
			t.Fatalf("power cut before step %d: the file holds %d bytes %q..., neither the old %d nor the new %d", cut, len(got), got[:min(len(got), 8)], len(oldData), len(newData))
		}
		if returned {
			return
		}
	}
}
