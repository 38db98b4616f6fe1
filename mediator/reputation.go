package mediator

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	fnet "github.com/fincrypt/fincrypt/net"
)

// PlacementPolicy is what keeps one operator from capturing a segment
// (docs/SECURITY.md, "Adversaries"): every piece of a segment on its own
// network (IPv4 /24, IPv6 /48) as the mediator verified it, so that no
// network holds more than one (and N-K >= 1) of a segment's pieces; new
// nodes vetted before they get a full share; and a reputation in which a
// failure weighs far more than a pass.
type PlacementPolicy struct {
	// SharedAddresses is for a private network on one machine or one LAN:
	// nodes may share an address and a subnet, and each node is its own
	// failure domain. Never on a public network: one operator could then
	// hold every piece of a segment.
	SharedAddresses bool
	// VettingChallenges is the number of challenges a node must pass
	// before it is vetted (default 16).
	VettingChallenges uint64
	// UnvettedPieces is how many pieces of a segment may go to unvetted
	// nodes while vetted nodes on enough subnets can take the rest
	// (default 1). When they cannot (a young network), unvetted nodes fill
	// the gap.
	UnvettedPieces int
	// FailureWeight is what a failed challenge or read weighs against one
	// pass (default 10).
	FailureWeight float64
	// Decay multiplies the weights before each new result (default 0.95):
	// old results fade.
	Decay float64
	// DisqualifyBelow: a node whose reputation, pass/(pass+fail) over the
	// decayed weights, falls below it is disqualified for good (default
	// 0.6). Its pieces are rebuilt elsewhere.
	DisqualifyBelow float64
	// DisqualifyAfter is the least number of failures (in its life)
	// before a node can be disqualified (default 3); below the threshold
	// with fewer, it only gets no new pieces until passes bring it back.
	DisqualifyAfter uint64
	// DialBackTimeout bounds the mediator's dial back to a registering
	// node (default 10s).
	DialBackTimeout time.Duration
	// Seed, if not 0, seeds the random choices of placement and repair
	// (tests that count where pieces go); 0 seeds from the system.
	Seed uint64
}

func (p PlacementPolicy) withDefaults() PlacementPolicy {
	if p.VettingChallenges == 0 {
		p.VettingChallenges = 16
	}
	if p.UnvettedPieces == 0 {
		p.UnvettedPieces = 1
	}
	if p.FailureWeight == 0 {
		p.FailureWeight = 10
	}
	if p.Decay == 0 {
		p.Decay = 0.95
	}
	if p.DisqualifyBelow == 0 {
		p.DisqualifyBelow = 0.6
	}
	if p.DisqualifyAfter == 0 {
		p.DisqualifyAfter = 3
	}
	if p.DialBackTimeout == 0 {
		p.DialBackTimeout = 10 * time.Second
	}
	return p
}

func (p PlacementPolicy) validate() error {
	switch {
	case p.UnvettedPieces < 0:
		return fmt.Errorf("unvetted pieces %d: want >= 0", p.UnvettedPieces)
	case p.FailureWeight < 1:
		return fmt.Errorf("failure weight %g: want >= 1", p.FailureWeight)
	case p.Decay <= 0 || p.Decay > 1:
		return fmt.Errorf("reputation decay %g: want 0 < decay <= 1", p.Decay)
	case p.DisqualifyBelow < 0 || p.DisqualifyBelow >= 1:
		return fmt.Errorf("disqualification threshold %g: want 0 <= threshold < 1", p.DisqualifyBelow)
	case p.DialBackTimeout <= 0:
		return fmt.Errorf("dial-back timeout %s must be positive", p.DialBackTimeout)
	}
	return nil
}

// Reputation is pass/(pass+fail) over the decayed weights; 1 for a node
// never challenged.
func (n *Node) Reputation() float64 {
	if n.RepPass+n.RepFail == 0 {
		return 1
	}
	return n.RepPass / (n.RepPass + n.RepFail)
}

// vetted: the node has passed enough challenges for a full share.
func (c *core) vetted(n *Node) bool { return n.Passed >= c.cfg.Placement.VettingChallenges }

// observe adds results to a node's reputation (passes first, so that a
// round with failures ends on them) and disqualifies the node if it falls
// below the threshold (with DisqualifyAfter failures counted in n.Failed
// already). It reports whether it disqualified the node now. Callers hold
// c.mu and store the node.
func (c *core) observe(n *Node, passed, failed uint64) bool {
	p := c.cfg.Placement
	for range passed {
		n.RepPass = n.RepPass*p.Decay + 1
		n.RepFail *= p.Decay
	}
	for range failed {
		n.RepPass *= p.Decay
		n.RepFail = n.RepFail*p.Decay + p.FailureWeight
	}
	if n.Disqualified.IsZero() && failed > 0 && n.Failed >= p.DisqualifyAfter && n.Reputation() < p.DisqualifyBelow {
		n.Disqualified = c.now()
		c.log.Warn("storage node disqualified: its pieces are rebuilt elsewhere", "node", n.ID,
			"reputation", fmt.Sprintf("%.3f", n.Reputation()), "passed", n.Passed, "failed", n.Failed)
		return true
	}
	return false
}

// observeFailedReads counts reads that returned nothing or wrong bytes
// against their nodes.
func (c *core) observeFailedReads(ctx context.Context, nodes []fnet.NodeID) error {
	count := map[fnet.NodeID]uint64{}
	for _, id := range nodes {
		count[id]++
	}
	for id, k := range count {
		n, err := c.store.GetNode(ctx, id)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		n.Failed += k
		c.observe(n, 0, k)
		if err := c.store.PutNode(ctx, n); err != nil {
			return err
		}
	}
	return nil
}

// subnetOf is the network of an address: its IPv4 /24 or IPv6 /48.
func subnetOf(ip netip.Addr) string {
	ip = ip.Unmap()
	bits := 24
	if ip.Is6() {
		bits = 48
	}
	p, err := ip.Prefix(bits)
	if err != nil {
		return ip.String()
	}
	return p.String()
}

// subnet is a node's network failure domain: the subnet of its verified
// address, or the node itself with SharedAddresses.
func (c *core) subnet(n *Node) string {
	if c.cfg.Placement.SharedAddresses {
		return "node " + n.ID.String()
	}
	return subnetOf(n.IP)
}

// spread is the failure domains a segment's pieces occupy.
type spread struct {
	subnets  map[string]bool
	unvetted int
}

func newSpread() *spread { return &spread{subnets: map[string]bool{}} }

func (s *spread) add(c *core, n *Node) {
	s.subnets[c.subnet(n)] = true
	if !c.vetted(n) {
		s.unvetted++
	}
}

// placeable: a node that may receive new pieces at all.
func (c *core) placeable(n *Node, now time.Time) bool {
	return c.online(n, now) && n.Disqualified.IsZero() && n.IP.IsValid() &&
		n.Reputation() >= c.cfg.Placement.DisqualifyBelow
}
