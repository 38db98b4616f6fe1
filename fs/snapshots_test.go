package fs_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fincrypt/fincrypt/backup"
	"github.com/fincrypt/fincrypt/chunkstore"
	fincryptfs "github.com/fincrypt/fincrypt/fs"
	"github.com/fincrypt/fincrypt/internal/treetest"
	"github.com/fincrypt/fincrypt/meta"
	"github.com/fincrypt/fincrypt/vault"
)

// TestSnapshotView: backups made offline show under MOUNT/.snapshots, one
// directory per snapshot named by its time (a suffix for the second of the
// same second), with the backed-up paths, contents, modes, mtimes and
// symlinks; a file deleted after the first snapshot still reads from it, an
// evicted blob is fetched (a wrong one is EIO), and nothing there changes.
func TestSnapshotView(t *testing.T) {
	fincryptfs.UseFileStore(t) // works on chunk files
	requireFUSE(t)
	home, _ := vaultWithFiles(t, 1)
	src := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(src, "a", "sub"), 0o755))
	f1, gone := randBytes(1, 300<<10), randBytes(2, 3<<20+12345)
	writeFile(t, filepath.Join(src, "a", "f1"), f1)
	must(os.Chmod(filepath.Join(src, "a", "f1"), 0o640))
	writeFile(t, filepath.Join(src, "a", "run.sh"), []byte("#!/bin/sh\necho hi\n"))
	must(os.Chmod(filepath.Join(src, "a", "run.sh"), 0o4755))
	writeFile(t, filepath.Join(src, "a", "sub", "empty"), nil)
	must(os.Chmod(filepath.Join(src, "a", "sub", "empty"), 0o600))
	must(os.Symlink("../f1", filepath.Join(src, "a", "sub", "link")))
	writeFile(t, filepath.Join(src, "gone"), gone)
	must(os.Chtimes(filepath.Join(src, "a", "f1"), time.Unix(1_600_000_000, 123456789), time.Unix(1_600_000_000, 123456789)))
	must(os.Chmod(filepath.Join(src, "a", "sub"), 0o750))

	offline := func(fn func(repo backup.Repo) error) {
		t.Helper()
		v, err := vault.Open(home, testPassword, vault.OpenOptions{Lock: true})
		must(err)
		defer v.Close()
		idx, store, err := fincryptfs.OpenOffline(v, nil)
		must(err)
		defer idx.Close()
		must(fincryptfs.ChangeOffline(v, idx, func() error { return fn(backup.Repo{Keys: v.Keys, Index: idx, Store: store}) }))
	}
	// Two snapshots within one second: the second gets a suffix.
	t1 := time.Date(2026, 3, 4, 5, 6, 7, 100_000_000, time.UTC)
	pass := func(at time.Time) {
		offline(func(repo backup.Repo) error {
			_, err := backup.Run(context.Background(), repo, backup.Options{Paths: []string{src}, Time: at})
			return err
		})
	}
	pass(t1)
	want1 := treetest.Describe(t, src)
	must(os.Remove(filepath.Join(src, "gone")))
	writeFile(t, filepath.Join(src, "a", "f1"), randBytes(3, 200<<10))
	pass(t1.Add(500 * time.Millisecond))
	want2 := treetest.Describe(t, src)

	// The mount fetches missing blobs through its store's fetcher: here
	// from a copy the test keeps (the network in production).
	var (
		mu      sync.Mutex
		kept    = map[meta.ChunkID][]byte{}
		wrong   = map[meta.ChunkID]bool{}
		fetches atomic.Int64
		idx     *meta.Index
		store   *chunkstore.Store
	)
	tm := mountVaultOpt(t, home, fincryptfs.Options{Attach: func(i *meta.Index, s *chunkstore.Store) (io.Closer, error) {
		idx, store = i, s
		s.SetFetcher(func(id meta.ChunkID) ([]byte, error) {
			fetches.Add(1)
			mu.Lock()
			defer mu.Unlock()
			b, ok := kept[id]
			if !ok {
				return nil, chunkstore.ErrNotFound
			}
			if wrong[id] {
				b = append([]byte(nil), b...)
				b[len(b)/2] ^= 1
			}
			return b, nil
		})
		return io.NopCloser(nil), nil
	}})
	snaps, err := backup.Snapshots(idx)
	must(err)
	if len(snaps) != 2 {
		t.Fatalf("%d snapshots, want 2", len(snaps))
	}
	name1, name2 := "2026-03-04T05:06:07Z", "2026-03-04T05:06:07Z-"+snaps[1].ID.String()
	if got := fincryptfs.SnapshotDirNames(snaps); !slices.Equal(got, []string{name1, name2}) {
		t.Fatalf("snapshot names %q, want %q", got, []string{name1, name2})
	}

	// Looked up, not listed in the root.
	fi, err := os.Stat(tm.path(".snapshots"))
	if err != nil || !fi.IsDir() {
		t.Fatalf("stat .snapshots: %v, %v", fi, err)
	}
	root, err := os.ReadDir(tm.path())
	must(err)
	for _, e := range root {
		if e.Name() == ".snapshots" {
			t.Fatalf("the root lists .snapshots")
		}
	}
	ents, err := os.ReadDir(tm.path(".snapshots"))
	must(err)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{name1, name2}) {
		t.Fatalf(".snapshots lists %q, want %q", names, []string{name1, name2})
	}
	if _, err := os.Stat(tm.path(".snapshots", "2026-03-04T05:06:08Z")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("stat of a snapshot that does not exist: %v", err)
	}

	// Evict the blobs of "gone" from the local store before reading it.
	var goneBlobs []meta.ChunkID
	{
		tr, err := backup.LoadTree(idx, snaps[0].Tree)
		must(err)
		for _, part := range append(splitPath(src), "gone") {
			n := tr.Find(part)
			if n == nil {
				t.Fatalf("%s not in snapshot 1", part)
			}
			if n.Type == backup.TypeFile {
				goneBlobs = n.Blobs
				break
			}
			tr, err = backup.LoadTree(idx, n.Subtree)
			must(err)
		}
	}
	if len(goneBlobs) < 2 {
		t.Fatalf("gone has %d blobs; the test wants several", len(goneBlobs))
	}
	for _, id := range goneBlobs {
		b, err := os.ReadFile(store.Path(id))
		must(err)
		kept[id] = b
		must(os.Remove(store.Path(id)))
	}

	// A fetched blob that is not what its id names is an error, not data.
	{
		tr, err := backup.LoadTree(idx, snaps[1].Tree)
		must(err)
		var blobs []meta.ChunkID
		for _, p := range append(splitPath(src), "a", "f1") {
			n := tr.Find(p)
			if n.Type == backup.TypeFile {
				blobs = n.Blobs
				break
			}
			tr, err = backup.LoadTree(idx, n.Subtree)
			must(err)
		}
		mu.Lock()
		for _, id := range blobs {
			b, err := os.ReadFile(store.Path(id))
			must(err)
			kept[id], wrong[id] = b, true
			must(os.Remove(store.Path(id)))
		}
		mu.Unlock()
		if b, err := os.ReadFile(filepath.Join(tm.path(".snapshots", name2, src), "a", "f1")); !errors.Is(err, syscall.EIO) {
			t.Fatalf("read of a tampered blob: %d bytes, err %v; want EIO", len(b), err)
		}
		// The network serves the right bytes again (the store may have
		// kept the bad copy it fetched: drop it).
		mu.Lock()
		for _, id := range blobs {
			wrong[id] = false
			os.Remove(store.Path(id))
		}
		mu.Unlock()
	}

	snap1 := tm.path(".snapshots", name1, src)
	snap2 := tm.path(".snapshots", name2, src)
	treetest.Same(t, "snapshot 1", treetest.Describe(t, snap1), want1)
	treetest.Same(t, "snapshot 2", treetest.Describe(t, snap2), want2)
	if fetches.Load() < int64(len(goneBlobs)) {
		t.Fatalf("%d fetches for %d evicted blobs", fetches.Load(), len(goneBlobs))
	}
	if _, err := os.Stat(filepath.Join(snap2, "gone")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("gone in snapshot 2: %v", err)
	}
	// A read at an offset inside the file, across a blob boundary.
	f, err := os.Open(filepath.Join(snap1, "gone"))
	must(err)
	part := make([]byte, 2<<20)
	n, err := f.ReadAt(part, 1<<20+7)
	f.Close()
	if err != nil && err != io.EOF {
		t.Fatal(err)
	}
	mustEqual(t, "gone at an offset", part[:n], gone[1<<20+7:1<<20+7+n])

	// Nothing in the view changes.
	in1 := func(p ...string) string { return filepath.Join(append([]string{snap1}, p...)...) }
	wantErrno(t, "create", os.WriteFile(in1("a", "new"), []byte("x"), 0o644), syscall.EROFS)
	_, err = os.OpenFile(in1("a", "f1"), os.O_WRONLY, 0)
	wantErrno(t, "open for writing", err, syscall.EROFS)
	wantErrno(t, "truncate", os.Truncate(in1("a", "f1"), 0), syscall.EROFS)
	wantErrno(t, "mkdir", os.Mkdir(in1("a", "d"), 0o755), syscall.EROFS)
	wantErrno(t, "mkdir in .snapshots", os.Mkdir(tm.path(".snapshots", "x"), 0o755), syscall.EROFS)
	wantErrno(t, "symlink", os.Symlink("f1", in1("a", "l2")), syscall.EROFS)
	wantErrno(t, "unlink", os.Remove(in1("a", "f1")), syscall.EROFS)
	wantErrno(t, "rmdir", os.Remove(in1("a", "sub")), syscall.EROFS)
	wantErrno(t, "rename", os.Rename(in1("a", "f1"), in1("a", "f2")), syscall.EROFS)
	wantErrno(t, "chmod", os.Chmod(in1("a", "f1"), 0o777), syscall.EROFS)
	wantErrno(t, "utimes", os.Chtimes(in1("a", "f1"), time.Now(), time.Now()), syscall.EROFS)
	wantErrno(t, "setxattr", unix.Setxattr(in1("a", "f1"), "user.x", []byte("1"), 0), syscall.EROFS)
	writeFile(t, tm.path("real"), []byte("real"))
	wantErrno(t, "rename into a snapshot", os.Rename(tm.path("real"), in1("a", "real")), syscall.EROFS)
	wantErrno(t, "rename out of a snapshot", os.Rename(in1("a", "f1"), tm.path("f1")), syscall.EROFS)
	wantErrno(t, "link into a snapshot", os.Link(tm.path("real"), in1("a", "real")), syscall.EROFS)
	wantErrno(t, "link out of a snapshot", os.Link(in1("a", "f1"), tm.path("f1")), syscall.EXDEV)
	mustEqual(t, "f1 after the refused writes", readFile(t, in1("a", "f1")), f1)
	if _, err := os.Stat(tm.path("f1")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a refused rename or link left %s: %v", tm.path("f1"), err)
	}
}

