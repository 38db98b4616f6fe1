// Package backup backs up existing folders into the vault and restores
// them: content-defined chunks of every file are sealed as blobs named by a
// keyed MAC of their plaintext (so equal bytes are stored once, across
// passes, renames and copies), each directory becomes a content-addressed
// tree record, and each pass an immutable snapshot record. Blobs live in the
// vault's chunk store and are uploaded by the replication engine like file
// chunks; trees and snapshots live in the index (package meta), so the
// index snapshots on the network carry every backup snapshot.
// docs/FORMAT.md §6 gives the records.
package backup

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/restic/chunker"
	"golang.org/x/crypto/hkdf"
	"golang.org/x/sys/unix"

	"github.com/fincrypt/fincrypt/chunkstore"
	"github.com/fincrypt/fincrypt/meta"
	"github.com/fincrypt/fincrypt/vault"
)

// Chunking parameters: blobs of 16 KiB to 1 MiB, 64 KiB on average, so that
// an edit stores little more than the bytes it changed.
const (
	MinBlob     = 16 << 10
	MaxBlob     = 1 << 20
	averageBits = 16
)

// Repo is where a backup lives: the vault's keys, its index and its chunk
// store (the store's fetcher, if any, brings evicted blobs back).
type Repo struct {
	Keys  *vault.Keys
	Index *meta.Index
	Store *chunkstore.Store
}

// Options are one pass's settings.
type Options struct {
	// Paths are the folders to back up (absolute); empty means the
	// folders recorded with AddRoot.
	Paths []string
	// Excludes are glob patterns (filepath.Match) matched against each
	// entry's name and its full path; a pattern naming a directory skips it
	// whole.
	Excludes []string
	// KeepCaches backs up directories holding a valid CACHEDIR.TAG, which
	// are skipped by default.
	KeepCaches bool
	// Host is recorded in the snapshot; empty means os.Hostname.
	Host string
	// Time is the snapshot's time; zero means now (tests inject history).
	Time time.Time
	// Changed, if not nil, limits the pass to these paths (absolute):
	// every directory neither on nor under one of them is taken from the
	// parent snapshot without being listed (a watcher's pass).
	Changed []string
	// Progress, if set, is called after each file and each chunk read
	// (from the pass's goroutine; keep it short). A full pass (Changed nil)
	// with Progress set also counts the files to back up with a stat-only
	// walk running alongside (see Count), for Progress.TotalFiles and
	// TotalBytes.
	Progress func(Progress)
	// Rereads is how often a file that changed while it was read is read
	// again before it is skipped; 0 means 3.
	Rereads int
	// Logger receives warnings; nil discards them.
	Logger *slog.Logger
}

// Progress is where a pass is.
type Progress struct {
	Files     uint64 `json:"files"`
	Dirs      uint64 `json:"dirs"`
	BytesRead uint64 `json:"bytes_read"`
	NewBytes  uint64 `json:"new_bytes"`
	// Bytes is the size of the files done (read, or unchanged and not
	// read) plus what was read of the current one: it ends at the report's
	// TotalBytes.
	Bytes uint64 `json:"bytes"`
	// TotalFiles and TotalBytes are what the counting walk found (0 until
	// it finished, and in a watcher's limited pass).
	TotalFiles uint64 `json:"total_files"`
	TotalBytes uint64 `json:"total_bytes"`
	Current    string `json:"current,omitempty"`
}

// Skip is an entry a pass did not keep, and why.
type Skip struct {
	Path   string `json:"path"`
	Reason string `json:"reason"`
}

// Report is what a pass did.
type Report struct {
	Snapshot   string `json:"snapshot"`
	Parent     string `json:"parent,omitempty"`
	Files      uint64 `json:"files"`
	Dirs       uint64 `json:"dirs"`
	Unchanged  uint64 `json:"unchanged_files"` // reused from the parent without reading
	BytesRead  uint64 `json:"bytes_read"`
	NewBytes   uint64 `json:"new_bytes"` // plaintext of blobs stored for the first time
	NewBlobs   uint64 `json:"new_blobs"`
	TotalBytes uint64 `json:"total_bytes"`
	Skipped    []Skip `json:"skipped"`
	// Same says a watcher's pass (Options.Changed) found the tree its parent
	// recorded (the changes were excluded, or undone): no snapshot was
	// recorded, and Snapshot names the parent.
	Same bool `json:"same_as_parent,omitempty"`
}

