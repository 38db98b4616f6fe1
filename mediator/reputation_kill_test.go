package mediator

// Tests of reputation.go at its edges (docs/TESTING.md, "mediator, eighth
// session").

import (
	"context"
	"net/netip"
	"testing"
	"time"

	fnet "github.com/fincrypt/fincrypt/net"
)

// TestPlacementPolicyEdges: Validate's bounds at each edge and the
// defaults.
func TestPlacementPolicyEdges(t *testing.T) {
	ok := PlacementPolicy{UnvettedPieces: 0, FailureWeight: 1, Decay: 1, DisqualifyBelow: 0, DialBackTimeout: 1}
	if err := ok.validate(); err != nil {
		t.Fatalf("policy at every edge: %v", err)
	}
	for name, mut := range map[string]func(*PlacementPolicy){
		"negative unvetted pieces": func(p *PlacementPolicy) { p.UnvettedPieces = -1 },
		"failure weight under 1":   func(p *PlacementPolicy) { p.FailureWeight = 0.999 },
		"no decay":                 func(p *PlacementPolicy) { p.Decay = 0 },
		"decay above 1":            func(p *PlacementPolicy) { p.Decay = 1.001 },
		"negative threshold":       func(p *PlacementPolicy) { p.DisqualifyBelow = -0.001 },
		"threshold 1":              func(p *PlacementPolicy) { p.DisqualifyBelow = 1 },
		"no dial-back timeout":     func(p *PlacementPolicy) { p.DialBackTimeout = 0 },
	} {
		p := ok
		mut(&p)
		if err := p.validate(); err == nil {
			t.Errorf("%s: %+v accepted", name, p)
		}
	}
	d := PlacementPolicy{}.withDefaults()
	want := PlacementPolicy{VettingChallenges: 16, UnvettedPieces: 1, FailureWeight: 10, Decay: 0.95, DisqualifyBelow: 0.6, DisqualifyAfter: 3, DialBackTimeout: 10 * time.Second}
	if d != want {
		t.Fatalf("defaults %+v, want %+v", d, want)
	}
	set := PlacementPolicy{VettingChallenges: 2, UnvettedPieces: 3, FailureWeight: 4, Decay: 0.5, DisqualifyBelow: 0.25, DisqualifyAfter: 6, DialBackTimeout: 7}
	if d := set.withDefaults(); d != set {
		t.Fatalf("withDefaults changed a set policy: %+v", d)
	}
}

// TestReputationEdges: the arithmetic of observe (decay, failure weight),
// vetting at exactly VettingChallenges passes, disqualification only on a
// failure, with DisqualifyAfter failures and a reputation strictly below
// the threshold, once; placeable at exactly the threshold.
func TestReputationEdges(t *testing.T) {
	w := newWorld(t, 0)
	w.c.cfg.Placement = PlacementPolicy{VettingChallenges: 4, FailureWeight: 2, Decay: 0.5, DisqualifyBelow: 0.5, DisqualifyAfter: 2}.withDefaults()
	now := w.now()
	n := &Node{IP: netip.MustParseAddr("192.0.2.1"), LastSeen: now}
	if r := n.Reputation(); r != 1 {
		t.Fatalf("reputation of a node never challenged: %g", r)
	}
	if w.c.observe(n, 1, 0) || n.RepPass != 1 || n.RepFail != 0 {
		t.Fatalf("one pass: %+v", n)
	}
	// A failure: passes decay to 0.5, the failure weighs 2: 0.5/2.5.
	n.Failed = 1
	if w.c.observe(n, 0, 1) || n.RepPass != 0.5 || n.RepFail != 2 {
		t.Fatalf("one failure with one failure in its life: disqualified or wrong weights %+v", n)
	}
	if r := n.Reputation(); r != 0.2 {
		t.Fatalf("reputation %g, want 0.2", r)
	}
	// Passes alone never disqualify, however low the reputation.
	n.Failed = 5
	n.RepPass, n.RepFail = 0, 100
	if w.c.observe(n, 1, 0) || !n.Disqualified.IsZero() {
		t.Fatalf("a pass disqualified the node: %+v", n)
	}
	// Reputation exactly at the threshold: placeable, not disqualified.
	n.RepPass, n.RepFail = 4, 0 // one failure: 2 against 0+2
	n.Failed = 2
	if w.c.observe(n, 0, 1) {
		t.Fatalf("reputation %g exactly at the threshold 0.5: disqualified", n.Reputation())
	}
	if n.RepPass != 2 || n.RepFail != 2 {
		t.Fatalf("weights %g/%g, want 2/2", n.RepPass, n.RepFail)
	}
	// Earlier failures decay too.
	f := &Node{RepPass: 4, RepFail: 2}
	w.c.observe(f, 0, 1)
	if f.RepPass != 2 || f.RepFail != 3 {
		t.Fatalf("weights %g/%g after a failure on 4/2, want 2/3", f.RepPass, f.RepFail)
	}
	n.RepPass, n.RepFail = 1, 1
	if r := n.Reputation(); r != 0.5 {
		t.Fatalf("reputation of 1/1: %g", r)
	}
	if !w.c.placeable(n, now) {
		t.Fatal("a node at exactly the threshold reputation is not placeable")
	}
	n.RepPass, n.RepFail = 0.999, 1
	if w.c.placeable(n, now) {
		t.Fatal("a node below the threshold is placeable")
	}
	// Below the threshold with DisqualifyAfter failures: disqualified, once.
	n.RepPass, n.RepFail = 1, 0
	n.Failed = 2
	if !w.c.observe(n, 0, 1) || n.Disqualified.IsZero() {
		t.Fatalf("two failures in its life, reputation %g: not disqualified", n.Reputation())
	}
	at := n.Disqualified
	w.advance(time.Hour)
	n.Failed = 3
	if w.c.observe(n, 0, 1) || !n.Disqualified.Equal(at) {
		t.Fatalf("disqualified again: %v, was %v", n.Disqualified, at)
	}
	if w.c.placeable(n, w.now()) {
		t.Fatal("a disqualified node is placeable")
	}
	// One failure short of DisqualifyAfter: not disqualified.
	m := &Node{RepPass: 1, Failed: 1}
	if w.c.observe(m, 0, 1) || !m.Disqualified.IsZero() {
		t.Fatalf("one failure in its life: disqualified %+v", m)
	}

	// Vetting at exactly VettingChallenges passes.
	if w.c.vetted(&Node{Passed: 3}) || !w.c.vetted(&Node{Passed: 4}) {
		t.Fatal("vetted: want at exactly 4 passes, not 3")
	}
	// Placeable: online, with a verified address.
	ok := &Node{IP: netip.MustParseAddr("192.0.2.1"), LastSeen: now}
	if !w.c.placeable(ok, now) || w.c.placeable(&Node{LastSeen: now}, now) ||
		w.c.placeable(ok, now.Add(w.c.cfg.OnlineWindow+1)) {
		t.Fatal("placeable: want online nodes with an address only")
	}
	if !w.c.placeable(ok, now.Add(w.c.cfg.OnlineWindow)) {
		t.Fatal("a node seen exactly OnlineWindow ago is not placeable")
	}
}

