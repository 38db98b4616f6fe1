package net

import (
	"strings"
	"testing"
	"time"
)

// TestBalanceCharges checks what an account pays per month and per period
// at its bytes and price.
func TestBalanceCharges(t *testing.T) {
	b := &BalanceReply{Bytes: 2 << 30, Price: 100, Period: 24 * time.Hour}
	if got := b.MonthlyCharge(); got != 200 {
		t.Fatalf("2 GiB at 100 sat per GiB-month: monthly charge %v, want 200", got)
	}
	if got, want := b.PeriodCharge(), 200.0/30; got < want-1e-9 || got > want+1e-9 {
		t.Fatalf("a day's charge %v, want %v (a thirtieth of the month)", got, want)
	}
}

// TestBalanceVerdict checks each verdict a client shows, at the edge of each
// condition.
func TestBalanceVerdict(t *testing.T) {
	ok := BalanceReply{Metered: true, CanPlace: true, Escrow: 1000, Runway: -1, Period: time.Hour}
	release := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	cases := []struct {
		name string
		edit func(*BalanceReply)
		want string // a part of the verdict
		warn bool
	}{
		{"unmetered", func(b *BalanceReply) { b.Metered = false }, "no payments on this network", false},
		{"ok", func(*BalanceReply) {}, "ok", false},
		{"debt", func(b *BalanceReply) { b.Debt = -1 }, "owes money", true},
		{"no debt at 0", func(b *BalanceReply) { b.Debt = 0 }, "ok", false},
		{"delinquent", func(b *BalanceReply) { b.Delinquent = true; b.ReleaseAt = release }, "released after 2026-01-02T03:04:05Z", true},
		{"below needed", func(b *BalanceReply) { b.CanPlace = false; b.Escrow = 100; b.Needed = 101 }, "the escrow (100 sat) is below the 101 sat", true},
		{"needed reached", func(b *BalanceReply) { b.CanPlace = false; b.Escrow = 100; b.Needed = 100 }, "no escrow yet", true},
		{"no escrow", func(b *BalanceReply) { b.CanPlace = false; b.Escrow = 0; b.Needed = 10 }, "no escrow yet", true},
		{"low, runway known", func(b *BalanceReply) { b.Low = true; b.Runway = 0 }, "runs out in about 0s", true},
		{"low, runway days", func(b *BalanceReply) { b.Low = true; b.Runway = 50 * time.Hour }, "runs out in about 2d 2h", true},
		{"low, runway unknown", func(b *BalanceReply) { b.Low = true; b.Runway = -1 }, "runs out soon", true},
		{"notice", func(b *BalanceReply) { b.NoticeCharge = 1; b.NoticeAt = release }, "from 2026-01-02T03:04:05Z your charge rises by 1 sat per 1h0m0s", true},
		{"no notice", func(b *BalanceReply) { b.NoticeCharge = 0; b.NoticeAt = release }, "ok", false},
	}
	for _, c := range cases {
		b := ok
		c.edit(&b)
		v := b.Verdict()
		if c.want == "ok" && v != "ok" || !strings.Contains(v, c.want) {
			t.Errorf("%s: verdict %q, want %q in it", c.name, v, c.want)
		}
		if b.Warns() != c.warn {
			t.Errorf("%s: Warns %v, want %v (%q)", c.name, b.Warns(), c.warn, v)
		}
	}
}

// TestHumanDuration checks the rounding for people at each unit's edge.
func TestHumanDuration(t *testing.T) {
	day := 24 * time.Hour
	for _, c := range []struct {
		d    time.Duration
		want string
	}{
		{-1, "unknown"},
		{0, "0s"},
		{59*time.Second + 400*time.Millisecond, "59s"},
		{time.Minute, "1m 0s"},
		{3*time.Minute + 4*time.Second, "3m 4s"},
		{time.Hour - time.Second, "59m 59s"},
		{time.Hour, "1h 0m"},
		{5*time.Hour + 12*time.Minute, "5h 12m"},
		{day - time.Minute, "23h 59m"},
		{day, "1d 0h"},
		{3*day + 4*time.Hour, "3d 4h"},
		{365*day - time.Hour, "364d 23h"},
		{365 * day, "1.0 years"},
		{3 * 365 * day / 2, "1.5 years"},
	} {
		if got := HumanDuration(c.d); got != c.want {
			t.Errorf("HumanDuration(%v) = %q, want %q", c.d, got, c.want)
		}
	}
}

// TestBalanceReplyOlderMediators checks the decoding of a BalanceReply from
// a mediator without the terms block (runway unknown, -1) and from one
// without the contract-price block (the notice fields zero).
func TestBalanceReplyOlderMediators(t *testing.T) {
	full := &BalanceReply{Metered: true, Escrow: 500, Bytes: 1 << 30, Price: 7, Runway: 5 * time.Hour,
		WarnRunway: time.Hour, NoticeCharge: 3, NoticeAt: time.Unix(1900000000, 0), Needed: 9}
	var e encoder
	full.encode(&e)
	const noticeBlock, termsBlock = 3 * 8, 5 * 8
	var old BalanceReply
	d := decoder{b: e.b[:len(e.b)-noticeBlock-termsBlock]}
	old.decode(&d)
	if d.err != nil || old.Escrow != 500 || old.Runway != -1 || old.Bytes != 0 {
		t.Fatalf("a reply without terms: escrow %d, runway %d, bytes %d, %v; want 500, -1 (unknown), 0",
			old.Escrow, old.Runway, old.Bytes, d.err)
	}
	var mid BalanceReply
	d = decoder{b: e.b[:len(e.b)-noticeBlock]}
	mid.decode(&d)
	if d.err != nil || mid.Runway != 5*time.Hour || mid.Price != 7 || mid.NoticeCharge != 0 || !mid.NoticeAt.IsZero() {
		t.Fatalf("a reply without contract prices: runway %s, price %d, notice %d at %v, %v",
			mid.Runway, mid.Price, mid.NoticeCharge, mid.NoticeAt, d.err)
	}
}
