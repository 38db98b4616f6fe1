package mediator

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"

	"github.com/fincrypt/fincrypt/challenge"
	fnet "github.com/fincrypt/fincrypt/net"
	"github.com/fincrypt/fincrypt/vault"
	"github.com/fincrypt/fincrypt/wallet"
)

func withPayments(t *testing.T, w *world, network string, p Payments) {
	t.Helper()
	p.Passphrase = []byte("test passphrase")
	p.KDF = vault.KDFParams{Time: 1, MemoryK: 64, Threads: 1}
	pay, err := openPayments(t.TempDir(), network, p, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pay.close() })
	w.c.pay = pay
}

func p2pkh(t *testing.T, net *chaincfg.Params, b byte) string {
	a, err := btcutil.NewAddressPubKeyHash(bytes.Repeat([]byte{b}, 20), net)
	if err != nil {
		t.Fatal(err)
	}
	return a.EncodeAddress()
}

func register(w *world, payout string) error {
	id, _ := fnet.GenerateIdentity()
	w.mem.nodes[id.ID()] = &memNode{id: id.ID(), pieces: map[challenge.PieceID][]byte{}}
	addr := fnet.Address{ID: id.ID(), HostPort: "10.9.0.1:7000"}.String()
	_, err := w.c.Register(fromHost("10.9.0.1:7000"), id.ID(), &fnet.RegisterRequest{
		Node: id.ID(), Address: addr, Capacity: 1 << 30, Price: 100, PayoutAddress: payout, Network: "regtest",
	})
	return err
}

func TestPaymentsMeteredRefusals(t *testing.T) {
	w := newWorld(t, 0)
	withPayments(t, w, "regtest", Payments{PSBT: true}) // metered without a node
	ctx := context.Background()
	if err := register(w, p2pkh(t, &chaincfg.SimNetParams, 1)); !errors.Is(err, fnet.ErrBadRequest) {
		t.Fatalf("simnet payout address on a regtest mediator: %v", err)
	}
	if err := register(w, p2pkh(t, &chaincfg.RegressionNetParams, 2)); err != nil {
		t.Fatalf("regtest payout address: %v", err)
	}
	acct := w.account()
	if _, err := w.c.Place(ctx, acct, &fnet.PlacementRequest{}); !errors.Is(err, ErrNoEscrow) || !errors.Is(err, fnet.ErrUnauthorized) {
		t.Fatalf("placement without escrow: %v", err)
	}
	da, err := w.c.depositAddress(ctx, acct)
	if err != nil || da.Network != "regtest" || da.MinConf != wallet.DefaultMinConf {
		t.Fatalf("deposit address %+v, %v", da, err)
	}
	again, _ := w.c.depositAddress(ctx, acct)
	if again.Address != da.Address {
		t.Fatalf("deposit address changed: %s then %s", da.Address, again.Address)
	}
	b, err := w.c.balance(ctx, acct)
	if err != nil || !b.Metered || b.CanPlace || b.DepositAddress != da.Address || b.Escrow != 0 {
		t.Fatalf("balance %+v, %v", b, err)
	}
	var stranger fnet.AccountID
	stranger[0] = 9
	if _, err := w.c.depositAddress(ctx, stranger); !errors.Is(err, ErrUnknownAccount) {
		t.Fatalf("deposit address for an unregistered account: %v", err)
	}
}

func TestPaymentsUnmetered(t *testing.T) {
	w := newWorld(t, 0)
	withPayments(t, w, "", Payments{})
	ctx := context.Background()
	// A bad payout address costs the node its pay, not its registration.
	if err := register(w, "not-an-address"); err != nil {
		t.Fatalf("unmetered registration: %v", err)
	}
	acct := w.account()
	if _, err := w.c.depositAddress(ctx, acct); !errors.Is(err, ErrNoPayments) || !errors.Is(err, fnet.ErrUnsupported) {
		t.Fatalf("deposit address unmetered: %v", err)
	}
	if b, err := w.c.balance(ctx, acct); err != nil || b.Metered || !b.CanPlace {
		t.Fatalf("balance unmetered %+v, %v", b, err)
	}
	if err := w.c.canPlace(acct); err != nil {
		t.Fatalf("unmetered placement refused: %v", err)
	}
}

func TestPaymentsConfig(t *testing.T) {
	rpc := &wallet.RPCConfig{Host: "127.0.0.1:1"}
	for name, tc := range map[string]struct {
		p       Payments
		network string
		ok      bool
	}{
		"none":                {Payments{}, "", true},
		"rpc without wallet":  {Payments{RPC: rpc}, "regtest", false},
		"psbt without wallet": {Payments{PSBT: true}, "regtest", false},
		"metered no network":  {Payments{Passphrase: []byte("x"), RPC: rpc}, "", false},
		"bad network":         {Payments{Passphrase: []byte("x")}, "moonnet", false},
		"fee too high":        {Payments{Passphrase: []byte("x"), FeeBPS: 10_001}, "", false},
		"metered":             {Payments{Passphrase: []byte("x"), RPC: rpc}, "testnet", true},
		"unmetered":           {Payments{Passphrase: []byte("x")}, "", true},
	} {
		err := tc.p.validate(tc.network)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrConfig)) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if !sameNetwork("testnet", "testnet3") || sameNetwork("regtest", "simnet") {
		t.Fatal("sameNetwork")
	}
}

// A mediator on a named network without a wallet still refuses payout
// addresses of another network: the address is decoded, not only the name the
// node gives.
func TestRegisterChecksPayoutAddressWithoutWallet(t *testing.T) {
	w := newWorld(t, 0)
	w.c.cfg.Network = "regtest"
	if err := register(w, p2pkh(t, &chaincfg.MainNetParams, 3)); !errors.Is(err, fnet.ErrBadRequest) {
		t.Fatalf("mainnet payout address named as regtest: %v", err)
	}
	if err := register(w, "not an address"); !errors.Is(err, fnet.ErrBadRequest) {
		t.Fatalf("garbage payout address: %v", err)
	}
	if err := register(w, p2pkh(t, &chaincfg.RegressionNetParams, 4)); err != nil {
		t.Fatalf("regtest payout address: %v", err)
	}
}
