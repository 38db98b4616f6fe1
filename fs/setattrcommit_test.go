package fs_test

import (
	"os"
	"syscall"
	"testing"
	"time"
)

// TestOpenFileSetattrRidesOnItsCommit: a chmod, chown and utimens on an open
// file (what tar does to each file it extracts, on the handle it wrote
// with) are not committed on their own: stat shows them at once, the
// file's close commits them with its data, and an fsync of the file before
// its close commits them too (the index then holds them before fsync
// returns). What was committed reads back after a remount.
func TestOpenFileSetattrRidesOnItsCommit(t *testing.T) {
	requireFUSE(t)
	if os.Geteuid() != 0 {
		t.Skip("chown needs root")
	}
	tm := mountVault(t, newVault(t, fastKDF))
	mtime := time.Date(2020, 5, 17, 10, 0, 0, 0, time.UTC)
	const uid, gid = 4321, 8765
	// set writes, then sets mode, owner and times on the handle, as tar x.
	set := func(name string) (*os.File, uint64) {
		t.Helper()
		f, err := os.OpenFile(tm.path(name), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write([]byte("some data of " + name)); err != nil {
			t.Fatal(err)
		}
		if err := f.Chown(uid, gid); err != nil {
			t.Fatal(err)
		}
		if err := f.Chmod(0o640); err != nil {
			t.Fatal(err)
		}
		ts := []syscall.Timespec{syscall.NsecToTimespec(mtime.UnixNano()), syscall.NsecToTimespec(mtime.UnixNano())}
		if err := syscall.UtimesNano(tm.path(name), ts); err != nil {
			t.Fatal(err)
		}
		st, err := f.Stat()
		if err != nil {
			t.Fatal(err)
		}
		return f, st.Sys().(*syscall.Stat_t).Ino
	}
	want := func(where, name string, ino uint64) {
		t.Helper()
		in, err := tm.m.Index().GetInode(ino)
		if err != nil {
			t.Fatalf("%s: %s: %v", where, name, err)
		}
		if in.Mode&0o7777 != 0o640 || in.Uid != uid || in.Gid != gid || in.Mtime != mtime.UnixNano() || in.Atime != mtime.UnixNano() {
			t.Errorf("%s: %s in the index: mode %o uid %d gid %d mtime %v atime %v, want 640 %d %d %v",
				where, name, in.Mode&0o7777, in.Uid, in.Gid, time.Unix(0, in.Mtime).UTC(), time.Unix(0, in.Atime).UTC(), uid, gid, mtime)
		}
	}
	stat := func(where, name string) {
		t.Helper()
		var st syscall.Stat_t
		if err := syscall.Stat(tm.path(name), &st); err != nil {
			t.Fatal(err)
		}
		if st.Mode&0o7777 != 0o640 || st.Uid != uid || st.Gid != gid || st.Mtim.Nano() != mtime.UnixNano() || st.Size == 0 {
			t.Errorf("%s: stat %s: mode %o uid %d gid %d mtime %v size %d, want 640 %d %d %v",
				where, name, st.Mode&0o7777, st.Uid, st.Gid, time.Unix(0, st.Mtim.Nano()).UTC(), st.Size, uid, gid, mtime)
		}
	}

	// Closed: the release commits them.
	f, ino := set("closed")
	stat("open", "closed")
	if in, err := tm.m.Index().GetInode(ino); err == nil && in.Mode&0o7777 == 0o640 {
		t.Log("the chmod of an open file was committed before its close")
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tm.m.WaitIdle(time.Minute); err != nil {
		t.Fatal(err)
	}
	want("after close", "closed", ino)

	// Fsynced while open: in the index when fsync returns.
	f, ino2 := set("fsynced")
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	want("after fsync", "fsynced", ino2)
	// A write after the SETATTR sets the times again, and keeps the rest.
	if _, err := f.Write([]byte("more")); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tm.m.WaitIdle(time.Minute); err != nil {
		t.Fatal(err)
	}
	in, err := tm.m.Index().GetInode(ino2)
	if err != nil {
		t.Fatal(err)
	}
	if in.Mode&0o7777 != 0o640 || in.Uid != uid || in.Mtime <= mtime.UnixNano() {
		t.Errorf("written after its utimens: mode %o uid %d mtime %v, want 640 %d and a time after %v",
			in.Mode&0o7777, in.Uid, time.Unix(0, in.Mtime).UTC(), uid, mtime)
	}

	// A file with nothing else unsaved (written and closed before): an
	// fsync of its chmod alone commits it.
	writeFile(t, tm.path("old"), []byte("old data"))
	if err := tm.m.WaitIdle(time.Minute); err != nil {
		t.Fatal(err)
	}
	f, err = os.OpenFile(tm.path("old"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Chmod(0o600); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if in, err := tm.m.Index().GetInode(st.Sys().(*syscall.Stat_t).Ino); err != nil || in.Mode&0o7777 != 0o600 {
		t.Errorf("a chmod alone, fsynced: mode %o in the index (%v), want 600", in.Mode&0o7777, err)
	}
	f.Close()

	tm.unmount()
	checkVault(t, tm.home)
	tm = mountVault(t, tm.home)
	stat("after a remount", "closed")
}
