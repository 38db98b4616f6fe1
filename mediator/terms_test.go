package mediator

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/challenge"
	fnet "github.com/fincrypt/fincrypt/net"
	"github.com/fincrypt/fincrypt/wallet"
)

// A node asking more than MaxPrice is refused with BadRequest (a node does
// not retry it), the message names the price and the limit, and nothing
// about the node is recorded.
func TestRegisterRefusesPriceAboveMax(t *testing.T) {
	w := newWorld(t, 0)
	w.c.cfg.MaxPrice = 1000
	ctx := fnet.WithRemoteIP(context.Background(), netip.MustParseAddr("10.0.0.1"))
	id, _ := fnet.GenerateIdentity()
	w.mem.nodes[id.ID()] = &memNode{id: id.ID(), pieces: map[challenge.PieceID][]byte{}}
	req := &fnet.RegisterRequest{Node: id.ID(), Address: fnet.Address{ID: id.ID(), HostPort: "10.0.0.1:7000"}.String(),
		Capacity: 1 << 30, Price: 1001}
	_, err := w.c.Register(ctx, id.ID(), req)
	if !errors.Is(err, fnet.ErrBadRequest) || !strings.Contains(err.Error(), "1001") || !strings.Contains(err.Error(), "limit of 1000") {
		t.Fatalf("price above the limit: %v", err)
	}
	if _, err := w.store.GetNode(ctx, id.ID()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a refused node was recorded: %v", err)
	}
	req.Price = 1000
	if _, err := w.c.Register(ctx, id.ID(), req); err != nil {
		t.Fatalf("price at the limit: %v", err)
	}
	if (Config{Listen: "x:1", MaxPrice: MaxMaxPrice + 1}).WithDefaults().Validate() == nil {
		t.Fatal("a max price above all bitcoin validated")
	}
}

// The terms a BalanceReply carries come from the last settled period's
// records: bytes and their byte-weighted price; the runway is escrow over
// the monthly charge, and the warning starts below WarnRunway.
func TestBalanceTermsAndRunway(t *testing.T) {
	w := newWorld(t, 0)
	ctx := context.Background()
	a, b := w.account(), w.account()
	n1, n2 := fnet.NodeID{1}, fnet.NodeID{2}
	old := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	last := old.Add(time.Hour)
	if err := w.store.PutPeriodRecords(ctx, []PeriodRecord{
		{Period: old, Node: n1, Account: a, Bytes: 50 << 30, Price: 9999}, // an earlier period: ignored
		{Period: last, Node: n1, Account: a, Bytes: 1 << 30, Price: 100},
		{Period: last, Node: n2, Account: a, Bytes: 1 << 30, Price: 300},
		{Period: last, Node: n2, Account: b, Bytes: 4 << 30, Price: 300},
	}); err != nil {
		t.Fatal(err)
	}
	rep := &fnet.BalanceReply{Metered: true, Escrow: 400, Period: time.Hour, CanPlace: true}
	if err := w.c.fillTerms(ctx, a, rep, time.Time{}); err != nil || rep.Runway != -1 || rep.Bytes != 0 {
		t.Fatalf("before any settlement: %+v, %v", rep, err)
	}
	if _, err := w.store.AddCounter(ctx, CounterSettled, last.UnixNano()); err != nil {
		t.Fatal(err)
	}
	// 2 GiB at a mean 200 sat per GiB-month: 400 sat a month.
	if err := w.c.fillTerms(ctx, a, rep, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if rep.Bytes != 2<<30 || rep.Price != 200 || rep.Runway != wallet.Month || rep.Low || rep.WarnRunway != DefaultWarnRunway {
		t.Fatalf("terms %+v", rep)
	}
	if got := rep.PeriodCharge(); got < 0.55 || got > 0.56 { // 400 sat / 720 hours
		t.Fatalf("charge per hour %f", got)
	}
	rep.Escrow = 40 // three days
	if err := w.c.fillTerms(ctx, a, rep, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if rep.Runway != 3*24*time.Hour || !rep.Low || !strings.Contains(rep.Verdict(), "3d 0h") {
		t.Fatalf("three days left: runway %s low %v %q", rep.Runway, rep.Low, rep.Verdict())
	}
	w.c.cfg.WarnRunway = 2 * 24 * time.Hour
	if err := w.c.fillTerms(ctx, a, rep, time.Time{}); err != nil || rep.Low {
		t.Fatalf("three days left, warned under two: %+v %v", rep, err)
	}
	rb := &fnet.BalanceReply{Metered: true, Escrow: 1200}
	if err := w.c.fillTerms(ctx, b, rb, time.Time{}); err != nil || rb.Price != 300 || rb.Bytes != 4<<30 || rb.Runway != wallet.Month {
		t.Fatalf("account b: %+v %v", rb, err)
	}
}
