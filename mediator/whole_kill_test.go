package mediator

import (
	"context"
	"fmt"
	"io"
	stdnet "net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	fnet "github.com/fincrypt/fincrypt/net"
	"github.com/prometheus/client_golang/prometheus"
)

// TestBucketsSweepOnlyFullOnes: the sweep of the token buckets runs once
// the map holds more than 4096 keys (not at 4096) and forgets only the
// buckets refilled to their burst: a key that took a token less than an
// interval ago keeps its bucket, so a flood of new keys does not refill
// the buckets of the keys that used them.
func TestBucketsSweepOnlyFullOnes(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const every = time.Minute

	var m buckets
	for i := range 4095 {
		m.take(fmt.Sprint(i), 2, every, t0)
	}
	m.take("new", 2, every, t0.Add(every))
	if len(m.last) != 4096 {
		t.Fatalf("4096 keys, the others full again: %d kept; want all 4096 (no sweep before 4097)", len(m.last))
	}

	var b buckets
	for i := range 4097 {
		if !b.take(fmt.Sprint(i), 2, every, t0) || !b.take(fmt.Sprint(i), 2, every, t0) {
			t.Fatalf("key %d: a burst of 2 refused", i)
		}
	}
	half := t0.Add(every / 2)
	b.take("new", 2, every, half)
	if len(b.last) != 4098 {
		t.Fatalf("half an interval after each key emptied its bucket: %d keys kept, want 4098 (none full)", len(b.last))
	}
	if b.take("0", 2, every, half) {
		t.Fatal("a key that emptied its bucket half an interval ago got a token after the sweep")
	}
}

