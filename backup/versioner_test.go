package backup

import (
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/fincrypt/fincrypt/meta"
	"github.com/fincrypt/fincrypt/vault"
)

// churn applies random changes to a synthetic mount's index, each in its
// own batch, as a mount's operations do: files created, rewritten,
// truncated, chmodded, renamed across directories, hard-linked, unlinked;
// directories created, moved and removed with everything under them;
// symlinks, fifos (a version skips them) and extended attributes.
type churn struct {
	t    *testing.T
	m    *mountTree
	r    *mrand.Rand
	dirs []uint64 // live directories, the root first
	gen  int
}

func (c *churn) idx() *meta.Index { return c.m.repo.Index }

func (c *churn) commit(b *meta.Batch) {
	c.t.Helper()
	if err := b.Commit(false); err != nil {
		c.t.Fatal(err)
	}
}

func (c *churn) entries(dir uint64) []meta.Dirent {
	var out []meta.Dirent
	if err := c.idx().ListDir(dir, func(d meta.Dirent) error { out = append(out, d); return nil }); err != nil {
		c.t.Fatal(err)
	}
	return out
}

func (c *churn) inode(ino uint64) meta.Inode {
	in, err := c.idx().GetInode(ino)
	if err != nil {
		c.t.Fatalf("inode %d: %v", ino, err)
	}
	return in
}

func (c *churn) dir() uint64 { return c.dirs[c.r.IntN(len(c.dirs))] }

// entry picks an entry of a random directory (ok false: it was empty).
func (c *churn) entry(typ uint32) (meta.Dirent, bool) {
	for range 8 {
		ents := c.entries(c.dir())
		var fit []meta.Dirent
		for _, d := range ents {
			if typ == 0 || d.Type == typ {
				fit = append(fit, d)
			}
		}
		if len(fit) > 0 {
			return fit[c.r.IntN(len(fit))], true
		}
	}
	return meta.Dirent{}, false
}

func (c *churn) name() string { c.gen++; return fmt.Sprintf("n%05d", c.gen) }

// under reports whether directory a is d or below it.
func (c *churn) under(a, d uint64) bool {
	for a != meta.RootIno {
		if a == d {
			return true
		}
		found := false
		for _, p := range c.dirs {
			for _, e := range c.entries(p) {
				if e.Ino == a && e.Type == syscall.S_IFDIR {
					a, found = p, true
					break
				}
			}
			if found {
				break
			}
		}
		if !found {
			return false
		}
	}
	return d == meta.RootIno
}

// removeAll drops directory d's entries, recursively, into b.
func (c *churn) removeAll(b *meta.Batch, d uint64) {
	for _, e := range c.entries(d) {
		b.DeleteDirent(d, e.Name)
		switch e.Type {
		case syscall.S_IFDIR:
			c.removeAll(b, e.Ino)
			b.DeleteInode(e.Ino)
			for i, x := range c.dirs {
				if x == e.Ino {
					c.dirs = append(c.dirs[:i], c.dirs[i+1:]...)
					break
				}
			}
		default:
			c.unlinkInode(b, e.Ino)
		}
	}
}

func (c *churn) unlinkInode(b *meta.Batch, ino uint64) {
	in := c.inode(ino)
	if in.Nlink > 1 {
		in.Nlink--
		in.Ctime++
		b.PutInode(&in)
		return
	}
	b.DeleteInode(ino)
	if in.Mode&syscall.S_IFMT == syscall.S_IFREG {
		b.DeleteChunk(ino, 0)
	}
}

