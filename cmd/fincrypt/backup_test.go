package main

// Backups of existing folders (issue 10), with the real binary: the
// commands' contract, kill -9 of a pass and of forget, and a restore of
// every snapshot from the password alone after the home is gone.

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fincrypt/fincrypt/internal/treetest"
)

// fillSource writes n seeded files of size bytes (and a few other kinds of
// entry) under dir, with seed picking their contents.
func fillSource(t *testing.T, dir string, n, size int, seed uint64) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 1))
	for i := 0; i < n; i++ {
		b := make([]byte, size)
		for j := range b {
			b[j] = byte(r.Uint32())
		}
		p := filepath.Join(dir, fmt.Sprintf("d%d/f%03d.bin", i%3, i))
		os.MkdirAll(filepath.Dir(p), 0o750)
		if err := os.WriteFile(p, b, 0o640); err != nil {
			t.Fatal(err)
		}
	}
}

type backupReport struct {
	Snapshot   string `json:"snapshot"`
	Files      uint64 `json:"files"`
	BytesRead  uint64 `json:"bytes_read"`
	NewBytes   uint64 `json:"new_bytes"`
	TotalBytes uint64 `json:"total_bytes"`
	Skipped    []struct {
		Path, Reason string
	} `json:"skipped"`
}

func backupRun(t *testing.T, home, pw string, env []string, args ...string) backupReport {
	t.Helper()
	r := fincrypt(t, env, append([]string{"--home", home, "backup", "run", "--password-file", pw, "--json"}, args...)...)
	if r.code != 0 {
		t.Fatalf("backup run: %+v", r)
	}
	sum := progressLines(t, "backup run --json", r.stdout)
	var rep backupReport
	if err := json.Unmarshal(sum.Result, &rep); err != nil || rep.Snapshot == "" {
		t.Fatalf("backup run --json: the summary's result %s: %v", sum.Result, err)
	}
	if sum.Files != int64(rep.Files) || sum.Bytes != int64(rep.TotalBytes) {
		t.Fatalf("backup run --json: the summary says %d files, %d bytes; the report %d files, %d bytes", sum.Files, sum.Bytes, rep.Files, rep.TotalBytes)
	}
	return rep
}

// progressSummary is the last line of a command's --json progress.
type progressSummary struct {
	Type       string          `json:"type"`
	Files      int64           `json:"files"`
	TotalFiles int64           `json:"total_files"`
	Bytes      int64           `json:"bytes"`
	TotalBytes int64           `json:"total_bytes"`
	Error      string          `json:"error"`
	Result     json.RawMessage `json:"result"`
	lines      int             // progress lines before it
}

// progressLines checks --json output: JSON lines only, progress lines whose counts never go
// back and never pass a known total, then one summary line; it returns the summary.
func progressLines(t *testing.T, what, stdout string) progressSummary {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	var last progressSummary
	for i, l := range lines {
		var s progressSummary
		if err := json.Unmarshal([]byte(l), &s); err != nil {
			t.Fatalf("%s: line %d is not JSON: %v\n%s", what, i+1, err, stdout)
		}
		want := "progress"
		if i == len(lines)-1 {
			want = "summary"
		}
		if s.Type != want {
			t.Fatalf("%s: line %d is a %q, want a %q\n%s", what, i+1, s.Type, want, stdout)
		}
		if s.Files < last.Files || s.Bytes < last.Bytes {
			t.Fatalf("%s: line %d goes back (%+v after %+v)", what, i+1, s, last)
		}
		if want == "progress" && s.TotalBytes > 0 && s.Bytes > s.TotalBytes {
			t.Fatalf("%s: line %d is past its total: %+v", what, i+1, s)
		}
		last = s
	}
	last.lines = len(lines) - 1
	return last
}

type snapJSON struct {
	ID         string    `json:"id"`
	Time       time.Time `json:"time"`
	Paths      []string  `json:"paths"`
	NewBytes   uint64    `json:"new_bytes"`
	TotalBytes uint64    `json:"total_bytes"`
}

func listSnapshots(t *testing.T, home, pw string) []snapJSON {
	t.Helper()
	r := fincrypt(t, nil, "--home", home, "snapshots", "--password-file", pw, "--json")
	if r.code != 0 {
		t.Fatalf("snapshots: %+v", r)
	}
	var out []snapJSON
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("snapshots --json: %v\n%s", err, r.stdout)
	}
	return out
}

