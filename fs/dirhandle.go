package fs

import (
	"cmp"
	"context"
	"slices"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fincrypt/fincrypt/meta"
	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// dirHandle is an open directory. It lists the directory on its first
// READDIR(PLUS) and serves the listing from there, as go-fuse's list stream
// did (a rewind serves the same listing). For READDIRPLUS, which answers a
// look-up of every entry it returns, it reads the entry's inode by the
// number the listing holds instead of looking the name up again (a keyed
// MAC of the name, a point read and an open of the entry record per entry),
// as long as no directory entry changed since the listing
// (meta.Index.DirentGeneration); after a change it looks the name up as
// LOOKUP does. The inodes are read inodeBatch entries at a time with one
// index iterator, and one read that way is used while nothing was committed
// to the index since (meta.Index.Generation), else read again. An entry
// the kernel already holds under its name (the mount's node for the name
// is that inode: the kernel looked it up, or was handed it by an earlier
// READDIRPLUS, and has not forgotten it) is answered without a node, so a
// listing of names the kernel knows (a second `find`, `git status`) costs
// no more per entry than READDIR; but only while the kernel's entries and
// attributes have at least half their timeouts to run, which the mount
// knows per directory, not per name (a field in every Node would take it
// to the next size class): an earlier listing of the directory, begun
// less than that ago, handed every entry, or the process is younger than
// that (fsys.plusFresh). An entry the kernel holds past its timeouts (a
// long-lived mount's `ls -l` an hour after the last) must be handed
// again: without a node the kernel keeps it expired and looks each name
// up again after the listing. go-fuse calls Readdirent, Seekdir and
// Lookup of one handle under the handle's lock.
type dirHandle struct {
	n      *Node
	listed bool
	list   []fuse.DirEntry
	pos    int
	gen    uint64 // DirentGeneration noted before listing
	last   int    // index in list of the entry Readdirent returned last; -1: none

	// fast: an entry the kernel holds is answered without a node (the
	// directory was plusFresh when the listing began, at start). handed
	// marks the entries handed to the kernel with a node, nHanded counts
	// them: a listing that handed all makes the directory fresh.
	fast    bool
	start   int64
	handed  []bool
	nHanded int

	// batch holds the inodes of the entries list[bFrom:bTo] in ascending
	// order of number, read into the same memory batch after batch (a
	// map a batch was 200 MB of garbage over a million entries, and the
	// collector's work with it).
	batch      []meta.Inode
	inos       []uint64 // the numbers asked for, the batch's scratch
	bFrom, bTo int
	bOK        bool   // the batch was read
	igen       uint64 // Generation noted before reading inodes
}

// inodeBatch is how many entries' inodes a listing reads at a time.
const inodeBatch = 256

// inodePointReads counts the inodes a listing read one by one, and
// inodeBatchReads those it asked for in batches (tests).
var inodePointReads, inodeBatchReads atomic.Int64

// OpendirHandle opens directory n for reading (dirHandle).
func (n *Node) OpendirHandle(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	return &dirHandle{n: n, last: -1}, 0, 0
}

func (d *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if !d.listed {
		r := d.n.r()
		d.gen = r.idx.DirentGeneration()
		d.start = monoNow()
		d.fast = r.plusFresh(d.n.ino())
		list, errno := d.n.listDir()
		if errno != 0 {
			return nil, errno
		}
		d.list, d.listed = list, true
	}
	d.last = -1
	if d.pos >= len(d.list) {
		// The end, after the last entry's look-up: a listing that handed
		// every entry makes the directory fresh (before getdents(2) sees
		// the end).
		if !d.fast && d.nHanded == len(d.list)-2 { // all but "." and ".." (listDir)
			d.n.r().plusHanded(d.n.ino(), d.start)
		}
		return nil, 0
	}
	// go-fuse copies the entry before the next call: hand it the list's
	// own (a copy a call was an allocation an entry).
	e := &d.list[d.pos]
	d.last = d.pos
	d.pos++
	e.Off = uint64(d.pos)
	return e, 0
}

func (d *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if !d.listed {
		if _, errno := d.Readdirent(ctx); errno != 0 {
			return errno
		}
	}
	if off > uint64(len(d.list)) {
		return syscall.EINVAL
	}
	d.pos, d.last = int(off), -1
	d.bOK, d.bFrom, d.bTo = false, 0, 0
	return 0
}

func (d *dirHandle) Releasedir(ctx context.Context, releaseFlags uint32) {}

// monoBase is the origin of monoNow.
var monoBase = time.Now()

// monoNow is the monotonic time since monoBase, in nanoseconds.
func monoNow() int64 { return int64(time.Since(monoBase)) }

// plusHalf is half the shorter of the tree's entry and attribute timeouts.
func (r *fsys) plusHalf() time.Duration { return min(r.opt.EntryTimeout, r.opt.AttrTimeout) / 2 }

// plusFresh reports whether a listing of directory ino that handed every
// entry to the kernel began less than plusHalf ago: the kernel's entries
// for the names it held then, and their attributes, have not expired. So
// is every directory while the process is younger than plusHalf: the
// kernel holds only what this process handed it (`git status` in a new
// mount, which stats each file and then lists each directory).
func (r *fsys) plusFresh(ino uint64) bool {
	half := r.plusHalf()
	if time.Duration(monoNow()) < half {
		return true
	}
	r.plusMu.Lock()
	at, ok := r.plusDirs[ino]
	r.plusMu.Unlock()
	return ok && time.Duration(monoNow()-at) < half
}

// plusHanded records that a listing of directory ino begun at at handed
// every entry to the kernel. Entries past plusHalf are swept out as the
// map doubles.
func (r *fsys) plusHanded(ino uint64, at int64) {
	r.plusMu.Lock()
	defer r.plusMu.Unlock()
	if r.plusDirs == nil {
		r.plusDirs = map[uint64]int64{}
	}
	if old, ok := r.plusDirs[ino]; ok && old >= at {
		return
	}
	r.plusDirs[ino] = at
	if len(r.plusDirs) > 2*r.plusSwept+1024 {
		now, half := monoNow(), r.plusHalf()
		for i, t := range r.plusDirs {
			if time.Duration(now-t) >= half {
				delete(r.plusDirs, i)
			}
		}
		r.plusSwept = len(r.plusDirs)
	}
}

// Lookup answers READDIRPLUS's look-up of name, the entry Readdirent
// returned last.
func (d *dirHandle) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	n, r := d.n, d.n.r()
	if d.last < 0 || d.list[d.last].Name != name || r.idx.DirentGeneration() != d.gen ||
		(name == SnapshotsDirName && n.ino() == meta.RootIno) {
		return n.Lookup(ctx, name, out)
	}
	e := &d.list[d.last]
	ch := n.GetChild(name)
	if d.fast && ch != nil && ch.StableAttr() == (gofs.StableAttr{Mode: e.Mode & syscall.S_IFMT, Ino: e.Ino}) {
		// The kernel holds this name for this inode already, with its
		// attributes (every change reaches it through this kernel), and
		// neither expires soon (d.fast): an
		// entry without a node (nodeid 0, which go-fuse leaves after an
		// error) leaves them as they are, sparing the inode's read, its
		// registration again and the kernel's update of what it holds.
		plusKnown.Add(1)
		return nil, syscall.EEXIST
	}
	in, err := d.inode(d.last)
	if err != nil {
		return nil, r.errno("lookup", err)
	}
	r.fillEntry(&in, out)
	if d.handed == nil {
		d.handed = make([]bool, len(d.list))
	}
	if !d.handed[d.last] {
		d.handed[d.last] = true
		d.nHanded++
	}
	return n.adopt(ctx, ch, &in), 0
}