func (c *churn) step() {
	now := time.Now().UnixNano()
	b := c.idx().NewBatch()
	switch op := c.r.IntN(14); op {
	case 0, 1: // a new file
		ino := c.m.ino()
		data := c.m.content(ino, c.gen)
		b.PutInode(&meta.Inode{Ino: ino, Mode: syscall.S_IFREG | 0o644, Nlink: 1, Size: uint64(len(data)), Mtime: now})
		b.PutDirent(&meta.Dirent{Parent: c.dir(), Name: c.name(), Ino: ino, Type: syscall.S_IFREG})
		c.m.putChunk(b, ino, data)
	case 2: // a new directory
		ino := c.m.ino()
		b.PutInode(&meta.Inode{Ino: ino, Mode: syscall.S_IFDIR | 0o755, Nlink: 2, Mtime: now})
		b.PutDirent(&meta.Dirent{Parent: c.dir(), Name: c.name(), Ino: ino, Type: syscall.S_IFDIR})
		c.dirs = append(c.dirs, ino)
	case 3, 4: // a rewrite
		d, ok := c.entry(syscall.S_IFREG)
		if !ok {
			break
		}
		in := c.inode(d.Ino)
		data := c.m.content(d.Ino, c.gen+1000)
		c.m.putChunk(b, d.Ino, data)
		in.Size, in.Mtime = uint64(len(data)), now
		b.PutInode(&in)
	case 5: // a chmod of anything
		d, ok := c.entry(0)
		if !ok {
			break
		}
		in := c.inode(d.Ino)
		in.Mode ^= 0o010
		in.Ctime = now
		b.PutInode(&in)
	case 6: // an unlink
		d, ok := c.entry(syscall.S_IFREG)
		if !ok {
			break
		}
		b.DeleteDirent(d.Parent, d.Name)
		c.unlinkInode(b, d.Ino)
	case 7: // a rename, into any directory not below itself
		d, ok := c.entry(0)
		if !ok {
			break
		}
		to := c.dir()
		if d.Type == syscall.S_IFDIR && c.under(to, d.Ino) {
			break
		}
		b.DeleteDirent(d.Parent, d.Name)
		b.PutDirent(&meta.Dirent{Parent: to, Name: c.name(), Ino: d.Ino, Type: d.Type})
		in := c.inode(d.Ino)
		in.Ctime = now
		b.PutInode(&in)
	case 8: // a hard link
		d, ok := c.entry(syscall.S_IFREG)
		if !ok {
			break
		}
		in := c.inode(d.Ino)
		in.Nlink++
		b.PutInode(&in)
		b.PutDirent(&meta.Dirent{Parent: c.dir(), Name: c.name(), Ino: d.Ino, Type: syscall.S_IFREG})
	case 9: // an extended attribute set or removed
		d, ok := c.entry(0)
		if !ok {
			break
		}
		if c.r.IntN(2) == 0 {
			b.PutXattr(d.Ino, "user.k", []byte(c.name()))
		} else {
			b.DeleteXattr(d.Ino, "user.k")
		}
	case 10: // a symlink or a fifo
		ino := c.m.ino()
		mode := uint32(syscall.S_IFLNK | 0o777)
		if c.r.IntN(2) == 0 {
			mode = syscall.S_IFIFO | 0o600
		}
		b.PutInode(&meta.Inode{Ino: ino, Mode: mode, Nlink: 1, Target: []byte(c.name())})
		b.PutDirent(&meta.Dirent{Parent: c.dir(), Name: c.name(), Ino: ino, Type: mode & syscall.S_IFMT})
	case 11: // a directory removed with everything under it
		d, ok := c.entry(syscall.S_IFDIR)
		if !ok || c.r.IntN(3) != 0 {
			break
		}
		c.removeAll(b, d.Ino)
		b.DeleteDirent(d.Parent, d.Name)
		b.DeleteInode(d.Ino)
		for i, x := range c.dirs {
			if x == d.Ino {
				c.dirs = append(c.dirs[:i], c.dirs[i+1:]...)
				break
			}
		}
	case 12: // a truncation to nothing (its chunk stays, past the end)
		d, ok := c.entry(syscall.S_IFREG)
		if !ok {
			break
		}
		in := c.inode(d.Ino)
		in.Size, in.Mtime = 0, now
		b.PutInode(&in)
	case 13: // a directory's own attributes
		d := c.dir()
		in := c.inode(d)
		in.Mtime = now
		b.PutInode(&in)
	}
	c.commit(b)
}

