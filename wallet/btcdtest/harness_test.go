package btcdtest

import (
	"errors"
	"testing"

	"github.com/btcsuite/btcd/btcutil"
)

// TestHarness: btcd starts, Ready activates segwit, Send funds an address,
// Replace double-spends it after the block holding it is invalidated.
func TestHarness(t *testing.T) {
	n := Start(t)
	if _, err := n.Send(n.MinerAddress(), 1000); !errors.Is(err, ErrNoMatureCoins) {
		t.Fatalf("send before any block: %v", err)
	}
	if err := n.Ready(); err != nil {
		t.Fatal(err)
	}
	if err := n.ActivateSegwit(); err != nil { // already active: no blocks
		t.Fatal(err)
	}
	dest, err := btcutil.NewAddressWitnessPubKeyHash(make([]byte, 20), n.Net)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := n.Send(dest, 100_000)
	if err != nil {
		t.Fatal(err)
	}
	h := tx.TxHash()
	blk := n.MustGenerate(t, 1)[0]
	if c, err := n.Confirmations(&h); err != nil || c != 1 {
		t.Fatalf("confirmations %d, %v", c, err)
	}
	if err := n.Invalidate(blk); err != nil {
		t.Fatal(err)
	}
	r, err := n.Replace(tx)
	if err != nil {
		t.Fatal(err)
	}
	n.MustGenerate(t, 2)
	rh := r.TxHash()
	if c, err := n.Confirmations(&rh); err != nil || c != 2 {
		t.Fatalf("replacement confirmations %d, %v", c, err)
	}
	if _, err := n.Tx(&h); err == nil {
		t.Fatal("the replaced transaction is still known")
	}
}
