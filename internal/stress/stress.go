// Package stress runs a seeded random mix of file operations against a file
// system under test (a Fincrypt mount) and, in lockstep, against a plain
// directory that serves as the oracle. Every operation's result (its errno,
// and what a read, stat, readlink, readdir or getxattr returned) must be the
// same on both; at the end the two trees must match (Compare).
//
// Each of the N workers owns one subtree (w0, w1, ...) and runs its
// operations one at a time, first on the mount, then on the oracle, so both
// see the same sequence and a run is reproducible from its seed (the
// workers interleave differently from run to run, which is the point of
// having several; what each one does depends only on the seed).
//
// For crash tests a worker also records which files are durable: a file
// whose fsync, and then the fsync of each directory from its parent up to
// the mount's root, returned before the mount was killed must read back
// byte-identical afterwards (Durable).
package stress

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Config shapes a run; zero fields take defaults.
type Config struct {
	// Seed makes the run reproducible.
	Seed int64
	// Workers is the number of concurrent workers (default 4).
	Workers int
	// Ops is the number of operations per worker (default 1000).
	Ops int
	// Deadline, if set, stops the workers early.
	Deadline time.Time
	// MaxFileSize bounds the size of any file (default 8 MiB); BigFile is
	// the largest single write of a "big" file (default 4 MiB).
	MaxFileSize, BigFile int64
	// Crashed, if set, tells whether the mount has been killed on purpose:
	// from then on a failing operation stops its worker quietly instead of
	// failing the run.
	Crashed func() bool
	// Trace, if set, receives one line per operation.
	Trace io.Writer
}

func (c *Config) setDefaults() {
	if c.Workers <= 0 {
		c.Workers = 4
	}
	if c.Ops <= 0 {
		c.Ops = 1000
	}
	if c.MaxFileSize <= 0 {
		c.MaxFileSize = 8 << 20
	}
	if c.BigFile <= 0 {
		c.BigFile = 4 << 20
	}
	if c.BigFile > c.MaxFileSize {
		c.BigFile = c.MaxFileSize
	}
}

// Durable is what a file held when its last durability point passed.
type Durable struct {
	Size int64
	Sum  [sha256.Size]byte
}

// Runner is one run.
type Runner struct {
	cfg     Config
	roots   [2]string // mount, oracle
	workers []*worker
	ops     atomic.Int64
	stop    atomic.Bool
	errMu   sync.Mutex
	err     error
	counts  sync.Map // op name -> *atomic.Int64
}

const (
	sideMount  = 0
	sideOracle = 1
)

var sideName = [2]string{"mount", "oracle"}

// New prepares a run over the mount's root and the oracle's root (an empty
// directory on a local file system); each worker gets its subtree wN.
func New(cfg Config, mount, oracle string) *Runner {
	cfg.setDefaults()
	r := &Runner{cfg: cfg, roots: [2]string{mount, oracle}}
	for i := 0; i < cfg.Workers; i++ {
		r.workers = append(r.workers, &worker{
			r: r, id: i, dir: fmt.Sprintf("w%d", i),
			rng: rand.New(rand.NewPCG(uint64(cfg.Seed), uint64(i)+1)),
			m:   newModel(), durable: map[string]Durable{},
		})
	}
	return r
}

// Run runs every worker to its end (or the deadline, or the first
// mismatch) and returns the first mismatch.
func (r *Runner) Run() error {
	var wg sync.WaitGroup
	for _, w := range r.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.run()
		}()
	}
	wg.Wait()
	for _, w := range r.workers {
		w.closeAll()
	}
	r.errMu.Lock()
	defer r.errMu.Unlock()
	return r.err
}

// Stop asks the workers to stop after their current operation.
func (r *Runner) Stop() { r.stop.Store(true) }

// DurableNow is how many files are durable now (during Run), over all
// workers: a crash test waits for some before it kills the mount.
func (r *Runner) DurableNow() int64 {
	var n int64
	for _, w := range r.workers {
		n += w.held.Load()
	}
	return n
}

// Ops is the number of operations done so far, over all workers.
func (r *Runner) Ops() int64 { return r.ops.Load() }

// Stats summarises the operations done, by kind.
func (r *Runner) Stats() string {
	var names []string
	r.counts.Range(func(k, _ any) bool { names = append(names, k.(string)); return true })
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		v, _ := r.counts.Load(n)
		fmt.Fprintf(&b, "%s=%d ", n, v.(*atomic.Int64).Load())
	}
	return strings.TrimSpace(b.String())
}

// Durable returns, after Run, every file that was durable when the run
// stopped, by path relative to the roots.
func (r *Runner) Durable() map[string]Durable {
	out := map[string]Durable{}
	for _, w := range r.workers {
		for p, d := range w.durable {
			out[filepath.Join(w.dir, p)] = d
		}
	}
	return out
}

