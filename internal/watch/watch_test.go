package watch

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
	"golang.org/x/sys/unix"
)

const deadline = 30 * time.Second

type got struct {
	at    time.Time
	batch Batch
}

type harness struct {
	t    *testing.T
	w    *Watcher
	mu   sync.Mutex
	bs   []got
	reps []Report
	done chan error
	drop atomic.Bool
}

// start makes a Watcher on root; setup may adjust it before Run starts.
func start(t *testing.T, cfg Config, setup func(*Watcher)) *harness {
	t.Helper()
	h := &harness{t: t, done: make(chan error, 1)}
	if cfg.Debounce == 0 {
		cfg.Debounce = 150 * time.Millisecond
	}
	if cfg.Settle == 0 {
		cfg.Settle = 100 * time.Millisecond
	}
	cfg.Report = func(r Report) {
		h.mu.Lock()
		h.reps = append(h.reps, r)
		h.mu.Unlock()
	}
	w, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	w.drop = h.drop.Load
	if setup != nil {
		setup(w)
	}
	h.w = w
	ctx, cancel := context.WithCancel(context.Background())
	go func() { h.done <- w.Run(ctx) }()
	collected := make(chan struct{})
	go func() {
		defer close(collected)
		for b := range w.Batches() {
			h.mu.Lock()
			h.bs = append(h.bs, got{time.Now(), b})
			h.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-h.done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(deadline):
			t.Errorf("Run did not return after cancel")
		}
		select {
		case <-collected:
		case <-time.After(deadline):
			t.Errorf("Batches not closed after Run returned")
		}
	})
	return h
}

// count says how many received batches hold p.
func (h *harness) count(p string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, g := range h.bs {
		if slices.Contains(g.batch.Paths, p) {
			n++
		}
	}
	return n
}

func (h *harness) reset() {
	h.mu.Lock()
	h.bs = nil
	h.reps = nil
	h.mu.Unlock()
}

func (h *harness) all() []got {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]got(nil), h.bs...)
}

func (h *harness) reports(kind string) []Report {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []Report
	for _, r := range h.reps {
		if r.Kind == kind {
			out = append(out, r)
		}
	}
	return out
}

