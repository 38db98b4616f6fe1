package wallet

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/fincrypt/fincrypt/internal/powerloss"
)

// cutFS is a file system on which the power is cut before the mutating
// operation numbered cutAt (0: the first): what the disk holds then is
// kept in clone (only what was synced), and every operation from then on
// fails, as the writer would never run again.
type cutFS struct {
	vfs.FS
	mem   *vfs.MemFS
	ops   int
	cutAt int
	clone *vfs.MemFS
}

var errPowerCut = errors.New("power cut")

func (c *cutFS) step() error {
	if c.clone != nil {
		return errPowerCut
	}
	if c.ops == c.cutAt {
		c.clone = c.mem.CrashClone(vfs.CrashCloneCfg{})
		return errPowerCut
	}
	c.ops++
	return nil
}

func (c *cutFS) MkdirAll(dir string, perm os.FileMode) error {
	if err := c.step(); err != nil {
		return err
	}
	return c.FS.MkdirAll(dir, perm)
}

func (c *cutFS) Create(name string, cat vfs.DiskWriteCategory) (vfs.File, error) {
	if err := c.step(); err != nil {
		return nil, err
	}
	f, err := c.FS.Create(name, cat)
	if err != nil {
		return nil, err
	}
	return &cutFile{File: f, fs: c}, nil
}

func (c *cutFS) Link(oldname, newname string) error {
	if err := c.step(); err != nil {
		return err
	}
	return c.FS.Link(oldname, newname)
}

func (c *cutFS) Remove(name string) error {
	if err := c.step(); err != nil {
		return err
	}
	return c.FS.Remove(name)
}

func (c *cutFS) OpenDir(name string) (vfs.File, error) {
	f, err := c.FS.OpenDir(name)
	if err != nil {
		return nil, err
	}
	return &cutFile{File: f, fs: c}, nil
}

type cutFile struct {
	vfs.File
	fs *cutFS
}

func (f *cutFile) Write(p []byte) (int, error) {
	if err := f.fs.step(); err != nil {
		return 0, err
	}
	return f.File.Write(p)
}

func (f *cutFile) Sync() error {
	if err := f.fs.step(); err != nil {
		return err
	}
	return f.File.Sync()
}

// TestPowerLossSeedFile cuts the power before each step of writing the
// wallet's seed file (create, write, sync, link, directory sync, removal of
// the temporary file) and once after it returned: after the "reboot" the
// directory holds either no seed (and a new one can be written) or the
// whole seed, which opens with the passphrase to the bytes imported; once
// ImportSeed has returned, always the latter. Removing the file's Sync or
// the directory's fails it.
func TestPowerLossSeedFile(t *testing.T) {
	runs := powerloss.Runs(t, 3)
	for run := range runs {
		rng := rand.New(rand.NewPCG(uint64(run), 21))
		seed := make([]byte, 32)
		for i := range seed {
			seed[i] = byte(rng.IntN(256))
		}
		for cutAt := 0; ; cutAt++ {
			mem := vfs.NewCrashableMem()
			fs := &cutFS{FS: mem, mem: mem, cutAt: cutAt}
			err := writeSeedFS(fs, "/w", seed, testPass, "regtest", cheapKDF)
			acked := err == nil
			if acked {
				fs.clone = mem.CrashClone(vfs.CrashCloneCfg{})
			} else if !errors.Is(err, errPowerCut) {
				t.Fatalf("cut at %d: %v", cutAt, err)
			}
			got, _, err := openSeedFS(fs.clone, "/w", testPass)
			switch {
			case err == nil && !bytes.Equal(got, seed):
				t.Fatalf("cut at %d: the seed reads back different", cutAt)
			case err != nil && acked:
				t.Fatalf("seed acknowledged, then after a power cut: %v", err)
			case err != nil && !errors.Is(err, ErrNoSeed):
				t.Fatalf("cut at %d: a damaged seed file: %v", cutAt, err)
			case err != nil:
				// No seed: writing it again after the reboot works.
				if err := writeSeedFS(fs.clone, "/w", seed, testPass, "regtest", cheapKDF); err != nil {
					t.Fatalf("cut at %d: writing the seed again: %v", cutAt, err)
				}
			}
			if acked {
				break
			}
		}
	}
}