// ExplicitMtimes returns, after Run, the paths whose mtime was last set by
// utimes (and not changed since), which Compare checks as well.
func (r *Runner) ExplicitMtimes() map[string]bool {
	out := map[string]bool{}
	for _, w := range r.workers {
		for p, n := range w.m.entries {
			if n.explicitMtime && p != "" {
				out[filepath.Join(w.dir, p)] = true
			}
		}
	}
	return out
}

func (r *Runner) fail(err error) {
	r.errMu.Lock()
	if r.err == nil {
		r.err = err
	}
	r.errMu.Unlock()
	r.stop.Store(true)
}

func (r *Runner) count(op string) {
	v, ok := r.counts.Load(op)
	if !ok {
		v, _ = r.counts.LoadOrStore(op, new(atomic.Int64))
	}
	v.(*atomic.Int64).Add(1)
}

// errCrashed stops a worker once the mount is gone.
var errCrashed = errors.New("mount crashed on purpose")

type worker struct {
	r       *Runner
	id      int
	dir     string
	rng     *rand.Rand
	m       *model
	handles []*handle
	durable map[string]Durable
	held    atomic.Int64 // len(durable) after the last operation, for DurableNow
	n       int          // operations done
	op      string       // current operation, for messages
}

// handle is a file open on both sides.
type handle struct {
	fd     [2]int
	ino    *inode
	path   string // the path it was opened by (it may have moved since)
	flags  int
	closed bool
}

func (w *worker) run() {
	if err := w.setup(); err != nil {
		w.r.fail(err)
		return
	}
	for w.n = 0; w.n < w.r.cfg.Ops; w.n++ {
		if w.r.stop.Load() || (!w.r.cfg.Deadline.IsZero() && time.Now().After(w.r.cfg.Deadline)) {
			return
		}
		if err := w.step(); err != nil {
			if !errors.Is(err, errCrashed) {
				w.r.fail(fmt.Errorf("seed %d worker %d op %d (%s): %w", w.r.cfg.Seed, w.id, w.n, w.op, err))
			}
			return
		}
		w.held.Store(int64(len(w.durable)))
		w.r.ops.Add(1)
	}
}

func (w *worker) setup() error {
	for s := range 2 {
		if err := os.Mkdir(filepath.Join(w.r.roots[s], w.dir), 0o755); err != nil {
			return fmt.Errorf("%s: %w", sideName[s], err)
		}
	}
	return nil
}

func (w *worker) closeAll() {
	for _, h := range w.handles {
		if !h.closed {
			unix.Close(h.fd[0])
			unix.Close(h.fd[1])
			h.closed = true
		}
	}
	w.handles = nil
}

// full is the absolute path of p (relative to the worker's root) on a side.
func (w *worker) full(s int, p string) string {
	return filepath.Join(w.r.roots[s], w.dir, p)
}

// outcome is what an operation returned on one side.
type outcome struct {
	err  error
	data []byte // what the caller must see identically on both sides
}

func errnoString(err error) string {
	if err == nil {
		return "ok"
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return fmt.Sprintf("errno %d (%v)", int(e), e)
	}
	return "error " + err.Error()
}

// do runs f on the mount, then on the oracle, and compares the outcomes.
// It returns whether the operation succeeded.
func (w *worker) do(f func(s int) outcome) (bool, error) {
	w.r.count(w.op)
	if w.r.cfg.Trace != nil {
		fmt.Fprintf(w.r.cfg.Trace, "w%d %d %s\n", w.id, w.n, w.op)
	}
	crashedBefore := w.r.cfg.Crashed != nil && w.r.cfg.Crashed()
	if crashedBefore {
		return false, errCrashed
	}
	mo := f(sideMount)
	oo := f(sideOracle)
	if errnoString(mo.err) != errnoString(oo.err) || !bytes.Equal(mo.data, oo.data) {
		if w.r.cfg.Crashed != nil && w.r.cfg.Crashed() {
			return false, errCrashed
		}
		if errnoString(mo.err) != errnoString(oo.err) {
			gone := ""
			if errors.Is(mo.err, unix.ENOTCONN) || errors.Is(mo.err, unix.ECONNABORTED) {
				gone = " (the mount process died: see its log)"
			}
			return false, fmt.Errorf("mount: %s, oracle: %s%s", errnoString(mo.err), errnoString(oo.err), gone)
		}
		return false, fmt.Errorf("both %s, but the mount returned %s where the oracle returned %s",
			errnoString(oo.err), describe(mo.data), describe(oo.data))
	}
	return oo.err == nil, nil
}

