package mediator

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/challenge"
	fnet "github.com/fincrypt/fincrypt/net"
)

// TestRegisterVerifiesTheAddress: a node is placed on only once its
// advertised name resolves to the address it connects from and it answers
// there; names do not make one address several networks.
func TestRegisterVerifiesTheAddress(t *testing.T) {
	w := newWorld(t, 0)
	lo := netip.MustParseAddr("127.0.0.1")
	// Resolves elsewhere than the connection comes from.
	if _, err := w.addNodeAs("10.0.1.1:7000", netip.MustParseAddr("10.0.2.1"), 1); !errors.Is(err, fnet.ErrBadRequest) {
		t.Fatalf("address of another network: %v", err)
	}
	// Does not resolve at all (.invalid never does, and is not sent to DNS).
	if _, err := w.addNodeAs("node.invalid:7000", lo, 1); !errors.Is(err, fnet.ErrBadRequest) {
		t.Fatalf("name that does not resolve: %v", err)
	}
	// Resolves and matches, but nothing answers there.
	w.c.dialBack = func(context.Context, fnet.Address) error { return errors.New("no answer") }
	if _, err := w.addNodeAs("10.0.3.1:7000", netip.MustParseAddr("10.0.3.1"), 1); !errors.Is(err, fnet.ErrBadRequest) {
		t.Fatalf("node that does not answer the dial back: %v", err)
	}
	// Without a source address (not over a connection) nothing is verified.
	id, _ := fnet.GenerateIdentity()
	if _, err := w.c.Register(context.Background(), id.ID(), &fnet.RegisterRequest{Node: id.ID(),
		Address: fnet.Address{ID: id.ID(), HostPort: "10.0.4.1:7000"}.String(), Capacity: 1 << 30}); !errors.Is(err, fnet.ErrBadRequest) {
		t.Fatalf("registration without a source address: %v", err)
	}
	nodes, _ := w.store.ListNodes(context.Background())
	if len(nodes) != 0 {
		t.Fatalf("%d nodes recorded from refused registrations", len(nodes))
	}

	// Five names of one address, each dialled back on that address: one
	// network, whatever the names.
	var dialled []string
	w.c.dialBack = func(_ context.Context, a fnet.Address) error {
		dialled = append(dialled, a.HostPort)
		return nil
	}
	for _, name := range []string{"localhost:7001", "LOCALHOST:7002", "Localhost:7003", "127.0.0.1:7004", "[::ffff:127.0.0.1]:7005"} {
		if _, err := w.addNodeAs(name, lo, 0); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if len(dialled) != 5 || dialled[0] != "127.0.0.1:7001" || dialled[4] != "127.0.0.1:7005" {
		t.Fatalf("dialled back %v, want the verified address at each advertised port", dialled)
	}
	nodes, _ = w.store.ListNodes(context.Background())
	subnets := map[string]bool{}
	for _, n := range nodes {
		if n.IP != lo {
			t.Fatalf("node %s verified at %s", n.Address, n.IP)
		}
		subnets[w.c.subnet(n)] = true
	}
	if len(subnets) != 1 {
		t.Fatalf("five names of one address make %d networks", len(subnets))
	}
	// They are free, but take one piece of a segment between them.
	for i := range 4 {
		w.addNode(netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, byte(i), 1}), 7000).String(), 100)
	}
	acct := w.account()
	pl, err := w.c.Place(context.Background(), acct, &fnet.PlacementRequest{K: 2, N: 5, PieceSize: 100, Pieces: distinctIDs(5)})
	if err != nil {
		t.Fatal(err)
	}
	onLoopback := 0
	for _, tg := range pl.Targets {
		a, _ := fnet.ParseAddress(tg.Address)
		for _, n := range nodes {
			if n.ID == a.ID {
				onLoopback++
			}
		}
	}
	if onLoopback != 1 {
		t.Fatalf("%d of 5 pieces on the five names of 127.0.0.1, want 1", onLoopback)
	}

	// A heartbeat from another address sends the node to register again.
	if _, err := w.c.Heartbeat(fnet.WithRemoteIP(context.Background(), netip.MustParseAddr("127.0.9.9")), nodes[0].ID, &fnet.Heartbeat{}); !errors.Is(err, fnet.ErrNotRegistered) {
		t.Fatalf("heartbeat from another address: %v", err)
	}
}

func distinctIDs(n int) []challenge.PieceID {
	ids := make([]challenge.PieceID, n)
	for i := range ids {
		ids[i][0], ids[i][1] = byte(i+1), 0xa5
	}
	return ids
}

