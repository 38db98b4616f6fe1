package backup

import (
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

// versionFlush is how many records a version commits in one batch.
const versionFlush = 4096

// versionFeedMax is how many changed inodes and directories a Versioner's
// feed holds between two versions; more make the next version read the
// whole tree.
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

// Versioner records versions of the mount as TakeVersion does, in
// proportion to what changed since its last version: it follows the
// index's tree feed (meta.TrackTree) and rebuilds only the directories
// that hold a changed inode or entry and their ancestors, taking every
// other subtree, and every unchanged entry of a rebuilt directory, from its
// last version. Its first version, and any after the feed was incomplete
// (overflowed, a forget deleted trees or pins), reads the whole tree. It
// keeps in memory each directory's tree and vtotals, and each entry's
// directories (to find what holds a changed inode): about 25 bytes a file.
// One Versioner per index; its Take calls are serialised.
type Versioner struct {
	repo Repo

	mu      sync.Mutex
	have    bool        // base and the maps below describe the index as of the last feed taken
	base    meta.TreeID // the root tree of the last version built
	dirs    map[uint64]dirState
	parents map[uint64]uint64   // a tree entry's inode -> a directory holding it
	more    map[uint64][]uint64 // further directories holding it (hard links)
}

// NewVersioner makes a Versioner for repo and starts the index's tree
// feed. Call it before the changes it should follow.
func NewVersioner(repo Repo) *Versioner {
	repo.Index.TrackTree(versionFeedMax)
	return &Versioner{repo: repo}
}

// Take records a version as TakeVersion does.
func (s *Versioner) Take(opt VersionOptions) (*VersionReport, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rep, err := buildVersion(s.repo, opt, s)
	if err != nil {
		s.have = false // the feed it took is gone: the next reads everything
	}
	return rep, err
}

func (s *Versioner) parentsOf(ino uint64) []uint64 {
	p, ok := s.parents[ino]
	if !ok {
		return nil
	}
	return append([]uint64{p}, s.more[ino]...)
}

func (s *Versioner) link(ino, dir uint64) {
	p, ok := s.parents[ino]
	switch {
	case !ok:
		s.parents[ino] = dir
	case p == dir || slices.Contains(s.more[ino], dir):
	default:
		s.more[ino] = append(s.more[ino], dir)
	}
}

func (s *Versioner) unlink(ino, dir uint64) {
	if p, ok := s.parents[ino]; ok && p == dir {
		if m := s.more[ino]; len(m) > 0 {
			s.parents[ino] = m[0]
			if len(m) == 1 {
				delete(s.more, ino)
			} else {
				s.more[ino] = m[1:]
			}
		} else {
			delete(s.parents, ino)
		}
		return
	}
	m := s.more[ino]
	if i := slices.Index(m, dir); i >= 0 {
		m = slices.Delete(m, i, i+1)
		if len(m) == 0 {
			delete(s.more, ino)
		} else {
			s.more[ino] = m
		}
	}
}

func (s *Versioner) forget(ino uint64) {
	delete(s.parents, ino)
	delete(s.more, ino)
	delete(s.dirs, ino)
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

	// The Versioner it records into (nil: TakeVersion, no memory), and
	// in an incremental version what the feed named: the changed inodes,
	// the directories to rebuild, and what it saw of them.
	s       *Versioner
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
	// The feed first, then the view: the view holds every change the
	// feed names (a batch notes its changes once they are visible).
	var ch meta.TreeChanges
	incremental := false
	if s != nil {
		var complete bool
		ch, complete = repo.Index.TakeTree()
		incremental = complete && s.have
		s.have = false
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
		rootID, sum, err = v.incremental(ch)
		if err != nil {
			// What it remembered does not hold (a tree gone): read
			// everything, as a first version does.
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
			s.dirs, s.parents, s.more = map[uint64]dirState{}, map[uint64]uint64{}, map[uint64][]uint64{}
		}
		if rootID, sum, err = v.dir(meta.RootIno); err != nil {
			return nil, err
		}
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
	if s != nil {
		s.base, s.have = rootID, true
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
	s := v.s
	v.pinned = map[meta.ChunkID]struct{}{} // pinned by this version
	v.changed = ch.Inodes
	v.marked = map[uint64]struct{}{}
	v.visited = map[uint64]struct{}{}
	v.seen = map[uint64]struct{}{}
	var mark func(d uint64)
	mark = func(d uint64) {
		if _, ok := v.marked[d]; ok {
			return
		}
		v.marked[d] = struct{}{}
		for _, p := range s.parentsOf(d) {
			mark(p) // the directories that hold it change with it
		}
	}
	for d := range ch.Dirs {
		mark(d)
	}
	for ino := range ch.Inodes {
		for _, p := range s.parentsOf(ino) {
			mark(p)
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
			s.forget(d)
		}
	}
	for ino := range ch.Inodes {
		if _, ok := v.seen[ino]; !ok {
			s.forget(ino)
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
		return v.flush(false)
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
		st, ok := v.s.dirs[ino]
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
						if sub, ok := v.s.dirs[d.Ino]; ok && sub.tree == on.Subtree {
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
	v.remember(ino, id, sum, oldTree, t)
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

// remember records in the Versioner, if any, directory ino's new tree and
// which inodes it holds (old: its tree in the last version, if known).
func (v *versioner) remember(ino uint64, id meta.TreeID, sum vtotals, old, t *Tree) {
	s := v.s
	if s == nil {
		return
	}
	s.dirs[ino] = dirState{tree: id, sum: sum}
	if old != nil {
		now := make(map[uint64]struct{}, len(t.Nodes))
		for i := range t.Nodes {
			now[t.Nodes[i].Inode] = struct{}{}
		}
		for i := range old.Nodes {
			if _, ok := now[old.Nodes[i].Inode]; !ok {
				s.unlink(old.Nodes[i].Inode, ino)
			}
		}
	}
	for i := range t.Nodes {
		s.link(t.Nodes[i].Inode, ino)
	}
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
