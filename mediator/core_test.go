package mediator

import (
	"bytes"
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/challenge"
	"github.com/fincrypt/fincrypt/erasure"
	fnet "github.com/fincrypt/fincrypt/net"
)

func TestPlacementCheapestOnDistinctSubnets(t *testing.T) {
	w := newWorld(t, 0)
	a := w.addNode("10.0.1.1:7000", 1)
	b := w.addNode("10.0.1.2:7000", 1) // same /24 as a
	c := w.addNode("10.0.2.1:7000", 2)
	d := w.addNode("10.0.3.1:7000", 3)
	e := w.addNode("[fd00::1]:7000", 4)
	f := w.addNode("10.0.5.1:7000", 5)
	g := w.addNode("10.0.6.1:7000", 9)
	acct := w.account()
	ids := make([]challenge.PieceID, 5)
	for i := range ids {
		ids[i][0] = byte(i + 1)
	}
	pl, err := w.c.Place(context.Background(), acct, &fnet.PlacementRequest{K: 2, N: 5, PieceSize: 1000, Pieces: ids})
	if err != nil {
		t.Fatal(err)
	}
	got := map[fnet.NodeID]bool{}
	for i, tg := range pl.Targets {
		got[tg.Ticket.Node] = true
		if tg.Ticket.Piece != ids[i] || tg.Ticket.Op != fnet.OpPut || tg.Ticket.Account != acct || tg.Ticket.Size != 1000 {
			t.Fatalf("target %d: ticket %+v", i, tg.Ticket.Ticket)
		}
		if err := tg.Ticket.Verify(w.c.id.ID(), tg.Ticket.Node, ids[i], fnet.OpPut, w.now()); err != nil {
			t.Fatalf("target %d: %v", i, err)
		}
	}
	if len(got) != 5 {
		t.Fatalf("%d distinct nodes, want 5", len(got))
	}
	if got[a.ID()] == got[b.ID()] {
		t.Fatalf("both or neither of the two nodes on one subnet were chosen (a %v, b %v)", got[a.ID()], got[b.ID()])
	}
	for _, want := range []*fnet.Identity{c, d, e, f} {
		if !got[want.ID()] {
			t.Fatalf("cheap node on its own subnet not chosen")
		}
	}
	if got[g.ID()] {
		t.Fatal("the most expensive node was chosen")
	}

	// With two nodes down, the network can no longer spread over five
	// subnets: the second node of the shared subnet does not fill in,
	// whatever its name (one piece per /24, whatever the price).
	w.mem.nodes[c.ID()].down = true
	w.mem.nodes[d.ID()].down = true
	w.advance(2 * w.c.cfg.OnlineWindow)
	w.heartbeat()
	if _, err := w.c.Place(context.Background(), acct, &fnet.PlacementRequest{K: 2, N: 5, PieceSize: 1000, Pieces: ids}); !errors.Is(err, ErrNotEnoughNodes) {
		t.Fatalf("placement over four subnets for five pieces: %v", err)
	}
	pl, err = w.c.Place(context.Background(), acct, &fnet.PlacementRequest{K: 2, N: 4, PieceSize: 1000, Pieces: ids[:4]})
	if err != nil {
		t.Fatal(err)
	}
	got = map[fnet.NodeID]bool{}
	for _, tg := range pl.Targets {
		got[tg.Ticket.Node] = true
	}
	if got[a.ID()] == got[b.ID()] || !got[e.ID()] || !got[f.ID()] || !got[g.ID()] || got[c.ID()] || got[d.ID()] {
		t.Fatalf("placement with two nodes offline: %v", got)
	}
}