// AddRoot records folders to back up (made absolute and cleaned).
func AddRoot(idx *meta.Index, dirs ...string) ([]string, error) {
	b := idx.NewBatch()
	var out []string
	for _, d := range dirs {
		abs, err := filepath.Abs(d)
		if err != nil {
			b.Discard()
			return nil, err
		}
		fi, err := os.Stat(abs)
		if err != nil {
			b.Discard()
			return nil, err
		}
		if !fi.IsDir() {
			b.Discard()
			return nil, fmt.Errorf("%s is not a directory", abs)
		}
		b.PutBackupRoot(abs)
		out = append(out, abs)
	}
	return out, b.Commit(true)
}

// RemoveRoot stops backing up a folder; its snapshots stay.
func RemoveRoot(idx *meta.Index, dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	roots, err := idx.BackupRoots()
	if err != nil {
		return err
	}
	if !slices.Contains(roots, abs) {
		return fmt.Errorf("%s is not backed up (see fincrypt backup list)", abs)
	}
	b := idx.NewBatch()
	b.DeleteBackupRoot(abs)
	return b.Commit(true)
}

// Roots lists the backed-up folders, sorted.
func Roots(idx *meta.Index) ([]string, error) {
	r, err := idx.BackupRoots()
	sort.Strings(r)
	return r, err
}

// indexLocks serialises passes and sweeps on one index within a process: a
// sweep must never see a pass's blobs before its snapshot (callers in
// several processes are kept apart by the vault's lock).
var indexLocks sync.Map // *meta.Index -> *sync.Mutex

func lockIndex(idx *meta.Index) func() {
	m, _ := indexLocks.LoadOrStore(idx, &sync.Mutex{})
	mu := m.(*sync.Mutex)
	mu.Lock()
	return mu.Unlock
}

// ErrNoPaths means a pass was given no folder.
var ErrNoPaths = errors.New("no folder to back up (add one with fincrypt backup add DIR)")

// Polynomial is the chunker's polynomial of the vault: derived from the
// vault key, never stored.
func Polynomial(k *vault.Keys) (chunker.Pol, error) {
	// One HKDF stream (8160 bytes) fails to hold an irreducible polynomial
	// with a chance of about 1e-8; the next stream is then tried.
	for i := 0; ; i++ {
		info := "fincrypt chunker polynomial v1"
		if i > 0 {
			info += fmt.Sprintf(" %d", i)
		}
		pol, err := chunker.DerivePolynomial(hkdf.New(sha256.New, k.Chunker[:], nil, []byte(info)))
		if err == nil || i >= 8 {
			return pol, err
		}
	}
}

// pass is one running backup.
type pass struct {
	ctx      context.Context
	repo     Repo
	opt      Options
	log      *slog.Logger
	pol      chunker.Pol
	ch       *chunker.Chunker
	buf      []byte
	sealBuf  []byte
	batch    *meta.Batch
	batchN   int
	batchB   uint64
	newBlobs map[meta.ChunkID]struct{} // stored by this pass, maybe not committed
	newTrees map[meta.TreeID]struct{}
	links    map[[2]uint64]*Node // hard links seen in this pass
	rep      Report
	changed  map[string]bool // Options.Changed, cleaned
	above    map[string]bool // every directory above a changed path
	totals   atomic.Pointer[[2]uint64]
	cur      uint64 // bytes read of the current file (progress)
}

