package testplanet_test

import (
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/mediator"
	"github.com/fincrypt/fincrypt/mediator/testplanet"
	fnet "github.com/fincrypt/fincrypt/net"
)

// TestVettedSybilsThatUndercutCannotCaptureByPrice is issue 18's last
// ransom, on real nodes over QUIC: an operator whose nodes have been
// vetted, on N-K+1 = 4 /24s of their own, asks price 1 against five honest
// nodes at about 1000. Price chooses at most N-K pieces of a segment, so
// each segment gets exactly N-K = 3 pieces on the Sybils by price (the
// cheapest still win what price may give) and the other K = 2 at random
// among the vetted subnets left: the Sybils' fourth subnet and five honest
// ones, so that a segment has N-K+1 pieces on the Sybils (enough to withhold
// it: ransom) with probability 2/6 = 1/3 (docs/SECURITY.md). Over 30
// segments the test fails above 24 captured (a false failure with
// probability 2e-7); without the rule every segment is captured.
func TestVettedSybilsThatUndercutCannotCaptureByPrice(t *testing.T) {
	p := testplanet.New(t, testplanet.Config{StorageNodes: 5, Reconfigure: func(c *mediator.Config) {
		c.Placement.VettingChallenges = 2
		// While the Sybils are new, each segment gives a piece to each of
		// them, so that all four are vetted after a few segments.
		c.Placement.UnvettedPieces = 4
		c.Placement.Seed = 18
		// Nine nodes and a round a second on a loaded machine: a late
		// heartbeat must not take a node offline (and out of placement).
		c.OnlineWindow, c.OfflineAfter = 5*time.Second, 20*time.Second
	}})
	scheme := p.Scheme()
	if scheme.N-scheme.K != 3 {
		t.Fatalf("the test is written for N-K = 3, scheme %s", scheme)
	}
	seed := uint64(1800)
	store := func() fnet.SegmentID {
		t.Helper()
		seed++
		seg, err := p.Client.Store(p.Context(), scheme, randomData(seed, 2000))
		if err != nil {
			t.Fatalf("honest upload: %v", err)
		}
		return seg
	}
	vetted := func(ids map[fnet.NodeID]bool, want int) func(*mediator.Status) bool {
		return func(st *mediator.Status) bool {
			n := 0
			for _, node := range st.Nodes {
				id, _ := fnet.ParseNodeID(node.ID)
				if (ids == nil || ids[id]) && node.Vetted && node.Online {
					n++
				}
			}
			return n == want
		}
	}
	for range 4 {
		store()
	}
	p.WaitFor("the honest nodes vetted", 60*time.Second, vetted(nil, 5))

	sybils := map[fnet.NodeID]bool{}
	for _, ip := range []string{"127.0.70.1", "127.0.71.1", "127.0.72.1", "127.0.73.1"} {
		n := p.AddNodeWith(testplanet.NodeOptions{IP: ip, Price: 1, Capacity: 1 << 30})
		sybils[n.ID()] = true
	}
	p.WaitFor("the Sybils registered", 20*time.Second, func(st *mediator.Status) bool {
		n := 0
		for _, node := range st.Nodes {
			if node.Online && node.IP != "" {
				n++
			}
		}
		return n == 9
	})
	for range 3 {
		store()
	}
	p.WaitFor("the Sybils vetted", 60*time.Second, vetted(sybils, 4))

	const segments = 30
	captured := 0
	for range segments {
		seg := p.Segment(store())
		onSybils := 0
		for _, pc := range seg.Pieces {
			if sybils[pc.Node] {
				onSybils++
			}
		}
		if onSybils < scheme.N-scheme.K {
			t.Fatalf("segment %s: %d pieces on the cheapest nodes, want price to choose N-K = %d", seg.ID, onSybils, scheme.N-scheme.K)
		}
		if onSybils > scheme.N-scheme.K {
			captured++
		}
	}
	t.Logf("%d of %d segments with N-K+1 pieces on the Sybils (expected 1/3: %d)", captured, segments, segments/3)
	if captured > 24 {
		t.Fatalf("%d of %d segments captured by price: the Sybils choose where pieces go", captured, segments)
	}
}
