// Package watch reports which files under a set of root directories changed, in debounced
// batches, once each changed file looks stable.
//
// # API
//
//	w, err := watch.New(watch.Config{Roots: []string{"/home/me/Documents"}, Exclude: skip})
//	go w.Run(ctx)                  // returns when ctx is done; closes w.Batches()
//	for b := range w.Batches() {   // b.Paths: absolute, cleaned, sorted, each once
//		pass(b.Paths)              // b.Rescan != "": the batch came from a full rescan
//	}
//
// New scans the roots once (building the index the later diffs use; nothing is emitted for what
// is already there) and adds an inotify watch (github.com/fsnotify/fsnotify) on every directory.
// Run then:
//
//   - turns events into pending paths (a Create of a directory adds watches under it and scans it
//     at once, so a folder created and filled at once is not missed);
//   - re-checks each pending path every Config.Settle once no event touched it for Config.Debounce,
//     and moves it to the next batch when its size, mtime, ctime, mode and inode did not change
//     between two checks (or it is gone). A path re-checked Config.MaxChecks times without settling,
//     or still changing MaxChecks*Settle after its first event, is emitted anyway and listed in
//     Batch.Unstable;
//   - coalesces: a burst of writes to one file is one entry in one batch;
//   - falls back to a full rescan (walk every root, diff against the index, every difference
//     becomes pending) when the event queue overflows (fsnotify.ErrEventOverflow), when adding a
//     watch fails (ENOSPC: the inotify watch limit), or when more than Config.MaxPending paths are
//     pending; each cause is reported through Config.Report. A periodic rescan every
//     Config.Rescan is the safety net for what inotify misses (network file systems, directories
//     that could not be watched).
//
// Memory: the event queue is fsnotify's (Config.QueueSize events) plus the kernel's; the pending
// and ready sets hold at most Config.MaxPending paths; the index holds one small record per file
// and directory under the roots. Batches are sent on an unbuffered channel: while the consumer is
// busy, changes keep coalescing in the pending set instead of queueing.
//
// Exclude is called with absolute paths; an excluded directory is neither watched nor walked, and
// an excluded path is never emitted. When what Exclude answers depends on files in the tree (a
// backup's .fincryptignore and CACHEDIR.TAG), Config.Forget hears of every event first, and
// names the directory to walk again when such a file changed.
package watch

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"golang.org/x/sys/unix"
)

// Config says what to watch and how patiently.
type Config struct {
	Roots   []string
	Exclude func(path string) bool // nil: nothing excluded
	// Forget, if set, is called with each event's path before Exclude is asked about it,
	// and with each root before a full rescan: Exclude must not answer from what it read
	// before of that path or what is under it. It returns a directory whose entries Exclude
	// now answers for differently (an ignore file there changed), "" if none: the watcher
	// walks it again at once, watching what is no longer excluded and dropping the watches
	// of what now is.
	Forget func(path string) (rewalk string)

	Debounce   time.Duration // quiet time after a path's last event before it is checked (default 300ms)
	Settle     time.Duration // time between two stability checks (default 250ms)
	MaxChecks  int           // checks before an unsettled file is emitted anyway (default 240)
	Rescan     time.Duration // periodic full rescan (default 10m; negative: never)
	MaxPending int           // pending+ready paths before falling back to a rescan (default 100000)
	QueueSize  uint          // fsnotify's event channel size (default 4096)

	// Report, if set, is called from Run's goroutine for every fallback or error.
	Report func(Report)
}

// Report kinds.
const (
	KindOverflow   = "overflow"    // the event queue overflowed; a rescan follows
	KindWatchLimit = "watch-limit" // a directory could not be watched (ENOSPC); a rescan follows
	KindWatchError = "watch-error" // another error adding a watch or from the watcher
	KindTooMany    = "too-many"    // more than MaxPending paths pending; a rescan follows
	KindRescan     = "rescan"      // a full rescan ran (Path empty, Files counted, Took set)
	KindScanError  = "scan-error"  // a file or directory could not be read during a scan
)

