// Package testplanet runs a whole Fincrypt network in one test process: a
// real mediator, real storage nodes (storagenode.New) and a test client,
// on loopback with a fast period, each node on its own 127.x.y.1 (its own
// /24: NodeIP), with the faults that tests inject (a
// piece deleted or flipped on a node's disk, a node stopped, restarted or
// killed for good, the mediator restarted).
//
//	testplanet.Run(t, testplanet.Config{StorageNodes: 5}, func(t *testing.T, p *testplanet.Planet) {
//		seg, _ := p.Client.Store(ctx, p.Scheme(), data)
//		...
//	})
package testplanet

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"

	"github.com/fincrypt/fincrypt/challenge"
	"github.com/fincrypt/fincrypt/erasure"
	"github.com/fincrypt/fincrypt/mediator"
	fnet "github.com/fincrypt/fincrypt/net"
	"github.com/fincrypt/fincrypt/storagenode"
)

// Config shapes a planet; zero fields take defaults.
type Config struct {
	// StorageNodes is the number of nodes (default 5).
	StorageNodes int
	// NodeCapacity is each node's capacity (default 64 MiB).
	NodeCapacity int64
	// Prices[i] is node i's price (default 1000+i).
	Prices []uint64
	// Network is the nodes' payout network (default simnet); each node gets
	// its own payout address on it (PayoutAddress).
	Network string
	// Reconfigure edits the mediator's configuration after the planet's
	// fast defaults (period 1s, heartbeat 100ms, offline after 3s, repair
	// threshold N).
	Reconfigure func(*mediator.Config)
	// Logs shows the daemons' debug logs (also FINCRYPT_TESTPLANET_LOGS=1);
	// else only warnings and errors, with -v.
	Logs bool
	// Relays puts a UDP relay in front of every node (its advertised
	// address), so that tests can freeze a node (Freeze): it then looks hung
	// rather than stopped.
	Relays bool
	// NodeProcesses runs each storage node as a process of its own (this
	// test binary again, see nodeproc.go), as users run them, rather than
	// in the test's process, where the nodes share the client's garbage
	// collector and scheduler. Such a node has no Peer; Pid names it.
	NodeProcesses bool
	// NodeCPUProfile, with NodeProcesses, makes each node's process write
	// a CPU profile (runtime/pprof) of its whole run, from its start to
	// its stop, to NodeCPUProfile + "." + the node's directory name
	// ("node0", ...): what benchmarks profile the nodes with.
	NodeCPUProfile string
}

// Planet is a running network.
type Planet struct {
	t        testing.TB
	cfg      Config
	dir      string
	log      *slog.Logger
	Mediator *Mediator
	Nodes    []*Node
	// Client is a registered test account talking to the mediator.
	Client *mediator.Client
}

// Mediator is the planet's mediator.
type Mediator struct {
	Peer    *mediator.Peer
	Dir     string
	Config  mediator.Config
	ident   *fnet.Identity
	address fnet.Address
	cancel  context.CancelFunc
	done    chan error
	held    net.PacketConn // its port while stopped (holdPort)
}

// Node is one storage node.
type Node struct {
	Index    int
	Peer     *storagenode.Peer // nil while stopped
	Dir      string
	Identity *fnet.Identity
	Config   storagenode.Config
	cancel   context.CancelFunc
	done     chan error
	relay    *relay         // with Config.Relays
	proc     *exec.Cmd      // with Config.NodeProcesses, while running
	held     net.PacketConn // its port while stopped in the test's process (holdPort)
}

// ID is the node's id.
func (n *Node) ID() fnet.NodeID { return n.Identity.ID() }

// Running reports whether the node is started.
func (n *Node) Running() bool { return n.Peer != nil || n.proc != nil }

// Run starts a planet, runs fn and stops everything.
func Run(t *testing.T, cfg Config, fn func(t *testing.T, p *Planet)) {
	t.Helper()
	p := New(t, cfg)
	fn(t, p)
}

