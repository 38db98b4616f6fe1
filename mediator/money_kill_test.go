package mediator

// Tests for the money paths of the mediator (contract prices, the terms a
// client is shown, placement, settlement input), each written against
// mutants that the package's other tests let live (docs/TESTING.md,
// "mediator, sixth session").

import (
	"bytes"
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/challenge"
	"github.com/fincrypt/fincrypt/erasure"
	fnet "github.com/fincrypt/fincrypt/net"
	"github.com/fincrypt/fincrypt/wallet"
)

// placeAndUpload places a segment of size bytes made from seed for acct
// and uploads every piece to its node; it returns the placement and the
// receipts a client would commit.
func (w *world) placeAndUpload(acct fnet.AccountID, size int, seed byte) (*fnet.PlacementReply, []fnet.StoredPiece) {
	w.t.Helper()
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i*7) ^ seed
	}
	pl, stored, _ := w.placeAndUploadData(acct, data)
	return pl, stored
}

// nodeIndex is the index in w.ids of node id.
func (w *world) nodeIndex(id fnet.NodeID) int {
	w.t.Helper()
	for i, n := range w.ids {
		if n.ID() == id {
			return i
		}
	}
	w.t.Fatalf("node %s unknown to the test", id)
	return -1
}

// A contract keeps the price its node asked at placement: a node that
// raises its price between the placement and the commit does not get the
// new price for the piece it was given at the old one. A placement
// recorded before contract prices (no Prices) takes each node's price at
// the commit.
func TestCommitKeepsThePlacementPrice(t *testing.T) {
	w := newWorld(t, 5)
	ctx := context.Background()
	acct := w.account()

	pl, stored := w.placeAndUpload(acct, 3000, 1)
	i0 := w.nodeIndex(pl.Targets[0].Ticket.Node)
	placedAt := uint64(100 + i0)
	w.reregister(i0, 10_000) // a 100-fold rise after the placement
	if err := w.c.Commit(ctx, acct, &fnet.CommitRequest{Segment: pl.Segment, Pieces: stored}); err != nil {
		t.Fatal(err)
	}
	seg := w.segment(SegmentID(pl.Segment))
	if p := seg.Pieces[0]; p.Price != placedAt {
		t.Fatalf("piece placed at %d sat on a node that then raised to 10000 committed at %d", placedAt, p.Price)
	}
	for _, p := range seg.Pieces {
		if want := uint64(100 + w.nodeIndex(p.Node)); p.Price != want {
			t.Fatalf("piece %d on node %d committed at %d, placed at %d", p.Index, w.nodeIndex(p.Node), p.Price, want)
		}
	}

	// A cut between the placement and the commit applies at once.
	pl3, stored3 := w.placeAndUpload(acct, 3000, 4)
	i3 := w.nodeIndex(pl3.Targets[0].Ticket.Node)
	w.reregister(i3, 1)
	if err := w.c.Commit(ctx, acct, &fnet.CommitRequest{Segment: pl3.Segment, Pieces: stored3}); err != nil {
		t.Fatal(err)
	}
	for _, p := range w.segment(SegmentID(pl3.Segment)).Pieces {
		if w.nodeIndex(p.Node) == i3 && p.Price != 1 {
			t.Fatalf("piece %d on a node that cut its price to 1 sat after the placement committed at %d", p.Index, p.Price)
		}
	}

	// A pending record from before contract prices: no Prices.
	pl2, stored2 := w.placeAndUpload(acct, 3000, 2)
	p, err := w.store.GetPending(ctx, SegmentID(pl2.Segment))
	if err != nil {
		t.Fatal(err)
	}
	p.Prices = nil
	if err := w.store.PutPending(ctx, p); err != nil {
		t.Fatal(err)
	}
	i1 := w.nodeIndex(pl2.Targets[1].Ticket.Node)
	w.reregister(i1, 7)
	if err := w.c.Commit(ctx, acct, &fnet.CommitRequest{Segment: pl2.Segment, Pieces: stored2}); err != nil {
		t.Fatal(err)
	}
	for _, p := range w.segment(SegmentID(pl2.Segment)).Pieces {
		n, err := w.store.GetNode(ctx, p.Node)
		if err != nil {
			t.Fatal(err)
		}
		if p.Price != n.Price || p.Price == 0 {
			t.Fatalf("legacy placement: piece %d committed at %d, its node asks %d", p.Index, p.Price, n.Price)
		}
	}
}