// Report describes a fallback, an error, or a finished rescan.
type Report struct {
	Kind   string
	Path   string
	Err    error
	Reason string        // for KindRescan: why it ran
	Files  int           // for KindRescan: entries walked
	Took   time.Duration // for KindRescan
}

func (r Report) String() string {
	s := r.Kind
	if r.Path != "" {
		s += " " + r.Path
	}
	if r.Reason != "" {
		s += " (" + r.Reason + ")"
	}
	if r.Kind == KindRescan {
		s += fmt.Sprintf(": %d entries in %v", r.Files, r.Took.Round(time.Millisecond))
	}
	if r.Err != nil {
		s += ": " + r.Err.Error()
	}
	return s
}

// Batch is one set of changed paths.
type Batch struct {
	Paths    []string // changed, created or removed paths (files and directories), sorted
	Unstable []string // subset of Paths that never settled within MaxChecks
	Rescan   string   // non-empty when some of Paths were found by a rescan: its reason
}

type stamp struct {
	size, ino    uint64
	mtime, ctime int64
	mode         uint32
}

func stampOf(fi fs.FileInfo) stamp {
	st := stamp{size: uint64(fi.Size()), mtime: fi.ModTime().UnixNano(), mode: uint32(fi.Mode())}
	if s, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.ino = s.Ino
		st.ctime = s.Ctim.Sec*1e9 + s.Ctim.Nsec
	}
	return st
}

type pend struct {
	rescan    string
	firstSeen time.Time
	lastEvent time.Time
	lastCheck time.Time
	checked   bool
	gone      bool
	st        stamp
	checks    int
}

// Watcher watches Config.Roots. Use New, then Run.
type Watcher struct {
	cfg   Config
	fsw   *fsnotify.Watcher
	out   chan Batch
	index map[string]stamp // what the last scan or emission saw; dirs have mode&ModeDir
	dirs  map[string]bool  // directories under watch

	pending  map[string]*pend
	ready    map[string]string // settled paths -> the rescan that found them ("" for events)
	unst     map[string]bool
	rescan   string          // reason of a rescan still to run ("" none)
	scanning string          // reason of the rescan running now
	failed   map[string]bool // directories whose watch failed (reported once)

	now      func() time.Time
	addWatch func(string) error
	inject   chan error // tests: errors as if from fsnotify
	drop     func() bool
}

// New checks the roots, builds the index and adds the watches.
func New(cfg Config) (*Watcher, error) {
	if len(cfg.Roots) == 0 {
		return nil, errors.New("watch: no roots")
	}
	if cfg.Debounce <= 0 {
		cfg.Debounce = 300 * time.Millisecond
	}
	if cfg.Settle <= 0 {
		cfg.Settle = 250 * time.Millisecond
	}
	if cfg.MaxChecks <= 0 {
		cfg.MaxChecks = 240
	}
	if cfg.Rescan == 0 {
		cfg.Rescan = 10 * time.Minute
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 100000
	}
	if cfg.QueueSize == 0 {
		cfg.QueueSize = 4096
	}
	roots := make([]string, 0, len(cfg.Roots))
	for _, r := range cfg.Roots {
		a, err := filepath.Abs(r)
		if err != nil {
			return nil, fmt.Errorf("watch: root %s: %w", r, err)
		}
		fi, err := os.Stat(a)
		if err != nil {
			return nil, fmt.Errorf("watch: root: %w", err)
		}
		if !fi.IsDir() {
			return nil, fmt.Errorf("watch: root %s is not a directory", a)
		}
		roots = append(roots, a)
	}
	cfg.Roots = roots
	fsw, err := fsnotify.NewBufferedWatcher(cfg.QueueSize)
	if err != nil {
		return nil, fmt.Errorf("watch: %w", err)
	}
	w := &Watcher{
		cfg: cfg, fsw: fsw, out: make(chan Batch),
		index: map[string]stamp{}, dirs: map[string]bool{},
		pending: map[string]*pend{}, ready: map[string]string{}, unst: map[string]bool{}, failed: map[string]bool{},
		now: time.Now, inject: make(chan error, 1), drop: func() bool { return false },
	}
	w.addWatch = fsw.Add
	for _, r := range roots {
		w.walk(r, nil)
	}
	return w, nil
}

