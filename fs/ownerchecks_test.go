package fs_test

import (
	"errors"
	"os"
	"runtime"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// withoutCaps runs f on a thread of its own whose effective capabilities are
// all dropped (capabilities and supplementary groups are per thread): a root
// caller without CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER and
// CAP_CHOWN, as a service with an empty capability set or a container's root
// is, whose supplementary groups are groups. The thread's permitted set is
// kept, so it gets them back after f, then its groups; if that fails, the
// thread is left locked and dies with its goroutine.
func withoutCaps(t *testing.T, groups []int, f func()) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var saved [2]unix.CapUserData
		if err := unix.Capget(&hdr, &saved[0]); err != nil {
			done <- err
			return
		}
		savedGroups, err := unix.Getgroups()
		if err != nil {
			done <- err
			return
		}
		// x/sys/unix's setgroups is the raw call: this thread only.
		if err := unix.Setgroups(groups); err != nil {
			done <- err
			return
		}
		none := saved
		none[0].Effective, none[1].Effective = 0, 0
		if err := unix.Capset(&hdr, &none[0]); err != nil {
			done <- err
			return
		}
		f()
		if err := unix.Capset(&hdr, &saved[0]); err != nil {
			done <- err
			return // the thread keeps its dropped set and exits with the goroutine
		}
		if err := unix.Setgroups(savedGroups); err != nil {
			done <- err
			return
		}
		runtime.UnlockOSThread()
		done <- nil
	}()
	if err := <-done; err != nil {
		t.Fatalf("capabilities: %v", err)
	}
}