// A commit with exactly K pieces stored and verified is a contract (any K
// pieces rebuild the segment); K-1 is refused. Both checks of Commit, on
// the receipts and after the pieces are challenged on their nodes.
func TestCommitWithExactlyK(t *testing.T) {
	w := newWorld(t, 5)
	ctx := context.Background()
	acct := w.account()
	k := w.c.cfg.Scheme.K

	pl, stored := w.placeAndUpload(acct, 3000, 3)
	// A receipt for index N (one past the last piece) is refused as a bad
	// commit, not a crash.
	past := append([]fnet.StoredPiece{}, stored...)
	past[0].Index = uint8(w.c.cfg.Scheme.N)
	if err := w.c.Commit(ctx, acct, &fnet.CommitRequest{Segment: pl.Segment, Pieces: past}); !errors.Is(err, ErrBadCommit) {
		t.Fatalf("receipt for piece index N=%d: %v", w.c.cfg.Scheme.N, err)
	}
	if err := w.c.Commit(ctx, acct, &fnet.CommitRequest{Segment: pl.Segment, Pieces: stored[:k-1]}); err == nil {
		t.Fatalf("commit with %d of K=%d pieces accepted", k-1, k)
	}
	if err := w.c.Commit(ctx, acct, &fnet.CommitRequest{Segment: pl.Segment, Pieces: stored[:k]}); err != nil {
		t.Fatalf("commit with exactly K=%d receipts refused: %v", k, err)
	}
	if h := w.segment(SegmentID(pl.Segment)).Healthy(); h != k {
		t.Fatalf("contract with %d healthy pieces, want %d", h, k)
	}

	// K+1 receipts of which one piece never reached its node: exactly K
	// verify, and that is a contract.
	pl2, stored2 := w.placeAndUpload(acct, 3000, 4)
	w.mem.dropPiece(stored2[k].Node, stored2[k].Piece)
	if err := w.c.Commit(ctx, acct, &fnet.CommitRequest{Segment: pl2.Segment, Pieces: stored2[:k+1]}); err != nil {
		t.Fatalf("commit with exactly K=%d pieces verifying refused: %v", k, err)
	}
	seg := w.segment(SegmentID(pl2.Segment))
	if h := seg.Healthy(); h != k || !seg.Pieces[k].Node.IsZero() {
		t.Fatalf("contract with %d healthy pieces (want %d), the unverified piece on %v", h, k, seg.Pieces[k].Node)
	}
	// K receipts of which one does not verify: refused.
	pl3, stored3 := w.placeAndUpload(acct, 3000, 5)
	w.mem.dropPiece(stored3[0].Node, stored3[0].Piece)
	if err := w.c.Commit(ctx, acct, &fnet.CommitRequest{Segment: pl3.Segment, Pieces: stored3[:k]}); err == nil {
		t.Fatalf("commit with %d of K=%d pieces verifying accepted", k-1, k)
	}
}

// putContract writes a contract of one piece of size bytes per node in
// nodes straight into the store, each piece at the price given, with
// piece states as given (all healthy when states is nil).
func (w *world) putContract(acct fnet.AccountID, size int64, nodes []fnet.NodeID, prices []uint64, states []PieceState, seed byte) SegmentID {
	w.t.Helper()
	var id SegmentID
	id[0], id[1] = 0xc0, seed
	seg := &Segment{ID: id, Account: acct, Scheme: erasure.Scheme{K: 1, N: len(nodes)}, PieceSize: size, Created: w.now()}
	for i, n := range nodes {
		st := PieceHealthy
		if states != nil {
			st = states[i]
		}
		seg.Pieces = append(seg.Pieces, Piece{Index: i, ID: challenge.PieceID{seed, byte(i), 0xc0}, Node: n, State: st, Price: prices[i]})
	}
	if err := w.store.CommitSegment(context.Background(), seg); err != nil {
		w.t.Fatal(err)
	}
	return id
}

