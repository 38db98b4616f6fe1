package net

// Messages between a client account and the mediator's wallet
// (docs/PROTOCOL.md, "Wallet messages"). Like every mediator message the
// account is the connection's authenticated peer, so a client can only ask
// about its own escrow.

import (
	"fmt"
	"strings"
	"time"
)

// Wallet message types (0x50..0x5f).
const (
	TypeDepositAddressRequest MsgType = 0x50
	TypeDepositAddressReply   MsgType = 0x51
	TypeBalanceRequest        MsgType = 0x52
	TypeBalanceReply          MsgType = 0x53
)

// Limits of wallet messages.
const (
	// MaxBitcoinAddressText bounds an address (bech32 addresses are at most
	// 90 characters).
	MaxBitcoinAddressText = 128
)

func newWalletMessage(t MsgType) Message {
	switch t {
	case TypeDepositAddressRequest:
		return &DepositAddressRequest{}
	case TypeDepositAddressReply:
		return &DepositAddressReply{}
	case TypeBalanceRequest:
		return &BalanceRequest{}
	case TypeBalanceReply:
		return &BalanceReply{}
	}
	return nil
}

var walletTypeNames = map[MsgType]string{
	TypeDepositAddressRequest: "DepositAddressRequest", TypeDepositAddressReply: "DepositAddressReply",
	TypeBalanceRequest: "BalanceRequest", TypeBalanceReply: "BalanceReply",
}

// DepositAddressRequest asks for the account's escrow deposit address. A
// mediator without payments answers ErrUnsupported.
type DepositAddressRequest struct{}

func (*DepositAddressRequest) Type() MsgType   { return TypeDepositAddressRequest }
func (*DepositAddressRequest) encode(*encoder) {}
func (*DepositAddressRequest) decode(*decoder) {}

// DepositAddressReply carries the address (it never changes for an account)
// and the Bitcoin network it belongs to.
type DepositAddressReply struct {
	Address string
	Network string
	MinConf uint32 // confirmations before a deposit is credited
}

func (*DepositAddressReply) Type() MsgType { return TypeDepositAddressReply }
func (m *DepositAddressReply) encode(e *encoder) {
	e.str(m.Address)
	e.str(m.Network)
	e.u32(m.MinConf)
}
func (m *DepositAddressReply) decode(d *decoder) {
	m.Address = d.str(MaxBitcoinAddressText)
	m.Network = d.str(MaxNetworkName)
	m.MinConf = d.u32()
}

// BalanceRequest asks for the account's escrow standing.
type BalanceRequest struct{}

func (*BalanceRequest) Type() MsgType   { return TypeBalanceRequest }
func (*BalanceRequest) encode(*encoder) {}
func (*BalanceRequest) decode(*decoder) {}

// BalanceReply is the account's standing. Amounts are satoshis. Metered is
// false on a mediator without payments (then every other field is zero and
// placement needs no escrow).
type BalanceReply struct {
	Metered        bool
	Network        string
	DepositAddress string // empty until the account asked for one
	Escrow         int64  // credited deposits minus charges
	Debt           int64  // <= 0: owed after a reorganisation took back a spent deposit
	Pending        int64  // seen on chain, not yet confirmed enough
	LastCharge     int64  // charged in the last settled period
	PeriodsLeft    int64  // Escrow / LastCharge; -1 when nothing was charged yet
	Period         time.Duration
	Delinquent     bool
	CanPlace       bool      // new placements are accepted
	Low            bool      // the client should be warned (delinquent, in debt, or under 14 days left)
	ReleaseAt      time.Time // when delinquent: segments may be released after this (second precision)

	// What the account pays, from the last settled period (an optional
	// block at the end of the body: a reply without it decodes with these
	// zero).
	Bytes           int64         // piece bytes the nodes held for the account
	Price           uint64        // their mean price, sat per GiB-month of pieces
	Runway          time.Duration // how long Escrow lasts at Bytes and Price; -1 unknown (nothing charged yet)
	WarnRunway      time.Duration // Low is set while Runway is shorter than this
	DelinquentSince time.Time     // when delinquent: when the escrow ran out (second precision)

	// A second optional block after the terms (mediators before contract
	// prices send none of it): NoticeCharge is what price rises under
	// notice add to the charge per period from NoticeAt on (second
	// precision); Needed is the escrow placement needs (RunwayPeriods at
	// the current charge), 0 if unknown.
	NoticeCharge int64
	NoticeAt     time.Time
	Needed       int64
}

