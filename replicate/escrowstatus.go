package replicate

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/fincrypt/fincrypt/internal/units"
	fnet "github.com/fincrypt/fincrypt/net"
)

// Refusal says why new data does not reach the network although the
// mediator answers: it refuses placements (no escrow, the network is
// full). `fincrypt status` leads with it.
type Refusal struct {
	Reason         string     `json:"reason"`          // in words: "escrow ran out at 2026-12-05T21:40:00Z"
	Since          *time.Time `json:"since,omitempty"` // when the escrow ran out, or the first refusal
	WaitingBytes   uint64     `json:"waiting_bytes"`   // written, not yet on the network
	DepositAddress string     `json:"deposit_address,omitempty"`
	ReleaseAt      *time.Time `json:"release_at,omitempty"` // data on the network is released after this unless the account deposits
}

// Summary is the one line `fincrypt status` leads with.
func (f *Refusal) Summary() string {
	parts := []string{"not protected: " + f.Reason, units.HumanSize(f.WaitingBytes) + " waiting"}
	switch {
	case f.DepositAddress != "":
		parts = append(parts, "deposit to "+f.DepositAddress)
	case strings.Contains(f.Reason, "escrow") || strings.Contains(f.Reason, "deposit"):
		parts = append(parts, "deposit to the address `fincrypt wallet deposit-address` prints")
	}
	if f.ReleaseAt != nil {
		parts = append(parts, "data on the network is released after "+f.ReleaseAt.UTC().Format(time.RFC3339))
	}
	return strings.Join(parts, "; ")
}

// PaymentStatus is what the account pays and how long its escrow lasts,
// from the mediator's latest BalanceReply (payments on only).
type PaymentStatus struct {
	CheckedAt      time.Time `json:"checked_at"`
	Network        string    `json:"network"`
	DepositAddress string    `json:"deposit_address,omitempty"`
	EscrowSat      int64     `json:"escrow_sat"`
	PendingSat     int64     `json:"pending_deposit_sat"` // seen on chain, awaiting confirmations
	DebtSat        int64     `json:"debt_sat"`            // owed after a reorganisation (positive)
	// Charges at the last settled period (zero before the first).
	ChargedBytes       int64      `json:"charged_bytes"`                 // piece bytes held on the nodes
	PiecePrice         uint64     `json:"piece_price_sat_per_gib_month"` // mean price the nodes ask
	PricePerGiBMonth   float64    `json:"price_sat_per_gib_month"`       // per GiB of your data: piece price x N/K
	ChargePerPeriodSat float64    `json:"charge_per_period_sat"`
	PeriodSeconds      float64    `json:"period_seconds"`
	RunwaySeconds      int64      `json:"runway_seconds"` // -1: nothing charged yet
	RunsOutAt          *time.Time `json:"runs_out_at,omitempty"`
	WarnRunwaySeconds  int64      `json:"warn_runway_seconds"`
	Warning            string     `json:"warning,omitempty"`
}

// paymentStatus builds the status block from a BalanceReply; expansion is
// the vault scheme's N/K.
func paymentStatus(b *fnet.BalanceReply, at time.Time, expansion float64) *PaymentStatus {
	if b == nil || !b.Metered {
		return nil
	}
	p := &PaymentStatus{CheckedAt: at.UTC(), Network: b.Network, DepositAddress: b.DepositAddress,
		EscrowSat: b.Escrow, PendingSat: b.Pending, DebtSat: -b.Debt,
		ChargedBytes: b.Bytes, PiecePrice: b.Price, PricePerGiBMonth: float64(b.Price) * expansion,
		ChargePerPeriodSat: b.PeriodCharge(), PeriodSeconds: b.Period.Seconds(),
		RunwaySeconds: -1, WarnRunwaySeconds: int64(b.WarnRunway.Seconds())}
	if b.Runway >= 0 {
		p.RunwaySeconds = int64(b.Runway.Seconds())
		if b.Runway < 100*365*24*time.Hour {
			t := at.Add(b.Runway).UTC()
			p.RunsOutAt = &t
		}
	}
	if b.Warns() {
		p.Warning = b.Verdict()
	}
	return p
}

// escrowRefusal is why a metered mediator refuses the account placements,
// or nil if it accepts them.
func escrowRefusal(b *fnet.BalanceReply) *Refusal {
	if b == nil || !b.Metered || b.CanPlace {
		return nil
	}
	f := &Refusal{DepositAddress: b.DepositAddress}
	switch {
	case b.Debt < 0:
		f.Reason = fmt.Sprintf("the account owes %d sat after a reorganisation took back a deposit", -b.Debt)
	case b.Delinquent && !b.DelinquentSince.IsZero():
		t := b.DelinquentSince.UTC()
		f.Reason, f.Since = "escrow ran out at "+t.Format(time.RFC3339), &t
	case b.Delinquent:
		f.Reason = "escrow ran out"
	case b.Pending > 0:
		f.Reason = fmt.Sprintf("the deposit of %d sat awaits confirmations", b.Pending)
	default:
		f.Reason = "no escrow yet"
	}
	if !b.ReleaseAt.IsZero() {
		t := b.ReleaseAt.UTC()
		f.ReleaseAt = &t
	}
	return f
}

// placeRefusal turns a placement the mediator refused into a Refusal
// (nil for any other error).
func placeRefusal(err error, since time.Time) *Refusal {
	var re *fnet.RemoteError
	if !errors.As(err, &re) {
		return nil
	}
	reason := re.Message
	if reason == "" {
		reason = re.Error()
	}
	t := since.UTC()
	return &Refusal{Reason: "the mediator refuses placements: " + reason, Since: &t}
}