// Run makes one backup pass and records its snapshot. Passes, Forget and
// Sweep on one index wait for each other.
func Run(ctx context.Context, repo Repo, opt Options) (*Report, error) {
	defer lockIndex(repo.Index)()
	if opt.Rereads == 0 {
		opt.Rereads = 3
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	if opt.Host == "" {
		opt.Host, _ = os.Hostname()
	}
	if opt.Time.IsZero() {
		opt.Time = time.Now()
	}
	paths := opt.Paths
	if len(paths) == 0 {
		var err error
		if paths, err = Roots(repo.Index); err != nil {
			return nil, err
		}
	}
	if len(paths) == 0 {
		return nil, ErrNoPaths
	}
	clean := make([]string, 0, len(paths))
	for _, p := range paths {
		abs, err := filepath.Abs(p)
		if err != nil {
			return nil, err
		}
		if !slices.Contains(clean, abs) {
			clean = append(clean, abs)
		}
	}
	sort.Strings(clean)
	for _, p := range opt.Excludes {
		if _, err := filepath.Match(p, ""); err != nil {
			return nil, fmt.Errorf("exclude pattern %q: %w", p, err)
		}
	}
	pol, err := Polynomial(repo.Keys)
	if err != nil {
		return nil, err
	}
	parent, err := newestOf(repo, SourceBackup, clean)
	if err != nil {
		return nil, err
	}
	p := &pass{ctx: ctx, repo: repo, opt: opt, log: opt.Logger, pol: pol, buf: make([]byte, MaxBlob),
		batch: repo.Index.NewBatch(), newBlobs: map[meta.ChunkID]struct{}{}, newTrees: map[meta.TreeID]struct{}{},
		links: map[[2]uint64]*Node{}}
	p.ch = chunker.NewWithBoundaries(bytes.NewReader(nil), pol, MinBlob, MaxBlob)
	p.ch.SetAverageBits(averageBits)
	defer func() {
		if p.batch != nil {
			p.batch.Discard()
		}
	}()
	if opt.Changed != nil {
		p.changed, p.above = map[string]bool{}, map[string]bool{"/": true}
		for _, c := range opt.Changed {
			c = filepath.Clean(c)
			p.changed[c] = true
			for d := filepath.Dir(c); d != "/" && d != "." && !p.above[d]; d = filepath.Dir(d) {
				p.above[d] = true
			}
		}
	}
	if opt.Progress != nil && opt.Changed == nil {
		cctx, stop := context.WithCancel(ctx)
		defer stop()
		go func() {
			files, bytes, err := countWalk(cctx, clean, opt)
			if err == nil {
				p.totals.Store(&[2]uint64{files, bytes})
			}
		}()
	}
	var parentTree *Tree
	if parent != nil {
		p.rep.Parent = parent.ID.String()
		if parentTree, err = LoadTree(repo.Index, parent.Tree); err != nil {
			return nil, fmt.Errorf("parent snapshot %s: %w", parent.ID, err)
		}
	}
	// The folders' paths form a tree from "/": each folder is saved whole,
	// the directories above it with their metadata and only the entries
	// on the way.
	trie := &trieNode{kids: map[string]*trieNode{}}
	for _, c := range clean {
		t := trie
		for _, part := range strings.Split(strings.TrimPrefix(c, "/"), "/") {
			if part == "" {
				continue
			}
			if t.kids[part] == nil {
				t.kids[part] = &trieNode{kids: map[string]*trieNode{}}
			}
			t = t.kids[part]
		}
		t.root = true
	}
	var rootID meta.TreeID
	if trie.root { // "/" itself
		rootID, err = p.saveDir("/", parentTree)
	} else {
		rootID, err = p.saveTrie("/", trie, parentTree)
	}
	if err != nil {
		return nil, err
	}
	if err := p.flush(true); err != nil {
		return nil, err
	}
	if opt.Progress != nil && opt.Changed == nil {
		// The walk is done: what it kept is the total, whether or not the
		// counting walk finished first (it loses to the pass on a small
		// folder when the machine is busy).
		p.totals.Store(&[2]uint64{p.rep.Files, p.rep.TotalBytes})
		p.progress("")
	}
	if p.rep.Skipped == nil {
		p.rep.Skipped = []Skip{}
	}
	if opt.Changed != nil && parent != nil && rootID == parent.Tree && slices.Equal(parent.Paths, clean) {
		// Nothing to keep: a snapshot per excluded change would only pile up.
		p.rep.Snapshot, p.rep.Same = parent.ID.String(), true
		return &p.rep, nil
	}
	snap := Snapshot{ID: newSnapID(), Time: opt.Time, Host: opt.Host, Paths: clean, Tree: rootID,
		Files: p.rep.Files, Dirs: p.rep.Dirs, NewBytes: p.rep.NewBytes, TotalBytes: p.rep.TotalBytes}
	b := repo.Index.NewBatch()
	b.PutBackupSnapshot(snap.ID, snap.encode())
	putHead(repo, b, &snap, parent)
	if err := b.Commit(true); err != nil {
		return nil, fmt.Errorf("recording the snapshot: %w", err)
	}
	p.rep.Snapshot = snap.ID.String()
	if p.rep.Skipped == nil {
		p.rep.Skipped = []Skip{}
	}
	return &p.rep, nil
}

type trieNode struct {
	kids map[string]*trieNode
	root bool // a backed-up folder: saved whole
}

// saveTrie saves a directory above the backed-up folders: its own
// metadata, and only the entries leading to them.
func (p *pass) saveTrie(path string, t *trieNode, parent *Tree) (meta.TreeID, error) {
	names := make([]string, 0, len(t.kids))
	for n := range t.kids {
		names = append(names, n)
	}
	sort.Strings(names)
	tree := &Tree{}
	for _, name := range names {
		kid := t.kids[name]
		full := filepath.Join(path, name)
		fi, err := os.Lstat(full)
		if err != nil {
			p.skip(full, fmt.Sprintf("cannot read: %v", err))
			continue
		}
		var pn *Node
		if parent != nil {
			pn = parent.Find(name)
		}
		var n *Node
		if kid.root {
			n, err = p.saveEntry(full, fi, pn, nil)
		} else {
			if !fi.IsDir() {
				p.skip(full, "not a directory")
				continue
			}
			if p.changed != nil && pn != nil && pn.Type == TypeDir {
				// A watcher's pass looks only at what changed: the
				// directories above the folders keep the metadata the
				// last full pass read. Otherwise any program's file in
				// /home or /tmp would make each pass a new snapshot.
				c := *pn
				n = &c
			} else {
				n, err = p.nodeOf(full, fi)
			}
			if err == nil {
				var sub *Tree
				if sub, err = p.parentSubtree(pn); err == nil {
					n.Subtree, err = p.saveTrie(full, kid, sub)
				}
			}
		}
		if err != nil {
			return meta.TreeID{}, err
		}
		if n != nil {
			tree.Nodes = append(tree.Nodes, *n)
		}
	}
	return p.putTree(tree)
}

func (p *pass) parentSubtree(pn *Node) (*Tree, error) {
	if pn == nil || pn.Type != TypeDir {
		return nil, nil
	}
	t, err := LoadTree(p.repo.Index, pn.Subtree)
	if err != nil {
		return nil, fmt.Errorf("parent snapshot: %w", err)
	}
	return t, nil
}

// touched reports whether a limited pass (Options.Changed) must look at
// dir: it is changed, under a changed path, or above one. It costs one map
// look-up per level of dir, however many paths changed.
func (p *pass) touched(dir string) bool {
	if p.changed == nil || p.above[dir] {
		return true
	}
	for d := dir; ; d = filepath.Dir(d) {
		if p.changed[d] {
			return true
		}
		if d == "/" || d == "." {
			return false
		}
	}
}

// progress reports where the pass is, if asked to.
func (p *pass) progress(current string) {
	if p.opt.Progress == nil {
		return
	}
	pr := Progress{Files: p.rep.Files, Dirs: p.rep.Dirs, BytesRead: p.rep.BytesRead, NewBytes: p.rep.NewBytes,
		Bytes: p.rep.TotalBytes + p.cur, Current: current}
	if t := p.totals.Load(); t != nil {
		pr.TotalFiles, pr.TotalBytes = t[0], t[1]
	}
	p.opt.Progress(pr)
}

func (p *pass) skip(path, reason string) {
	p.rep.Skipped = append(p.rep.Skipped, Skip{Path: path, Reason: reason})
	p.log.Debug("backup: skipped", "path", path, "reason", reason)
}

// cacheDirTag is the signature a CACHEDIR.TAG file starts with
// (https://bford.info/cachedir/).
const cacheDirTag = "Signature: 8a477f597d28d172789f06886806bc55"

func isCacheDir(dir string) bool {
	f, err := os.Open(filepath.Join(dir, "CACHEDIR.TAG"))
	if err != nil {
		return false
	}
	defer f.Close()
	b := make([]byte, len(cacheDirTag))
	n, _ := io.ReadFull(f, b)
	return n == len(b) && string(b) == cacheDirTag
}

// ignoreFile is the per-directory exclude list.
const ignoreFile = ".fincryptignore"

type ignoreRule struct {
	dir, pattern string
}

// excluded reports whether the entry at path is excluded by a pattern of
// the pass or of a .fincryptignore file above it.
func (p *pass) excluded(path string, rules []ignoreRule) bool {
	return excludedBy(p.opt.Excludes, path, rules)
}

// excludedBy reports whether the entry at path matches one of the patterns
// excludes or of the .fincryptignore rules above it.
func excludedBy(excludes []string, path string, rules []ignoreRule) bool {
	base := filepath.Base(path)
	for _, pat := range excludes {
		if m, _ := filepath.Match(pat, base); m {
			return true
		}
		if m, _ := filepath.Match(pat, path); m {
			return true
		}
	}
	for _, r := range rules {
		if m, _ := filepath.Match(r.pattern, base); m {
			return true
		}
		if rel, err := filepath.Rel(r.dir, path); err == nil {
			if m, _ := filepath.Match(r.pattern, rel); m {
				return true
			}
		}
	}
	return false
}

func readIgnore(dir string) []ignoreRule {
	b, err := os.ReadFile(filepath.Join(dir, ignoreFile))
	if err != nil {
		return nil
	}
	var out []ignoreRule
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if _, err := filepath.Match(line, ""); err != nil {
			continue
		}
		out = append(out, ignoreRule{dir: dir, pattern: strings.TrimSuffix(line, "/")})
	}
	return out
}