// What a client is told a price rise will cost: per node under notice,
// the rise (new price minus the contract price) on the bytes it holds for
// the account at each contract price, for one period, at least 1 sat per
// node and price; lost pieces and pieces already at the new price add
// nothing; the date is the earliest notice's end.
func TestPriceNoticeCharge(t *testing.T) {
	w := newWorld(t, 3)
	ctx := context.Background()
	w.c.cfg.Period = wallet.Month // a period's charge is then the monthly price
	w.c.cfg.Payments.PriceNotice = 10 * 24 * time.Hour
	acct, other := w.account(), w.account()
	n0, n1, n2 := w.ids[0].ID(), w.ids[1].ID(), w.ids[2].ID()
	const gib = 1 << 30
	// Node 0 (100 sat) holds 1 GiB at 100 and 2 GiB at 40 for acct, one
	// lost GiB, and 5 GiB for another account.
	w.putContract(acct, gib, []fnet.NodeID{n0, n0, n0, n0}, []uint64{100, 40, 40, 100}, []PieceState{PieceHealthy, PieceHealthy, PieceHealthy, PieceLost}, 1)
	w.putContract(other, 5*gib, []fnet.NodeID{n0}, []uint64{100}, nil, 2)
	// Node 1 holds 1 GiB at 101; node 2 a tiny piece at its price.
	w.putContract(acct, gib, []fnet.NodeID{n1}, []uint64{101}, nil, 3)
	w.putContract(acct, 1000, []fnet.NodeID{n2}, []uint64{102}, nil, 4)

	if notes, err := w.c.accountNotices(ctx, acct); err != nil || notes.Charge != 0 || !notes.At.IsZero() {
		t.Fatalf("notice before any rise: %+v %v", notes, err)
	}
	t1 := w.now()
	w.reregister(0, 1_100) // +1000 on the GiB at 100, +1060 on each GiB at 40
	w.advance(24 * time.Hour)
	w.reregister(1, 101) // the same price: no notice
	w.reregister(2, 103) // +1 on 1000 bytes: less than a sat, shown as 1
	notes, err := w.c.accountNotices(ctx, acct)
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(1000 + 2*1060 + 1); notes.Charge != want {
		t.Fatalf("notice charge %d sat per period, want %d (1000 for 1 GiB at 100, 2120 for 2 GiB at 40, 1 for node 2)", notes.Charge, want)
	}
	if want := t1.Add(10 * 24 * time.Hour); !notes.At.Equal(want) {
		t.Fatalf("notice applies at %v, want the earliest, %v", notes.At, want)
	}
	if notes, _ := w.c.accountNotices(ctx, other); notes.Charge != 5*1000 {
		t.Fatalf("other account's notice %d, want 5000", notes.Charge)
	}
	// After node 0's notice ends its held pieces cost 1100; node 2's
	// notice (a day later) is all that is left.
	w.advance(9 * 24 * time.Hour)
	if err := w.c.applyDueReprices(ctx, w.now()); err != nil {
		t.Fatal(err)
	}
	notes, _ = w.c.accountNotices(ctx, acct)
	if notes.Charge != 1 || !notes.At.Equal(t1.Add(11*24*time.Hour)) {
		t.Fatalf("after node 0's notice ended: %+v, want 1 sat at %v", notes, t1.Add(11*24*time.Hour))
	}
}