// TestSubnetsAndSpread: IPv4 /24 (mapped IPv6 as IPv4), IPv6 /48; a
// spread counts the unvetted nodes it takes (two of three here).
func TestSubnetsAndSpread(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.7":        "192.0.2.0/24",
		"::ffff:192.0.2.9": "192.0.2.0/24",
		"2001:db8:1:2::1":  "2001:db8:1::/48",
	} {
		if got := subnetOf(netip.MustParseAddr(in)); got != want {
			t.Errorf("subnet of %s: %s, want %s", in, got, want)
		}
	}
	w := newWorld(t, 0)
	w.c.cfg.Placement.VettingChallenges = 2
	s := newSpread()
	a := &Node{ID: fnet.NodeID{1}, IP: netip.MustParseAddr("192.0.2.1"), Passed: 2}
	b := &Node{ID: fnet.NodeID{2}, IP: netip.MustParseAddr("198.51.100.1"), Passed: 1}
	c := &Node{ID: fnet.NodeID{3}, IP: netip.MustParseAddr("203.0.113.1")}
	s.add(w.c, a)
	s.add(w.c, b)
	s.add(w.c, c)
	if s.unvetted != 2 || !s.subnets["192.0.2.0/24"] || !s.subnets["198.51.100.0/24"] || len(s.subnets) != 3 {
		t.Fatalf("spread %+v", s)
	}
}

// TestFailedReadsCountAgainstTheirNodes: each read failure counts once
// against its node (two for a node named twice), unknown nodes are
// skipped, and enough of them disqualify.
func TestFailedReadsCountAgainstTheirNodes(t *testing.T) {
	w := newWorld(t, 2)
	ctx := context.Background()
	a, b := w.ids[0].ID(), w.ids[1].ID()
	if err := w.c.observeFailedReads(ctx, []fnet.NodeID{a, {7}, a, b}); err != nil {
		t.Fatal(err)
	}
	na, _ := w.store.GetNode(ctx, a)
	nb, _ := w.store.GetNode(ctx, b)
	if na.Failed != 2 || nb.Failed != 1 || na.RepFail <= nb.RepFail {
		t.Fatalf("failed reads: node a %d (weight %g), node b %d (weight %g); want 2 and 1", na.Failed, na.RepFail, nb.Failed, nb.RepFail)
	}
	if err := w.c.observeFailedReads(ctx, []fnet.NodeID{a}); err != nil {
		t.Fatal(err)
	}
	if na, _ = w.store.GetNode(ctx, a); na.Disqualified.IsZero() {
		t.Fatalf("a node with %d failed reads and reputation %g is not disqualified", na.Failed, na.Reputation())
	}
}
