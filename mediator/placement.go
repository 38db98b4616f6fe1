package mediator

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"

	"github.com/fincrypt/fincrypt/challenge"
	"github.com/fincrypt/fincrypt/erasure"
	fnet "github.com/fincrypt/fincrypt/net"
	"github.com/fincrypt/fincrypt/wallet"
)

// free is the room left on a node for new pieces.
func free(n *Node, reserved int64) int64 {
	used := max(n.Used, n.Contracted)
	f := int64(n.Capacity) - int64(used) - reserved
	return max(f, 0)
}

// selectNodes picks up to count nodes, any of which may take pieces of
// size bytes of a segment whose other pieces occupy taken (nil: none):
// nodes that are placeable (online, verified, not disqualified), have room
// and are not in exclude, such that
//
//   - no two pieces of the segment share a subnet (c.subnet), taken
//     included, whatever names the nodes advertise: one operator's
//     network never holds more than one piece, fewer than the N-K whose
//     loss a segment survives;
//   - unvetted nodes, chosen at random (a low price buys a new node
//     nothing), get Placement.UnvettedPieces of the segment, more only
//     where vetted nodes on free subnets are missing (a young network:
//     then the cheapest);
//   - vetted nodes are chosen by price (ties: better reputation, then
//     random) for at most priced of the pieces, and the rest at random
//     among the vetted nodes left, each free subnet equally likely
//     whatever number of nodes it holds: operators who undercut everyone
//     on N-K+1 networks get the N-K pieces that price hands out, and a
//     further piece only by the luck of the draw (docs/SECURITY.md);
//   - accept (if not nil) takes the node, asked last.
//
// It returns fewer than count if there are not enough.
func (c *core) selectNodes(nodes []*Node, count, priced int, size int64, exclude map[fnet.NodeID]bool, taken *spread, reserved map[fnet.NodeID]int64, accept func(*Node) bool) []*Node {
	now := c.now()
	if taken == nil {
		taken = newSpread()
	}
	rng := c.rng
	if rng == nil {
		rng = newLockedRand(0)
	}
	var vetted, unvetted []*Node
	for _, n := range nodes {
		if exclude[n.ID] || !c.placeable(n, now) || free(n, reserved[n.ID]) < size {
			continue
		}
		if c.vetted(n) {
			vetted = append(vetted, n)
		} else {
			unvetted = append(unvetted, n)
		}
	}
	// A seeded rng gives the same choices for the same nodes, whatever
	// order the store lists them in.
	slices.SortFunc(vetted, func(a, b *Node) int { return cmp.Compare(a.ID.String(), b.ID.String()) })
	slices.SortFunc(unvetted, func(a, b *Node) int { return cmp.Compare(a.ID.String(), b.ID.String()) })
	byPrice := func(l []*Node) {
		shuffleWith(rng, l)
		slices.SortStableFunc(l, func(a, b *Node) int {
			if c := cmp.Compare(a.Price, b.Price); c != 0 {
				return c
			}
			return cmp.Compare(b.Reputation(), a.Reputation())
		})
	}
	random := slices.Clone(unvetted)
	shuffleWith(rng, random)
	drawn := c.bySubnetAtRandom(rng, vetted)
	byPrice(vetted)
	byPrice(unvetted)
	sp := &spread{subnets: maps.Clone(taken.subnets), unvetted: taken.unvetted}
	picked := map[fnet.NodeID]bool{}
	var out []*Node
	take := func(from []*Node, limit int) {
		for _, n := range from {
			if len(out) >= limit {
				return
			}
			if picked[n.ID] || sp.subnets[c.subnet(n)] || (accept != nil && !accept(n)) {
				continue
			}
			picked[n.ID] = true
			sp.add(c, n)
			out = append(out, n)
		}
	}
	share := min(count, max(c.cfg.Placement.UnvettedPieces-taken.unvetted, 0))
	subnets := map[string]bool{}
	for _, n := range vetted {
		if k := c.subnet(n); !taken.subnets[k] {
			subnets[k] = true
		}
	}
	if len(subnets) >= count-share { // else a young network: all by price
		take(random, share)
	}
	take(vetted, len(out)+max(priced, 0))
	take(drawn, count)
	if len(out) < count { // too few vetted nodes on free subnets: by price
		take(unvetted, count)
	}
	return out
}

