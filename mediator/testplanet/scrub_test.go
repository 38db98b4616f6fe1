package testplanet_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/mediator"
	"github.com/fincrypt/fincrypt/mediator/testplanet"
)

// A single flipped byte on one node's disk is found by that node's own
// scrubber, not by a challenge: the mediator runs no rounds by itself here
// (period 1h), only the one the test starts before the flip. The node
// reports the piece, the mediator marks it lost and fails the node's
// record of the period, and a repair scan restores full redundancy.
func TestPlanetScrubberReportsAFlippedByte(t *testing.T) {
	cfg := testplanet.Config{StorageNodes: 6, Reconfigure: func(c *mediator.Config) { c.Period = time.Hour }}
	testplanet.Run(t, cfg, func(t *testing.T, p *testplanet.Planet) {
		ctx := p.Context()
		data := randomData(7, 40000) // pieces of 20000 bytes: 5 leaves
		seg, err := p.Client.Store(ctx, p.Scheme(), data)
		if err != nil {
			t.Fatal(err)
		}
		round, err := p.Mediator.Peer.ChallengeRound(ctx)
		if err != nil || round.Failed != 0 || round.Passed != p.Scheme().N {
			t.Fatalf("round before the flip: %+v %v", round, err)
		}
		before := p.Segment(seg)
		const idx = 1
		victim := p.NodeIndex(before.Pieces[idx].Node)
		piece := before.Pieces[idx].ID
		p.FlipByte(victim, piece, 12345)

		// The victim restarts with a short scrub interval: its first pass
		// (over an empty store) is long done, so a new one starts at once.
		p.StopNode(victim)
		p.Nodes[victim].Config.ScrubInterval = 50 * time.Millisecond
		p.StartNode(victim)

		// The mediator counts an accepted report last.
		accepted := func() int64 {
			v, err := p.Mediator.Peer.Store.Counter(ctx, mediator.CounterDamageAccepted)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
		deadline := time.Now().Add(20 * time.Second)
		for accepted() == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("the flipped piece was not reported: %+v", p.Segment(seg).Pieces[idx])
			}
			time.Sleep(20 * time.Millisecond)
		}
		if st := p.Segment(seg).Pieces[idx].State; st != mediator.PieceLost {
			t.Fatalf("reported piece is %s", st)
		}
		if p.HasPiece(victim, piece) {
			t.Fatal("the damaged piece is still served")
		}
		qfile := filepath.Join(p.Nodes[victim].Dir, "quarantine", filepath.Base(p.PieceFile(victim, piece)))
		if _, err := os.Stat(qfile); err != nil {
			t.Fatalf("not quarantined: %v", err)
		}
		// The node's holding record of the period is failed; nobody else's.
		recs, err := p.Mediator.Peer.Store.PeriodRecords(ctx, round.Start, round.Start.Add(time.Nanosecond))
		if err != nil || len(recs) != p.Scheme().N {
			t.Fatalf("period records: %d %v", len(recs), err)
		}
		for _, r := range recs {
			want := uint32(0)
			if r.Node == p.Nodes[victim].ID() {
				want = 1
			}
			if r.Failed != want || r.Account != p.Client.Account() {
				t.Fatalf("record of node %d: %+v, want %d failed", p.NodeIndex(r.Node), r, want)
			}
		}
		if v := accepted(); v != 1 {
			t.Fatalf("accepted damage counter %d", v)
		}

		rr, err := p.Mediator.Peer.RepairScan(ctx)
		if err != nil || rr.Repaired != 1 {
			t.Fatalf("repair: %+v %v", rr, err)
		}
		after := p.Segment(seg)
		if after.Healthy() != p.Scheme().N {
			t.Fatalf("%d of %d pieces healthy after repair", after.Healthy(), p.Scheme().N)
		}
		moved := after.Pieces[idx]
		if moved.ID != piece || p.NodeIndex(moved.Node) == victim || !p.HasPiece(p.NodeIndex(moved.Node), piece) {
			t.Fatalf("repaired piece: %+v", moved)
		}
		got, err := p.Client.Fetch(ctx, seg, len(data))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("fetch after repair: %v", err)
		}
	})
}
