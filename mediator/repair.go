package mediator

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/fincrypt/fincrypt/challenge"
	"github.com/fincrypt/fincrypt/erasure"
	fnet "github.com/fincrypt/fincrypt/net"
)

// repairPage is how many segments a repair scan reads at a time.
const repairPage = 256

// ErrUnrecoverable marks a segment with fewer than K healthy pieces.
var ErrUnrecoverable = errors.New("segment has fewer than K healthy pieces")

// RepairResult summarises one repair scan.
type RepairResult struct {
	Segments      int // contracts scanned
	MarkedLost    int // pieces counted lost because their node stayed away
	Revived       int // such pieces healthy again: their node came back and passed
	Repaired      int // pieces rebuilt and placed
	Failed        int // segments whose repair failed this time
	Unrecoverable int // segments below K
}

// RepairScan marks the pieces of nodes gone past the offline limit as lost,
// then repairs every segment below its repair threshold with
// Config.RepairWorkers workers, most endangered first (repair_queue.go). A
// segment whose repair fails is counted and retried by the next scan; the
// others go on. When ctx is cancelled the workers start no new transfer
// and RepairScan returns ctx's error: of a repair cut short, only pieces
// already placed and verified enter the contract; the rest leaves it as it
// was (a piece uploaded but not verified has no contract, and its node
// collects it), and the next scan repairs what is left.
func (c *core) RepairScan(ctx context.Context) (RepairResult, error) {
	c.repairMu.Lock()
	defer c.repairMu.Unlock()
	var res RepairResult
	nodeList, err := c.store.ListNodes(ctx)
	if err != nil {
		return res, err
	}
	now := c.now()
	nodes := map[fnet.NodeID]*Node{}
	for _, n := range nodeList {
		nodes[n.ID] = n
	}
	if _, err := c.store.DeletePendingBefore(ctx, now); err != nil {
		return res, err
	}
	var queue []repairJob
	var after SegmentID
	for {
		var page []*Segment
		err := c.store.Segments(ctx, after, repairPage, func(s *Segment) error {
			page = append(page, s)
			return nil
		})
		if err != nil {
			return res, err
		}
		if len(page) == 0 {
			break
		}
		after = page[len(page)-1].ID
		for _, seg := range page {
			res.Segments++
			marked, err := c.markGone(ctx, seg.ID, nodes, now)
			if err != nil {
				return res, err
			}
			res.MarkedLost += marked
			if marked > 0 {
				seg, err = c.store.GetSegment(ctx, seg.ID)
				if errors.Is(err, ErrNotFound) {
					continue
				}
				if err != nil {
					return res, err
				}
			}
			if h := seg.Healthy(); h < c.cfg.threshold(seg.Scheme) {
				queue = append(queue, repairJob{id: seg.ID, margin: h - seg.Scheme.K})
			}
		}
	}
	sortRepairQueue(queue)
	w := newRepairWave(c, nodeList, now)
	w.run(ctx, queue, c.cfg.RepairWorkers, &res)
	c.obs.repairScan(res, len(queue), ctx.Err() != nil)
	if res.Repaired > 0 || res.MarkedLost > 0 || res.Revived > 0 || res.Failed > 0 {
		c.log.Info("repair scan", "segments", res.Segments, "queued", len(queue), "marked_lost", res.MarkedLost, "revived", res.Revived, "repaired", res.Repaired, "failed", res.Failed, "unrecoverable", res.Unrecoverable)
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	return res, nil
}

// repairQueued is the work of one queued segment, run by a worker:
// it reads the contract again (a round or a client may have changed it
// since the scan), takes back offline pieces whose node is back, and
// rebuilds the rest. It adds its outcome to res (under w.resMu).
func (w *repairWave) repairQueued(ctx context.Context, job repairJob, res *RepairResult) {
	c := w.c
	count := func(f func(*RepairResult)) {
		w.resMu.Lock()
		f(res)
		w.resMu.Unlock()
	}
	failed := func(err error) {
		if ctx.Err() != nil {
			return // cut short by the shutdown: retried by the next scan, not a failure
		}
		switch {
		case errors.Is(err, ErrUnrecoverable):
			count(func(r *RepairResult) { r.Unrecoverable++ })
			c.log.Error("segment cannot be repaired", "segment", job.id, "err", err)
		default:
			count(func(r *RepairResult) { r.Failed++ })
			c.log.Warn("repair failed; will retry", "segment", job.id, "err", err)
		}
	}
	seg, err := c.store.GetSegment(ctx, job.id)
	if errors.Is(err, ErrNotFound) {
		return // released meanwhile
	}
	if err != nil {
		failed(fmt.Errorf("segment %s: %w", job.id, err))
		return
	}
	if seg.Healthy() >= c.cfg.threshold(seg.Scheme) {
		return
	}
	// Before rebuilding, take back the pieces whose node is online again
	// and still holds them.
	if revived := c.revive(ctx, seg, w.scanNodes, w.start, w.silent); revived > 0 {
		count(func(r *RepairResult) { r.Revived += revived })
		if seg, err = c.store.GetSegment(ctx, job.id); errors.Is(err, ErrNotFound) {
			return
		} else if err != nil {
			failed(fmt.Errorf("segment %s: %w", job.id, err))
			return
		}
		if seg.Healthy() >= c.cfg.threshold(seg.Scheme) {
			return
		}
	}
	n, err := c.repairSegment(ctx, seg, w)
	if n > 0 {
		count(func(r *RepairResult) { r.Repaired += n })
	}
	if err != nil {
		failed(err)
	}
}

// markGone marks the healthy pieces of a segment offline (lost, but
// revivable) when their node is unknown or has been silent past the
// offline limit, and the pieces of a disqualified node lost.
func (c *core) markGone(ctx context.Context, id SegmentID, nodes map[fnet.NodeID]*Node, now time.Time) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	seg, err := c.store.GetSegment(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	marked := 0
	for i := range seg.Pieces {
		p := &seg.Pieces[i]
		n := nodes[p.Node]
		switch {
		case n != nil && !n.Disqualified.IsZero() && p.State != PieceLost:
			// Not to be revived: a disqualified node's word is not taken.
			p.State = PieceLost
			marked++
		case p.State != PieceHealthy:
		case n == nil || c.gone(n, now):
			p.State = PieceOffline
			marked++
		}
	}
	if marked == 0 {
		return 0, nil
	}
	c.log.Info("pieces lost with their offline node", "segment", id, "pieces", marked)
	return marked, c.store.UpdateSegment(ctx, seg)
}

// revive challenges the pieces of seg in state offline whose node is
// online (at the scan's start) and makes those that verify healthy again.
// It returns how many. A node that cannot be reached is added to silent
// and not asked again in this scan; workers take turns on a node for that.
func (c *core) revive(ctx context.Context, seg *Segment, nodes map[fnet.NodeID]*Node, now time.Time, silent *nodeSet) int {
	byNode := map[fnet.NodeID][]PieceRef{}
	for _, p := range seg.Pieces {
		if p.State != PieceOffline {
			continue
		}
		if n := nodes[p.Node]; n != nil && c.online(n, now) && !silent.has(p.Node) {
			byNode[p.Node] = append(byNode[p.Node], PieceRef{
				Segment: seg.ID, Index: p.Index, ID: p.ID, Size: seg.PieceSize, Account: seg.Account, State: p.State,
			})
		}
	}
	revived := 0
	for id, refs := range byNode {
		done := silent.turn(id)
		if silent.has(id) { // found silent while this worker waited its turn
			done()
			continue
		}
		res, reached, err := c.challengePieces(ctx, nodes[id], refs)
		if err != nil || !reached {
			c.log.Info("revive: node did not answer", "segment", seg.ID, "node", id, "err", err)
			silent.add(id)
			done()
			continue
		}
		done()
		n, err := c.recordRevival(ctx, id, res)
		if err != nil {
			c.log.Warn("revive: recording the results", "segment", seg.ID, "node", id, "err", err)
			continue
		}
		revived += n
	}
	return revived
}

// recordRevival writes the results of a revival challenge: the pieces and
// the node's counters (no period record: that is the round's).
func (c *core) recordRevival(ctx context.Context, node fnet.NodeID, results []pieceResult) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	passed, failed, revived, err := c.applyResults(ctx, node, results, true, c.now())
	if err != nil {
		return revived, err
	}
	n, err := c.store.GetNode(ctx, node)
	if err != nil {
		return revived, err
	}
	n.Passed += passed
	n.Failed += failed
	c.observe(n, passed, failed)
	return revived, c.store.PutNode(ctx, n)
}

