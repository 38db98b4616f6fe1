package stress

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// Entry is what Compare checks of one name.
type Entry struct {
	Type  uint32 // S_IFMT bits
	Perm  uint32 // mode & 07777
	Nlink uint64
	Size  int64  // files and symlinks
	Sum   string // sha256 of a file's contents
	Link  string // a symlink's target
	Xattr string // user.* attributes, name=sha256(value), sorted
	Mtime string // sec.nsec
}

// Snapshot reads every entry under root (paths relative to root).
func Snapshot(root string) (map[string]Entry, error) {
	out := map[string]Entry{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		e, err := readEntry(p)
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		out[rel] = e
		return nil
	})
	return out, err
}

func readEntry(p string) (Entry, error) {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return Entry{}, err
	}
	e := Entry{Type: st.Mode & unix.S_IFMT, Perm: st.Mode & 0o7777, Nlink: uint64(st.Nlink),
		Mtime: fmt.Sprintf("%d.%09d", st.Mtim.Sec, st.Mtim.Nsec)}
	switch e.Type {
	case unix.S_IFREG:
		e.Size = st.Size
		f, err := os.Open(p)
		if err != nil {
			return e, err
		}
		h := sha256.New()
		n, err := io.Copy(h, f)
		f.Close()
		if err != nil {
			return e, fmt.Errorf("reading: %w", err)
		}
		if n != st.Size {
			return e, fmt.Errorf("read %d bytes of a file of %d", n, st.Size)
		}
		e.Sum = fmt.Sprintf("%x", h.Sum(nil))
	case unix.S_IFLNK:
		e.Size = st.Size
		t, err := os.Readlink(p)
		if err != nil {
			return e, err
		}
		e.Link = t
	}
	if e.Type != unix.S_IFLNK {
		names, err := listxattr(p)
		if err != nil && !errors.Is(err, unix.EOPNOTSUPP) {
			return e, fmt.Errorf("listxattr: %w", err)
		}
		var parts []string
		for _, n := range names {
			v, err := getxattr(p, n)
			if err != nil {
				return e, fmt.Errorf("getxattr %s: %w", n, err)
			}
			parts = append(parts, fmt.Sprintf("%s=%x", n, sha256.Sum256(v)))
		}
		e.Xattr = strings.Join(parts, ",")
	}
	return e, nil
}

func (e Entry) String(mtime bool) string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "type=%o perm=%o nlink=%d", e.Type, e.Perm, e.Nlink)
	switch e.Type {
	case unix.S_IFREG:
		fmt.Fprintf(&b, " size=%d sha256=%.16s", e.Size, e.Sum)
	case unix.S_IFLNK:
		fmt.Fprintf(&b, " -> %q", e.Link)
	}
	if e.Xattr != "" {
		fmt.Fprintf(&b, " xattrs=[%s]", e.Xattr)
	}
	if mtime {
		fmt.Fprintf(&b, " mtime=%s", e.Mtime)
	}
	return b.String()
}

// Diff compares two snapshots: every name, type, mode, link count, size,
// content, symlink target and user xattr; mtimes of the paths in mtimes.
// It returns one line per difference (at most limit, then a count).
func Diff(got, want map[string]Entry, mtimes map[string]bool, limit int) []string {
	var names []string
	for n := range want {
		names = append(names, n)
	}
	for n := range got {
		if _, ok := want[n]; !ok {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	var out []string
	more := 0
	for _, n := range names {
		g, gok := got[n]
		w, wok := want[n]
		var line string
		switch {
		case !gok:
			line = fmt.Sprintf("%s: missing (want %s)", n, w.String(mtimes[n]))
		case !wok:
			line = fmt.Sprintf("%s: unexpected (%s)", n, g.String(mtimes[n]))
		default:
			if !mtimes[n] {
				g.Mtime, w.Mtime = "", ""
			}
			if g != w {
				line = fmt.Sprintf("%s: got %s, want %s", n, g.String(mtimes[n]), w.String(mtimes[n]))
			}
		}
		if line == "" {
			continue
		}
		if len(out) < limit {
			out = append(out, line)
		} else {
			more++
		}
	}
	if more > 0 {
		out = append(out, fmt.Sprintf("... and %d more differences", more))
	}
	return out
}

// Compare snapshots both trees and returns an error listing their
// differences, if any.
func Compare(got, want string, mtimes map[string]bool) error {
	g, err := Snapshot(got)
	if err != nil {
		return fmt.Errorf("reading %s: %w", got, err)
	}
	w, err := Snapshot(want)
	if err != nil {
		return fmt.Errorf("reading %s: %w", want, err)
	}
	if d := Diff(g, w, mtimes, 30); len(d) > 0 {
		return fmt.Errorf("%d differences between %s and %s:\n%s", len(d), got, want, strings.Join(d, "\n"))
	}
	return nil
}
