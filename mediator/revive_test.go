package mediator

import (
	"bytes"
	"context"
	"errors"
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/challenge"
	"github.com/fincrypt/fincrypt/erasure"
	fnet "github.com/fincrypt/fincrypt/net"
)

// restart makes w.c a fresh core on the same store, started at the
// current (test) time: the mediator process restarting.
func (w *world) restart() {
	w.t.Helper()
	w.c.stop()
	cfg := w.c.cfg
	w.c = newCore(cfg, w.store, w.c.id, w.mem)
	w.c.now = w.now
	w.c.started = w.now()
	if err := w.c.loadReservations(context.Background()); err != nil {
		w.t.Fatal(err)
	}
}

func countState(seg *Segment, st PieceState) int {
	n := 0
	for _, p := range seg.Pieces {
		if p.State == st {
			n++
		}
	}
	return n
}

// TestRestartedMediatorGivesNodesTheOfflineLimit: a mediator that was down
// longer than the offline limit counts each node's silence from its own
// start, so no piece is lost for the heartbeats nobody could receive; a
// node that stays away after the restart loses its pieces as usual.
func TestRestartedMediatorGivesNodesTheOfflineLimit(t *testing.T) {
	w := newWorld(t, 5)
	ctx := context.Background()
	acct := w.account()
	var segs []SegmentID
	for i := 0; i < 3; i++ {
		s, _ := w.storeSegment(acct, 3000)
		segs = append(segs, s)
	}
	victim := w.segment(segs[0]).Pieces[0].Node

	w.advance(5 * w.c.cfg.OfflineAfter) // the mediator is down meanwhile
	w.restart()
	if _, err := w.c.Round(ctx); err != nil { // nobody is online yet
		t.Fatal(err)
	}
	if rr, err := w.c.RepairScan(ctx); err != nil || rr.MarkedLost != 0 {
		t.Fatalf("scan at start: %+v %v", rr, err)
	}
	for _, s := range segs {
		if h := w.segment(s).Healthy(); h != 5 {
			t.Fatalf("segment %s: %d healthy after the restart", s, h)
		}
	}
	// The nodes heartbeat again, but for one that stays away.
	w.mem.nodes[victim].down = true
	w.advance(w.c.cfg.OfflineAfter / 2)
	w.heartbeat()
	if rr, err := w.c.RepairScan(ctx); err != nil || rr.MarkedLost != 0 {
		t.Fatalf("within the limit after the restart: %+v %v", rr, err)
	}
	w.advance(w.c.cfg.OfflineAfter/2 + time.Minute)
	w.heartbeat()
	rr, err := w.c.RepairScan(ctx)
	if err != nil || rr.MarkedLost != 3 {
		t.Fatalf("past the limit after the restart: %+v %v", rr, err)
	}
	for _, s := range segs {
		if got := countState(w.segment(s), PieceOffline); got != 1 {
			t.Fatalf("segment %s: %d pieces offline, want the victim's", s, got)
		}
	}
	w.checkTotals()
}

