package mediator

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	stdnet "net"
	"slices"

	"github.com/fincrypt/fincrypt/challenge"
	"github.com/fincrypt/fincrypt/erasure"
	fnet "github.com/fincrypt/fincrypt/net"
)

// subnet is the diversity key of a node: its IPv4 /24, its IPv6 /64, or
// its host name.
func subnet(address string) string {
	a, err := fnet.ParseAddress(address)
	if err != nil {
		return address
	}
	host, _, err := stdnet.SplitHostPort(a.HostPort)
	if err != nil {
		return a.HostPort
	}
	ip := stdnet.ParseIP(host)
	switch {
	case ip == nil:
		return host
	case ip.To4() != nil:
		return ip.Mask(stdnet.CIDRMask(24, 32)).String()
	default:
		return ip.Mask(stdnet.CIDRMask(64, 128)).String()
	}
}

// reliable: a node whose challenges mostly fail gets no new pieces.
func reliable(n *Node) bool { return n.Failed == 0 || n.Passed >= n.Failed }

// free is the room left on a node for new pieces.
func free(n *Node, reserved int64) int64 {
	used := max(n.Used, n.Contracted)
	f := int64(n.Capacity) - int64(used) - reserved
	return max(f, 0)
}

// selectNodes picks count distinct nodes for pieces of size bytes: online,
// reliable, with room, not in exclude; cheapest first (ties: fewer failures,
// then random), preferring nodes on subnets not yet used (including the
// subnets in avoid). It returns fewer than count if there are not enough.
func (c *core) selectNodes(nodes []*Node, count int, size int64, exclude map[fnet.NodeID]bool, avoid map[string]bool, reserved map[fnet.NodeID]int64) []*Node {
	now := c.now()
	var cand []*Node
	for _, n := range nodes {
		if exclude[n.ID] || !c.online(n, now) || !reliable(n) || free(n, reserved[n.ID]) < size {
			continue
		}
		cand = append(cand, n)
	}
	rand.Shuffle(len(cand), func(i, j int) { cand[i], cand[j] = cand[j], cand[i] })
	failRate := func(n *Node) float64 {
		if n.Passed+n.Failed == 0 {
			return 0
		}
		return float64(n.Failed) / float64(n.Passed+n.Failed)
	}
	slices.SortStableFunc(cand, func(a, b *Node) int {
		if c := cmp.Compare(a.Price, b.Price); c != 0 {
			return c
		}
		return cmp.Compare(failRate(a), failRate(b))
	})
	used := map[string]bool{}
	for s := range avoid {
		used[s] = true
	}
	picked := map[fnet.NodeID]bool{}
	var out []*Node
	for _, n := range cand { // first pass: one node per subnet
		if len(out) == count {
			return out
		}
		if s := subnet(n.Address); !used[s] {
			used[s] = true
			picked[n.ID] = true
			out = append(out, n)
		}
	}
	for _, n := range cand { // then the cheapest of the rest
		if len(out) == count {
			break
		}
		if !picked[n.ID] {
			picked[n.ID] = true
			out = append(out, n)
		}
	}
	return out
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
	cand := c.selectNodes(nodes, len(nodes), size, nil, nil, reserved)
	if len(cand) < s.N {
		return nil, fmt.Errorf("%w: scheme %s needs %d nodes with %d bytes free, %d qualify", ErrNotEnoughNodes, s, s.N, size, len(cand))
	}
	picked, err := c.assign(ctx, cand, req.Pieces)
	if err != nil {
		return nil, err
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
	if err := c.reserve(p.Segment, reservation{account: acct, nodes: p.Nodes, pieces: p.Pieces, size: size, expires: p.Expires}); err != nil {
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
