package main

import (
	"bufio"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/internal/treetest"
	"github.com/fincrypt/fincrypt/replicate"
)

// watcherProc is a running `fincrypt backup watch` and the snapshots it reported.
type watcherProc struct {
	cmd   *exec.Cmd
	home  string
	log   string // its stderr
	snaps chan watcherSnap
	done  chan struct{} // closed once it exited, with err
	err   error
}

// watcherSnap is a pass the watcher reported: the snapshot it recorded with its count of
// files, or (same) that it had nothing to keep; changed is how many changed paths it had.
type watcherSnap struct {
	id, files, changed string
	same               bool
}

// startWatcher starts `backup watch` on home (settling changes for 200ms, no periodic
// rescan, and with a network uploading within 1s and backing the index up 1s after) with
// extra flags; it is killed when the test ends.
func startWatcher(t *testing.T, home, pw, base string, extra ...string) *watcherProc {
	t.Helper()
	args := append([]string{"--home", home, "backup", "watch", "--password-file", pw, "--settle", "200ms", "--rescan", "1h",
		"--flush-after", "1s", "--snapshot-delay", "1s"}, extra...)
	cmd := exec.Command(binPath, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + base}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	w := &watcherProc{cmd: cmd, home: home, log: filepath.Join(base, "watch.log"), snaps: make(chan watcherSnap, 100), done: make(chan struct{})}
	logf, _ := os.Create(w.log)
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`snapshot (\S+): (\d+) files.*\((\d+) changed paths\)`)
	same := regexp.MustCompile(`no change to keep \((\d+) changed paths`)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				w.snaps <- watcherSnap{id: m[1], files: m[2], changed: m[3]}
			} else if m := same.FindStringSubmatch(sc.Text()); m != nil {
				w.snaps <- watcherSnap{changed: m[1], same: true}
			}
		}
		w.err = cmd.Wait()
		logf.Close()
		close(w.done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		w.stopped(t, 30*time.Second)
	})
	return w
}

// stopped waits, at most bound, for the watcher to exit, and returns how it exited.
func (w *watcherProc) stopped(t *testing.T, bound time.Duration) error {
	t.Helper()
	select {
	case <-w.done:
		return w.err
	case <-time.After(bound):
		t.Errorf("the watcher did not exit within %v", bound)
		return nil
	}
}

// next waits, at most bound, for the watcher's next snapshot.
func (w *watcherProc) next(t *testing.T, what string, bound time.Duration) watcherSnap {
	t.Helper()
	select {
	case s := <-w.snaps:
		return s
	case <-w.done:
		log, _ := os.ReadFile(w.log)
		t.Fatalf("%s: the watcher exited: %v\n%s", what, w.err, log)
	case <-time.After(bound):
		t.Fatalf("%s: no snapshot within %v", what, bound)
	}
	return watcherSnap{}
}

// settled waits for at least one new snapshot, then until none came for a while and the
// last one is durable on the network: uploaded and in a stored index snapshot (the status
// socket says restorable, asked after the snapshot was reported). It returns the last
// snapshot and how long after it became durable.
func (w *watcherProc) settled(t *testing.T, what string) (string, time.Duration) {
	t.Helper()
	first := w.next(t, what, 60*time.Second)
	for first.same {
		first = w.next(t, what, 60*time.Second)
	}
	last := first.id
	const quiet, bound = 3 * time.Second, 60 * time.Second
	at := time.Now()
	durable := time.Duration(-1)
	quietT := time.NewTimer(quiet)
	defer quietT.Stop()
	poll := time.NewTicker(200 * time.Millisecond)
	defer poll.Stop()
	for {
		select {
		case s := <-w.snaps:
			if s.same {
				continue
			}
			last, at, durable = s.id, time.Now(), -1
			quietT.Reset(quiet)
		case <-quietT.C:
			if durable >= 0 {
				return last, durable
			}
			quietT.Reset(quiet)
		case <-poll.C:
			if durable >= 0 {
				continue
			}
			asked := time.Now()
			st, err := replicate.QueryStatus(w.home)
			if err == nil && st.Restorable && st.PendingBytes == 0 {
				durable = asked.Sub(at)
			} else if time.Since(at) > bound {
				t.Fatalf("%s: snapshot %s not durable on the network %v after it was made: %+v, %v", what, last, bound, st, err)
			}
		}
	}
}

