package meta

import (
	"bytes"
	"sync"
)

// inodeCache holds the inode records this process's commits wrote last,
// decoded, so that reading one back (a directory's GETATTR after each
// CREATE in it, the CREATE's own read of its directory, a SETATTR's or a
// release's read of a file created moments before) costs neither a Pebble
// look-up nor a decryption. Only commits fill it, never reads: a read that
// raced a commit could otherwise put back what that commit replaced. Each
// entry carries the sequence number of the batch that wrote it, and an
// older batch whose commit returned later does not replace a newer one's
// entry. An inode deleted is remembered as gone (reads then go to Pebble),
// so no older write of it comes back. When full it is emptied, and batches
// no newer than the newest it has seen are then refused (floor): they may
// be older than an entry just dropped. Every write of an inode record goes
// through Batch.PutInode or DeleteInode, but Import's raw records, which
// empty the cache.
type inodeCache struct {
	mu    sync.Mutex
	m     map[uint64]cachedInode
	floor uint64 // batches at or below it are not cached
	top   uint64 // the newest batch seen
}

type cachedInode struct {
	seq  uint64
	in   Inode
	gone bool
}

// inodeCacheMax bounds the cache: about 100 bytes an entry (a symlink's
// target up to inodeCacheTarget more).
const inodeCacheMax = 4096

// inodeCacheTarget is the longest symlink target the cache keeps: a write
// of a longer one is noted as gone (reads of it go to Pebble), which keeps
// the cache's bound near half a megabyte.
const inodeCacheTarget = 256

// inodeWrite is an inode record a batch writes (or deletes: gone).
type inodeWrite struct {
	in   Inode
	gone bool
}

func newInodeCache() *inodeCache { return &inodeCache{m: make(map[uint64]cachedInode)} }

// get returns inode ino if the cache holds its last write.
func (c *inodeCache) get(ino uint64) (Inode, bool) {
	c.mu.Lock()
	e, ok := c.m[ino]
	c.mu.Unlock()
	if !ok || e.gone {
		return Inode{}, false
	}
	if e.in.Target != nil {
		e.in.Target = bytes.Clone(e.in.Target)
	}
	return e.in, true
}

// wrote records the inode writes of a batch committed with sequence
// number seq, in the order the batch made them.
func (c *inodeCache) wrote(seq uint64, ws []inodeWrite) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if seq > c.top {
		c.top = seq
	}
	if seq <= c.floor {
		return
	}
	for _, w := range ws {
		if e, ok := c.m[w.in.Ino]; ok && e.seq > seq {
			continue
		}
		if len(c.m) >= inodeCacheMax {
			if _, ok := c.m[w.in.Ino]; !ok {
				clear(c.m)
				c.floor = c.top
				return
			}
		}
		c.m[w.in.Ino] = cachedInode{seq: seq, in: w.in, gone: w.gone}
	}
}

// reset empties the cache and refuses every batch up to seq and every
// one seen so far (Import passes its own batch's: a batch committed before
// it whose entries come after the reset is refused too).
func (c *inodeCache) reset(seq uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.m)
	c.top = max(c.top, seq)
	c.floor = c.top
}

// noteInode records an inode write of the batch for the cache.
func (b *Batch) noteInode(n *Inode, gone bool) {
	if b.x.icache == nil {
		return
	}
	w := inodeWrite{in: *n, gone: gone}
	if len(w.in.Target) > inodeCacheTarget {
		w = inodeWrite{in: Inode{Ino: n.Ino}, gone: true}
	} else if w.in.Target != nil {
		w.in.Target = bytes.Clone(w.in.Target)
	}
	b.inodes = append(b.inodes, w)
}