// TestRoundIsRecorded: a challenge round that completes is recorded in the
// observer's history (the status page's rounds) with its result, and its
// unreachable nodes counted, once per round.
func TestRoundIsRecorded(t *testing.T) {
	w := newWorld(t, 5)
	acct := w.account()
	a, _ := w.storeSegment(acct, 3000)
	w.mem.nodes[w.segment(a).Pieces[0].Node].mute = true
	o := newObserver()
	w.c.obs = o
	_, r1 := w.nextRound()
	_, r2 := w.nextRound()
	if r1.Nodes == 0 || r1.Unreachable != 1 {
		t.Fatalf("round %+v: want nodes challenged, one unreachable", r1)
	}
	p := &Peer{core: w.c}
	got := p.Rounds()
	if len(got) != 2 || got[0].RoundResult != r2 || got[1].RoundResult != r1 {
		t.Fatalf("rounds recorded %+v, want the two rounds %+v and %+v, newest first", got, r2, r1)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(o.unreachable)
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != 1 || len(mfs[0].Metric) != 1 {
		t.Fatalf("gathering the unreachable counter: %v, %d families", err, len(mfs))
	}
	if n := mfs[0].Metric[0].GetCounter().GetValue(); n != 2 {
		t.Fatalf("unreachable nodes counted %v, want 2 (one a round)", n)
	}
}

// TestCarriedDamageClearedForEveryAccount: damage carried into a round for
// several accounts of one node is counted in that round's period record of
// each account, and cleared for each once recorded, so the next round
// does not count it again.
func TestCarriedDamageClearedForEveryAccount(t *testing.T) {
	w := newWorld(t, 5)
	ctx := context.Background()
	a, b := w.account(), w.account()
	sa, _ := w.storeSegment(a, 3000)
	w.storeSegment(b, 3000)
	node := w.segment(sa).Pieces[0].Node
	carried := map[fnet.AccountID]int64{a: 3, b: 4}
	for acct, n := range carried {
		if _, err := w.c.store.AddCounter(ctx, carriedDamageName(node, acct), n); err != nil {
			t.Fatal(err)
		}
	}
	period, _ := w.nextRound()
	for acct, n := range carried {
		rec := w.periodRecord(period, node, acct)
		if rec == nil || rec.Failed != uint32(n) {
			t.Fatalf("account %x: period record %+v, want the %d failures carried", acct[:4], rec, n)
		}
		if v, err := w.c.store.Counter(ctx, carriedDamageName(node, acct)); err != nil || v != 0 {
			t.Fatalf("account %x: carried damage left after the round: %d, %v", acct[:4], v, err)
		}
	}
	period, _ = w.nextRound()
	for acct := range carried {
		if rec := w.periodRecord(period, node, acct); rec == nil || rec.Failed != 0 {
			t.Fatalf("account %x: the next round's record %+v, want no failure", acct[:4], rec)
		}
	}
}

// TestApplyResultsSkipsAStaleIndex: a challenge result whose piece index
// is no longer in its segment (the contract changed since the sample) is
// skipped, not applied to another piece, and counted neither way.
func TestApplyResultsSkipsAStaleIndex(t *testing.T) {
	w := newWorld(t, 5)
	ctx := context.Background()
	id, _ := w.storeSegment(w.account(), 3000)
	seg := w.segment(id)
	last := seg.Pieces[len(seg.Pieces)-1]
	stale := []pieceResult{
		{ref: PieceRef{Segment: id, Index: len(seg.Pieces), ID: last.ID, Account: seg.Account, State: PieceHealthy}, ok: false},
		{ref: PieceRef{Segment: id, Index: len(seg.Pieces) + 1, ID: last.ID, Account: seg.Account, State: PieceHealthy}, ok: true},
	}
	w.c.mu.Lock()
	passed, failed, revived, err := w.c.applyResults(ctx, last.Node, stale, true, w.now())
	w.c.mu.Unlock()
	if err != nil || passed != 0 || failed != 0 || revived != 0 {
		t.Fatalf("results of indexes past the segment's pieces: %d passed, %d failed, %d revived, %v; want none", passed, failed, revived, err)
	}
	for i, p := range w.segment(id).Pieces {
		if p.State != PieceHealthy || p.Passed != seg.Pieces[i].Passed || p.Failed != seg.Pieces[i].Failed {
			t.Fatalf("piece %d changed by a stale result: %+v", i, p)
		}
	}
}

// TestControlSocketEdges: the control socket serves the status and the
// handlers its caller adds (the payments'), or none; a path of 104 bytes
// (the BSD limit, which the check keeps portable) is refused and one of
// 103 served; a listener that fails under Serve is an error of run, a
// shutdown by its context is not.
func TestControlSocketEdges(t *testing.T) {
	status := func(context.Context) (*Status, error) { return &Status{}, nil }
	get := func(dir, path string) (int, string) {
		t.Helper()
		hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (stdnet.Conn, error) {
			var d stdnet.Dialer
			return d.DialContext(ctx, "unix", filepath.Join(dir, ControlSocket))
		}}}
		defer hc.CloseIdleConnections()
		resp, err := hc.Get("http://mediator" + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	dir := t.TempDir()
	s, err := listenControl(dir, status, func(mux *http.ServeMux) {
		mux.HandleFunc("GET /extra", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "extra here") })
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.run(ctx) }()
	if code, body := get(dir, "/extra"); code != http.StatusOK || body != "extra here" {
		t.Fatalf("the caller's handler: %d %q", code, body)
	}
	if code, _ := get(dir, "/status"); code != http.StatusOK {
		t.Fatalf("status: %d", code)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run after its context ended: %v", err)
	}
	s.close()

	// No handlers added; then the listener fails under Serve.
	s, err = listenControl(dir, status, nil)
	if err != nil {
		t.Fatal(err)
	}
	go func() { done <- s.run(context.Background()) }()
	if code, _ := get(dir, "/status"); code != http.StatusOK {
		t.Fatalf("status without added handlers: %d", code)
	}
	s.ln.Close()
	if err := <-done; err == nil || !strings.Contains(err.Error(), "control socket") {
		t.Fatalf("run with its listener closed under it: %v, want the error", err)
	}
	s.close()

	// The path bound, at 103 and 104 bytes.
	base := t.TempDir()
	for _, n := range []int{103, 104} {
		pad := n - len(filepath.Join(base, "x", ControlSocket)) + 1
		if pad < 1 {
			t.Skipf("temporary directory %s too long for a %d-byte socket path", base, n)
		}
		d := filepath.Join(base, strings.Repeat("d", pad))
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if l := len(filepath.Join(d, ControlSocket)); l != n {
			t.Fatalf("path of %d bytes, want %d", l, n)
		}
		s, err := listenControl(d, status, nil)
		if n == 104 {
			if err == nil || !strings.Contains(err.Error(), "longer than a unix socket allows") {
				t.Fatalf("a socket path of 104 bytes: %v, want refused", err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("a socket path of 103 bytes: %v", err)
		}
		s.close()
	}
}