// New starts a planet whose cleanup stops it.
func New(t testing.TB, cfg Config) *Planet {
	t.Helper()
	if cfg.StorageNodes == 0 {
		cfg.StorageNodes = 5
	}
	if cfg.NodeCapacity == 0 {
		cfg.NodeCapacity = 64 << 20
	}
	if cfg.Network == "" {
		cfg.Network = "simnet"
	}
	if os.Getenv("FINCRYPT_TESTPLANET_LOGS") != "" {
		cfg.Logs = true
	}
	level := slog.LevelWarn
	if cfg.Logs {
		level = slog.LevelDebug
	}
	var w io.Writer = io.Discard
	if testing.Verbose() || cfg.Logs {
		w = os.Stderr
	}
	p := &Planet{t: t, cfg: cfg, dir: t.TempDir(), log: slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))}
	t.Cleanup(p.stopAll)
	t.Cleanup(p.reportNodesOnFailure) // runs first: the planet still runs

	mcfg := mediator.Config{
		Dir: filepath.Join(p.dir, "mediator"), Listen: "127.0.0.1:0",
		// A node is placed on while heard from within 2 s (20 heartbeats):
		// with 1 s, nodes stalled under -race on a loaded machine dropped
		// out and uploads were refused ("not enough healthy storage nodes").
		Period: time.Second, HeartbeatInterval: 100 * time.Millisecond, OnlineWindow: 2 * time.Second,
		OfflineAfter: 3 * time.Second, ChallengeTimeout: time.Second,
		ChallengeSample: 32, ChallengeOpenings: 16, TicketTTL: time.Minute, GracePeriod: 2 * time.Minute,
		GCInterval: time.Minute,
	}
	mcfg.Scheme = mediator.DefaultScheme
	mcfg.RepairThreshold = mcfg.Scheme.N
	// The planet's mediator accepts the prices its nodes ask.
	for _, price := range cfg.Prices {
		mcfg.MaxPrice = max(mcfg.MaxPrice, price)
	}
	if cfg.Reconfigure != nil {
		cfg.Reconfigure(&mcfg)
	}
	ident, err := fnet.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	p.Mediator = &Mediator{Dir: mcfg.Dir, Config: mcfg, ident: ident}
	p.startMediator()
	// Later restarts keep the port, which the nodes have pinned.
	p.Mediator.Config.Listen = p.Mediator.address.HostPort

	for i := 0; i < cfg.StorageNodes; i++ {
		p.AddNode()
	}
	p.WaitFor("every node online", 10*time.Second, func(st *mediator.Status) bool {
		return online(st) == cfg.StorageNodes
	})

	p.Client = p.NewClient()
	return p
}

// NewClient makes another registered account with its own client, closed
// at cleanup.
func (p *Planet) NewClient() *mediator.Client {
	p.t.Helper()
	cid, err := fnet.GenerateIdentity()
	if err != nil {
		p.t.Fatal(err)
	}
	c, err := mediator.NewClient(cid, p.Mediator.address, nil)
	if err != nil {
		p.t.Fatal(err)
	}
	p.t.Cleanup(func() { c.Close() })
	if _, err := c.RegisterAccount(p.Context()); err != nil {
		p.t.Fatal(err)
	}
	return c
}

func online(st *mediator.Status) int {
	n := 0
	for _, node := range st.Nodes {
		if node.Online {
			n++
		}
	}
	return n
}

// Context is a context for one step of a test (30 s).
// reportNodesOnFailure logs what the mediator knows of every node when the
// test failed: a refusal such as "not enough healthy storage nodes ... 3
// qualify" then says which node dropped out and why (offline since when,
// disqualified, out of space).
func (p *Planet) reportNodesOnFailure() {
	if !p.t.Failed() || p.Mediator == nil || p.Mediator.Peer == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := p.Mediator.Peer.Status(ctx)
	if err != nil {
		p.t.Logf("testplanet: the mediator's status after the failure: %v", err)
		return
	}
	now := time.Now()
	for _, n := range st.Nodes {
		i := -1
		if id, err := fnet.ParseNodeID(n.ID); err == nil {
			i = p.NodeIndex(id)
		}
		p.t.Logf("testplanet: node %d %.12s: online %v (last seen %v ago), disqualified %v, reputation %.3f, passed %d failed %d, vetted %v, used %d of %d, contracted %d",
			i, n.ID, n.Online, now.Sub(n.LastSeen).Round(time.Millisecond), n.Disqualified, n.Reputation, n.Passed, n.Failed, n.Vetted, n.Used, n.Capacity, n.Contracted)
	}
}

