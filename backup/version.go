package backup

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/fincrypt/fincrypt/meta"
	"github.com/fincrypt/fincrypt/vault"
)

// Versions of the mount (docs/FORMAT.md §6, "Versions of the mount"). A
// version is a snapshot record of source SourceMount whose root tree is the
// mount's root directory, built from the index as it is at one instant (a
// read-only view): the same tree records as backups (content-addressed, so
// a directory that did not change is the same record in every version and
// is stored once), with a file's contents named by its chunk ids instead of
// blobs. Nothing is copied: each chunk a version names gets a pin record
// (meta.Pin) that keeps it, locally and on the network, after the file
// drops it, until forget drops every version that names it (Sweep).

// VersionOptions tune TakeVersion.
type VersionOptions struct {
	// ChunkSize is the vault's chunk size (a pinned chunk's offset in its
	// file is its index times this).
	ChunkSize uint64
	// Host is recorded in the snapshot; empty means os.Hostname.
	Host string
	// Time is the version's time; zero means now.
	Time time.Time
	// Force records a version even if nothing changed since the newest one.
	Force bool
}

// VersionReport is what TakeVersion did.
type VersionReport struct {
	Snapshot   string `json:"snapshot,omitempty"` // empty: nothing changed, no version recorded
	Unchanged  bool   `json:"unchanged"`
	Files      uint64 `json:"files"`
	Dirs       uint64 `json:"dirs"`
	Skipped    uint64 `json:"skipped"` // fifos, sockets and devices (not kept)
	NewBytes   uint64 `json:"new_bytes"`
	NewChunks  uint64 `json:"new_chunks"` // chunks pinned for the first time
	NewTrees   uint64 `json:"new_trees"`
	TotalBytes uint64 `json:"total_bytes"`
	// IndexBytes is the size of the records the version added to the
	// index (keys and values before sealing): its trees, pins and record.
	IndexBytes uint64 `json:"index_bytes"`
	// Incremental says the version read only what changed since the
	// last one (Versioner), not the whole tree.
	Incremental bool `json:"incremental,omitempty"`
}

// testHookAfterPins, set by tests, runs after a version's pins and trees
// are committed and before its record: an error there stands for a crash.
var testHookAfterPins func() error

// ErrNoRoot means the index holds no root directory (a vault never mounted).
var ErrNoRoot = errors.New("the vault has no root directory yet (mount it once)")

// versionFlush is how many records a version commits in one batch (a
// variable for tests).
var versionFlush = 4096

// testHookFlush, set by tests, runs after each of a version's batches but
// its last: an error there stands for a crash.
var testHookFlush func() error

// versionFeedMax is how many change marks (changed inodes and
// directories) a Versioner reads into memory; more make the version read
// the whole tree.
const versionFeedMax = 1 << 20

// vtotals counts what a tree holds, its subtrees included.
type vtotals struct{ files, dirs, skipped, bytes uint64 }

func (t *vtotals) add(o vtotals) {
	t.files += o.files
	t.dirs += o.dirs
	t.skipped += o.skipped
	t.bytes += o.bytes
}

// dirState is what a Versioner remembers of a directory of its last
// version: its tree and what the tree holds.
type dirState struct {
	tree meta.TreeID
	sum  vtotals
}

// Version cache records (meta's `U d` and `U p` values, docs/FORMAT.md §6).
const (
	dirStateV1 = 1
	parentsV1  = 1
	dirStateSz = 1 + meta.TreeIDSize + 4*8
)

func (d dirState) encode() []byte {
	b := append([]byte{dirStateV1}, d.tree[:]...)
	for _, v := range []uint64{d.sum.files, d.sum.dirs, d.sum.skipped, d.sum.bytes} {
		b = binary.BigEndian.AppendUint64(b, v)
	}
	return b
}

