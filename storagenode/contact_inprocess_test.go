package storagenode_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/chaincfg"

	"github.com/fincrypt/fincrypt/challenge"
	fnet "github.com/fincrypt/fincrypt/net"
	"github.com/fincrypt/fincrypt/storagenode"
)

// runPeer runs an in-process node against med; the returned channel gets
// Run's result.
func runPeer(t *testing.T, med *mediator, network, payout string) (*storagenode.Peer, <-chan error) {
	t.Helper()
	ident, _ := fnet.GenerateIdentity()
	peer, err := storagenode.New(quietLog(), ident, storagenode.Config{Dir: t.TempDir(), Listen: "127.0.0.1:0",
		Mediator: med.tr.Address(), Capacity: 1 << 30, Payout: payout, Network: network, Price: 1,
		RetryMin: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond, RequestTimeout: 2 * time.Second, ScrubRate: -1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	exited := make(chan struct{})
	go func() { done <- peer.Run(ctx); close(exited) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			t.Error("node still running 30 s after its context ended")
		}
		peer.Close()
	})
	return peer, done
}

func offered(med *mediator) []string {
	med.mu.Lock()
	defer med.mu.Unlock()
	return slices.Clone(med.offered)
}

// Without a configured network the node offers each network its payout
// address is valid on, in order, until the mediator accepts one, and
// offers the accepted one first when it registers again (the mediator
// forgot it): testnet3 refused once, never again.
func TestInProcessContactLearnsAndKeepsNetwork(t *testing.T) {
	t.Parallel()
	med := newMediator(t)
	med.mu.Lock()
	med.network = "regtest"
	med.policy = fnet.NodePolicy{HeartbeatInterval: 20 * time.Millisecond}
	med.mu.Unlock()
	peer, _ := runPeer(t, med, "", payoutOn(t, &chaincfg.TestNet3Params))
	id := peer.Address().ID
	waitFor(t, "registration and a heartbeat", 20*time.Second, func() bool {
		_, hb := med.registration(id)
		return hb >= 1
	})
	if got := offered(med); !slices.Equal(got, []string{"testnet3", "regtest"}) {
		t.Fatalf("networks offered %v, want testnet3 then regtest", got)
	}
	if p, ok := peer.Contact.Policy(); !ok || p.HeartbeatInterval != 20*time.Millisecond {
		t.Fatalf("policy %+v, registered %v; want the mediator's, registered", p, ok)
	}
	med.mu.Lock()
	delete(med.registered, id)
	med.mu.Unlock()
	waitFor(t, "registration again", 20*time.Second, func() bool {
		r, _ := med.registration(id)
		return r != nil
	})
	if got := offered(med); !slices.Equal(got, []string{"testnet3", "regtest", "regtest"}) {
		t.Fatalf("networks offered %v, want testnet3, regtest, then regtest again first", got)
	}
}

