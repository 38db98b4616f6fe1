package testplanet_test

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/erasure"
	"github.com/fincrypt/fincrypt/mediator"
	"github.com/fincrypt/fincrypt/mediator/testplanet"
	fnet "github.com/fincrypt/fincrypt/net"
)

func randomData(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// segSize gives pieces of one 4 KiB leaf under 2/5, so that every challenge
// opens the whole piece and a single flipped byte always fails.
const segSize = 6000

func TestPlanetStoreFetchRelease(t *testing.T) {
	testplanet.Run(t, testplanet.Config{StorageNodes: 5}, func(t *testing.T, p *testplanet.Planet) {
		ctx := p.Context()
		data := randomData(1, segSize)
		seg, err := p.Client.Store(ctx, p.Scheme(), data)
		if err != nil {
			t.Fatal(err)
		}
		got, err := p.Client.Fetch(ctx, seg, len(data))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("fetch: %v", err)
		}
		// Used is what nodes report in their heartbeats, which may come
		// after the first challenge round: wait for both.
		st := p.WaitFor("a passed challenge round and reported usage", 10*time.Second, func(st *mediator.Status) bool {
			for _, n := range st.Nodes {
				if n.Passed == 0 || n.Used == 0 {
					return false
				}
			}
			return true
		})
		if st.Segments != 1 || st.Pieces != 5 || st.Healthy != 5 || st.Lost != 0 {
			t.Fatalf("status: %+v", st)
		}
		for _, n := range st.Nodes {
			// (A challenge that times out on a loaded machine counts as
			// failed, so passed, not failed == 0, is what is asserted.)
			if n.Passed == 0 || n.Used == 0 || n.Price < 1000 {
				t.Fatalf("node %s: %+v", n.ID, n)
			}
		}
		// Another account can neither read nor release it.
		other := p.NewClient()
		if err := other.Release(ctx, seg); !errors.Is(err, fnet.ErrUnauthorized) {
			t.Fatalf("release by another account: %v", err)
		}
		if _, err := other.Segment(ctx, seg); !errors.Is(err, fnet.ErrUnauthorized) {
			t.Fatalf("lookup by another account: %v", err)
		}
		// The batched health check: its own segment counted, another
		// account's and an unknown one reported unknown.
		stray := fnet.SegmentID{0xee}
		h, err := p.Client.Health(ctx, []fnet.SegmentID{seg, stray})
		if err != nil || len(h) != 2 || h[0] != (fnet.SegmentHealth{Known: true, Healthy: 5, N: 5}) || h[1].Known {
			t.Fatalf("health: %+v %v", h, err)
		}
		if h, err := other.Health(ctx, []fnet.SegmentID{seg}); err != nil || h[0].Known {
			t.Fatalf("health asked by another account: %+v %v", h, err)
		}

		pieces := p.Segment(seg).Pieces
		if err := p.Client.Release(ctx, seg); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for _, pc := range pieces {
			i := p.NodeIndex(pc.Node)
			for p.HasPiece(i, pc.ID) {
				if time.Now().After(deadline) {
					t.Fatalf("piece %d still on node %d after release", pc.Index, i)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
		if st := p.Status(); st.Segments != 0 || st.Pieces != 0 {
			t.Fatalf("status after release: %+v", st)
		}
	})
}

func TestPlanetPlacementRefusals(t *testing.T) {
	testplanet.Run(t, testplanet.Config{StorageNodes: 4}, func(t *testing.T, p *testplanet.Planet) {
		ctx := p.Context()
		// 2/5 needs five nodes; there are four.
		if _, err := p.Client.Store(ctx, p.Scheme(), randomData(2, segSize)); !errors.Is(err, fnet.ErrBusy) {
			t.Fatalf("2/5 on four nodes: %v", err)
		}
		// 3/5 is below the minimum expansion.
		if _, err := p.Client.Store(ctx, erasure.Scheme{K: 3, N: 5}, randomData(2, segSize)); !errors.Is(err, fnet.ErrBadRequest) {
			t.Fatalf("3/5: %v", err)
		}
		// 2/4 fits.
		if _, err := p.Client.Store(ctx, erasure.Scheme{K: 2, N: 4}, randomData(2, segSize)); err != nil {
			t.Fatalf("2/4: %v", err)
		}
	})
}

func TestPlanetDeletedAndFlippedPiecesAreRepaired(t *testing.T) {
	testplanet.Run(t, testplanet.Config{StorageNodes: 7}, func(t *testing.T, p *testplanet.Planet) {
		ctx := p.Context()
		dataA, dataB := randomData(3, segSize), randomData(4, segSize)
		segA, err := p.Client.Store(ctx, p.Scheme(), dataA)
		if err != nil {
			t.Fatal(err)
		}
		segB, err := p.Client.Store(ctx, p.Scheme(), dataB)
		if err != nil {
			t.Fatal(err)
		}
		a, b := p.Segment(segA), p.Segment(segB)
		delNode := p.NodeIndex(a.Pieces[0].Node)
		p.DeletePiece(delNode, a.Pieces[0].ID)
		flipNode := p.NodeIndex(b.Pieces[1].Node)
		p.FlipByte(flipNode, b.Pieces[1].ID, 100)

		st := p.WaitFor("both pieces repaired", 15*time.Second, func(st *mediator.Status) bool {
			return st.Repaired >= 2 && st.Healthy == 10
		})
		if st.Repaired != 2 || st.Lost != 0 {
			t.Fatalf("status after repair: repaired %d lost %d", st.Repaired, st.Lost)
		}
		for _, n := range st.Nodes {
			id, _ := fnet.ParseNodeID(n.ID)
			if i := p.NodeIndex(id); (i == delNode || i == flipNode) && n.Failed == 0 {
				t.Fatalf("node %d lost a piece but failed no challenge", i)
			}
		}
		a2, b2 := p.Segment(segA), p.Segment(segB)
		for _, c := range []struct {
			before, after *mediator.Segment
			idx, node     int
		}{{a, a2, 0, delNode}, {b, b2, 1, flipNode}} {
			pc := c.after.Pieces[c.idx]
			if pc.ID != c.before.Pieces[c.idx].ID || p.NodeIndex(pc.Node) == c.node || pc.State != mediator.PieceHealthy {
				t.Fatalf("repaired piece: %+v", pc)
			}
			if !p.HasPiece(p.NodeIndex(pc.Node), pc.ID) {
				t.Fatal("repaired piece is not on its new node's disk")
			}
		}
		// The segments still decode, from any K pieces including the new ones.
		for seg, data := range map[fnet.SegmentID][]byte{segA: dataA, segB: dataB} {
			got, err := p.Client.Fetch(ctx, seg, len(data))
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("fetch after repair: %v", err)
			}
		}
	})
}

func TestPlanetNodeKilledForGoodIsRepaired(t *testing.T) {
	testplanet.Run(t, testplanet.Config{StorageNodes: 6}, func(t *testing.T, p *testplanet.Planet) {
		ctx := p.Context()
		var segs []fnet.SegmentID
		for i := 0; i < 3; i++ {
			seg, err := p.Client.Store(ctx, p.Scheme(), randomData(uint64(10+i), segSize))
			if err != nil {
				t.Fatal(err)
			}
			segs = append(segs, seg)
		}
		victim := p.Segment(segs[0]).Pieces[2].Node
		held := 0
		for _, s := range segs {
			for _, pc := range p.Segment(s).Pieces {
				if pc.Node == victim {
					held++
				}
			}
		}
		p.StopNode(p.NodeIndex(victim))
		st := p.WaitFor("the dead node's pieces repaired", 20*time.Second, func(st *mediator.Status) bool {
			return st.Repaired >= int64(held) && st.Healthy == 15
		})
		if st.Repaired != int64(held) {
			t.Fatalf("repaired %d pieces, the node held %d", st.Repaired, held)
		}
		for _, s := range segs {
			for _, pc := range p.Segment(s).Pieces {
				if pc.Node == victim {
					t.Fatal("a contract still names the dead node")
				}
			}
		}
	})
}

func TestPlanetNodeRestartedWithinLimitKeepsPieces(t *testing.T) {
	cfg := testplanet.Config{StorageNodes: 6, Reconfigure: func(c *mediator.Config) { c.OfflineAfter = 8 * time.Second }}
	testplanet.Run(t, cfg, func(t *testing.T, p *testplanet.Planet) {
		ctx := p.Context()
		seg, err := p.Client.Store(ctx, p.Scheme(), randomData(20, segSize))
		if err != nil {
			t.Fatal(err)
		}
		node := p.NodeIndex(p.Segment(seg).Pieces[0].Node)
		p.StopNode(node)
		p.WaitFor("the node counted offline", 5*time.Second, func(st *mediator.Status) bool {
			for _, n := range st.Nodes {
				if n.ID == p.Nodes[node].ID().String() {
					return !n.Online
				}
			}
			return false
		})
		p.StartNode(node)
		before := p.Status().Rounds
		st := p.WaitFor("two rounds with the node back", 10*time.Second, func(st *mediator.Status) bool {
			return st.Rounds >= before+2
		})
		if st.Repaired != 0 || st.Lost != 0 || st.Healthy != 5 {
			t.Fatalf("after a short absence: %+v", st)
		}
		// A challenge that went unanswered while it was down counts as a
		// failure for that period (no pay), but the piece stays where it is.
		pc := p.Segment(seg).Pieces[0]
		if p.NodeIndex(pc.Node) != node || pc.State != mediator.PieceHealthy || pc.Passed == 0 {
			t.Fatalf("piece of the restarted node: %+v", pc)
		}
	})
}

func TestPlanetMediatorRestartLosesNothing(t *testing.T) {
	testplanet.Run(t, testplanet.Config{StorageNodes: 5}, func(t *testing.T, p *testplanet.Planet) {
		ctx := p.Context()
		data := randomData(30, segSize)
		seg, err := p.Client.Store(ctx, p.Scheme(), data)
		if err != nil {
			t.Fatal(err)
		}
		before := p.WaitFor("challenge results", 10*time.Second, func(st *mediator.Status) bool {
			for _, n := range st.Nodes {
				if n.Passed == 0 {
					return false
				}
			}
			return true
		})
		p.RestartMediator()
		after := p.Status()
		if after.Segments != 1 || after.Healthy != 5 || after.Rounds < before.Rounds || len(after.Nodes) != 5 {
			t.Fatalf("after restart: %+v (before %+v)", after, before)
		}
		for i, n := range after.Nodes {
			if n.ID != before.Nodes[i].ID || n.Passed < before.Nodes[i].Passed || n.Failed < before.Nodes[i].Failed {
				t.Fatalf("node results lost across the restart: %+v -> %+v", before.Nodes[i], n)
			}
		}
		// The network carries on: nodes come back online, rounds continue,
		// the client reads its data.
		p.WaitFor("rounds after restart", 10*time.Second, func(st *mediator.Status) bool {
			return st.Rounds >= after.Rounds+2
		})
		got, err := p.Client.Fetch(ctx, seg, len(data))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("fetch after restart: %v", err)
		}
		recs, err := p.Mediator.Peer.Store.PeriodRecords(ctx, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
		if err != nil || len(recs) == 0 {
			t.Fatalf("period records: %d %v", len(recs), err)
		}
	})
}

// TestPlanetMediatorDownPastOfflineLimitLosesNothing: a mediator that was
// down longer than --offline-after gives the nodes the limit again after
// its start, and any piece counted offline meanwhile comes back when its
// node passes a challenge; the client reads its data throughout.
func TestPlanetMediatorDownPastOfflineLimitLosesNothing(t *testing.T) {
	testplanet.Run(t, testplanet.Config{StorageNodes: 5}, func(t *testing.T, p *testplanet.Planet) {
		ctx := p.Context()
		data := randomData(31, segSize)
		seg, err := p.Client.Store(ctx, p.Scheme(), data)
		if err != nil {
			t.Fatal(err)
		}
		p.StopMediator()
		time.Sleep(p.Mediator.Config.OfflineAfter + 500*time.Millisecond)
		p.RestartMediator()
		start := p.Status().Rounds
		st := p.WaitFor("rounds after the restart with every piece healthy", 20*time.Second, func(st *mediator.Status) bool {
			return st.Rounds >= start+2 && st.Lost == 0 && online(st) == 5
		})
		if st.Healthy != 5 || st.Repaired != 0 {
			t.Fatalf("after a long mediator outage: %+v", st)
		}
		got, err := p.Client.Fetch(ctx, seg, len(data))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("fetch after the outage: %v", err)
		}
	})
}

func online(st *mediator.Status) int {
	n := 0
	for _, x := range st.Nodes {
		if x.Online {
			n++
		}
	}
	return n
}