// The notice a rise gives: the payments' setting, else the config's,
// else 30 days.
func TestPriceNoticeSetting(t *testing.T) {
	w := newWorld(t, 1)
	if got := w.c.priceNotice(); got != DefaultPriceNotice || DefaultPriceNotice != 30*24*time.Hour {
		t.Fatalf("notice with nothing set: %s", got)
	}
	w.c.cfg.Payments.PriceNotice = time.Hour
	if got := w.c.priceNotice(); got != time.Hour {
		t.Fatalf("notice set in the config: %s", got)
	}
	withPayments(t, w, "", Payments{PriceNotice: 2 * time.Hour})
	if got := w.c.priceNotice(); got != 2*time.Hour {
		t.Fatalf("notice set in the payments: %s", got)
	}
	w.c.pay.cfg.PriceNotice = 0
	if got := w.c.priceNotice(); got != time.Hour {
		t.Fatalf("payments without a notice, the config's hour: %s", got)
	}
}

// The bounds of the terms a client is shown: a max price of all bitcoin
// is allowed (one sat more is not); an empty escrow lasts nothing and
// warns; a runway of exactly WarnRunway does not warn, one nanosecond
// less does; an escrow too large to measure lasts "forever" (the largest
// duration), not a negative one; the terms follow the last settled
// period when a new one is settled; an account whose records hold no
// bytes pays nothing (no price from 0/0).
func TestTermsBounds(t *testing.T) {
	if err := (Config{Listen: "x:1", MaxPrice: MaxMaxPrice}).WithDefaults().Validate(); err != nil {
		t.Fatalf("max price of exactly all bitcoin refused: %v", err)
	}
	if err := (Config{Listen: "x:1", WarnRunway: -1}).WithDefaults().Validate(); err == nil {
		t.Fatal("a negative warn runway validated")
	}

	w := newWorld(t, 0)
	ctx := context.Background()
	a, b := w.account(), w.account()
	n1 := fnet.NodeID{1}
	p1 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	p2 := p1.Add(time.Hour)
	if err := w.store.PutPeriodRecords(ctx, []PeriodRecord{
		{Period: p1, Node: n1, Account: a, Bytes: 1 << 30, Price: 720}, // 720 sat a month: 1 sat an hour
		{Period: p1, Node: n1, Account: b, Bytes: 0, Price: 500},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.store.AddCounter(ctx, CounterSettled, p1.UnixNano()); err != nil {
		t.Fatal(err)
	}
	w.c.cfg.WarnRunway = 24 * time.Hour
	fill := func(acct fnet.AccountID, escrow int64) *fnet.BalanceReply {
		t.Helper()
		rep := &fnet.BalanceReply{Metered: true, Escrow: escrow, CanPlace: true}
		if err := w.c.fillTerms(ctx, acct, rep, time.Time{}); err != nil {
			t.Fatal(err)
		}
		return rep
	}
	if rep := fill(a, 0); rep.Runway != 0 || !rep.Low {
		t.Fatalf("empty escrow: runway %s, low %v; want 0 and warned", rep.Runway, rep.Low)
	}
	if rep := fill(a, 24); rep.Runway != 24*time.Hour || rep.Low {
		t.Fatalf("escrow for exactly the warn runway (24 h): runway %s, low %v; want 24h0m0s, not warned", rep.Runway, rep.Low)
	}
	if rep := fill(a, 23); rep.Runway != 23*time.Hour || !rep.Low {
		t.Fatalf("escrow for 23 h of a 24 h warn runway: runway %s, low %v", rep.Runway, rep.Low)
	}
	if rep := fill(a, 1<<62); rep.Runway != time.Duration(math.MaxInt64) || rep.Low {
		t.Fatalf("an escrow of 2^62 sat: runway %d, low %v; want the largest duration", rep.Runway, rep.Low)
	}
	if rep := fill(b, 100); rep.Price != 0 || rep.Bytes != 0 || rep.Runway != -1 || rep.Low {
		t.Fatalf("account whose records hold no bytes: %+v", rep)
	}
	// The next period settled: the terms follow it.
	if err := w.store.PutPeriodRecords(ctx, []PeriodRecord{
		{Period: p2, Node: n1, Account: a, Bytes: 2 << 30, Price: 360},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.store.AddCounter(ctx, CounterSettled, p2.UnixNano()-p1.UnixNano()); err != nil {
		t.Fatal(err)
	}
	if rep := fill(a, 24); rep.Bytes != 2<<30 || rep.Price != 360 || rep.Runway != 24*time.Hour {
		t.Fatalf("terms after the next settled period: %d bytes at %d, runway %s; want 2 GiB at 360, 24h", rep.Bytes, rep.Price, rep.Runway)
	}
}

// A node with exactly a piece's size of room left (capacity less what it
// uses and what live placements reserve on it) takes the piece; a byte
// less and it is never chosen, and with no other node to take the piece
// the placement is refused rather than overfilling it.
func TestPlacementRoomAtItsEdge(t *testing.T) {
	w := newWorld(t, 5)
	ctx := context.Background()
	acct := w.account()
	const size = 100
	ids := func(seed byte) []challenge.PieceID {
		out := make([]challenge.PieceID, 5)
		for i := range out {
			out[i], _ = challenge.ComputeID(bytes.Repeat([]byte{seed, byte(i)}, size/2))
		}
		return out
	}
	// Node 0: 1000 bytes, 900 used: exactly one piece's room.
	if _, err := w.c.Heartbeat(fnet.WithRemoteIP(ctx, w.from[0]), w.ids[0].ID(), &fnet.Heartbeat{Capacity: 1000, Used: 900}); err != nil {
		t.Fatal(err)
	}
	pl, err := w.c.Place(ctx, acct, &fnet.PlacementRequest{PieceSize: size, Pieces: ids(1)})
	if err != nil {
		t.Fatalf("a node with exactly a piece's room left: %v", err)
	}
	on0 := false
	for _, tg := range pl.Targets {
		on0 = on0 || tg.Ticket.Node == w.ids[0].ID()
	}
	if !on0 {
		t.Fatal("the node with exactly a piece's room was not chosen (five nodes, five pieces)")
	}
	// Its room is now reserved by the live placement: a second one cannot
	// use it, and only four nodes are left.
	if _, err := w.c.Place(ctx, acct, &fnet.PlacementRequest{PieceSize: size, Pieces: ids(2)}); !errors.Is(err, ErrNotEnoughNodes) {
		t.Fatalf("second placement onto a node whose room is reserved: %v", err)
	}
	// A byte less than a piece: never chosen.
	w2 := newWorld(t, 5)
	acct2 := w2.account()
	if _, err := w2.c.Heartbeat(fnet.WithRemoteIP(ctx, w2.from[0]), w2.ids[0].ID(), &fnet.Heartbeat{Capacity: 1000, Used: 901}); err != nil {
		t.Fatal(err)
	}
	if _, err := w2.c.Place(ctx, acct2, &fnet.PlacementRequest{PieceSize: size, Pieces: ids(3)}); !errors.Is(err, ErrNotEnoughNodes) {
		t.Fatalf("placement with a node one byte short of a piece: %v", err)
	}
}

// With exactly as many vetted nodes on free subnets as the pieces left
// after the unvetted share, the share still goes to an unvetted node
// drawn at random, not to the cheapest newcomer: a low price buys a new
// node nothing.
func TestUnvettedShareAtTheEdge(t *testing.T) {
	w, acct := vettedWorld(t)
	if share := w.c.cfg.Placement.UnvettedPieces; share != 1 {
		t.Fatalf("test written for an unvetted share of 1, have %d", share)
	}
	w.heartbeatNode(4, 0) // no room: 4 vetted nodes left for 5-1 pieces
	price := func(i int) uint64 {
		if i == 0 {
			return 1 // undercuts everyone
		}
		return 50
	}
	if seen := newcomerShare(t, w, acct, 60, price); seen < 3 {
		t.Fatalf("the unvetted share went to %d of 5 newcomers in 30 placements (one undercuts): chosen by price, not at random", seen)
	}
}
