package testplanet_test

import (
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"

	"github.com/fincrypt/fincrypt/mediator"
	"github.com/fincrypt/fincrypt/mediator/testplanet"
	"github.com/fincrypt/fincrypt/wallet"
	"github.com/fincrypt/fincrypt/wallet/btcdtest"
)

// TestPlanetPayoutInputReorganisedAway: a real btcd reorganises away the
// block of the deposit a broadcast payout spends, and the deposit is
// double-spent so that it never comes back. The payout is abandoned (its
// nodes' balances returned), nothing stays in flight, the client owes the
// lost deposit, and after a new deposit a new payout pays the nodes; the
// books balance throughout.
func TestPlanetPayoutInputReorganisedAway(t *testing.T) {
	if testing.Short() {
		t.Skip("starts btcd")
	}
	btc := btcdtest.Start(t)
	if err := btc.Ready(); err != nil {
		t.Fatal(err)
	}
	p := testplanet.New(t, testplanet.Config{StorageNodes: 5, Network: "regtest", Prices: bigPrices(5), Reconfigure: func(c *mediator.Config) {
		c.Network = "regtest"
		c.Payments = mediator.Payments{
			Passphrase: testPassphrase, KDF: cheapKDF,
			RPC:     &wallet.RPCConfig{Host: btc.Host, User: btc.User, Pass: btc.Pass},
			MinConf: 1, SyncInterval: 100 * time.Millisecond, PayoutThreshold: 3000, EscrowGrace: time.Hour,
		}
	}})
	ctx := p.Context()
	w := p.Mediator.Peer.Wallet()
	da, err := p.Client.DepositAddress(ctx)
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := btcutil.DecodeAddress(da.Address, btc.Net)
	dep, err := btc.Send(addr, 20_000_000)
	if err != nil {
		t.Fatal(err)
	}
	depBlock := btc.MustGenerate(t, 1)[0]
	waitUntil(t, "the deposit credited", 20*time.Second, func() bool {
		b, err := p.Client.Balance(ctx)
		return err == nil && b.CanPlace
	})
	if _, err := p.Client.Store(ctx, p.Scheme(), randomData(11, segSize)); err != nil {
		t.Fatal(err)
	}
	depOut := wire.OutPoint{Hash: dep.TxHash(), Index: 0}
	var first wallet.Payout
	waitUntil(t, "a payout spending the deposit broadcast", 30*time.Second, func() bool {
		list, _ := w.Payouts()
		for _, po := range list {
			if po.State == wallet.PayoutBroadcast {
				for _, in := range po.Inputs {
					if in == depOut.String() || in == (wire.OutPoint{Hash: dep.TxHash(), Index: 1}).String() {
						first = po
						return true
					}
				}
			}
		}
		return false
	})
	// The deposit's block leaves the chain and the deposit is
	// double-spent: it never comes back.
	if err := btc.Invalidate(depBlock); err != nil {
		t.Fatal(err)
	}
	if _, err := btc.Replace(dep); err != nil {
		t.Fatal(err)
	}
	btc.MustGenerate(t, 3)
	waitUntil(t, "the payout abandoned", 30*time.Second, func() bool {
		list, _ := w.Payouts()
		for _, po := range list {
			if po.ID == first.ID {
				return po.State == wallet.PayoutAbandoned
			}
		}
		return false
	})
	if b, _ := w.Balance(wallet.AcctPayoutInflight); b != 0 {
		list, _ := w.Payouts()
		t.Fatalf("%d sat in flight after the abandon: %+v", b, list)
	}
	b, err := p.Client.Balance(ctx)
	if err != nil || b.Debt >= 0 || b.CanPlace {
		t.Fatalf("the client's balance after its deposit left the chain: %+v %v", b, err)
	}
	if err := w.CheckLedger(); err != nil {
		t.Fatal(err)
	}
	// A new deposit repays the debt and funds a new payout.
	if _, err := btc.Send(addr, 30_000_000); err != nil {
		t.Fatal(err)
	}
	btc.MustGenerate(t, 1)
	waitUntil(t, "a new payout confirmed", 40*time.Second, func() bool {
		list, _ := w.Payouts()
		for _, po := range list {
			if po.ID > first.ID && po.State == wallet.PayoutConfirmed {
				h, _ := chainhash.NewHashFromStr(po.TxID)
				if _, err := btc.Tx(h); err != nil {
					t.Fatalf("confirmed payout %s not on chain: %v", po.TxID, err)
				}
				return true
			}
		}
		btc.MustGenerate(t, 1)
		return false
	})
	if b, _ := w.Balance(wallet.AcctPayoutInflight); b < 0 {
		t.Fatalf("in flight %d", b)
	}
	if b, err := p.Client.Balance(ctx); err != nil || b.Debt != 0 {
		t.Fatalf("debt not repaid by the new deposit: %+v %v", b, err)
	}
	if err := w.CheckLedger(); err != nil {
		t.Fatal(err)
	}
}