func describe(b []byte) string {
	if len(b) <= 64 && isText(b) {
		return fmt.Sprintf("%q", b)
	}
	return fmt.Sprintf("%d bytes (sha256 %x)", len(b), sha256.Sum256(b))
}

func isText(b []byte) bool {
	for _, c := range b {
		if c < 0x20 && c != '\n' && c != '\t' {
			return false
		}
	}
	return true
}

// diffAt names the first differing byte of two reads, for messages.
func diffAt(a, b []byte) int {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	return i
}

// fill writes deterministic pseudo-random bytes (from the worker's stream).
func (w *worker) fill(b []byte) {
	for i := 0; i < len(b); i += 8 {
		v := w.rng.Uint64()
		for j := 0; j < 8 && i+j < len(b); j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
}

func (w *worker) data(n int64) []byte {
	b := make([]byte, n)
	if w.rng.IntN(10) == 0 {
		// Compressible runs, and zeros that are data, not holes.
		for i := range b {
			b[i] = byte(i / 512)
		}
		return b
	}
	w.fill(b)
	return b
}

// size draws a write size: mostly tiny and small, sometimes MiBs.
func (w *worker) size() int64 {
	switch r := w.rng.IntN(100); {
	case r < 30:
		return w.rng.Int64N(100)
	case r < 65:
		return w.rng.Int64N(16 << 10)
	case r < 90:
		return w.rng.Int64N(256 << 10)
	case r < 97:
		return w.rng.Int64N(1 << 20)
	default:
		return 1<<20 + w.rng.Int64N(w.r.cfg.BigFile-1<<20+1)
	}
}

// offset draws where to write in a file of size cur: inside, at the end,
// or past it (a sparse hole).
func (w *worker) offset(cur int64) int64 {
	switch r := w.rng.IntN(10); {
	case r < 5 && cur > 0:
		return w.rng.Int64N(cur)
	case r < 8:
		return cur
	default:
		return cur + w.rng.Int64N(2<<20)
	}
}

// clampWrite keeps a file within MaxFileSize.
func (w *worker) clampWrite(off, n int64) (int64, int64) {
	max := w.r.cfg.MaxFileSize
	if off > max {
		off = w.rng.Int64N(max)
	}
	if off+n > max {
		n = max - off
	}
	return off, n
}

// names is the pool names are drawn from, so that later operations hit
// them again (renames onto existing names, recreated names).
var names = []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l",
	"file.txt", "data.bin", "Mixed Case", "ünïcödé", "dot.d", ".hidden",
	strings.Repeat("long", 60), "sp ace", "x-y_z"}

// newName draws a path in an existing directory (it may exist already).
func (w *worker) newName() string {
	dirs := w.m.sorted(kDir)
	for {
		d := dirs[w.rng.IntN(len(dirs))]
		if w.m.depth(d) >= 4 {
			continue
		}
		return strings.TrimPrefix(d+"/"+names[w.rng.IntN(len(names))], "/")
	}
}

// pick draws an existing path of one of the kinds, or "" if none; now and
// then a name that does not exist, so that errors are compared too.
func (w *worker) pick(kinds ...kind) string {
	all := w.m.sorted(kinds...)
	if w.rng.IntN(25) == 0 || len(all) == 0 {
		return w.newName()
	}
	return all[w.rng.IntN(len(all))]
}

// exists reports whether p names a file of a kind in the model.
func (w *worker) is(p string, k kind) bool {
	n := w.m.entries[p]
	return n != nil && n.kind == k
}

// modified notes that n's content or size changed: none of its names is
// durable any more, and its mtime is no longer the one set explicitly.
func (w *worker) modified(n *inode) {
	if n == nil {
		return
	}
	n.explicitMtime = false
	for _, p := range w.m.paths(n) {
		delete(w.durable, p)
	}
}

// moved notes that the names at and under p are about to change.
func (w *worker) moved(p string) {
	for q := range w.durable {
		if under(q, p) {
			delete(w.durable, q)
		}
	}
}

// step runs one random operation.
func (w *worker) step() error {
	r := w.rng.IntN(1000)
	for _, o := range opTable {
		if r < o.weight {
			w.op = o.name
			return o.fn(w)
		}
		r -= o.weight
	}
	w.op = "read"
	return opRead(w)
}

type opEntry struct {
	name   string
	weight int // per mille
	fn     func(*worker) error
}

var opTable []opEntry