func restoreSnapshot(t *testing.T, home, pw, id, target string, args ...string) {
	t.Helper()
	r := fincrypt(t, nil, append([]string{"--home", home, "restore", "--password-file", pw, "--snapshot", id, "--target", target}, args...)...)
	if r.code != 0 {
		t.Fatalf("restore --snapshot %s: %+v", id, r)
	}
}

func TestBackupCommands(t *testing.T) {
	base := t.TempDir()
	home, pw := filepath.Join(base, "home"), writePassword(t, "pw")
	if r := fincrypt(t, nil, "--home", home, "init", "--password-file", pw); r.code != 0 {
		t.Fatalf("init: %+v", r)
	}
	assertUserError(t, fincrypt(t, nil, "--home", home, "backup", "run", "--password-file", pw), exitUsage, "no folder")
	assertUserError(t, fincrypt(t, nil, "--home", home, "backup", "add", "--password-file", pw, filepath.Join(base, "nope")), exitUsage, "no such file")
	src := filepath.Join(base, "src")
	fillSource(t, src, 6, 100<<10, 1)
	sh(t, src, `echo hello > a.txt; ln a.txt d0/hard; ln -s a.txt link; mkdir -p cache empty; printf 'Signature: 8a477f597d28d172789f06886806bc55' > cache/CACHEDIR.TAG
		echo x > skip.tmp; chmod 0700 d1; chmod 0604 a.txt; mkfifo fifo; touch -d '2020-02-02 02:02:02' d2/f002.bin`)
	if err := unix.Setxattr(filepath.Join(src, "d0/f000.bin"), "user.tag", []byte("kept"), 0); err != nil {
		t.Fatalf("xattrs: %v", err)
	}
	want := treetest.Describe(t, src)
	for k := range want {
		if strings.HasPrefix(k, "cache") || k == "skip.tmp" || k == "fifo" {
			delete(want, k)
		}
	}
	if r := fincrypt(t, nil, "--home", home, "backup", "add", "--password-file", pw, src); r.code != 0 || !strings.Contains(r.stdout, src) {
		t.Fatalf("backup add: %+v", r)
	}
	if r := fincrypt(t, nil, "--home", home, "backup", "list", "--password-file", pw); r.code != 0 || strings.TrimSpace(r.stdout) != src {
		t.Fatalf("backup list: %+v", r)
	}
	rep := backupRun(t, home, pw, nil, "--exclude", "*.tmp")
	if rep.Files != 8 || rep.NewBytes < 6*100<<10 {
		t.Fatalf("first pass: %+v", rep)
	}
	var skipped []string
	for _, s := range rep.Skipped {
		skipped = append(skipped, filepath.Base(s.Path)+": "+s.Reason)
	}
	if len(skipped) != 2 || !strings.Contains(strings.Join(skipped, "\n"), "fifo") || !strings.Contains(strings.Join(skipped, "\n"), "CACHEDIR.TAG") {
		t.Fatalf("skipped %q, want the fifo and the cache named", skipped)
	}

	// A mount and a clean unmount between passes keep every blob (the
	// mount collects chunks nothing references: blobs are referenced).
	if os.Geteuid() == 0 {
		if _, err := os.Stat("/dev/fuse"); err == nil {
			v := &vaultEnv{home: home, mnt: filepath.Join(base, "mnt"), pw: pw}
			t.Cleanup(func() { v.kill() })
			v.mount(t)
			assertUserError(t, fincrypt(t, nil, "--home", home, "backup", "run", "--password-file", pw), exitBusy, "mounted")
			v.umount(t)
			v.mount(t) // this one collects
			v.umount(t)
		}
	} else {
		t.Log("not root: the mount's collection of unreferenced chunks is not exercised")
	}
	v := &vaultEnv{home: home, pw: pw}
	v.check(t)

	snaps := listSnapshots(t, home, pw)
	if len(snaps) != 1 || snaps[0].ID != rep.Snapshot || snaps[0].Paths[0] != src || snaps[0].TotalBytes != rep.TotalBytes {
		t.Fatalf("snapshots %+v, want the pass %+v", snaps, rep)
	}
	target := filepath.Join(base, "restored")
	restoreSnapshot(t, home, pw, rep.Snapshot[:5], target)
	treetest.Same(t, "restore", treetest.Describe(t, filepath.Join(target, src)), want)
	assertUserError(t, fincrypt(t, nil, "--home", home, "restore", "--password-file", pw, "--snapshot", rep.Snapshot, "--target", target), exitUsage, "--overwrite")
	assertUserError(t, fincrypt(t, nil, "--home", home, "restore", "--password-file", pw, "--snapshot", "ffffffffff", "--target", target), exitNotFound, "no such snapshot")
	assertUserError(t, fincrypt(t, nil, "--home", home, "restore", "--password-file", pw, "--snapshot", "latest", "--path", "/not/there", "--target", target), exitNotFound, "not in snapshot")
	assertUserError(t, fincrypt(t, nil, "--home", home, "forget", "--password-file", pw), exitUsage, "--keep")

	// A history of passes on five days; forget keeps two days' newest.
	for _, p := range []string{"cache", "skip.tmp", "fifo"} {
		os.RemoveAll(filepath.Join(src, p))
	}
	day := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	sums := map[string]map[string]string{}
	for i := 0; i < 5; i++ {
		os.WriteFile(filepath.Join(src, "d0/daily.bin"), []byte(strings.Repeat(fmt.Sprint(i), 200<<10)), 0o644)
		r := backupRun(t, home, pw, []string{"FINCRYPT_BACKUP_TIME=" + day.Add(time.Duration(i)*24*time.Hour).Format(time.RFC3339)})
		sums[r.Snapshot] = treeSums(t, src)
	}
	before := listSnapshots(t, home, pw)
	storeBefore := countStore(filepath.Join(home, "store"))
	if r := fincrypt(t, nil, "--home", home, "forget", "--password-file", pw, "--keep-daily", "2", "--dry-run"); r.code != 0 || !strings.Contains(r.stdout, "would forget 4") {
		t.Fatalf("forget --dry-run: %+v", r)
	}
	if n := len(listSnapshots(t, home, pw)); n != 6 || countStore(filepath.Join(home, "store")) != storeBefore {
		t.Fatalf("a dry run changed something: %d snapshots", n)
	}
	if r := fincrypt(t, nil, "--home", home, "forget", "--password-file", pw, "--keep-daily", "2"); r.code != 0 {
		t.Fatalf("forget: %+v", r)
	}
	after := listSnapshots(t, home, pw)
	if len(after) != 2 || after[0].ID != before[4].ID || after[1].ID != before[5].ID {
		t.Fatalf("kept %+v, want the last two of %+v", after, before)
	}
	if n := countStore(filepath.Join(home, "store")); n >= storeBefore {
		t.Fatalf("the store holds %d chunks after forget, %d before", n, storeBefore)
	}
	for _, s := range after {
		dst := filepath.Join(base, "kept-"+s.ID)
		restoreSnapshot(t, home, pw, s.ID, dst)
		sameSums(t, "kept snapshot "+s.ID, treeSums(t, filepath.Join(dst, src)), sums[s.ID])
	}
	v.check(t)
}

