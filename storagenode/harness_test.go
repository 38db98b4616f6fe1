package storagenode_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/fincrypt/fincrypt/internal/testbin"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/quic-go/quic-go"

	"github.com/fincrypt/fincrypt/challenge"
	fnet "github.com/fincrypt/fincrypt/net"
	"github.com/fincrypt/fincrypt/storagenode"
)

// fincryptBin is the fincrypt binary built once for this package's tests;
// its directory also holds fixtures shared by benchmark runs.
var fincryptBin string

func TestMain(m *testing.M) {
	if dir := os.Getenv(benchHelperEnv); dir != "" {
		os.Exit(runBenchHelper(dir))
	}
	testbin.Main(m, &fincryptBin)
}

func payoutAddress(t testing.TB) string { return payoutOn(t, &chaincfg.SimNetParams) }

// payoutOn is a P2PKH address on the given network.
func payoutOn(t testing.TB, params *chaincfg.Params) string {
	a, err := btcutil.NewAddressPubKeyHash(bytes.Repeat([]byte{7}, 20), params)
	if err != nil {
		t.Fatal(err)
	}
	return a.EncodeAddress()
}

// mediator is a test double of the mediator: it accepts registrations and
// heartbeats, answers which pieces are live, signs tickets and dials nodes
// for challenges. It will be replaced by the real mediator.
type mediator struct {
	t  testing.TB
	id *fnet.Identity
	tr *fnet.Transport

	mu         sync.Mutex
	network    string // "" accepts any, as a mediator without payments
	policy     fnet.NodePolicy
	registered map[fnet.NodeID]*fnet.RegisterRequest
	heartbeats map[fnet.NodeID]int
	live       map[challenge.PieceID]bool
	liveAsked  int
	inbound    map[fnet.NodeID]*fnet.Conn
	offered    []string    // the network of every registration request, in order
	offeredAt  []time.Time // when each arrived
	regBusy    bool        // answer registrations with a transient error (CodeInternal)
}