// repairSegment fetches K healthy pieces, rebuilds the lost ones, checks
// that each rebuilt piece has its recorded id, places them on nodes that
// hold no piece of the segment, verifies them with a challenge and updates
// the contract. It returns the number of pieces repaired. Each fetch and
// each put holds one of the wave's transfer slots on its node; a node whose
// slots are taken is passed over for another that can serve or take the
// piece, and waited for only when there is none.
func (c *core) repairSegment(ctx context.Context, seg *Segment, w *repairWave) (int, error) {
	coder, err := erasure.New(seg.Scheme)
	if err != nil {
		return 0, fmt.Errorf("segment %s: %w", seg.ID, err)
	}
	if seg.Healthy() < seg.Scheme.K {
		return 0, fmt.Errorf("segment %s: %w: %d of %d", seg.ID, ErrUnrecoverable, seg.Healthy(), seg.Scheme.N)
	}
	nodeList, nodes, err := w.nodes(ctx)
	if err != nil {
		return 0, fmt.Errorf("segment %s: %w", seg.ID, err)
	}
	// Fetch K healthy pieces, checking each against its id.
	pieces := make([][]byte, seg.Scheme.N)
	have := 0
	var bad, sources []int
	for i, p := range seg.Pieces {
		if p.State == PieceHealthy && nodes[p.Node] != nil {
			sources = append(sources, i)
		}
	}
	for have < seg.Scheme.K && len(sources) > 0 {
		j, err := w.slots.pick(ctx, len(sources), func(k int) fnet.NodeID { return seg.Pieces[sources[k]].Node }, nil)
		if err != nil {
			return 0, err
		}
		i := sources[j]
		sources = slices.Delete(sources, j, j+1)
		p := seg.Pieces[i]
		data, err := c.fetch(ctx, seg, nodes[p.Node], p.ID)
		w.slots.release(p.Node)
		if err != nil {
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			c.log.Info("repair: piece unavailable", "segment", seg.ID, "piece", i, "node", p.Node, "err", err)
			if errors.Is(err, fnet.ErrNotFound) || errors.Is(err, fnet.ErrMismatch) || errors.Is(err, errWrongPiece) {
				bad = append(bad, i)
			}
			continue
		}
		pieces[i] = data
		have++
	}
	if len(bad) > 0 {
		if err := c.markLost(ctx, seg.ID, bad, nodesOf(seg, bad)); err != nil {
			return 0, err
		}
		// A read that returned nothing, or other bytes, counts against
		// the node like a failed challenge.
		c.mu.Lock()
		err := c.observeFailedReads(ctx, nodesOf(seg, bad))
		c.mu.Unlock()
		if err != nil {
			return 0, err
		}
	}
	if have < seg.Scheme.K {
		return 0, fmt.Errorf("segment %s: fetched %d of the %d pieces needed", seg.ID, have, seg.Scheme.K)
	}
	var want []int
	for i, p := range seg.Pieces {
		if p.State != PieceHealthy || slicesContains(bad, i) {
			want = append(want, i)
		}
	}
	if err := coder.Rebuild(pieces, want); err != nil {
		return 0, fmt.Errorf("segment %s: %w", seg.ID, err)
	}
	for _, i := range want {
		id, err := challenge.ComputeID(pieces[i])
		if err != nil {
			return 0, err
		}
		if id != seg.Pieces[i].ID {
			return 0, fmt.Errorf("segment %s piece %d: rebuilt bytes have id %s, contract says %s", seg.ID, i, id, seg.Pieces[i].ID)
		}
	}
	// Place: nodes that hold no piece of this segment, each on a subnet
	// that the pieces kept leave free, within the vetting limit
	// (selectNodes); any subset of the targets keeps the rules. Price
	// chooses only what the kept pieces leave of the N-K it may choose
	// (they may all have been chosen by price): with K or more kept, the
	// rebuilt pieces are drawn at random.
	exclude := map[fnet.NodeID]bool{}
	taken := newSpread()
	kept := 0
	for i, p := range seg.Pieces {
		if !p.Node.IsZero() {
			exclude[p.Node] = true
			if n := nodes[p.Node]; n != nil && p.State == PieceHealthy && !slicesContains(want, i) {
				taken.add(c, n)
				kept++
			}
		}
	}
	holdsNone := func(n *Node) bool { // a node keeps one copy of a piece id
		for _, i := range want {
			held, err := c.holdsPiece(ctx, n.ID, seg.Pieces[i].ID, seg.ID, true)
			if err != nil || held || w.claimed(nodePiece{n.ID, seg.Pieces[i].ID}) {
				return false
			}
		}
		return true
	}
	targets := c.selectNodes(nodeList, 2*len(want), seg.Scheme.N-seg.Scheme.K-kept, seg.PieceSize, exclude, taken, w.reserved(), holdsNone)
	if len(targets) == 0 {
		return 0, fmt.Errorf("segment %s: %w: no node can take a repaired piece", seg.ID, ErrNotEnoughNodes)
	}
	// Each target takes at most one piece, and no node that holds the same
	// piece id for another segment, in a contract, a placement or another
	// worker's repair in flight (a claim, released when this repair ends);
	// at most 2 uploads per piece are tried.
	placed := map[int]fnet.NodeID{}
	var claims []nodePiece
	defer func() {
		for _, k := range claims {
			w.unclaim(k, seg.PieceSize)
		}
	}()
	used := make([]bool, len(targets))
	attempts := 2 * len(want)
	var stopped error // the scan was cancelled: no more uploads
place:
	for _, i := range want {
		for attempts > 0 {
			var eligible []int
			for j, n := range targets {
				if used[j] {
					continue
				}
				held, err := c.holdsPiece(ctx, n.ID, seg.Pieces[i].ID, seg.ID, true)
				if err != nil {
					return 0, err
				}
				if !held && !w.claimed(nodePiece{n.ID, seg.Pieces[i].ID}) {
					eligible = append(eligible, j)
				}
			}
			if len(eligible) == 0 {
				break
			}
			k, err := w.slots.pick(ctx, len(eligible), func(k int) fnet.NodeID { return targets[eligible[k]].ID },
				func(k int) bool {
					np := nodePiece{targets[eligible[k]].ID, seg.Pieces[i].ID}
					if !w.claim(np, seg.PieceSize) {
						return false
					}
					claims = append(claims, np)
					return true
				})
			if err != nil {
				stopped = err
				break place
			}
			if k < 0 {
				continue // every eligible target was claimed meanwhile: look again
			}
			j := eligible[k]
			n := targets[j]
			used[j] = true
			attempts--
			err = c.putVerified(ctx, seg, n, i, pieces[i])
			w.slots.release(n.ID)
			if err != nil {
				if ctx.Err() != nil {
					stopped = ctx.Err()
					break place
				}
				c.log.Info("repair: node refused a piece", "segment", seg.ID, "piece", i, "node", n.ID, "err", err)
				continue
			}
			placed[i] = n.ID
			break
		}
	}
	if len(placed) == 0 {
		if stopped != nil {
			return 0, stopped
		}
		return 0, fmt.Errorf("segment %s: no repaired piece could be placed", seg.ID)
	}
	// Every placed piece is verified: record them even if the scan is
	// being cancelled (one local transaction), so that they are not
	// orphaned.
	n, old, err := c.applyRepair(context.WithoutCancel(ctx), seg.ID, placed)
	if err != nil {
		return 0, err
	}
	w.applied(seg.PieceSize, placed)
	c.deleteLater(seg.Account, seg.PieceSize, old)
	if stopped != nil {
		return n, stopped
	}
	if len(placed) < len(want) {
		return n, fmt.Errorf("segment %s: placed %d of %d repaired pieces", seg.ID, len(placed), len(want))
	}
	return n, nil
}

