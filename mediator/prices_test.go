package mediator

import (
	"context"
	"testing"
	"time"

	fnet "github.com/fincrypt/fincrypt/net"
)

// reregister registers node i again with a new price.
func (w *world) reregister(i int, price uint64) {
	w.t.Helper()
	id := w.ids[i]
	if _, err := w.c.Register(fnet.WithRemoteIP(context.Background(), w.from[i]), id.ID(), &fnet.RegisterRequest{
		Node: id.ID(), Address: w.addrs[i], Capacity: 1 << 30, Price: price, PayoutAddress: "payout",
	}); err != nil {
		w.t.Fatal(err)
	}
}

// records returns the period records of the round that started at start,
// by (node, account).
func (w *world) records(start time.Time) map[[2]string]PeriodRecord {
	w.t.Helper()
	recs, err := w.store.PeriodRecords(context.Background(), start, start.Add(time.Nanosecond))
	if err != nil {
		w.t.Fatal(err)
	}
	out := map[[2]string]PeriodRecord{}
	for _, r := range recs {
		out[[2]string{r.Node.String(), fnet.NodeID(r.Account).String()}] = r
	}
	return out
}

func rk(n fnet.NodeID, a fnet.AccountID) [2]string {
	return [2]string{n.String(), fnet.NodeID(a).String()}
}

// TestContractPrices: a node that raises its price 100-fold gets it for new
// pieces at once and for the pieces it holds only after the notice, which
// the client is told of; a cut applies at once; settlement charges the
// contract price, not the node's.
func TestContractPrices(t *testing.T) {
	w := newWorld(t, 5)
	withPayments(t, w, "", Payments{})
	const notice = 10 * time.Minute
	w.c.cfg.Payments.PriceNotice = notice
	ctx := context.Background()
	old, fresh := w.account(), w.account()
	segA, _ := w.storeSegment(old, 3000)
	n0, n1 := w.ids[0].ID(), w.ids[1].ID()
	start, _ := w.nextRound()
	if r := w.records(start)[rk(n0, old)]; r.Price != 100 || r.Bytes == 0 {
		t.Fatalf("record before the rise: %+v", r)
	}

	raisedAt := w.now()
	w.reregister(0, 10_000)
	n, _ := w.store.GetNode(ctx, n0)
	if n.Price != 10_000 || !n.RepriceAt.Equal(raisedAt.Add(notice)) {
		t.Fatalf("node after the rise: price %d, reprice at %v", n.Price, n.RepriceAt)
	}
	for _, p := range w.segment(segA).Pieces {
		if p.Node == n0 && p.Price != 100 {
			t.Fatalf("held piece repriced at once: %+v", p)
		}
	}
	segB, _ := w.storeSegment(fresh, 3000) // five nodes, five pieces: n0 gets one
	for _, p := range w.segment(segB).Pieces {
		if p.Node == n0 && p.Price != 10_000 {
			t.Fatalf("new piece on the raised node at %d", p.Price)
		}
	}
	notes, err := w.c.accountNotices(ctx, old)
	if err != nil || notes.Charge <= 0 || !notes.At.Equal(raisedAt.Add(notice)) {
		t.Fatalf("notice shown to the client: %+v %v", notes, err)
	}
	if notes, _ := w.c.accountNotices(ctx, fresh); notes.Charge != 0 {
		t.Fatalf("notice for pieces placed at the new price: %+v", notes)
	}
	// Rounds during the notice: the held bytes at 100, the new at 10 000.
	for range 3 {
		start, _ = w.nextRound()
		recs := w.records(start)
		if r := recs[rk(n0, old)]; r.Price != 100 {
			t.Fatalf("held pieces charged at %d during the notice", r.Price)
		}
		if r := recs[rk(n0, fresh)]; r.Price != 10_000 {
			t.Fatalf("new pieces charged at %d", r.Price)
		}
	}
	// Settlement charges the contract price: each holding carries it.
	recs, err := w.store.PeriodRecords(ctx, start, start.Add(time.Nanosecond))
	if err != nil {
		t.Fatal(err)
	}
	in, err := w.c.periodInput(ctx, start.UnixNano(), recs, map[fnet.NodeID]string{})
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range in.Holdings {
		if h.Node == n0.String() && h.Account == fnet.NodeID(old).String() && (h.Price == nil || *h.Price != 100) {
			t.Fatalf("settlement input for held bytes: %+v", h)
		}
	}
	if _, err := w.c.settle(ctx); err != nil {
		t.Fatal(err)
	}
	// A cut applies at once.
	w.reregister(1, 50)
	start, _ = w.nextRound()
	if r := w.records(start)[rk(n1, old)]; r.Price != 50 {
		t.Fatalf("cut not applied to held pieces: %d", r.Price)
	}
	// After the notice the held pieces cost the new price.
	w.advance(notice)
	start, _ = w.nextRound()
	if r := w.records(start)[rk(n0, old)]; r.Price != 10_000 {
		t.Fatalf("held pieces after the notice at %d", r.Price)
	}
	if n, _ := w.store.GetNode(ctx, n0); !n.RepriceAt.IsZero() {
		t.Fatalf("notice still pending after it ended: %v", n.RepriceAt)
	}
	if notes, _ := w.c.accountNotices(ctx, old); notes.Charge != 0 {
		t.Fatalf("notice shown after it ended: %+v", notes)
	}
}

// TestLegacyContractsPriced: contracts written before contract prices
// (segment record version 2) get their node's price at the upgrade, once.
func TestLegacyContractsPriced(t *testing.T) {
	w := newWorld(t, 5)
	ctx := context.Background()
	acct := w.account()
	id, _ := w.storeSegment(acct, 3000)
	seg := w.segment(id)
	if err := w.store.db.Set(key(pfxSegment, id[:]), encodeLegacySegment(seg, 2), nil); err != nil {
		t.Fatal(err)
	}
	if s := w.segment(id); !s.unpriced || s.Pieces[0].Price != 0 {
		t.Fatalf("legacy record decoded with prices: %+v", s)
	}
	w.reregister(2, 7) // the price at upgrade time is the one that counts
	if err := w.c.priceLegacyContracts(ctx); err != nil {
		t.Fatal(err)
	}
	for _, p := range w.segment(id).Pieces {
		want := uint64(0)
		for i, nid := range w.ids {
			if nid.ID() == p.Node {
				want = uint64(100 + i)
				if i == 2 {
					want = 7
				}
			}
		}
		if p.Price != want || want == 0 {
			t.Fatalf("piece %d on %s priced %d, want %d", p.Index, p.Node, p.Price, want)
		}
	}
	if w.segment(id).unpriced {
		t.Fatal("record still in the old version")
	}
	// Done once: a later legacy-looking record is not rescanned.
	if v, _ := w.store.Counter(ctx, counterPricedContracts); v != 1 {
		t.Fatalf("migration counter %d", v)
	}
}
