package fs

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fincrypt/fincrypt/internal/fsutil"
)

// BallastName is the file, in the index's parent directory, that the mount
// keeps as a reserve of disk space for the index (see spaceGuard).
const BallastName = "space.reserve"

// Bounds of the free space kept for the index: 1 % of the disk, at least
// minReserve and at most maxReserve, and never more than a quarter of it.
// Only Pebble's log must never fail (its flushes and compactions retry), so
// tens of megabytes cover what it writes between two checks.
const (
	minReserve  = 16 << 20
	maxReserve  = 64 << 20
	ballastSize = 8 << 20
)

// spaceGuard keeps the disk that holds the index from filling up. Pebble
// stops the whole process when it cannot write its log, so the file system
// refuses what adds data (writes, new files, links, xattrs) with ENOSPC
// while less than reserve bytes are free. Another program can still fill
// the disk: then the guard gives back its ballast file, so that deleting
// files, which writes a little to the index, keeps working. The ballast is
// made again once the disk has room.
type spaceGuard struct {
	dir     string // on the index's file system
	ballast string
	reserve uint64
	bsize   uint64 // ballast size
	log     *slog.Logger

	mu      sync.Mutex   // serialises making and releasing the ballast
	has     atomic.Bool  // the ballast exists
	retryAt atomic.Int64 // unix ns: no new ballast before (after a failure)

	// statfs reads the file system's free space (syscall.Statfs; tests
	// count the calls), and now the clock (time.Now).
	statfs func(dir string, st *syscall.Statfs_t) error
	now    func() time.Time

	// The last look at the free space, for operations that come soon
	// after (fromCache): a statfs per CREATE and WRITE was about 3 % of
	// the mount's CPU on a workload of small files.
	cmu    sync.Mutex
	seen   uint64    // free bytes at the last look
	seenAt time.Time // when; zero: no look to go by
	spent  uint64    // bytes admitted since (an upper bound of what they add)
}

// A look at the free space serves the operations that follow it for at most
// spaceStale, and only while the free space it saw, less everything
// admitted since, stays above twice the reserve: near a full disk every
// operation looks again, as if there were no cache, so the line is drawn
// exactly where it was; far from it, what another program writes within
// spaceStale is all a stale answer can miss (a look at the start of a
// long operation misses as much). metaCharge is what an operation is
// assumed to add to the index and the store besides file data.
var spaceStale = 100 * time.Millisecond // a variable for tests

const metaCharge = 64 << 10

// statfsCalls counts the guard's looks at the free space (tests).
var statfsCalls atomic.Int64

func newSpaceGuard(indexDir string, log *slog.Logger) (*spaceGuard, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(indexDir, &st); err != nil {
		return nil, fmt.Errorf("free space of %s: %w", indexDir, err)
	}
	total := st.Blocks * uint64(st.Bsize)
	g := &spaceGuard{
		dir:     indexDir,
		ballast: filepath.Join(filepath.Dir(indexDir), BallastName),
		reserve: min(max(total/100, minReserve), maxReserve, total/4),
		bsize:   min(ballastSize, total/16),
		log:     log,
		statfs:  syscall.Statfs,
		now:     time.Now,
	}
	_, err := os.Stat(g.ballast)
	g.has.Store(err == nil)
	g.check()
	return g, nil
}

// free is the space left on the index's file system to unprivileged
// writers (root may use the blocks reserved for it, but the guard keeps
// to what everybody can rely on).
func (g *spaceGuard) free() (uint64, bool) {
	var st syscall.Statfs_t
	statfsCalls.Add(1)
	if err := g.statfs(g.dir, &st); err != nil {
		return 0, false
	}
	return st.Bavail * uint64(st.Bsize), true
}

// room answers an operation that adds data, at most n bytes of file data
// (besides metaCharge): ENOSPC while the disk is short of the reserve. A nil
// guard (a read-only file system) always has room.
func (g *spaceGuard) room(n uint64) syscall.Errno {
	if g == nil || g.fromCache(n+metaCharge) {
		return 0
	}
	if g.check() < g.reserve {
		return syscall.ENOSPC
	}
	g.cmu.Lock()
	g.spent += n + metaCharge // counts against the look just taken
	g.cmu.Unlock()
	return 0
}

// freeing is called before an operation that frees space but writes to the
// index (unlink, rmdir, rename): it releases the ballast if the disk is full.
func (g *spaceGuard) freeing() {
	if g != nil && !g.fromCache(metaCharge) {
		g.check()
	}
}

// fromCache admits an operation of n bytes without a statfs if the last
// look is fresh and, with n and everything admitted since, still far from
// the reserve (see spaceStale).
func (g *spaceGuard) fromCache(n uint64) bool {
	g.cmu.Lock()
	defer g.cmu.Unlock()
	if g.seenAt.IsZero() || g.now().Sub(g.seenAt) > spaceStale {
		return false
	}
	left := g.seen - min(g.seen, g.spent+n)
	if left < 2*g.reserve {
		return false
	}
	g.spent += n
	return true
}

// saw records a look at the free space.
func (g *spaceGuard) saw(free uint64, at time.Time) {
	g.cmu.Lock()
	g.seen, g.seenAt, g.spent = free, at, 0
	g.cmu.Unlock()
}

// writeCharge bounds what a write of n bytes at off may add to the store:
// every chunk it touches, sealed whole (a partial chunk is sealed again at
// its next flush).
func writeCharge(off, n, cs uint64) uint64 {
	if n == 0 {
		return 0
	}
	return ((off+n-1)/cs - off/cs + 1) * cs
}

// check gives the ballast back when the disk is nearly full and makes it
// again when there is room; it returns the free space.
func (g *spaceGuard) check() uint64 {
	at := g.now()
	free, ok := g.free()
	if !ok {
		g.saw(0, time.Time{})
		return g.reserve // cannot tell: do not block the user
	}
	defer func() { g.saw(free, at) }()
	switch {
	case free < g.reserve/2 && g.has.Load():
		g.mu.Lock()
		defer g.mu.Unlock()
		if g.has.Load() {
			if err := os.Remove(g.ballast); err == nil || os.IsNotExist(err) {
				g.has.Store(false)
				g.log.Warn("the disk holding the vault is nearly full: released the space reserved for the index; free some space",
					"dir", g.dir, "free", free, "released", g.bsize)
				free += g.bsize
			}
		}
	case free >= g.reserve+2*g.bsize && !g.has.Load() && time.Now().UnixNano() >= g.retryAt.Load():
		g.mu.Lock()
		defer g.mu.Unlock()
		if !g.has.Load() {
			if err := g.makeBallast(); err != nil {
				g.log.Warn("could not reserve disk space for the index", "file", g.ballast, "err", err)
				g.retryAt.Store(time.Now().Add(time.Minute).UnixNano())
			} else {
				g.has.Store(true)
				free -= g.bsize
			}
		}
	}
	return free
}

func (g *spaceGuard) makeBallast() error {
	tmp := g.ballast + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	// Allocated blocks, not a sparse file: removing it must free them.
	err = syscall.Fallocate(int(f.Fd()), 0, 0, int64(g.bsize))
	if err != nil {
		err = fillZeros(f, g.bsize)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, g.ballast)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return fsutil.SyncDir(filepath.Dir(g.ballast))
}

// fillZeros writes n zero bytes, for file systems without fallocate.
func fillZeros(f *os.File, n uint64) error {
	buf := make([]byte, 1<<20)
	for n > 0 {
		k := min(n, uint64(len(buf)))
		if _, err := f.Write(buf[:k]); err != nil {
			return err
		}
		n -= k
	}
	return nil
}
