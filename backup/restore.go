package backup

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/fincrypt/fincrypt/meta"
)

// RestoreOptions say what to restore where.
type RestoreOptions struct {
	// Path, if set, restores only this file or folder (an absolute path
	// as it was backed up); otherwise the whole snapshot.
	Path string
	// Target is the folder the snapshot's paths are restored under: a
	// file backed up as /home/a/f comes back as TARGET/home/a/f.
	Target string
	// Overwrite replaces existing files; without it a restore that would
	// replace one writes nothing and fails with ErrExists.
	Overwrite bool
	// Progress, if set, is called once the totals are known, then after
	// each blob and each file written.
	Progress func(RestoreProgress)
}

// RestoreProgress is where a restore is.
type RestoreProgress struct {
	Files      uint64 `json:"files"`
	Bytes      uint64 `json:"bytes"`
	TotalFiles uint64 `json:"total_files"` // files to write (a hard link's second name is not written)
	Total      uint64 `json:"total_bytes"`
}

// ErrExists means a restore would replace existing files.
var ErrExists = errors.New("the target holds files the restore would replace (give --overwrite to replace them)")

// RestoreResult is what a restore wrote.
type RestoreResult struct {
	Files, Dirs, Symlinks, Links uint64
	Bytes                        uint64
}

type restorer struct {
	ctx   context.Context
	repo  Repo
	opt   RestoreOptions
	res   RestoreResult
	prog  RestoreProgress
	links map[[2]uint64]string
	buf   []byte
	root  bool
	// dirs are set in metadata after their contents, deepest first.
	dirs []dirMeta
}

type dirMeta struct {
	path string
	n    Node
}

// Restore writes snapshot snap (or its Path) under opt.Target with its
// metadata: contents, modes, owners (when run as root), mtimes, symlinks,
// hard links and extended attributes.
func Restore(ctx context.Context, repo Repo, snap Snapshot, opt RestoreOptions) (*RestoreResult, error) {
	if opt.Target == "" {
		return nil, errors.New("no target folder")
	}
	root, err := LoadTree(repo.Index, snap.Tree)
	if err != nil {
		return nil, err
	}
	// Find the node to restore and the tree path above it.
	type found struct {
		dir  string // target directory that holds it
		tree *Tree  // the tree it is in (nil: the whole snapshot)
		node *Node
	}
	var start found
	if opt.Path == "" || filepath.Clean(opt.Path) == "/" {
		start = found{dir: opt.Target, tree: root}
	} else {
		p := filepath.Clean(opt.Path)
		if !filepath.IsAbs(p) {
			return nil, fmt.Errorf("--path %s: give the absolute path as it was backed up", opt.Path)
		}
		parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
		t := root
		dir := opt.Target
		for i, part := range parts {
			n := t.Find(part)
			if n == nil {
				return nil, fmt.Errorf("%s is not in snapshot %s", p, snap.ID)
			}
			if i == len(parts)-1 {
				start = found{dir: dir, node: n}
				break
			}
			if n.Type != TypeDir {
				return nil, fmt.Errorf("%s is not in snapshot %s (%s is not a folder)", p, snap.ID, filepath.Join(parts[:i+1]...))
			}
			if t, err = LoadTree(repo.Index, n.Subtree); err != nil {
				return nil, err
			}
			dir = filepath.Join(dir, part)
		}
	}
	r := &restorer{ctx: ctx, repo: repo, opt: opt, links: map[[2]uint64]string{}, root: os.Geteuid() == 0}
	// First look, write nothing: would anything be replaced?
	var nodes []Node
	if start.node != nil {
		nodes = []Node{*start.node}
	} else {
		nodes = start.tree.Nodes
	}
	var clash []string
	linked := map[[2]uint64]bool{}
	if err := r.walk(start.dir, nodes, func(path string, n *Node) {
		if fi, err := os.Lstat(path); err == nil && !(n.Type == TypeDir && fi.IsDir()) && len(clash) < 5 {
			clash = append(clash, path)
		}
		if n.Type == TypeFile {
			if n.Nlink > 1 {
				key := [2]uint64{n.Dev, n.Inode}
				if linked[key] {
					return
				}
				linked[key] = true
			}
			r.prog.Total += n.Size
			r.prog.TotalFiles++
		}
	}); err != nil {
		return nil, err
	}
	if len(clash) > 0 && !opt.Overwrite {
		return nil, fmt.Errorf("%w: %s", ErrExists, strings.Join(clash, ", "))
	}
	if opt.Progress != nil {
		opt.Progress(r.prog)
	}
	// The folders above the start exist as in the snapshot.
	if err := os.MkdirAll(start.dir, 0o700); err != nil {
		return nil, err
	}
	if err := r.restoreNodes(start.dir, nodes); err != nil {
		return nil, err
	}
	for i := len(r.dirs) - 1; i >= 0; i-- {
		if err := r.setMeta(r.dirs[i].path, &r.dirs[i].n); err != nil {
			return nil, err
		}
	}
	return &r.res, nil
}

// walk calls fn for every node under nodes (in dir), depth first.
func (r *restorer) walk(dir string, nodes []Node, fn func(string, *Node)) error {
	for i := range nodes {
		n := &nodes[i]
		path := filepath.Join(dir, n.Name)
		fn(path, n)
		if n.Type == TypeDir {
			t, err := LoadTree(r.repo.Index, n.Subtree)
			if err != nil {
				return err
			}
			if err := r.walk(path, t.Nodes, fn); err != nil {
				return err
			}
		}
	}
	return nil
}

