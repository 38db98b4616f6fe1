package devnet

import (
	"math"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/wallet"
)

// demoRunway derives, from the devnet's constants alone, what storing
// `data` bytes of a user's data costs per period on a default devnet
// (DefaultScheme on the cheapest N of DefaultNodes nodes, each holding
// data/K bytes of pieces) and how long DemoDeposit lasts at that rate.
func demoRunway(data int64) (perPeriod int64, runway time.Duration) {
	s := DefaultScheme
	for i := range s.N {
		owed, _ := wallet.ProRate(data/int64(s.K), int64(NodePrice(i)), DefaultPeriod, nil)
		perPeriod += owed
	}
	if perPeriod == 0 {
		return 0, math.MaxInt64
	}
	return perPeriod, time.Duration(DemoDeposit/perPeriod) * DefaultPeriod
}

// TestDemoEconomics checks that the numbers the constants' comments and
// `fincrypt devnet --help` state follow from the constants: `make demo`
// keeps tens of GiB paid for at least a day, with a charge every period.
func TestDemoEconomics(t *testing.T) {
	const day = 24 * time.Hour
	// "about 39 sat per GiB of pieces per 10-second period"
	if got, _ := wallet.ProRate(wallet.GiB, DefaultPrice, DefaultPeriod, nil); got != 38 {
		t.Errorf("DefaultPrice: %d sat per GiB per period, the comment says about 39 (38.6)", got)
	}
	// "10 GiB ... 885 sat per 10-second period ... about 13 days"
	per, runway := demoRunway(10 * wallet.GiB)
	t.Logf("10 GiB: %d sat per %s, the demo deposit lasts %s", per, DefaultPeriod, runway)
	if per != 885 || runway < 12*day+12*time.Hour || runway > 13*day+12*time.Hour {
		t.Errorf("10 GiB: %d sat per period, runway %s; the comments say 885 sat and about 13 days", per, runway)
	}
	// "50 GiB for about 2.6 days": tens of GiB for at least a day.
	if _, r := demoRunway(50 * wallet.GiB); r < 2*day+12*time.Hour || r > 2*day+18*time.Hour {
		t.Errorf("50 GiB: runway %s; the comment says about 2.6 days", r)
	}
	// A demo's first quarter GiB is charged visibly every period, and
	// the client is not warned about it.
	if per, r := demoRunway(256 << 20); per < 10 || r < WarnPeriods*DefaultPeriod {
		t.Errorf("256 MiB: %d sat per period, runway %s", per, r)
	}
	// The devnet's mediator accepts every devnet node's price.
	if NodePrice(63) > MaxPrice {
		t.Errorf("node 64 asks %d, above the devnet's max price %d", NodePrice(63), MaxPrice)
	}
	// The default deposit is what `devnet fund` may send.
	if DemoDeposit <= 0 || DemoDeposit > 10*1e8 {
		t.Errorf("DemoDeposit %d sat", DemoDeposit)
	}
}

func TestDefaultCapacity(t *testing.T) {
	for _, tc := range []struct {
		free  uint64
		nodes int
		want  int64
	}{
		{200 << 30, 5, 10 << 30},          // a quarter of 200 GiB over 5 nodes
		{10 << 40, 5, MaxDefaultCapacity}, // bounded
		{100 << 20, 5, MinCapacity},       // a nearly full disk still starts
	} {
		if got := DefaultCapacity(tc.free, tc.nodes); got != tc.want {
			t.Errorf("DefaultCapacity(%d, %d) = %d, want %d", tc.free, tc.nodes, got, tc.want)
		}
	}
	if got := Holds(5, 10<<30, DefaultScheme); got != 25<<30 {
		t.Errorf("5 nodes of 10 GiB at 2/4 hold %d, want 25 GiB", got)
	}
}
