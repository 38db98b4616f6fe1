package testplanet_test

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/challenge"
	"github.com/fincrypt/fincrypt/mediator"
	"github.com/fincrypt/fincrypt/mediator/testplanet"
	fnet "github.com/fincrypt/fincrypt/net"
)

// TestSybilNodesCannotTakeSegmentsHostage is issue 18's ransom on real
// nodes over QUIC, each address in 127.0.0.0/8 standing for a network:
// five honest nodes, vetted; then eight Sybil nodes of one operator, free
// and large: four behind 127.0.0.1 under several names, two on one /24,
// two on /24s of their own. Honest uploads go on; no segment has two
// pieces on one network or more than the unvetted share on the Sybils
// (N-K = 3 would be needed to hold a segment to ransom). Then the Sybils
// withhold (challenges "missing", reads "not found"): they are
// disqualified, their pieces rebuilt on honest nodes, uploads keep
// succeeding, and once the Sybils are killed every file reads back
// byte-identical.
func TestSybilNodesCannotTakeSegmentsHostage(t *testing.T) {
	p := testplanet.New(t, testplanet.Config{StorageNodes: 5, Reconfigure: func(c *mediator.Config) {
		// Sybils hold a piece or two each, so they fail only once or
		// twice before their pieces are lost: disqualify on the first
		// failure below the line. Vetting takes longer than this test
		// gives the Sybils to behave, as it would in the world.
		c.Placement.DisqualifyAfter = 1
		c.Placement.VettingChallenges = 40
		// Thirteen nodes and a round a second on a loaded machine: a late
		// heartbeat must not take honest nodes offline.
		c.OnlineWindow, c.OfflineAfter = 5*time.Second, 20*time.Second
		// Nor a late answer to a challenge count against an honest node
		// (an unanswered challenge fails its pieces; the Sybils answer
		// "missing" at once).
		c.Period, c.ChallengeTimeout = 2*time.Second, 2*time.Second
	}})
	scheme := p.Scheme()
	files := map[fnet.SegmentID][]byte{}
	seed := uint64(100)
	store := func(n int) []fnet.SegmentID {
		t.Helper()
		var out []fnet.SegmentID
		for range n {
			seed++
			data := randomData(seed, segSize)
			// A client tries again when the mediator is busy (as the
			// replication engine does), a few times.
			var seg fnet.SegmentID
			var err error
			for try := 0; try < 5; try++ {
				if seg, err = p.Client.Store(p.Context(), scheme, data); fnet.CodeOf(err) != fnet.CodeBusy {
					break
				}
				t.Logf("upload refused (%v); again", err)
				time.Sleep(500 * time.Millisecond)
			}
			if err != nil {
				t.Fatalf("honest upload: %v", err)
			}
			files[seg] = data
			out = append(out, seg)
		}
		return out
	}
	store(12) // 12 pieces a node: vetted after a few rounds
	p.WaitFor("the honest nodes vetted", 60*time.Second, func(st *mediator.Status) bool {
		n := 0
		for _, node := range st.Nodes {
			if node.Vetted {
				n++
			}
		}
		return n == 5
	})

	sybils := map[fnet.NodeID]int{}
	for _, o := range []testplanet.NodeOptions{
		{IP: "127.0.0.1", Host: "localhost"}, {IP: "127.0.0.1", Host: "LOCALHOST"},
		{IP: "127.0.0.1", Host: "Localhost"}, {IP: "127.0.0.1"},
		{IP: "127.0.60.1"}, {IP: "127.0.60.2"},
		{IP: "127.0.61.1"}, {IP: "127.0.62.1"},
	} {
		o.Price, o.Capacity = 1, 1<<30
		n := p.AddNodeWith(o)
		sybils[n.ID()] = n.Index
	}
	st := p.WaitFor("the Sybils registered", 20*time.Second, func(st *mediator.Status) bool {
		n := 0
		for _, node := range st.Nodes {
			if node.Online && node.IP != "" {
				n++
			}
		}
		return n == 13
	})
	subnet := map[fnet.NodeID]string{}
	for _, node := range st.Nodes {
		id, err := fnet.ParseNodeID(node.ID)
		if err != nil {
			t.Fatal(err)
		}
		ip, err := netip.ParseAddr(node.IP)
		if err != nil {
			t.Fatalf("node %s: verified address %q", node.Address, node.IP)
		}
		if _, ok := sybils[id]; ok && strings.Contains(node.Address, "ocalhost") && node.IP != "127.0.0.1" {
			t.Fatalf("node %s verified at %s", node.Address, node.IP)
		}
		pfx, _ := ip.Prefix(24)
		subnet[id] = pfx.String()
	}

	// Honest uploads while the Sybils behave.
	spread := func(segs []fnet.SegmentID) (onSybils int) {
		t.Helper()
		for _, id := range segs {
			seg := p.Segment(id)
			per := map[string]int{}
			n := 0
			for _, pc := range seg.Pieces {
				if pc.Node.IsZero() {
					continue
				}
				per[subnet[pc.Node]]++
				if per[subnet[pc.Node]] > 1 {
					t.Fatalf("segment %s: two pieces on %s", id, subnet[pc.Node])
				}
				if _, ok := sybils[pc.Node]; ok {
					n++
				}
			}
			if n > 1 || n > scheme.N-scheme.K {
				t.Fatalf("segment %s: %d pieces on the Sybils, want at most the unvetted share (1)", id, n)
			}
			onSybils += n
		}
		return onSybils
	}
	during := store(16)
	if got := spread(during); got == 0 {
		t.Fatal("no piece went to the Sybils: the test shows nothing")
	} else {
		t.Logf("%d of %d pieces of %d segments on the Sybils", got, len(during)*scheme.N, len(during))
	}

	// The Sybils withhold from now on: every piece they hold or get is gone.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var once sync.Once
	halt := func() { once.Do(func() { close(stop) }); wg.Wait() }
	defer halt()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			for _, i := range sybils {
				withhold(p, i)
			}
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()

	store(4) // uploads go on during the attack
	deadline := time.Now().Add(90 * time.Second)
	for {
		bad := ""
		for id := range files {
			seg := p.Segment(id)
			for _, pc := range seg.Pieces {
				if _, ok := sybils[pc.Node]; ok || pc.State != mediator.PieceHealthy {
					bad = fmt.Sprintf("segment %s piece %d on node %s is %s", id, pc.Index, pc.Node, pc.State)
				}
			}
		}
		if bad == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not repaired away from the Sybils: %s", bad)
		}
		time.Sleep(100 * time.Millisecond)
	}
	st = p.Status()
	disq := 0
	for _, node := range st.Nodes {
		id, _ := fnet.ParseNodeID(node.ID)
		_, sybil := sybils[id]
		switch {
		case !sybil && (node.Disqualified || node.Failed > 0):
			t.Fatalf("honest node %s: disqualified %v, failed %d", node.Address, node.Disqualified, node.Failed)
		case sybil && node.Disqualified:
			disq++
		case sybil && node.Failed > 0:
			t.Fatalf("Sybil %s failed %d challenges, reputation %.2f, and is not disqualified", node.Address, node.Failed, node.Reputation)
		}
	}
	if disq == 0 {
		t.Fatal("no Sybil disqualified")
	}
	t.Logf("%d of %d Sybils disqualified (the others never held a piece)", disq, len(sybils))

	halt()
	for _, i := range sybils {
		p.StopNode(i)
	}
	for id, data := range files {
		got, err := p.Client.Fetch(p.Context(), id, len(data))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("segment %s after the Sybils are gone: %v", id, err)
		}
	}
}

