package backup

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/fincrypt/fincrypt/internal/treetest"
)

// TestExcluderAgreesWithThePass: on a tree with .fincryptignore files at
// several levels (names, globs, paths relative to their folder), cache
// folders (a valid CACHEDIR.TAG, and one with a wrong signature) and
// --exclude patterns, the Excluder leaves out exactly what the pass leaves
// out: every path is either in the restored snapshot or excluded, never
// both; then a changed ignore file, once forgotten, is read again.
func TestExcluderAgreesWithThePass(t *testing.T) {
	repo := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	files := map[string]string{
		".fincryptignore":          "# top\nbuild\n*.o\ndocs/draft*\n",
		"a.txt":                    "a",
		"a.o":                      "o",
		"x.log":                    "log",
		"build/out":                "b",
		"src/.fincryptignore":      "gen/\n*.tmp\n",
		"src/main.c":               "c",
		"src/main.o":               "o",
		"src/gen/g.c":              "g",
		"src/deep/gen/kept":        "names match at any depth below",
		"src/deep/x.tmp":           "t",
		"docs/draft1":              "d",
		"docs/final":               "f",
		"docs/sub/draft2":          "relative path does not match",
		"cache/CACHEDIR.TAG":       cacheDirTag + "\n",
		"cache/blob":               "c",
		"notcache/CACHEDIR.TAG":    "Signature: wrong",
		"notcache/kept":            "k",
		"src/deep/c2/CACHEDIR.TAG": cacheDirTag,
		"src/deep/c2/sub/f":        "f",
	}
	for name, data := range files {
		writeFile(t, filepath.Join(src, name), []byte(data), 0o644)
	}
	opt := Options{Paths: []string{src}, Excludes: []string{"*.log"}}
	rep, err := Run(context.Background(), repo, opt)
	if err != nil {
		t.Fatal(err)
	}
	kept := restored(t, repo, rep.Snapshot, src)
	ex := NewExcluder([]string{src}, opt)
	excluded := 0
	filepath.WalkDir(src, func(p string, _ fs.DirEntry, err error) error {
		if err != nil || p == src {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		_, inSnap := kept[rel]
		if got := ex.Excluded(p); got == inSnap {
			t.Errorf("%s: in the snapshot %v, and excluded by the Excluder %v", rel, inSnap, got)
		}
		if !inSnap {
			excluded++
		}
		return nil
	})
	if excluded < 12 {
		t.Fatalf("only %d paths left out: the tree does not exercise the rules", excluded)
	}

	// The ignore file changes: answers change only once it is forgotten.
	writeFile(t, filepath.Join(src, ".fincryptignore"), []byte("*.o\n"), 0o644)
	if !ex.Excluded(filepath.Join(src, "build/out")) {
		t.Fatal("the Excluder read the ignore file again without being told")
	}
	if dir := ex.Forget(filepath.Join(src, ".fincryptignore")); dir != src {
		t.Fatalf("Forget of the top ignore file names %q to walk again, want %s", dir, src)
	}
	if ex.Excluded(filepath.Join(src, "build/out")) || !ex.Excluded(filepath.Join(src, "src/main.o")) {
		t.Fatal("after Forget, the changed ignore file was not read again")
	}
	os.Remove(filepath.Join(src, "cache/CACHEDIR.TAG"))
	if dir := ex.Forget(filepath.Join(src, "cache/CACHEDIR.TAG")); dir != src {
		t.Fatalf("Forget of a CACHEDIR.TAG names %q to walk again, want the folder above its own", dir)
	}
	if ex.Excluded(filepath.Join(src, "cache/blob")) {
		t.Fatal("a folder whose CACHEDIR.TAG was removed is still excluded")
	}
}

// restored restores snapshot id into a new directory and describes what it
// holds of src.
func restored(t *testing.T, repo Repo, id, src string) map[string]string {
	t.Helper()
	snap, err := FindSnapshot(repo.Index, id)
	if err != nil {
		t.Fatal(err)
	}
	target := t.TempDir()
	if _, err := Restore(context.Background(), repo, snap, RestoreOptions{Target: target}); err != nil {
		t.Fatal(err)
	}
	return treetest.Describe(t, filepath.Join(target, src))
}

// TestExcluderCacheRoot: a backed-up folder that holds a CACHEDIR.TAG
// itself is left out by a pass, so the Excluder leaves out everything
// under it (a watcher then watches only the folder, whose tag's removal
// it hears of); the folder itself is not excluded. A second folder backed
// up with it is not affected.
func TestExcluderCacheRoot(t *testing.T) {
	repo := newRepo(t)
	base := t.TempDir()
	cache, plain := filepath.Join(base, "cache"), filepath.Join(base, "plain")
	writeFile(t, filepath.Join(cache, "CACHEDIR.TAG"), []byte(cacheDirTag), 0o644)
	writeFile(t, filepath.Join(cache, "sub", "blob"), []byte("c"), 0o644)
	writeFile(t, filepath.Join(plain, "f"), []byte("p"), 0o644)
	opt := Options{Paths: []string{cache, plain}}
	rep, err := Run(context.Background(), repo, opt)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := FindSnapshot(repo.Index, rep.Snapshot)
	if err != nil {
		t.Fatal(err)
	}
	target := t.TempDir()
	if _, err := Restore(context.Background(), repo, snap, RestoreOptions{Target: target}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(target, cache)); !os.IsNotExist(err) {
		t.Fatalf("the pass kept the tagged folder: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(target, plain, "f")); err != nil {
		t.Fatalf("the pass left out the other folder: %v", err)
	}
	ex := NewExcluder([]string{cache, plain}, opt)
	if ex.Excluded(cache) {
		t.Fatal("the backed-up folder itself is excluded: its tag's removal would go unheard")
	}
	for _, p := range []string{"CACHEDIR.TAG", "sub", "sub/blob"} {
		if !ex.Excluded(filepath.Join(cache, p)) {
			t.Errorf("%s under a tagged backed-up folder is not excluded", p)
		}
	}
	if ex.Excluded(filepath.Join(plain, "f")) {
		t.Error("a file of the other folder is excluded")
	}
	os.Remove(filepath.Join(cache, "CACHEDIR.TAG"))
	if dir := ex.Forget(filepath.Join(cache, "CACHEDIR.TAG")); dir != cache {
		t.Fatalf("Forget of the tag names %q to walk again, want %s", dir, cache)
	}
	if ex.Excluded(filepath.Join(cache, "sub", "blob")) {
		t.Fatal("still excluded after the tag was removed")
	}
}
