package fs_test

import (
	"os"
	"strconv"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fincrypt/fincrypt/fs"
)

// TestKillPrivSetID: the mount clears set-id bits itself (it negotiates
// FUSE_HANDLE_KILLPRIV_V2, so the kernel no longer does): a write or
// truncate by a user without CAP_FSETID drops set-user-ID, and set-group-ID
// when the group may execute; root's write keeps them; a chown or chgrp
// drops them.
func TestKillPrivSetID(t *testing.T) {
	requireFUSE(t)
	tm := mountVaultOpt(t, newVault(t, fastKDF), fs.Options{AllowOther: true})
	openUp(t, tm.dir)
	mk := func(name string, mode os.FileMode, uid int) {
		t.Helper()
		writeFile(t, tm.path(name), []byte("data\n"))
		if err := os.Chown(tm.path(name), uid, uid); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(tm.path(name), mode); err != nil {
			t.Fatal(err)
		}
	}
	mode := func(name string) os.FileMode {
		t.Helper()
		return os.FileMode(stat(t, tm.path(name)).Mode & 0o7777)
	}
	mk("w", os.ModeSetuid|os.ModeSetgid|0o775, nobody)
	mk("t", os.ModeSetuid|os.ModeSetgid|0o765, nobody)
	mk("r", os.ModeSetuid|os.ModeSetgid|0o755, 0)
	mk("c", os.ModeSetuid|os.ModeSetgid|0o755, 0)
	mk("g", os.ModeSetuid|os.ModeSetgid|0o755, 0)
	for _, name := range []string{"w", "t", "r", "c", "g"} {
		if m := mode(name); m&0o6000 != 0o6000 {
			t.Fatalf("%s: mode %o after chmod, want the set-id bits", name, m)
		}
	}
	if out, err := asNobody(t, "echo more >> "+tm.path("w")); err != nil {
		t.Fatalf("write as its owner: %q, %v", out, err)
	}
	if out, err := asNobody(t, ": > "+tm.path("t")); err != nil {
		t.Fatalf("truncate as its owner: %q, %v", out, err)
	}
	f, err := os.OpenFile(tm.path("r"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("root\n")); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := os.Chown(tm.path("c"), nobody, -1); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(tm.path("g"), -1, nobody); err != nil {
		t.Fatal(err)
	}
	check := func(name string, want uint32) {
		t.Helper()
		if m := uint32(stat(t, tm.path(name)).Mode & 0o7777); m != want {
			t.Errorf("%s: mode %o, want %o", name, m, want)
		}
	}
	check("w", 0o775)  // written by a user: both go (the group may execute)
	check("t", 0o2765) // truncated by a user: set-group-ID without group execute stays
	check("r", 0o6755) // written by root (CAP_FSETID): kept
	check("c", 0o755)  // chown
	check("g", 0o755)  // chgrp
	mustEqual(t, "the user's append", readFile(t, tm.path("w")), []byte("data\nmore\n"))

	// The same holds after a remount: the cleared bits were committed.
	tm.unmount()
	tm = mountVault(t, tm.home)
	check("w", 0o775)
	check("t", 0o2765)
	check("r", 0o6755)
}

// TestKillPrivSparesRequests: writing and chowning files sends a GETXATTR
// (security.capability) only before an inode's first write and its chown,
// not before every WRITE, and no GETATTR before a chown (without
// FUSE_HANDLE_KILLPRIV_V2: 4 GETXATTR and 2 GETATTR a file here). The
// GETATTR left is the directory's, whose attributes each create makes the
// kernel read again for its permission check.
func TestKillPrivSparesRequests(t *testing.T) {
	requireFUSE(t)
	ops := fs.NewOpMetrics()
	reg := prometheus.NewRegistry()
	reg.MustRegister(ops.Collectors()...)
	tm := mountVaultOpt(t, newVault(t, fastKDF), fs.Options{Metrics: ops})
	const files, writes = 20, 3
	before, _ := opCounts(t, reg)
	for i := range files {
		p := tm.path("f" + strconv.Itoa(i))
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		for range writes {
			if _, err := f.Write(make([]byte, 5000)); err != nil {
				t.Fatal(err)
			}
		}
		if err := f.Chown(nobody, nobody); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	after, _ := opCounts(t, reg)
	if n := after["write"] - before["write"]; n < files*writes {
		t.Fatalf("%v WRITE requests for %d writes: the writes did not reach the mount", n, files*writes)
	}
	if n := after["getxattr"] - before["getxattr"]; n > 2*files {
		t.Errorf("%v GETXATTR requests while writing and chowning %d files, want at most two a file", n, files)
	}
	if n := after["getattr"] - before["getattr"]; n > files {
		t.Errorf("%v GETATTR requests while writing and chowning %d files, want at most one a file", n, files)
	}
}