func newMediatorAt(t testing.TB, id *fnet.Identity, hostport string) *mediator {
	tr, err := fnet.Listen(id, hostport, fnet.Config{})
	if err != nil {
		t.Fatal(err)
	}
	m := &mediator{t: t, id: id, tr: tr, registered: map[fnet.NodeID]*fnet.RegisterRequest{},
		heartbeats: map[fnet.NodeID]int{}, live: map[challenge.PieceID]bool{}, inbound: map[fnet.NodeID]*fnet.Conn{},
		policy: fnet.NodePolicy{HeartbeatInterval: 200 * time.Millisecond}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	// A real mediator keeps the connections nodes dial to it, to reach
	// nodes behind NAT; so does this double (Accept + ServeConn).
	go func() {
		defer close(done)
		for {
			c, err := tr.Accept(ctx)
			if err != nil {
				return
			}
			m.mu.Lock()
			m.inbound[c.Peer()] = c
			m.mu.Unlock()
			go tr.ServeConn(ctx, c, fnet.HandlerFunc(m.handle))
		}
	}()
	t.Cleanup(func() { cancel(); tr.Close(); <-done })
	return m
}

func newMediator(t testing.TB) *mediator {
	id, _ := fnet.GenerateIdentity()
	return newMediatorAt(t, id, "127.0.0.1:0")
}

func (m *mediator) handle(ctx context.Context, peer fnet.NodeID, s *quic.Stream) {
	req, err := fnet.ReadMessage(s)
	if err != nil {
		fnet.WriteMessage(s, fnet.NewErrorReply(err))
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var rep fnet.Message
	switch r := req.(type) {
	case *fnet.RegisterRequest:
		if r.Node != peer {
			rep = &fnet.ErrorReply{Code: fnet.CodeUnauthorized, Message: "node id is not the connection's"}
			break
		}
		m.offered = append(m.offered, r.Network)
		m.offeredAt = append(m.offeredAt, time.Now())
		if m.regBusy {
			rep = &fnet.ErrorReply{Code: fnet.CodeInternal, Message: "try again later"}
			break
		}
		if m.network != "" && r.Network != m.network { // as the real mediator answers
			rep = &fnet.ErrorReply{Code: fnet.CodeBadRequest,
				Message: fmt.Sprintf("bad request: node is paid on %q, this mediator on %q", r.Network, m.network)}
			break
		}
		m.registered[peer] = r
		rep = &fnet.RegisterReply{Policy: m.policy}
	case *fnet.Heartbeat:
		if m.registered[peer] == nil {
			rep = &fnet.ErrorReply{Code: fnet.CodeNotRegistered}
			break
		}
		m.heartbeats[peer]++
		rep = &fnet.HeartbeatReply{Policy: m.policy}
	case *fnet.LiveRequest:
		m.liveAsked++
		lr := &fnet.LiveReply{Live: make([]bool, len(r.Pieces))}
		for i, p := range r.Pieces {
			lr.Live[i] = m.live[p]
		}
		rep = lr
	default:
		rep = &fnet.ErrorReply{Code: fnet.CodeBadRequest, Message: "unexpected " + req.Type().String()}
	}
	fnet.WriteMessage(s, rep)
}

func (m *mediator) setPolicy(p fnet.NodePolicy) { m.mu.Lock(); m.policy = p; m.mu.Unlock() }
func (m *mediator) setLive(id challenge.PieceID, live bool) {
	m.mu.Lock()
	m.live[id] = live
	m.mu.Unlock()
}
func (m *mediator) registration(id fnet.NodeID) (*fnet.RegisterRequest, int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.registered[id], m.heartbeats[id]
}

// clientIdentity is the account the tests' client connections (dialNode)
// authenticate as; m.ticket issues tickets to it.
var clientIdentity = func() *fnet.Identity {
	id, err := fnet.NewIdentity(bytes.Repeat([]byte{0xc1}, 32))
	if err != nil {
		panic(err)
	}
	return id
}()

func (m *mediator) ticket(node fnet.NodeID, piece challenge.PieceID, op fnet.Op, size int64) fnet.SignedTicket {
	return m.ticketFor(fnet.AccountID(clientIdentity.ID()), node, piece, op, size)
}

func (m *mediator) ticketFor(acct fnet.AccountID, node fnet.NodeID, piece challenge.PieceID, op fnet.Op, size int64) fnet.SignedTicket {
	return fnet.SignTicket(m.id, fnet.Ticket{Node: node, Piece: piece, Op: op, Size: size,
		Account: acct, Expires: time.Now().Add(time.Minute)})
}

// node is a storage node running as a child process.
type node struct {
	t    testing.TB
	dir  string
	cmd  *exec.Cmd
	addr fnet.Address
	log  string
	done chan struct{}
}

type nodeOpts struct {
	dir      string // reuse (restart); default a new temp dir
	capacity string // default 1GiB
	mediator string // default med's address
	network  string // --network; default simnet, "-" for none
	payout   string // --payout-address; default payoutAddress(t)
	extra    []string
}

func startNode(t testing.TB, med *mediator, o nodeOpts) *node {
	t.Helper()
	if o.dir == "" {
		o.dir = t.TempDir()
	}
	if o.capacity == "" {
		o.capacity = "1GiB"
	}
	if o.mediator == "" {
		o.mediator = med.tr.Address().String()
	}
	if o.network == "" {
		o.network = "simnet"
	}
	if o.payout == "" {
		o.payout = payoutAddress(t)
	}
	os.Remove(filepath.Join(o.dir, storagenode.AddressFile))
	logPath := filepath.Join(o.dir, fmt.Sprintf("node-%d.log", time.Now().UnixNano()))
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"--debug", "storage", "--dir", o.dir, "--listen", "127.0.0.1:0",
		"--mediator", o.mediator, "--capacity", o.capacity, "--price", "1500", "--payout-address", o.payout}
	if o.network != "-" {
		args = append(args, "--network", o.network)
	}
	args = append(args, o.extra...)
	cmd := exec.Command(fincryptBin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n := &node{t: t, dir: o.dir, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { cmd.Wait(); logf.Close(); close(n.done) }()
	t.Cleanup(func() {
		n.kill()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("node log %s:\n%s", logPath, tail(string(b), 4000))
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		b, err := os.ReadFile(filepath.Join(o.dir, storagenode.AddressFile))
		if err == nil {
			n.addr, err = fnet.ParseAddress(strings.TrimSpace(string(b)))
			if err != nil {
				t.Fatalf("address file: %v", err)
			}
			return n
		}
		select {
		case <-n.done:
			if _, err := os.Stat(filepath.Join(o.dir, storagenode.AddressFile)); err == nil {
				continue // it listened, then exited: the caller looks at why
			}
			b, _ := os.ReadFile(logPath)
			t.Fatalf("node exited before listening:\n%s", b)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("node did not write its address")
		}
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// kill sends SIGKILL and waits.
func (n *node) kill() {
	n.cmd.Process.Kill()
	<-n.done
}

// dialNode dials a node as the client clientIdentity.
func dialNode(t testing.TB, addr fnet.Address) *fnet.Conn {
	t.Helper()
	return dialAs(t, clientIdentity, addr)
}

// dialAs dials a node as id.
func dialAs(t testing.TB, id *fnet.Identity, addr fnet.Address) *fnet.Conn {
	t.Helper()
	tr, err := fnet.NewDialer(id, fnet.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return dialWith(t, tr, addr)
}

func dialWith(t testing.TB, tr *fnet.Transport, addr fnet.Address) *fnet.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := tr.Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// piece makes seeded random bytes and their id.
func piece(t testing.TB, seed uint64, size int) ([]byte, challenge.PieceID) {
	t.Helper()
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16)})
	b := make([]byte, size)
	r.Read(b)
	id, err := challenge.ComputeID(b)
	if err != nil {
		t.Fatal(err)
	}
	return b, id
}

func put(ctx context.Context, c *fnet.Conn, med *mediator, node fnet.NodeID, id challenge.PieceID, data []byte) error {
	return c.Put(ctx, &fnet.PutRequest{Piece: id, Ticket: med.ticket(node, id, fnet.OpPut, int64(len(data)))}, bytes.NewReader(data))
}

func get(ctx context.Context, c *fnet.Conn, med *mediator, node fnet.NodeID, id challenge.PieceID, size int64, off, length uint64) ([]byte, error) {
	r, _, err := c.Get(ctx, &fnet.GetRequest{Piece: id, Ticket: med.ticket(node, id, fnet.OpGet, size), Offset: off, Length: length})
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

func stat(ctx context.Context, c *fnet.Conn, med *mediator, node fnet.NodeID, id challenge.PieceID) (*fnet.StatReply, error) {
	return fnet.CallFor[*fnet.StatReply](ctx, c, &fnet.StatRequest{Piece: id, Ticket: med.ticket(node, id, fnet.OpStat, 0)})
}

func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func isErr(err, target error) bool { return errors.Is(err, target) }

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
