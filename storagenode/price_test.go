package storagenode_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/chaincfg"

	realmediator "github.com/fincrypt/fincrypt/mediator"
	fnet "github.com/fincrypt/fincrypt/net"
	"github.com/fincrypt/fincrypt/storagenode"
)

// A node asking more than the mediator's --max-price is refused at
// registration over real QUIC: Run stops with ErrRegistrationRefused and a
// message that names the limit and the price, and the mediator lists no
// such node. A node at the limit registers.
func TestRealMediatorRefusesPriceAboveMax(t *testing.T) {
	t.Parallel()
	const limit = 5000
	mident, _ := fnet.GenerateIdentity()
	med, err := realmediator.New(quietLog(), mident, realmediator.Config{Dir: t.TempDir(), Listen: "127.0.0.1:0",
		Network: "simnet", MaxPrice: limit})
	if err != nil {
		t.Fatal(err)
	}
	mctx, mcancel := context.WithCancel(context.Background())
	mdone := make(chan error, 1)
	go func() { mdone <- med.Run(mctx) }()
	t.Cleanup(func() { mcancel(); <-mdone; med.Close() })

	node := func(price uint64) *storagenode.Peer {
		ident, _ := fnet.GenerateIdentity()
		p, err := storagenode.New(quietLog(), ident, storagenode.Config{Dir: t.TempDir(), Listen: "127.0.0.1:0",
			Mediator: med.Address(), Capacity: 1 << 30, Price: price, Payout: payoutOn(t, &chaincfg.SimNetParams),
			Network: "simnet", RetryMin: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		return p
	}
	greedy := node(limit + 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = greedy.Run(ctx)
	if !errors.Is(err, storagenode.ErrRegistrationRefused) || ctx.Err() != nil {
		t.Fatalf("Run: %v (ctx %v)", err, ctx.Err())
	}
	for _, words := range []string{"5001", "limit of 5000", "--max-price", "--price"} {
		if !strings.Contains(err.Error(), words) {
			t.Errorf("refusal %q does not say %q", err, words)
		}
	}

	fair := node(limit)
	ctx2, cancel2 := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fair.Run(ctx2) }()
	waitFor(t, "registration at the limit", 20*time.Second, func() bool { _, ok := fair.Contact.Policy(); return ok })
	cancel2()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	st, err := med.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Nodes) != 1 || st.Nodes[0].ID != fair.Identity.ID().String() || st.Nodes[0].Price != limit {
		t.Fatalf("registered nodes %+v, want only the one at the limit", st.Nodes)
	}
}