func init() {
	opTable = []opEntry{
		{"create", 90, opCreate},
		{"write", 90, opWrite},
		{"append", 40, opAppend},
		{"otrunc", 30, opOTrunc},
		{"truncate", 40, opTruncate},
		{"fallocate", 25, opFallocate},
		{"rename", 60, opRename},
		{"link", 30, opLink},
		{"unlink", 50, opUnlink},
		{"mkdir", 40, opMkdir},
		{"rmdir", 25, opRmdir},
		{"fsync", 25, opFsync},
		{"durable", 45, opDurable},
		{"read", 75, opRead},
		{"stat", 40, opStat},
		{"readdir", 25, opReaddir},
		{"chmod", 25, opChmod},
		{"utimes", 25, opUtimes},
		{"symlink", 25, opSymlink},
		{"readlink", 10, opReadlink},
		{"setxattr", 25, opSetxattr},
		{"getxattr", 15, opGetxattr},
		{"rmxattr", 10, opRemovexattr},
		{"listxattr", 10, opListxattr},
		{"hopen", 25, opHandleOpen},
		{"hio", 100, opHandleIO},
	}
	total := 0
	for _, o := range opTable {
		total += o.weight
	}
	if total > 1000 {
		panic(fmt.Sprintf("stress: op weights add up to %d > 1000", total))
	}
}

// writeAt writes data at off of an fd, whole or failing.
func writeAt(fd int, b []byte, off int64) error {
	for len(b) > 0 {
		n, err := unix.Pwrite(fd, b, off)
		if err != nil {
			return err
		}
		if n == 0 {
			return io.ErrShortWrite
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}

func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err != nil {
			return err
		}
		if n == 0 {
			return io.ErrShortWrite
		}
		b = b[n:]
	}
	return nil
}

// readAt reads up to n bytes at off, as many as there are.
func readAt(fd int, n, off int64) ([]byte, error) {
	b := make([]byte, n)
	got := 0
	for int64(got) < n {
		k, err := unix.Pread(fd, b[got:], off+int64(got))
		if err != nil {
			return b[:got], err
		}
		if k == 0 {
			break
		}
		got += k
	}
	return b[:got], nil
}

// fileSize is the oracle's size of a file (the model does not keep sizes).
func (w *worker) fileSize(p string) int64 {
	var st unix.Stat_t
	if unix.Stat(w.full(sideOracle, p), &st) != nil {
		return 0
	}
	return st.Size
}

// withFile opens p with flags on a side, runs f and closes the file; an
// error of close counts (it reports a failed flush).
func withFile(path string, flags int, mode uint32, f func(fd int) error) error {
	fd, err := unix.Open(path, flags|unix.O_CLOEXEC, mode)
	if err != nil {
		return err
	}
	err = f(fd)
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	return err
}

var fileModes = []uint32{0o644, 0o600, 0o755, 0o640, 0o444, 0o400, 0o000, 0o666, 0o4755, 0o2750, 0o1777, 0o700}

func opCreate(w *worker) error {
	p := w.newName()
	mode := fileModes[w.rng.IntN(len(fileModes))]
	n := w.size()
	off := int64(0)
	if w.rng.IntN(8) == 0 {
		off = w.rng.Int64N(4 << 20) // a file that starts with a hole
	}
	off, n = w.clampWrite(off, n)
	data := w.data(n)
	excl := w.rng.IntN(3) > 0
	flags := unix.O_CREAT | unix.O_WRONLY
	if excl {
		flags |= unix.O_EXCL
	}
	prev := w.m.entries[p]
	if prev != nil && prev.kind == kFile {
		w.modified(prev) // without O_EXCL an existing file is written
	}
	ok, err := w.do(func(s int) outcome {
		return outcome{err: withFile(w.full(s, p), flags, mode, func(fd int) error {
			return writeAt(fd, data, off)
		})}
	})
	if err != nil || !ok {
		return err
	}
	if prev == nil {
		w.m.entries[p] = w.m.newInode(kFile)
		w.m.touchDir(parent(p))
	}
	return nil
}

func opWrite(w *worker) error {
	p := w.pick(kFile)
	cur := w.fileSize(p)
	off, n := w.clampWrite(w.offset(cur), w.size())
	data := w.data(n)
	w.modified(w.m.entries[p])
	_, err := w.do(func(s int) outcome {
		return outcome{err: withFile(w.full(s, p), unix.O_WRONLY, 0, func(fd int) error {
			return writeAt(fd, data, off)
		})}
	})
	return err
}

func opAppend(w *worker) error {
	p := w.pick(kFile)
	cur := w.fileSize(p)
	_, n := w.clampWrite(cur, w.size()/4)
	data := w.data(max(n, 0))
	w.modified(w.m.entries[p])
	_, err := w.do(func(s int) outcome {
		return outcome{err: withFile(w.full(s, p), unix.O_WRONLY|unix.O_APPEND, 0, func(fd int) error {
			// Two writes: the second must land after the first.
			h := len(data) / 2
			if err := writeAll(fd, data[:h]); err != nil {
				return err
			}
			return writeAll(fd, data[h:])
		})}
	})
	return err
}