// TestRepairKeepsOnePiecePerSubnet: a rebuilt piece never goes to a
// subnet that holds another piece of its segment, however cheap the node
// there; with no other subnet free, repair fails rather than doubling up.
func TestRepairKeepsOnePiecePerSubnet(t *testing.T) {
	w := newWorld(t, 5, 100, 101, 102, 103, 104)
	w.c.cfg.RepairThreshold = w.c.cfg.Scheme.N
	ctx := context.Background()
	acct := w.account()
	segID, _ := w.storeSegment(acct, 3000)
	seg := w.segment(segID)
	// A cheap node joins on the subnet of piece 0's node, an expensive one
	// on a subnet of its own.
	byID := map[fnet.NodeID]int{}
	for i, id := range w.ids {
		byID[id.ID()] = i
	}
	host := w.from[byID[seg.Pieces[0].Node]].As4()
	host[3] = 77
	cheap := w.addNode(netip.AddrPortFrom(netip.AddrFrom4(host), 7000).String(), 1)
	// Piece 1 is lost.
	w.mem.dropPiece(seg.Pieces[1].Node, seg.Pieces[1].ID)
	seg.Pieces[1].State = PieceLost
	if err := w.store.UpdateSegment(ctx, seg); err != nil {
		t.Fatal(err)
	}
	rr, err := w.c.RepairScan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rr.Repaired != 0 || rr.Failed != 1 {
		t.Fatalf("repair with only a taken subnet free: %+v", rr)
	}
	if p := w.segment(segID).Pieces[1]; p.Node == cheap.ID() || p.State == PieceHealthy {
		t.Fatalf("rebuilt piece placed on the subnet of piece 0: %+v", p)
	}
	far := w.addNode("10.0.200.1:7000", 500)
	rr, err = w.c.RepairScan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if p := w.segment(segID).Pieces[1]; rr.Repaired != 1 || p.Node != far.ID() || p.State != PieceHealthy {
		t.Fatalf("repair with a free subnet: %+v, piece %+v", rr, p)
	}
}

// TestUnvettedNodesGetASmallShare: once vetted nodes can take a segment,
// new nodes get at most Placement.UnvettedPieces of each, however cheap;
// a network of new nodes only still places everything.
func TestUnvettedNodesGetASmallShare(t *testing.T) {
	w, acct := vettedWorld(t)
	if seen := newcomerShare(t, w, acct, 50, func(int) uint64 { return 1 }); seen < 3 {
		t.Fatalf("the unvetted share went to %d of 5 newcomers in 30 placements: not spread at random", seen)
	}
}

// vettedWorld is a world of 5 nodes, each vetted by the challenges of the
// three segments it stored for the returned account while it was young
// (every node unvetted: placement still works).
func vettedWorld(t *testing.T) (*world, fnet.AccountID) {
	t.Helper()
	w := newWorld(t, 5)
	acct := w.account()
	for range 3 {
		w.storeSegment(acct, 1000)
	}
	for range 6 { // 3 pieces a node, 32 sampled: vetted after 6 rounds
		w.nextRound()
	}
	nodes, _ := w.store.ListNodes(context.Background())
	for _, n := range nodes {
		if !w.c.vetted(n) {
			t.Fatalf("node %s not vetted after %d passes", n.Address, n.Passed)
		}
	}
	return w, acct
}

// newcomerShare adds 5 new nodes on subnets 10.subnet.i.0/24 at price(i), makes
// 30 placements of 5 pieces for acct and fails unless each puts exactly
// Placement.UnvettedPieces of them on the newcomers; it returns how many of
// the newcomers got a piece.
func newcomerShare(t *testing.T, w *world, acct fnet.AccountID, subnet byte, price func(i int) uint64) int {
	t.Helper()
	newcomers := map[fnet.NodeID]bool{}
	for i := range 5 {
		id := w.addNode(netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, subnet, byte(i), 1}), 7000).String(), price(i))
		newcomers[id.ID()] = true
	}
	seen := map[fnet.NodeID]bool{}
	for range 30 {
		pl, err := w.c.Place(context.Background(), acct, &fnet.PlacementRequest{PieceSize: 100, Pieces: distinctIDs(5)})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, tg := range pl.Targets {
			if newcomers[tg.Ticket.Node] {
				n++
				seen[tg.Ticket.Node] = true
			}
		}
		if n != w.c.cfg.Placement.UnvettedPieces {
			t.Fatalf("%d pieces on unvetted nodes, want %d", n, w.c.cfg.Placement.UnvettedPieces)
		}
		w.c.unreserve(SegmentID(pl.Segment))
	}
	return len(seen)
}