// waitFor waits until every path was emitted in some batch.
func (h *harness) waitFor(paths ...string) {
	h.t.Helper()
	end := time.Now().Add(deadline)
	for {
		missing := []string{}
		for _, p := range paths {
			if h.count(p) == 0 {
				missing = append(missing, p)
			}
		}
		if len(missing) == 0 {
			return
		}
		if time.Now().After(end) {
			h.t.Fatalf("not emitted within %v: %v; batches: %v", deadline, missing, h.all())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// quiet waits until nothing is pending or ready in the watcher's view, as seen from outside:
// no new batch for a few settle periods.
func (h *harness) quiet() {
	h.t.Helper()
	n := len(h.all())
	stable := time.Now()
	end := time.Now().Add(deadline)
	for time.Since(stable) < 1500*time.Millisecond {
		if time.Now().After(end) {
			h.t.Fatal("batches never stopped")
		}
		time.Sleep(50 * time.Millisecond)
		if m := len(h.all()); m != n {
			n, stable = m, time.Now()
		}
	}
}

func write(t *testing.T, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestCreateBurstRenameChmodDelete(t *testing.T) {
	root := t.TempDir()
	old := filepath.Join(root, "old")
	write(t, old, "there before")
	h := start(t, Config{Roots: []string{root}}, nil)

	a := filepath.Join(root, "a")
	start := time.Now()
	f, err := os.Create(a)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 200; i++ {
		if _, err := f.Write([]byte("burst of writes\n")); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	h.waitFor(a)
	t.Logf("latency from the last write to its batch: %v", time.Since(start).Round(time.Millisecond))
	h.quiet()
	if n := h.count(a); n != 1 {
		t.Fatalf("a burst of writes to one file was emitted in %d batches, want 1", n)
	}
	if h.count(old) != 0 {
		t.Fatalf("an untouched file was emitted: %v", h.all())
	}

	h.reset()
	b := filepath.Join(root, "b")
	if err := os.Rename(a, b); err != nil {
		t.Fatal(err)
	}
	h.waitFor(a, b)

	h.reset()
	if err := os.Chmod(b, 0o600); err != nil {
		t.Fatal(err)
	}
	h.waitFor(b)

	h.reset()
	if err := os.Remove(b); err != nil {
		t.Fatal(err)
	}
	h.waitFor(b)

	// A directory tree removed at once: every file the watcher knew is reported.
	d := filepath.Join(root, "d")
	os.MkdirAll(filepath.Join(d, "e"), 0o755)
	write(t, filepath.Join(d, "e", "f"), "x")
	h.waitFor(filepath.Join(d, "e", "f"))
	h.reset()
	if err := os.RemoveAll(d); err != nil {
		t.Fatal(err)
	}
	h.waitFor(d, filepath.Join(d, "e"), filepath.Join(d, "e", "f"))
	if h.count(old) != 0 {
		t.Fatalf("an untouched file was emitted: %v", h.all())
	}
}

func TestFolderCreatedAndFilledAtOnce(t *testing.T) {
	root := t.TempDir()
	h := start(t, Config{Roots: []string{root}}, nil)
	deep := filepath.Join(root, "x", "y", "z")
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, dir := range []string{filepath.Join(root, "x"), filepath.Join(root, "x", "y"), deep} {
		for _, n := range []string{"1", "2", "3"} {
			p := filepath.Join(dir, n)
			write(t, p, p)
			want = append(want, p)
		}
	}
	h.waitFor(want...)
	// The new directories are watched: a later file in the deepest one is seen.
	late := filepath.Join(deep, "late")
	write(t, late, "late")
	h.waitFor(late)
	// Moved in from outside the roots, already filled.
	outside := t.TempDir()
	os.MkdirAll(filepath.Join(outside, "m", "n"), 0o755)
	write(t, filepath.Join(outside, "m", "n", "f"), "moved")
	if err := os.Rename(filepath.Join(outside, "m"), filepath.Join(root, "m")); err != nil {
		t.Fatal(err)
	}
	h.waitFor(filepath.Join(root, "m", "n", "f"))
}

func TestSlowWriterNotEmittedUntilStable(t *testing.T) {
	root := t.TempDir()
	h := start(t, Config{Roots: []string{root}, Debounce: time.Second, Settle: 200 * time.Millisecond}, nil)
	p := filepath.Join(root, "slow")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 40; i++ {
		if _, err := f.Write([]byte("a line written slowly\n")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(25 * time.Millisecond)
	}
	f.Close()
	finished := time.Now()
	h.waitFor(p)
	for _, g := range h.all() {
		if slices.Contains(g.batch.Paths, p) && g.at.Before(finished) {
			t.Fatalf("a file still being written was emitted at %v, the writer finished at %v", g.at, finished)
		}
		if slices.Contains(g.batch.Unstable, p) {
			t.Fatalf("emitted as unstable: %+v", g.batch)
		}
	}
	if n := h.count(p); n != 1 {
		t.Fatalf("emitted %d times, want once", n)
	}
}

func TestNeverSettlingIsEmittedBounded(t *testing.T) {
	root := t.TempDir()
	// The watcher's clock moves 5 ms only when the file was written since
	// it last read it. With the real clock, a writer held up for a Settle
	// (50 ms: the machine was busy, or the watcher ran first after both
	// were descheduled) left the file unchanged between two checks, and it
	// was emitted as settled. Now two checks a Settle apart are 10 clock
	// steps apart, each after a write of its own: at most the first of
	// those writes can precede the first check's stat (the watcher reads
	// the clock nowhere between the two), so the second check sees the
	// file grown.
	var wrote atomic.Bool
	var clock atomic.Int64
	t0 := time.Now()
	now := func() time.Time {
		if wrote.Swap(false) {
			clock.Add(int64(5 * time.Millisecond))
		}
		return t0.Add(time.Duration(clock.Load()))
	}
	h := start(t, Config{Roots: []string{root}, Debounce: 20 * time.Millisecond, Settle: 50 * time.Millisecond, MaxChecks: 4},
		func(w *Watcher) { w.now = now })
	p := filepath.Join(root, "busy")
	stop := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		f, _ := os.Create(p)
		defer f.Close()
		for {
			select {
			case <-stop:
				return
			default:
			}
			f.Write([]byte("x"))
			wrote.Store(true)
			time.Sleep(5 * time.Millisecond)
		}
	}()
	defer func() { close(stop); <-stopped }()
	h.waitFor(p)
	var unstable bool
	for _, g := range h.all() {
		unstable = unstable || slices.Contains(g.batch.Unstable, p)
	}
	if !unstable {
		t.Fatalf("a file that never settled was emitted without being marked unstable: %v", h.all())
	}
}

func TestOverflowRescanFindsChange(t *testing.T) {
	root := t.TempDir()
	old := filepath.Join(root, "old")
	write(t, old, "v1")
	untouched := filepath.Join(root, "untouched")
	write(t, untouched, "same")
	os.Mkdir(filepath.Join(root, "gone"), 0o755)
	gone := filepath.Join(root, "gone", "f")
	write(t, gone, "bye")
	h := start(t, Config{Roots: []string{root}, Rescan: -1}, nil)

	// Events lost, as in a queue overflow.
	h.drop.Store(true)
	write(t, old, "v2, longer")
	created := filepath.Join(root, "new")
	write(t, created, "new")
	os.RemoveAll(filepath.Join(root, "gone"))
	h.quiet()
	if len(h.all()) != 0 {
		t.Fatalf("dropped events were emitted: %v", h.all())
	}
	h.drop.Store(false)
	h.w.inject <- fsnotify.ErrEventOverflow
	h.waitFor(old, created, gone, filepath.Join(root, "gone"))
	if len(h.reports(KindOverflow)) == 0 {
		t.Fatal("the overflow was not reported")
	}
	if rs := h.reports(KindRescan); len(rs) == 0 || rs[0].Reason != KindOverflow {
		t.Fatalf("no rescan reported for the overflow: %v", rs)
	}
	for _, g := range h.all() {
		if slices.Contains(g.batch.Paths, old) && g.batch.Rescan != KindOverflow {
			t.Fatalf("batch does not say it came from the rescan: %+v", g.batch)
		}
	}
	if h.count(untouched) != 0 {
		t.Fatalf("the rescan emitted an unchanged file: %v", h.all())
	}
}

func TestWatchLimitFallsBackToRescan(t *testing.T) {
	root := t.TempDir()
	h := start(t, Config{Roots: []string{root}, Rescan: 500 * time.Millisecond}, func(w *Watcher) {
		add := w.addWatch
		w.addWatch = func(p string) error {
			if strings.Contains(p, "nowatch") {
				return os.NewSyscallError("inotify_add_watch", unix.ENOSPC)
			}
			return add(p)
		}
	})
	dir := filepath.Join(root, "nowatch")
	os.Mkdir(dir, 0o755)
	first := filepath.Join(dir, "first")
	write(t, first, "1")
	h.waitFor(first)
	if len(h.reports(KindWatchLimit)) == 0 {
		t.Fatal("the watch limit was not reported")
	}
	// The directory has no watch: only a rescan can see this.
	second := filepath.Join(dir, "second")
	write(t, second, "2")
	h.waitFor(second)
}

func TestExcludedNeverEmitted(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "cache", "sub"), 0o755)
	excl := func(p string) bool {
		return filepath.Base(p) == "cache" || strings.HasSuffix(p, ".tmp")
	}
	h := start(t, Config{Roots: []string{root}, Exclude: excl, Rescan: -1}, nil)
	for _, d := range h.w.fsw.WatchList() {
		if strings.Contains(d, "cache") {
			t.Fatalf("an excluded directory is watched: %s", d)
		}
	}
	write(t, filepath.Join(root, "cache", "sub", "f"), "x")
	write(t, filepath.Join(root, "x.tmp"), "x")
	os.MkdirAll(filepath.Join(root, "new", "cache"), 0o755)
	write(t, filepath.Join(root, "new", "cache", "f"), "x")
	write(t, filepath.Join(root, "new", "y.tmp"), "x")
	keep := filepath.Join(root, "keep")
	write(t, keep, "x")
	h.waitFor(keep, filepath.Join(root, "new"))
	h.w.Rescan()
	end := time.Now().Add(deadline)
	for len(h.reports(KindRescan)) == 0 {
		if time.Now().After(end) {
			t.Fatal("no rescan")
		}
		time.Sleep(20 * time.Millisecond)
	}
	h.quiet()
	for _, g := range h.all() {
		for _, p := range g.batch.Paths {
			if strings.Contains(p, "cache") || strings.HasSuffix(p, ".tmp") {
				t.Fatalf("excluded path emitted: %s", p)
			}
		}
	}
}

func TestTooManyPendingFallsBackToRescan(t *testing.T) {
	root := t.TempDir()
	h := start(t, Config{Roots: []string{root}, MaxPending: 8, Rescan: -1}, nil)
	var want []string
	for i := 0; i < 40; i++ {
		p := filepath.Join(root, "f"+string(rune('a'+i%26))+string(rune('a'+i/26)))
		write(t, p, p)
		want = append(want, p)
	}
	h.waitFor(want...)
	if len(h.reports(KindTooMany)) == 0 {
		t.Fatal("the pending limit was never hit")
	}
	for _, g := range h.all() {
		if len(g.batch.Paths) > 8 {
			t.Fatalf("a batch of %d paths with MaxPending 8", len(g.batch.Paths))
		}
	}
}

func TestNewRejectsBadRoots(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	write(t, f, "x")
	for _, roots := range [][]string{nil, {f}, {filepath.Join(f, "missing")}} {
		if _, err := New(Config{Roots: roots}); err == nil {
			t.Errorf("New(%v): no error", roots)
		}
	}
}

// TestRescanTime measures a rescan of a tree of files (reported, not asserted).
func TestRescanTime(t *testing.T) {
	root := t.TempDir()
	const n = 5000
	for i := 0; i < n; i++ {
		d := filepath.Join(root, string(rune('a'+i%20)))
		os.MkdirAll(d, 0o755)
		write(t, filepath.Join(d, "f"+strconv.Itoa(i)), "x")
	}
	h := start(t, Config{Roots: []string{root}, Rescan: -1}, nil)
	h.w.Rescan()
	end := time.Now().Add(deadline)
	for len(h.reports(KindRescan)) == 0 {
		if time.Now().After(end) {
			t.Fatal("no rescan")
		}
		time.Sleep(20 * time.Millisecond)
	}
	r := h.reports(KindRescan)[0]
	if r.Files != n+21 {
		t.Fatalf("rescan walked %d entries, want %d", r.Files, n+21)
	}
	t.Logf("rescan of %d entries: %v", r.Files, r.Took)
	h.quiet()
	if len(h.all()) != 0 {
		t.Fatalf("a rescan with nothing changed emitted %v", h.all())
	}
}

// TestRulesChangeRewalks: what Exclude answers depends on a rules file in the tree (as a
// backup's .fincryptignore); Forget hears of every event and names the folder to walk again
// when the rules file changed. A folder the rules name is not watched and its changes are not
// emitted; once the rules stop naming it, it is watched (its later changes are emitted), and
// once they name it again its watch goes.
func TestRulesChangeRewalks(t *testing.T) {
	root := t.TempDir()
	rules := filepath.Join(root, "RULES")
	write(t, rules, "skip")
	os.MkdirAll(filepath.Join(root, "skip", "sub"), 0o755)
	var mu sync.Mutex
	names := map[string]bool{"skip": true}
	excl := func(p string) bool {
		mu.Lock()
		defer mu.Unlock()
		rel, _ := filepath.Rel(root, p)
		return names[strings.Split(rel, "/")[0]]
	}
	forget := func(p string) string {
		if p != rules {
			return ""
		}
		b, _ := os.ReadFile(rules)
		mu.Lock()
		names = map[string]bool{}
		for _, n := range strings.Fields(string(b)) {
			names[n] = true
		}
		mu.Unlock()
		return root
	}
	watched := func(h *harness, d string) bool { return slices.Contains(h.w.fsw.WatchList(), d) }
	h := start(t, Config{Roots: []string{root}, Exclude: excl, Forget: forget, Rescan: -1}, nil)
	skip := filepath.Join(root, "skip")
	if watched(h, skip) || watched(h, filepath.Join(skip, "sub")) {
		t.Fatal("a folder the rules name is watched")
	}
	write(t, filepath.Join(skip, "sub", "f"), "x")
	keep := filepath.Join(root, "keep")
	write(t, keep, "x")
	h.waitFor(keep)
	h.quiet()

	write(t, rules, "") // skip/ is backed up from now on
	h.waitFor(rules, filepath.Join(skip, "sub", "f"))
	late := filepath.Join(skip, "sub", "late")
	write(t, late, "x")
	h.waitFor(late)

	write(t, rules, "skip") // and no longer
	h.waitFor(rules)
	h.quiet()
	if watched(h, skip) || watched(h, filepath.Join(skip, "sub")) {
		t.Fatal("a folder the rules name again is still watched")
	}
	h.reset()
	write(t, filepath.Join(skip, "sub", "later"), "x")
	write(t, keep, "y")
	h.waitFor(keep)
	h.quiet()
	for _, g := range h.all() {
		for _, p := range g.batch.Paths {
			if strings.HasPrefix(p, skip) {
				t.Fatalf("a path in a folder the rules name was emitted: %s", p)
			}
		}
	}
}