// withhold deletes every piece node i holds, as a node that answers
// challenges "missing" and reads "not found" would.
func withhold(p *testplanet.Planet, i int) {
	n := p.Nodes[i]
	if n.Peer == nil {
		return
	}
	filepath.WalkDir(filepath.Join(n.Dir, "pieces"), func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".piece") {
			return nil
		}
		if id, err := challenge.ParsePieceID(strings.TrimSuffix(d.Name(), ".piece")); err == nil {
			n.Peer.Store.Delete(id)
		}
		return nil
	})
}

// TestReservationFloodDoesNotBlockUploads is issue 18's reservation flood:
// new accounts ask for placements of the largest pieces and never upload.
// Accounts from one network are rate-limited and each one's reservations
// are bounded, so honest uploads go on; abandoning a placement frees its
// room at once.
func TestReservationFloodDoesNotBlockUploads(t *testing.T) {
	const quota = 48 << 20
	p := testplanet.New(t, testplanet.Config{StorageNodes: 5, NodeCapacity: 64 << 20, Reconfigure: func(c *mediator.Config) {
		c.Reservations.AccountBytes = quota
		c.Reservations.NewAccounts = 4 // the planet's own client takes one
	}})
	ctx := p.Context()
	scheme := p.Scheme()
	pieceSize := int64(8 << 20)
	var flood []*mediator.Client
	refused := 0
	for range 10 {
		id, _ := fnet.GenerateIdentity()
		c, err := mediator.NewClient(id, p.Mediator.Address(), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := c.RegisterAccount(ctx); err != nil {
			if fnet.CodeOf(err) != fnet.CodeBusy || !strings.Contains(err.Error(), "new accounts") {
				t.Fatalf("account refused with %v", err)
			}
			refused++
			continue
		}
		flood = append(flood, c)
	}
	if len(flood) != 3 || refused != 7 {
		t.Fatalf("%d flood accounts made, %d refused; want 3 and 7", len(flood), refused)
	}
	var reserved int64
	var placements []*fnet.PlacementReply
	for i, c := range flood {
		for j := range 10 {
			ids := make([]challenge.PieceID, scheme.N)
			for k := range ids {
				ids[k][0], ids[k][1], ids[k][2] = byte(i), byte(j), byte(k)
			}
			pl, err := c.Place(ctx, scheme, pieceSize, ids)
			if err != nil {
				if fnet.CodeOf(err) != fnet.CodeBusy {
					t.Fatalf("flood placement: %v", err)
				}
				break
			}
			placements = append(placements, pl)
			reserved += pieceSize * int64(scheme.N)
		}
	}
	if perAccount := reserved / int64(len(flood)); reserved == 0 || perAccount > quota {
		t.Fatalf("the flood reserved %d bytes, %d per account, quota %d", reserved, perAccount, quota)
	}
	t.Logf("the flood reserved %d MiB of %d MiB", reserved>>20, 5*64)
	// Honest uploads go on while the flood's placements are live.
	for i := range 4 {
		data := randomData(uint64(200+i), 3<<20)
		seg, err := p.Client.Store(ctx, scheme, data)
		if err != nil {
			t.Fatalf("honest upload during the flood: %v", err)
		}
		if got, err := p.Client.Fetch(ctx, seg, len(data)); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("honest read during the flood: %v", err)
		}
	}
	// An abandoned placement frees its room at once: the account that hit
	// its quota can place again.
	last := flood[len(flood)-1]
	ids := make([]challenge.PieceID, scheme.N)
	for k := range ids {
		ids[k][0], ids[k][3] = 0xee, byte(k)
	}
	if _, err := last.Place(ctx, scheme, pieceSize, ids); fnet.CodeOf(err) != fnet.CodeBusy {
		t.Fatalf("placement past the quota: %v", err)
	}
	if err := last.Release(ctx, placements[len(placements)-1].Segment); err != nil {
		t.Fatalf("abandoning a placement: %v", err)
	}
	if _, err := last.Place(ctx, scheme, pieceSize, ids); err != nil {
		t.Fatalf("placement after abandoning one: %v", err)
	}
}