func (p *pass) saveDir(path string, parent *Tree) (meta.TreeID, error) {
	return p.saveDirRules(path, parent, nil)
}

func (p *pass) saveDirRules(path string, parent *Tree, rules []ignoreRule) (meta.TreeID, error) {
	if err := p.ctx.Err(); err != nil {
		return meta.TreeID{}, err
	}
	before := totals{p.rep.Files, p.rep.Dirs, p.rep.TotalBytes}
	id, err := p.listDir(path, parent, rules)
	if err == nil {
		rememberTotals(p.repo.Index, id, totals{p.rep.Files - before.files, p.rep.Dirs - before.dirs, p.rep.TotalBytes - before.bytes})
	}
	return id, err
}

func (p *pass) listDir(path string, parent *Tree, rules []ignoreRule) (meta.TreeID, error) {
	rules = append(slices.Clip(rules), readIgnore(path)...)
	f, err := os.Open(path)
	if err != nil {
		return meta.TreeID{}, err
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return meta.TreeID{}, err
	}
	sort.Strings(names)
	tree := &Tree{}
	for _, name := range names {
		full := filepath.Join(path, name)
		if p.excluded(full, rules) {
			continue
		}
		fi, err := os.Lstat(full)
		if errors.Is(err, fs.ErrNotExist) {
			p.skip(full, "vanished while the folder was read")
			continue
		}
		if err != nil {
			p.skip(full, fmt.Sprintf("cannot read: %v", err))
			continue
		}
		var pn *Node
		if parent != nil {
			pn = parent.Find(name)
		}
		n, err := p.saveEntry(full, fi, pn, rules)
		if err != nil {
			return meta.TreeID{}, err
		}
		if n != nil {
			tree.Nodes = append(tree.Nodes, *n)
		}
	}
	return p.putTree(tree)
}