// bySubnetAtRandom orders nodes for a draw in which every subnet is
// equally likely first (a subnet of a thousand nodes no likelier than one
// of one), then a node of it at random; subnets repeat in later rounds.
func (c *core) bySubnetAtRandom(rng *lockedRand, nodes []*Node) []*Node {
	groups := map[string][]*Node{}
	var keys []string
	for _, n := range nodes {
		k := c.subnet(n)
		if groups[k] == nil {
			keys = append(keys, k)
		}
		groups[k] = append(groups[k], n)
	}
	slices.Sort(keys)
	shuffleWith(rng, keys)
	for _, k := range keys {
		shuffleWith(rng, groups[k])
	}
	out := make([]*Node, 0, len(nodes))
	for round := 0; len(out) < len(nodes); round++ {
		for _, k := range keys {
			if round < len(groups[k]) {
				out = append(out, groups[k][round])
			}
		}
	}
	return out
}

// lockedRand is a random source that placements running at once share.
type lockedRand struct {
	mu sync.Mutex
	r  *rand.Rand
}

func newLockedRand(seed uint64) *lockedRand {
	if seed == 0 {
		seed = rand.Uint64()
	}
	return &lockedRand{r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

func shuffleWith[T any](l *lockedRand, s []T) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.r.Shuffle(len(s), func(i, j int) { s[i], s[j] = s[j], s[i] })
}

// Place answers a client's placement request with N nodes and signed put
// tickets, and records the placement until it is committed or expires.
func (c *core) Place(ctx context.Context, acct fnet.AccountID, req *fnet.PlacementRequest) (*fnet.PlacementReply, error) {
	if err := c.requireAccount(ctx, acct); err != nil {
		return nil, err
	}
	if err := c.canPlace(acct); err != nil {
		return nil, err
	}
	s := erasure.Scheme{K: int(req.K), N: int(req.N)}
	if s == (erasure.Scheme{}) {
		s = c.cfg.Scheme
	}
	if err := s.CheckExpansion(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadScheme, err)
	}
	if len(req.Pieces) != s.N {
		return nil, fmt.Errorf("%w: %d piece ids for scheme %s", fnet.ErrBadRequest, len(req.Pieces), s)
	}
	size := int64(req.PieceSize)
	if err := challenge.CheckSize(size); err != nil {
		return nil, fmt.Errorf("%w: %v", fnet.ErrBadRequest, err)
	}
	nodes, err := c.store.ListNodes(ctx)
	if err != nil {
		return nil, err
	}
	reserved := c.reservedBytes(c.now())
	// A node that holds one of these piece ids for another contract cannot
	// take it again: pick again without it (rare: identical bytes in two
	// segments).
	exclude := map[fnet.NodeID]bool{}
	var picked []*Node
	for {
		cand := c.selectNodes(nodes, s.N, s.N-s.K, size, exclude, nil, reserved, nil)
		if len(cand) < s.N {
			return nil, fmt.Errorf("%w: scheme %s needs %d nodes on distinct networks with %d bytes free, %d qualify", ErrNotEnoughNodes, s, s.N, size, len(cand))
		}
		picked, err = c.assign(ctx, cand, req.Pieces)
		if err == nil {
			break
		}
		if !errors.Is(err, ErrNotEnoughNodes) {
			return nil, err
		}
		more := false
		for _, n := range cand {
			for _, id := range req.Pieces {
				if held, err := c.holdsPiece(ctx, n.ID, id, SegmentID{}, false); err != nil {
					return nil, err
				} else if held && !exclude[n.ID] {
					exclude[n.ID], more = true, true
				}
			}
		}
		if !more {
			return nil, err
		}
	}
	now := c.now()
	p := &Pending{
		Segment: newSegmentID(), Account: acct, Scheme: s, PieceSize: size,
		Pieces: slices.Clone(req.Pieces), Expires: now.Add(c.cfg.TicketTTL),
	}
	rep := &fnet.PlacementReply{Segment: fnet.SegmentID(p.Segment), Expires: p.Expires}
	for i, n := range picked {
		p.Nodes = append(p.Nodes, n.ID)
		p.Prices = append(p.Prices, n.Price)
		rep.Targets = append(rep.Targets, fnet.Target{
			Address: n.Address,
			Ticket:  c.ticket(n.ID, req.Pieces[i], fnet.OpPut, acct, size),
		})
	}
	r := reservation{account: acct, nodes: p.Nodes, pieces: p.Pieces, size: size}
	r.expires = now.Add(c.cfg.Reservations.hold(r.bytes(), c.cfg.TicketTTL))
	for _, n := range picked {
		sat, _ := wallet.ProRate(size, int64(min(n.Price, 21e14)), c.cfg.Period, nil)
		r.cost += sat + 1 // rounded up
	}
	budget, err := c.escrowBudget(acct)
	if err != nil {
		return nil, err
	}
	if err := c.reserve(p.Segment, r, budget); err != nil {
		return nil, err
	}
	if err := c.store.PutPending(ctx, p); err != nil {
		c.unreserve(p.Segment)
		return nil, err
	}
	return rep, nil
}

