package replicate

import (
	"fmt"
	"strings"
	"testing"
	"time"

	fnet "github.com/fincrypt/fincrypt/net"
)

// The refusal status leads with says why in words, what waits and where
// to deposit; a mediator that accepts placements gives none.
func TestEscrowRefusal(t *testing.T) {
	ranOut := time.Date(2026, 12, 5, 21, 40, 0, 0, time.UTC)
	b := &fnet.BalanceReply{Metered: true, Delinquent: true, DelinquentSince: ranOut, ReleaseAt: ranOut.Add(7 * 24 * time.Hour),
		DepositAddress: "sb1qdeposit", Runway: -1}
	f := escrowRefusal(b)
	if f == nil {
		t.Fatal("no refusal for a delinquent account")
	}
	f.WaitingBytes = 628 << 20
	want := "not protected: escrow ran out at 2026-12-05T21:40:00Z; 628.0 MiB waiting; deposit to sb1qdeposit"
	if got := f.Summary(); !strings.HasPrefix(got, want) || !strings.Contains(got, "released after 2026-12-12T21:40:00Z") {
		t.Fatalf("summary %q, want it to start with %q", got, want)
	}
	if f.Since == nil || !f.Since.Equal(ranOut) {
		t.Fatalf("since %v", f.Since)
	}
	for _, tc := range []struct {
		b    fnet.BalanceReply
		want string
	}{
		{fnet.BalanceReply{Metered: true}, "no escrow yet"},
		{fnet.BalanceReply{Metered: true, Pending: 5000}, "deposit of 5000 sat awaits confirmations"},
		{fnet.BalanceReply{Metered: true, Debt: -7, Escrow: 10}, "owes 7 sat"},
	} {
		if f := escrowRefusal(&tc.b); f == nil || !strings.Contains(f.Reason, tc.want) {
			t.Errorf("%+v: refusal %+v, want %q", tc.b, f, tc.want)
		}
	}
	for _, ok := range []*fnet.BalanceReply{nil, {Metered: false}, {Metered: true, CanPlace: true, Escrow: 1}} {
		if f := escrowRefusal(ok); f != nil {
			t.Errorf("%+v: refusal %+v", ok, f)
		}
	}
	// A placement refused for another reason is shown as the mediator said.
	err := fmt.Errorf("placement: %w", &fnet.RemoteError{Code: fnet.CodeFull, Message: "scheme 2/4 needs 4 nodes with 8912896 bytes free, 2 qualify"})
	if f := placeRefusal(err, ranOut); f == nil || !strings.Contains(f.Summary(), "not protected: the mediator refuses placements: scheme 2/4 needs 4 nodes") {
		t.Fatalf("place refusal %+v", f)
	}
	if f := placeRefusal(fmt.Errorf("dial: timeout"), ranOut); f != nil {
		t.Fatalf("an unreachable mediator is no refusal: %+v", f)
	}
}

// The payments block derives the price per GiB-month of the user's data
// and the charge per period from the mediator's terms.
func TestPaymentStatus(t *testing.T) {
	now := time.Now()
	b := &fnet.BalanceReply{Metered: true, Escrow: 1000, Bytes: 2 << 30, Price: 150, Period: time.Hour,
		Runway: 100 * time.Hour, WarnRunway: 7 * 24 * time.Hour, Low: true, CanPlace: true}
	p := paymentStatus(b, now, 2)
	if p.PricePerGiBMonth != 300 || p.PiecePrice != 150 || p.RunwaySeconds != 360000 || p.RunsOutAt == nil ||
		!strings.Contains(p.Warning, "4d 4h") || p.PeriodSeconds != 3600 {
		t.Fatalf("payments %+v", p)
	}
	if c := p.ChargePerPeriodSat; c < 0.41 || c > 0.42 { // 300 sat a month over 720 hours
		t.Fatalf("charge per period %f", c)
	}
	if paymentStatus(&fnet.BalanceReply{}, now, 2) != nil {
		t.Fatal("a payments block without payments")
	}
}
