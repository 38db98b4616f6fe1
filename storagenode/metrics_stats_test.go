package storagenode

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	fnet "github.com/fincrypt/fincrypt/net"
)

// The challenge counters count each piece under its result, the page keeps
// the last 20 challenges newest first, and the earning rate is the price
// per GiB times the GiB held.
func TestNodeStatsChallenges(t *testing.T) {
	s := newNodeStats()
	t0 := time.Unix(1000, 0)
	for i := range 25 {
		rep := &fnet.ChallengeResponse{Proofs: make([]fnet.PieceProof, 3+i%2)}
		rep.Proofs[0].Status = fnet.ProofOK
		rep.Proofs[1].Status = fnet.ProofMissing
		rep.Proofs[2].Status = fnet.ProofFailed
		if len(rep.Proofs) == 4 {
			rep.Proofs[3].Status = fnet.ProofOK
		}
		s.challenged(rep, time.Duration(i)*time.Millisecond, t0.Add(time.Duration(i)*time.Second))
	}
	for result, want := range map[string]float64{"ok": 25 + 12, "missing": 25, "failed": 25} {
		if got := counterValue(t, s.proofs.WithLabelValues(result)); got != want {
			t.Errorf("proofs %s: %v, want %v", result, got, want)
		}
	}
	recs := (&Peer{stats: s}).Challenges()
	if len(recs) != challengeHistory {
		t.Fatalf("%d challenges kept, want %d", len(recs), challengeHistory)
	}
	for i, r := range recs {
		n := 24 - i // newest first: challenges 24 down to 5
		wantPieces, wantProved := 3+n%2, 1+n%2
		if !r.At.Equal(t0.Add(time.Duration(n)*time.Second)) || r.Pieces != wantPieces || r.Proved != wantProved ||
			r.Missing != 1 || r.Failed != 1 || r.Duration != time.Duration(n)*time.Millisecond {
			t.Fatalf("challenge %d on the page: %+v, want challenge %d", i, r, n)
		}
	}
	var none *nodeStats // a node without counters (tests) ignores events
	none.challenged(&fnet.ChallengeResponse{}, 0, t0)
	none.scrubbedPiece(1, true)
	s.scrubbedPiece(100, false)
	s.scrubbedPiece(50, true)
	if c, b, d := counterValue(t, s.scrubbed), counterValue(t, s.scrubB), counterValue(t, s.damaged); c != 2 || b != 150 || d != 1 {
		t.Fatalf("scrub counters: %v pieces, %v bytes, %v damaged; want 2, 150, 1", c, b, d)
	}
	if got := (NodeStatus{Price: 1500, StoredBytes: 3 << 29}).EarningRate(); got != 2250 {
		t.Fatalf("earning rate of 1.5 GiB at 1500 sat/GiB: %v, want 2250", got)
	}
}

// counterValue reads a counter's value.
func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