// TestVersionerMatchesFullWalk: over random trees and random changes, every
// version a Versioner records (from what changed) has the tree a full walk
// of the index builds (TakeVersion, the oracle, run next on the same
// index), the same totals, and leaves the oracle no tree and no pin to
// add: nothing it took from its last version is stale or missing. A
// forget (which deletes trees and pins) in between makes the next version
// read everything again.
func TestVersionerMatchesFullWalk(t *testing.T) {
	for seed := uint64(1); seed <= 12; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			repo := newRepo(t)
			m := &mountTree{t: t, repo: repo}
			r := mrand.New(mrand.NewPCG(seed, 77))
			m.build(1+r.IntN(4), r.IntN(12))
			c := &churn{t: t, m: m, r: r, dirs: []uint64{meta.RootIno}}
			for d := uint64(meta.RootIno + 1); d <= m.next; d++ {
				if in, err := repo.Index.GetInode(d); err == nil && in.Mode&syscall.S_IFMT == syscall.S_IFDIR {
					c.dirs = append(c.dirs, d)
				}
			}
			s := NewVersioner(repo)
			at := time.Now().Add(-24 * time.Hour)
			incremental := 0
			for round := 0; round < 25; round++ {
				for range r.IntN(6) {
					c.step()
				}
				forgot := false
				if round%9 == 8 {
					if _, err := Forget(repo, Policy{Last: 2}, false); err != nil {
						t.Fatal(err)
					}
					forgot = true
				}
				at = at.Add(time.Minute)
				got, err := s.Take(VersionOptions{ChunkSize: testCS, Time: at, Host: "t", Force: true})
				if err != nil {
					t.Fatalf("round %d: %v", round, err)
				}
				if got.Incremental {
					incremental++
				}
				if round > 0 && !forgot && !got.Incremental {
					t.Fatalf("round %d: the version read the whole tree with a complete feed", round)
				}
				if forgot && got.Incremental {
					t.Fatalf("round %d: an incremental version after a forget deleted trees", round)
				}
				at = at.Add(time.Minute)
				checkAgainstFullWalk(t, repo, got, at, fmt.Sprintf("round %d", round))
			}
			if incremental < 15 {
				t.Fatalf("only %d of 25 versions were incremental", incremental)
			}
		})
	}
}