// Batches is where Run sends batches; it is closed when Run returns.
func (w *Watcher) Batches() <-chan Batch { return w.out }

// Roots returns the absolute roots.
func (w *Watcher) Roots() []string { return append([]string(nil), w.cfg.Roots...) }

func (w *Watcher) report(r Report) {
	if w.cfg.Report != nil {
		w.cfg.Report(r)
	}
}

func (w *Watcher) excluded(p string) bool { return w.cfg.Exclude != nil && w.cfg.Exclude(p) }

func (w *Watcher) under(p string) bool {
	for _, r := range w.cfg.Roots {
		if p == r || strings.HasPrefix(p, r+"/") {
			return true
		}
	}
	return false
}

// watchDir adds a watch on dir; failures are reported and schedule a rescan.
func (w *Watcher) watchDir(dir string) {
	if w.dirs[dir] {
		return
	}
	if err := w.addWatch(dir); err != nil {
		if w.failed[dir] || errors.Is(err, fs.ErrNotExist) {
			return
		}
		w.failed[dir] = true
		if errors.Is(err, unix.ENOSPC) {
			w.report(Report{Kind: KindWatchLimit, Path: dir, Err: err})
			if w.scanning == "" {
				// What was created in dir before the failure was walked; a
				// rescan now catches anything the gap let through.
				w.needRescan(KindWatchLimit)
			}
		} else {
			w.report(Report{Kind: KindWatchError, Path: dir, Err: err})
		}
		return
	}
	delete(w.failed, dir)
	w.dirs[dir] = true
}

// walk watches everything under root. With seen nil it only indexes (New); otherwise it
// records every entry it walked in seen and marks every difference from the index (the created
// directories' scans and rescans). A directory whose only change is its mtime or size is not
// marked: its changed entries are. It returns the entries walked.
func (w *Watcher) walk(root string, seen map[string]bool) int {
	n := 0
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				w.report(Report{Kind: KindScanError, Path: p, Err: err})
			}
			return nil
		}
		if p != root && w.excluded(p) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		n++
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		st := stampOf(fi)
		if d.IsDir() {
			w.watchDir(p)
		}
		if seen == nil {
			w.index[p] = st
			return nil
		}
		seen[p] = true
		if old, ok := w.index[p]; !ok || old != st {
			if d.IsDir() && ok && old.ino == st.ino && old.mode == st.mode {
				w.index[p] = st
			} else {
				w.mark(p)
			}
		}
		return nil
	})
	return n
}

// mark makes p pending (or refreshes its last event).
func (w *Watcher) mark(p string) {
	if pd, ok := w.pending[p]; ok {
		if w.scanning == "" {
			pd.lastEvent = w.now()
		}
		return
	}
	reason := w.scanning
	if r, ok := w.ready[p]; ok {
		// Changed again after settling: check again.
		delete(w.ready, p)
		delete(w.unst, p)
		if reason == "" {
			reason = r
		}
	}
	if len(w.pending)+len(w.ready) >= w.cfg.MaxPending {
		// Not marked, so not indexed: the next rescan finds it again. A rescan
		// marks at most MaxPending paths, and each one that runs after those are
		// emitted finds the next ones.
		if w.rescan == "" {
			w.report(Report{Kind: KindTooMany, Path: p})
			w.needRescan(KindTooMany)
		}
		return
	}
	now := w.now()
	w.pending[p] = &pend{firstSeen: now, lastEvent: now, rescan: reason}
}