func decodeDirState(b []byte) (dirState, error) {
	if len(b) != dirStateSz || b[0] != dirStateV1 {
		return dirState{}, fmt.Errorf("directory record of %d bytes: %w", len(b), ErrCorrupt)
	}
	var d dirState
	copy(d.tree[:], b[1:])
	r := &reader{b: b[1+meta.TreeIDSize:]}
	d.sum = vtotals{r.u64(), r.u64(), r.u64(), r.u64()}
	return d, nil
}

func encodeParents(p []uint64) []byte {
	b := []byte{parentsV1}
	for _, d := range p {
		b = binary.BigEndian.AppendUint64(b, d)
	}
	return b
}

func decodeParents(b []byte) ([]uint64, error) {
	if len(b) < 9 || (len(b)-1)%8 != 0 || b[0] != parentsV1 {
		return nil, fmt.Errorf("parents record of %d bytes: %w", len(b), ErrCorrupt)
	}
	out := make([]uint64, 0, (len(b)-1)/8)
	for i := 1; i < len(b); i += 8 {
		out = append(out, binary.BigEndian.Uint64(b[i:]))
	}
	return out, nil
}

// Versioner records versions of the mount as TakeVersion does, in
// proportion to what changed since its last version: it reads the index's
// change marks (meta.CutTree, TreeMarks) and rebuilds only the directories
// that hold a changed inode or entry and their ancestors, taking every
// other subtree, and every unchanged entry of a rebuilt directory, from its
// last version. What it needs of the last version is in the index's version
// cache (meta's `U` records: each directory's tree and totals, each
// entry's directories), written in the version's own batches, so a
// Versioner of a remounted vault carries on where the last one stopped. A
// version without a cache header (the vault's first, one after a forget
// deleted trees or pins, after more than 2^20 changes, or whose cache
// records do not decode) reads the whole tree and writes the cache afresh.
// One Versioner per index; its Take calls are serialised.
type Versioner struct {
	repo Repo
	mu   sync.Mutex
}

// NewVersioner makes a Versioner for repo.
func NewVersioner(repo Repo) *Versioner { return &Versioner{repo: repo} }

// Take records a version as TakeVersion does.
func (s *Versioner) Take(opt VersionOptions) (*VersionReport, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return buildVersion(s.repo, opt, s)
}

// The version cache as this version sees and changes it: records read
// from the view (never in a fresh one, which starts them afresh) or
// written by this version (nil: deleted), written out at its end.
type vcache struct {
	fresh   bool
	dirs    map[uint64]*dirState
	parents map[uint64][]uint64
	dirtyD  map[uint64]struct{}
	dirtyP  map[uint64]struct{}
}

func newVcache(fresh bool) *vcache {
	return &vcache{fresh: fresh, dirs: map[uint64]*dirState{}, parents: map[uint64][]uint64{},
		dirtyD: map[uint64]struct{}{}, dirtyP: map[uint64]struct{}{}}
}

func (v *versioner) dirState(ino uint64) (dirState, bool, error) {
	c := v.c
	if st, ok := c.dirs[ino]; ok || c.fresh {
		if st == nil {
			return dirState{}, false, nil
		}
		return *st, true, nil
	}
	b, err := v.view.GetTreeCache(meta.TreeCacheDir, ino)
	if errors.Is(err, meta.ErrNotFound) {
		c.dirs[ino] = nil
		return dirState{}, false, nil
	}
	if err != nil {
		return dirState{}, false, err
	}
	st, err := decodeDirState(b)
	if err != nil {
		return st, false, fmt.Errorf("directory %d: %w", ino, err)
	}
	c.dirs[ino] = &st
	return st, true, nil
}