// TestSnapshotViewShadowed: a real entry named .snapshots in the root,
// made before any backup, wins over the view; while the view shows, the
// name cannot be taken (EEXIST).
func TestSnapshotViewShadowed(t *testing.T) {
	requireFUSE(t)
	home := newVault(t, vault.CreateOptions{ChunkSize: 4096})
	tm := mountVault(t, home)
	if _, err := os.Stat(tm.path(".snapshots")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf(".snapshots with no backup: %v", err)
	}
	if err := os.Mkdir(tm.path(".snapshots"), 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, tm.path(".snapshots", "mine"), []byte("mine"))
	tm.unmount()
	backupOffline(t, home)
	tm = mountVault(t, home)
	ents, err := os.ReadDir(tm.path(".snapshots"))
	if err != nil || len(ents) != 1 || ents[0].Name() != "mine" {
		t.Fatalf("the real .snapshots: %v, %v", ents, err)
	}
	mustEqual(t, "the real .snapshots/mine", readFile(t, tm.path(".snapshots", "mine")), []byte("mine"))
	os.Remove(tm.path(".snapshots", "mine"))
	if err := os.Remove(tm.path(".snapshots")); err != nil {
		t.Fatal(err)
	}
	// Gone: the view shows, and takes the name.
	deadline := time.Now().Add(10 * time.Second)
	for {
		ents, err = os.ReadDir(tm.path(".snapshots"))
		if err == nil && len(ents) == 1 && ents[0].Name() != "mine" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the view after the real .snapshots was removed: %v, %v", ents, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := os.Mkdir(tm.path(".snapshots"), 0o700); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("mkdir .snapshots over the view: %v", err)
	}
}

// backupOffline backs up a small folder into the unmounted vault in home.
func backupOffline(t *testing.T, home string) {
	t.Helper()
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "doc"), []byte("doc"))
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
	err = fincryptfs.ChangeOffline(v, idx, func() error {
		_, err := backup.Run(context.Background(), backup.Repo{Keys: v.Keys, Index: idx, Store: store}, backup.Options{Paths: []string{src}})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func splitPath(p string) []string {
	var out []string
	for _, s := range bytes.Split([]byte(p), []byte("/")) {
		if len(s) > 0 {
			out = append(out, string(s))
		}
	}
	return out
}