// TestBackupWatch, on a vault with a network (mediator and nodes on loopback): each change
// to a watched folder (create, a 1 MiB edit in the middle of a 64 MiB file, which must store
// under 2 MiB, rename, chmod, delete, a folder created and filled at once) becomes a snapshot; a watcher killed -9 mid-pass finishes on its
// restart; after it stops, the home is destroyed and restored by password, and every
// snapshot restores (from the storage nodes) to the folder as it was.
func TestBackupWatch(t *testing.T) {
	n := startTestNet(t)
	v, acct := n.newVault(t, "bw")
	home, pw, base := v.home, v.pw, n.dir
	src := filepath.Join(base, "src")
	fillSource(t, src, 6, 256<<10, 1)
	big := filepath.Join(src, "big.bin")
	bigData := make([]byte, 64<<20)
	rand.NewChaCha8([32]byte{64}).Read(bigData)
	if err := os.WriteFile(big, bigData, 0o640); err != nil {
		t.Fatal(err)
	}
	if r := fincrypt(t, nil, "--home", home, "backup", "add", "--password-file", pw, src); r.code != 0 {
		t.Fatalf("backup add: %+v", r)
	}
	w := startWatcher(t, home, pw, base)
	want := map[string]map[string]string{}
	step := func(what string, change func()) string {
		t.Helper()
		start := time.Now()
		change()
		id, durable := w.settled(t, what)
		t.Logf("%s: snapshot %s, durable on the network %v after it was made (%v after the change, 3s quiet included)",
			what, id, durable.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
		want[id] = treetest.Describe(t, src)
		return id
	}
	step("first pass", func() {})
	p := func(n string) string { return filepath.Join(src, n) }
	step("create", func() { os.WriteFile(p("new.txt"), []byte("new file"), 0o644) })
	editID := step("1 MiB edit in the middle of 64 MiB", func() {
		f, err := os.OpenFile(big, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		edit := make([]byte, 1<<20)
		rand.NewChaCha8([32]byte{65}).Read(edit)
		f.WriteAt(edit, 32<<20+12345)
		f.Close()
	})
	for _, e := range listSnapshots(t, home, pw) {
		if e.ID != editID {
			continue
		}
		if e.NewBytes < 1<<20 || e.NewBytes >= 2<<20 {
			t.Fatalf("the 1 MiB edit in a 64 MiB file stored %d new bytes (snapshot %s), want at least 1 MiB and under 2 MiB", e.NewBytes, e.ID)
		}
		t.Logf("the 1 MiB edit in a 64 MiB file stored %d new bytes", e.NewBytes)
		editID = ""
	}
	if editID != "" {
		t.Fatalf("snapshot %s of the edit is not listed", editID)
	}
	step("rename", func() { os.Rename(p("d1/f001.bin"), p("d2/renamed.bin")) })
	step("chmod", func() { os.Chmod(p("d2/f002.bin"), 0o600) })
	step("delete", func() { os.Remove(p("d0/f003.bin")) })
	step("mkdir -p and fill", func() {
		os.MkdirAll(p("x/y/z"), 0o755)
		for _, n := range []string{"x/a", "x/y/b", "x/y/z/c"} {
			os.WriteFile(p(n), []byte(n), 0o644)
		}
	})

	// kill -9 mid-pass: a big change, killed once the pass stored some of it.
	store := filepath.Join(home, "store")
	n0 := countStore(store)
	fillSource(t, src, 6, 2<<20, 2)
	deadline := time.Now().Add(60 * time.Second)
	for countStore(store) < n0+8 {
		if time.Now().After(deadline) {
			t.Fatal("the pass stored nothing within 60s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	w.cmd.Process.Signal(syscall.SIGKILL)
	w.stopped(t, 60*time.Second)
	w = startWatcher(t, home, pw, base)
	step("restart after kill -9", func() {})

	w.cmd.Process.Signal(syscall.SIGTERM)
	if err := w.stopped(t, 60*time.Second); err != nil {
		t.Fatalf("the watcher on SIGTERM: %v", err)
	}
	n.restoreInto(t, home, acct, pw)
	for id, tree := range want {
		dst := filepath.Join(base, "r-"+id)
		restoreSnapshot(t, home, pw, id, dst, "--sync-timeout", "60s")
		treetest.Same(t, "snapshot "+id, treetest.Describe(t, filepath.Join(dst, src)), tree)
	}
	(&vaultEnv{home: home, pw: pw}).check(t)
}

// TestMountWatchesBackups: a mount (watching is its default) backs up a folder added while
// mounted, and then each change to it, without any `backup run`.
func TestMountWatchesBackups(t *testing.T) {
	needFUSE(t)
	n := startTestNet(t)
	v, _ := n.newVault(t, "mw")
	src := filepath.Join(n.dir, "src")
	fillSource(t, src, 3, 64<<10, 1)
	v.mountWith(t)
	if r := fincrypt(t, nil, "--home", v.home, "backup", "add", "--password-file", v.pw, src); r.code != 0 {
		t.Fatalf("backup add: %+v", r)
	}
	waitSnaps := func(what string, min int) []snapJSON {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			s := listSnapshots(t, v.home, v.pw)
			if len(s) >= min {
				return s
			}
			if time.Now().After(deadline) {
				log, _ := os.ReadFile(filepath.Join(v.home, mountLogName))
				t.Fatalf("%s: %d snapshots after 60s, want %d\n%s", what, len(s), min, log)
			}
			time.Sleep(300 * time.Millisecond)
		}
	}
	first := waitSnaps("the first pass of an added folder", 1)
	os.WriteFile(filepath.Join(src, "later.txt"), []byte("written while mounted"), 0o644)
	after := waitSnaps("a change", len(first)+1)
	v.umount(t)
	dst := filepath.Join(n.dir, "r")
	restoreSnapshot(t, v.home, v.pw, after[len(after)-1].ID, dst)
	if b, err := os.ReadFile(filepath.Join(dst, src, "later.txt")); err != nil || string(b) != "written while mounted" {
		t.Fatalf("the change is not in the latest snapshot: %q, %v", b, err)
	}
}

// TestWatchSkipsExcludedFolders: the watcher leaves out what the pass leaves out (a folder a
// .fincryptignore names, a pattern there, a folder holding a CACHEDIR.TAG, an --exclude): changes
// there start no pass, and the next pass has only the real change. A folder the ignore file stops
// naming is watched from then on.
func TestWatchSkipsExcludedFolders(t *testing.T) {
	base := t.TempDir()
	home, pw := filepath.Join(base, "home"), writePassword(t, "pw")
	if r := fincrypt(t, nil, "--home", home, "init", "--password-file", pw); r.code != 0 {
		t.Fatalf("init: %+v", r)
	}
	src := filepath.Join(base, "src")
	sh(t, base, `mkdir -p src/build/obj src/cache src/keep
		echo a > src/keep/a; printf 'build\n*.tmp\n' > src/.fincryptignore
		echo 1 > src/build/1; echo 2 > src/build/obj/2
		printf 'Signature: 8a477f597d28d172789f06886806bc55' > src/cache/CACHEDIR.TAG; echo c > src/cache/c`)
	if r := fincrypt(t, nil, "--home", home, "backup", "add", "--password-file", pw, src); r.code != 0 {
		t.Fatalf("backup add: %+v", r)
	}
	w := startWatcher(t, home, pw, base, "--exclude", "*.log")
	first := w.next(t, "the first pass", 2*time.Minute)
	if first.same || first.files != "2" { // keep/a and .fincryptignore
		t.Fatalf("the first pass: %+v, want 2 files", first)
	}
	// Changes in what is left out, then one real change.
	sh(t, src, `for i in 1 2 3; do echo $i >> build/1; mkdir -p build/new$i; echo $i > build/new$i/f
		echo $i >> cache/c; mkdir -p cache/sub$i; echo $i > cache/sub$i/f
		echo $i > scratch$i.tmp; echo $i >> keep/app.log; done
		echo m > keep/marker`)
	got := w.next(t, "the real change", 2*time.Minute)
	if got.same || got.changed != "1" || got.files != "3" { // keep/marker too
		log, _ := os.ReadFile(w.log)
		t.Fatalf("after changes in excluded folders and one real change: %+v, want one pass of the one changed path (3 files)\n%s", got, log)
	}
	// build/ is no longer ignored: its files join the backup, and a change there is seen.
	os.WriteFile(filepath.Join(src, ".fincryptignore"), []byte("*.tmp\n"), 0o644)
	got = w.next(t, "the ignore file changed", 2*time.Minute)
	if got.same || got.files != "8" { // and build/1, build/obj/2, build/new1..3/f
		t.Fatalf("after build/ stopped being ignored: %+v, want 8 files", got)
	}
	os.WriteFile(filepath.Join(src, "build/obj/late"), []byte("late"), 0o644)
	got = w.next(t, "a change in the folder no longer ignored", 2*time.Minute)
	if got.same || got.changed != "1" || got.files != "9" {
		t.Fatalf("a change in build/ once it is no longer ignored: %+v, want one changed path, 9 files", got)
	}
}