// TestReputationDisqualifiesLiars: failures weigh more than passes, old
// results fade; a node that keeps failing is disqualified and its pieces
// are rebuilt elsewhere, one that lost a piece once is not.
func TestReputationDisqualifiesLiars(t *testing.T) {
	w := newWorld(t, 8)
	w.c.cfg.RepairThreshold = w.c.cfg.Scheme.N
	ctx := context.Background()
	acct := w.account()
	var segs []SegmentID
	for range 6 {
		id, _ := w.storeSegment(acct, 2000)
		segs = append(segs, id)
	}
	for range 4 {
		w.nextRound()
	}
	// The case: 6 passes then 2 failures is far below the line.
	n := &Node{}
	w.c.observe(n, 6, 0)
	w.c.observe(n, 0, 2)
	if r := n.Reputation(); r > 0.3 {
		t.Fatalf("6 passes, 2 failures: reputation %.2f", r)
	}
	// One failure after many passes: not placed on for a while, and back
	// once passes have faded it.
	n = &Node{}
	w.c.observe(n, 40, 0)
	w.c.observe(n, 0, 1)
	before := n.Reputation()
	w.c.observe(n, 20, 0)
	if before >= 0.9 || n.Reputation() <= before {
		t.Fatalf("one failure after 40 passes: %.2f, then after 20 passes %.2f", before, n.Reputation())
	}

	// The liar: one node drops every piece.
	liar := w.segment(segs[0]).Pieces[0].Node
	honestLoser := w.segment(segs[0]).Pieces[1].Node
	held := w.mem.dropAll(liar)
	// Another loses a single piece.
	w.mem.dropPiece(honestLoser, w.segment(segs[0]).Pieces[1].ID)
	if held < 3 {
		t.Fatalf("the liar held %d pieces; the test needs 3", held)
	}
	w.nextRound()
	ln, _ := w.store.GetNode(ctx, liar)
	hn, _ := w.store.GetNode(ctx, honestLoser)
	if ln.Disqualified.IsZero() || !hn.Disqualified.IsZero() {
		t.Fatalf("liar (%d failed, %.2f) disqualified %v; one lost piece (%d failed, %.2f) disqualified %v",
			ln.Failed, ln.Reputation(), ln.Disqualified, hn.Failed, hn.Reputation(), hn.Disqualified)
	}
	if _, err := w.c.RepairScan(ctx); err != nil {
		t.Fatal(err)
	}
	for _, id := range segs {
		seg := w.segment(id)
		if seg.Healthy() != seg.Scheme.N {
			t.Fatalf("segment %s: %d healthy after repair", id, seg.Healthy())
		}
		for _, p := range seg.Pieces {
			if p.Node == liar {
				t.Fatalf("segment %s keeps a piece on the disqualified node", id)
			}
		}
	}
	// Back again, the liar gets nothing.
	// (The repair's background deletes may still be running: the fake is
	// changed under its lock.)
	w.mem.dropAll(liar)
	w.nextRound()
	for range 10 {
		pl, err := w.c.Place(ctx, acct, &fnet.PlacementRequest{PieceSize: 100, Pieces: distinctIDs(5)})
		if err != nil {
			t.Fatal(err)
		}
		for _, tg := range pl.Targets {
			if tg.Ticket.Node == liar {
				t.Fatal("a disqualified node was placed on")
			}
		}
		w.c.unreserve(SegmentID(pl.Segment))
	}
}