func (w *Watcher) needRescan(reason string) {
	if w.rescan == "" {
		w.rescan = reason
	}
}

func (w *Watcher) event(ev fsnotify.Event) {
	p := filepath.Clean(ev.Name)
	if !w.under(p) {
		return
	}
	if w.cfg.Forget != nil {
		if dir := w.cfg.Forget(p); dir != "" && w.under(dir) {
			w.rewalk(dir)
			w.mark(dir) // its entries change in the backup: a pass lists it again
		}
	}
	if w.excluded(p) {
		return
	}
	if ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
		if w.dirs[p] {
			w.forgetDir(p)
		}
		w.mark(p)
		return
	}
	if ev.Has(fsnotify.Create) {
		if fi, err := os.Lstat(p); err == nil && fi.IsDir() {
			// Watch first, then scan: what is created in it meanwhile is either
			// seen by the scan or reported by the new watch.
			w.mark(p)
			w.walk(p, map[string]bool{})
			return
		}
	}
	w.mark(p)
}

// forgetDir drops the watches and index entries of a directory that was removed or moved
// away, and marks what the index knew under it.
func (w *Watcher) forgetDir(dir string) {
	for d := range w.dirs {
		if d == dir || strings.HasPrefix(d, dir+"/") {
			w.fsw.Remove(d)
			delete(w.dirs, d)
		}
	}
	for p := range w.index {
		if strings.HasPrefix(p, dir+"/") {
			w.mark(p)
		}
	}
}

// rewalk walks dir again after what Exclude answers under it changed: what is no longer
// excluded is watched and marked (as created); what now is loses its watches and leaves
// the index (the change of the rule itself, an event of its own, makes the pass that drops
// it from the backup).
func (w *Watcher) rewalk(dir string) {
	seen := map[string]bool{}
	if !w.excluded(dir) || slices.Contains(w.cfg.Roots, dir) {
		seen[dir] = true
		w.walk(dir, seen)
	}
	for p := range w.index {
		if (p == dir || strings.HasPrefix(p, dir+"/")) && !seen[p] {
			delete(w.index, p)
		}
	}
	w.unwatchUnseen(dir, seen)
}

// unwatchUnseen drops the watches under dir (and on it) of the directories a walk did not
// see: gone, or excluded now.
func (w *Watcher) unwatchUnseen(dir string, seen map[string]bool) {
	for d := range w.dirs {
		if (d == dir || strings.HasPrefix(d, dir+"/")) && !seen[d] {
			w.fsw.Remove(d)
			delete(w.dirs, d)
		}
	}
}

// doRescan walks every root and marks every difference from the index, including what
// disappeared.
func (w *Watcher) doRescan(reason string) {
	start := w.now()
	w.scanning = reason
	defer func() { w.scanning = "" }()
	seen := map[string]bool{}
	n := 0
	for _, r := range w.cfg.Roots {
		if w.cfg.Forget != nil {
			w.cfg.Forget(r) // read every ignore file again
		}
		n += w.walk(r, seen)
	}
	for p := range w.index {
		if !seen[p] {
			w.mark(p)
		}
	}
	for _, r := range w.cfg.Roots {
		w.unwatchUnseen(r, seen)
	}
	w.report(Report{Kind: KindRescan, Reason: reason, Files: n, Took: w.now().Sub(start)})
}