func (v *versioner) parentsOf(ino uint64) ([]uint64, error) {
	c := v.c
	if p, ok := c.parents[ino]; ok || c.fresh {
		return p, nil
	}
	b, err := v.view.GetTreeCache(meta.TreeCacheParents, ino)
	if errors.Is(err, meta.ErrNotFound) {
		c.parents[ino] = nil
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	p, err := decodeParents(b)
	if err != nil {
		return nil, fmt.Errorf("entry %d: %w", ino, err)
	}
	c.parents[ino] = p
	return p, nil
}

func (v *versioner) link(ino, dir uint64) error {
	p, err := v.parentsOf(ino)
	if err != nil || slices.Contains(p, dir) {
		return err
	}
	v.c.parents[ino] = append(p, dir)
	v.c.dirtyP[ino] = struct{}{}
	return nil
}

func (v *versioner) unlink(ino, dir uint64) error {
	p, err := v.parentsOf(ino)
	if i := slices.Index(p, dir); err == nil && i >= 0 {
		v.c.parents[ino] = slices.Delete(slices.Clone(p), i, i+1)
		v.c.dirtyP[ino] = struct{}{}
	}
	return err
}

func (v *versioner) forget(ino uint64) {
	v.c.dirs[ino], v.c.parents[ino] = nil, nil
	v.c.dirtyD[ino], v.c.dirtyP[ino] = struct{}{}, struct{}{}
}

// writeCache puts what this version changed of the cache into its batch:
// all in its last batch (with the header) for an incremental version, so
// the records always describe the trees they name; a fresh cache, which
// counts only once its header is written, may take several.
func (v *versioner) writeCache() error {
	note := func() error {
		if v.c.fresh {
			return v.note()
		}
		return nil
	}
	for ino := range v.c.dirtyD {
		if st := v.c.dirs[ino]; st != nil {
			v.batch.PutTreeCache(meta.TreeCacheDir, ino, st.encode())
		} else if !v.c.fresh {
			v.batch.DeleteTreeCache(meta.TreeCacheDir, ino)
		}
		if err := note(); err != nil {
			return err
		}
	}
	for ino := range v.c.dirtyP {
		if p := v.c.parents[ino]; len(p) > 0 {
			v.batch.PutTreeCache(meta.TreeCacheParents, ino, encodeParents(p))
		} else if !v.c.fresh {
			v.batch.DeleteTreeCache(meta.TreeCacheParents, ino)
		}
		if err := note(); err != nil {
			return err
		}
	}
	return nil
}

type versioner struct {
	repo     Repo
	cs       uint64
	batch    *meta.Batch
	n        int
	newTrees map[meta.TreeID]struct{}
	rep      VersionReport
	view     *meta.Index

	// The index as the view holds it, read in one pass of each kind
	// (a full version; nil in an incremental one, which looks up what it
	// needs in the view).
	dirents map[uint64][]meta.Dirent
	inodes  map[uint64]meta.Inode
	chunks  map[uint64][]chunkAt
	xattrs  map[uint64][]Xattr
	pinned  map[meta.ChunkID]struct{}
	full    bool

	// The Versioner it records into (nil: TakeVersion, no cache), its
	// cache, and in an incremental version what the marks named: the
	// changed inodes, the directories to rebuild, and what it saw of them.
	s       *Versioner
	c       *vcache
	changed map[uint64]struct{}
	marked  map[uint64]struct{}
	visited map[uint64]struct{}
	seen    map[uint64]struct{}
}

type chunkAt struct {
	idx uint64
	ref meta.ChunkRef
}

// load reads the view's directory entries, inodes, chunk maps, extended
// attributes and pins: sequential scans, far cheaper than a lookup per file.
func (v *versioner) load(view *meta.Index) error {
	v.full = true
	v.dirents = map[uint64][]meta.Dirent{}
	v.inodes = map[uint64]meta.Inode{}
	v.chunks = map[uint64][]chunkAt{}
	v.xattrs = map[uint64][]Xattr{}
	v.pinned = map[meta.ChunkID]struct{}{}
	var bad error
	err := view.WalkTree(meta.Visitor{
		Dirent: func(d meta.Dirent) { v.dirents[d.Parent] = append(v.dirents[d.Parent], d) },
		Inode:  func(n meta.Inode) { v.inodes[n.Ino] = n },
		Chunk: func(ino, idx uint64, ref meta.ChunkRef) {
			v.chunks[ino] = append(v.chunks[ino], chunkAt{idx, ref})
		},
		Xattr: func(ino uint64, name string, value []byte) {
			v.xattrs[ino] = append(v.xattrs[ino], Xattr{name, append([]byte(nil), value...)})
		},
		Pin: func(id meta.ChunkID, _ meta.Pin) { v.pinned[id] = struct{}{} },
		Bad: func(key []byte, err error) {
			if bad == nil {
				bad = fmt.Errorf("index record %x: %w (run fincrypt check)", key, err)
			}
		},
	})
	if err == nil {
		err = bad // a version must not miss what an unreadable record held
	}
	return err
}

// The view's records, from the maps of a full version or looked up.

func (v *versioner) entries(dir uint64) ([]meta.Dirent, error) {
	if v.full {
		return v.dirents[dir], nil
	}
	var out []meta.Dirent
	err := v.view.ListDir(dir, func(d meta.Dirent) error { out = append(out, d); return nil })
	return out, err
}

func (v *versioner) inode(ino uint64) (meta.Inode, bool, error) {
	if v.full {
		in, ok := v.inodes[ino]
		return in, ok, nil
	}
	in, err := v.view.GetInode(ino)
	if errors.Is(err, meta.ErrNotFound) {
		return in, false, nil
	}
	return in, err == nil, err
}

func (v *versioner) xattrsOf(ino uint64) ([]Xattr, error) {
	if v.full {
		return v.xattrs[ino], nil
	}
	var out []Xattr
	err := v.view.ListXattr(ino, func(name string, value []byte) error {
		out = append(out, Xattr{name, append([]byte(nil), value...)})
		return nil
	})
	return out, err
}

func (v *versioner) chunksOf(ino uint64) ([]chunkAt, error) {
	if v.full {
		return v.chunks[ino], nil
	}
	var out []chunkAt
	err := v.view.Chunks(ino, 0, func(idx uint64, ref meta.ChunkRef) error {
		out = append(out, chunkAt{idx, ref})
		return nil
	})
	return out, err
}

func (v *versioner) isPinned(id meta.ChunkID) (bool, error) {
	if _, ok := v.pinned[id]; ok || v.full {
		return ok, nil
	}
	return v.view.Pinned(id)
}

// TakeVersion records a version of the mount's whole tree, as the index
// holds it now (what open files have not committed yet is not in it). It
// records nothing (rep.Unchanged) when the tree is the newest version's,
// unless opt.Force. Order of writes: the new trees and pins (synced), then
// the snapshot record (synced): a crash before the record leaves pins and
// trees no snapshot names, kept until the next forget sweeps them. It reads
// the whole tree; a Versioner reads what changed since its last version.
func TakeVersion(repo Repo, opt VersionOptions) (*VersionReport, error) {
	return buildVersion(repo, opt, nil)
}

func buildVersion(repo Repo, opt VersionOptions, s *Versioner) (*VersionReport, error) {
	if opt.ChunkSize == 0 {
		return nil, errors.New("version: no chunk size")
	}
	defer lockIndex(repo.Index)() // a sweep must not see pins before their snapshot
	if opt.Host == "" {
		opt.Host, _ = os.Hostname()
	}
	if opt.Time.IsZero() {
		opt.Time = time.Now()
	}
	last, err := newestOf(repo, SourceMount, nil)
	if err != nil {
		return nil, err
	}
	// No chunk a file drops meanwhile is deleted between being seen and
	// being pinned.
	release := repo.Index.LockDrops()
	held := true
	defer func() {
		if held {
			release()
		}
	}()
	// The marks' epoch first, then the view: the view holds every change
	// the marks up to the epoch name.
	var ch meta.TreeChanges
	var epoch uint64
	incremental := false
	if s != nil {
		epoch = repo.Index.CutTree()
		if _, ok, err := repo.Index.TreeCacheBase(); err == nil && ok {
			var complete bool
			ch, complete, err = repo.Index.TreeMarks(epoch, versionFeedMax)
			incremental = err == nil && complete
		}
	}
	view, closeView := repo.Index.View()
	defer closeView()
	v := &versioner{repo: repo, cs: opt.ChunkSize, batch: repo.Index.NewBatch(), newTrees: map[meta.TreeID]struct{}{}, view: view, s: s}
	defer func() {
		if v.batch != nil {
			v.batch.Discard()
		}
	}()
	var rootID meta.TreeID
	var sum vtotals
	if incremental {
		v.c = newVcache(false)
		rootID, sum, err = v.incremental(ch)
		if err != nil {
			// What it remembered does not hold (a tree gone, a
			// record that does not decode): read everything, as a
			// first version does.
			incremental = false
			v.batch.Discard()
			v.batch, v.n = repo.Index.NewBatch(), 0
			v.rep, v.newTrees = VersionReport{}, map[meta.TreeID]struct{}{}
			v.pinned, v.changed, v.marked, v.visited, v.seen = nil, nil, nil, nil, nil
		}
	}
	if !incremental {
		if err := v.load(view); err != nil {
			return nil, err
		}
		if _, ok := v.inodes[meta.RootIno]; !ok {
			return nil, ErrNoRoot
		}
		if s != nil {
			v.c = newVcache(true)
			v.batch.ResetTreeCache()
		}
		if rootID, sum, err = v.dir(meta.RootIno); err != nil {
			return nil, err
		}
	}
	if s != nil {
		if err := v.writeCache(); err != nil {
			return nil, err
		}
		// The cache now describes every change of the epochs up to
		// epoch (in the same batch as its last records).
		v.batch.SetTreeCacheBase(epoch + 1)
	}
	v.rep.Files, v.rep.Dirs, v.rep.Skipped, v.rep.TotalBytes = sum.files, sum.dirs, sum.skipped, sum.bytes
	v.rep.Incremental = incremental
	if err := v.flush(true); err != nil {
		return nil, err
	}
	if testHookAfterPins != nil {
		if err := testHookAfterPins(); err != nil {
			return nil, err // a crash here: pins and trees, no record
		}
	}
	release()
	held = false
	if last != nil && last.Tree == rootID && !opt.Force {
		v.rep.Unchanged = true
		return &v.rep, nil
	}
	snap := Snapshot{ID: newSnapID(), Time: opt.Time, Host: opt.Host, Tree: rootID, Source: SourceMount,
		Files: v.rep.Files, Dirs: v.rep.Dirs, NewBytes: v.rep.NewBytes, TotalBytes: v.rep.TotalBytes}
	b := repo.Index.NewBatch()
	enc := snap.encode()
	b.PutBackupSnapshot(snap.ID, enc)
	putHead(repo, b, &snap, last)
	if err := b.Commit(true); err != nil {
		return nil, fmt.Errorf("recording the version: %w", err)
	}
	v.rep.IndexBytes += uint64(1 + len(snap.ID) + len(enc))
	v.rep.Snapshot = snap.ID.String()
	return &v.rep, nil
}

// incremental builds the version from the Versioner's last one and the
// changes since: it rebuilds the directories that hold a changed inode or
// entry, and their ancestors.
func (v *versioner) incremental(ch meta.TreeChanges) (meta.TreeID, vtotals, error) {
	v.pinned = map[meta.ChunkID]struct{}{} // pinned by this version
	v.changed = ch.Inodes
	v.marked = map[uint64]struct{}{}
	v.visited = map[uint64]struct{}{}
	v.seen = map[uint64]struct{}{}
	var mark func(d uint64) error
	mark = func(d uint64) error {
		if _, ok := v.marked[d]; ok {
			return nil
		}
		v.marked[d] = struct{}{}
		ps, err := v.parentsOf(d)
		for _, p := range ps {
			if err := mark(p); err != nil { // the directories that hold it change with it
				return err
			}
		}
		return err
	}
	for d := range ch.Dirs {
		if err := mark(d); err != nil {
			return meta.TreeID{}, vtotals{}, err
		}
	}
	for ino := range ch.Inodes {
		ps, err := v.parentsOf(ino)
		if err != nil {
			return meta.TreeID{}, vtotals{}, err
		}
		for _, p := range ps {
			if err := mark(p); err != nil {
				return meta.TreeID{}, vtotals{}, err
			}
		}
	}
	root, sum, err := v.dir(meta.RootIno)
	if err != nil {
		return root, sum, err
	}
	// What the changes removed from the tree: a marked directory it no
	// longer reaches, a changed inode no rebuilt directory holds.
	for d := range v.marked {
		if _, ok := v.visited[d]; !ok {
			v.forget(d)
		}
	}
	for ino := range ch.Inodes {
		if _, ok := v.seen[ino]; !ok {
			v.forget(ino)
		}
	}
	return root, sum, nil
}

func (v *versioner) flush(sync bool) error {
	err := v.batch.Commit(sync)
	v.batch = nil
	if err != nil {
		return fmt.Errorf("recording the version's trees and pins: %w", err)
	}
	v.batch = v.repo.Index.NewBatch()
	v.n = 0
	return nil
}

func (v *versioner) note() error {
	v.n++
	if v.n >= versionFlush {
		if err := v.flush(false); err != nil {
			return err
		}
		if testHookFlush != nil {
			return testHookFlush()
		}
	}
	return nil
}

// dir builds (and stores, if new) the tree of directory ino, and counts
// what it holds. In an incremental version a directory that is not marked
// is its last version's, and an entry of a marked one whose inode did not
// change is taken from its last tree.
func (v *versioner) dir(ino uint64) (meta.TreeID, vtotals, error) {
	var sum vtotals
	var old map[string]*Node
	var oldTree *Tree
	if v.marked != nil {
		st, ok, err := v.dirState(ino)
		if err != nil {
			return meta.TreeID{}, sum, err
		}
		if _, marked := v.marked[ino]; !marked && ok {
			return st.tree, st.sum, nil
		}
		v.visited[ino] = struct{}{}
		if ok {
			t, err := LoadTree(v.view, st.tree)
			if err != nil {
				return meta.TreeID{}, sum, fmt.Errorf("the last version's tree of directory %d: %w", ino, err)
			}
			oldTree = t
			old = make(map[string]*Node, len(t.Nodes))
			for i := range t.Nodes {
				old[t.Nodes[i].Name] = &t.Nodes[i]
			}
		}
	}
	ents, err := v.entries(ino)
	if err != nil {
		return meta.TreeID{}, sum, err
	}
	t := &Tree{Nodes: make([]Node, 0, len(ents))}
	for _, d := range ents {
		if v.marked != nil {
			v.seen[d.Ino] = struct{}{}
			if on := old[d.Name]; on != nil && on.Inode == d.Ino {
				if _, changed := v.changed[d.Ino]; !changed {
					if on.Type != TypeDir {
						t.Nodes = append(t.Nodes, *on)
						if on.Type == TypeFile {
							sum.files++
							sum.bytes += on.Size
						}
						continue
					}
					if _, marked := v.marked[d.Ino]; !marked {
						sub, ok, err := v.dirState(d.Ino)
						if err != nil {
							return meta.TreeID{}, sum, err
						}
						if ok && sub.tree == on.Subtree {
							t.Nodes = append(t.Nodes, *on)
							sum.dirs++
							sum.add(sub.sum)
							continue
						}
					}
				}
			}
		}
		in, ok, err := v.inode(d.Ino)
		if err != nil {
			return meta.TreeID{}, sum, err
		}
		if !ok {
			return meta.TreeID{}, sum, fmt.Errorf("entry %q of directory %d names missing inode %d: %w", d.Name, ino, d.Ino, meta.ErrNotFound)
		}
		n := Node{Name: d.Name, Mode: in.Mode & 0o7777, Uid: in.Uid, Gid: in.Gid, Mtime: in.Mtime, Ctime: in.Ctime,
			Inode: in.Ino, Nlink: in.Nlink, Size: in.Size}
		if n.Xattrs, err = v.xattrsOf(in.Ino); err != nil {
			return meta.TreeID{}, sum, err
		}
		sort.Slice(n.Xattrs, func(i, j int) bool { return n.Xattrs[i].Name < n.Xattrs[j].Name })
		switch in.Mode & syscall.S_IFMT {
		case syscall.S_IFDIR:
			n.Type, n.Size = TypeDir, 0
			var sub vtotals
			if n.Subtree, sub, err = v.dir(in.Ino); err != nil {
				return meta.TreeID{}, sum, err
			}
			sum.dirs++
			sum.add(sub)
		case syscall.S_IFLNK:
			n.Type, n.Target = TypeSymlink, string(in.Target)
		case syscall.S_IFREG:
			n.Type = TypeFile
			if err := v.file(&n); err != nil {
				return meta.TreeID{}, sum, err
			}
			sum.files++
			sum.bytes += n.Size
		default:
			sum.skipped++
			continue
		}
		t.Nodes = append(t.Nodes, n)
	}
	sort.Slice(t.Nodes, func(i, j int) bool { return t.Nodes[i].Name < t.Nodes[j].Name })
	enc := t.encode()
	id := meta.TreeID(v.repo.Keys.BlobID("tree", enc))
	if err := v.remember(ino, id, sum, oldTree, t); err != nil {
		return id, sum, err
	}
	if _, ok := v.newTrees[id]; ok {
		return id, sum, nil
	}
	if ok, err := v.repo.Index.HasTree(id); err != nil || ok {
		return id, sum, err
	}
	v.newTrees[id] = struct{}{}
	v.batch.PutTree(id, enc)
	v.rep.NewTrees++
	v.rep.IndexBytes += uint64(1 + meta.TreeIDSize + len(enc))
	return id, sum, v.note()
}

// remember records in the version cache, if any, directory ino's new
// tree and which inodes it holds (old: its tree in the last version, if
// known).
func (v *versioner) remember(ino uint64, id meta.TreeID, sum vtotals, old, t *Tree) error {
	if v.c == nil {
		return nil
	}
	v.c.dirs[ino] = &dirState{tree: id, sum: sum}
	v.c.dirtyD[ino] = struct{}{}
	// The cache's parents hold the entries of its trees (they change in
	// one batch): only what came or went since the old tree changes.
	was := map[uint64]struct{}{}
	if old != nil {
		now := make(map[uint64]struct{}, len(t.Nodes))
		for i := range t.Nodes {
			now[t.Nodes[i].Inode] = struct{}{}
		}
		for i := range old.Nodes {
			was[old.Nodes[i].Inode] = struct{}{}
			if _, ok := now[old.Nodes[i].Inode]; !ok {
				if err := v.unlink(old.Nodes[i].Inode, ino); err != nil {
					return err
				}
			}
		}
	}
	for i := range t.Nodes {
		if _, ok := was[t.Nodes[i].Inode]; ok {
			continue
		}
		if err := v.link(t.Nodes[i].Inode, ino); err != nil {
			return err
		}
	}
	return nil
}

// file names the chunks of file n.Inode in n.Blobs and pins those no pin
// keeps yet.
func (v *versioner) file(n *Node) error {
	var pins []meta.Pin
	var ids []meta.ChunkID
	chunks, err := v.chunksOf(n.Inode)
	if err != nil {
		return err
	}
	for _, c := range chunks { // in index order
		if c.idx*v.cs >= n.Size {
			continue // past the end (a truncation's leftover is never read)
		}
		ids = append(ids, c.ref.ID)
		pins = append(pins, meta.Pin{Ino: n.Inode, Index: c.idx, Version: c.ref.Version, Len: c.ref.Len, Offset: c.idx * v.cs})
	}
	n.Blobs = ids
	for i, id := range ids {
		ok, err := v.isPinned(id)
		if err != nil {
			return err
		}
		if ok {
			continue
		}
		v.pinned[id] = struct{}{}
		v.batch.PutPin(id, pins[i])
		v.rep.NewChunks++
		v.rep.IndexBytes += 1 + meta.ChunkIDSize + meta.PinRecordSize
		v.rep.NewBytes += uint64(pins[i].Len)
		if err := v.note(); err != nil {
			return err
		}
	}
	return nil
}

// Extent is one piece of a file of a snapshot: a backup blob, or a chunk a
// version pins, holding Len bytes from byte Off of the file.
type Extent struct {
	ID  meta.ChunkID
	Off uint64
	Len uint32
	pin *meta.Pin // nil: a blob
}

// Extents lists where the bytes of file n come from, in order. The bytes
// between extents (a sparse file's holes) and after the last are zeros.
func Extents(idx *meta.Index, n *Node) ([]Extent, error) {
	out := make([]Extent, 0, len(n.Blobs))
	var off uint64
	for _, id := range n.Blobs {
		bl, err := idx.GetBlob(id)
		if err == nil {
			out = append(out, Extent{ID: id, Off: off, Len: bl})
			off += uint64(bl)
			continue
		}
		if !errors.Is(err, meta.ErrNotFound) {
			return nil, fmt.Errorf("blob %s: %w", id, err)
		}
		p, err := idx.GetPin(id)
		if err != nil {
			return nil, fmt.Errorf("%s: content %s: %w", n.Name, id, err)
		}
		if p.Offset < off {
			return nil, fmt.Errorf("%s: chunk %s at %d overlaps the one before: %w", n.Name, id, p.Offset, ErrCorrupt)
		}
		out = append(out, Extent{ID: id, Off: p.Offset, Len: p.Len, pin: &p})
		off = p.Offset + uint64(p.Len)
	}
	if off > n.Size || (len(out) > 0 && out[0].pin == nil && off != n.Size) {
		return nil, fmt.Errorf("%s: its contents hold %d bytes, the entry says %d: %w", n.Name, off, n.Size, ErrCorrupt)
	}
	return out, nil
}

// ReadExtent appends the plaintext of e to dst: from the local store, or
// through its fetcher from the network. A blob is checked against its id,
// a pinned chunk by opening it as the chunk of its file it was sealed as.
func ReadExtent(repo Repo, e Extent, dst []byte, sealedBuf *[]byte) ([]byte, error) {
	if e.pin == nil {
		return ReadBlob(repo, e.ID, dst, sealedBuf)
	}
	sealed, err := repo.Store.Get(e.ID, (*sealedBuf)[:0])
	if err != nil {
		return dst, fmt.Errorf("chunk %s: %w", e.ID, err)
	}
	*sealedBuf = sealed
	out, err := repo.Keys.Chunk.Open(dst, sealed, vault.ChunkAD(e.pin.Ino, e.pin.Index, e.pin.Version))
	if err != nil {
		return dst, fmt.Errorf("chunk %s: %w", e.ID, err)
	}
	if len(out)-len(dst) != int(e.Len) {
		return dst, fmt.Errorf("chunk %s holds %d bytes, its pin says %d: %w", e.ID, len(out)-len(dst), e.Len, ErrCorrupt)
	}
	return out, nil
}