// TestOwnerOnlyMountKeepsKernelChecks: a mount without allow_other still
// has the kernel check mode bits and owners (default_permissions) for every
// caller it lets in. Without allow_other the kernel lets in only callers
// whose user and group ids are the mounting user's; they still differ in
// capabilities and supplementary groups. Here root without its
// capabilities must be refused what a non-root user would be, including
// through a directory entry the kernel already cached (a walk through a
// cached entry sends no request: only the kernel's own check stops it).
// Dropping default_permissions (to spare the GETATTR of a directory the
// kernel sends before the next create in it) fails this test.
func TestOwnerOnlyMountKeepsKernelChecks(t *testing.T) {
	requireFUSE(t)
	tm := mountVault(t, newVault(t, fastKDF))
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// A directory of nobody's that only nobody may enter, a file in it,
	// and a read-only file of nobody's at the top; root reads both (with
	// its capabilities), so the kernel caches their entries.
	must(os.Mkdir(tm.path("closed"), 0o700))
	writeFile(t, tm.path("closed", "f"), []byte("inside\n"))
	must(os.Chown(tm.path("closed", "f"), nobody, nobody))
	must(os.Chown(tm.path("closed"), nobody, nobody))
	writeFile(t, tm.path("ro"), []byte("read-only\n"))
	must(os.Chmod(tm.path("ro"), 0o444))
	must(os.Chown(tm.path("ro"), nobody, nobody))
	mustEqual(t, "root reads inside", readFile(t, tm.path("closed", "f")), []byte("inside\n"))
	mustEqual(t, "root reads ro", readFile(t, tm.path("ro")), []byte("read-only\n"))

	var got struct {
		readRO                              error
		roData                              []byte
		readInside, createInside, list      error
		writeRO, chmodRO, chownRO, utimesRO error
		removeInside, renameInside, truncRO error
	}
	withoutCaps(t, nil, func() {
		got.roData, got.readRO = os.ReadFile(tm.path("ro"))
		_, got.readInside = os.ReadFile(tm.path("closed", "f"))
		got.createInside = os.WriteFile(tm.path("closed", "new"), nil, 0o644)
		_, got.list = os.ReadDir(tm.path("closed"))
		got.removeInside = os.Remove(tm.path("closed", "f"))
		got.renameInside = os.Rename(tm.path("closed", "f"), tm.path("moved"))
		var f *os.File
		if f, got.writeRO = os.OpenFile(tm.path("ro"), os.O_WRONLY, 0); got.writeRO == nil {
			f.Close()
		}
		got.truncRO = os.Truncate(tm.path("ro"), 0)
		got.chmodRO = os.Chmod(tm.path("ro"), 0o666)
		got.chownRO = os.Chown(tm.path("ro"), 0, 0)
		// Setting explicit times needs ownership (UTIME_NOW would need
		// write permission only).
		got.utimesRO = unix.UtimesNano(tm.path("ro"), []unix.Timespec{{Sec: 1}, {Sec: 1}})
	})
	// What any user may do works: the caller is let in, not refused wholesale.
	if got.readRO != nil || string(got.roData) != "read-only\n" {
		t.Fatalf("root without capabilities reading a 0444 file: %q, %v", got.roData, got.readRO)
	}
	for _, c := range []struct {
		what string
		err  error
		want syscall.Errno
	}{
		{"reading a file through nobody's 0700 directory (cached entries)", got.readInside, syscall.EACCES},
		{"creating in nobody's 0700 directory", got.createInside, syscall.EACCES},
		{"listing nobody's 0700 directory", got.list, syscall.EACCES},
		{"removing from nobody's 0700 directory", got.removeInside, syscall.EACCES},
		{"renaming out of nobody's 0700 directory", got.renameInside, syscall.EACCES},
		{"opening nobody's 0444 file for writing", got.writeRO, syscall.EACCES},
		{"truncating nobody's 0444 file", got.truncRO, syscall.EACCES},
		{"chmod of nobody's file", got.chmodRO, syscall.EPERM},
		{"chown of nobody's file", got.chownRO, syscall.EPERM},
		{"setting the times of nobody's file", got.utimesRO, syscall.EPERM},
	} {
		if !errors.Is(c.err, c.want) {
			t.Errorf("root without capabilities, %s: %v, want %v", c.what, c.err, c.want)
		}
	}
	// Nothing changed.
	if b, err := os.ReadFile(tm.path("closed", "f")); err != nil || string(b) != "inside\n" {
		t.Errorf("closed/f after the refusals: %q, %v", b, err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(tm.path("ro"), &st); err != nil || st.Mode&0o7777 != 0o444 || st.Uid != nobody || st.Size != int64(len("read-only\n")) {
		t.Errorf("ro after the refusals: mode %o uid %d size %d, %v", st.Mode&0o7777, st.Uid, st.Size, err)
	}
	if _, err := os.Stat(tm.path("closed", "new")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("closed/new: %v, want it missing", err)
	}

	// Callers the kernel lets in may differ in their supplementary groups:
	// a directory open to its group is entered by a caller in that group
	// and refused to one outside it, through the same cached entries.
	const group = 4242
	must(os.Mkdir(tm.path("team"), 0o750))
	writeFile(t, tm.path("team", "f"), []byte("team\n"))
	must(os.Chmod(tm.path("team", "f"), 0o640))
	must(os.Chown(tm.path("team", "f"), nobody, group))
	must(os.Chown(tm.path("team"), nobody, group))
	mustEqual(t, "root reads team/f", readFile(t, tm.path("team", "f")), []byte("team\n"))
	var inGroup, outside error
	var data []byte
	withoutCaps(t, []int{group}, func() { data, inGroup = os.ReadFile(tm.path("team", "f")) })
	withoutCaps(t, nil, func() { _, outside = os.ReadFile(tm.path("team", "f")) })
	if inGroup != nil || string(data) != "team\n" {
		t.Errorf("a caller in the directory's group reading team/f: %q, %v", data, inGroup)
	}
	if !errors.Is(outside, syscall.EACCES) {
		t.Errorf("a caller outside the directory's group reading team/f: %v, want %v", outside, syscall.EACCES)
	}
}
