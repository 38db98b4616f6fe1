package mediator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/fincrypt/fincrypt/challenge"
	fnet "github.com/fincrypt/fincrypt/net"
)

// Counters of damage reports (DamageReport, docs/PROTOCOL.md).
const (
	// CounterDamageAccepted counts reported pieces that were under a
	// contract on the reporting node and were marked lost.
	CounterDamageAccepted = "damage_accepted"
	// CounterDamageIgnored counts reported pieces that were not.
	CounterDamageIgnored = "damage_ignored"
	// counterPeriodStart is the start (unix nanoseconds) of the current
	// challenge period: the start of the latest round.
	counterPeriodStart = "period_start_unix_nano"
	// carriedDamagePrefix names the counters of failures reported after
	// their period was settled: "damage_carried/NODE/ACCOUNT" holds the
	// pieces to count as failed in the node's next record for the account.
	carriedDamagePrefix = "damage_carried/"
)

// ReportDamage handles a storage node's report of pieces its scrubber found
// damaged and dropped. Only a registered node may report, and only about
// pieces contracted on it: those are marked lost at once (repair rebuilds
// them on other nodes) and count as failed challenges for the node in the
// current period, so that it is not paid for that account's bytes. Any other
// piece (unknown, released, moved by repair) is ignored, counted and logged;
// it is not an error, so that the node stops reporting it.
func (c *core) ReportDamage(ctx context.Context, peer fnet.NodeID, req *fnet.DamageReport) (*fnet.DamageReply, error) {
	if _, err := c.store.GetNode(ctx, peer); errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("node %s: %w", peer, fnet.ErrNotRegistered)
	} else if err != nil {
		return nil, err
	}
	rep := &fnet.DamageReply{}
	seen := map[challenge.PieceID]bool{}
	bySeg := map[SegmentID][]PieceRef{}
	var segs []SegmentID
	for _, id := range req.Pieces {
		if seen[id] {
			continue
		}
		seen[id] = true
		ref, ok, err := c.store.LookupPiece(ctx, peer, id)
		if err != nil {
			return nil, err
		}
		if !ok {
			rep.Ignored++
			continue
		}
		if _, ok := bySeg[ref.Segment]; !ok {
			segs = append(segs, ref.Segment)
		}
		bySeg[ref.Segment] = append(bySeg[ref.Segment], ref)
	}
	// The pieces go lost by the path failed fetches take (markLost); a
	// piece already counted lost is not held against the node twice.
	var failed []PieceRef
	for _, id := range segs {
		refs := bySeg[id]
		idx := make([]int, len(refs))
		on := make([]fnet.NodeID, len(refs))
		for i, r := range refs {
			idx[i], on[i] = r.Index, peer
			if r.State == PieceHealthy {
				failed = append(failed, r)
			}
		}
		if err := c.markLost(ctx, id, idx, on); errors.Is(err, ErrNotFound) {
			rep.Ignored += uint32(len(refs)) // released meanwhile
			continue
		} else if err != nil {
			return nil, err
		}
		rep.Accepted += uint32(len(refs))
		for _, r := range refs {
			c.log.Warn("storage node reported a damaged piece: marked lost", "node", peer, "segment", id,
				"piece", r.Index, "was", r.State)
		}
	}
	if err := c.recordDamage(ctx, peer, failed); err != nil {
		return nil, err
	}
	if rep.Ignored > 0 {
		c.log.Info("damage report names pieces not contracted on the node: ignored", "node", peer, "ignored", rep.Ignored)
		if _, err := c.store.AddCounter(ctx, CounterDamageIgnored, int64(rep.Ignored)); err != nil {
			return nil, err
		}
	}
	if rep.Accepted > 0 {
		if _, err := c.store.AddCounter(ctx, CounterDamageAccepted, int64(rep.Accepted)); err != nil {
			return nil, err
		}
	}
	return rep, nil
}

// recordDamage counts pieces reported damaged as failed: in the node's
// totals, and in its holding records of the current period (the latest
// round's), which settlement reads. A record the round did not write (the
// pieces were placed after it) is created for the reported bytes. If that
// period is settled already, the failures are carried to the node's next
// record for the account instead (takeCarriedDamage), so the report costs
// the node one period's pay for the account either way. So are failures
// reported while a round runs, since the round replaces the records it
// writes.
func (c *core) recordDamage(ctx context.Context, node fnet.NodeID, failed []PieceRef) error {
	if len(failed) == 0 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	n, err := c.store.GetNode(ctx, node)
	if err != nil {
		return err
	}
	n.Failed += uint64(len(failed))
	if err := c.store.PutNode(ctx, n); err != nil {
		return err
	}
	type acc struct{ bytes, pieces uint64 }
	per := map[fnet.AccountID]*acc{}
	for _, r := range failed {
		a := per[r.Account]
		if a == nil {
			a = &acc{}
			per[r.Account] = a
		}
		a.bytes += uint64(r.Size)
		a.pieces++
	}
	start, err := c.store.Counter(ctx, counterPeriodStart)
	if err != nil {
		return err
	}
	settled, err := c.store.Counter(ctx, CounterSettled)
	if err != nil {
		return err
	}
	if start == 0 || start <= settled || c.rounds.Load() > 0 {
		// No round yet (nothing recorded to be paid), the period is
		// settled, or a round is writing its records (it would replace
		// ours): the next record takes the failures.
		for acct, a := range per {
			if _, err := c.store.AddCounter(ctx, carriedDamageName(node, acct), int64(a.pieces)); err != nil {
				return err
			}
		}
		return nil
	}
	period := time.Unix(0, start)
	recs, err := c.store.PeriodRecords(ctx, period, period.Add(time.Nanosecond))
	if err != nil {
		return err
	}
	var out []PeriodRecord
	for _, r := range recs {
		if a := per[r.Account]; r.Node == node && a != nil {
			r.Failed += uint32(a.pieces)
			out = append(out, r)
			delete(per, r.Account)
		}
	}
	for acct, a := range per {
		out = append(out, PeriodRecord{Period: period, Node: node, Account: acct, Bytes: a.bytes,
			Pieces: uint32(a.pieces), Failed: uint32(a.pieces), Price: n.Price})
	}
	return c.store.PutPeriodRecords(ctx, out)
}

func carriedDamageName(node fnet.NodeID, acct fnet.AccountID) string {
	return carriedDamagePrefix + node.String() + "/" + fnet.NodeID(acct).String()
}

// takeCarriedDamage returns the failures carried to the node's next record
// for acct, and a function that clears them once that record is stored
// (c.mu held).
func (c *core) takeCarriedDamage(ctx context.Context, node fnet.NodeID, acct fnet.AccountID) (uint64, func() error, error) {
	name := carriedDamageName(node, acct)
	v, err := c.store.Counter(ctx, name)
	if err != nil || v <= 0 {
		return 0, func() error { return nil }, err
	}
	return uint64(v), func() error {
		_, err := c.store.AddCounter(ctx, name, -v)
		return err
	}, nil
}

// startPeriod records the start of a round as the current period's.
func (c *core) startPeriod(ctx context.Context, start time.Time) error {
	cur, err := c.store.Counter(ctx, counterPeriodStart)
	if err != nil {
		return err
	}
	_, err = c.store.AddCounter(ctx, counterPeriodStart, start.UnixNano()-cur)
	return err
}
