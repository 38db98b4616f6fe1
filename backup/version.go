package backup

import (
	"errors"
	"fmt"
	"os"
	"sort"
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
}

// testHookAfterPins, set by tests, runs after a version's pins and trees
// are committed and before its record: an error there stands for a crash.
var testHookAfterPins func() error

// ErrNoRoot means the index holds no root directory (a vault never mounted).
var ErrNoRoot = errors.New("the vault has no root directory yet (mount it once)")

// versionFlush is how many records a version commits in one batch.
const versionFlush = 4096

type versioner struct {
	repo     Repo
	cs       uint64
	batch    *meta.Batch
	n        int
	newTrees map[meta.TreeID]struct{}
	rep      VersionReport

	// The index as the view holds it, read in one pass of each kind.
	dirents map[uint64][]meta.Dirent
	inodes  map[uint64]meta.Inode
	chunks  map[uint64][]chunkAt
	xattrs  map[uint64][]Xattr
	pinned  map[meta.ChunkID]struct{}
}

type chunkAt struct {
	idx uint64
	ref meta.ChunkRef
}

// load reads the view's directory entries, inodes, chunk maps, extended
// attributes and pins: sequential scans, far cheaper than a lookup per file.
func (v *versioner) load(view *meta.Index) error {
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

// TakeVersion records a version of the mount's whole tree, as the index
// holds it now (what open files have not committed yet is not in it). It
// records nothing (rep.Unchanged) when the tree is the newest version's,
// unless opt.Force. Order of writes: the new trees and pins (synced), then
// the snapshot record (synced): a crash before the record leaves pins and
// trees no snapshot names, kept until the next forget sweeps them.
func TakeVersion(repo Repo, opt VersionOptions) (*VersionReport, error) {
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
	view, closeView := repo.Index.View()
	defer closeView()
	v := &versioner{repo: repo, cs: opt.ChunkSize, batch: repo.Index.NewBatch(), newTrees: map[meta.TreeID]struct{}{}}
	if err := v.load(view); err != nil {
		return nil, err
	}
	if _, ok := v.inodes[meta.RootIno]; !ok {
		return nil, ErrNoRoot
	}
	defer func() {
		if v.batch != nil {
			v.batch.Discard()
		}
	}()
	rootID, err := v.dir(meta.RootIno)
	if err != nil {
		return nil, err
	}
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

// dir builds (and stores, if new) the tree of directory ino.
func (v *versioner) dir(ino uint64) (meta.TreeID, error) {
	ents := v.dirents[ino]
	t := &Tree{Nodes: make([]Node, 0, len(ents))}
	for _, d := range ents {
		in, ok := v.inodes[d.Ino]
		if !ok {
			return meta.TreeID{}, fmt.Errorf("entry %q of directory %d names missing inode %d: %w", d.Name, ino, d.Ino, meta.ErrNotFound)
		}
		n := Node{Name: d.Name, Mode: in.Mode & 0o7777, Uid: in.Uid, Gid: in.Gid, Mtime: in.Mtime, Ctime: in.Ctime,
			Inode: in.Ino, Nlink: in.Nlink, Size: in.Size}
		n.Xattrs = v.xattrs[in.Ino]
		var err error
		sort.Slice(n.Xattrs, func(i, j int) bool { return n.Xattrs[i].Name < n.Xattrs[j].Name })
		switch in.Mode & syscall.S_IFMT {
		case syscall.S_IFDIR:
			n.Type, n.Size = TypeDir, 0
			if n.Subtree, err = v.dir(in.Ino); err != nil {
				return meta.TreeID{}, err
			}
			v.rep.Dirs++
		case syscall.S_IFLNK:
			n.Type, n.Target = TypeSymlink, string(in.Target)
		case syscall.S_IFREG:
			n.Type = TypeFile
			if err := v.file(&n); err != nil {
				return meta.TreeID{}, err
			}
			v.rep.Files++
			v.rep.TotalBytes += n.Size
		default:
			v.rep.Skipped++
			continue
		}
		t.Nodes = append(t.Nodes, n)
	}
	sort.Slice(t.Nodes, func(i, j int) bool { return t.Nodes[i].Name < t.Nodes[j].Name })
	enc := t.encode()
	id := meta.TreeID(v.repo.Keys.BlobID("tree", enc))
	if _, ok := v.newTrees[id]; ok {
		return id, nil
	}
	if ok, err := v.repo.Index.HasTree(id); err != nil || ok {
		return id, err
	}
	v.newTrees[id] = struct{}{}
	v.batch.PutTree(id, enc)
	v.rep.NewTrees++
	v.rep.IndexBytes += uint64(1 + meta.TreeIDSize + len(enc))
	return id, v.note()
}

// file names the chunks of file n.Inode in n.Blobs and pins those no pin
// keeps yet.
func (v *versioner) file(n *Node) error {
	var pins []meta.Pin
	var ids []meta.ChunkID
	for _, c := range v.chunks[n.Inode] { // in index order
		if c.idx*v.cs >= n.Size {
			continue // past the end (a truncation's leftover is never read)
		}
		ids = append(ids, c.ref.ID)
		pins = append(pins, meta.Pin{Ino: n.Inode, Index: c.idx, Version: c.ref.Version, Len: c.ref.Len, Offset: c.idx * v.cs})
	}
	n.Blobs = ids
	for i, id := range ids {
		if _, ok := v.pinned[id]; ok {
			continue
		}
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