func TestPlacementRefusals(t *testing.T) {
	w := newWorld(t, 5)
	ctx := context.Background()
	acct := w.account()
	ids := func(n int) []challenge.PieceID { return make([]challenge.PieceID, n) }
	cases := []struct {
		name string
		acct fnet.AccountID
		req  fnet.PlacementRequest
		want error
	}{
		{"expansion below 2", acct, fnet.PlacementRequest{K: 3, N: 5, PieceSize: 10, Pieces: ids(5)}, ErrBadScheme},
		{"more nodes than there are", acct, fnet.PlacementRequest{K: 3, N: 6, PieceSize: 10, Pieces: ids(6)}, ErrNotEnoughNodes},
		{"too large for every node", acct, fnet.PlacementRequest{K: 2, N: 5, PieceSize: 200 << 20, Pieces: ids(5)}, ErrNotEnoughNodes},
		{"unknown account", fnet.AccountID{9}, fnet.PlacementRequest{K: 2, N: 5, PieceSize: 10, Pieces: ids(5)}, ErrUnknownAccount},
		{"ids do not match N", acct, fnet.PlacementRequest{K: 2, N: 5, PieceSize: 10, Pieces: ids(4)}, fnet.ErrBadRequest},
		{"empty pieces", acct, fnet.PlacementRequest{K: 2, N: 5, PieceSize: 0, Pieces: ids(5)}, fnet.ErrBadRequest},
	}
	// Shrink every node so that 200 MiB pieces do not fit.
	for i := range w.ids {
		w.heartbeatNode(i, 100<<20)
	}
	for _, tc := range cases {
		_, err := w.c.Place(ctx, tc.acct, &tc.req)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
	// A node that goes silent is no longer placed on.
	w.advance(w.c.cfg.OnlineWindow + time.Second)
	for i := range w.ids[1:] {
		w.heartbeatNode(i+1, 100<<20)
	}
	if _, err := w.c.Place(ctx, acct, &fnet.PlacementRequest{K: 2, N: 5, PieceSize: 10, Pieces: ids(5)}); !errors.Is(err, ErrNotEnoughNodes) {
		t.Fatalf("with one node offline: %v", err)
	}
	if _, err := w.c.Place(ctx, acct, &fnet.PlacementRequest{K: 2, N: 4, PieceSize: 10, Pieces: ids(4)}); err != nil {
		t.Fatalf("2/4 on four online nodes: %v", err)
	}
}

func TestCommitChecksThePlacement(t *testing.T) {
	w := newWorld(t, 5)
	ctx := context.Background()
	acct, other := w.account(), w.account()
	coder, _ := erasure.New(w.c.cfg.Scheme)
	pieces, _ := coder.Encode(bytes.Repeat([]byte{7}, 200))
	ids := make([]challenge.PieceID, 5)
	for i := range ids {
		ids[i], _ = challenge.ComputeID(pieces[i])
	}
	pl, err := w.c.Place(ctx, acct, &fnet.PlacementRequest{PieceSize: 100, Pieces: ids})
	if err != nil {
		t.Fatal(err)
	}
	for i, tg := range pl.Targets[:3] { // pieces 3 and 4 never reach their nodes
		addr, _ := fnet.ParseAddress(tg.Address)
		if err := w.mem.Put(ctx, addr, tg.Ticket, pieces[i]); err != nil {
			t.Fatal(err)
		}
	}
	good := func() []fnet.StoredPiece {
		var s []fnet.StoredPiece
		for i, tg := range pl.Targets {
			s = append(s, fnet.StoredPiece{Index: uint8(i), Node: tg.Ticket.Node, Piece: ids[i], Size: 100})
		}
		return s
	}
	bad := []struct {
		name  string
		acct  fnet.AccountID
		edit  func([]fnet.StoredPiece) []fnet.StoredPiece
		wantE error
	}{
		{"another account", other, func(s []fnet.StoredPiece) []fnet.StoredPiece { return s }, ErrNotOwner},
		{"wrong node", acct, func(s []fnet.StoredPiece) []fnet.StoredPiece { s[0].Node = s[1].Node; return s }, ErrBadCommit},
		{"wrong piece", acct, func(s []fnet.StoredPiece) []fnet.StoredPiece { s[2].Piece[5] ^= 1; return s }, ErrBadCommit},
		{"wrong size", acct, func(s []fnet.StoredPiece) []fnet.StoredPiece { s[2].Size = 99; return s }, ErrBadCommit},
		{"twice the same", acct, func(s []fnet.StoredPiece) []fnet.StoredPiece { return append(s, s[0]) }, ErrBadCommit},
		{"fewer than K", acct, func(s []fnet.StoredPiece) []fnet.StoredPiece { return s[:1] }, ErrBadCommit},
		{"index out of range", acct, func(s []fnet.StoredPiece) []fnet.StoredPiece { s[0].Index = 7; return s }, ErrBadCommit},
	}
	for _, tc := range bad {
		err := w.c.Commit(ctx, tc.acct, &fnet.CommitRequest{Segment: pl.Segment, Pieces: tc.edit(good())})
		if !errors.Is(err, tc.wantE) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.wantE)
		}
	}
	// Three of five stored, four claimed: committed with the three that
	// verify on their nodes; the claimed piece 3 and the unlisted piece 4
	// are lost, and the node that never got piece 3 is not blamed.
	if err := w.c.Commit(ctx, acct, &fnet.CommitRequest{Segment: pl.Segment, Pieces: good()[:4]}); err != nil {
		t.Fatal(err)
	}
	seg := w.segment(SegmentID(pl.Segment))
	if seg.Healthy() != 3 || seg.Pieces[4].State != PieceLost || !seg.Pieces[4].Node.IsZero() ||
		seg.Pieces[3].State != PieceLost || !seg.Pieces[3].Node.IsZero() {
		t.Fatalf("after a partial commit: %d healthy, pieces 3, 4: %v %v", seg.Healthy(), seg.Pieces[3], seg.Pieces[4])
	}
	if n, _ := w.store.GetNode(ctx, pl.Targets[3].Ticket.Node); n.Failed != 0 || n.Contracted != 0 {
		t.Fatalf("node framed by a false receipt: %+v", n)
	}
	// Committing again is harmless; another account cannot.
	if err := w.c.Commit(ctx, acct, &fnet.CommitRequest{Segment: pl.Segment, Pieces: good()}); err != nil {
		t.Fatalf("repeated commit: %v", err)
	}
	if err := w.c.Commit(ctx, other, &fnet.CommitRequest{Segment: pl.Segment, Pieces: good()}); !errors.Is(err, ErrNoPlacement) {
		t.Fatalf("commit by another account after the owner: %v", err)
	}
	// A placement committed after it expired is refused. (Other bytes: the
	// nodes hold these piece ids already, and no node takes an id twice.)
	ids2 := make([]challenge.PieceID, 5)
	for i := range ids2 {
		ids2[i], _ = challenge.ComputeID(bytes.Repeat([]byte{byte(20 + i)}, 100))
	}
	pl2, err := w.c.Place(ctx, acct, &fnet.PlacementRequest{PieceSize: 100, Pieces: ids2})
	if err != nil {
		t.Fatal(err)
	}
	// Its reservation survives a restart (a fresh core on the same store).
	c2 := newCore(w.c.cfg, w.store, w.c.id, w.mem)
	c2.now = w.now
	if err := c2.loadReservations(ctx); err != nil {
		t.Fatal(err)
	}
	if r := c2.reservedBytes(w.now()); r[pl2.Targets[0].Ticket.Node] != 100 {
		t.Fatalf("reservation after restart: %v", r)
	}
	w.advance(w.c.cfg.TicketTTL + time.Second)
	if err := w.c.Commit(ctx, acct, &fnet.CommitRequest{Segment: pl2.Segment}); !errors.Is(err, ErrNoPlacement) {
		t.Fatalf("late commit: %v", err)
	}
}