// TestVersionerReadsTheChange: after one file changed, a Versioner's
// version reads as many index records (scanned and looked up) in a mount
// of 1,650 files as in one of 150: the changed file's directory and the
// root, not the tree (the vault grows in a directory the change is not
// in); TakeVersion, the full walk, reads every record.
func TestVersionerReadsTheChange(t *testing.T) {
	var reads []int64
	for _, extra := range []int{0, 30} {
		repo := newRepo(t)
		m := &mountTree{t: t, repo: repo}
		m.build(3, 50)
		// extra directories of 50 files under d0002 (inode root+103).
		b := repo.Index.NewBatch()
		for d := 0; d < extra; d++ {
			dino := m.ino()
			b.PutInode(&meta.Inode{Ino: dino, Mode: syscall.S_IFDIR | 0o755, Nlink: 2})
			b.PutDirent(&meta.Dirent{Parent: meta.RootIno + 103, Name: fmt.Sprintf("s%03d", d), Ino: dino, Type: syscall.S_IFDIR})
			for f := 0; f < 50; f++ {
				fino := m.ino()
				data := m.content(fino, 0)
				b.PutInode(&meta.Inode{Ino: fino, Mode: syscall.S_IFREG | 0o640, Nlink: 1, Size: uint64(len(data))})
				b.PutDirent(&meta.Dirent{Parent: dino, Name: fmt.Sprintf("f%05d", f), Ino: fino, Type: syscall.S_IFREG})
				m.putChunk(b, fino, data)
			}
		}
		if err := b.Commit(false); err != nil {
			t.Fatal(err)
		}
		files := uint64(150 + extra*50)
		s := NewVersioner(repo)
		at := time.Now().Add(-time.Hour)
		if _, err := s.Take(VersionOptions{ChunkSize: testCS, Time: at, Host: "t"}); err != nil {
			t.Fatal(err)
		}
		m.rewrite(meta.RootIno+3, 1) // a file of d0000
		x := repo.Index
		r0, p0 := x.RecordsRead(), x.PointsRead()
		rep, err := s.Take(VersionOptions{ChunkSize: testCS, Time: at.Add(time.Minute), Host: "t"})
		if err != nil {
			t.Fatal(err)
		}
		n := x.RecordsRead() - r0 + x.PointsRead() - p0
		if !rep.Incremental || rep.NewChunks != 1 || rep.NewTrees != 2 || rep.Files != files {
			t.Fatalf("%d files: %+v", files, rep)
		}
		r0, p0 = x.RecordsRead(), x.PointsRead()
		if _, err := TakeVersion(repo, VersionOptions{ChunkSize: testCS, Time: at.Add(2 * time.Minute), Host: "t"}); err != nil {
			t.Fatal(err)
		}
		full := x.RecordsRead() - r0 + x.PointsRead() - p0
		t.Logf("%d files: the Versioner read %d records, a full walk %d", files, n, full)
		if full < int64(files*3) {
			t.Fatalf("the full walk read %d records for %d files: the count misses reads", full, files)
		}
		reads = append(reads, n)
	}
	if reads[1] != reads[0] {
		t.Fatalf("records read after one change: %d at 150 files, %d at 1,650: it grows with the vault", reads[0], reads[1])
	}
}

// memRepo is a repo whose index lives on fs (a memory file system, or a
// crashable one): reopen closes the index and opens it again, as a
// remount does.
type memRepo struct {
	t     testing.TB
	path  string
	keys  *vault.Keys
	fs    vfs.FS
	repo  Repo
	clone *vfs.MemFS
}

func newMemRepo(t testing.TB, fs vfs.FS) *memRepo {
	t.Helper()
	base := newRepo(t) // its keys and chunk store
	r := &memRepo{t: t, path: "index", keys: base.Keys, fs: fs, repo: base}
	if fs == vfs.Default {
		r.path = filepath.Join(t.TempDir(), "index")
	}
	r.open(fs)
	t.Cleanup(func() { r.repo.Index.Close() })
	return r
}

func (r *memRepo) open(fs vfs.FS) {
	r.t.Helper()
	idx, err := meta.Open(r.path, r.keys, meta.Options{FS: fs})
	if err != nil {
		r.t.Fatal(err)
	}
	r.fs = fs
	r.repo.Index = idx
}

// reopen closes the index and opens it again (a clean unmount and mount).
func (r *memRepo) reopen() {
	r.t.Helper()
	if err := r.repo.Index.Close(); err != nil {
		r.t.Fatal(err)
	}
	r.open(r.fs)
}

// crash keeps what a crash at this instant leaves of the index (a random
// share of what was not synced); restart opens it, leaving the running
// index behind.
func (r *memRepo) crash(rng *mrand.Rand) {
	mem := r.fs.(*vfs.MemFS)
	r.clone = mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(100), RNG: mrand.New(mrand.NewPCG(rng.Uint64(), 1))})
}

func (r *memRepo) restart() {
	r.t.Helper()
	r.repo.Index.Close()
	r.open(r.clone)
	r.clone = nil
}

