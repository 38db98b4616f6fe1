package fs_test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// run runs a command, failing the test with its output on error.
func run(t testing.TB, dir string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.invalid",
		"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.invalid", "HOME="+dir, "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// makeTree writes a small source-like tree with files of many sizes, a
// symlink, a hard link, an empty directory and odd modes.
func makeTree(t testing.TB, root string) {
	t.Helper()
	for i := 0; i < 60; i++ {
		dir := filepath.Join(root, fmt.Sprintf("pkg%d", i%7), fmt.Sprintf("sub%d", i%3))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		size := []int{0, 1, 100, 4095, 4096, 70000, 1<<20 + 3}[i%7]
		writeFile(t, filepath.Join(dir, fmt.Sprintf("file%d.go", i)), randBytes(uint64(i), size))
	}
	os.MkdirAll(filepath.Join(root, "empty"), 0o700)
	os.Symlink("pkg0/sub0/file0.go", filepath.Join(root, "link"))
	os.Link(filepath.Join(root, "pkg1", "sub1", "file1.go"), filepath.Join(root, "hard"))
	os.Chmod(filepath.Join(root, "pkg2", "sub2", "file2.go"), 0o750)
}

// treeDigest describes a tree: paths, types, modes, sizes and content hashes.
func treeDigest(t testing.TB, root string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == ".git" && d.IsDir() {
			return filepath.SkipDir
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s %v", rel, info.Mode())
		switch {
		case info.Mode().IsRegular():
			fmt.Fprintf(&b, " %d %x", info.Size(), sha256.Sum256(readFile(t, p)))
		case info.Mode()&fs.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			fmt.Fprintf(&b, " -> %s", l)
		}
		b.WriteByte('\n')
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestExternalTools drives the mount from other processes: cp -a, tar and git.
func TestExternalTools(t *testing.T) {
	requireFUSE(t)
	home := newVault(t, fastKDF)
	tm := mountVault(t, home)
	src := filepath.Join(t.TempDir(), "src")
	makeTree(t, src)
	want := treeDigest(t, src)

	t.Run("cp", func(t *testing.T) {
		run(t, "/", "cp", "-a", src, tm.path("cp"))
		if got := treeDigest(t, tm.path("cp")); got != want {
			t.Fatalf("cp -a into the mount differs:\n%s", diffLines(want, got))
		}
		out := filepath.Join(t.TempDir(), "back")
		run(t, "/", "cp", "-a", tm.path("cp"), out)
		if got := treeDigest(t, out); got != want {
			t.Fatalf("cp -a out of the mount differs:\n%s", diffLines(want, got))
		}
	})
	t.Run("tar", func(t *testing.T) {
		archive := tm.path("tree.tar")
		run(t, src, "tar", "-cf", archive, ".")
		if err := os.Mkdir(tm.path("untar"), 0o755); err != nil {
			t.Fatal(err)
		}
		run(t, tm.path("untar"), "tar", "-xpf", archive)
		if got := treeDigest(t, tm.path("untar")); got != want {
			t.Fatalf("tar x in the mount differs:\n%s", diffLines(want, got))
		}
		run(t, tm.path("untar"), "tar", "-df", archive) // compare archive and tree
	})
	t.Run("git", func(t *testing.T) {
		repo := tm.path("repo")
		run(t, "/", "cp", "-a", src, repo)
		run(t, repo, "git", "init", "-q")
		run(t, repo, "git", "add", "-A")
		run(t, repo, "git", "commit", "-qm", "first")
		writeFile(t, filepath.Join(repo, "pkg0", "sub0", "file0.go"), []byte("changed\n"))
		os.Remove(filepath.Join(repo, "hard"))
		st := run(t, repo, "git", "status", "--porcelain")
		if st != " D hard\n M pkg0/sub0/file0.go\n" {
			t.Fatalf("git status:\n%s", st)
		}
		run(t, repo, "git", "commit", "-qam", "second")
		run(t, repo, "git", "fsck", "--full")
		if st := run(t, repo, "git", "status", "--porcelain"); st != "" {
			t.Fatalf("git status after commit:\n%s", st)
		}
		clone := filepath.Join(t.TempDir(), "clone")
		run(t, "/", "git", "clone", "-q", repo, clone)
		mustEqual(t, "cloned file", readFile(t, filepath.Join(clone, "pkg0", "sub0", "file0.go")), []byte("changed\n"))
	})
	tm.unmount()
	checkVault(t, home)
}

func diffLines(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for i := 0; i < len(w) || i < len(g); i++ {
		var a, c string
		if i < len(w) {
			a = w[i]
		}
		if i < len(g) {
			c = g[i]
		}
		if a != c {
			fmt.Fprintf(&b, "- %s\n+ %s\n", a, c)
		}
	}
	return b.String()
}

// TestFuseFDNotInherited checks that programs started by the mounting
// process do not inherit the FUSE connection (which would keep a dead mount
// hanging instead of failing).
func TestFuseFDNotInherited(t *testing.T) {
	requireFUSE(t)
	mountVault(t, newVault(t, fastKDF))
	out := run(t, "/", "/bin/sh", "-c", "ls -l /proc/self/fd/ 2>/dev/null || true")
	if strings.Contains(out, "/dev/fuse") {
		t.Fatalf("a child process inherited /dev/fuse:\n%s", out)
	}
}

// TestConcurrentProcesses has several processes write files at once (dd),
// while goroutines append to one shared file, then checks every byte.
func TestConcurrentProcesses(t *testing.T) {
	requireFUSE(t)
	home := newVault(t, fastKDF)
	tm := mountVault(t, home)
	srcDir := t.TempDir()
	const procs = 4
	srcs := make([][]byte, procs)
	var wg sync.WaitGroup
	errs := make(chan error, 2*procs)
	for i := 0; i < procs; i++ {
		srcs[i] = randBytes(uint64(100+i), 3<<20+i*1000)
		p := filepath.Join(srcDir, fmt.Sprint(i))
		writeFile(t, p, srcs[i])
		wg.Add(1)
		go func() {
			defer wg.Done()
			bs := []string{"4k", "64k", "1M", "100k"}[i]
			out, err := exec.Command("dd", "if="+p, "of="+tm.path(fmt.Sprintf("dd%d", i)), "bs="+bs, "conv=fsync", "status=none").CombinedOutput()
			if err != nil {
				errs <- fmt.Errorf("dd %d: %v: %s", i, err, out)
			}
		}()
	}
	// Goroutines append fixed-size records to one file through O_APPEND.
	shared := tm.path("shared.log")
	const writers, records = 4, 200
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f, err := os.OpenFile(shared, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
			if err != nil {
				errs <- err
				return
			}
			defer f.Close()
			for r := 0; r < records; r++ {
				if _, err := fmt.Fprintf(f, "writer %d record %04d %s\n", w, r, strings.Repeat("x", 40)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for i := 0; i < procs; i++ {
		mustEqual(t, fmt.Sprintf("dd%d", i), readFile(t, tm.path(fmt.Sprintf("dd%d", i))), srcs[i])
	}
	lines := bytes.Split(bytes.TrimSuffix(readFile(t, shared), []byte("\n")), []byte("\n"))
	if len(lines) != writers*records {
		t.Fatalf("shared log: %d lines, want %d", len(lines), writers*records)
	}
	seen := map[string]bool{}
	for _, l := range lines {
		if len(l) != len("writer 0 record 0000 ")+40 || seen[string(l)] {
			t.Fatalf("shared log: bad or repeated line %q", l)
		}
		seen[string(l)] = true
	}
	tm.unmount()
	checkVault(t, home)
}

// TestNoPlaintextUnderHome writes a marker as a file name, a directory name,
// a symlink target, an xattr and file content, then searches every byte under
// the vault's home.
func TestNoPlaintextUnderHome(t *testing.T) {
	requireFUSE(t)
	home := newVault(t, fastKDF)
	tm := mountVault(t, home)
	marker := "FINCRYPT-MARKER-7f3a9c"
	os.Mkdir(tm.path(marker+"-dir"), 0o755)
	writeFile(t, tm.path(marker+"-dir", marker), []byte(strings.Repeat(marker+" content\n", 1000)))
	writeFile(t, tm.path("small"), []byte(marker))
	os.Symlink(marker+"-target", tm.path("sym"))
	if err := syscall.Setxattr(tm.path("small"), "user."+marker, []byte(marker), 0); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(tm.path("small"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Sync()
	f.Close()
	tm.unmount()
	found := 0
	filepath.WalkDir(home, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(p, marker) {
			t.Errorf("marker in a path under home: %s", p)
		}
		if d.Type().IsRegular() {
			found++
			if b := readFile(t, p); bytes.Contains(b, []byte(marker)) || bytes.Contains(b, []byte("7f3a9c")) {
				t.Errorf("marker found in %s", p)
			}
		}
		return nil
	})
	if found < 5 {
		t.Fatalf("only %d files under home: the search did not cover the index and store", found)
	}
}
