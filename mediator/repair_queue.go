package mediator

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	fnet "github.com/fincrypt/fincrypt/net"
)

// repairJob is a segment found below its repair threshold by a scan.
type repairJob struct {
	id SegmentID
	// margin is the number of healthy pieces above K at the scan: 0 means
	// one more loss makes the segment unreadable; below 0 it already is,
	// unless offline pieces come back.
	margin int
}

// sortRepairQueue orders a scan's jobs most endangered first: fewest
// healthy pieces above K first (a segment below K first of all: only a
// revival can save it, and trying costs no transfer), then in scan order
// (segment id).
func sortRepairQueue(q []repairJob) {
	slices.SortStableFunc(q, func(a, b repairJob) int { return cmp.Compare(a.margin, b.margin) })
}

// repairWave is the state one repair scan's workers share: the node list,
// the nodes that did not answer a revival, the transfer slots per node, and
// the (node, piece id) pairs being placed right now.
type repairWave struct {
	c *core
	// start and scanNodes are the scan's time and node list: revival
	// challenges only nodes that were online then, as the serial scan did.
	start     time.Time
	scanNodes map[fnet.NodeID]*Node
	silent    *nodeSet
	slots     *nodeSlots

	resMu sync.Mutex // guards the RepairResult the workers add to

	mu       sync.Mutex
	list     []*Node
	byID     map[fnet.NodeID]*Node
	listed   time.Time
	claims   map[nodePiece]bool
	inflight map[fnet.NodeID]int64 // bytes of claimed pieces, not yet in a contract
	placed   map[fnet.NodeID]int64 // bytes contracted by this wave since the list was read
}

func newRepairWave(c *core, nodes []*Node, start time.Time) *repairWave {
	w := &repairWave{
		c: c, start: start, scanNodes: map[fnet.NodeID]*Node{}, silent: &nodeSet{},
		slots: newNodeSlots(c.cfg.RepairNodeTransfers),
		list:  nodes, byID: map[fnet.NodeID]*Node{}, listed: start,
		claims: map[nodePiece]bool{}, inflight: map[fnet.NodeID]int64{}, placed: map[fnet.NodeID]int64{},
	}
	for _, n := range nodes {
		w.scanNodes[n.ID] = n
		w.byID[n.ID] = n
	}
	return w
}

// run repairs the queued segments with up to workers goroutines, taking
// jobs in queue order, and returns once every job is done or, after ctx is
// cancelled, once every worker has stopped.
func (w *repairWave) run(ctx context.Context, queue []repairJob, workers int, res *RepairResult) {
	workers = max(1, min(workers, len(queue)))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= len(queue) {
					return
				}
				w.repairQueued(ctx, queue[i], res)
			}
		}()
	}
	wg.Wait()
}

// nodes returns the node list for placement, read again once it is older
// than a heartbeat interval (a wave may outlast the online window, and the
// nodes' contracted bytes change as it places pieces).
func (w *repairWave) nodes(ctx context.Context) ([]*Node, map[fnet.NodeID]*Node, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if now := w.c.now(); now.Sub(w.listed) >= w.c.cfg.HeartbeatInterval {
		list, err := w.c.store.ListNodes(ctx)
		if err != nil {
			return nil, nil, err
		}
		w.list, w.listed, w.byID = list, now, map[fnet.NodeID]*Node{}
		for _, n := range list {
			w.byID[n.ID] = n
		}
		clear(w.placed) // counted in Contracted now
	}
	return w.list, w.byID, nil
}

// reserved is the room taken on each node by pending placements and by
// this wave's pieces that the node list does not count yet.
func (w *repairWave) reserved() map[fnet.NodeID]int64 {
	r := w.c.reservedBytes(w.c.now())
	w.mu.Lock()
	defer w.mu.Unlock()
	for id, b := range w.inflight {
		r[id] += b
	}
	for id, b := range w.placed {
		r[id] += b
	}
	return r
}