func (p *Planet) Context() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	p.t.Cleanup(cancel)
	return ctx
}

// Scheme is the mediator's default scheme.
func (p *Planet) Scheme() erasure.Scheme { return p.Mediator.Config.Scheme }

func (p *Planet) startMediator() {
	m := p.Mediator
	release(&m.held)
	peer, err := mediator.New(p.log.With("role", "mediator"), m.ident, m.Config)
	if err != nil {
		p.t.Fatalf("start mediator: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m.Peer, m.cancel, m.done = peer, cancel, make(chan error, 1)
	m.address = peer.Address()
	go func() { m.done <- peer.Run(ctx) }()
}

// StopMediator stops the mediator (its state stays on disk).
func (p *Planet) StopMediator() {
	m := p.Mediator
	if m.Peer == nil {
		return
	}
	m.cancel()
	if err := <-m.done; err != nil {
		p.t.Errorf("mediator stopped with %v", err)
	}
	m.Peer.Close()
	m.Peer = nil
	m.held = holdPort(m.address.HostPort)
}

// RestartMediator stops the mediator and starts it again on the same
// directory and address.
func (p *Planet) RestartMediator() {
	p.StopMediator()
	p.startMediator()
}

// PayoutAddress is node i's payout address on the planet's network: a
// P2PKH address of 20 bytes i+1 (nobody holds its key; tests check what
// was paid to it).
func (p *Planet) PayoutAddress(i int) string {
	params := &chaincfg.SimNetParams
	switch p.cfg.Network {
	case "regtest":
		params = &chaincfg.RegressionNetParams
	case "testnet", "testnet3":
		params = &chaincfg.TestNet3Params
	case "mainnet":
		params = &chaincfg.MainNetParams
	}
	a, err := btcutil.NewAddressPubKeyHash(bytes.Repeat([]byte{byte(i + 1)}, 20), params)
	if err != nil {
		panic(err)
	}
	return a.EncodeAddress()
}

// NodeIP is the address node i listens on by default: 127.0.i+1.1, so
// that every node is on its own /24 as if on its own network (on Linux all
// of 127.0.0.0/8 is loopback). The mediator listens on 127.0.0.1.
func NodeIP(i int) string { return fmt.Sprintf("127.%d.%d.1", (i+1)/256, (i+1)%256) }

// NodeOptions shapes a node started with AddNodeWith; zero fields take the
// planet's defaults.
type NodeOptions struct {
	// IP is the address to listen on (default NodeIP(i)).
	IP string
	// Host is the name to advertise (default IP): another name for the
	// same address, as an operator of several nodes would use.
	Host string
	// Price and Capacity, or the planet's.
	Price    uint64
	Capacity int64
	// Payout is the payout address (default PayoutAddress(i)).
	Payout string
}

// AddNode starts one more storage node, on an address of its own.
func (p *Planet) AddNode() *Node { return p.AddNodeWith(NodeOptions{}) }

// AddNodeWith starts one more storage node shaped by o.
func (p *Planet) AddNodeWith(o NodeOptions) *Node {
	i := len(p.Nodes)
	dir := filepath.Join(p.dir, fmt.Sprintf("node%d", i))
	var ident *fnet.Identity
	var err error
	if p.cfg.NodeProcesses {
		ident, err = fnet.LoadOrCreateIdentity(dir) // which the process loads
	} else {
		ident, err = fnet.GenerateIdentity()
	}
	if err != nil {
		p.t.Fatal(err)
	}
	price := uint64(1000 + i)
	if i < len(p.cfg.Prices) {
		price = p.cfg.Prices[i]
	}
	if o.Price != 0 {
		price = o.Price
	}
	if o.IP == "" {
		o.IP = NodeIP(i)
	}
	if o.Capacity == 0 {
		o.Capacity = p.cfg.NodeCapacity
	}
	if o.Payout == "" {
		o.Payout = p.PayoutAddress(i)
	}
	n := &Node{Index: i, Dir: dir, Identity: ident}
	n.Config = storagenode.Config{
		Dir: n.Dir, Listen: net.JoinHostPort(o.IP, "0"), Mediator: p.Mediator.address, Capacity: o.Capacity,
		Price: price, Payout: o.Payout, Network: p.cfg.Network,
		RetryMin: 50 * time.Millisecond, RetryMax: 500 * time.Millisecond, RequestTimeout: 5 * time.Second,
		TicketTTL: p.Mediator.Config.TicketTTL, // single-use put tickets: the mediator's lifetime
	}
	switch {
	case p.cfg.Relays:
		if n.relay, err = newRelay(o.IP); err != nil {
			p.t.Fatal(err)
		}
		p.t.Cleanup(n.relay.Close)
		_, port, _ := net.SplitHostPort(n.relay.Addr())
		n.Config.Advertise = net.JoinHostPort(cmp.Or(o.Host, o.IP), port)
	case o.Host != "" || p.cfg.NodeProcesses:
		// The port must be known to advertise it under another name.
		port, err := freePort(o.IP)
		if err != nil {
			p.t.Fatal(err)
		}
		n.Config.Listen = net.JoinHostPort(o.IP, port)
		n.Config.Advertise = net.JoinHostPort(cmp.Or(o.Host, o.IP), port)
	}
	p.Nodes = append(p.Nodes, n)
	p.StartNode(i)
	if n.Peer != nil {
		n.Config.Listen = n.Peer.Transport.Addr().String() // restarts keep the port
	}
	if n.relay != nil {
		if err := n.relay.setTarget(n.Config.Listen); err != nil {
			p.t.Fatal(err)
		}
	}
	return n
}

// Freeze makes node i look hung (true) or brings it back (false): its
// relay drops every datagram, so open connections stay open and go
// silent. It needs Config.Relays.
func (p *Planet) Freeze(i int, frozen bool) {
	r := p.Nodes[i].relay
	if r == nil {
		p.t.Fatal("Freeze needs testplanet.Config{Relays: true}")
	}
	r.frozen.Store(frozen)
}

// StartNode starts a stopped node on its directory and address.
func (p *Planet) StartNode(i int) {
	n := p.Nodes[i]
	if n.Running() {
		return
	}
	if p.cfg.NodeProcesses {
		if err := p.startNodeProcess(n); err != nil {
			p.t.Fatalf("start node %d: %v", i, err)
		}
		return
	}
	release(&n.held)
	peer, err := storagenode.New(p.log.With("role", "node", "node", i), n.Identity, n.Config)
	if err != nil {
		p.t.Fatalf("start node %d: %v", i, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.Peer, n.cancel, n.done = peer, cancel, make(chan error, 1)
	go func() { n.done <- peer.Run(ctx) }()
}

// StopNode stops a node; its pieces stay on its disk.
func (p *Planet) StopNode(i int) {
	n := p.Nodes[i]
	if n.proc != nil {
		p.stopNodeProcess(n)
		return
	}
	if n.Peer == nil {
		return
	}
	n.cancel()
	if err := <-n.done; err != nil {
		p.t.Logf("node %d stopped with %v", i, err)
	}
	n.Peer.Close()
	n.Peer = nil
	n.held = holdPort(n.Config.Listen)
}

// NodeIndex returns the index of the node with id, or -1.
func (p *Planet) NodeIndex(id fnet.NodeID) int {
	for i, n := range p.Nodes {
		if n.ID() == id {
			return i
		}
	}
	return -1
}

// PieceFile is where node i keeps a piece (docs/FORMAT.md §4): the
// piece's bytes start after a 64-byte header.
func (p *Planet) PieceFile(i int, piece challenge.PieceID) string {
	h := piece.String()
	return filepath.Join(p.Nodes[i].Dir, "pieces", h[:2], h+".piece")
}

// pieceHeaderSize is the size of a piece file's header.
const pieceHeaderSize = 64

// FlipByte flips one bit of byte off of a piece on node i's disk.
func (p *Planet) FlipByte(i int, piece challenge.PieceID, off int64) {
	f, err := os.OpenFile(p.PieceFile(i, piece), os.O_RDWR, 0)
	if err != nil {
		p.t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, pieceHeaderSize+off); err != nil {
		p.t.Fatal(err)
	}
	b[0] ^= 0x10
	if _, err := f.WriteAt(b, pieceHeaderSize+off); err != nil {
		p.t.Fatal(err)
	}
}

// DeletePiece removes a piece from node i behind the mediator's back.
func (p *Planet) DeletePiece(i int, piece challenge.PieceID) {
	n := p.Nodes[i]
	if n.Peer != nil {
		if err := n.Peer.Store.Delete(piece); err != nil {
			p.t.Fatal(err)
		}
		return
	}
	if err := os.Remove(p.PieceFile(i, piece)); err != nil {
		p.t.Fatal(err)
	}
}

// HasPiece reports whether node i's disk holds a piece file.
func (p *Planet) HasPiece(i int, piece challenge.PieceID) bool {
	_, err := os.Stat(p.PieceFile(i, piece))
	return err == nil
}

// Status is the mediator's status.
func (p *Planet) Status() *mediator.Status {
	st, err := mediator.ReadStatus(p.Context(), p.Mediator.Dir)
	if err != nil {
		p.t.Fatal(err)
	}
	return st
}

// Segment returns the mediator's view of a contract.
func (p *Planet) Segment(id fnet.SegmentID) *mediator.Segment {
	seg, err := p.Mediator.Peer.Store.GetSegment(p.Context(), mediator.SegmentID(id))
	if err != nil {
		p.t.Fatal(err)
	}
	return seg
}

// WaitFor polls the mediator's status until cond holds or timeout passes.
func (p *Planet) WaitFor(what string, timeout time.Duration, cond func(*mediator.Status) bool) *mediator.Status {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := p.Status()
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("timed out after %s waiting for %s; status: segments %d healthy %d lost %d repaired %d rounds %d",
				timeout, what, st.Segments, st.Healthy, st.Lost, st.Repaired, st.Rounds)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *Planet) stopAll() {
	for i := range p.Nodes {
		p.StopNode(i)
		release(&p.Nodes[i].held)
	}
	if p.Mediator != nil {
		p.StopMediator()
		release(&p.Mediator.held)
	}
}

// holdPort binds the UDP address a stopped daemon comes back on (restarts
// keep the port: the mediator's is pinned by the nodes) with a socket that
// reads nothing, until release just before the restart. Left free, the port
// could be taken meanwhile by any socket on the machine that binds port 0
// (every QUIC dialer does), and the restart would fail. To a peer, a
// socket that never answers is no different from a closed port (QUIC
// takes no notice of ICMP errors). nil for port 0, or if the port is
// already taken.
func holdPort(hostport string) net.PacketConn {
	if _, port, err := net.SplitHostPort(hostport); err != nil || port == "0" {
		return nil
	}
	c, err := net.ListenPacket("udp", hostport)
	if err != nil {
		return nil
	}
	return c
}

// release closes a port held by holdPort.
func release(held *net.PacketConn) {
	if *held != nil {
		(*held).Close()
		*held = nil
	}
}

// freePort finds a UDP port free on ip.
func freePort(ip string) (string, error) {
	c, err := net.ListenPacket("udp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return "", err
	}
	defer c.Close()
	_, port, err := net.SplitHostPort(c.LocalAddr().String())
	return port, err
}
