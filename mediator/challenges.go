package mediator

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	mrand "math/rand/v2"
	"sync"
	"time"

	fnet "github.com/fincrypt/fincrypt/net"
)

// challengeConcurrency bounds the nodes challenged at once.
const challengeConcurrency = 8

// MaxUnanswered is the number of rounds in a row an online node may leave
// its challenge unanswered before its challenged pieces count as lost.
const MaxUnanswered = 3

// RoundResult summarises one challenge round.
type RoundResult struct {
	Start       time.Time
	Nodes       int // nodes challenged
	Unreachable int // nodes that did not answer in time
	Passed      int // pieces that verified
	Failed      int // pieces that did not
}

// pieceResult is the outcome for one challenged piece.
type pieceResult struct {
	ref PieceRef
	ok  bool
	why string
}

// Round challenges every online node on a random sample of its healthy
// pieces, records the results per piece, per node and per period, and
// returns a summary.
func (c *core) Round(ctx context.Context) (RoundResult, error) { return c.roundAt(ctx, c.now()) }

// roundAt runs the round of the period that starts at start (now, or the
// period of a round that a crash interrupted) and, once it completed,
// stores start as CounterRoundDone: settlement reads periods up to it.
func (c *core) roundAt(ctx context.Context, start time.Time) (RoundResult, error) {
	c.rounds.Add(1)
	defer c.rounds.Add(-1)
	res := RoundResult{Start: start}
	if err := c.startPeriod(ctx, res.Start); err != nil { // damage reports count in it (damage.go)
		return res, err
	}
	if err := c.applyDueReprices(ctx, res.Start); err != nil { // price rises past their notice (prices.go)
		return res, err
	}
	nodes, err := c.store.ListNodes(ctx)
	if err != nil {
		return res, err
	}
	var (
		mu  sync.Mutex
		wg  sync.WaitGroup
		sem = make(chan struct{}, challengeConcurrency)
	)
	began := c.now()
	for _, n := range nodes {
		if (!c.online(n, began) && !c.awaited(n, began)) || !n.Disqualified.IsZero() {
			continue // a disqualified node's pieces are rebuilt elsewhere
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			passed, failed, reached, err := c.challengeNode(ctx, n, res.Start)
			if err != nil {
				c.log.Warn("challenge round: node", "node", n.ID, "err", err)
			}
			mu.Lock()
			defer mu.Unlock()
			if passed+failed > 0 || !reached {
				res.Nodes++
			}
			if !reached {
				res.Unreachable++
			}
			res.Passed += passed
			res.Failed += failed
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return res, err
	}
	if _, err := c.store.AddCounter(ctx, CounterRounds, 1); err != nil {
		return res, err
	}
	if err := setCounter(ctx, c.store, CounterRoundDone, res.Start.UnixNano()); err != nil {
		return res, err
	}
	c.obs.round(res, c.now().Sub(began))
	level := slog.LevelInfo
	if res.Nodes == 0 {
		level = slog.LevelDebug
	}
	c.log.Log(ctx, level, "challenge round", "nodes", res.Nodes, "unreachable", res.Unreachable, "passed", res.Passed, "failed", res.Failed, "took", c.now().Sub(began).Round(time.Millisecond))
	return res, nil
}

// awaited: the node was last heard of before this process started and
// is not gone, so its silence may be the mediator's own absence (it has
// not reconnected yet): it is challenged all the same, so that a round
// right after a restart does not skip the nodes through no fault of theirs.
func (c *core) awaited(n *Node, now time.Time) bool {
	return n.LastSeen.Before(c.started) && !c.gone(n, now)
}

// sample returns up to k healthy refs chosen uniformly (reservoir
// sampling), every healthy ref seen (for the period record), and up to k
// refs in state offline (to revive if the node still holds them).
func (c *core) sample(ctx context.Context, node fnet.NodeID, k int) (chosen, all, offline []PieceRef, err error) {
	seen, seenOffline := 0, 0
	err = c.store.NodePieces(ctx, node, func(r PieceRef) error {
		switch r.State {
		case PieceHealthy:
			all = append(all, r)
			seen++
			if len(chosen) < k {
				chosen = append(chosen, r)
			} else if j := mrand.IntN(seen); j < k {
				chosen[j] = r
			}
		case PieceOffline:
			seenOffline++
			if len(offline) < k {
				offline = append(offline, r)
			} else if j := mrand.IntN(seenOffline); j < k {
				offline[j] = r
			}
		}
		return nil
	})
	return chosen, all, offline, err
}

// challengeNode challenges one node and records the results. reached is
// false when the node did not answer before the deadline.
func (c *core) challengeNode(ctx context.Context, n *Node, period time.Time) (passed, failed int, reached bool, err error) {
	chosen, all, offline, err := c.sample(ctx, n.ID, c.cfg.ChallengeSample)
	if err != nil || len(chosen)+len(offline) == 0 {
		return 0, 0, true, err
	}
	// Pieces counted lost while the node was away ride along, to be
	// revived if the node still holds them.
	asked := append(chosen, offline[:min(len(offline), fnet.MaxChallengePieces-len(chosen))]...)
	results, reached, err := c.challengePieces(ctx, n, asked)
	if err != nil && reached {
		return 0, 0, reached, err
	}
	if !reached {
		// An unanswered challenge earns nothing this period, but the
		// pieces are not counted lost until the node has been silent past
		// the offline limit (it may be restarting).
		c.log.Info("node did not answer its challenge", "node", n.ID, "err", err)
		for _, r := range chosen {
			results = append(results, pieceResult{ref: r, ok: false, why: "no answer"})
		}
	}
	for _, r := range results {
		switch {
		case r.ok:
			passed++
		case r.ref.State == PieceHealthy:
			failed++ // a piece already counted lost is not held against the node twice
		}
	}
	if err := c.record(ctx, n.ID, results, reached, all, period); err != nil {
		return passed, failed, reached, err
	}
	return passed, failed, reached, nil
}

// challengePieces sends one challenge for refs and verifies the proofs.
// reached is false if the node could not be asked or did not answer.
func (c *core) challengePieces(ctx context.Context, n *Node, refs []PieceRef) ([]pieceResult, bool, error) {
	return c.challengePiecesWith(ctx, n, refs, c.cfg.ChallengeOpenings, c.cfg.ChallengeTimeout)
}

// challengePiecesWith is challengePieces with a given number of openings
// and deadline.
func (c *core) challengePiecesWith(ctx context.Context, n *Node, refs []PieceRef, openings int, timeout time.Duration) ([]pieceResult, bool, error) {
	addr, err := nodeAddress(n)
	if err != nil {
		return nil, false, err
	}
	req := &fnet.ChallengeRequest{Openings: uint8(openings)}
	if _, err := rand.Read(req.Nonce[:]); err != nil {
		return nil, false, err
	}
	for _, r := range refs {
		req.Pieces = append(req.Pieces, r.ID)
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := c.nodes.Challenge(cctx, addr, req)
	if err != nil {
		var re *fnet.RemoteError
		if errors.As(err, &re) {
			// The node answered with an error: it failed every piece.
			out := make([]pieceResult, len(refs))
			for i, r := range refs {
				out[i] = pieceResult{ref: r, why: "node refused: " + re.Message}
			}
			return out, true, nil
		}
		return nil, false, fmt.Errorf("challenge %s: %w", n.ID, err)
	}
	return verifyResponse(req, resp, refs), true, nil
}

// verifyResponse checks each proof against the recorded piece id and size
// (fnet.CheckChallenge); an unusable response fails every piece.
func verifyResponse(req *fnet.ChallengeRequest, resp *fnet.ChallengeResponse, refs []PieceRef) []pieceResult {
	sizes := make([]int64, len(refs))
	for i, r := range refs {
		sizes[i] = r.Size
	}
	errs, shape := fnet.CheckChallenge(req, resp, sizes)
	out := make([]pieceResult, len(refs))
	for i, r := range refs {
		out[i].ref = r
		switch {
		case shape != nil:
			out[i].why = shape.Error()
		case errs[i] != nil:
			out[i].why = errs[i].Error()
		default:
			out[i].ok = true
		}
	}
	return out
}

// record stores the results: per piece (in its segment; a failed piece
// becomes lost unless the node was unreachable), per node, and the period
// records that settlement reads.
func (c *core) record(ctx context.Context, node fnet.NodeID, results []pieceResult, reached bool, all []PieceRef, period time.Time) error {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	n, err := c.store.GetNode(ctx, node)
	if err != nil {
		return err
	}
	// A node that keeps heartbeating but stops answering challenges is
	// dodging them: after MaxUnanswered rounds in a row its challenged
	// pieces count as failed, as if it had answered wrongly.
	if reached {
		n.Unanswered = 0
	} else {
		n.Unanswered++
		if n.Unanswered >= MaxUnanswered && c.online(n, now) {
			c.log.Warn("node heartbeats but does not answer challenges", "node", node, "rounds", n.Unanswered)
			reached = true
		}
	}
	passed, failed, _, err := c.applyResults(ctx, node, results, reached, now)
	if err != nil {
		return err
	}
	n.Passed += passed
	n.Failed += failed
	if !reached {
		failed = 0 // a node that is away is not lying: the offline limit deals with it
	}
	c.observe(n, passed, failed)
	if err := c.store.PutNode(ctx, n); err != nil {
		return err
	}
	// Period records: what the node held for each account, and how it did.
	// Each piece is charged at its contract price: the record carries the
	// mean price of the account's bytes on the node, weighted by size.
	type acc struct {
		bytes, pieces, passed, failed uint64
		priced                        big.Int // sum of size*price
	}
	per := map[fnet.AccountID]*acc{}
	for _, r := range all {
		a := per[r.Account]
		if a == nil {
			a = &acc{}
			per[r.Account] = a
		}
		a.bytes += uint64(r.Size)
		a.pieces++
		var x big.Int
		a.priced.Add(&a.priced, x.Mul(big.NewInt(r.Size), new(big.Int).SetUint64(r.Price)))
	}
	for _, r := range results {
		a := per[r.ref.Account]
		if a == nil || r.ref.State != PieceHealthy {
			continue // a piece being revived earns from the next period on
		}
		if r.ok {
			a.passed++
		} else {
			a.failed++
		}
	}
	var clear []func() error
	for acct, a := range per { // damage reported after its period was settled
		carried, done, err := c.takeCarriedDamage(ctx, node, acct)
		if err != nil {
			return err
		}
		a.failed += carried
		clear = append(clear, done)
	}
	recs := make([]PeriodRecord, 0, len(per))
	for acct, a := range per {
		recs = append(recs, PeriodRecord{
			Period: period, Node: node, Account: acct, Bytes: a.bytes,
			Pieces: uint32(a.pieces), Passed: uint32(a.passed), Failed: uint32(a.failed), Price: meanPrice(&a.priced, a.bytes),
		})
	}
	if err := c.store.PutPeriodRecords(ctx, recs); err != nil {
		return err
	}
	for _, done := range clear {
		if err := done(); err != nil {
			return err
		}
	}
	return nil
}

// applyResults writes challenge results into the contracts (c.mu held). A
// failed piece becomes lost if the node was reached; a piece in state
// offline that verifies becomes healthy again (revived). A piece whose
// contract moved it to another node meanwhile is left alone, and the copy
// on this node is deleted unless another contract holds it there. It
// returns the pieces passed and failed (a piece already counted lost
// does not count as failed again) and how many were revived.
func (c *core) applyResults(ctx context.Context, node fnet.NodeID, results []pieceResult, reached bool, now time.Time) (passed, failed uint64, revived int, err error) {
	bySeg := map[SegmentID][]pieceResult{}
	for _, r := range results {
		bySeg[r.ref.Segment] = append(bySeg[r.ref.Segment], r)
	}
	var stale []pieceDelete
	for id, rs := range bySeg {
		seg, err := c.store.GetSegment(ctx, id)
		if errors.Is(err, ErrNotFound) {
			continue // released meanwhile; Release deleted its pieces
		}
		if err != nil {
			return passed, failed, revived, err
		}
		for _, r := range rs {
			if r.ref.Index >= len(seg.Pieces) {
				continue
			}
			p := &seg.Pieces[r.ref.Index]
			if p.Node != node || p.ID != r.ref.ID {
				// Moved by repair meanwhile: this copy is no longer in the
				// contract, and is not counted twice.
				if reached {
					stale = append(stale, pieceDelete{node: node, piece: r.ref.ID, account: seg.Account, size: seg.PieceSize})
				}
				continue
			}
			p.LastChecked = now
			if r.ok {
				p.Passed++
				passed++
				if p.State == PieceOffline {
					p.State = PieceHealthy
					revived++
					c.log.Info("piece revived: its node is back and holds it", "node", node, "segment", id, "piece", p.Index)
				}
				continue
			}
			p.Failed++
			if p.State == PieceHealthy {
				failed++
			}
			if reached && p.State != PieceLost {
				if p.State == PieceHealthy {
					c.log.Warn("piece failed its challenge", "node", node, "segment", id, "piece", p.Index, "why", r.why)
				}
				p.State = PieceLost
			}
		}
		if err := c.store.UpdateSegment(ctx, seg); err != nil {
			return passed, failed, revived, err
		}
	}
	c.deletePieces(stale)
	return passed, failed, revived, nil
}

// meanPrice is priced/bytes rounded to the nearest satoshi (0 for no bytes).
func meanPrice(priced *big.Int, bytes uint64) uint64 {
	if bytes == 0 {
		return 0
	}
	b := new(big.Int).SetUint64(bytes)
	q := new(big.Int).Mul(priced, big.NewInt(2))
	q.Add(q, b)
	q.Quo(q, new(big.Int).Mul(b, big.NewInt(2)))
	return q.Uint64()
}