// checkAgainstFullWalk runs the oracle (TakeVersion) after version got and
// fails unless both recorded the same tree and totals and the oracle had
// nothing to add.
func checkAgainstFullWalk(t *testing.T, repo Repo, got *VersionReport, at time.Time, what string) {
	t.Helper()
	want, err := TakeVersion(repo, VersionOptions{ChunkSize: testCS, Time: at, Host: "t", Force: true})
	if err != nil {
		t.Fatal(err)
	}
	gs, err1 := FindSnapshot(repo.Index, got.Snapshot)
	ws, err2 := FindSnapshot(repo.Index, want.Snapshot)
	if err := errors.Join(err1, err2); err != nil {
		t.Fatal(err)
	}
	if gs.Tree != ws.Tree {
		t.Fatalf("%s: the Versioner's tree %x, a full walk's %x", what, gs.Tree[:], ws.Tree[:])
	}
	if got.Files != want.Files || got.Dirs != want.Dirs || got.Skipped != want.Skipped || got.TotalBytes != want.TotalBytes {
		t.Fatalf("%s: totals %+v, a full walk's %+v", what, got, want)
	}
	if want.NewTrees != 0 || want.NewChunks != 0 {
		t.Fatalf("%s: the full walk after the Versioner added %d trees and %d pins", what, want.NewTrees, want.NewChunks)
	}
}

// refreshDirs lists the live directories again from the index (after a
// crash took back some of the churn's changes).
func (c *churn) refreshDirs() {
	c.dirs = []uint64{meta.RootIno}
	for i := 0; i < len(c.dirs); i++ {
		for _, e := range c.entries(c.dirs[i]) {
			if e.Type == syscall.S_IFDIR {
				c.dirs = append(c.dirs, e.Ino)
			}
		}
	}
}

var errCrash = errors.New("crash (test)")

// TestVersionerAcrossRemountsAndCrashes: a Versioner of a reopened index
// (a remount) builds its first version from the change marks and the
// version cache the last one left, and every version it records, after a
// clean reopen or after a crash at any point (between changes, in the
// middle of a version's batches, after its last batch and before its
// record), has the tree and totals of a full walk of the same index, which
// adds nothing. After a clean reopen the first version is incremental; a
// version cache record that does not decode makes the version read the
// whole tree, with the same result.
func TestVersionerAcrossRemountsAndCrashes(t *testing.T) {
	defer func(n int) { versionFlush, testHookFlush, testHookAfterPins = n, nil, nil }(versionFlush)
	versionFlush = 5 // several batches a version, to crash between
	for seed := uint64(1); seed <= 10; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			r := newMemRepo(t, vfs.NewCrashableMem())
			m := &mountTree{t: t, repo: r.repo}
			rng := mrand.New(mrand.NewPCG(seed, 99))
			m.build(1+rng.IntN(4), rng.IntN(12))
			c := &churn{t: t, m: m, r: rng}
			c.refreshDirs()
			at := time.Now().Add(-24 * time.Hour)
			s := NewVersioner(r.repo)
			remounted := func() {
				m.repo = r.repo
				c.refreshDirs()
				s = NewVersioner(r.repo)
			}
			incrementalAfterReopen, crashes := 0, 0
			versioned := false // a version completed: the cache has a header
			incrementalAfterCrash, sinceCrash := 0, false
			for round := 0; round < 30; round++ {
				for range rng.IntN(6) {
					c.step()
				}
				crashed := false
				crashIn := func() error {
					if !crashed {
						crashed = true
						r.crash(rng)
					}
					return errCrash
				}
				switch rng.IntN(6) {
				case 0: // a crash between changes
					r.crash(rng)
					r.restart()
					crashes++
					sinceCrash = true
					remounted()
				case 1: // a clean remount
					r.reopen()
					remounted()
					at = at.Add(time.Minute)
					got, err := s.Take(VersionOptions{ChunkSize: testCS, Time: at, Host: "t", Force: true})
					if err != nil {
						t.Fatal(err)
					}
					if versioned && !got.Incremental {
						t.Fatalf("round %d: the first version after a remount read the whole tree", round)
					}
					if got.Incremental {
						incrementalAfterReopen++
					}
					versioned = true
					at = at.Add(time.Minute)
					checkAgainstFullWalk(t, r.repo, got, at, fmt.Sprintf("round %d, after a remount", round))
					continue
				case 2: // a crash in the middle of a version
					testHookFlush = crashIn
					testHookAfterPins = func() error {
						if crashed {
							return errCrash
						}
						return nil
					}
				case 3: // a crash after the version's last batch
					testHookAfterPins = crashIn
				}
				at = at.Add(time.Minute)
				got, err := s.Take(VersionOptions{ChunkSize: testCS, Time: at, Host: "t", Force: true})
				testHookFlush, testHookAfterPins = nil, nil
				if crashed {
					if !errors.Is(err, errCrash) {
						t.Fatalf("round %d: a crashed version returned %v", round, err)
					}
					crashes++
					sinceCrash = true
					r.restart()
					remounted()
					at = at.Add(time.Minute)
					got, err = s.Take(VersionOptions{ChunkSize: testCS, Time: at, Host: "t", Force: true})
				}
				if err != nil {
					t.Fatalf("round %d: %v", round, err)
				}
				versioned = true
				if sinceCrash && got.Incremental {
					incrementalAfterCrash++
				}
				sinceCrash = false
				at = at.Add(time.Minute)
				checkAgainstFullWalk(t, r.repo, got, at, fmt.Sprintf("round %d", round))
			}
			t.Logf("%d clean remounts, %d crashes, %d incremental versions after a crash", incrementalAfterReopen, crashes, incrementalAfterCrash)
			if crashes == 0 || incrementalAfterReopen == 0 || incrementalAfterCrash == 0 {
				t.Fatalf("%d crashes, %d clean remounts: the seed tests too little", crashes, incrementalAfterReopen)
			}
			// A damaged cache record: the version reads everything.
			b := r.repo.Index.NewBatch()
			b.PutTreeCache(meta.TreeCacheDir, meta.RootIno, []byte{9, 9, 9})
			if err := b.Commit(true); err != nil {
				t.Fatal(err)
			}
			c.step()
			r.reopen()
			remounted()
			at = at.Add(time.Minute)
			got, err := s.Take(VersionOptions{ChunkSize: testCS, Time: at, Host: "t", Force: true})
			if err != nil {
				t.Fatal(err)
			}
			if got.Incremental {
				t.Fatal("a version with a damaged cache record took it")
			}
			at = at.Add(time.Minute)
			checkAgainstFullWalk(t, r.repo, got, at, "after a damaged record")
		})
	}
}

