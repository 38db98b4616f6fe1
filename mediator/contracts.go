package mediator

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/fincrypt/fincrypt/challenge"
	fnet "github.com/fincrypt/fincrypt/net"
)

// Commit turns a pending placement into a contract. The client lists the
// pieces the nodes acknowledged (at least K); pieces it could not store are
// recorded as lost and the repair worker rebuilds them. A repeated commit
// of the same segment by its owner succeeds without change.
func (c *core) Commit(ctx context.Context, acct fnet.AccountID, req *fnet.CommitRequest) error {
	id := SegmentID(req.Segment)
	p, err := c.store.GetPending(ctx, id)
	if errors.Is(err, ErrNotFound) {
		if seg, err := c.store.GetSegment(ctx, id); err == nil && seg.Account == acct {
			return nil // already committed
		}
		return fmt.Errorf("segment %s: %w", id, ErrNoPlacement)
	}
	if err != nil {
		return err
	}
	if p.Account != acct {
		return fmt.Errorf("segment %s: %w", id, ErrNotOwner)
	}
	if c.now().After(p.Expires) {
		return fmt.Errorf("segment %s: %w: it expired at %s", id, ErrNoPlacement, p.Expires.UTC().Format("15:04:05"))
	}
	seg := &Segment{ID: id, Account: acct, Scheme: p.Scheme, PieceSize: p.PieceSize, Created: c.now()}
	seg.Pieces = make([]Piece, p.Scheme.N)
	for i := range seg.Pieces {
		seg.Pieces[i] = Piece{Index: i, ID: p.Pieces[i], State: PieceLost}
	}
	for _, sp := range req.Pieces {
		i := int(sp.Index)
		switch {
		case i >= p.Scheme.N:
			return fmt.Errorf("segment %s: %w: piece index %d of %d", id, ErrBadCommit, i, p.Scheme.N)
		case !seg.Pieces[i].Node.IsZero():
			return fmt.Errorf("segment %s: %w: piece %d listed twice", id, ErrBadCommit, i)
		case sp.Node != p.Nodes[i]:
			return fmt.Errorf("segment %s: %w: piece %d on node %s, placed on %s", id, ErrBadCommit, i, sp.Node, p.Nodes[i])
		case sp.Piece != p.Pieces[i]:
			return fmt.Errorf("segment %s: %w: piece %d is %s, placed as %s", id, ErrBadCommit, i, sp.Piece, p.Pieces[i])
		case int64(sp.Size) != p.PieceSize:
			return fmt.Errorf("segment %s: %w: piece %d has %d bytes, placed with %d", id, ErrBadCommit, i, sp.Size, p.PieceSize)
		}
		seg.Pieces[i].Node = sp.Node
		seg.Pieces[i].State = PieceHealthy
		if i < len(p.Prices) {
			seg.Pieces[i].Price = p.Prices[i]
			// A cut since the placement applies at once, as it does to
			// the pieces a node already holds; a rise waits for its notice.
			if n, err := c.store.GetNode(ctx, sp.Node); err == nil && n.Price < p.Prices[i] {
				seg.Pieces[i].Price = n.Price
			}
		} else if n, err := c.store.GetNode(ctx, sp.Node); err == nil {
			seg.Pieces[i].Price = n.Price // a placement recorded before contract prices
		}
	}
	if h := seg.Healthy(); h < p.Scheme.K {
		return fmt.Errorf("segment %s: %w: %d pieces stored, at least %d needed", id, ErrBadCommit, h, p.Scheme.K)
	}
	// A node keeps one copy of a piece id: a piece that another contract
	// took on the same node since the placement (identical bytes in two
	// segments) is recorded without a node and rebuilt elsewhere.
	for i := range seg.Pieces {
		p := &seg.Pieces[i]
		if p.State != PieceHealthy {
			continue
		}
		held, err := c.holdsPiece(ctx, p.Node, p.ID, id, false)
		if err != nil {
			return fmt.Errorf("segment %s: %w", id, err)
		}
		if held {
			c.log.Info("committed piece is contracted on its node for another segment", "segment", id, "piece", p.Index, "node", p.Node)
			p.Node, p.State = fnet.NodeID{}, PieceLost
		}
	}
	// The receipts are the client's word: check each piece on its node
	// with a one-opening challenge, so that a client cannot make a node
	// answer for a piece it never received. Pieces that do not verify are
	// recorded without a node (lost, repaired later), not held against it.
	c.verifyStored(ctx, seg)
	if h := seg.Healthy(); h < p.Scheme.K {
		return fmt.Errorf("segment %s: %w: only %d pieces verify on their nodes, at least %d needed", id, ErrBadCommit, h, p.Scheme.K)
	}
	if err := c.store.CommitSegment(ctx, seg); err != nil {
		return fmt.Errorf("segment %s: %w", id, err)
	}
	c.unreserve(id)
	c.log.Debug("contract committed", "segment", id, "scheme", seg.Scheme, "pieces", seg.Healthy(), "piece_size", seg.PieceSize)
	return nil
}

// commitVerifyTimeout is the least time a commit waits for its pieces to
// verify.
const commitVerifyTimeout = 5 * time.Second

