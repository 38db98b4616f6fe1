package fs_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fincrypt/fincrypt/backup"
	fincryptfs "github.com/fincrypt/fincrypt/fs"
	"github.com/fincrypt/fincrypt/internal/treetest"
	"github.com/fincrypt/fincrypt/meta"
	"github.com/fincrypt/fincrypt/vault"
)

// offlineRepo opens the unmounted vault in home for fn (a change keeps the
// clean-unmount record true, as the CLI does).
func offlineRepo(t *testing.T, home string, fn func(repo backup.Repo) error) {
	t.Helper()
	v, err := vault.Open(home, testPassword, vault.OpenOptions{Lock: true})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	idx, store, err := fincryptfs.OpenOffline(v, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer idx.Close()
	if err := fincryptfs.ChangeOffline(v, idx, func() error {
		return fn(backup.Repo{Keys: v.Keys, Index: idx, Store: store})
	}); err != nil {
		t.Fatal(err)
	}
}

// storeBytes is what the local chunk store holds.
func storeBytes(t *testing.T, repo backup.Repo) int64 {
	t.Helper()
	var n int64
	err := repo.Store.List(func(id meta.ChunkID) error {
		s, err := repo.Store.Size(id)
		n += s
		return err
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func versionSnapshots(t *testing.T, repo backup.Repo) []backup.Snapshot {
	t.Helper()
	all, err := backup.Snapshots(repo.Index)
	if err != nil {
		t.Fatal(err)
	}
	var out []backup.Snapshot
	for _, s := range all {
		if s.Source == backup.SourceMount {
			out = append(out, s)
		}
	}
	return out
}

// TestMountVersions: the mount records a version of its tree by itself
// (every VersionInterval) and on demand; after files are overwritten,
// deleted and renamed, and the chunks they dropped had every chance to be
// deleted, the old version still reads under MOUNT/.snapshots (contents,
// modes, symlinks, xattrs, a sparse file, hard links sharing one inode with
// their link count; writes there are EROFS), restores byte-identical with
// its metadata, and `check` is clean. Forget of the old version frees the
// chunks only it kept (the store shrinks), and the kept version still
// restores as the mount is.
func TestMountVersions(t *testing.T) {
	requireFUSE(t)
	home := newVault(t, vault.CreateOptions{ChunkSize: 64 << 10})
	tm := mountVaultOpt(t, home, fincryptfs.Options{SyncInterval: 50 * time.Millisecond})
	old1 := seededBytes(1, 200<<10) // four chunks
	if err := os.MkdirAll(tm.path("a", "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, tm.path("a", "one"), old1)
	writeFile(t, tm.path("a", "two"), []byte("two, to be deleted"))
	if err := os.Chmod(tm.path("a", "two"), 0o600); err != nil {
		t.Fatal(err)
	}
	writeFile(t, tm.path("a", "sub", "deep"), seededBytes(2, 70<<10))
	writeFile(t, tm.path("a", "link1"), []byte("linked"))
	if err := os.Link(tm.path("a", "link1"), tm.path("a", "link2")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("one", tm.path("a", "sym")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(tm.path("a", "one"), "user.note", []byte("kept"), 0); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(tm.path("sparse"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("after a hole"), 300<<10); err != nil {
		t.Fatal(err)
	}
	f.Close()
	// Times set here, not by the writes: the kernel's view of a time a
	// write set may differ from the index's in its last digits.
	pinTimes(t, tm.path("a", "one"), tm.path("a", "two"), tm.path("a", "sub", "deep"), tm.path("a", "link1"), tm.path("sparse"))
	want1 := treetest.Describe(t, tm.dir)
	// The interval's version, recorded by a mount that changes nothing, so
	// that it holds everything above. (Written in that mount, the tree
	// took a version tick between two writes when a loaded machine
	// stretched them past 200 ms: a version of half of it, then another,
	// and .snapshots listed 3 entries at the end, not 2.)
	tm.unmount()
	tm = mountVaultOpt(t, home, fincryptfs.Options{VersionInterval: 200 * time.Millisecond, SyncInterval: 50 * time.Millisecond})
	deadline := time.Now().Add(60 * time.Second)
	var v1dir string
	for v1dir == "" {
		if time.Now().After(deadline) {
			t.Fatal("no version of the mount within 60 s of an interval of 200 ms")
		}
		ents, _ := os.ReadDir(tm.path(fincryptfs.SnapshotsDirName))
		if len(ents) > 0 {
			if _, err := os.Stat(tm.path(fincryptfs.SnapshotsDirName, ents[len(ents)-1].Name(), "sparse")); err == nil {
				v1dir = tm.path(fincryptfs.SnapshotsDirName, ents[len(ents)-1].Name())
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	tm.unmount()

	// Versions on demand from here; the changes.
	tm = mountVaultOpt(t, home, fincryptfs.Options{SyncInterval: 50 * time.Millisecond})
	rep, err := tm.m.TakeVersion(false)
	if err != nil || !rep.Unchanged {
		t.Fatalf("a version of the unchanged mount: %+v %v", rep, err)
	}
	new1 := seededBytes(3, 150<<10)
	writeFile(t, tm.path("a", "one"), new1)
	pinTimes(t, tm.path("a", "one"))
	if err := os.Remove(tm.path("a", "two")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tm.path("a", "sub"), tm.path("moved")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(tm.path("a", "link2")); err != nil {
		t.Fatal(err)
	}
	rep, err = tm.m.TakeVersion(false)
	if err != nil || rep.Snapshot == "" {
		t.Fatalf("second version: %+v %v", rep, err)
	}
	if rep.NewChunks != 3 {
		t.Errorf("second version pinned %d new chunks, want the 3 of the rewritten file", rep.NewChunks)
	}
	// Give the mount every chance to delete what the files dropped: a
	// sync (fsync of a file) deletes the chunks superseded before it.
	g, err := os.OpenFile(tm.path("a", "one"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Sync(); err != nil {
		t.Fatal(err)
	}
	g.Close()
	want2 := treetest.Describe(t, tm.dir)
	delete(want2, fincryptfs.SnapshotsDirName)

	// The first version, read from .snapshots.
	ents, err := os.ReadDir(tm.path(fincryptfs.SnapshotsDirName))
	if err != nil || len(ents) != 2 {
		t.Fatalf(".snapshots lists %d entries (%v), want 2", len(ents), err)
	}
	v1dir = tm.path(fincryptfs.SnapshotsDirName, filepath.Base(v1dir))
	treetest.Same(t, "the first version under .snapshots", treetest.Describe(t, v1dir), want1)
	mustEqual(t, "a/one of the first version", readFile(t, filepath.Join(v1dir, "a", "one")), old1)
	if b := make([]byte, 16); true {
		n, err := unix.Getxattr(filepath.Join(v1dir, "a", "one"), "user.note", b)
		if err != nil || string(b[:n]) != "kept" {
			t.Errorf("xattr of a/one in the first version: %q %v", b[:n], err)
		}
	}
	var st1, st2 syscall.Stat_t
	if err := syscall.Lstat(filepath.Join(v1dir, "a", "link1"), &st1); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Lstat(filepath.Join(v1dir, "a", "link2"), &st2); err != nil {
		t.Fatal(err)
	}
	if st1.Ino != st2.Ino || st1.Nlink != 2 || st2.Nlink != 2 {
		t.Errorf("hard links in the version: inodes %d and %d, links %d and %d; want one inode, 2 links", st1.Ino, st2.Ino, st1.Nlink, st2.Nlink)
	}
	err = os.WriteFile(filepath.Join(v1dir, "a", "one"), []byte("x"), 0o644)
	wantErrno(t, "write in a version", err, syscall.EROFS)
	err = os.Remove(filepath.Join(v1dir, "a", "two"))
	wantErrno(t, "unlink in a version", err, syscall.EROFS)
	tm.unmount()
	checkVault(t, home)

	// Restore the first version, then forget it.
	offlineRepo(t, home, func(repo backup.Repo) error {
		vs := versionSnapshots(t, repo)
		if len(vs) != 2 {
			t.Fatalf("%d versions, want 2", len(vs))
		}
		dir := t.TempDir()
		res, err := backup.Restore(context.Background(), repo, vs[0], backup.RestoreOptions{Target: dir})
		if err != nil {
			return err
		}
		treetest.Same(t, "the first version restored", treetest.Describe(t, dir), want1)
		if res.Links != 1 {
			t.Errorf("restore made %d hard links, want 1", res.Links)
		}
		var a, b syscall.Stat_t
		syscall.Lstat(filepath.Join(dir, "a", "link1"), &a)
		syscall.Lstat(filepath.Join(dir, "a", "link2"), &b)
		if a.Ino != b.Ino {
			t.Error("restored hard links are separate files")
		}
		if _, err := backup.Restore(context.Background(), repo, vs[0], backup.RestoreOptions{Target: dir}); !errors.Is(err, backup.ErrExists) {
			t.Errorf("a restore over existing files without overwrite: %v, want ErrExists", err)
		}
		before := storeBytes(t, repo)
		fr, err := backup.Forget(repo, backup.Policy{Last: 1}, false)
		if err != nil {
			return err
		}
		if len(fr.Forget) != 1 || fr.Forget[0].ID != vs[0].ID || fr.Sweep.Pins == 0 {
			t.Fatalf("forget: %+v", fr)
		}
		after := storeBytes(t, repo)
		if after >= before-int64(len(old1)) {
			t.Errorf("the store holds %d bytes after forget, %d before: want at least the %d of the old a/one freed", after, before, len(old1))
		}
		dir2 := t.TempDir()
		if _, err := backup.Restore(context.Background(), repo, vs[1], backup.RestoreOptions{Target: dir2}); err != nil {
			return err
		}
		treetest.Same(t, "the kept version restored", treetest.Describe(t, dir2), want2)
		return nil
	})
	checkVault(t, home)

	// check knows the pins: a pinned chunk lost from the store is reported.
	offlineRepo(t, home, func(repo backup.Repo) error {
		var victim meta.ChunkID
		found := false
		err := repo.Index.Pins(func(id meta.ChunkID, p meta.Pin) error {
			if !found {
				victim, found = id, true
			}
			return nil
		})
		if err != nil || !found {
			t.Fatalf("no pin left to lose: %v", err)
		}
		return repo.Store.Delete(victim)
	})
	v, err := vault.Open(home, testPassword, vault.OpenOptions{Lock: true})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	var out strings.Builder
	if n, err := fincryptfs.Check(v, &out); err != nil || n == 0 || !strings.Contains(out.String(), "pinned chunk") {
		t.Fatalf("check with a pinned chunk lost: %d problems, %v:\n%s", n, err, out.String())
	}
}

// seededBytes is n deterministic pseudo-random bytes.
func seededBytes(seed byte, n int) []byte {
	b := make([]byte, n)
	x := uint32(seed)*2654435761 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

// pinTimes sets the access and modification times of files to a fixed
// moment in the past.
func pinTimes(t *testing.T, paths ...string) {
	t.Helper()
	at := time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)
	for _, p := range paths {
		if err := os.Chtimes(p, at, at); err != nil {
			t.Fatal(err)
		}
	}
}
