package fs

import (
	"sync"
	"sync/atomic"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// The mount keeps a go-fuse Inode (a Node) for every inode the kernel holds,
// and the kernel holds one for every name it has looked up until memory
// pressure makes it let go: after `find` over a million files that is a
// million inodes, about 400 bytes each here (the Node, go-fuse's tables, the
// name in its parent) and twice that in RSS once the garbage collector's
// headroom is counted. inodeCap bounds them: past Options.MaxInodes, the
// mount asks the kernel to forget the inodes it learned of first
// (FUSE_NOTIFY_PRUNE, Linux 6.18 and later).
//
// A prune is a hint the kernel may decline, never a change of state: the
// kernel drops only dentries nothing uses (no open file, no working
// directory, no mount on it, no cached child), as it does under memory
// pressure or `drop_caches`, and then sends FORGET as usual. A name it
// forgot is looked up again on its next use, with the same inode number
// (the index's). So the bound is kept in the common case, not promised: a
// file held open stays, and so does a directory while the kernel holds a
// child (a directory's own turn mostly comes before its files'; it goes
// with the last of them, as the kernel drops a parent its pruned children
// leave unused).
//
// The order is first-learned, first-pruned: the kernel answers a name it
// holds without asking the mount, so the mount cannot see which inodes are
// used, only which are new. An inode pruned while still wanted costs one
// LOOKUP when it is next used.

// DefaultMaxInodes is Options.MaxInodes' default: about 100 MB of the
// mount's RSS.
const DefaultMaxInodes = 1 << 17

// pruneBatch is how many inodes one prune notification names.
const pruneBatch = 512

type inodeCap struct {
	max  int // 0: no bound
	step int // how many past max make a batch worth sending

	mu    sync.Mutex
	ring  []*gofs.Inode // the inodes learned, oldest at head; len max
	head  int
	n     int
	batch []*gofs.Inode // the oldest ones past max, to prune
	kick  chan struct{} // to the pruner: a batch is ready
	stop  chan struct{}
	done  chan struct{}

	added, forgotten atomic.Int64 // Nodes made and forgotten (live = added - forgotten)
	pruned           atomic.Int64 // inodes named in prune notifications sent
	unsupported      atomic.Bool  // the kernel has no FUSE_NOTIFY_PRUNE
}

func newInodeCap(max int) *inodeCap {
	c := &inodeCap{kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	if max > 0 {
		c.max = max
		c.step = min(pruneBatch, max/16+1)
		c.ring = make([]*gofs.Inode, max)
	}
	return c
}

// learned records a new tree inode the kernel now holds.
func (c *inodeCap) learned(in *gofs.Inode) {
	c.added.Add(1)
	if c.max == 0 || c.unsupported.Load() {
		return
	}
	c.mu.Lock()
	if c.ring == nil { // unsupported: run let go of the ring
		c.mu.Unlock()
		return
	}
	if c.n == c.max {
		c.batch = append(c.batch, c.ring[c.head])
		c.ring[c.head] = in
		c.head = (c.head + 1) % c.max
	} else {
		c.ring[(c.head+c.n)%c.max] = in
		c.n++
	}
	ready := len(c.batch) >= c.step
	c.mu.Unlock()
	if ready {
		select {
		case c.kick <- struct{}{}:
		default:
		}
	}
}

// run is the pruner: it sends the batches learned queues, outside any FUSE
// request (the kernel may evict inodes while it handles one). It ends when
// stop is closed.
func (c *inodeCap) run(root *gofs.Inode, server *fuse.Server) {
	defer close(c.done)
	if c.max == 0 {
		<-c.stop
		return
	}
	if !server.KernelSettings().SupportsNotify(fuse.NOTIFY_PRUNE) {
		c.unsupported.Store(true)
		c.mu.Lock()
		c.ring, c.batch, c.n = nil, nil, 0
		c.mu.Unlock()
		<-c.stop
		return
	}
	for {
		select {
		case <-c.stop:
			return
		case <-c.kick:
		}
		c.mu.Lock()
		b := c.batch
		c.batch = nil
		c.mu.Unlock()
		for len(b) > 0 {
			k := min(len(b), pruneBatch)
			if root.NotifyPrune(b[:k]) == 0 {
				c.pruned.Add(int64(k))
			}
			clear(b[:k])
			b = b[k:]
		}
	}
}

// live is the number of tree inodes the mount holds for the kernel.
func (c *inodeCap) live() int64 { return c.added.Load() - c.forgotten.Load() }

// InodeStats is the mount's inode bound at one moment (`fincrypt status`,
// the mount's metrics and status page).
type InodeStats struct {
	Live           int64 // tree inodes the mount holds for the kernel
	Max            int   // the bound (Options.MaxInodes); 0: none
	Pruned         int64 // inodes the mount asked the kernel to forget
	PruneSupported bool  // the kernel takes FUSE_NOTIFY_PRUNE (Linux 6.18 and later)
}

// Inodes reports the inodes the kernel holds and what the bound did.
func (m *Mounted) Inodes() InodeStats {
	c := m.r.inodes
	return InodeStats{Live: c.live(), Max: c.max, Pruned: c.pruned.Load(),
		PruneSupported: m.server.KernelSettings().SupportsNotify(fuse.NOTIFY_PRUNE)}
}

// OnForget counts a Node the kernel forgot (go-fuse drops it).
func (n *Node) OnForget() { n.r().inodes.forgotten.Add(1) }

// OnForget: the root is never forgotten while mounted.
func (r *rootNode) OnForget() {}