// TestVersionerRemountReadsTheChange: the first version after a remount
// reads as many index records in a mount of 1,650 files as in one of 150
// (the change marks, the changed file's directory and the root, their
// cache records), not the tree.
func TestVersionerRemountReadsTheChange(t *testing.T) {
	var reads []int64
	for _, extra := range []int{0, 30} {
		r := newMemRepo(t, vfs.NewMem())
		m := &mountTree{t: t, repo: r.repo}
		m.build(3, 50)
		// extra directories of 50 files under d0002 (inode root+103).
		b := r.repo.Index.NewBatch()
		for d := 0; d < extra; d++ {
			dino := m.ino()
			b.PutInode(&meta.Inode{Ino: dino, Mode: syscall.S_IFDIR | 0o755, Nlink: 2})
			b.PutDirent(&meta.Dirent{Parent: meta.RootIno + 103, Name: fmt.Sprintf("s%03d", d), Ino: dino, Type: syscall.S_IFDIR})
			for f := 0; f < 50; f++ {
				fino := m.ino()
				data := m.content(fino, 0)
				b.PutInode(&meta.Inode{Ino: fino, Mode: syscall.S_IFREG | 0o640, Nlink: 1, Size: uint64(len(data))})
				b.PutDirent(&meta.Dirent{Parent: dino, Name: fmt.Sprintf("f%05d", f), Ino: fino, Type: syscall.S_IFREG})
				m.putChunk(b, fino, data)
			}
		}
		if err := b.Commit(false); err != nil {
			t.Fatal(err)
		}
		at := time.Now().Add(-time.Hour)
		if _, err := NewVersioner(r.repo).Take(VersionOptions{ChunkSize: testCS, Time: at, Host: "t"}); err != nil {
			t.Fatal(err)
		}
		r.reopen()
		m.repo = r.repo
		m.rewrite(meta.RootIno+3, 1) // a file of d0000
		x := r.repo.Index
		r0, p0 := x.RecordsRead(), x.PointsRead()
		rep, err := NewVersioner(r.repo).Take(VersionOptions{ChunkSize: testCS, Time: at.Add(time.Minute), Host: "t"})
		if err != nil {
			t.Fatal(err)
		}
		n := x.RecordsRead() - r0 + x.PointsRead() - p0
		files := uint64(150 + extra*50)
		if !rep.Incremental || rep.NewChunks != 1 || rep.NewTrees != 2 || rep.Files != files {
			t.Fatalf("%d files, after a remount: %+v", files, rep)
		}
		t.Logf("%d files: the first version after a remount read %d records", files, n)
		reads = append(reads, n)
	}
	if reads[1] != reads[0] {
		t.Fatalf("records read by the first version after a remount: %d at 150 files, %d at 1,650: it grows with the vault", reads[0], reads[1])
	}
}