func (*BalanceReply) Type() MsgType { return TypeBalanceReply }
func (m *BalanceReply) encode(e *encoder) {
	e.boolean(m.Metered)
	e.str(m.Network)
	e.str(m.DepositAddress)
	e.i64(m.Escrow)
	e.i64(m.Debt)
	e.i64(m.Pending)
	e.i64(m.LastCharge)
	e.i64(m.PeriodsLeft)
	e.i64(int64(m.Period))
	e.boolean(m.Delinquent)
	e.boolean(m.CanPlace)
	e.boolean(m.Low)
	var at int64
	if !m.ReleaseAt.IsZero() {
		at = m.ReleaseAt.Unix()
	}
	e.i64(at)
	e.i64(m.Bytes)
	e.u64(m.Price)
	e.i64(int64(m.Runway))
	e.i64(int64(m.WarnRunway))
	var since int64
	if !m.DelinquentSince.IsZero() {
		since = m.DelinquentSince.Unix()
	}
	e.i64(since)
	e.i64(m.NoticeCharge)
	var nat int64
	if !m.NoticeAt.IsZero() {
		nat = m.NoticeAt.Unix()
	}
	e.i64(nat)
	e.i64(m.Needed)
}
func (m *BalanceReply) decode(d *decoder) {
	m.Metered = d.boolean()
	m.Network = d.str(MaxNetworkName)
	m.DepositAddress = d.str(MaxBitcoinAddressText)
	m.Escrow = d.i64()
	m.Debt = d.i64()
	m.Pending = d.i64()
	m.LastCharge = d.i64()
	m.PeriodsLeft = d.i64()
	m.Period = time.Duration(d.i64())
	m.Delinquent = d.boolean()
	m.CanPlace = d.boolean()
	m.Low = d.boolean()
	if at := d.i64(); at != 0 {
		m.ReleaseAt = time.Unix(at, 0)
	}
	m.Runway = -1
	if len(d.b) == 0 {
		return // a mediator without the terms block
	}
	m.Bytes = d.i64()
	m.Price = d.u64()
	m.Runway = time.Duration(d.i64())
	m.WarnRunway = time.Duration(d.i64())
	if since := d.i64(); since != 0 {
		m.DelinquentSince = time.Unix(since, 0)
	}
	if len(d.b) == 0 {
		return // a mediator from before contract prices
	}
	m.NoticeCharge = d.i64()
	if at := d.i64(); at != 0 {
		m.NoticeAt = time.Unix(at, 0)
	}
	m.Needed = d.i64()
}

// MonthlyCharge is what the account pays per month at Bytes and Price.
func (b *BalanceReply) MonthlyCharge() float64 {
	return float64(b.Bytes) * float64(b.Price) / (1 << 30)
}

// PeriodCharge is what the account pays per period at Bytes and Price.
func (b *BalanceReply) PeriodCharge() float64 {
	return b.MonthlyCharge() * float64(b.Period) / float64(30*24*time.Hour)
}

// Verdict is the one-line judgement a client shows about its escrow: "ok",
// "no payments on this network", or a line starting with "WARNING:".
func (b *BalanceReply) Verdict() string {
	switch {
	case !b.Metered:
		return "no payments on this network"
	case b.Debt < 0:
		return "WARNING: the account owes money after a reorganisation took back a deposit; deposit to continue"
	case b.Delinquent:
		return fmt.Sprintf("WARNING: the escrow ran out: no new data is stored, and your data is released after %s unless you deposit", b.ReleaseAt.UTC().Format(time.RFC3339))
	case !b.CanPlace && b.Escrow > 0 && b.Needed > b.Escrow:
		return fmt.Sprintf("WARNING: the escrow (%d sat) is below the %d sat new data needs: deposit more", b.Escrow, b.Needed)
	case !b.CanPlace:
		return "WARNING: no escrow yet: deposit to the account's address (fincrypt wallet deposit-address) before storing data"
	case b.Low && b.Runway >= 0:
		return fmt.Sprintf("WARNING: the escrow runs out in about %s at the current usage: deposit more", HumanDuration(b.Runway))
	case b.Low:
		return "WARNING: the escrow runs out soon at the current usage: deposit more"
	case b.NoticeCharge > 0:
		return fmt.Sprintf("WARNING: storage nodes raised their prices: from %s your charge rises by %d sat per %s (the mediator may move the pieces to cheaper nodes first)",
			b.NoticeAt.UTC().Format(time.RFC3339), b.NoticeCharge, b.Period)
	}
	return "ok"
}

// Warns reports whether Verdict is a warning.
func (b *BalanceReply) Warns() bool { return strings.HasPrefix(b.Verdict(), "WARNING:") }

// HumanDuration rounds d for people: "3d 4h", "5h 12m", "42s".
func HumanDuration(d time.Duration) string {
	switch {
	case d < 0:
		return "unknown"
	case d >= 365*24*time.Hour:
		return fmt.Sprintf("%.1f years", d.Hours()/(365*24))
	case d >= 24*time.Hour:
		return fmt.Sprintf("%dd %dh", int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour))
	case d >= time.Hour:
		return fmt.Sprintf("%dh %dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
	case d >= time.Minute:
		return fmt.Sprintf("%dm %ds", int(d/time.Minute), int(d%time.Minute/time.Second))
	}
	return d.Round(time.Second).String()
}
