package powerloss

import (
	"errors"
	"math/rand/v2"
	"os"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// ErrPowerCut is what every operation of a CutFS returns from the cut on.
var ErrPowerCut = errors.New("power cut")

// ErrClose is what closing a written file returns with CutFS.FailClose.
var ErrClose = errors.New("delayed write error at close")

// CutFS is a file system on which the power is cut before the mutating
// operation numbered CutAt (0: the first; -1: never): what the disk holds
// then is kept in Clone (only what was synced), and every operation from
// then on fails with ErrPowerCut, as the writer would never run again. The
// operations counted are MkdirAll, Create, Link, Remove, and a file's Write
// and Sync. With FailClose, closing a file it created fails with ErrClose
// (as a network file system reports a delayed write error at close).
type CutFS struct {
	vfs.FS
	Mem       *vfs.MemFS
	CutAt     int
	Clone     *vfs.MemFS
	FailClose bool
	ops       int
}

// NewCutFS cuts the power of a new crashable in-memory file system before
// its operation cutAt.
func NewCutFS(cutAt int) *CutFS {
	mem := vfs.NewCrashableMem()
	return &CutFS{FS: mem, Mem: mem, CutAt: cutAt}
}

// CutNow cuts the power at once (after what ran so far was acknowledged)
// and returns what the disk holds.
func (c *CutFS) CutNow() *vfs.MemFS {
	if c.Clone == nil {
		c.Clone = c.Mem.CrashClone(vfs.CrashCloneCfg{})
	}
	return c.Clone
}

func (c *CutFS) step() error {
	if c.Clone != nil {
		return ErrPowerCut
	}
	if c.ops == c.CutAt {
		c.CutNow()
		return ErrPowerCut
	}
	c.ops++
	return nil
}

// MkdirAll implements vfs.FS.
func (c *CutFS) MkdirAll(dir string, perm os.FileMode) error {
	if err := c.step(); err != nil {
		return err
	}
	return c.FS.MkdirAll(dir, perm)
}

// Create implements vfs.FS.
func (c *CutFS) Create(name string, cat vfs.DiskWriteCategory) (vfs.File, error) {
	if err := c.step(); err != nil {
		return nil, err
	}
	f, err := c.FS.Create(name, cat)
	if err != nil {
		return nil, err
	}
	return &cutFile{File: f, fs: c, written: true}, nil
}

// Link implements vfs.FS.
func (c *CutFS) Link(oldname, newname string) error {
	if err := c.step(); err != nil {
		return err
	}
	return c.FS.Link(oldname, newname)
}

// Remove implements vfs.FS.
func (c *CutFS) Remove(name string) error {
	if err := c.step(); err != nil {
		return err
	}
	return c.FS.Remove(name)
}

// OpenDir implements vfs.FS: a directory's Sync counts as an operation.
func (c *CutFS) OpenDir(name string) (vfs.File, error) {
	f, err := c.FS.OpenDir(name)
	if err != nil {
		return nil, err
	}
	return &cutFile{File: f, fs: c}, nil
}

type cutFile struct {
	vfs.File
	fs      *CutFS
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
	if f.written && f.fs.FailClose {
		return ErrClose
	}
	return err
}

// Disk is a crashable in-memory file system for one seeded run, with the
// run's random source: Cut keeps a seeded share of what was not synced.
type Disk struct {
	*vfs.MemFS
	Rand   *rand.Rand
	seed   uint64
	stream uint64
}

// NewDisk starts a run: its random source is PCG(seed, stream), and Cut
// draws which unsynced writes survive from PCG(seed, stream+1).
func NewDisk(seed, stream uint64) *Disk {
	return &Disk{MemFS: vfs.NewCrashableMem(), Rand: rand.New(rand.NewPCG(seed, stream)), seed: seed, stream: stream}
}

// Cut cuts the power: it returns what the disk holds afterwards, everything
// synced and under half (a seeded share) of what was not.
func (d *Disk) Cut() *vfs.MemFS {
	return d.MemFS.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: d.Rand.IntN(50), RNG: rand.New(rand.NewPCG(d.seed, d.stream+1))})
}

// Fill fills b with bytes from r.
func Fill(r *rand.Rand, b []byte) []byte {
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}
