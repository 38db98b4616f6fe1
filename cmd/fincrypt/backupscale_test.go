package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestBackupWatchScale measures a watched folder of many small files (FINCRYPT_BACKUP_SCALE
// files, e.g. 100000; skipped without it, and run by `make bench`): the watcher's first
// pass, its resident memory and inotify watches, how long a one-file change takes to become
// a snapshot, and an unchanged second pass (`backup run`). It prints one "backup-scale"
// line; it asserts only that each step happens, and that the watcher has a watch on every
// folder.
func TestBackupWatchScale(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("FINCRYPT_BACKUP_SCALE"))
	if n <= 0 {
		t.Skip("FINCRYPT_BACKUP_SCALE (a number of files) is not set")
	}
	base := t.TempDir()
	home, pw := filepath.Join(base, "home"), writePassword(t, "pw")
	if r := fincrypt(t, nil, "--home", home, "init", "--password-file", pw); r.code != 0 {
		t.Fatalf("init: %+v", r)
	}
	src := filepath.Join(base, "src")
	const perDir = 100
	dirs := 0
	for i := 0; i < n; i++ {
		d := filepath.Join(src, fmt.Sprintf("g%02d", i/(perDir*100)), fmt.Sprintf("d%04d", i/perDir))
		if i%perDir == 0 {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
			dirs++
		}
		if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("f%06d.txt", i)), []byte(fmt.Sprintf("file %d of the scale test\n%s", i, strings.Repeat("x", i%1000))), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	groups, _ := os.ReadDir(src)
	dirs += len(groups) + 1
	if r := fincrypt(t, nil, "--home", home, "backup", "add", "--password-file", pw, src); r.code != 0 {
		t.Fatalf("backup add: %+v", r)
	}
	// Watcher: its first pass, then one change.
	start := time.Now()
	w := startWatcher(t, home, pw, base)
	cmd := w.cmd
	next := func(what string) string { return w.next(t, what, 10*time.Minute).files }
	files := next("first pass")
	first := time.Since(start)
	if files != strconv.Itoa(n) {
		t.Fatalf("the first pass kept %s files, want %d", files, n)
	}
	rss, hwm := procStatus(t, cmd.Process.Pid, "VmRSS"), procStatus(t, cmd.Process.Pid, "VmHWM")
	watches := inotifyWatches(t, cmd.Process.Pid)
	if watches < dirs {
		t.Errorf("%d inotify watches for %d folders", watches, dirs)
	}
	time.Sleep(time.Second) // the watcher is idle: no event pending
	changed := filepath.Join(src, "g00", "d0000", "f000000.txt")
	t0 := time.Now()
	if err := os.WriteFile(changed, []byte("changed"), 0o644); err != nil {
		t.Fatal(err)
	}
	files = next("a one-file change")
	change := time.Since(t0)
	if files != strconv.Itoa(n) {
		t.Errorf("the change's pass records %s files, want %d", files, n)
	}
	rss2 := procStatus(t, cmd.Process.Pid, "VmRSS")
	cmd.Process.Signal(syscall.SIGTERM)
	w.stopped(t, 10*time.Minute)
	// An unchanged full pass.
	t0 = time.Now()
	rep := backupRun(t, home, pw, nil)
	second := time.Since(t0)
	if rep.Files != uint64(n) || rep.BytesRead != 0 {
		t.Errorf("the unchanged pass: %+v", rep)
	}
	line := fmt.Sprintf("backup-scale files=%d folders=%d first_pass_s=%.1f watcher_rss_mib=%d (peak %d, after a change %d) inotify_watches=%d change_to_snapshot_s=%.2f (settle 200ms) unchanged_pass_s=%.1f",
		n, dirs, first.Seconds(), rss>>10, hwm>>10, rss2>>10, watches, change.Seconds(), second.Seconds())
	t.Log(line)
	fmt.Println(line)
}

// procStatus returns a "kB" field of /proc/PID/status, in KiB.
func procStatus(t *testing.T, pid int, field string) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, field+":") {
			v, _ := strconv.Atoi(strings.Fields(l)[1])
			return v
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// inotifyWatches counts the inotify watches the process holds (/proc/PID/fdinfo).
func inotifyWatches(t *testing.T, pid int) int {
	t.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fdinfo", pid))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, fd := range fds {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%s", pid, fd.Name()))
		if err == nil {
			n += strings.Count(string(b), "inotify wd:")
		}
	}
	return n
}