func TestChallengeFailsDeletedAndFlippedPiecesAndRepairsThem(t *testing.T) {
	w := newWorld(t, 7)
	ctx := context.Background()
	acct := w.account()
	segA, piecesA := w.storeSegment(acct, 6000)
	segB, piecesB := w.storeSegment(acct, 20000)

	r, err := w.c.Round(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r.Failed != 0 || r.Passed != 10 {
		t.Fatalf("healthy round: %+v", r)
	}

	// One node deletes a piece of A, another flips a byte of a piece of B.
	sa, sb := w.segment(segA), w.segment(segB)
	delNode, delIdx := sa.Pieces[1].Node, 1
	w.mem.dropPiece(delNode, sa.Pieces[1].ID)
	flipNode, flipIdx := sb.Pieces[3].Node, 3
	w.mem.nodes[flipNode].pieces[sb.Pieces[3].ID][12345%len(piecesB[3])] ^= 0x40

	_, r = w.nextRound()
	if r.Failed != 2 || r.Passed != 8 {
		t.Fatalf("round after the faults: %+v", r)
	}
	sa, sb = w.segment(segA), w.segment(segB)
	if sa.Pieces[delIdx].State != PieceLost || sa.Pieces[delIdx].Failed != 1 || sb.Pieces[flipIdx].State != PieceLost {
		t.Fatalf("failed pieces not marked lost: %+v / %+v", sa.Pieces[delIdx], sb.Pieces[flipIdx])
	}
	n, _ := w.store.GetNode(ctx, delNode)
	if n.Failed != 1 || n.Passed == 0 {
		t.Fatalf("node that deleted: passed %d failed %d", n.Passed, n.Failed)
	}
	recs, err := w.store.PeriodRecords(ctx, w.now().Add(-time.Hour), w.now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	var failedRecs uint32
	for _, rec := range recs {
		failedRecs += rec.Failed
		if rec.Account != acct || rec.Bytes == 0 || rec.Price == 0 {
			t.Fatalf("period record %+v", rec)
		}
	}
	if failedRecs != 2 {
		t.Fatalf("period records show %d failures, want 2", failedRecs)
	}
	w.checkTotals()

	// Repair starts below the threshold; the default (4 of 5) would wait
	// for a second loss, so this test repairs every loss.
	w.c.cfg.RepairThreshold = 5
	rr, err := w.c.RepairScan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rr.Repaired != 2 || rr.Failed != 0 {
		t.Fatalf("repair: %+v", rr)
	}
	for _, c := range []struct {
		seg    SegmentID
		idx    int
		old    fnet.NodeID
		pieces [][]byte
	}{{segA, delIdx, delNode, piecesA}, {segB, flipIdx, flipNode, piecesB}} {
		s := w.segment(c.seg)
		p := s.Pieces[c.idx]
		if p.State != PieceHealthy || p.Node == c.old || s.Repaired != 1 {
			t.Fatalf("segment %s piece %d after repair: %+v (repaired %d)", c.seg, c.idx, p, s.Repaired)
		}
		for j, q := range s.Pieces {
			if j != c.idx && q.Node == p.Node {
				t.Fatalf("repaired piece placed on a node holding piece %d of the same segment", j)
			}
		}
		if got := w.mem.piece(p.Node, p.ID); !bytes.Equal(got, c.pieces[c.idx]) {
			t.Fatal("repaired piece is not byte-identical to the original")
		}
	}
	if v, _ := w.store.Counter(ctx, CounterRepaired); v != 2 {
		t.Fatalf("repaired counter %d", v)
	}
	w.checkTotals()
	// The next round passes everywhere.
	if _, r = w.nextRound(); r.Failed != 0 || r.Passed != 10 {
		t.Fatalf("round after repair: %+v", r)
	}
}

func TestOfflineNodeLosesPiecesOnlyPastTheLimit(t *testing.T) {
	w := newWorld(t, 6)
	w.c.cfg.RepairThreshold = 5 // repair every loss
	ctx := context.Background()
	acct := w.account()
	var segs []SegmentID
	for i := 0; i < 4; i++ {
		s, _ := w.storeSegment(acct, 3000)
		segs = append(segs, s)
	}
	// Take down a node that holds pieces.
	victim := w.segment(segs[0]).Pieces[0].Node
	w.mem.nodes[victim].down = true
	held := 0
	for _, s := range segs {
		for _, p := range w.segment(s).Pieces {
			if p.Node == victim {
				held++
			}
		}
	}

	// Within the limit: a challenge finds it unreachable, nothing is lost.
	w.advance(w.c.cfg.OfflineAfter / 2)
	w.heartbeat()
	if _, err := w.c.Round(ctx); err != nil {
		t.Fatal(err)
	}
	if rr, err := w.c.RepairScan(ctx); err != nil || rr.MarkedLost != 0 || rr.Repaired != 0 {
		t.Fatalf("within the limit: %+v %v", rr, err)
	}
	// Back within the limit: it keeps its pieces and passes.
	w.mem.nodes[victim].down = false
	w.heartbeat()
	r, err := w.c.Round(ctx)
	if err != nil || r.Failed != 0 || r.Unreachable != 0 {
		t.Fatalf("after coming back: %+v %v", r, err)
	}
	for _, s := range segs {
		if h := w.segment(s).Healthy(); h != 5 {
			t.Fatalf("segment %s: %d healthy after the node came back", s, h)
		}
	}

	// Down for good: past the limit every piece it held is rebuilt elsewhere.
	w.mem.nodes[victim].down = true
	w.advance(w.c.cfg.OfflineAfter + time.Minute)
	w.heartbeat()
	w.checkTotals()
	rr, err := w.c.RepairScan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w.checkTotals()
	if rr.MarkedLost != held || rr.Repaired != held {
		t.Fatalf("node gone: %+v, it held %d pieces", rr, held)
	}
	for _, s := range segs {
		seg := w.segment(s)
		if seg.Healthy() != 5 {
			t.Fatalf("segment %s: %d healthy after repair", s, seg.Healthy())
		}
		for _, p := range seg.Pieces {
			if p.Node == victim {
				t.Fatalf("segment %s still names the dead node", s)
			}
		}
	}
}

func TestLiveAndRelease(t *testing.T) {
	w := newWorld(t, 5)
	ctx := context.Background()
	acct, other := w.account(), w.account()
	seg, _ := w.storeSegment(acct, 5000)
	s := w.segment(seg)
	node := s.Pieces[0].Node
	stray := challenge.PieceID{1, 2, 3}
	live, err := w.c.Live(ctx, node, &fnet.LiveRequest{Pieces: []challenge.PieceID{s.Pieces[0].ID, stray}})
	if err != nil || !live.Live[0] || live.Live[1] {
		t.Fatalf("live: %v %v", live, err)
	}
	if _, err := w.c.Live(ctx, fnet.NodeID{7}, &fnet.LiveRequest{}); !errors.Is(err, fnet.ErrNotRegistered) {
		t.Fatalf("live from an unknown node: %v", err)
	}
	info, err := w.c.SegmentInfo(ctx, acct, seg)
	if err != nil || len(info.Pieces) != 5 || !info.Pieces[2].Healthy || info.Pieces[2].Target.Ticket.Op != fnet.OpGet {
		t.Fatalf("segment info: %+v %v", info, err)
	}
	// Health counts only healthy pieces, and only for the owner.
	lost := w.segment(seg)
	lost.Pieces[1].State = PieceLost
	if err := w.store.UpdateSegment(ctx, lost); err != nil {
		t.Fatal(err)
	}
	ids := []fnet.SegmentID{fnet.SegmentID(seg), {9, 9}}
	if h, err := w.c.SegmentHealth(ctx, acct, ids); err != nil || len(h.Segments) != 2 ||
		h.Segments[0] != (fnet.SegmentHealth{Known: true, Healthy: 4, N: 5}) || h.Segments[1].Known {
		t.Fatalf("health: %+v %v", h, err)
	}
	if h, err := w.c.SegmentHealth(ctx, other, ids); err != nil || h.Segments[0].Known {
		t.Fatalf("health asked by another account: %+v %v", h, err)
	}
	if err := w.c.Release(ctx, other, seg); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("release by another account: %v", err)
	}
	if err := w.c.Release(ctx, acct, seg); err != nil {
		t.Fatal(err)
	}
	w.c.bg.Wait()
	for _, p := range s.Pieces {
		if _, ok := w.mem.nodes[p.Node].pieces[p.ID]; ok {
			t.Fatalf("piece %d still on its node after release", p.Index)
		}
	}
	live, _ = w.c.Live(ctx, node, &fnet.LiveRequest{Pieces: []challenge.PieceID{s.Pieces[0].ID}})
	if live.Live[0] {
		t.Fatal("released piece still live")
	}
	n, _ := w.store.GetNode(ctx, node)
	if n.Contracted != 0 {
		t.Fatalf("contracted bytes after release: %d", n.Contracted)
	}
	if err := w.c.Release(ctx, acct, seg); !errors.Is(err, ErrNoSegment) {
		t.Fatalf("second release: %v", err)
	}
	w.checkTotals()
}

func TestStateSurvivesReopen(t *testing.T) {
	w := newWorld(t, 5)
	ctx := context.Background()
	acct := w.account()
	seg, _ := w.storeSegment(acct, 4000)
	if _, err := w.c.Round(ctx); err != nil {
		t.Fatal(err)
	}
	before := w.segment(seg)
	st1, err := w.c.Status(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	w.store.Close()
	s2, err := OpenPebbleStore(w.dir, PebbleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s2.Close() })
	w.store = s2
	w.c.store = s2
	after := w.segment(seg)
	if encodeSegment(before) == nil || !bytes.Equal(encodeSegment(before), encodeSegment(after)) {
		t.Fatal("segment changed across reopen")
	}
	st2, err := w.c.Status(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if st2.Segments != 1 || st2.Pieces != 5 || st2.Healthy != 5 || st2.Rounds != 1 || len(st2.Nodes) != 5 {
		t.Fatalf("status after reopen: %+v", st2)
	}
	var passed1, passed2 uint64
	for i := range st1.Nodes {
		passed1 += st1.Nodes[i].Passed
		passed2 += st2.Nodes[i].Passed
	}
	if passed1 != 5 || passed2 != 5 {
		t.Fatalf("challenge results before/after reopen: %d/%d", passed1, passed2)
	}
}

func TestSegmentRecordRoundTripAndCorruption(t *testing.T) {
	s := &Segment{ID: SegmentID{1}, Account: fnet.AccountID{2}, Scheme: DefaultScheme, PieceSize: 777,
		Created: time.Unix(0, 123456789), Repaired: 3}
	for i := 0; i < 5; i++ {
		s.Pieces = append(s.Pieces, Piece{Index: i, ID: challenge.PieceID{byte(i)}, Node: fnet.NodeID{byte(9 - i)},
			State: PieceState(i % 2), Passed: uint32(i), Failed: uint32(2 * i)})
	}
	s.Pieces[2].LastChecked = time.Unix(0, 42)
	b := encodeSegment(s)
	got, err := decodeSegment(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(encodeSegment(got), b) || got.Pieces[2].LastChecked.UnixNano() != 42 || !got.Pieces[0].LastChecked.IsZero() {
		t.Fatalf("round trip: %+v", got)
	}
	for _, bad := range [][]byte{nil, b[:10], b[:len(b)-1], append([]byte{9}, b[1:]...)} {
		if _, err := decodeSegment(bad); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("corrupt record accepted: %v", err)
		}
	}
}

func FuzzDecodeSegment(f *testing.F) {
	s := &Segment{Scheme: DefaultScheme, Pieces: make([]Piece, 5)}
	f.Add(encodeSegment(s))
	f.Fuzz(func(t *testing.T, b []byte) {
		seg, err := decodeSegment(b)
		if err != nil {
			return
		}
		// Records are written in the current version; the rest must match.
		enc := encodeSegment(seg)
		if seg.unpriced {
			enc = encodeLegacySegment(seg, b[0])
		}
		if !bytes.Equal(enc[1:], b[1:]) || (!seg.unpriced && enc[0] != segmentVersion) {
			t.Fatal("decoded record does not encode back to the same bytes")
		}
	})
}

func TestConfigValidate(t *testing.T) {
	ok := testConfig()
	ok.Listen = "127.0.0.1:0"
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, edit := range map[string]func(*Config){
		"threshold at K":           func(c *Config) { c.RepairThreshold = 2 },
		"threshold above N":        func(c *Config) { c.RepairThreshold = 6 },
		"expansion below 2":        func(c *Config) { c.Scheme.K = 3 },
		"negative period":          func(c *Config) { c.Period = -1 },
		"timeout above period":     func(c *Config) { c.ChallengeTimeout = 2 * c.Period },
		"sample too large":         func(c *Config) { c.ChallengeSample = 100 },
		"grace shorter than ttl":   func(c *Config) { c.GracePeriod = time.Second },
		"offline below heartbeat":  func(c *Config) { c.OfflineAfter = time.Second },
		"offline at online window": func(c *Config) { c.OfflineAfter = c.OnlineWindow },
		"window below heartbeat":   func(c *Config) { c.OnlineWindow = c.HeartbeatInterval / 2 },
	} {
		c := ok
		edit(&c)
		if err := c.Validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if th := ok.threshold(DefaultScheme); th != 4 {
		t.Fatalf("default threshold %d", th)
	}
	// Other schemes keep the default's margin above K (repair once fewer
	// than K+2 pieces are healthy), capped at N.
	for s, want := range map[erasure.Scheme]int{{K: 2, N: 4}: 4, {K: 4, N: 8}: 6, {K: 1, N: 2}: 2} {
		if th := ok.threshold(s); th != want {
			t.Errorf("threshold for %s: %d, want %d", s, th, want)
		}
	}
}

func TestVerifyResponseRejects(t *testing.T) {
	w := newWorld(t, 1)
	node := w.mem.nodes[w.ids[0].ID()]
	var refs []PieceRef
	req := &fnet.ChallengeRequest{Openings: 4}
	for i := 0; i < 3; i++ {
		data := bytes.Repeat([]byte{byte(i + 1)}, 9000)
		id, _ := challenge.ComputeID(data)
		node.pieces[id] = data
		refs = append(refs, PieceRef{ID: id, Size: 9000})
		req.Pieces = append(req.Pieces, id)
	}
	addr, _ := fnet.ParseAddress(w.addrs[0])
	answer := func() *fnet.ChallengeResponse {
		r, err := w.mem.Challenge(context.Background(), addr, req)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	count := func(rs []pieceResult) (ok int) {
		for _, r := range rs {
			if r.ok {
				ok++
			}
		}
		return ok
	}
	if n := count(verifyResponse(req, answer(), refs)); n != 3 {
		t.Fatalf("honest answer: %d of 3 verified", n)
	}
	for name, edit := range map[string]func(*fnet.ChallengeResponse) int{
		"wrong nonce":    func(r *fnet.ChallengeResponse) int { r.Nonce[0] ^= 1; return 0 },
		"reordered":      func(r *fnet.ChallengeResponse) int { r.Proofs[0], r.Proofs[1] = r.Proofs[1], r.Proofs[0]; return 0 },
		"one missing":    func(r *fnet.ChallengeResponse) int { r.Proofs = r.Proofs[:2]; return 0 },
		"tampered leaf":  func(r *fnet.ChallengeResponse) int { r.Proofs[2].Proof.Openings[0].Leaf[0] ^= 1; return 2 },
		"status missing": func(r *fnet.ChallengeResponse) int { r.Proofs[1].Status = fnet.ProofMissing; return 2 },
	} {
		r := answer()
		want := edit(r)
		if n := count(verifyResponse(req, r, refs)); n != want {
			t.Errorf("%s: %d verified, want %d", name, n, want)
		}
	}
}

func TestNodeDodgingChallengesLosesItsPieces(t *testing.T) {
	w := newWorld(t, 6)
	w.c.cfg.RepairThreshold = 5
	ctx := context.Background()
	seg, _ := w.storeSegment(w.account(), 3000)
	dodger := w.segment(seg).Pieces[0].Node
	w.mem.nodes[dodger].mute = true
	for round := 1; round <= MaxUnanswered; round++ {
		w.advance(w.c.cfg.Period)
		w.heartbeat() // it keeps heartbeating
		r, err := w.c.Round(ctx)
		if err != nil || r.Unreachable != 1 {
			t.Fatalf("round %d: %+v %v", round, r, err)
		}
		lost := w.segment(seg).Pieces[0].State == PieceLost
		if lost != (round == MaxUnanswered) {
			t.Fatalf("round %d: piece lost %v", round, lost)
		}
	}
	rr, err := w.c.RepairScan(ctx)
	if err != nil || rr.Repaired != 1 {
		t.Fatalf("repair: %+v %v", rr, err)
	}
	if p := w.segment(seg).Pieces[0]; p.Node == dodger || p.State != PieceHealthy {
		t.Fatalf("piece still on the dodging node: %+v", p)
	}
	// An answer resets the count.
	n, _ := w.store.GetNode(ctx, dodger)
	if n.Unanswered != MaxUnanswered {
		t.Fatalf("unanswered %d", n.Unanswered)
	}
	if err := w.c.record(ctx, dodger, nil, true, nil, w.now()); err != nil {
		t.Fatal(err)
	}
	if n, _ = w.store.GetNode(ctx, dodger); n.Unanswered != 0 {
		t.Fatalf("unanswered after an answer: %d", n.Unanswered)
	}
}

func TestPendingPlacementsPerAccountAreBounded(t *testing.T) {
	w := newWorld(t, 5)
	ctx := context.Background()
	acct, other := w.account(), w.account()
	req := &fnet.PlacementRequest{PieceSize: 10, Pieces: make([]challenge.PieceID, 5)}
	for i := 0; i < MaxPendingPerAccount; i++ {
		if _, err := w.c.Place(ctx, acct, req); err != nil {
			t.Fatalf("placement %d: %v", i, err)
		}
	}
	if _, err := w.c.Place(ctx, acct, req); !errors.Is(err, ErrTooManyPending) || !errors.Is(err, fnet.ErrBusy) {
		t.Fatalf("one placement too many: %v", err)
	}
	if _, err := w.c.Place(ctx, other, req); err != nil {
		t.Fatalf("another account: %v", err)
	}
	// Expired placements free the quota.
	w.advance(w.c.cfg.TicketTTL + time.Second)
	w.heartbeat()
	if _, err := w.c.Place(ctx, acct, req); err != nil {
		t.Fatalf("after expiry: %v", err)
	}
}

func TestPiecesNeverUploadedAreRepaired(t *testing.T) {
	w := newWorld(t, 7)
	w.c.cfg.RepairThreshold = 5
	ctx := context.Background()
	acct := w.account()
	coder, _ := erasure.New(w.c.cfg.Scheme)
	pieces, _ := coder.Encode(bytes.Repeat([]byte("segment "), 700))
	ids := make([]challenge.PieceID, len(pieces))
	for i, p := range pieces {
		ids[i], _ = challenge.ComputeID(p)
	}
	pl, err := w.c.Place(ctx, acct, &fnet.PlacementRequest{PieceSize: uint64(len(pieces[0])), Pieces: ids})
	if err != nil {
		t.Fatal(err)
	}
	var stored []fnet.StoredPiece
	for i, tg := range pl.Targets[:3] { // two uploads failed
		addr, _ := fnet.ParseAddress(tg.Address)
		if err := w.mem.Put(ctx, addr, tg.Ticket, pieces[i]); err != nil {
			t.Fatal(err)
		}
		stored = append(stored, fnet.StoredPiece{Index: uint8(i), Node: tg.Ticket.Node, Piece: ids[i], Size: uint64(len(pieces[i]))})
	}
	if err := w.c.Commit(ctx, acct, &fnet.CommitRequest{Segment: pl.Segment, Pieces: stored}); err != nil {
		t.Fatal(err)
	}
	rr, err := w.c.RepairScan(ctx)
	if err != nil || rr.Repaired != 2 {
		t.Fatalf("repair: %+v %v", rr, err)
	}
	w.checkTotals()
	seg := w.segment(SegmentID(pl.Segment))
	nodes := map[fnet.NodeID]bool{}
	for i, p := range seg.Pieces {
		if p.State != PieceHealthy || p.Node.IsZero() || nodes[p.Node] {
			t.Fatalf("piece %d after repair: %+v", i, p)
		}
		nodes[p.Node] = true
		if !bytes.Equal(w.mem.piece(p.Node, p.ID), pieces[i]) {
			t.Fatalf("piece %d: node holds other bytes", i)
		}
	}
}

// TestSegmentRecordV1Loads decodes the version-1 sample kept in testdata:
// every format version that was ever written must still load.
func TestSegmentRecordV1Loads(t *testing.T) {
	b, err := os.ReadFile("testdata/segment-v1.bin")
	if err != nil {
		t.Fatal(err)
	}
	s, err := decodeSegment(b)
	if err != nil {
		t.Fatal(err)
	}
	if s.ID != (SegmentID{0xaa, 1}) || s.Account != (fnet.AccountID{0xbb, 2}) || s.Scheme != DefaultScheme ||
		s.PieceSize != 3000 || s.Created.UnixNano() != 1800000000_000000005 || s.Repaired != 1 || len(s.Pieces) != 5 {
		t.Fatalf("header: %+v", s)
	}
	for i, p := range s.Pieces {
		if p.Index != i || p.ID != (challenge.PieceID{0xc0 + byte(i)}) || p.Passed != uint32(10+i) || p.Failed != uint32(i%2) {
			t.Fatalf("piece %d: %+v", i, p)
		}
		if lost := i == 3; lost != (p.State == PieceLost) || lost != p.Node.IsZero() || lost != p.LastChecked.IsZero() {
			t.Fatalf("piece %d: %+v", i, p)
		}
	}
	if enc := encodeLegacySegment(s, 1); s.Healthy() != 4 || !s.unpriced || !bytes.Equal(enc, b) {
		t.Fatal("sample does not re-encode to the same bytes")
	}
	// Version 1 knew only healthy and lost.
	for i := range s.Pieces {
		s.Pieces[i].State = PieceOffline
	}
	v1 := encodeLegacySegment(s, 1)
	if _, err := decodeSegment(v1); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("version 1 record with state offline: %v", err)
	}
}

// encodeLegacySegment is the record of s as versions 1 and 2 wrote it
// (without piece prices).
func encodeLegacySegment(s *Segment, version byte) []byte {
	b := encodeSegment(s)
	out := append([]byte{version}, b[1:segmentHeaderSize]...)
	for i := range s.Pieces {
		r := b[segmentHeaderSize+i*pieceRecordSize:]
		out = append(out, r[:legacyPieceRecordSize]...)
	}
	return out
}