// TestOfflinePiecesReviveWhenTheirNodeReturns: when too many nodes were
// away for repair, the segment is still readable from the nodes back
// online (SegmentInfo offers their pieces), and the pieces become healthy
// again, without a rebuild, once their nodes pass a challenge.
func TestOfflinePiecesReviveWhenTheirNodeReturns(t *testing.T) {
	w := newWorld(t, 5)
	ctx := context.Background()
	acct := w.account()
	id, pieces := w.storeSegment(acct, 3000)
	for _, n := range w.mem.nodes {
		n.down = true
	}
	w.advance(w.c.cfg.OfflineAfter + time.Minute)
	rr, err := w.c.RepairScan(ctx)
	if err != nil || rr.MarkedLost != 5 || rr.Unrecoverable != 1 || rr.Repaired != 0 {
		t.Fatalf("every node gone: %+v %v", rr, err)
	}
	if got := countState(w.segment(id), PieceOffline); got != 5 {
		t.Fatalf("%d pieces offline", got)
	}
	info, err := w.c.SegmentInfo(ctx, acct, id)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range info.Pieces {
		if p.Healthy {
			t.Fatalf("piece %d offered while its node is offline", i)
		}
	}

	// Three nodes come back (one of them lost its copy): the client can
	// read the segment from the two that hold theirs.
	seg := w.segment(id)
	back := []int{0, 2, 4}
	for _, i := range back {
		w.mem.nodes[seg.Pieces[i].Node].down = false
	}
	w.mem.dropPiece(seg.Pieces[4].Node, seg.Pieces[4].ID)
	w.heartbeat()
	info, err = w.c.SegmentInfo(ctx, acct, id)
	if err != nil {
		t.Fatal(err)
	}
	got := make([][]byte, 5)
	offered := 0
	for i, p := range info.Pieces {
		if p.Healthy != (i == 0 || i == 2 || i == 4) {
			t.Fatalf("piece %d offered %v", i, p.Healthy)
		}
		if !p.Healthy {
			continue
		}
		offered++
		addr, _ := fnet.ParseAddress(p.Target.Address)
		if data, err := w.mem.Get(ctx, addr, p.Target.Ticket); err == nil {
			got[i] = data
		}
	}
	var missing []int
	for i := range got {
		if got[i] == nil {
			missing = append(missing, i)
		}
	}
	coder, _ := erasure.New(w.c.cfg.Scheme)
	if err := coder.Rebuild(got, missing); err != nil {
		t.Fatalf("segment unreadable from the %d offered pieces: %v", offered, err)
	}
	for i := range got {
		if string(got[i]) != string(pieces[i]) {
			t.Fatalf("piece %d rebuilt wrong", i)
		}
	}

	// The scan revives the two pieces that verify and marks the missing
	// one lost for good. Nothing is rebuilt (every node holds a piece of
	// the segment already), nothing uploaded again.
	puts := w.mem.puts.Load()
	rr, err = w.c.RepairScan(ctx)
	if err != nil || rr.Revived != 2 {
		t.Fatalf("scan with nodes back: %+v %v", rr, err)
	}
	seg = w.segment(id)
	if seg.Healthy() != 2 || seg.Pieces[0].State != PieceHealthy || seg.Pieces[2].State != PieceHealthy ||
		seg.Pieces[4].State != PieceLost || seg.Repaired != 0 {
		t.Fatalf("after revival: %+v", seg.Pieces)
	}
	if w.mem.puts.Load() != puts {
		t.Fatal("a revived piece was uploaded again")
	}
	w.checkTotals()

	// The last two come back and are revived in the next scan: 4 of 5
	// healthy, at the repair threshold.
	for _, n := range w.mem.nodes {
		n.down = false
	}
	w.heartbeat()
	if rr, err = w.c.RepairScan(ctx); err != nil || rr.Revived != 2 {
		t.Fatalf("scan with every node back: %+v %v", rr, err)
	}
	if h := w.segment(id).Healthy(); h != 4 {
		t.Fatalf("%d healthy at the end", h)
	}
	w.checkTotals()
}

// TestRoundRevivesAnOfflinePiece: a segment still above its repair
// threshold gets its offline piece back through the challenge round.
func TestRoundRevivesAnOfflinePiece(t *testing.T) {
	w := newWorld(t, 5)
	ctx := context.Background()
	id, _ := w.storeSegment(w.account(), 3000)
	away := w.segment(id).Pieces[1].Node
	w.mem.nodes[away].down = true
	w.advance(w.c.cfg.OfflineAfter + time.Minute)
	w.heartbeat()
	if rr, err := w.c.RepairScan(ctx); err != nil || rr.MarkedLost != 1 || rr.Repaired != 0 {
		t.Fatalf("scan: %+v %v", rr, err) // 4 healthy: at the threshold, no repair
	}
	w.mem.nodes[away].down = false
	w.heartbeat()
	r, err := w.c.Round(ctx)
	if err != nil || r.Failed != 0 {
		t.Fatalf("round: %+v %v", r, err)
	}
	if p := w.segment(id).Pieces[1]; p.State != PieceHealthy || p.Node != away {
		t.Fatalf("piece after its node came back: %+v", p)
	}
	w.checkTotals()
}