func opOTrunc(w *worker) error {
	p := w.pick(kFile)
	_, n := w.clampWrite(0, w.size())
	if w.rng.IntN(3) == 0 {
		n = 0
	}
	data := w.data(n)
	w.modified(w.m.entries[p])
	_, err := w.do(func(s int) outcome {
		return outcome{err: withFile(w.full(s, p), unix.O_WRONLY|unix.O_TRUNC, 0, func(fd int) error {
			return writeAt(fd, data, 0)
		})}
	})
	return err
}

func opTruncate(w *worker) error {
	p := w.pick(kFile, kDir)
	cur := w.fileSize(p)
	var size int64
	switch w.rng.IntN(4) {
	case 0:
		size = 0
	case 1:
		if cur > 0 {
			size = w.rng.Int64N(cur)
		}
	case 2:
		size = cur + w.rng.Int64N(1<<20)
	default:
		size = w.rng.Int64N(w.r.cfg.MaxFileSize)
	}
	w.modified(w.m.entries[p])
	_, err := w.do(func(s int) outcome { return outcome{err: unix.Truncate(w.full(s, p), size)} })
	return err
}

// opFallocate allocates a range (mode 0: the file grows to cover it). A
// mount that does not support fallocate returns EOPNOTSUPP; then both
// sides get what posix_fallocate does instead (the size grows), so the
// trees stay comparable.
func opFallocate(w *worker) error {
	p := w.pick(kFile)
	cur := w.fileSize(p)
	off, n := w.clampWrite(w.offset(cur), 1+w.rng.Int64N(1<<20))
	if n <= 0 {
		n = 1
	}
	keep := w.rng.IntN(4) == 0
	mode := uint32(0)
	if keep {
		mode = unix.FALLOC_FL_KEEP_SIZE
	}
	w.modified(w.m.entries[p])
	unsupported := false
	_, err := w.do(func(s int) outcome {
		return outcome{err: withFile(w.full(s, p), unix.O_WRONLY, 0, func(fd int) error {
			if s == sideOracle && unsupported {
				return emulateFallocate(fd, keep, off, n)
			}
			err := unix.Fallocate(fd, mode, off, n)
			if s == sideMount && (err == unix.EOPNOTSUPP || err == unix.ENOSYS) {
				unsupported = true
				return emulateFallocate(fd, keep, off, n)
			}
			return err
		})}
	})
	if unsupported {
		w.r.count("fallocate-emulated")
	}
	return err
}