// TestRepairKeepsOnePiecePerNetwork is issue 21's repair diversity on real
// nodes: a rebuilt piece never goes to a node on the network (/24) of
// another piece of its segment, however cheap; it waits for a node on a
// free network.
func TestRepairKeepsOnePiecePerNetwork(t *testing.T) {
	p := testplanet.New(t, testplanet.Config{StorageNodes: 5})
	ctx := p.Context()
	data := randomData(300, segSize)
	id, err := p.Client.Store(ctx, p.Scheme(), data)
	if err != nil {
		t.Fatal(err)
	}
	seg := p.Segment(id)
	// A cheap node joins the network of piece 0's node.
	host := p.Nodes[p.NodeIndex(seg.Pieces[0].Node)].Config.Listen
	ip := netip.MustParseAddrPort(host).Addr().As4()
	ip[3] = 2
	neighbour := p.AddNodeWith(testplanet.NodeOptions{IP: netip.AddrFrom4(ip).String(), Price: 1})
	p.WaitFor("the neighbour online", 10*time.Second, func(st *mediator.Status) bool {
		for _, n := range st.Nodes {
			if n.ID == neighbour.ID().String() {
				return n.Online && n.IP != ""
			}
		}
		return false
	})
	// Piece 1 is lost: the only node free to take it shares piece 0's network.
	lostNode := p.NodeIndex(seg.Pieces[1].Node)
	p.DeletePiece(lostNode, seg.Pieces[1].ID)
	p.WaitFor("the piece counted lost", 20*time.Second, func(st *mediator.Status) bool { return st.Lost > 0 })
	rounds := p.Status().Rounds
	p.WaitFor("three more rounds and repair scans", 30*time.Second, func(st *mediator.Status) bool { return st.Rounds >= rounds+3 })
	for _, pc := range p.Segment(id).Pieces {
		if pc.Node == neighbour.ID() {
			t.Fatalf("piece %d rebuilt on %s, the network of piece 0", pc.Index, neighbour.Config.Listen)
		}
	}
	if p.Segment(id).Healthy() != p.Scheme().N-1 {
		t.Fatalf("segment has %d healthy pieces, want %d (nowhere to repair to)", p.Segment(id).Healthy(), p.Scheme().N-1)
	}
	// A node on a network of its own takes it.
	far := p.AddNodeWith(testplanet.NodeOptions{IP: "127.0.99.1", Price: 5000})
	p.WaitFor("the piece rebuilt", 30*time.Second, func(st *mediator.Status) bool { return st.Lost == 0 && st.Repaired > 0 })
	if got := p.Segment(id).Pieces[1]; got.Node != far.ID() || got.State != mediator.PieceHealthy {
		t.Fatalf("piece 1 after repair: %+v, want on %s", got, far.Config.Listen)
	}
	if got, err := p.Client.Fetch(p.Context(), id, len(data)); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read after repair: %v", err)
	}
}
