package fs_test

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

func mounted(t *testing.T, dir string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Contains(string(b), " "+dir+" ")
}

// TestDetachBusy: Unmount fails while a file is open; Detach frees the
// mount point at once, the open file keeps working, and the file system
// shuts down cleanly when it is closed.
func TestDetachBusy(t *testing.T) {
	requireFUSE(t)
	home := newVault(t, fastKDF)
	tm := mountVault(t, home)
	data := randBytes(3, 100000)
	writeFile(t, tm.path("a"), data)
	f, err := os.OpenFile(tm.path("a"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := tm.m.Unmount(); err == nil {
		t.Fatal("Unmount succeeded with a file open")
	}
	if err := tm.m.Detach(); err != nil {
		t.Fatal(err)
	}
	if mounted(t, tm.dir) {
		t.Fatal("still in the mount table after Detach")
	}
	got := make([]byte, len(data))
	if _, err := f.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "read after detach", got, data)
	if _, err := f.WriteAt([]byte("tail"), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { tm.m.Wait(); close(done) }()
	f.Close()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the file system did not shut down after the last file was closed")
	}
	tm.done = true
	tm.v.Close()
	checkVault(t, home)
	tm = mountVault(t, home)
	mustEqual(t, "after remount", readFile(t, tm.path("a")), append(data, "tail"...))
}

// TestUnmountedFromOutside: after umount(2) by someone else, Wait returns and
// Unmount reports success (the CLI calls it in that case too).
func TestUnmountedFromOutside(t *testing.T) {
	requireFUSE(t)
	home := newVault(t, fastKDF)
	tm := mountVault(t, home)
	writeFile(t, tm.path("a"), []byte("kept"))
	done := make(chan struct{})
	go func() { tm.m.Wait(); close(done) }()
	if err := syscall.Unmount(tm.dir, 0); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Wait did not return after an outside unmount")
	}
	if err := tm.m.Unmount(); err != nil {
		t.Fatalf("Unmount after an outside unmount: %v", err)
	}
	tm.done = true
	tm.v.Close()
	checkVault(t, home)
}
