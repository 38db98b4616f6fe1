package main

import (
	"bytes"
	"errors"
	"github.com/fincrypt/fincrypt/internal/testbin"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The CLI tests run the real binary, built once for the package.
var binPath string

func TestMain(m *testing.M) { testbin.Main(m, &binPath) }

type result struct {
	stdout, stderr string
	code           int
}

// fincrypt runs the binary with a clean environment of its own.
func fincrypt(t *testing.T, env []string, args ...string) result {
	t.Helper()
	cmd := exec.Command(binPath, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("fincrypt %v: %v", args, err)
	}
	return r
}

func writePassword(t *testing.T, pw string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(f, []byte(pw+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// assertUserError checks the contract for errors meant for users: the exit
// code, one line on stderr, the words that say what is wrong, no stack.
func assertUserError(t *testing.T, r result, code int, words string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit %d, want %d; stderr: %s", r.code, code, r.stderr)
	}
	msg := strings.TrimRight(r.stderr, "\n")
	if strings.Count(msg, "\n") != 0 || !strings.Contains(msg, words) {
		t.Fatalf("stderr %q: want one line containing %q", r.stderr, words)
	}
	if strings.Contains(msg, "goroutine") || strings.Contains(msg, "panic") {
		t.Fatalf("stderr has a stack: %q", msg)
	}
}

func TestInitWrongPasswordPasswd(t *testing.T) {
	home := filepath.Join(t.TempDir(), "home")
	pw := writePassword(t, "right one")
	bad := writePassword(t, "wrong one")
	newPW := writePassword(t, "the new one")

	if r := fincrypt(t, nil, "--home", home, "check", "--password-file", pw); r.code != exitNotFound {
		t.Fatalf("check without a vault: exit %d, stderr %s", r.code, r.stderr)
	}
	if r := fincrypt(t, nil, "--home", home, "init", "--password-file", pw); r.code != 0 {
		t.Fatalf("init: %+v", r)
	}
	assertUserError(t, fincrypt(t, nil, "--home", home, "init", "--password-file", pw), exitUsage, "already holds a vault")
	assertUserError(t, fincrypt(t, nil, "--home", home, "check", "--password-file", bad), exitPassword, "wrong password")
	// The password also comes from the environment, and FINCRYPT_HOME names the home.
	assertUserError(t, fincrypt(t, []string{"FINCRYPT_HOME=" + home, "FINCRYPT_PASSWORD=nope"}, "check"), exitPassword, "wrong password")
	// --home also works after the command, and wins over FINCRYPT_HOME.
	elsewhere := []string{"FINCRYPT_HOME=" + t.TempDir()}
	if r := fincrypt(t, elsewhere, "check", "--home", home, "--password-file", pw); r.code != 0 {
		t.Fatalf("check --home after the command: %+v", r)
	}
	assertUserError(t, fincrypt(t, elsewhere, "check", "--password-file", pw), exitNotFound, "no vault")
	// No password source and no terminal: a clear error, not a hang.
	assertUserError(t, fincrypt(t, nil, "--home", home, "check"), exitUsage, "no password")

	assertUserError(t, fincrypt(t, nil, "--home", home, "passwd", "--password-file", bad, "--new-password-file", newPW), exitPassword, "wrong password")
	if r := fincrypt(t, nil, "--home", home, "passwd", "--password-file", pw, "--new-password-file", newPW); r.code != 0 {
		t.Fatalf("passwd: %+v", r)
	}
	assertUserError(t, fincrypt(t, nil, "--home", home, "check", "--password-file", pw), exitPassword, "wrong password")
	if r := fincrypt(t, nil, "--home", home, "check", "--password-file", newPW); r.code != 0 {
		t.Fatalf("check with the new password: %+v", r)
	}
	cfg, err := os.ReadFile(filepath.Join(home, "config"))
	if err != nil || !strings.Contains(string(cfg), "cache-size = ") {
		t.Fatalf("config file: %q, %v", cfg, err)
	}
}

func TestUsageErrors(t *testing.T) {
	assertUserError(t, fincrypt(t, nil, "mount"), exitUsage, "MOUNTPOINT")
	if r := fincrypt(t, nil, "--help"); r.code != 0 || !strings.Contains(r.stdout, "mount") {
		t.Fatalf("--help: %+v", r)
	}
}

// needFUSE skips, saying why, where a real mount is impossible.
func needFUSE(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: FUSE mount tests need root (CI runs as root)")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("skipping: /dev/fuse is missing")
	}
}

type vaultEnv struct {
	home, mnt, pw string
}

func newMountedVault(t *testing.T) *vaultEnv {
	t.Helper()
	needFUSE(t)
	v := newInitVault(t, t.TempDir())
	v.mount(t)
	t.Cleanup(func() {
		if isMounted(v.mnt) {
			syscall.Unmount(v.mnt, syscall.MNT_DETACH)
		}
		if pid := v.pid(); pid > 0 {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	return v
}

// newInitVault makes a vault in base/home with the password "pw", its
// mount point base/mnt, not mounted.
func newInitVault(t *testing.T, base string) *vaultEnv {
	t.Helper()
	v := &vaultEnv{home: filepath.Join(base, "home"), mnt: filepath.Join(base, "mnt"), pw: writePassword(t, "pw")}
	if r := fincrypt(t, nil, "--home", v.home, "init", "--password-file", v.pw); r.code != 0 {
		t.Fatalf("init: %+v", r)
	}
	return v
}

func (v *vaultEnv) mount(t *testing.T) {
	t.Helper()
	if r := fincrypt(t, nil, "--home", v.home, "mount", "--password-file", v.pw, v.mnt); r.code != 0 {
		log, _ := os.ReadFile(filepath.Join(v.home, mountLogName))
		t.Fatalf("mount: %+v\nmount.log:\n%s", r, log)
	}
	if !isMounted(v.mnt) {
		t.Fatal("mount returned 0 but nothing is mounted")
	}
}

func (v *vaultEnv) umount(t *testing.T) {
	t.Helper()
	if r := fincrypt(t, nil, "umount", v.mnt); r.code != 0 {
		t.Fatalf("umount: %+v", r)
	}
	if isMounted(v.mnt) {
		t.Fatal("still mounted after umount")
	}
}

func (v *vaultEnv) pid() int {
	b, err := os.ReadFile(filepath.Join(v.home, mountPIDName))
	if err != nil {
		return 0
	}
	var pid int
	for _, c := range strings.TrimSpace(string(b)) {
		pid = pid*10 + int(c-'0')
	}
	return pid
}

func (v *vaultEnv) check(t *testing.T) {
	t.Helper()
	if r := fincrypt(t, nil, "--home", v.home, "check", "--password-file", v.pw); r.code != 0 {
		t.Fatalf("check: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

func sh(t *testing.T, dir, script string) string {
	t.Helper()
	cmd := exec.Command("sh", "-ec", script)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", script, err, out)
	}
	return string(out)
}

// TestMountLifecycle: init, mount in the background, use the folder from
// other programs, unmount, check, remount, and find no plaintext on disk.
func TestMountLifecycle(t *testing.T) {
	v := newMountedVault(t)
	const marker = "fincrypt-marker-7c1e4b2a"
	sh(t, v.mnt, `
		mkdir -p docs/deep
		echo "`+marker+` in the content" > docs/deep/notes.txt
		echo hello > `+marker+`-named-file
		seq 1 200000 > docs/numbers
		cp -a docs copy
		tar cf archive.tar docs
		mkdir un && tar xf archive.tar -C un
		cmp docs/numbers un/docs/numbers
		ln -s docs/deep/notes.txt link
		cat link | grep -q marker`)
	assertUserError(t, fincrypt(t, nil, "--home", v.home, "mount", "--password-file", v.pw, v.mnt), exitBusy, "already")
	assertUserError(t, fincrypt(t, nil, "--home", v.home, "check", "--password-file", v.pw), exitBusy, "in use")
	v.umount(t)
	v.check(t)

	// Nothing under home reveals the marker, as a name or as content.
	filepath.Walk(v.home, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(p, marker) {
			t.Errorf("path under home reveals the marker: %s", p)
		}
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(b, []byte(marker)) || bytes.Contains(b, []byte("notes.txt")) {
				t.Errorf("%s contains plaintext", p)
			}
		}
		return nil
	})

	v.mount(t)
	got := sh(t, v.mnt, "cat docs/deep/notes.txt; cat copy/deep/notes.txt; wc -l < un/docs/numbers; readlink link")
	want := marker + " in the content\n" + marker + " in the content\n200000\ndocs/deep/notes.txt\n"
	if got != want {
		t.Fatalf("after remount: %q, want %q", got, want)
	}
	v.umount(t)
}

// TestForegroundSIGTERM: a foreground mount unmounts cleanly on SIGTERM.
func TestForegroundSIGTERM(t *testing.T) {
	needFUSE(t)
	base := t.TempDir()
	home, mnt, pw := filepath.Join(base, "home"), filepath.Join(base, "mnt"), writePassword(t, "pw")
	if r := fincrypt(t, nil, "--home", home, "init", "--password-file", pw); r.code != 0 {
		t.Fatalf("init: %+v", r)
	}
	cmd := exec.Command(binPath, "--home", home, "mount", "--foreground", "--password-file", pw, mnt)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		syscall.Unmount(mnt, syscall.MNT_DETACH)
	})
	deadline := time.Now().Add(20 * time.Second)
	for !isMounted(mnt) {
		if time.Now().After(deadline) {
			t.Fatalf("not mounted after 20s: %s", errb.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := os.WriteFile(filepath.Join(mnt, "f"), []byte("kept"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("foreground mount after SIGTERM: %v\n%s", err, errb.String())
	}
	if isMounted(mnt) {
		t.Fatal("still mounted after SIGTERM")
	}
	if r := fincrypt(t, nil, "--home", home, "check", "--password-file", pw); r.code != 0 {
		t.Fatalf("check: %+v", r)
	}
}

// TestKill9KeepsFsyncedData: while several writers work, the mount process
// is killed with SIGKILL. Every file whose fsync returned must come back
// identical after a remount, and check must find the vault consistent.
func TestKill9KeepsFsyncedData(t *testing.T) {
	v := newMountedVault(t)
	type synced struct {
		name string
		data []byte
	}
	done := make(chan []synced, 3)
	stop := make(chan struct{})
	var fsynced atomic.Int64
	for w := 0; w < 3; w++ {
		go func(w int) {
			var ok []synced
			defer func() { done <- ok }()
			for i := 0; i < 2000; i++ { // bounded: the kill comes long before
				select {
				case <-stop:
					return
				default:
				}
				name := filepath.Join(v.mnt, "w"+string(rune('a'+w))+"-"+strconv.Itoa(i))
				// Sizes vary from a few bytes to several chunks.
				data := bytes.Repeat([]byte{byte(w), byte(i), byte(i >> 8), 0x5a}, 1+(i*7919)%(700<<10))
				f, err := os.OpenFile(name, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
				if err != nil {
					return
				}
				if _, err := f.Write(data); err != nil {
					f.Close()
					return
				}
				if i%2 == 0 { // half the files are never fsynced: heavy unsynced load
					if err := f.Sync(); err != nil {
						f.Close()
						return
					}
					ok = append(ok, synced{name, data})
					fsynced.Add(1)
				}
				f.Close()
			}
		}(w)
	}
	// The kill comes while the writers work: after 1.5 s of it, and once
	// a few files are fsynced (how many depends on the machine's speed;
	// a loaded one may have fsynced none by then).
	for start := time.Now(); time.Since(start) < 1500*time.Millisecond || fsynced.Load() < 3; time.Sleep(20 * time.Millisecond) {
		if time.Since(start) > time.Minute {
			break // the check below fails, saying why
		}
	}
	pid := v.pid()
	if pid <= 0 {
		t.Fatal("no mount.pid")
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	close(stop)
	var all []synced
	for i := 0; i < 3; i++ {
		all = append(all, <-done...)
	}
	if len(all) == 0 {
		t.Fatal("no file was fsynced before the kill: the test proves nothing")
	}
	for i := 0; i < 250; i++ { // the killed process releases its lock when the kernel reaps it
		if syscall.Kill(pid, 0) != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	v.check(t)
	// The dead mount is still there; mounting again clears it.
	if !isMounted(v.mnt) {
		t.Fatal("the dead mount vanished by itself: the remount below proves nothing")
	}
	r := fincrypt(t, nil, "--home", v.home, "mount", "--password-file", v.pw, v.mnt)
	if r.code != 0 || !strings.Contains(r.stderr, "cleared the dead mount") {
		t.Fatalf("mounting over the dead mount: %+v", r)
	}
	for _, s := range all {
		got, err := os.ReadFile(s.name)
		if err != nil {
			t.Fatalf("fsynced file %s: %v", s.name, err)
		}
		if !bytes.Equal(got, s.data) {
			t.Fatalf("fsynced file %s: %d bytes differ from the %d written", s.name, len(got), len(s.data))
		}
	}
	t.Logf("%d fsynced files intact after kill -9", len(all))
	v.umount(t)
	v.check(t)
}

// TestAllowOther: with --allow-other another user can use the mount, and
// mode bits and owners are enforced as on a local file system; without it,
// other users cannot even look.
func TestAllowOther(t *testing.T) {
	needFUSE(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("skipping: setpriv (util-linux) is missing")
	}
	base := t.TempDir()
	// t.TempDir's parent is private (0700): open the path for the other user.
	for _, d := range []string{filepath.Dir(base), base} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	v := newInitVault(t, base)
	asNobody := func(script string) error {
		cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sh", "-c", script)
		cmd.Dir = "/"
		return cmd.Run()
	}
	mountWith := func(extra ...string) {
		args := append([]string{"--home", v.home, "mount", "--password-file", v.pw}, extra...)
		if r := fincrypt(t, nil, append(args, v.mnt)...); r.code != 0 {
			t.Fatalf("mount: %+v", r)
		}
		t.Cleanup(func() { syscall.Unmount(v.mnt, syscall.MNT_DETACH) })
	}

	mountWith()
	sh(t, v.mnt, "echo public > public; chmod 644 public")
	if err := asNobody("cat " + v.mnt + "/public"); err == nil {
		t.Fatal("without --allow-other another user read the mount")
	}
	v.umount(t)

	mountWith("--allow-other")
	sh(t, v.mnt, `echo secret > secret; chmod 600 secret; mkdir shared; chmod 1777 shared; chmod 755 .`)
	for _, step := range []struct {
		script string
		wantOK bool
	}{ // in order: later steps use what earlier ones made
		{"cat " + v.mnt + "/public", true},
		{"cat " + v.mnt + "/secret", false},
		{"echo x > " + v.mnt + "/public", false},
		{"touch " + v.mnt + "/new", false},
		{"echo mine > " + v.mnt + "/shared/f", true},
		{"chmod 600 " + v.mnt + "/shared/f", true},
		{"chown 0 " + v.mnt + "/shared/f", false},
		{"rm -f " + v.mnt + "/secret", false},
		{"cat " + v.mnt + "/shared/f | grep -q mine", true},
	} {
		if err := asNobody(step.script); (err == nil) != step.wantOK {
			t.Errorf("as nobody, %q: err=%v, want success=%v", step.script, err, step.wantOK)
		}
	}
	// Owners are recorded: the file nobody created belongs to nobody.
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(v.mnt, "shared/f"), &st); err != nil || st.Uid != 65534 {
		t.Fatalf("owner of a file nobody created: uid %d, %v", st.Uid, err)
	}
	v.umount(t)
}

// Usage mistakes exit 2 with one line, whatever urfave/cli would have done.
func TestUsageExitCodes(t *testing.T) {
	for _, args := range [][]string{{"frobnicate"}, {"init", "--bogus"}, {"mount", "--nope", "x"}} {
		r := fincrypt(t, nil, args...)
		if r.code != exitUsage || strings.Count(strings.TrimRight(r.stderr, "\n"), "\n") != 0 {
			t.Errorf("fincrypt %v: exit %d, stderr %q; want exit %d and one line", args, r.code, r.stderr, exitUsage)
		}
	}
	if r := fincrypt(t, nil, "id"); r.code != exitUsage {
		t.Errorf("id without --dir: exit %d", r.code)
	}
}
