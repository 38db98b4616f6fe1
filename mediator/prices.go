package mediator

import (
	"context"
	"errors"
	"fmt"
	"time"

	fnet "github.com/fincrypt/fincrypt/net"
	"github.com/fincrypt/fincrypt/wallet"
)

// Contract prices (docs/WALLET.md, "Contract prices"): each piece keeps the
// price its node asked when the piece was placed there. A node that
// registers with a lower price gets it for the pieces it holds at once (a
// cut never hurts the client); with a higher price, for new pieces at once
// and for the pieces it holds only after the notice period
// (Payments.PriceNotice), which clients see coming in their balance.

// DefaultPriceNotice is the notice a price rise gives the clients of the
// pieces a node already holds.
const DefaultPriceNotice = 30 * 24 * time.Hour

// counterPricedContracts is set once every contract written before version
// 3 of the segment record has its pieces priced (priceLegacyContracts).
const counterPricedContracts = "contracts_priced_v3"

func (c *core) priceNotice() time.Duration {
	if c.pay != nil && c.pay.cfg.PriceNotice > 0 {
		return c.pay.cfg.PriceNotice
	}
	if c.cfg.Payments.PriceNotice > 0 {
		return c.cfg.Payments.PriceNotice
	}
	return DefaultPriceNotice
}

// priceLegacyContracts gives the pieces of contracts written before
// contract prices (segment record versions 1 and 2) the price their node
// asks now, once: the upgrade is the moment the contract's price is
// fixed. A crash midway prices the rest at the next start.
func (c *core) priceLegacyContracts(ctx context.Context) error {
	done, err := c.store.Counter(ctx, counterPricedContracts)
	if err != nil || done != 0 {
		return err
	}
	nodes, err := c.store.ListNodes(ctx)
	if err != nil {
		return err
	}
	price := map[fnet.NodeID]uint64{}
	for _, n := range nodes {
		price[n.ID] = n.Price
	}
	var legacy []SegmentID
	if err := c.store.Segments(ctx, SegmentID{}, 0, func(s *Segment) error {
		if s.unpriced {
			legacy = append(legacy, s.ID)
		}
		return nil
	}); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range legacy {
		seg, err := c.store.GetSegment(ctx, id)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		for i := range seg.Pieces {
			if p := &seg.Pieces[i]; !p.Node.IsZero() {
				p.Price = price[p.Node]
			}
		}
		if err := c.store.UpdateSegment(ctx, seg); err != nil {
			return err
		}
	}
	if len(legacy) > 0 {
		c.log.Info("contracts from before contract prices now carry their node's current price", "segments", len(legacy))
	}
	_, err = c.store.AddCounter(ctx, counterPricedContracts, 1)
	return err
}

// notePrice applies a node's (re-)registered price (c.mu held; n is the
// stored record, old its previous price, isNew for a first
// registration). It returns n with Price and RepriceAt set.
func (c *core) notePrice(ctx context.Context, n *Node, old, price uint64, isNew bool, now time.Time) error {
	n.Price = price
	switch {
	case isNew || price == old:
	case price < old:
		// A cut applies to the pieces held at once.
		cut, err := c.repriceNode(ctx, n.ID, func(p uint64) uint64 { return min(p, price) })
		if err != nil {
			return err
		}
		c.log.Info("storage node lowered its price; held pieces charged at it from now on", "node", n.ID, "from", old, "to", price, "pieces", cut)
	default:
		// A rise: new pieces at once, held pieces after the notice (a
		// second rise restarts it).
		n.RepriceAt = now.Add(c.priceNotice())
		c.log.Info("storage node raised its price: new pieces at once, held pieces after the notice", "node", n.ID, "from", old, "to", price, "held_from", n.RepriceAt.UTC().Format(time.RFC3339))
	}
	return nil
}

// repriceNode sets the contract price of every piece on node to
// f(price) (c.mu held) and returns how many changed.
func (c *core) repriceNode(ctx context.Context, node fnet.NodeID, f func(uint64) uint64) (int, error) {
	bySeg := map[SegmentID][]int{}
	if err := c.store.NodePieces(ctx, node, func(r PieceRef) error {
		if f(r.Price) != r.Price {
			bySeg[r.Segment] = append(bySeg[r.Segment], r.Index)
		}
		return nil
	}); err != nil {
		return 0, err
	}
	n := 0
	for id, idx := range bySeg {
		seg, err := c.store.GetSegment(ctx, id)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return n, err
		}
		for _, i := range idx {
			if p := &seg.Pieces[i]; p.Node == node {
				p.Price = f(p.Price)
				n++
			}
		}
		if err := c.store.UpdateSegment(ctx, seg); err != nil {
			return n, err
		}
	}
	return n, nil
}

// applyDueReprices raises the held pieces of every node whose notice ended
// by now to its price (a round calls it first, so the period is charged at
// the prices in force when it starts).
func (c *core) applyDueReprices(ctx context.Context, now time.Time) error {
	nodes, err := c.store.ListNodes(ctx)
	if err != nil {
		return err
	}
	for _, n := range nodes {
		if n.RepriceAt.IsZero() || now.Before(n.RepriceAt) {
			continue
		}
		if err := c.applyReprice(ctx, n.ID, now); err != nil {
			return fmt.Errorf("node %s: reprice: %w", n.ID, err)
		}
	}
	return nil
}

func (c *core) applyReprice(ctx context.Context, id fnet.NodeID, now time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, err := c.store.GetNode(ctx, id)
	if err != nil {
		return err
	}
	if n.RepriceAt.IsZero() || now.Before(n.RepriceAt) {
		return nil // registered again meanwhile
	}
	price := n.Price
	raised, err := c.repriceNode(ctx, id, func(p uint64) uint64 { return max(p, price) })
	if err != nil {
		return err
	}
	n.RepriceAt = time.Time{}
	if err := c.store.PutNode(ctx, n); err != nil {
		return err
	}
	c.log.Info("price notice ended: held pieces now charged at the node's price", "node", id, "price", price, "pieces", raised)
	return nil
}

// PriceNotice is a rise of the charge for an account's pieces that a node
// announced and that is not in force yet.
type PriceNotice struct {
	At     time.Time // when it applies
	Charge int64     // what it adds to a period's charge, sat
}

// accountNotices sums, per node whose price rise is under notice, what the
// rise will add to the account's charge per period; it returns the total
// (at least 1 sat per node and price) and the earliest time one applies.
func (c *core) accountNotices(ctx context.Context, acct fnet.AccountID) (PriceNotice, error) {
	var out PriceNotice
	nodes, err := c.store.ListNodes(ctx)
	if err != nil {
		return out, err
	}
	for _, n := range nodes {
		if n.RepriceAt.IsZero() {
			continue
		}
		var bytesAt = map[uint64]int64{}
		if err := c.store.NodePieces(ctx, n.ID, func(r PieceRef) error {
			if r.Account == acct && r.Price < n.Price && r.State != PieceLost {
				bytesAt[r.Price] += r.Size
			}
			return nil
		}); err != nil {
			return out, err
		}
		for p, b := range bytesAt {
			// At least 1 sat, so that a rise on little data still shows.
			more, _ := wallet.ProRate(b, int64(min(n.Price-p, 21e14)), c.cfg.Period, nil)
			out.Charge += max(more, 1)
			if out.At.IsZero() || n.RepriceAt.Before(out.At) {
				out.At = n.RepriceAt
			}
		}
	}
	return out, nil
}