// check re-stats pending paths that have been quiet long enough and moves settled ones to ready.
func (w *Watcher) check() {
	now := w.now()
	for p, pd := range w.pending {
		if (now.Sub(pd.lastEvent) < w.cfg.Debounce && now.Sub(pd.firstSeen) <= time.Duration(w.cfg.MaxChecks)*w.cfg.Settle) || (pd.checked && now.Sub(pd.lastCheck) < w.cfg.Settle) {
			continue
		}
		fi, err := os.Lstat(p)
		gone := err != nil
		var st stamp
		if !gone {
			st = stampOf(fi)
		}
		if pd.checked && gone == pd.gone && st == pd.st {
			w.settle(p, gone, st, false)
			continue
		}
		if gone && !pd.checked {
			// Removed: nothing to wait for.
			w.settle(p, true, st, false)
			continue
		}
		pd.checked, pd.gone, pd.st, pd.lastCheck = true, gone, st, now
		pd.checks++
		if pd.checks > w.cfg.MaxChecks || now.Sub(pd.firstSeen) > time.Duration(w.cfg.MaxChecks)*w.cfg.Settle {
			w.settle(p, gone, st, true)
		}
	}
}

func (w *Watcher) settle(p string, gone bool, st stamp, unstable bool) {
	reason := w.pending[p].rescan
	delete(w.pending, p)
	if !gone && w.excluded(p) {
		// Excluded since it was marked (a rule changed meanwhile): neither
		// watched nor emitted; the rule's change has its own event.
		delete(w.index, p)
		return
	}
	if gone {
		delete(w.index, p)
	} else {
		w.index[p] = st
		if fs.FileMode(st.mode).IsDir() {
			w.watchDir(p)
		}
	}
	w.ready[p] = reason
	if unstable {
		w.unst[p] = true
	}
}

func (w *Watcher) batch() Batch {
	var b Batch
	for p, r := range w.ready {
		b.Paths = append(b.Paths, p)
		if r != "" {
			b.Rescan = r
		}
	}
	for p := range w.unst {
		b.Unstable = append(b.Unstable, p)
	}
	sort.Strings(b.Paths)
	sort.Strings(b.Unstable)
	return b
}

// Rescan asks Run for a full rescan (safe from any goroutine; a no-op once Run returned).
func (w *Watcher) Rescan() {
	select {
	case w.inject <- errRescanRequest:
	default:
	}
}

var errRescanRequest = errors.New("rescan requested")

// Run watches until ctx is done, then closes the watcher and Batches.
func (w *Watcher) Run(ctx context.Context) error {
	defer close(w.out)
	defer w.fsw.Close()
	tick := time.NewTicker(w.cfg.Settle / 2)
	defer tick.Stop()
	var periodic <-chan time.Time
	if w.cfg.Rescan > 0 {
		t := time.NewTicker(w.cfg.Rescan)
		defer t.Stop()
		periodic = t.C
	}
	for {
		// A rescan runs once the last batch was taken (and, after too many
		// pending paths, once those settled: it marks the next ones).
		if w.rescan != "" && len(w.ready) == 0 && (w.rescan != KindTooMany || len(w.pending) == 0) {
			r := w.rescan
			w.rescan = ""
			w.doRescan(r)
		}
		var out chan Batch
		var b Batch
		if len(w.ready) > 0 {
			out = w.out
			b = w.batch()
		}
		select {
		case <-ctx.Done():
			return nil
		case out <- b:
			clear(w.ready)
			clear(w.unst)
		case ev, ok := <-w.fsw.Events:
			if !ok {
				return errors.New("watch: fsnotify closed its events")
			}
			if !w.drop() {
				w.event(ev)
			}
		case err, ok := <-w.fsw.Errors:
			if !ok {
				return errors.New("watch: fsnotify closed its errors")
			}
			w.fsError(err)
		case err := <-w.inject:
			w.fsError(err)
		case <-tick.C:
			w.check()
		case <-periodic:
			w.needRescan("periodic")
		}
	}
}

func (w *Watcher) fsError(err error) {
	switch {
	case err == errRescanRequest:
		w.needRescan("requested")
	case errors.Is(err, fsnotify.ErrEventOverflow):
		w.report(Report{Kind: KindOverflow, Err: err})
		w.needRescan(KindOverflow)
	default:
		w.report(Report{Kind: KindWatchError, Err: err})
	}
}
