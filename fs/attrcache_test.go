package fs_test

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fincrypt/fincrypt/backup"
	"github.com/fincrypt/fincrypt/chunkstore"
	fincryptfs "github.com/fincrypt/fincrypt/fs"
	"github.com/fincrypt/fincrypt/meta"
	"github.com/fincrypt/fincrypt/vault"
)

// lstat returns the kernel's view of p (its cache, while the timeouts run).
func lstat(t *testing.T, p string) *syscall.Stat_t {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		t.Fatalf("lstat %s: %v", p, err)
	}
	return &st
}

func stNs(ts syscall.Timespec) int64 { return ts.Nano() }

// TestKernelCacheFollowsChanges: the mount lets the kernel cache names and
// attributes for an hour (fs.DefaultTimeout), which is only right if every
// change reaches the kernel's cache through the request that made it. Each
// step caches the attributes (stat), changes them through the mount and
// stats again at once: a reply with stale attributes, or a change the
// kernel does not learn of, would show here for the rest of the hour.
func TestKernelCacheFollowsChanges(t *testing.T) {
	requireFUSE(t)
	tm := mountVault(t, newVault(t, vault.CreateOptions{ChunkSize: 4096}))
	old := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	d, f := tm.path("d"), tm.path("d", "f")
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, f, []byte("abc"))
	if err := os.Chtimes(f, old, old); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(d, old, old); err != nil {
		t.Fatal(err)
	}
	check := func(what string, p string, ok func(st *syscall.Stat_t) bool) {
		t.Helper()
		if st := lstat(t, p); !ok(st) {
			t.Fatalf("%s: stale or wrong attributes of %s: %+v", what, p, *st)
		}
	}
	check("cached", f, func(st *syscall.Stat_t) bool { return st.Size == 3 && stNs(st.Mtim) == old.UnixNano() })
	check("cached", d, func(st *syscall.Stat_t) bool { return st.Nlink == 2 && stNs(st.Mtim) == old.UnixNano() })

	// Data through another open: size and mtime.
	a, err := os.OpenFile(f, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Write([]byte("defgh")); err != nil {
		t.Fatal(err)
	}
	check("append (open)", f, func(st *syscall.Stat_t) bool { return st.Size == 8 && stNs(st.Mtim) > old.UnixNano() })
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	check("append (closed)", f, func(st *syscall.Stat_t) bool { return st.Size == 8 && stNs(st.Mtim) > old.UnixNano() })
	if err := os.Truncate(f, 2); err != nil {
		t.Fatal(err)
	}
	check("truncate", f, func(st *syscall.Stat_t) bool { return st.Size == 2 })
	if err := os.WriteFile(f, []byte("0123456789"), 0o644); err != nil { // O_TRUNC, then a write
		t.Fatal(err)
	}
	check("rewrite", f, func(st *syscall.Stat_t) bool { return st.Size == 10 })
	mustEqual(t, "rewritten file", readFile(t, f), []byte("0123456789"))

	// Mode, owner, times.
	if err := os.Chmod(f, 0o600); err != nil {
		t.Fatal(err)
	}
	check("chmod", f, func(st *syscall.Stat_t) bool { return st.Mode&0o7777 == 0o600 })
	if err := os.Lchown(f, 1234, 5678); err != nil {
		t.Fatal(err)
	}
	check("chown", f, func(st *syscall.Stat_t) bool { return st.Uid == 1234 && st.Gid == 5678 })
	if err := os.Chtimes(f, old, old); err != nil {
		t.Fatal(err)
	}
	check("utimes", f, func(st *syscall.Stat_t) bool { return stNs(st.Mtim) == old.UnixNano() })

	// Links: the count and ctime of the inode, by either name.
	ctime := stNs(lstat(t, f).Ctim)
	g := tm.path("g")
	if err := os.Link(f, g); err != nil {
		t.Fatal(err)
	}
	check("link", f, func(st *syscall.Stat_t) bool { return st.Nlink == 2 && stNs(st.Ctim) >= ctime })
	if err := os.Remove(g); err != nil {
		t.Fatal(err)
	}
	check("unlink of the other name", f, func(st *syscall.Stat_t) bool { return st.Nlink == 1 })
	if err := unix.Setxattr(f, "user.k", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	ctime = stNs(lstat(t, f).Ctim)
	if err := unix.Setxattr(f, "user.k", []byte("w"), 0); err != nil {
		t.Fatal(err)
	}
	check("setxattr", f, func(st *syscall.Stat_t) bool { return stNs(st.Ctim) >= ctime })

	// Directories: nlink and mtime of the parent.
	if err := os.Mkdir(filepath.Join(d, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	check("mkdir", d, func(st *syscall.Stat_t) bool { return st.Nlink == 3 && stNs(st.Mtim) > old.UnixNano() })
	if err := os.Remove(filepath.Join(d, "sub")); err != nil {
		t.Fatal(err)
	}
	check("rmdir", d, func(st *syscall.Stat_t) bool { return st.Nlink == 2 })

	// Names: a rename, a rename over an open file, a name reused for
	// another type.
	ino := lstat(t, f).Ino
	f2 := tm.path("f2")
	if err := os.Rename(f, f2); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(f); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("old name after rename: %v", err)
	}
	check("renamed", f2, func(st *syscall.Stat_t) bool { return st.Ino == ino })
	victim, err := os.Open(f2)
	if err != nil {
		t.Fatal(err)
	}
	defer victim.Close()
	writeFile(t, tm.path("new"), []byte("new"))
	if err := os.Rename(tm.path("new"), f2); err != nil {
		t.Fatal(err)
	}
	var vst syscall.Stat_t
	if err := syscall.Fstat(int(victim.Fd()), &vst); err != nil || vst.Nlink != 0 {
		t.Fatalf("the replaced file: nlink %d, %v", vst.Nlink, err)
	}
	check("rename over", f2, func(st *syscall.Stat_t) bool { return st.Ino != ino && st.Size == 3 })
	mustEqual(t, "rename over", readFile(t, f2), []byte("new"))
	if err := os.Remove(filepath.Join(d)); err != nil {
		t.Fatal(err)
	}
	writeFile(t, d, []byte("now a file"))
	check("dir replaced by a file", d, func(st *syscall.Stat_t) bool { return st.Mode&syscall.S_IFMT == syscall.S_IFREG && st.Size == 10 })
	if err := os.Remove(d); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(d); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("removed file: %v", err)
	}
}

// TestSnapshotViewNotCachedLong: the snapshot view changes without a
// request through the kernel (a backup run by the mount's process adds a
// snapshot), so it keeps a short cache time although the tree's is an hour.
// A missing .snapshots, looked up before the first backup, must show once
// one is made, and so must each new snapshot in it.
func TestSnapshotViewNotCachedLong(t *testing.T) {
	requireFUSE(t)
	home := newVault(t, vault.CreateOptions{ChunkSize: 4096})
	var repo backup.Repo
	tm := mountVaultOpt(t, home, fincryptfs.Options{Attach: func(idx *meta.Index, store *chunkstore.Store) (io.Closer, error) {
		v, err := vault.Open(home, testPassword, vault.OpenOptions{})
		if err != nil {
			return nil, err
		}
		repo = backup.Repo{Keys: v.Keys, Index: idx, Store: store}
		return io.NopCloser(nil), nil
	}})
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "doc"), []byte("doc"))
	snap := tm.path(".snapshots")
	if _, err := os.Lstat(snap); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf(".snapshots before any backup: %v", err)
	}
	waitNames := func(what string, n int) []os.DirEntry {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			ents, err := os.ReadDir(snap)
			if err == nil && len(ents) == n {
				return ents
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: .snapshots lists %d entries (%v), want %d", what, len(ents), err, n)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if _, err := backup.Run(context.Background(), repo, backup.Options{Paths: []string{src}, Time: at}); err != nil {
		t.Fatal(err)
	}
	ents := waitNames("first snapshot", 1)
	first := filepath.Join(snap, ents[0].Name())
	if _, err := os.Lstat(first); err != nil {
		t.Fatal(err)
	}
	// The second snapshot's name, looked up (missing) before it exists.
	second := filepath.Join(snap, at.Add(time.Hour).UTC().Format(fincryptfs.SnapshotTimeFormat))
	if _, err := os.Lstat(second); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the second snapshot before it is made: %v", err)
	}
	if _, err := backup.Run(context.Background(), repo, backup.Options{Paths: []string{src}, Time: at.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	waitNames("second snapshot", 2)
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := os.Lstat(second)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the second snapshot, listed, is still missing by name: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	mustEqual(t, "a file of the second snapshot", readFile(t, filepath.Join(second, src, "doc")), []byte("doc"))
}

// TestReadOnlyOpenLoadsAheadNotStale: a read-only open starts loading the
// file's first chunk before the first read (and its close sends no FLUSH).
// A change committed between the open and the read must win over what was
// loaded, whether the change rewrote the chunk or truncated it away; and a
// file opened and closed unread, or read while a writer holds unsaved data,
// stays whole.
func TestReadOnlyOpenLoadsAheadNotStale(t *testing.T) {
	requireFUSE(t)
	const cs = 4096
	home := newVault(t, vault.CreateOptions{ChunkSize: cs})
	tm := mountVault(t, home)
	p := tm.path("f")
	orig := randBytes(1, 3*cs)
	writeFile(t, p, orig)
	// Each round opens a reader, changes the file through a writer and
	// reads: the load ahead races with the change, so several rounds.
	cur := orig
	for round := 0; round < 12; round++ {
		r, err := os.OpenFile(p, os.O_RDONLY|syscall.O_DIRECT, 0)
		if err != nil {
			t.Fatal(err)
		}
		w, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		seed := uint64(100 + round)
		if round%2 == 1 { // truncated away, then a shorter file
			if err := w.Truncate(0); err != nil {
				t.Fatal(err)
			}
			cur = nil
		}
		// Two chunks rewritten: the second, committed last, is then the
		// file's cached chunk, so the first comes from the load ahead
		// (which must be found stale) or the store.
		data := randBytes(seed, 2*cs)
		if _, err := w.WriteAt(data, 0); err != nil {
			t.Fatal(err)
		}
		if len(cur) < len(data) {
			cur = append(cur, make([]byte, len(data)-len(cur))...)
		}
		cur = append(append([]byte(nil), data...), cur[len(data):]...)
		if err := w.Sync(); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		mustEqual(t, "read after a change since the open", readDirect(t, r, 0, cs), cur[:cs])
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
	}
	mustEqual(t, "the file after the rounds", readFile(t, p), cur)
	// Unsaved data of a writer: a reader's open, read and close (no FLUSH)
	// neither loses it nor serves what the index held before it.
	w, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fresh := randBytes(4, 100)
	if _, err := w.WriteAt(fresh, 10); err != nil {
		t.Fatal(err)
	}
	want := append([]byte(nil), cur...)
	copy(want[10:], fresh)
	for i := 0; i < 3; i++ {
		r, err := os.OpenFile(p, os.O_RDONLY|syscall.O_DIRECT, 0)
		if err != nil {
			t.Fatal(err)
		}
		if i > 0 {
			mustEqual(t, "read beside a writer", readDirect(t, r, 0, cs), want[:cs])
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	// Many files opened and closed unread, then an unmount: the loads
	// ahead end with their handles, and every file reads back whole.
	for i := 0; i < 50; i++ {
		writeFile(t, tm.path("u"+strconv.Itoa(i)), randBytes(uint64(10+i), cs+i))
	}
	for i := 0; i < 50; i++ {
		f, err := os.Open(tm.path("u" + strconv.Itoa(i)))
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	tm.unmount()
	tm = mountVault(t, home)
	mustEqual(t, "the written file after a remount", readFile(t, tm.path("f")), want)
	for i := 0; i < 50; i++ {
		mustEqual(t, "an unread file after a remount", readFile(t, tm.path("u"+strconv.Itoa(i))), randBytes(uint64(10+i), cs+i))
	}
	tm.unmount()
	checkVault(t, home)
}

// TestAttrAfterTheWorkerCommitsTimes: a reply for an open file whose
// inode was read before the sealing worker committed the file's times
// (CI's -race run: an append's mtime went back to the old one) carries
// the committed times, not the caller's.
func TestAttrAfterTheWorkerCommitsTimes(t *testing.T) {
	requireFUSE(t)
	tm := mountVault(t, newVault(t, vault.CreateOptions{ChunkSize: 4096}))
	f := tm.path("f")
	old := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	writeFile(t, f, []byte("abc"))
	if err := os.Chtimes(f, old, old); err != nil {
		t.Fatal(err)
	}
	if err := tm.m.WaitIdle(time.Minute); err != nil {
		t.Fatal(err)
	}
	ino := lstat(t, f).Ino
	a, err := os.OpenFile(f, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	hold := tm.m.HoldSealing()
	if _, err := a.Write(make([]byte, 4096-3)); err != nil { // fills chunk 0: queued for sealing
		hold()
		t.Fatal(err)
	}
	stale, err := tm.m.Index().GetInode(ino)
	if err != nil || stale.Mtime != old.UnixNano() {
		hold()
		t.Fatalf("the index before the commit: %+v, %v", stale, err)
	}
	hold()
	deadline := time.Now().Add(time.Minute)
	for {
		in, err := tm.m.Index().GetInode(ino)
		if err != nil {
			t.Fatal(err)
		}
		if in.Mtime > old.UnixNano() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the worker did not commit the append's times within a minute")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := tm.m.MtimeAs(&stale); got <= old.UnixNano() {
		t.Fatalf("a reply built from an inode read before the commit has mtime %v, the old one", time.Unix(0, got).UTC())
	}
}