// claim reserves (node, piece id) for one worker's upload; false if
// another worker has it.
func (w *repairWave) claim(k nodePiece, size int64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.claims[k] {
		return false
	}
	w.claims[k] = true
	w.inflight[k.node] += size
	return true
}

func (w *repairWave) claimed(k nodePiece) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.claims[k]
}

func (w *repairWave) unclaim(k nodePiece, size int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.claims[k] {
		return
	}
	delete(w.claims, k)
	if w.inflight[k.node] -= size; w.inflight[k.node] <= 0 {
		delete(w.inflight, k.node)
	}
}

// applied counts pieces now in a contract against their nodes' room until
// the node list is read again.
func (w *repairWave) applied(size int64, placed map[int]fnet.NodeID) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, id := range placed {
		w.placed[id] += size
	}
}

// nodeSet is a set of nodes safe for concurrent use.
type nodeSet struct {
	mu    sync.Mutex
	m     map[fnet.NodeID]bool
	turns map[fnet.NodeID]*sync.Mutex
}

// turn waits until no other worker holds id's turn and returns the
// function that ends this one: workers that revive pieces on one node take
// turns, so that a node found silent is asked once per scan, not once per
// worker that reached it at the same time.
func (s *nodeSet) turn(id fnet.NodeID) (done func()) {
	s.mu.Lock()
	if s.turns == nil {
		s.turns = map[fnet.NodeID]*sync.Mutex{}
	}
	t := s.turns[id]
	if t == nil {
		t = &sync.Mutex{}
		s.turns[id] = t
	}
	s.mu.Unlock()
	t.Lock()
	return t.Unlock
}

func (s *nodeSet) has(id fnet.NodeID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[id]
}

func (s *nodeSet) add(id fnet.NodeID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[fnet.NodeID]bool{}
	}
	s.m[id] = true
}

// nodeSlots bounds the transfers that run at once on each node.
type nodeSlots struct {
	limit int
	mu    sync.Mutex
	busy  map[fnet.NodeID]int
	freed chan struct{} // closed and replaced whenever a slot is released
}

func newNodeSlots(limit int) *nodeSlots {
	return &nodeSlots{limit: max(limit, 1), busy: map[fnet.NodeID]int{}, freed: make(chan struct{})}
}

// try takes a slot on node if one is free.
func (s *nodeSlots) try(node fnet.NodeID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.busy[node] >= s.limit {
		return false
	}
	s.busy[node]++
	return true
}

// acquire waits for a slot on node, or for ctx.
func (s *nodeSlots) acquire(ctx context.Context, node fnet.NodeID) error {
	for {
		s.mu.Lock()
		if s.busy[node] < s.limit {
			s.busy[node]++
			s.mu.Unlock()
			return nil
		}
		freed := s.freed
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-freed:
		}
	}
}

func (s *nodeSlots) release(node fnet.NodeID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.busy[node]--; s.busy[node] <= 0 {
		delete(s.busy, node)
	}
	close(s.freed)
	s.freed = make(chan struct{})
}

// pick chooses one of n candidates (on node(k)) and takes a slot on its
// node: the first, in order, whose node has a free slot, else the first,
// waiting for a slot on its node. take, if not nil, must also accept the
// candidate (it is called once a slot is held, or before waiting). It
// returns -1 if take accepts none; the caller releases the slot.
func (s *nodeSlots) pick(ctx context.Context, n int, node func(int) fnet.NodeID, take func(int) bool) (int, error) {
	if err := ctx.Err(); err != nil {
		return -1, err // no new transfer once the scan is cancelled
	}
	if take == nil {
		take = func(int) bool { return true }
	}
	for k := range n {
		if id := node(k); s.try(id) {
			if take(k) {
				return k, nil
			}
			s.release(id)
		}
	}
	for k := range n {
		if !take(k) {
			continue
		}
		if err := s.acquire(ctx, node(k)); err != nil {
			return -1, err
		}
		return k, nil
	}
	return -1, nil
}
