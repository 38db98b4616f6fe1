package wallet

import (
	"testing"

	"github.com/fincrypt/fincrypt/internal/pebblesched"
)

// TestWalletDoesNotPoll: an open wallet's database runs no goroutine that
// wakes the process while nothing happens (see pebblesched).
func TestWalletDoesNotPoll(t *testing.T) {
	newTestWallet(t, "regtest", nil)
	if p := pebblesched.Polling(); p != "" {
		t.Fatalf("an open wallet polls:\n%s", p)
	}
}