// emulateFallocate is posix_fallocate's effect on the size and contents.
func emulateFallocate(fd int, keep bool, off, n int64) error {
	if keep {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if off+n > st.Size {
		return unix.Ftruncate(fd, off+n)
	}
	return nil
}

func opRename(w *worker) error {
	var from string
	switch w.rng.IntN(5) {
	case 0:
		from = w.pick(kDir)
	case 1:
		from = w.pick(kLink)
	default:
		from = w.pick(kFile)
	}
	to := w.newName()
	if w.rng.IntN(3) == 0 { // onto an existing entry of the same kind
		if n := w.m.entries[from]; n != nil {
			to = w.pick(n.kind)
		}
	}
	if from == "" || to == "" {
		return nil // the worker's root itself: its name belongs to the run
	}
	w.moved(from)
	w.moved(to)
	ok, err := w.do(func(s int) outcome { return outcome{err: unix.Rename(w.full(s, from), w.full(s, to))} })
	if err != nil || !ok {
		return err
	}
	if w.m.entries[from] != w.m.entries[to] { // renaming onto a link of itself does nothing
		w.m.rename(from, to)
	}
	return nil
}

func opLink(w *worker) error {
	from := w.pick(kFile)
	to := w.newName()
	ok, err := w.do(func(s int) outcome { return outcome{err: unix.Link(w.full(s, from), w.full(s, to))} })
	if err != nil || !ok {
		return err
	}
	w.m.entries[to] = w.m.entries[from]
	w.m.touchDir(parent(to))
	return nil
}

func opUnlink(w *worker) error {
	p := w.pick(kFile, kLink)
	if p == "" {
		return nil
	}
	w.moved(p)
	ok, err := w.do(func(s int) outcome { return outcome{err: unix.Unlink(w.full(s, p))} })
	if err != nil || !ok {
		return err
	}
	w.m.remove(p)
	return nil
}

var dirModes = []uint32{0o755, 0o700, 0o750, 0o555, 0o1777, 0o2755, 0o000}

func opMkdir(w *worker) error {
	p := w.newName()
	mode := dirModes[w.rng.IntN(len(dirModes))]
	ok, err := w.do(func(s int) outcome { return outcome{err: unix.Mkdir(w.full(s, p), mode)} })
	if err != nil || !ok {
		return err
	}
	w.m.entries[p] = w.m.newInode(kDir)
	w.m.touchDir(parent(p))
	return nil
}

func opRmdir(w *worker) error {
	p := w.pick(kDir)
	if p == "" {
		return nil
	}
	// No durable file is lost: rmdir removes only an empty directory, and
	// fails (changing nothing) on one that holds files.
	ok, err := w.do(func(s int) outcome { return outcome{err: unix.Rmdir(w.full(s, p))} })
	if err != nil || !ok {
		return err
	}
	w.m.remove(p)
	return nil
}

func opFsync(w *worker) error {
	p := w.pick(kFile, kDir)
	_, err := w.do(func(s int) outcome {
		if s == sideOracle {
			// The oracle needs no durability; it only has to agree that
			// the path opens.
			fd, err := unix.Open(w.full(s, p), unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err == nil {
				unix.Close(fd)
			}
			return outcome{err: err}
		}
		return outcome{err: withFile(w.full(s, p), unix.O_RDONLY, 0, unix.Fsync)}
	})
	return err
}

// opDurable fsyncs a file and then every directory from its parent up to
// the mount's root: from then on (until it changes) the file must survive
// a crash of the mount.
func opDurable(w *worker) error {
	p := w.pick(kFile)
	ok, err := w.do(func(s int) outcome {
		if s == sideOracle {
			fd, err := unix.Open(w.full(s, p), unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err == nil {
				unix.Close(fd)
			}
			return outcome{err: err}
		}
		if err := withFile(w.full(s, p), unix.O_RDONLY, 0, unix.Fsync); err != nil {
			return outcome{err: err}
		}
		for d := parent(p); ; d = parent(d) {
			if err := withFile(w.full(s, d), unix.O_RDONLY|unix.O_DIRECTORY, 0, unix.Fsync); err != nil {
				return outcome{err: fmt.Errorf("fsync of directory %q: %w", d, err)}
			}
			if d == "" {
				break
			}
		}
		return outcome{err: withFile(w.r.roots[s], unix.O_RDONLY|unix.O_DIRECTORY, 0, unix.Fsync)}
	})
	if err != nil || !ok || !w.is(p, kFile) {
		return err // a directory drawn by chance was synced; it holds no data to check
	}
	b, rerr := os.ReadFile(w.full(sideOracle, p))
	if rerr != nil {
		return fmt.Errorf("oracle: %w", rerr)
	}
	w.durable[p] = Durable{Size: int64(len(b)), Sum: sha256.Sum256(b)}
	return nil
}

func opRead(w *worker) error {
	p := w.pick(kFile, kDir)
	cur := w.fileSize(p)
	off, n := int64(0), cur+10
	if cur > 1<<20 || w.rng.IntN(3) == 0 {
		off = w.rng.Int64N(cur + 1)
		n = 1 + w.rng.Int64N(1<<20)
	}
	var got [2][]byte
	// Often drop the file's pages from the kernel's cache first, so that
	// the read reaches the mount (and, with a tiny cache, the network).
	drop := w.rng.IntN(2) == 0
	_, err := w.do(func(s int) outcome {
		var b []byte
		err := withFile(w.full(s, p), unix.O_RDONLY, 0, func(fd int) error {
			if drop && s == sideMount {
				unix.Fadvise(fd, 0, 0, unix.FADV_DONTNEED)
			}
			var err error
			b, err = readAt(fd, n, off)
			return err
		})
		got[s] = b
		return outcome{err: err, data: b}
	})
	if err != nil {
		return fmt.Errorf("read %q [%d, +%d): %w (first difference at byte %d)", p, off, n, err, diffAt(got[0], got[1]))
	}
	return nil
}

// statSig is what two stats must agree on.
func statSig(st *unix.Stat_t, mtime bool) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "type=%o perm=%o nlink=%d", st.Mode&unix.S_IFMT, st.Mode&0o7777, st.Nlink)
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		fmt.Fprintf(&b, " size=%d", st.Size)
	}
	if mtime {
		fmt.Fprintf(&b, " mtime=%d.%09d", st.Mtim.Sec, st.Mtim.Nsec)
	}
	return b.Bytes()
}

func opStat(w *worker) error {
	p := w.pick(kFile, kDir, kLink)
	n := w.m.entries[p]
	mt := n != nil && n.explicitMtime
	_, err := w.do(func(s int) outcome {
		var st unix.Stat_t
		if err := unix.Lstat(w.full(s, p), &st); err != nil {
			return outcome{err: err}
		}
		return outcome{data: statSig(&st, mt)}
	})
	if err != nil {
		return fmt.Errorf("lstat %q: %w", p, err)
	}
	return nil
}

