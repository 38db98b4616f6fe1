// Package treetest describes a directory tree for tests that back it up or
// restore it: every entry's type, mode, owner, mtime, size and content hash,
// symlink target, extended attributes and hard link group, so that two trees
// compare in one call.
package treetest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// Describe returns one line per entry under root (not root itself), by
// path relative to root: "MODE uid=U gid=G mtime=NS", then for a regular
// file " size=N sha=HEX" and, when it has other links, " link=FIRST" (the
// first path, sorted, of its hard link group under root); for a symlink
// " -> TARGET"; last its extended attributes, sorted, " xattr:NAME=VALUE".
func Describe(t testing.TB, root string) map[string]string {
	t.Helper()
	var paths []string
	filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			t.Fatalf("walking %s: %v", root, err)
		}
		paths = append(paths, p)
		return nil
	})
	sort.Strings(paths)
	out := map[string]string{}
	links := map[uint64]string{}
	for _, p := range paths {
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			continue
		}
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		d := fmt.Sprintf("%v uid=%d gid=%d mtime=%d", fi.Mode(), st.Uid, st.Gid, st.Mtim.Nano())
		switch {
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			h := sha256.Sum256(b)
			d += fmt.Sprintf(" size=%d sha=%s", len(b), hex.EncodeToString(h[:12]))
			if st.Nlink > 1 {
				if _, ok := links[st.Ino]; !ok {
					links[st.Ino] = rel
				}
				d += " link=" + links[st.Ino]
			}
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				t.Fatal(err)
			}
			d += " -> " + target
		}
		for _, x := range xattrs(t, p) {
			d += " xattr:" + x
		}
		out[rel] = d
	}
	return out
}

// xattrs lists "name=value" (value quoted) of every extended attribute of
// p, sorted; none where the file system has none.
func xattrs(t testing.TB, p string) []string {
	sz, err := unix.Llistxattr(p, nil)
	if err != nil || sz == 0 {
		return nil
	}
	buf := make([]byte, sz)
	if sz, err = unix.Llistxattr(p, buf); err != nil {
		t.Fatalf("xattrs of %s: %v", p, err)
	}
	var out []string
	for _, name := range strings.Split(string(buf[:sz]), "\x00") {
		if name == "" {
			continue
		}
		v := make([]byte, 64<<10)
		n, err := unix.Lgetxattr(p, name, v)
		if err != nil {
			t.Fatalf("xattr %s of %s: %v", name, p, err)
		}
		out = append(out, fmt.Sprintf("%s=%q", name, v[:n]))
	}
	sort.Strings(out)
	return out
}

// Same fails t, naming every difference, unless got (as Describe returns
// it) describes the tree want does.
func Same(t testing.TB, what string, got, want map[string]string) {
	t.Helper()
	for k, w := range want {
		if g, ok := got[k]; !ok {
			t.Errorf("%s: %s is missing (want %q)", what, k, w)
		} else if g != w {
			t.Errorf("%s: %s is %q, want %q", what, k, g, w)
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: %s (%q) was not in the source", what, k, g)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
}