func (r *restorer) restoreNodes(dir string, nodes []Node) error {
	for i := range nodes {
		if err := r.ctx.Err(); err != nil {
			return err
		}
		n := &nodes[i]
		if n.Name == "" || n.Name == "." || n.Name == ".." || strings.Contains(n.Name, "/") {
			return fmt.Errorf("entry %q in %s: bad name: %w", n.Name, dir, ErrCorrupt)
		}
		path := filepath.Join(dir, n.Name)
		if err := r.restoreNode(path, n); err != nil {
			return err
		}
	}
	return nil
}

func (r *restorer) restoreNode(path string, n *Node) error {
	switch n.Type {
	case TypeDir:
		fi, err := os.Lstat(path)
		if err == nil && !fi.IsDir() {
			if err := os.Remove(path); err != nil {
				return err
			}
		}
		if err := os.Mkdir(path, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		t, err := LoadTree(r.repo.Index, n.Subtree)
		if err != nil {
			return err
		}
		if err := r.restoreNodes(path, t.Nodes); err != nil {
			return err
		}
		r.res.Dirs++
		r.dirs = append(r.dirs, dirMeta{path, *n})
		return nil
	case TypeSymlink:
		if err := removeExisting(path); err != nil {
			return err
		}
		if err := os.Symlink(n.Target, path); err != nil {
			return err
		}
		r.res.Symlinks++
		return r.setMeta(path, n)
	case TypeFile:
		if err := removeExisting(path); err != nil {
			return err
		}
		if n.Nlink > 1 {
			key := [2]uint64{n.Dev, n.Inode}
			if first, ok := r.links[key]; ok {
				if err := os.Link(first, path); err == nil {
					r.res.Links++
					return nil
				}
			}
			r.links[key] = path
		}
		if err := r.writeFile(path, n); err != nil {
			return err
		}
		r.res.Files++
		if r.opt.Progress != nil {
			r.opt.Progress(r.prog)
		}
		return r.setMeta(path, n)
	}
	return fmt.Errorf("%s: entry of type %d: %w", path, n.Type, ErrCorrupt)
}

func removeExisting(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return os.RemoveAll(path)
	}
	return os.Remove(path)
}

func (r *restorer) writeFile(path string, n *Node) error {
	exts, err := Extents(r.repo.Index, n)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	var plain []byte
	var written uint64
	for _, e := range exts {
		if plain, err = ReadExtent(r.repo, e, plain[:0], &r.buf); err != nil {
			f.Close()
			return fmt.Errorf("%s: %w", path, err)
		}
		if _, err := f.WriteAt(plain, int64(e.Off)); err != nil {
			f.Close()
			return err
		}
		written += uint64(len(plain))
		r.prog.Bytes += uint64(len(plain))
		if r.opt.Progress != nil {
			r.opt.Progress(r.prog)
		}
	}
	r.res.Bytes += written
	// A version's file may end in a hole: the size is the entry's.
	if err := f.Truncate(int64(n.Size)); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	r.prog.Files++
	return f.Close()
}

// ReadBlob appends the plaintext of blob id to dst: from the local store,
// or through its fetcher from the network. It checks the blob's id.
func ReadBlob(repo Repo, id meta.ChunkID, dst []byte, sealedBuf *[]byte) ([]byte, error) {
	sealed, err := repo.Store.Get(id, (*sealedBuf)[:0])
	if err != nil {
		return dst, fmt.Errorf("blob %s: %w", id, err)
	}
	*sealedBuf = sealed
	out, err := repo.Keys.Blob.Open(dst, sealed, id[:])
	if err != nil {
		return dst, fmt.Errorf("blob %s: %w", id, err)
	}
	if meta.ChunkID(repo.Keys.BlobID("blob", out[len(dst):])) != id {
		return dst, fmt.Errorf("blob %s does not hold what its id names: %w", id, ErrCorrupt)
	}
	return out, nil
}

// setMeta gives path the metadata of n: owner (as root), extended
// attributes, mode (not for symlinks) and times, in that order (a chown
// clears setuid bits).
func (r *restorer) setMeta(path string, n *Node) error {
	if r.root {
		if err := os.Lchown(path, int(n.Uid), int(n.Gid)); err != nil {
			return err
		}
	}
	for _, x := range n.Xattrs {
		if err := unix.Lsetxattr(path, x.Name, x.Value, 0); err != nil && !errors.Is(err, unix.ENOTSUP) && !errors.Is(err, unix.EPERM) {
			return fmt.Errorf("%s: extended attribute %s: %w", path, x.Name, err)
		}
	}
	if n.Type != TypeSymlink {
		if err := os.Chmod(path, fs.FileMode(n.Mode&0o777)|modeBits(n.Mode)); err != nil {
			return err
		}
	}
	ts := []unix.Timespec{unix.NsecToTimespec(n.Mtime), unix.NsecToTimespec(n.Mtime)}
	return unix.UtimesNanoAt(unix.AT_FDCWD, path, ts, unix.AT_SYMLINK_NOFOLLOW)
}

func modeBits(m uint32) fs.FileMode {
	var out fs.FileMode
	if m&unix.S_ISUID != 0 {
		out |= fs.ModeSetuid
	}
	if m&unix.S_ISGID != 0 {
		out |= fs.ModeSetgid
	}
	if m&unix.S_ISVTX != 0 {
		out |= fs.ModeSticky
	}
	return out
}