// assign gives each piece its own candidate such that no node gets a piece
// id it holds already for another segment (a node keeps one copy of a piece
// id, so two contracts must not share it there). It prefers candidates in
// order and, first, nodes where no other placement is putting the same id
// either; a conflict with an uncommitted placement only is accepted when
// nothing else fits (the client may be retrying an upload), since the
// commit drops a piece another contract took meanwhile.
func (c *core) assign(ctx context.Context, cand []*Node, pieces []challenge.PieceID) ([]*Node, error) {
	for _, strict := range []bool{true, false} {
		m := &matcher{ctx: ctx, c: c, cand: cand, pieces: pieces, strict: strict,
			owner: make([]int, len(cand)), memo: map[[2]int]bool{}}
		for j := range m.owner {
			m.owner[j] = -1
		}
		ok := true
		for i := range pieces {
			m.seen = make([]bool, len(cand))
			if !m.augment(i) {
				ok = false
				break
			}
		}
		if m.err != nil {
			return nil, m.err
		}
		if ok {
			out := make([]*Node, len(pieces))
			for j, i := range m.owner {
				if i >= 0 {
					out[i] = cand[j]
				}
			}
			return out, nil
		}
	}
	return nil, fmt.Errorf("%w: %d candidate nodes, but too few that do not hold these piece ids already", ErrNotEnoughNodes, len(cand))
}

// matcher is a bipartite matching of pieces to candidate nodes (Kuhn's
// augmenting paths) that looks conflicts up lazily.
type matcher struct {
	ctx    context.Context
	c      *core
	cand   []*Node
	pieces []challenge.PieceID
	strict bool
	owner  []int // candidate -> piece, -1 if free
	seen   []bool
	memo   map[[2]int]bool
	err    error
}

func (m *matcher) fits(i, j int) bool {
	k := [2]int{i, j}
	if v, ok := m.memo[k]; ok {
		return v
	}
	held, err := m.c.holdsPiece(m.ctx, m.cand[j].ID, m.pieces[i], SegmentID{}, m.strict)
	if err != nil && m.err == nil {
		m.err = err
	}
	m.memo[k] = err == nil && !held
	return m.memo[k]
}

func (m *matcher) augment(i int) bool {
	for j := range m.cand {
		if m.err != nil {
			return false
		}
		if m.seen[j] || !m.fits(i, j) {
			continue
		}
		m.seen[j] = true
		if m.owner[j] < 0 || m.augment(m.owner[j]) {
			m.owner[j] = i
			return true
		}
	}
	return false
}

// holdsPiece reports whether a segment other than seg has piece on node in
// a contract or, if placements is set, in a live placement.
func (c *core) holdsPiece(ctx context.Context, node fnet.NodeID, piece challenge.PieceID, seg SegmentID, placements bool) (bool, error) {
	ref, ok, err := c.store.LookupPiece(ctx, node, piece)
	if err != nil {
		return false, err
	}
	if ok && ref.Segment != seg {
		return true, nil
	}
	return placements && c.reservedPiece(node, piece, seg), nil
}