// TestBackupKill9 kills `backup run` in the middle of a pass and `forget`
// in the middle of its run: the next run finishes, and nothing kept is lost.
func TestBackupKill9(t *testing.T) {
	base := t.TempDir()
	home, pw := filepath.Join(base, "home"), writePassword(t, "pw")
	if r := fincrypt(t, nil, "--home", home, "init", "--password-file", pw); r.code != 0 {
		t.Fatalf("init: %+v", r)
	}
	src := filepath.Join(base, "src")
	// Large enough that the pass is still storing when it is killed: a
	// pass of 24 MiB could store its last blobs and record its snapshot
	// between the check below and the kill (a clean-clone run, once).
	const files, size = 12, 8 << 20
	fillSource(t, src, files, size, 1)
	fincrypt(t, nil, "--home", home, "backup", "add", "--password-file", pw, src)
	first := backupRun(t, home, pw, nil)
	firstSums := treeSums(t, src)
	fillSource(t, src, files, size, 2) // every file changes

	// kill -9 once the pass has stored some blobs.
	store := filepath.Join(home, "store")
	n0 := countStore(store)
	cmd := exec.Command(binPath, "--home", home, "backup", "run", "--password-file", pw)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + base}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	deadline := time.Now().Add(60 * time.Second)
	for countStore(store) < n0+20 && time.Now().Before(deadline) {
		select {
		case err := <-done:
			t.Fatalf("the pass ended before it was killed: %v", err)
		case <-time.After(5 * time.Millisecond):
		}
	}
	cmd.Process.Signal(syscall.SIGKILL)
	<-done
	if n := len(listSnapshots(t, home, pw)); n != 1 {
		t.Fatalf("%d snapshots after a killed pass, want 1", n)
	}
	second := backupRun(t, home, pw, nil)
	secondSums := treeSums(t, src)
	if second.Files != files {
		t.Fatalf("the pass after the kill: %+v", second)
	}
	(&vaultEnv{home: home, pw: pw}).check(t)
	for id, sums := range map[string]map[string]string{first.Snapshot: firstSums, second.Snapshot: secondSums} {
		dst := filepath.Join(base, "r-"+id)
		restoreSnapshot(t, home, pw, id, dst)
		sameSums(t, "snapshot "+id, treeSums(t, filepath.Join(dst, src)), sums)
	}

	// More history, then forget --keep-last 2, killed after d, for growing d.
	all := map[string]map[string]string{first.Snapshot: firstSums, second.Snapshot: secondSums}
	for i := 3; i <= 6; i++ {
		fillSource(t, src, 4, 1<<20, uint64(i))
		r := backupRun(t, home, pw, nil)
		all[r.Snapshot] = treeSums(t, src)
	}
	snaps := listSnapshots(t, home, pw)
	keep := map[string]bool{snaps[len(snaps)-1].ID: true, snaps[len(snaps)-2].ID: true}
	for _, d := range []time.Duration{0, 10 * time.Millisecond, 30 * time.Millisecond, 80 * time.Millisecond, 200 * time.Millisecond} {
		cmd := exec.Command(binPath, "--home", home, "forget", "--password-file", pw, "--keep-last", "2")
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + base}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(d)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		left := listSnapshots(t, home, pw)
		seen := map[string]bool{}
		for _, s := range left {
			seen[s.ID] = true
		}
		for id := range keep {
			if !seen[id] {
				t.Fatalf("forget killed after %v lost kept snapshot %s", d, id)
			}
		}
	}
	if r := fincrypt(t, nil, "--home", home, "forget", "--password-file", pw, "--keep-last", "2"); r.code != 0 {
		t.Fatalf("forget after the kills: %+v", r)
	}
	left := listSnapshots(t, home, pw)
	if len(left) != 2 {
		t.Fatalf("%d snapshots left, want 2", len(left))
	}
	for _, s := range left {
		dst := filepath.Join(base, "k-"+s.ID)
		restoreSnapshot(t, home, pw, s.ID, dst)
		sameSums(t, "kept snapshot "+s.ID, treeSums(t, filepath.Join(dst, src)), all[s.ID])
	}
	(&vaultEnv{home: home, pw: pw}).check(t)
}