// nodeOf is the metadata of the entry at path.
func (p *pass) nodeOf(path string, fi fs.FileInfo) (*Node, error) {
	st := fi.Sys().(*syscall.Stat_t)
	n := &Node{Name: fi.Name(), Mode: uint32(st.Mode) & 0o7777, Uid: st.Uid, Gid: st.Gid,
		Mtime: st.Mtim.Nano(), Ctime: st.Ctim.Nano(), Dev: uint64(st.Dev), Inode: st.Ino, Nlink: uint32(st.Nlink)}
	if path == "/" {
		n.Name = "/"
	}
	switch fi.Mode().Type() {
	case 0:
		n.Type, n.Size = TypeFile, uint64(st.Size)
	case fs.ModeDir:
		n.Type = TypeDir
	case fs.ModeSymlink:
		n.Type = TypeSymlink
		t, err := os.Readlink(path)
		if err != nil {
			return nil, err
		}
		n.Target, n.Size = t, uint64(len(t))
	}
	xs, err := readXattrs(path)
	if err != nil {
		p.log.Debug("backup: extended attributes", "path", path, "err", err)
	}
	n.Xattrs = xs
	return n, nil
}

func readXattrs(path string) ([]Xattr, error) {
	sz, err := unix.Llistxattr(path, nil)
	if err != nil || sz == 0 {
		if errors.Is(err, unix.ENOTSUP) {
			err = nil
		}
		return nil, err
	}
	buf := make([]byte, sz)
	sz, err = unix.Llistxattr(path, buf)
	if err != nil {
		return nil, err
	}
	var out []Xattr
	for _, name := range strings.Split(string(buf[:sz]), "\x00") {
		if name == "" {
			continue
		}
		vs, err := unix.Lgetxattr(path, name, nil)
		if err != nil {
			continue
		}
		v := make([]byte, vs)
		vs, err = unix.Lgetxattr(path, name, v)
		if err != nil {
			continue
		}
		out = append(out, Xattr{Name: name, Value: v[:vs]})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// saveEntry saves one entry; nil (and no error) means it was skipped.
func (p *pass) saveEntry(path string, fi fs.FileInfo, pn *Node, rules []ignoreRule) (*Node, error) {
	switch fi.Mode().Type() {
	case 0, fs.ModeDir, fs.ModeSymlink:
	case fs.ModeSocket:
		p.skip(path, "socket (not kept)")
		return nil, nil
	case fs.ModeNamedPipe:
		p.skip(path, "fifo (not kept)")
		return nil, nil
	case fs.ModeDevice, fs.ModeDevice | fs.ModeCharDevice:
		p.skip(path, "device (not kept)")
		return nil, nil
	default:
		p.skip(path, fmt.Sprintf("unsupported file type %v", fi.Mode().Type()))
		return nil, nil
	}
	n, err := p.nodeOf(path, fi)
	if errors.Is(err, fs.ErrNotExist) {
		p.skip(path, "vanished while it was read")
		return nil, nil
	}
	if err != nil {
		p.skip(path, fmt.Sprintf("cannot read: %v", err))
		return nil, nil
	}
	switch n.Type {
	case TypeDir:
		if !p.opt.KeepCaches && isCacheDir(path) {
			p.skip(path, "cache directory (CACHEDIR.TAG)")
			return nil, nil
		}
		p.rep.Dirs++
		if !p.touched(path) && pn != nil && pn.Type == TypeDir {
			// A limited pass: this directory did not change. Its files count in
			// the snapshot's totals all the same.
			tt, err := p.treeTotals(pn.Subtree)
			if err != nil {
				return nil, fmt.Errorf("parent snapshot: %w", err)
			}
			p.rep.Files += tt.files
			p.rep.Unchanged += tt.files
			p.rep.Dirs += tt.dirs
			p.rep.TotalBytes += tt.bytes
			n.Subtree = pn.Subtree
			return n, nil
		}
		sub, err := p.parentSubtree(pn)
		if err != nil {
			return nil, err
		}
		id, err := p.saveDirRules(path, sub, rules)
		if errors.Is(err, fs.ErrNotExist) {
			p.skip(path, "vanished while it was read")
			return nil, nil
		}
		if errors.Is(err, fs.ErrPermission) {
			p.skip(path, fmt.Sprintf("unreadable: %v", err))
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		n.Subtree = id
	case TypeFile:
		ok, err := p.saveFile(path, n, pn)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, nil
		}
		p.rep.Files++
		p.rep.TotalBytes += n.Size
	}
	p.progress(path)
	return n, nil
}

// unchanged reports whether a file's metadata proves it holds what the
// parent snapshot's entry holds.
func unchanged(n, pn *Node) bool {
	return pn != nil && pn.Type == TypeFile && pn.Size == n.Size && pn.Mtime == n.Mtime &&
		pn.Ctime == n.Ctime && pn.Inode == n.Inode && pn.Dev == n.Dev
}

// saveFile fills n.Blobs; false means the file was skipped (said in the
// report). An error stops the pass.
func (p *pass) saveFile(path string, n, pn *Node) (bool, error) {
	if unchanged(n, pn) && p.haveBlobs(pn.Blobs) {
		n.Blobs = pn.Blobs
		p.rep.Unchanged++
		return true, nil
	}
	key := [2]uint64{n.Dev, n.Inode}
	if n.Nlink > 1 {
		if prev := p.links[key]; prev != nil && prev.Size == n.Size && prev.Mtime == n.Mtime && prev.Ctime == n.Ctime {
			n.Blobs = prev.Blobs
			return true, nil
		}
	}
	for try := 0; ; try++ {
		if recent(n.Ctime, time.Now()) {
			// Written a moment ago: read once a write that may be in
			// flight has landed, with the metadata it has then.
			if err := p.settle(n.Ctime); err != nil {
				return false, err
			}
			if !p.restat(path, n) {
				return false, nil
			}
		}
		blobs, size, stable, err := p.readFile(path, n)
		if errors.Is(err, fs.ErrNotExist) {
			p.skip(path, "vanished while it was read")
			return false, nil
		}
		var pe *fs.PathError
		if errors.As(err, &pe) {
			p.skip(path, fmt.Sprintf("unreadable: %v", pe.Err))
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if stable {
			n.Blobs, n.Size = blobs, size
			break
		}
		if try >= p.opt.Rereads {
			p.skip(path, fmt.Sprintf("changed while it was read (%d times); not captured half-way", try+1))
			return false, nil
		}
		// Read again, with the metadata it has now.
		if !p.restat(path, n) {
			return false, nil
		}
	}
	if n.Nlink > 1 {
		p.links[key] = n
	}
	return true, nil
}

// restat fills n with the file's metadata as it is now; false means the
// file was skipped (said in the report).
func (p *pass) restat(path string, n *Node) bool {
	fi, err := os.Lstat(path)
	if err != nil || !fi.Mode().IsRegular() {
		p.skip(path, "vanished or was replaced while it was read")
		return false
	}
	nn, err := p.nodeOf(path, fi)
	if err != nil {
		p.skip(path, fmt.Sprintf("cannot read: %v", err))
		return false
	}
	*n = *nn
	return true
}

func (p *pass) haveBlobs(ids []meta.ChunkID) bool {
	for _, id := range ids {
		if _, ok := p.newBlobs[id]; ok {
			continue
		}
		if _, err := p.repo.Index.GetBlob(id); err != nil {
			return false
		}
	}
	return true
}

// settleTime: a write sets a file's mtime and ctime when it starts, not when
// its last byte lands, so a read that began while a write was copying its
// data sees part of it, and the times at the end of the read are the ones
// at its start. A read counts as stable only if the file's ctime is older
// than settleTime when the read starts: longer than a kernel tick (the
// times' granularity without fine-grained timestamps) and than one write
// of tens of MiB.
const settleTime = 50 * time.Millisecond

// recent reports whether ctime (ns) falls within settleTime of t. A ctime
// further ahead (a clock set back) says nothing about writes in flight.
func recent(ctime int64, t time.Time) bool {
	return ctime > t.Add(-settleTime).UnixNano() && ctime < t.Add(settleTime).UnixNano()
}

// settle waits until ctime (ns) is settleTime old, if it is recent.
func (p *pass) settle(ctime int64) error {
	now := time.Now()
	if !recent(ctime, now) {
		return nil
	}
	t := time.NewTimer(time.Unix(0, ctime).Add(settleTime).Sub(now))
	defer t.Stop()
	select {
	case <-p.ctx.Done():
		return p.ctx.Err()
	case <-t.C:
		return nil
	}
}

// readFile chunks and stores the file; stable is false if it changed while
// it was read (size, mtime or ctime differ from n, or the length read) or
// may have (its ctime is recent: settleTime).
func (p *pass) readFile(path string, n *Node) (blobs []meta.ChunkID, size uint64, stable bool, err error) {
	start := time.Now()
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOATIME, 0)
	if errors.Is(err, fs.ErrPermission) {
		f, err = os.Open(path) // O_NOATIME needs ownership
	}
	if err != nil {
		return nil, 0, false, err
	}
	defer f.Close()
	p.ch.ResetWithBoundaries(f, p.pol, MinBlob, MaxBlob)
	p.ch.SetAverageBits(averageBits)
	defer func() { p.cur = 0 }()
	p.cur = 0
	for {
		if err := p.ctx.Err(); err != nil {
			return nil, 0, false, err
		}
		c, err := p.ch.Next(p.buf)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, 0, false, &fs.PathError{Op: "read", Path: path, Err: err}
		}
		size += uint64(c.Length)
		p.rep.BytesRead += uint64(c.Length)
		id, err := p.storeBlob(c.Data)
		if err != nil {
			return nil, 0, false, err
		}
		blobs = append(blobs, id)
		p.cur = size
		p.progress(path)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return nil, 0, false, err
	}
	stable = size == n.Size && uint64(st.Size) == n.Size && st.Mtim.Nano() == n.Mtime && st.Ctim.Nano() == n.Ctime &&
		!recent(n.Ctime, start)
	return blobs, size, stable, nil
}

// storeBlob seals and stores a blob unless the vault holds it already.
func (p *pass) storeBlob(data []byte) (meta.ChunkID, error) {
	id := meta.ChunkID(p.repo.Keys.BlobID("blob", data))
	if _, ok := p.newBlobs[id]; ok {
		return id, nil
	}
	if _, err := p.repo.Index.GetBlob(id); err == nil {
		return id, nil
	} else if !errors.Is(err, meta.ErrNotFound) {
		return id, err
	}
	p.sealBuf = p.repo.Keys.Blob.Seal(p.sealBuf[:0], data, id[:])
	err := p.repo.Store.Put(id, p.sealBuf)
	if errors.Is(err, fs.ErrExist) {
		// Left by an interrupted pass (no record names it): it may be torn.
		if err = p.repo.Store.Delete(id); err == nil {
			err = p.repo.Store.Put(id, p.sealBuf)
		}
	}
	if err != nil {
		return id, fmt.Errorf("storing a blob: %w", err)
	}
	p.newBlobs[id] = struct{}{}
	p.batch.PutBlob(id, uint32(len(data)))
	p.rep.NewBytes += uint64(len(data))
	p.rep.NewBlobs++
	p.batchN++
	p.batchB += uint64(len(data))
	if p.batchN >= 512 || p.batchB >= 64<<20 {
		return id, p.flush(false)
	}
	return id, nil
}

// putTree records a tree unless it exists.
func (p *pass) putTree(t *Tree) (meta.TreeID, error) {
	enc := t.encode()
	id := meta.TreeID(p.repo.Keys.BlobID("tree", enc))
	if _, ok := p.newTrees[id]; ok {
		return id, nil
	}
	if ok, err := p.repo.Index.HasTree(id); err != nil || ok {
		return id, err
	}
	p.newTrees[id] = struct{}{}
	p.batch.PutTree(id, enc)
	p.batchN++
	return id, nil
}

// flush makes the blobs stored so far durable, then commits their records
// (and the trees), so that no record ever names a blob a crash could lose.
func (p *pass) flush(sync bool) error {
	if err := p.repo.Store.Sync(); err != nil {
		return err
	}
	if err := p.batch.Commit(sync); err != nil {
		p.batch = nil
		return fmt.Errorf("recording blobs: %w", err)
	}
	p.batch = p.repo.Index.NewBatch()
	p.batchN, p.batchB = 0, 0
	return nil
}

// totals are the files, folders and file bytes under a tree (the tree's
// own folder not counted).
type totals struct{ files, dirs, bytes uint64 }

// treeTotalsCache remembers the totals of trees this process saved or
// counted: trees are immutable and named by their content, so an entry never
// goes stale. A watcher's pass then adds an unchanged folder's totals with
// one look-up instead of reading its trees. It is emptied past maxTreeTotals
// entries.
var treeTotalsCache = struct {
	sync.Mutex
	m map[treeKey]totals
}{m: map[treeKey]totals{}}

const maxTreeTotals = 1 << 20

type treeKey struct {
	idx *meta.Index
	id  meta.TreeID
}

func rememberTotals(idx *meta.Index, id meta.TreeID, t totals) {
	treeTotalsCache.Lock()
	defer treeTotalsCache.Unlock()
	if len(treeTotalsCache.m) >= maxTreeTotals {
		clear(treeTotalsCache.m)
	}
	treeTotalsCache.m[treeKey{idx, id}] = t
}

// treeTotals is the totals of tree id: remembered, or counted from its
// records (and then remembered, for every subtree too).
func (p *pass) treeTotals(id meta.TreeID) (totals, error) {
	treeTotalsCache.Lock()
	t, ok := treeTotalsCache.m[treeKey{p.repo.Index, id}]
	treeTotalsCache.Unlock()
	if ok {
		return t, nil
	}
	tree, err := LoadTree(p.repo.Index, id)
	if err != nil {
		return t, err
	}
	for i := range tree.Nodes {
		n := &tree.Nodes[i]
		switch n.Type {
		case TypeFile:
			t.files++
			t.bytes += n.Size
		case TypeDir:
			sub, err := p.treeTotals(n.Subtree)
			if err != nil {
				return t, err
			}
			t.files += sub.files
			t.dirs += sub.dirs + 1
			t.bytes += sub.bytes
		}
	}
	rememberTotals(p.repo.Index, id, t)
	return t, nil
}

// LoadTree reads and decodes tree id.
func LoadTree(idx *meta.Index, id meta.TreeID) (*Tree, error) {
	b, err := idx.GetTree(id)
	if err != nil {
		return nil, err
	}
	t, err := decodeTree(b)
	if err != nil {
		return nil, fmt.Errorf("tree %x: %w", id[:], err)
	}
	return t, nil
}