// A registration refused for good on every candidate network ends the
// node's Run with ErrRegistrationRefused naming the refusals; the node is
// not registered.
func TestInProcessContactRefusedForGood(t *testing.T) {
	t.Parallel()
	med := newMediator(t)
	med.mu.Lock()
	med.network = "mainnet"
	med.mu.Unlock()
	peer, done := runPeer(t, med, "", payoutOn(t, &chaincfg.TestNet3Params))
	select {
	case err := <-done:
		if !errors.Is(err, storagenode.ErrRegistrationRefused) || !strings.Contains(err.Error(), `this mediator on "mainnet"`) {
			t.Fatalf("Run: %v, want the registration refused with the mediator's reason", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("node still running 30 s after its registration was refused on every network")
	}
	if got := offered(med); !slices.Equal(got, []string{"testnet3", "regtest"}) {
		t.Fatalf("networks offered %v, want testnet3 then regtest, once each", got)
	}
	if r, _ := med.registration(peer.Address().ID); r != nil {
		t.Fatal("registered anyway")
	}
	if _, ok := peer.Contact.Policy(); ok {
		t.Fatal("the contact reports itself registered")
	}
}

// A policy without a heartbeat interval gets the default (a minute), not
// a heartbeat loop without pause.
func TestInProcessContactDefaultHeartbeat(t *testing.T) {
	t.Parallel()
	med := newMediator(t)
	med.setPolicy(fnet.NodePolicy{GracePeriod: time.Hour})
	peer, _ := runPeer(t, med, "simnet", payoutAddress(t))
	id := peer.Address().ID
	waitFor(t, "registration", 20*time.Second, func() bool {
		_, ok := peer.Contact.Policy()
		return ok
	})
	time.Sleep(300 * time.Millisecond)
	if _, hb := med.registration(id); hb != 0 {
		t.Fatalf("%d heartbeats within 300 ms of registering, with the default interval of a minute", hb)
	}
	if p, _ := peer.Contact.Policy(); p.HeartbeatInterval != storagenode.DefaultPolicy.HeartbeatInterval || p.GracePeriod != time.Hour {
		t.Fatalf("policy %+v, want the mediator's with the default heartbeat interval", p)
	}
}

// A node whose mediator went away no longer calls itself registered, and
// its calls to the mediator fail as not registered (the collector and the
// scrubber's reports wait) until it registers again.
func TestInProcessContactLosesMediator(t *testing.T) {
	t.Parallel()
	med := newMediator(t)
	med.setPolicy(fnet.NodePolicy{HeartbeatInterval: 50 * time.Millisecond})
	peer, _ := runPeer(t, med, "simnet", payoutAddress(t))
	waitFor(t, "registration", 20*time.Second, func() bool {
		_, ok := peer.Contact.Policy()
		return ok
	})
	med.tr.Close()
	waitFor(t, "the contact to notice the mediator is gone", 20*time.Second, func() bool {
		_, ok := peer.Contact.Policy()
		return !ok
	})
	if _, err := peer.Contact.Call(context.Background(), &fnet.LiveRequest{}); !errors.Is(err, fnet.ErrNotRegistered) {
		t.Fatalf("a call to a mediator that went away: %v, want not registered", err)
	}
}

// A registration that fails for a reason retrying may fix is retried on a
// new connection after a pause that doubles up to RetryMax: with 200 ms
// doubling to 400 ms, the second attempt comes at least 200 ms after the
// first and each later one at least 400 ms after the one before, not in a
// loop without pause. (Lower bounds on the gaps: a slow machine only
// widens them. A count of attempts in a fixed 1.5 s was at least 2 only
// while a dial and a registration took under 1.3 s.)
func TestInProcessContactBacksOff(t *testing.T) {
	t.Parallel()
	med := newMediator(t)
	med.mu.Lock()
	med.regBusy = true
	med.mu.Unlock()
	ident, _ := fnet.GenerateIdentity()
	peer, err := storagenode.New(quietLog(), ident, storagenode.Config{Dir: t.TempDir(), Listen: "127.0.0.1:0",
		Mediator: med.tr.Address(), Capacity: 1 << 30, Payout: payoutAddress(t), Network: "simnet", Price: 1,
		RetryMin: 200 * time.Millisecond, RetryMax: 400 * time.Millisecond, RequestTimeout: 2 * time.Second, ScrubRate: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- peer.Contact.Run(ctx) }()
	const attempts = 4
	waitFor(t, "four registration attempts", 30*time.Second, func() bool { return len(offered(med)) >= attempts })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run with a mediator failing registrations: %v, want retries until the context ends", err)
	}
	med.mu.Lock()
	at := slices.Clone(med.offeredAt)
	med.mu.Unlock()
	for i := 1; i < attempts; i++ {
		pause := 400 * time.Millisecond
		if i == 1 {
			pause = 200 * time.Millisecond
		}
		if gap := at[i].Sub(at[i-1]); gap < pause {
			t.Fatalf("registration attempt %d came %v after the one before, want at least the pause of %v", i+1, gap, pause)
		}
	}
	if _, ok := peer.Contact.Policy(); ok {
		t.Fatal("registered though every registration failed")
	}
}

// A node started while its mediator is down keeps dialling (with backoff)
// and registers once the mediator is up; its Run does not end on the
// first failed dial.
func TestInProcessContactWaitsForTheMediator(t *testing.T) {
	t.Parallel()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hp := pc.LocalAddr().String()
	// The port stays bound, by a socket that never answers (the node's
	// dials fail: nobody there speaks QUIC), until the mediator binds it:
	// left free for the whole wait, another socket on this machine could
	// take it meanwhile and the mediator could not start there.
	defer pc.Close()
	medID, _ := fnet.GenerateIdentity()
	ident, _ := fnet.GenerateIdentity()
	peer, err := storagenode.New(quietLog(), ident, storagenode.Config{Dir: t.TempDir(), Listen: "127.0.0.1:0",
		Mediator: fnet.Address{ID: medID.ID(), HostPort: hp}, Capacity: 1 << 30, Payout: payoutAddress(t), Network: "simnet",
		Price: 1, RetryMin: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond, RequestTimeout: 300 * time.Millisecond, ScrubRate: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- peer.Contact.Run(ctx) }()
	defer func() {
		cancel()
		select { // Run's result may have been taken below
		case <-done:
		case <-time.After(30 * time.Second):
		}
	}()
	time.Sleep(700 * time.Millisecond) // dials fail: nobody answers
	select {
	case err := <-done:
		t.Fatalf("Run ended while the mediator was down: %v", err)
	default:
	}
	pc.Close()
	med := newMediatorAt(t, medID, hp)
	waitFor(t, "registration once the mediator is up", 20*time.Second, func() bool {
		r, _ := med.registration(ident.ID())
		return r != nil
	})
}

// The mediator can challenge a node over the connection the node dialled
// to register (a node behind NAT): the node serves its endpoint there.
func TestInProcessChallengeOverTheNodesConnection(t *testing.T) {
	t.Parallel()
	med := newMediator(t)
	peer, _ := runPeer(t, med, "simnet", payoutAddress(t))
	data, id := piece(t, 5, 3000)
	if err := peer.Store.Put(context.Background(), id, int64(len(data)), fnet.AccountID{1}, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	node := peer.Address().ID
	var in *fnet.Conn
	waitFor(t, "the node to register", 20*time.Second, func() bool {
		med.mu.Lock()
		defer med.mu.Unlock()
		in = med.inbound[node]
		return in != nil && med.registered[node] != nil
	})
	req := &fnet.ChallengeRequest{Nonce: challenge.Nonce{4, 5, 6}, Openings: 4, Pieces: []challenge.PieceID{id}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rep, err := fnet.CallFor[*fnet.ChallengeResponse](ctx, in, req)
	if err != nil {
		t.Fatalf("challenge over the node's own connection: %v", err)
	}
	res, err := fnet.CheckChallenge(req, rep, []int64{int64(len(data))})
	if err != nil || res[0] != nil {
		t.Fatalf("challenge over the node's own connection: %v %v", res, err)
	}
}

// A node that lost its mediator dials it again and registers once it is
// back (a mediator restart): losing it once does not end the contact.
func TestInProcessContactRegistersAgainAfterLosingTheMediator(t *testing.T) {
	t.Parallel()
	med := newMediator(t)
	med.setPolicy(fnet.NodePolicy{HeartbeatInterval: 50 * time.Millisecond})
	hp := med.tr.Address().HostPort
	peer, _ := runPeer(t, med, "simnet", payoutAddress(t))
	waitFor(t, "registration", 20*time.Second, func() bool {
		_, ok := peer.Contact.Policy()
		return ok
	})
	med.tr.Close()
	waitFor(t, "the contact to notice the mediator is gone", 20*time.Second, func() bool {
		_, ok := peer.Contact.Policy()
		return !ok
	})
	back := newMediatorAt(t, med.id, hp)
	waitFor(t, "registration with the mediator back", 20*time.Second, func() bool {
		r, _ := back.registration(peer.Address().ID)
		return r != nil
	})
}

// Remembering the accepted network moves it to the front and keeps each
// candidate once: a node that learnt regtest and is then refused on every
// network offers regtest and testnet3 once each before it gives up.
func TestInProcessContactOffersEachNetworkOnce(t *testing.T) {
	t.Parallel()
	med := newMediator(t)
	med.mu.Lock()
	med.network = "regtest"
	med.policy = fnet.NodePolicy{HeartbeatInterval: 20 * time.Millisecond}
	med.mu.Unlock()
	peer, done := runPeer(t, med, "", payoutOn(t, &chaincfg.TestNet3Params))
	id := peer.Address().ID
	waitFor(t, "registration", 20*time.Second, func() bool {
		r, _ := med.registration(id)
		return r != nil
	})
	med.mu.Lock()
	med.network = "mainnet"
	delete(med.registered, id)
	med.mu.Unlock()
	select {
	case err := <-done:
		if !errors.Is(err, storagenode.ErrRegistrationRefused) {
			t.Fatalf("Run: %v, want the registration refused", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("node still running 30 s after every network was refused")
	}
	if got := offered(med); !slices.Equal(got, []string{"testnet3", "regtest", "regtest", "testnet3"}) {
		t.Fatalf("networks offered %v, want testnet3 and regtest, then regtest and testnet3 once each", got)
	}
}