func slicesContains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func nodesOf(seg *Segment, idx []int) []fnet.NodeID {
	out := make([]fnet.NodeID, len(idx))
	for j, i := range idx {
		out[j] = seg.Pieces[i].Node
	}
	return out
}

var errWrongPiece = errors.New("bytes do not hash to the piece id")

// fetch reads a whole piece from its node and checks its Merkle root.
func (c *core) fetch(ctx context.Context, seg *Segment, n *Node, id challenge.PieceID) ([]byte, error) {
	addr, err := nodeAddress(n)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, c.cfg.ChallengeTimeout)
	defer cancel()
	data, err := c.nodes.Get(cctx, addr, c.ticket(n.ID, id, fnet.OpGet, seg.Account, seg.PieceSize))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) != seg.PieceSize {
		return nil, fmt.Errorf("piece %s: %w: %d bytes, want %d", id, errWrongPiece, len(data), seg.PieceSize)
	}
	if got, err := challenge.ComputeID(data); err != nil || got != id {
		return nil, fmt.Errorf("piece %s: %w", id, errWrongPiece)
	}
	return data, nil
}

// putVerified uploads a rebuilt piece and challenges the node on it.
func (c *core) putVerified(ctx context.Context, seg *Segment, n *Node, index int, data []byte) error {
	addr, err := nodeAddress(n)
	if err != nil {
		return err
	}
	id := seg.Pieces[index].ID
	cctx, cancel := context.WithTimeout(ctx, c.cfg.ChallengeTimeout)
	defer cancel()
	if err := c.nodes.Put(cctx, addr, c.ticket(n.ID, id, fnet.OpPut, seg.Account, seg.PieceSize), data); err != nil {
		return err
	}
	ref := PieceRef{Segment: seg.ID, Index: index, ID: id, Size: seg.PieceSize, Account: seg.Account}
	res, reached, err := c.challengePieces(ctx, n, []PieceRef{ref})
	if err != nil {
		return err
	}
	if !reached || len(res) != 1 || !res[0].ok {
		why := "no answer"
		if len(res) == 1 {
			why = res[0].why
		}
		return fmt.Errorf("node %s: stored piece failed verification: %s", n.ID, why)
	}
	return nil
}

