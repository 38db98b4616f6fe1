package meta

import (
	"sync"
	"sync/atomic"
)

// The tree feed: which directories and inodes the committed batches
// changed, so that a version of the mount (backup.Versioner) rebuilds only
// the directories on the paths to what changed instead of reading the
// whole tree. Every write goes through Batch.set or Batch.del, which note
// its key: an inode, chunk-map or extended-attribute record names its
// inode (Inodes), a directory entry its directory (Dirs). Deleting a tree or
// a pin record (a forget's sweep) or importing raw records makes the feed
// incomplete: what a version built before may then be gone.
//
// The feed lives in memory only, for the process that tracks it. Unlike the
// live-bytes feed it is exact, not a hint: a change it misses would be
// missing from a version. A batch notes its changes after its commit is
// visible, so a consumer that takes the feed and then opens a View sees
// every change the feed held (and perhaps a few more, which it takes again
// next time: rebuilding an unchanged directory changes nothing).

// TreeChanges is what the batches committed since the last TakeTree
// changed of the mount's tree.
type TreeChanges struct {
	Inodes map[uint64]struct{} // inode, chunk-map or extended-attribute records written or deleted
	Dirs   map[uint64]struct{} // directories with an entry written or deleted
}

type treeFeed struct {
	on       atomic.Bool
	marks    atomic.Bool  // batches write change marks (treecache.go)
	cut      sync.RWMutex // commits that write marks hold it for reading, CutTree for writing
	epoch    uint64       // the epoch marks are written in (under cut)
	mu       sync.Mutex
	max      int
	ch       TreeChanges
	overflow bool
}

// TrackTree starts recording the tree changes of committed batches, at
// most max inodes and directories between two TakeTree calls (more make
// TakeTree report the feed incomplete).
func (x *Index) TrackTree(max int) {
	f := &x.treeFeed
	f.mu.Lock()
	defer f.mu.Unlock()
	f.max, f.ch, f.overflow = max, TreeChanges{Inodes: map[uint64]struct{}{}, Dirs: map[uint64]struct{}{}}, false
	f.on.Store(true)
}

// TakeTree returns the tree changes committed since the last call (or
// since TrackTree) and forgets them. complete is false if some may be
// missing (too many, a tree or pin deleted, records imported, or nothing
// tracks the feed): the caller must read the whole tree.
func (x *Index) TakeTree() (ch TreeChanges, complete bool) {
	f := &x.treeFeed
	f.mu.Lock()
	defer f.mu.Unlock()
	ch, complete = f.ch, f.on.Load() && !f.overflow
	f.ch, f.overflow = TreeChanges{Inodes: map[uint64]struct{}{}, Dirs: map[uint64]struct{}{}}, false
	return ch, complete
}

// breakTree makes the feed incomplete until the next TakeTree.
func (x *Index) breakTree() {
	f := &x.treeFeed
	f.mu.Lock()
	defer f.mu.Unlock()
	f.overflow = true
}

// treeBatch is what a batch changed of the tree, while the feed is on.
type treeBatch struct {
	inodes, dirs map[uint64]struct{}
	broken       bool
}

// noteTreeKey notes in the batch that it writes (del: deletes) key.
func (b *Batch) noteTreeKey(key []byte, del bool) {
	if len(key) < 9 {
		return
	}
	switch key[0] {
	case pInode, pChunk, pXattr:
		if b.tree.inodes == nil {
			b.tree.inodes = map[uint64]struct{}{}
		}
		b.tree.inodes[beUint64(key[1:])] = struct{}{}
	case pDirent:
		if b.tree.dirs == nil {
			b.tree.dirs = map[uint64]struct{}{}
		}
		b.tree.dirs[beUint64(key[1:])] = struct{}{}
	case pTree, pPin:
		if del && !b.tree.broken {
			b.tree.broken = true
			// What the version cache names may be gone with it.
			if err := b.b.Delete(tcHeaderKey(), nil); err != nil {
				panic(err)
			}
		}
	}
}

// noteTree records a committed batch's tree changes (after its commit is
// visible).
func (x *Index) noteTree(t *treeBatch) {
	f := &x.treeFeed
	if !f.on.Load() || (len(t.inodes) == 0 && len(t.dirs) == 0 && !t.broken) {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.on.Load() || f.overflow {
		return
	}
	if t.broken || len(f.ch.Inodes)+len(f.ch.Dirs)+len(t.inodes)+len(t.dirs) > f.max {
		f.ch, f.overflow = TreeChanges{Inodes: map[uint64]struct{}{}, Dirs: map[uint64]struct{}{}}, true
		return
	}
	for i := range t.inodes {
		f.ch.Inodes[i] = struct{}{}
	}
	for d := range t.dirs {
		f.ch.Dirs[d] = struct{}{}
	}
}