func opReaddir(w *worker) error {
	p := w.pick(kDir)
	_, err := w.do(func(s int) outcome {
		ents, err := os.ReadDir(w.full(s, p))
		var b bytes.Buffer
		for _, e := range ents {
			fmt.Fprintf(&b, "%s %o\n", e.Name(), e.Type())
		}
		return outcome{err: err, data: b.Bytes()}
	})
	if err != nil {
		return fmt.Errorf("readdir %q: %w", p, err)
	}
	return nil
}

func opChmod(w *worker) error {
	p := w.pick(kFile, kDir)
	mode := fileModes[w.rng.IntN(len(fileModes))]
	if w.is(p, kDir) {
		mode = dirModes[w.rng.IntN(len(dirModes))]
	}
	_, err := w.do(func(s int) outcome { return outcome{err: unix.Chmod(w.full(s, p), mode)} })
	return err
}

func opUtimes(w *worker) error {
	p := w.pick(kFile, kDir)
	// Times from 1970 to 2100, with nanoseconds.
	ts := func() unix.Timespec {
		return unix.Timespec{Sec: w.rng.Int64N(4_100_000_000), Nsec: w.rng.Int64N(1e9)}
	}
	times := []unix.Timespec{ts(), ts()}
	ok, err := w.do(func(s int) outcome {
		return outcome{err: unix.UtimesNanoAt(unix.AT_FDCWD, w.full(s, p), times, unix.AT_SYMLINK_NOFOLLOW)}
	})
	if err != nil || !ok {
		return err
	}
	if n := w.m.entries[p]; n != nil {
		n.explicitMtime = true
	}
	return nil
}

func opSymlink(w *worker) error {
	p := w.newName()
	var target string
	switch w.rng.IntN(4) {
	case 0:
		target = "../" + names[w.rng.IntN(len(names))]
	case 1:
		target = "/nonexistent/" + names[w.rng.IntN(len(names))]
	case 2:
		target = strings.Repeat("t", 1+w.rng.IntN(1000))
	default:
		if q := w.pick(kFile, kDir); q != "" {
			target = filepath.Join(w.r.roots[sideOracle], "..", "x", q) // never followed: only compared
		} else {
			target = "x"
		}
	}
	ok, err := w.do(func(s int) outcome { return outcome{err: unix.Symlink(target, w.full(s, p))} })
	if err != nil || !ok {
		return err
	}
	w.m.entries[p] = w.m.newInode(kLink)
	w.m.touchDir(parent(p))
	return nil
}

func opReadlink(w *worker) error {
	p := w.pick(kLink, kFile)
	_, err := w.do(func(s int) outcome {
		b := make([]byte, 4096)
		n, err := unix.Readlink(w.full(s, p), b)
		if err != nil {
			return outcome{err: err}
		}
		return outcome{data: b[:n]}
	})
	return err
}

var xattrNames = []string{"user.a", "user.b", "user.comment", "user.mime_type", "user." + strings.Repeat("n", 200)}

func (w *worker) xattrValue() []byte {
	switch w.rng.IntN(4) {
	case 0:
		return nil
	case 1:
		// ext4, the usual oracle, keeps all of a file's attributes in one
		// 4 KiB block: stay well inside it.
		return w.data(w.rng.Int64N(500))
	default:
		return w.data(w.rng.Int64N(64))
	}
}

func opSetxattr(w *worker) error {
	p := w.pick(kFile, kDir)
	name := xattrNames[w.rng.IntN(len(xattrNames))]
	val := w.xattrValue()
	flags := []int{0, 0, unix.XATTR_CREATE, unix.XATTR_REPLACE}[w.rng.IntN(4)]
	_, err := w.do(func(s int) outcome { return outcome{err: unix.Lsetxattr(w.full(s, p), name, val, flags)} })
	return err
}

func opGetxattr(w *worker) error {
	p := w.pick(kFile, kDir)
	name := xattrNames[w.rng.IntN(len(xattrNames))]
	_, err := w.do(func(s int) outcome {
		v, err := getxattr(w.full(s, p), name)
		return outcome{err: err, data: v}
	})
	return err
}

func getxattr(path, name string) ([]byte, error) {
	b := make([]byte, 64<<10)
	n, err := unix.Lgetxattr(path, name, b)
	if err != nil {
		return nil, err
	}
	return b[:n], nil
}

func opRemovexattr(w *worker) error {
	p := w.pick(kFile, kDir)
	name := xattrNames[w.rng.IntN(len(xattrNames))]
	_, err := w.do(func(s int) outcome { return outcome{err: unix.Lremovexattr(w.full(s, p), name)} })
	return err
}