// markLost marks pieces lost if they are still on the given nodes.
func (c *core) markLost(ctx context.Context, id SegmentID, idx []int, on []fnet.NodeID) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	seg, err := c.store.GetSegment(ctx, id)
	if err != nil {
		return err
	}
	for j, i := range idx {
		if seg.Pieces[i].Node == on[j] {
			seg.Pieces[i].State = PieceLost
		}
	}
	return c.store.UpdateSegment(ctx, seg)
}

// applyRepair moves repaired pieces to their new nodes in the contract. It
// returns how many moved and the old locations, to delete.
func (c *core) applyRepair(ctx context.Context, id SegmentID, placed map[int]fnet.NodeID) (int, map[fnet.NodeID]challenge.PieceID, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	seg, err := c.store.GetSegment(ctx, id)
	if err != nil {
		return 0, nil, err // released meanwhile: the new pieces get collected
	}
	old := map[fnet.NodeID]challenge.PieceID{}
	now := c.now()
	for i, node := range placed {
		p := &seg.Pieces[i]
		if !p.Node.IsZero() {
			old[p.Node] = p.ID
		}
		var price uint64 // a new piece on its node: at the node's price now
		if n, err := c.store.GetNode(ctx, node); err == nil {
			price = n.Price
		}
		*p = Piece{Index: i, ID: p.ID, Node: node, State: PieceHealthy, Passed: 1, LastChecked: now, Price: price}
	}
	seg.Repaired += uint32(len(placed))
	if err := c.store.UpdateSegment(ctx, seg); err != nil {
		return 0, nil, err
	}
	if _, err := c.store.AddCounter(ctx, CounterRepaired, int64(len(placed))); err != nil {
		return 0, nil, err
	}
	c.log.Info("segment repaired", "segment", id, "pieces", len(placed))
	return len(placed), old, nil
}
