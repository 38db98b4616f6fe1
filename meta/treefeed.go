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
// inode, a directory entry its directory. The batch writes them as change
// marks in its own commit (treecache.go), so they survive a remount and a
// crash exactly as the changes do. Deleting a tree or a pin record (a
// forget's sweep) deletes the version cache's header in the same batch:
// what a version built before may then be gone.

// TreeChanges is what the batches committed in some epochs changed of the
// mount's tree (TreeMarks).
type TreeChanges struct {
	Inodes map[uint64]struct{} // inode, chunk-map or extended-attribute records written or deleted
	Dirs   map[uint64]struct{} // directories with an entry written or deleted
}

type treeFeed struct {
	marks atomic.Bool  // batches write change marks (treecache.go)
	cut   sync.RWMutex // commits that write marks hold it for reading, CutTree for writing
	epoch uint64       // the epoch marks are written in (under cut)
}

// treeBatch is what a batch changed of the tree.
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