// plusKnown counts the READDIRPLUS entries answered without a node because
// the kernel held them already (tests).
var plusKnown atomic.Int64

// inode returns the inode of list[i], from a batch read of the entries from
// i on.
func (d *dirHandle) inode(i int) (meta.Inode, error) {
	x := d.n.r().idx
	ino := d.list[i].Ino
	in, ok := d.batched(ino)
	if !ok && (i < d.bFrom || i >= d.bTo) {
		d.readBatch(i)
		in, ok = d.batched(ino)
	}
	if ok && x.Generation() == d.igen {
		return in, nil
	}
	inodePointReads.Add(1)
	return x.GetInode(ino)
}

// batched returns inode ino from the batch read last, if it holds it.
func (d *dirHandle) batched(ino uint64) (meta.Inode, bool) {
	if !d.bOK {
		return meta.Inode{}, false
	}
	j, ok := slices.BinarySearchFunc(d.batch, ino, func(in meta.Inode, ino uint64) int { return cmp.Compare(in.Ino, ino) })
	if !ok {
		return meta.Inode{}, false
	}
	return d.batch[j], true
}

// readBatch reads the inodes of up to inodeBatch entries from list[i] on.
// A failure leaves them to be read one by one (which reports it).
func (d *dirHandle) readBatch(i int) {
	x := d.n.r().idx
	d.bFrom, d.bTo = i, min(i+inodeBatch, len(d.list))
	inos := d.inos[:0]
	for _, e := range d.list[d.bFrom:d.bTo] {
		if e.Name != "." && e.Name != ".." {
			inos = append(inos, e.Ino)
		}
	}
	slices.Sort(inos)
	inos = slices.Compact(inos)
	d.inos = inos
	inodeBatchReads.Add(int64(len(inos)))
	d.igen = x.Generation()
	// GetInodes calls back in ascending order of number: the batch stays
	// sorted for batched's search.
	clear(d.batch) // no symlink target of the last batch kept alive
	if cap(d.batch) < len(inos) {
		d.batch = make([]meta.Inode, 0, len(inos))
	}
	d.batch = d.batch[:0]
	err := x.GetInodes(inos, func(in meta.Inode) { d.batch = append(d.batch, in) })
	d.bOK = err == nil
}