// TestBackupRestoreFromPassword destroys the home after two passes on a
// network (the second while mounted, in the mount process): restore by
// password brings back both snapshots, and the oldest restores from the
// storage nodes.
// mountedRunShowsProgress runs `backup run --json` on a mounted vault (the pass runs in the
// mount) and checks that it shows the pass's progress as it goes, as on an unmounted vault:
// a first line before the pass was done, and the totals of the mount's counting walk.
func mountedRunShowsProgress(t *testing.T, home, pw string) backupReport {
	t.Helper()
	r := fincrypt(t, nil, "--home", home, "backup", "run", "--password-file", pw, "--json")
	if r.code != 0 {
		t.Fatalf("backup run in the mount: %+v", r)
	}
	sum := progressLines(t, "backup run --json in the mount", r.stdout)
	var rep backupReport
	if err := json.Unmarshal(sum.Result, &rep); err != nil {
		t.Fatalf("backup run in the mount: the summary's result %s: %v", sum.Result, err)
	}
	var first progressSummary
	line, _, _ := strings.Cut(r.stdout, "\n")
	json.Unmarshal([]byte(line), &first)
	if sum.lines == 0 || first.Files >= sum.Files || sum.Files != int64(rep.Files) || sum.TotalFiles != sum.Files || sum.TotalBytes != int64(rep.TotalBytes) {
		sum.Result = nil
		t.Fatalf("backup run in the mount: first line %+v, %d progress lines, summary %+v: want progress before the end (%d files) and the totals", first, sum.lines, sum, rep.Files)
	}
	return rep
}