// TestReservationsBounded: an account's uncommitted placements are bounded
// in bytes, lapse after the hold, and an abandoned one frees its room at
// once; new accounts from one network are rate-limited.
func TestReservationsBounded(t *testing.T) {
	w := newWorld(t, 5)
	w.c.cfg.Reservations.AccountBytes = 10 * 5 * 1000 // ten placements of five 1000-byte pieces
	ctx := context.Background()
	acct := w.account()
	var first fnet.SegmentID
	for i := range 10 {
		pl, err := w.c.Place(ctx, acct, &fnet.PlacementRequest{PieceSize: 1000, Pieces: distinctIDs(5)})
		if err != nil {
			t.Fatalf("placement %d: %v", i, err)
		}
		if i == 0 {
			first = pl.Segment
		}
	}
	if _, err := w.c.Place(ctx, acct, &fnet.PlacementRequest{PieceSize: 1000, Pieces: distinctIDs(5)}); !errors.Is(err, ErrAccountQuota) || !errors.Is(err, fnet.ErrBusy) {
		t.Fatalf("placement past the quota: %v", err)
	}
	// Another account is not held up.
	if _, err := w.c.Place(ctx, w.account(), &fnet.PlacementRequest{PieceSize: 1000, Pieces: distinctIDs(5)}); err != nil {
		t.Fatalf("another account: %v", err)
	}
	// Abandoning one frees its room at once.
	if err := w.c.Release(ctx, acct, SegmentID(first)); err != nil {
		t.Fatal(err)
	}
	if _, err := w.store.GetPending(ctx, SegmentID(first)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("abandoned placement still pending: %v", err)
	}
	if _, err := w.c.Place(ctx, acct, &fnet.PlacementRequest{PieceSize: 1000, Pieces: distinctIDs(5)}); err != nil {
		t.Fatalf("placement after abandoning one: %v", err)
	}
	// After the hold, the room is free again, though the tickets live on.
	w.advance(w.c.cfg.Reservations.Hold + time.Second)
	w.heartbeat()
	if _, err := w.c.Place(ctx, acct, &fnet.PlacementRequest{PieceSize: 1000, Pieces: distinctIDs(5)}); err != nil {
		t.Fatalf("placement after the hold: %v", err)
	}

	// New accounts: a burst per network, then one per interval.
	w.c.cfg.Reservations.NewAccounts = 3
	from := fnet.WithRemoteIP(ctx, netip.MustParseAddr("192.0.2.7"))
	newAcct := func(c context.Context) error {
		id, _ := fnet.GenerateIdentity()
		_, err := w.c.RegisterAccount(c, fnet.AccountID(id.ID()))
		return err
	}
	for i := range 3 {
		if err := newAcct(from); err != nil {
			t.Fatalf("account %d: %v", i, err)
		}
	}
	if err := newAcct(fnet.WithRemoteIP(ctx, netip.MustParseAddr("192.0.2.200"))); !errors.Is(err, ErrNewAccountRate) {
		t.Fatalf("fourth account from the same /24: %v", err)
	}
	if err := newAcct(fnet.WithRemoteIP(ctx, netip.MustParseAddr("198.51.100.1"))); err != nil {
		t.Fatalf("account from another network: %v", err)
	}
	w.advance(w.c.cfg.Reservations.NewAccountEvery)
	if err := newAcct(from); err != nil {
		t.Fatalf("account after the interval: %v", err)
	}
}

// TestSharedAddresses: five nodes behind one address place no segment,
// unless the mediator runs a private network that allows it.
func TestSharedAddresses(t *testing.T) {
	for _, shared := range []bool{false, true} {
		w := newWorld(t, 0)
		w.c.cfg.Placement.SharedAddresses = shared
		for i := range 5 {
			w.addNode(netip.AddrPortFrom(netip.MustParseAddr("192.168.1.1"), uint16(7000+i)).String(), 100)
		}
		_, err := w.c.Place(context.Background(), w.account(), &fnet.PlacementRequest{PieceSize: 100, Pieces: distinctIDs(5)})
		if shared && err != nil || !shared && !errors.Is(err, ErrNotEnoughNodes) {
			t.Fatalf("shared addresses %v: %v", shared, err)
		}
	}
}

// TestRandomDrawIsPerSubnet: the pieces that price may not choose are
// drawn with every subnet equally likely, so an operator who puts forty
// nodes on one /24 is drawn no more often than a /24 with one node (drawn
// per node, it would win 40 draws of 43).
func TestRandomDrawIsPerSubnet(t *testing.T) {
	c := &core{}
	var nodes []*Node
	add := func(ip string) {
		id, err := fnet.GenerateIdentity()
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, &Node{ID: id.ID(), IP: netip.MustParseAddr(ip)})
	}
	for i := range 40 {
		add(fmt.Sprintf("10.9.9.%d", i+1))
	}
	for _, ip := range []string{"10.1.0.1", "10.2.0.1", "10.3.0.1"} {
		add(ip)
	}
	rng := newLockedRand(21)
	first := map[string]int{}
	const draws = 4000
	for range draws {
		first[subnetOf(c.bySubnetAtRandom(rng, nodes)[0].IP)]++
	}
	for sn, n := range first {
		if n < draws/4-200 || n > draws/4+200 { // mean 1000, sd 27
			t.Fatalf("subnet %s first in %d of %d draws, want about a quarter: %v", sn, n, draws, first)
		}
	}
	if len(first) != 4 {
		t.Fatalf("subnets drawn first: %v", first)
	}
}