// BenchmarkVersionRemount measures the first version a Versioner records
// after a remount (the index closed and opened again, one file changed),
// against a full walk of the same index after one more change (what the
// first version after a mount was before the version cache): index
// records read (scanned and looked up) and CPU time. The vault's first
// version, which writes the cache, is reported too. On disk, 100 files a
// directory, like BenchmarkVersion. FINCRYPT_VERSION_FILES (a count)
// measures that size instead.
func BenchmarkVersionRemount(b *testing.B) {
	sizes := []int{10_000, 100_000}
	if n, err := strconv.Atoi(os.Getenv("FINCRYPT_VERSION_FILES")); err == nil && n >= 100 {
		sizes = []int{n}
	}
	for _, n := range sizes {
		b.Run(fmt.Sprintf("files=%d", n), func(b *testing.B) {
			for range b.N {
				b.StopTimer()
				r := newMemRepo(b, vfs.Default)
				m := &mountTree{t: b, repo: r.repo}
				m.build(n/100, 100)
				at := time.Now().Add(-time.Hour)
				reads := func() int64 { return r.repo.Index.RecordsRead() + r.repo.Index.PointsRead() }
				c0 := cpuTime()
				first, err := NewVersioner(r.repo).Take(VersionOptions{ChunkSize: testCS, Time: at})
				if err != nil {
					b.Fatal(err)
				}
				cpu0 := cpuTime() - c0
				r.reopen()
				m.repo = r.repo
				m.rewrite(uint64(n/2), 1)
				b.StartTimer()
				r0, c1 := reads(), cpuTime()
				rep, err := NewVersioner(r.repo).Take(VersionOptions{ChunkSize: testCS, Time: at.Add(time.Minute)})
				if err != nil {
					b.Fatal(err)
				}
				read1, cpu1 := reads()-r0, cpuTime()-c1
				b.StopTimer()
				if !rep.Incremental {
					b.Fatal("the first version after a remount read the whole tree")
				}
				m.rewrite(uint64(n/2), 2)
				r0, c2 := reads(), cpuTime()
				if _, err := TakeVersion(r.repo, VersionOptions{ChunkSize: testCS, Time: at.Add(2 * time.Minute)}); err != nil {
					b.Fatal(err)
				}
				readFull, cpuFull := reads()-r0, cpuTime()-c2
				b.ReportMetric(cpu0.Seconds(), "vault_first_cpu_s")
				b.ReportMetric(float64(first.IndexBytes), "vault_first_index_B")
				b.ReportMetric(float64(read1), "remount_records")
				b.ReportMetric(cpu1.Seconds(), "remount_cpu_s")
				b.ReportMetric(float64(readFull), "fullwalk_records")
				b.ReportMetric(cpuFull.Seconds(), "fullwalk_cpu_s")
				b.StartTimer()
			}
		})
	}
}
