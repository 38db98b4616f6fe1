package net

import (
	"errors"
	"os"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// cutFS is a file system on which the power is cut before the mutating
// operation numbered cutAt (0: the first): what the disk holds then is
// kept in clone (only what was synced), and every operation from then on
// fails, as the writer would never run again. With failClose, closing a
// file written to fails instead (as a network file system reports a
// delayed write error at close).
type cutFS struct {
	vfs.FS
	mem       *vfs.MemFS
	ops       int
	cutAt     int
	clone     *vfs.MemFS
	failClose bool
}

var (
	errPowerCut = errors.New("power cut")
	errClose    = errors.New("delayed write error at close")
)

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
	return &cutFile{File: f, fs: c, written: true}, nil
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
	fs      *cutFS
	written bool
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

func (f *cutFile) Close() error {
	err := f.File.Close()
	if f.written && f.fs.failClose {
		return errClose
	}
	return err
}

// TestPowerLossIdentityFile cuts the power before each step of a node's
// first start writing its identity (directories made, their parents
// synced, the temporary file created, written, synced, linked, the
// directory synced, the temporary removed) and once after it returned:
// after the "reboot" the directory holds either no identity (and the next
// start makes one) or a whole one; once the identity was returned, always
// that same one, since the node may have given its id out. Removing the
// file's Sync, the directory's Sync after the link or the Sync of a new
// directory's parent fails it.
func TestPowerLossIdentityFile(t *testing.T) {
	const dir = "/srv/fincrypt/node"
	for cutAt := 0; ; cutAt++ {
		mem := vfs.NewCrashableMem()
		fs := &cutFS{FS: mem, mem: mem, cutAt: cutAt}
		made, err := loadOrCreateIdentityFS(fs, dir)
		acked := err == nil
		if acked {
			fs.clone = mem.CrashClone(vfs.CrashCloneCfg{})
		} else if !errors.Is(err, errPowerCut) {
			t.Fatalf("cut at %d: %v", cutAt, err)
		}
		got, err := loadIdentityFS(fs.clone, dir)
		switch {
		case err != nil && acked:
			t.Fatalf("identity %s acknowledged, then after a power cut: %v", made.ID(), err)
		case err == nil && acked && got.ID() != made.ID():
			t.Fatalf("identity %s acknowledged, %s after a power cut", made.ID(), got.ID())
		case err != nil && !errors.Is(err, os.ErrNotExist):
			t.Fatalf("cut at %d: a damaged identity file: %v", cutAt, err)
		case err != nil:
			// No identity: the next start makes one, and keeps it.
			again, err := loadOrCreateIdentityFS(fs.clone, dir)
			if err != nil {
				t.Fatalf("cut at %d: the next start: %v", cutAt, err)
			}
			if back, err := loadIdentityFS(fs.clone, dir); err != nil || back.ID() != again.ID() {
				t.Fatalf("cut at %d: the next start's identity does not read back: %v", cutAt, err)
			}
		}
		if acked {
			break
		}
	}
}

// TestIdentityCloseErrorNotAcknowledged: when closing the new identity
// file fails (a delayed write error), the start fails and leaves no
// identity behind, so the next start makes a whole one instead of keeping
// a file whose bytes may never have reached the disk.
func TestIdentityCloseErrorNotAcknowledged(t *testing.T) {
	const dir = "/node"
	mem := vfs.NewCrashableMem()
	fs := &cutFS{FS: mem, mem: mem, cutAt: -1, failClose: true}
	if id, err := loadOrCreateIdentityFS(fs, dir); !errors.Is(err, errClose) {
		t.Fatalf("close failed, got identity %v, error %v (want the close error)", id != nil, err)
	}
	if _, err := loadIdentityFS(mem, dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after a failed close: %v, want no identity", err)
	}
	fs.failClose = false
	a, err := loadOrCreateIdentityFS(fs, dir)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := loadIdentityFS(mem, dir); err != nil || b.ID() != a.ID() {
		t.Fatalf("the next start's identity does not read back: %v", err)
	}
}