func opListxattr(w *worker) error {
	p := w.pick(kFile, kDir)
	_, err := w.do(func(s int) outcome {
		l, err := listxattr(w.full(s, p))
		return outcome{err: err, data: []byte(strings.Join(l, "\n"))}
	})
	return err
}

// listxattr lists the user.* attributes, sorted (the order is the file
// system's own; security.* and the like belong to the host).
func listxattr(path string) ([]string, error) {
	b := make([]byte, 64<<10)
	n, err := unix.Llistxattr(path, b)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, s := range strings.Split(string(b[:n]), "\x00") {
		if strings.HasPrefix(s, "user.") {
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out, nil
}

var handleFlags = []int{unix.O_RDWR, unix.O_RDWR | unix.O_APPEND, unix.O_WRONLY, unix.O_RDONLY, unix.O_RDWR | unix.O_CREAT | unix.O_EXCL}

// opHandleOpen opens a file on both sides and keeps it open for later
// operations (hio), so that writes, reads and truncates happen on files
// that are also renamed, linked and unlinked meanwhile.
func opHandleOpen(w *worker) error {
	w.op = "hopen"
	var open []*handle
	for _, h := range w.handles {
		if !h.closed {
			open = append(open, h)
		}
	}
	w.handles = open
	if len(w.handles) >= 4 {
		return opHandleIO(w)
	}
	flags := handleFlags[w.rng.IntN(len(handleFlags))]
	p := w.pick(kFile)
	if flags&unix.O_CREAT != 0 {
		p = w.newName()
	}
	h := &handle{path: p, flags: flags, fd: [2]int{-1, -1}}
	ok, err := w.do(func(s int) outcome {
		fd, err := unix.Open(w.full(s, p), flags|unix.O_CLOEXEC, 0o640)
		h.fd[s] = fd
		return outcome{err: err}
	})
	if err != nil || !ok {
		for s := range 2 {
			if h.fd[s] >= 0 {
				unix.Close(h.fd[s])
			}
		}
		return err
	}
	if flags&unix.O_CREAT != 0 {
		w.m.entries[p] = w.m.newInode(kFile)
		w.m.touchDir(parent(p))
	}
	h.ino = w.m.entries[p]
	h.ino.handles++
	w.handles = append(w.handles, h)
	return nil
}

func opHandleIO(w *worker) error {
	var h *handle
	for _, x := range w.handles {
		if !x.closed {
			h = x
		}
	}
	if h == nil || w.rng.IntN(len(w.handles)+1) == 0 {
		return opHandleOpen(w)
	}
	h = w.handles[w.rng.IntN(len(w.handles))]
	if h.closed {
		return nil
	}
	size := func() int64 {
		var st unix.Stat_t
		if unix.Fstat(h.fd[sideOracle], &st) != nil {
			return 0
		}
		return st.Size
	}
	switch r := w.rng.IntN(10); {
	case r < 4:
		w.op = "hwrite"
		off, n := w.clampWrite(w.offset(size()), w.size())
		data := w.data(n)
		w.modified(h.ino)
		_, err := w.do(func(s int) outcome {
			if h.flags&unix.O_APPEND != 0 {
				return outcome{err: writeAll(h.fd[s], data)}
			}
			return outcome{err: writeAt(h.fd[s], data, off)}
		})
		return err
	case r < 7:
		w.op = "hread"
		cur := size()
		off := w.rng.Int64N(cur + 1)
		n := 1 + w.rng.Int64N(256<<10)
		var got [2][]byte
		_, err := w.do(func(s int) outcome {
			b, err := readAt(h.fd[s], n, off)
			got[s] = b
			return outcome{err: err, data: b}
		})
		if err != nil {
			return fmt.Errorf("pread of %q (opened as %q) [%d, +%d): %w (first difference at byte %d)", w.m.paths(h.ino), h.path, off, n, err, diffAt(got[0], got[1]))
		}
		return nil
	case r < 8:
		w.op = "hftruncate"
		sz := w.rng.Int64N(max(size(), 1) * 2)
		sz = min(sz, w.r.cfg.MaxFileSize)
		w.modified(h.ino)
		_, err := w.do(func(s int) outcome { return outcome{err: unix.Ftruncate(h.fd[s], sz)} })
		return err
	case r < 9:
		w.op = "hfsync"
		_, err := w.do(func(s int) outcome {
			if s == sideOracle {
				return outcome{}
			}
			return outcome{err: unix.Fsync(h.fd[s])}
		})
		return err
	default:
		w.op = "hclose"
		h.closed = true
		h.ino.handles--
		_, err := w.do(func(s int) outcome { return outcome{err: unix.Close(h.fd[s])} })
		return err
	}
}