// mountedRestoreShowsProgress runs `restore --snapshot --json` on a mounted vault (the restore
// runs in the mount) and checks that it shows progress lines with the restore's totals, as on an
// unmounted vault, and that the restored tree is the one backed up.
func mountedRestoreShowsProgress(t *testing.T, home, pw, id, dst, src string, want map[string]string) {
	t.Helper()
	r := fincrypt(t, nil, "--home", home, "restore", "--password-file", pw, "--snapshot", id, "--target", dst, "--json")
	if r.code != 0 {
		t.Fatalf("restore in the mount: %+v", r)
	}
	sum := progressLines(t, "restore --json in the mount", r.stdout)
	if sum.lines == 0 || sum.Files != int64(len(want)) || sum.TotalFiles != sum.Files || sum.TotalBytes != sum.Bytes || sum.Bytes == 0 {
		sum.Result = nil
		t.Fatalf("restore in the mount: %d progress lines, summary %+v: want progress lines and the totals of %d files", sum.lines, sum, len(want))
	}
	sameSums(t, "restored in the mount", treeSums(t, filepath.Join(dst, src)), want)
}

func TestBackupRestoreFromPassword(t *testing.T) {
	needFUSE(t)
	n := startTestNet(t)
	v, acct := n.newVault(t, "bk")
	src := filepath.Join(n.dir, "src")
	fillSource(t, src, 5, 300<<10, 1)
	if r := fincrypt(t, nil, "--home", v.home, "backup", "add", "--password-file", v.pw, src); r.code != 0 {
		t.Fatalf("backup add: %+v", r)
	}
	first := backupRun(t, v.home, v.pw, nil, "--sync-timeout", "90s")
	firstSums := treeSums(t, src)
	os.Remove(filepath.Join(src, "d0/f000.bin"))
	fillSource(t, src, 2, 300<<10, 2)
	// While mounted, the pass runs in the mount process (control socket); the mount's
	// own watching of the folder is off, so that the passes are the test's.
	v.mountWith(t, "--watch-backups=false")
	second := mountedRunShowsProgress(t, v.home, v.pw)
	secondSums := treeSums(t, src)
	mountedRestoreShowsProgress(t, v.home, v.pw, first.Snapshot, filepath.Join(n.dir, "first-mounted"), src, firstSums)
	if s := listSnapshots(t, v.home, v.pw); len(s) != 2 || s[1].ID != second.Snapshot {
		t.Fatalf("snapshots while mounted: %+v", s)
	}
	v.umount(t) // uploads, and stores the final index snapshot

	n.restoreInto(t, v.home, acct, v.pw)
	snaps := listSnapshots(t, v.home, v.pw)
	if len(snaps) != 2 || snaps[0].ID != first.Snapshot || snaps[1].ID != second.Snapshot {
		t.Fatalf("after a restore by password: %+v, want %s and %s", snaps, first.Snapshot, second.Snapshot)
	}
	if c := countStore(filepath.Join(v.home, "store")); c != 0 {
		t.Fatalf("the restored home holds %d chunks before any read", c)
	}
	dst := filepath.Join(n.dir, "oldest")
	restoreSnapshot(t, v.home, v.pw, snaps[0].ID, dst, "--sync-timeout", "30s")
	sameSums(t, "oldest snapshot from the network", treeSums(t, filepath.Join(dst, src)), firstSums)
	dst = filepath.Join(n.dir, "newest")
	restoreSnapshot(t, v.home, v.pw, "latest", dst, "--sync-timeout", "30s")
	sameSums(t, "newest snapshot from the network", treeSums(t, filepath.Join(dst, src)), secondSums)
}
