package replicate

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/mediator"
	"github.com/fincrypt/fincrypt/mediator/testplanet"
	"github.com/fincrypt/fincrypt/meta"
	fnet "github.com/fincrypt/fincrypt/net"
)

// TestCommitNeedsKPlusOneReceipts: a segment is committed at the mediator,
// and its chunks' local copies become evictable, only with the receipts of
// more than K pieces (K+1 survive the loss of one), and it is committed
// with exactly the pieces that were stored. On four nodes with the 2-of-4
// scheme, two hung nodes leave K pieces: the upload fails, nothing is
// recorded and the chunks stay pending. One hung node leaves K+1: the
// segment is committed degraded, with those three pieces only. With every
// node up it is durable with four.
func TestCommitNeedsKPlusOneReceipts(t *testing.T) {
	// No challenge round while the test runs: a hung node would fail its
	// challenges and be disqualified, and the mediator would then place
	// on too few nodes (nor is a repair begun meanwhile).
	pc := testplanet.Config{StorageNodes: 4, Relays: true, Reconfigure: func(c *mediator.Config) { c.Period = time.Hour }}
	e := newEngineOn(t, pc, func(c *Config) {
		c.PieceTimeout = 2 * time.Second
		c.CallTimeout = 5 * time.Second
	})
	if s := e.r.cfg.Scheme; s.K != 2 || s.N != 4 {
		t.Fatalf("scheme %v, the test is written for 2 of 4", s)
	}
	rng := rand.New(rand.NewPCG(21, 8))

	// K pieces stored: refused before the commit.
	e.p.Freeze(0, true)
	e.p.Freeze(1, true)
	ids, data := e.addChunks(t, rng, 5000, 7000)
	p := e.planFor(t, ids)
	err := e.r.uploadSegment(p)
	if err == nil || !strings.Contains(err.Error(), "2 of 4 pieces stored") {
		t.Fatalf("upload with K pieces stored: %v, want it refused", err)
	}
	if n := e.dataSegments(); n != 0 {
		t.Fatalf("%d data segments recorded with only K pieces stored", n)
	}
	for _, id := range ids {
		if _, err := e.idx.GetLocation(id); err == nil {
			t.Fatalf("chunk %s got a location with only K pieces stored", id)
		}
	}

	// K+1: committed degraded, with the pieces stored and no other.
	e.p.Freeze(1, false)
	var seg meta.Segment
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := e.r.uploadSegment(e.planFor(t, ids))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("upload with one node hung: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	loc, err := e.idx.GetLocation(ids[0])
	if err != nil {
		t.Fatal(err)
	}
	if seg, err = e.idx.GetSegment(loc.Segment); err != nil {
		t.Fatal(err)
	}
	hung := e.p.Nodes[0].ID()
	pieces := 0
	for i, sp := range seg.Pieces {
		if sp.Node == (fnet.NodeID{}) {
			continue
		}
		pieces++
		if sp.Node == hung {
			t.Fatalf("piece %d recorded on the hung node", i)
		}
	}
	if seg.Healthy != 3 || seg.State != meta.SegmentDegraded || pieces != 3 {
		t.Fatalf("segment with one node hung: %d healthy, %s, %d pieces recorded; want 3, degraded, 3", seg.Healthy, seg.State, pieces)
	}
	info, err := e.p.Client.Segment(e.p.Context(), fnet.SegmentID(seg.ID))
	if err != nil {
		t.Fatal(err)
	}
	committed := 0
	for _, sp := range info.Pieces {
		if sp.Healthy {
			committed++
			if sp.Target.Ticket.Node == hung {
				t.Fatal("the mediator holds a piece on the hung node as stored")
			}
		}
	}
	if committed != 3 {
		t.Fatalf("the mediator committed %d pieces, 3 were stored", committed)
	}
	e.checkUploaded(t, data, nil)

	// Every node up: durable with four.
	e.p.Freeze(0, false)
	ids2, data2 := e.addChunks(t, rng, 3000)
	deadline = time.Now().Add(60 * time.Second)
	for {
		err := e.r.uploadSegment(e.planFor(t, ids2))
		if err == nil {
			loc, err := e.idx.GetLocation(ids2[0])
			if err != nil {
				t.Fatal(err)
			}
			if seg, err = e.idx.GetSegment(loc.Segment); err != nil {
				t.Fatal(err)
			}
			if seg.Healthy == 4 {
				break
			}
			// A loaded machine can time a piece out: that upload is
			// degraded, not what this step checks; try again.
			if seg.State != meta.SegmentDegraded {
				t.Fatalf("segment with %d of 4 pieces recorded %s", seg.Healthy, seg.State)
			}
			ids2, data2 = e.addChunks(t, rng, 3000)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no upload with four pieces stored: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if seg.State != meta.SegmentDurable {
		t.Fatalf("segment with all 4 pieces stored: %s, want durable", seg.State)
	}
	e.checkUploaded(t, data2, nil)
}