// TestRepairedPieceIsNotRevived: once a piece counted offline is rebuilt
// on another node, its old node's copy is not taken back when the node
// returns; it is deleted (at once if a challenge result for it arrives
// after the repair, else through LiveRequest).
func TestRepairedPieceIsNotRevived(t *testing.T) {
	w := newWorld(t, 6)
	w.c.cfg.RepairThreshold = 5
	ctx := context.Background()
	id, _ := w.storeSegment(w.account(), 3000)
	before := w.segment(id)
	victim := before.Pieces[3].Node
	w.mem.nodes[victim].down = true
	w.advance(w.c.cfg.OfflineAfter + time.Minute)
	w.heartbeat()
	if rr, err := w.c.RepairScan(ctx); err != nil || rr.MarkedLost != 1 || rr.Repaired != 1 {
		t.Fatalf("scan: %+v %v", rr, err)
	}
	w.mem.nodes[victim].down = false
	w.heartbeat()
	if _, err := w.c.Round(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := w.c.RepairScan(ctx); err != nil {
		t.Fatal(err)
	}
	seg := w.segment(id)
	if seg.Healthy() != 5 || seg.Pieces[3].Node == victim || seg.Repaired != 1 {
		t.Fatalf("after the node came back: %+v", seg.Pieces)
	}
	p := before.Pieces[3]
	live, err := w.c.Live(ctx, victim, &fnet.LiveRequest{Pieces: []challenge.PieceID{p.ID}})
	if err != nil || live.Live[0] {
		t.Fatalf("old copy live: %v %v", live, err)
	}
	// A round that sampled the old copy before the repair reports it
	// after: the result is not applied, and the copy is deleted.
	ref := PieceRef{Segment: id, Index: 3, ID: p.ID, Size: seg.PieceSize, Account: seg.Account, State: PieceOffline}
	if _, err := w.c.recordRevival(ctx, victim, []pieceResult{{ref: ref, ok: true}}); err != nil {
		t.Fatal(err)
	}
	w.c.bg.Wait()
	if after := w.segment(id); after.Pieces[3] != seg.Pieces[3] || after.Healthy() != 5 {
		t.Fatalf("late result changed the contract: %+v", after.Pieces[3])
	}
	if _, ok := w.mem.nodes[victim].pieces[p.ID]; ok {
		t.Fatal("the old copy is still on the node")
	}
	w.checkTotals()
}

// TestFailedProofIsNotRevived: of two pieces counted offline, the one
// whose node comes back without it becomes lost for good and is rebuilt
// elsewhere; the other is revived.
func TestFailedProofIsNotRevived(t *testing.T) {
	w := newWorld(t, 6)
	w.c.cfg.RepairThreshold = 5
	ctx := context.Background()
	id, _ := w.storeSegment(w.account(), 3000)
	seg := w.segment(id)
	var spare fnet.NodeID
	for nid := range w.mem.nodes {
		held := false
		for _, p := range seg.Pieces {
			held = held || p.Node == nid
		}
		if !held {
			spare = nid
		}
	}
	// The nodes of pieces 1 and 2 go away, and the spare node too, so that
	// nothing can be rebuilt meanwhile.
	for _, nid := range []fnet.NodeID{seg.Pieces[1].Node, seg.Pieces[2].Node, spare} {
		w.mem.nodes[nid].down = true
	}
	w.advance(w.c.cfg.OfflineAfter + time.Minute)
	w.heartbeat()
	if rr, err := w.c.RepairScan(ctx); err != nil || rr.MarkedLost != 2 || rr.Repaired != 0 || rr.Failed != 1 {
		t.Fatalf("scan: %+v %v", rr, err)
	}
	// They come back; the node of piece 1 without it.
	for _, n := range w.mem.nodes {
		n.down = false
	}
	w.mem.dropPiece(seg.Pieces[1].Node, seg.Pieces[1].ID)
	w.heartbeat()
	rr, err := w.c.RepairScan(ctx)
	if err != nil || rr.Revived != 1 || rr.Repaired != 1 {
		t.Fatalf("scan with the nodes back: %+v %v", rr, err)
	}
	after := w.segment(id)
	if after.Healthy() != 5 || after.Pieces[1].Node != spare || after.Pieces[2].Node != seg.Pieces[2].Node || after.Repaired != 1 {
		t.Fatalf("after: %+v", after.Pieces)
	}
	w.checkTotals()
}

func TestStartupGraceUsesTheLaterOfHeartbeatAndStart(t *testing.T) {
	c := &core{cfg: Config{OfflineAfter: time.Hour}, started: time.Unix(1000, 0)}
	for _, tc := range []struct {
		seen, now int64
		gone      bool
	}{
		{seen: 0, now: 1000 + 3599, gone: false},
		{seen: 0, now: 1000 + 3601, gone: true},
		{seen: 2000, now: 2000 + 3599, gone: false},
		{seen: 2000, now: 2000 + 3601, gone: true},
	} {
		if got := c.gone(&Node{LastSeen: time.Unix(tc.seen, 0)}, time.Unix(tc.now, 0)); got != tc.gone {
			t.Errorf("%+v: gone %v", tc, got)
		}
	}
}

// sampleV2 is the segment kept in testdata/segment-v2.bin.
func sampleV2() *Segment {
	s := &Segment{ID: SegmentID{0xaa, 2}, Account: fnet.AccountID{0xbb, 3}, Scheme: DefaultScheme, PieceSize: 4096,
		Created: time.Unix(0, 1800000000_000000007), Repaired: 2}
	for i := 0; i < 5; i++ {
		p := Piece{Index: i, ID: challenge.PieceID{0xd0 + byte(i)}, Node: fnet.NodeID{0xe0 + byte(i)},
			State: PieceState(i % 3), Passed: uint32(20 + i), Failed: uint32(i), LastChecked: time.Unix(0, int64(1800000000_000000100+i))}
		if p.State == PieceLost {
			p.Node, p.LastChecked = fnet.NodeID{}, time.Time{}
		}
		s.Pieces = append(s.Pieces, p)
	}
	return s
}

// TestSegmentRecordV2Loads decodes the version-2 sample (with pieces in
// state offline) kept in testdata.
func TestSegmentRecordV2Loads(t *testing.T) {
	b, err := os.ReadFile("testdata/segment-v2.bin")
	if err != nil {
		t.Fatal(err)
	}
	if b[0] != 2 {
		t.Fatalf("sample version %d", b[0])
	}
	s, err := decodeSegment(b)
	if err != nil {
		t.Fatal(err)
	}
	want := sampleV2()
	want.unpriced = true
	if !reflect.DeepEqual(s, want) {
		t.Fatalf("sample:\n%+v\nwant\n%+v", s, want)
	}
	if s.Healthy() != 2 || countState(s, PieceOffline) != 1 || s.Pieces[2].State.String() != "offline" {
		t.Fatalf("states: %+v", s.Pieces)
	}
	if !bytes.Equal(encodeLegacySegment(s, 2), b) {
		t.Fatal("sample does not re-encode to the same bytes")
	}
}

// TestReviveAsksASilentNodeOncePerScan: a node that heartbeats but does
// not answer is challenged for revival once per scan, not once per
// segment (each attempt waits for the challenge deadline).
func TestReviveAsksASilentNodeOncePerScan(t *testing.T) {
	w := newWorld(t, 5)
	w.c.cfg.RepairThreshold = 5
	ctx := context.Background()
	acct := w.account()
	a, _ := w.storeSegment(acct, 3000)
	w.storeSegment(acct, 3000)
	x := w.segment(a).Pieces[0].Node
	w.mem.nodes[x].down = true
	w.advance(w.c.cfg.OfflineAfter + time.Minute)
	w.heartbeat()
	if rr, err := w.c.RepairScan(ctx); err != nil || rr.MarkedLost != 2 {
		t.Fatalf("scan: %+v %v", rr, err)
	}
	w.mem.nodes[x].down, w.mem.nodes[x].mute = false, true
	w.heartbeat()
	before := w.mem.challenged[x]
	if rr, err := w.c.RepairScan(ctx); err != nil || rr.Revived != 0 {
		t.Fatalf("scan with the node mute: %+v %v", rr, err)
	}
	if n := w.mem.challenged[x] - before; n != 1 {
		t.Fatalf("the silent node was challenged %d times in one scan", n)
	}
	// It answers again: both pieces come back in the next scan.
	w.mem.nodes[x].mute = false
	if rr, err := w.c.RepairScan(ctx); err != nil || rr.Revived != 2 {
		t.Fatalf("scan with the node answering: %+v %v", rr, err)
	}
	w.checkTotals()
}

// TestSegmentRecordV3Loads decodes the version-3 sample (pieces with
// contract prices) kept in testdata; FINCRYPT_WRITE_SAMPLES=1 writes it.
func TestSegmentRecordV3Loads(t *testing.T) {
	want := sampleV2()
	for i := range want.Pieces {
		if !want.Pieces[i].Node.IsZero() {
			want.Pieces[i].Price = uint64(1000 * (i + 1))
		}
	}
	want.Pieces[3].Price = 1<<63 + 5 // all 64 bits kept
	if os.Getenv("FINCRYPT_WRITE_SAMPLES") != "" {
		if err := os.WriteFile("testdata/segment-v3.bin", encodeSegment(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile("testdata/segment-v3.bin")
	if err != nil {
		t.Fatal(err)
	}
	if b[0] != 3 || len(b) != segmentHeaderSize+5*pieceRecordSize {
		t.Fatalf("sample version %d, %d bytes", b[0], len(b))
	}
	s, err := decodeSegment(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(s, want) {
		t.Fatalf("sample:\n%+v\nwant\n%+v", s, want)
	}
	if !bytes.Equal(encodeSegment(s), b) {
		t.Fatal("sample does not re-encode to the same bytes")
	}
	if _, err := decodeSegment(b[:len(b)-8]); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("version 3 record without the last price: %v", err)
	}
}