// verifyStored challenges every healthy piece of a new contract on its
// node, all nodes at once, and clears the node of those that fail.
func (c *core) verifyStored(ctx context.Context, seg *Segment) {
	// The client has just uploaded to these nodes: give slow ones time.
	timeout := max(c.cfg.ChallengeTimeout, commitVerifyTimeout)
	var wg sync.WaitGroup
	for i := range seg.Pieces {
		p := &seg.Pieces[i]
		if p.State != PieceHealthy {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			why := "node unknown"
			if n, err := c.store.GetNode(ctx, p.Node); err == nil {
				ref := PieceRef{Segment: seg.ID, Index: p.Index, ID: p.ID, Size: seg.PieceSize, Account: seg.Account}
				res, reached, err := c.challengePiecesWith(ctx, n, []PieceRef{ref}, 1, timeout)
				switch {
				case err != nil:
					why = err.Error()
				case !reached || len(res) != 1:
					why = "no answer"
				case res[0].ok:
					return
				default:
					why = res[0].why
				}
			}
			c.log.Info("committed piece does not verify on its node", "segment", seg.ID, "piece", p.Index, "node", p.Node, "why", why)
			p.Node, p.State = fnet.NodeID{}, PieceLost
		}()
	}
	wg.Wait()
}

// Release ends a contract and deletes its pieces from the nodes; for a
// placement not yet committed it cancels the placement (abandon).
func (c *core) Release(ctx context.Context, acct fnet.AccountID, id SegmentID) error {
	c.mu.Lock()
	seg, err := c.store.GetSegment(ctx, id)
	if err == nil && seg.Account != acct {
		err = ErrNotOwner
	}
	if err == nil {
		_, err = c.store.DeleteSegment(ctx, id)
	}
	c.mu.Unlock()
	if errors.Is(err, ErrNotFound) {
		return c.abandon(ctx, acct, id)
	}
	if err != nil {
		return fmt.Errorf("segment %s: %w", id, err)
	}
	dels := map[fnet.NodeID]challenge.PieceID{}
	for _, p := range seg.Pieces {
		if !p.Node.IsZero() {
			dels[p.Node] = p.ID
		}
	}
	c.deleteLater(seg.Account, seg.PieceSize, dels)
	return nil
}

// abandon cancels an account's uncommitted placement: its room is free at
// once, and pieces already uploaded under it are deleted. Without such a
// placement it returns ErrNoSegment.
func (c *core) abandon(ctx context.Context, acct fnet.AccountID, id SegmentID) error {
	p, err := c.store.GetPending(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("segment %s: %w", id, ErrNoSegment)
	}
	if err != nil {
		return fmt.Errorf("segment %s: %w", id, err)
	}
	if p.Account != acct {
		return fmt.Errorf("segment %s: %w", id, ErrNotOwner)
	}
	if err := c.store.DeletePending(ctx, id); err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("segment %s: %w", id, err)
	}
	c.unreserve(id)
	dels := make([]pieceDelete, 0, len(p.Nodes))
	for i, n := range p.Nodes {
		dels = append(dels, pieceDelete{node: n, piece: p.Pieces[i], account: acct, size: p.PieceSize})
	}
	c.deletePieces(dels)
	c.log.Debug("placement abandoned", "segment", id)
	return nil
}

// SegmentInfo describes a contract to its owner, with get tickets for the
// healthy pieces; when fewer than K are healthy, also for the lost pieces
// whose node is online (marked Healthy on the wire: "offered").
// SegmentHealth reports how many pieces of each segment are healthy, for
// the account's own segments; any other is reported unknown.
func (c *core) SegmentHealth(ctx context.Context, acct fnet.AccountID, ids []fnet.SegmentID) (*fnet.HealthReply, error) {
	rep := &fnet.HealthReply{Segments: make([]fnet.SegmentHealth, len(ids))}
	for i, id := range ids {
		seg, err := c.store.GetSegment(ctx, SegmentID(id))
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if seg.Account == acct {
			rep.Segments[i] = fnet.SegmentHealth{Known: true, Healthy: uint8(seg.Healthy()), N: uint8(seg.Scheme.N)}
		}
	}
	return rep, nil
}

func (c *core) SegmentInfo(ctx context.Context, acct fnet.AccountID, id SegmentID) (*fnet.SegmentReply, error) {
	seg, err := c.store.GetSegment(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("segment %s: %w", id, ErrNoSegment)
	}
	if err != nil {
		return nil, err
	}
	if seg.Account != acct {
		return nil, fmt.Errorf("segment %s: %w", id, ErrNotOwner)
	}
	rep := &fnet.SegmentReply{K: uint8(seg.Scheme.K), N: uint8(seg.Scheme.N), PieceSize: uint64(seg.PieceSize), Repaired: seg.Repaired}
	// Below K healthy pieces the segment cannot be read from those alone:
	// offer the lost pieces whose node is online too, so that the client can
	// still try them (it checks every piece against its id).
	fallback := seg.Healthy() < seg.Scheme.K
	now := c.now()
	for _, p := range seg.Pieces {
		sp := fnet.SegmentPiece{Piece: p.ID}
		if (p.State == PieceHealthy || fallback) && !p.Node.IsZero() {
			if n, err := c.store.GetNode(ctx, p.Node); err == nil && (p.State == PieceHealthy || c.online(n, now)) {
				sp.Healthy = true
				sp.Target = fnet.Target{Address: n.Address, Ticket: c.ticket(p.Node, p.ID, fnet.OpGet, acct, seg.PieceSize)}
			}
		}
		rep.Pieces = append(rep.Pieces, sp)
	}
	return rep, nil
}
