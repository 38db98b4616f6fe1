// Package devnet runs a whole Fincrypt network on loopback in one process:
// a mediator, N storage nodes and (unless disabled) a btcd in simnet that
// it starts, mines and funds itself, so that one machine shows the whole
// cycle of placement, challenges, repair and payments (`fincrypt devnet`,
// `make demo`).
//
// Layout of the directory D:
//
//	D/devnet.json      ports, RPC credentials and the wallet passphrase, fixed at first start (0600)
//	D/mediator/        the mediator's directory (fincrypt mediator status --dir D/mediator)
//	D/mediator.addr    the mediator's NODEID@127.0.0.1:port, written once it listens
//	D/node-1 ... D/node-N   the storage nodes' directories
//	D/btcd/            btcd's chain (data/) and its own logs (logs/)
//	D/logs/            devnet.log, mediator.log, node-I.log
//	D/devnet.sock      control socket: POST /fund (fincrypt devnet fund)
//	D/summary.txt      nodes, capacity, what the network holds, prices (written at start)
//	D/lock             flocked by the running devnet
//
// Restarting on the same D resumes the same network: identities live in
// the daemons' directories and the ports are kept in devnet.json.
package devnet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/fincrypt/fincrypt/internal/fsutil"
	"github.com/fincrypt/fincrypt/internal/rungroup"
	"io"
	"log/slog"
	stdnet "net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"

	"github.com/fincrypt/fincrypt/erasure"
	"github.com/fincrypt/fincrypt/internal/units"
	"github.com/fincrypt/fincrypt/mediator"
	fnet "github.com/fincrypt/fincrypt/net"
	"github.com/fincrypt/fincrypt/storagenode"
	"github.com/fincrypt/fincrypt/wallet"
	"github.com/fincrypt/fincrypt/wallet/btcdtest"
)

// Files in the devnet directory.
const (
	StateFile    = "devnet.json"
	AddressFile  = "mediator.addr"
	MediatorDir  = "mediator"
	LogsDir      = "logs"
	BtcdDir      = "btcd"
	ControlSock  = "devnet.sock"
	SummaryFile  = "summary.txt"
	NodeDirFmt   = "node-%d"
	stateVersion = 1
)

// Defaults.
const (
	DefaultNodes  = 5
	DefaultPeriod = 10 * time.Second
	// DefaultPrice is node 1's price, 10 000 000 sat (0.1 devnet BTC) per
	// GiB-month: about 39 sat per GiB of pieces per 10-second period, so
	// that a demo's first megabytes show a charge within a period or two.
	// Node i asks DefaultPrice + (i-1)*DefaultPrice/10.
	DefaultPrice = 10_000_000
	// MaxPrice is the devnet mediator's --max-price (with the default
	// price; in general ten times Config.Price): ten times
	// DefaultPrice, above every devnet node's price (64 nodes ask at most
	// 7.3 times DefaultPrice).
	MaxPrice = 10 * DefaultPrice
	// DemoDeposit is what `fincrypt devnet fund` (and so `make demo`)
	// deposits by default: 1 devnet BTC. At DefaultPrice and 2/4 it keeps
	// 10 GiB of a user's data (20 GiB of pieces on the 4 cheapest nodes,
	// 885 sat per 10-second period) for about 13 days, 50 GiB for about
	// 2.6 days (TestDemoEconomics derives these from the constants).
	DemoDeposit = 100_000_000
	// WarnPeriods: clients are warned while their escrow lasts fewer
	// periods than this (a real mediator warns a week ahead).
	WarnPeriods = 10
	// DefaultPayoutThreshold is low so that payouts show within the
	// hour: at DefaultPrice a node holding 1 GiB of pieces earns 39 sat
	// per 10-second period, 5 000 sat in about 22 minutes.
	DefaultPayoutThreshold = 5_000
	// MinConf of the devnet's wallet: one block credits a deposit.
	MinConf = 1
)

// Capacity per node, unless --capacity says otherwise: a quarter of the
// disk space free where the devnet lives, shared among the nodes, each
// between MinCapacity and MaxDefaultCapacity.
const (
	DiskShareDivisor   = 4
	MinCapacity        = 64 << 20
	MaxDefaultCapacity = 64 << 30
)

// DefaultCapacity is the per-node capacity for n nodes on a disk with
// free bytes available.
func DefaultCapacity(free uint64, n int) int64 {
	c := free / DiskShareDivisor / uint64(max(n, 1))
	return int64(min(max(c, MinCapacity), MaxDefaultCapacity))
}

// NodePrice is node i's (from 0) price at the default price.
func NodePrice(i int) uint64 { return nodePrice(DefaultPrice, i) }

// nodePrice is node i's price when node 0 asks base: 10% more per node.
func nodePrice(base uint64, i int) uint64 { return base + uint64(i)*(base/10) }

// Holds is about how much of a user's data n nodes of capacity bytes each
// hold at scheme s: each segment puts N pieces of size/K on N distinct
// nodes.
func Holds(n int, capacity int64, s erasure.Scheme) int64 {
	return int64(n) * capacity / int64(s.N) * int64(s.K)
}

// freeSpace is the space available to an unprivileged user on the file
// system that holds dir.
func freeSpace(dir string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return st.Bavail * uint64(st.Bsize), nil
}

// DefaultScheme leaves a spare node for repair in a five-node devnet: 2/4
// with repair below 4 healthy pieces (the mediator's 2/5 default would
// have no node left to rebuild on).
var DefaultScheme = erasure.Scheme{K: 2, N: 4}

// DefaultRepairThreshold goes with DefaultScheme.
const DefaultRepairThreshold = 4

// SchemeFor is the default scheme and repair threshold for n nodes: N is
// n-1 (at most 4), so that one node is always free to take a rebuilt
// piece, K is N/2, and repair starts as soon as one piece is lost. Five
// nodes give DefaultScheme.
func SchemeFor(n int) (erasure.Scheme, int) {
	nn := min(max(n-1, 2), DefaultScheme.N)
	s := erasure.Scheme{K: max(nn/2, 1), N: nn}
	return s, s.N
}

// Config shapes a devnet; zero fields take defaults.
type Config struct {
	Dir             string
	Nodes           int
	Period          time.Duration
	Scheme          erasure.Scheme
	RepairThreshold int
	// Price is node 1's price in sat per GiB-month (zero: DefaultPrice);
	// node i asks 10% more per node, and the mediator's max price is ten
	// times Price.
	Price uint64
	// Capacity is each node's capacity in bytes; zero: DefaultCapacity
	// of the disk space free in Dir (see CapacityNote).
	Capacity int64
	// NoBitcoin runs without btcd: a private network without payments
	// (the ledger still records what each node earned).
	NoBitcoin bool
	// BlockInterval: the devnet mines a block this often, so that
	// deposits and payouts confirm (default: the period).
	BlockInterval time.Duration
	Logger        *slog.Logger
	// LogJSON writes the logs in D/logs as JSON, one object a line
	// (--log-format json); default text.
	LogJSON bool
}

func (c *Config) defaults() error {
	if c.Dir == "" {
		return errors.New("devnet: no directory")
	}
	if c.Nodes == 0 {
		c.Nodes = DefaultNodes
	}
	if c.Nodes < 1 || c.Nodes > 64 {
		return fmt.Errorf("devnet: %d nodes: want 1..64", c.Nodes)
	}
	if c.Period == 0 {
		c.Period = DefaultPeriod
	}
	if c.Scheme == (erasure.Scheme{}) {
		c.Scheme, c.RepairThreshold = SchemeFor(c.Nodes)
	}
	if c.Price == 0 {
		c.Price = DefaultPrice
	}
	if c.Price > mediator.MaxMaxPrice/10 {
		return fmt.Errorf("devnet: price %d: want at most %d sat per GiB-month", c.Price, uint64(mediator.MaxMaxPrice/10))
	}
	if c.Capacity < 0 {
		return fmt.Errorf("devnet: capacity %d: want a positive size", c.Capacity)
	}
	if c.BlockInterval == 0 {
		c.BlockInterval = c.Period
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// state is D/devnet.json: what must stay the same across restarts.
type state struct {
	Version    int      `json:"version"`
	Mediator   string   `json:"mediator_listen"` // 127.0.0.1:port
	Nodes      []string `json:"nodes_listen"`
	Passphrase string   `json:"wallet_passphrase"` // hex; a devnet's wallet holds play money
	Bitcoin    bool     `json:"bitcoin"`
}

// Net is a running devnet.
type Net struct {
	cfg      Config
	log      *slog.Logger
	st       state
	Mediator *mediator.Peer
	Nodes    []*storagenode.Peer
	btc      *btcdtest.Node
	logs     []*os.File
	lock     *os.File
	ctl      *http.Server
	ctlLn    stdnet.Listener
	// capacityNote says where the nodes' capacity came from.
	capacityNote string

	mineMu sync.Mutex
}

// Start builds the devnet in cfg.Dir (resuming it if it exists): btcd,
// mediator, nodes, D/mediator.addr and the control socket. Run serves it;
// Close stops it.
func Start(cfg Config) (_ *Net, err error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(cfg.Dir, LogsDir), 0o700); err != nil {
		return nil, err
	}
	n := &Net{cfg: cfg}
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	if n.lock, err = lockDir(cfg.Dir); err != nil {
		return nil, err
	}
	flog, err := n.logger("devnet")
	if err != nil {
		return nil, err
	}
	n.log = slog.New(slog.NewMultiHandler(cfg.Logger.Handler(), flog.Handler())).With("service", "devnet")
	if err := n.loadState(); err != nil {
		return nil, err
	}
	if n.cfg.Capacity == 0 {
		free, err := freeSpace(cfg.Dir)
		if err != nil {
			return nil, fmt.Errorf("free disk space in %s: %w", cfg.Dir, err)
		}
		n.cfg.Capacity = DefaultCapacity(free, cfg.Nodes)
		n.capacityNote = fmt.Sprintf("1/%d of the %s free on %s's disk, shared by %d nodes, at most %s each",
			DiskShareDivisor, units.HumanSize(free), cfg.Dir, cfg.Nodes, units.HumanSize(MaxDefaultCapacity))
	} else {
		n.capacityNote = "set with --capacity"
	}
	cfg = n.cfg
	os.Remove(filepath.Join(cfg.Dir, AddressFile))
	if n.st.Bitcoin {
		if os.Getenv("FINCRYPT_BTCD") == "" {
			if p, err := exec.LookPath("btcd"); err == nil {
				os.Setenv("FINCRYPT_BTCD", p) // else tools/bin/btcd of the source tree
			}
		}
		n.log.Info("starting btcd (simnet)", "dir", filepath.Join(cfg.Dir, BtcdDir))
		if n.btc, err = btcdtest.StartNodeNet(filepath.Join(cfg.Dir, BtcdDir), &chaincfg.SimNetParams); err != nil {
			return nil, fmt.Errorf("btcd: %w (build it with `make tools`, or run with --no-bitcoin)", err)
		}
		if err := n.btc.Ready(); err != nil { // mature coins for this run's miner key, segwit active
			return nil, fmt.Errorf("btcd: mining: %w", err)
		}
	}
	pass, err := hex.DecodeString(n.st.Passphrase)
	if err != nil {
		return nil, fmt.Errorf("%s: wallet passphrase: %w", StateFile, err)
	}
	mcfg := mediator.Config{
		Dir: filepath.Join(cfg.Dir, MediatorDir), Listen: n.st.Mediator,
		Scheme: cfg.Scheme, RepairThreshold: cfg.RepairThreshold, Period: cfg.Period,
		HeartbeatInterval: min(cfg.Period, 10*time.Second), OfflineAfter: max(6*cfg.Period, 30*time.Second),
		TicketTTL: 10 * time.Minute, GracePeriod: time.Hour,
		MaxPrice: 10 * cfg.Price, WarnRunway: WarnPeriods * cfg.Period,
		Payments: mediator.Payments{Passphrase: pass, MinConf: MinConf, PayoutThreshold: DefaultPayoutThreshold,
			SyncInterval: time.Second, FeeBPS: 100},
	}
	network := "simnet"
	mcfg.Network = network
	mcfg.Placement.SharedAddresses = !distinctLoopback
	if n.btc != nil {
		mcfg.Payments.RPC = &wallet.RPCConfig{Host: n.btc.Host, User: n.btc.User, Pass: n.btc.Pass}
	}
	mlog, err := n.logger("mediator")
	if err != nil {
		return nil, err
	}
	if n.Mediator, err = mediator.New(mlog, nil, mcfg); err != nil {
		return nil, fmt.Errorf("mediator: %w", err)
	}
	maddr := n.Mediator.Address()
	if n.st.Mediator == "127.0.0.1:0" {
		n.st.Mediator = maddr.HostPort
	}
	for i := range cfg.Nodes {
		dir := filepath.Join(cfg.Dir, fmt.Sprintf(NodeDirFmt, i+1))
		ident, err := fnet.LoadOrCreateIdentity(dir)
		if err != nil {
			return nil, fmt.Errorf("node %d: %w", i+1, err)
		}
		payout, err := payoutAddress(ident.ID(), &chaincfg.SimNetParams)
		if err != nil {
			return nil, err
		}
		nlog, err := n.logger(fmt.Sprintf(NodeDirFmt, i+1))
		if err != nil {
			return nil, err
		}
		scfg := storagenode.Config{
			Dir: dir, Listen: n.st.Nodes[i], Mediator: maddr, Capacity: cfg.Capacity,
			Price: nodePrice(cfg.Price, i), Payout: payout, Network: network,
			RetryMin: 200 * time.Millisecond, RetryMax: 5 * time.Second,
			TicketTTL: mcfg.TicketTTL, // single-use put tickets: the mediator's lifetime
		}
		node, err := storagenode.New(nlog, ident, scfg)
		if err != nil {
			return nil, fmt.Errorf("node %d: %w", i+1, err)
		}
		n.Nodes = append(n.Nodes, node)
		if n.st.Nodes[i] == nodeListen(i) {
			n.st.Nodes[i] = node.Address().HostPort
		}
	}
	if err := n.saveState(); err != nil {
		return nil, err
	}
	if err := n.listenControl(); err != nil {
		return nil, err
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(cfg.Dir, AddressFile), []byte(maddr.String()+"\n"), 0o644); err != nil {
		return nil, err
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(cfg.Dir, SummaryFile), []byte(n.Summary()+"\n"), 0o644); err != nil {
		return nil, err
	}
	n.log.Info("devnet ready", "mediator", maddr.String(), "nodes", len(n.Nodes), "bitcoin", n.btc != nil,
		"scheme", cfg.Scheme.String(), "period", cfg.Period, "capacity", cfg.Capacity)
	return n, nil
}

// Summary says what the devnet offers: nodes, capacity, how much of a
// user's data that holds, and the prices. `make demo` prints it.
func (n *Net) Summary() string {
	c := n.cfg
	lo, hi := nodePrice(c.Price, 0), nodePrice(c.Price, len(n.Nodes)-1)
	return fmt.Sprintf("%d storage nodes of %s each (%s): at %s the network holds about %s of your data.\n"+
		"Prices %d to %d sat per GiB-month of pieces; a period is %s; the escrow warning starts %d periods ahead.",
		len(n.Nodes), units.HumanSize(uint64(c.Capacity)), n.capacityNote, c.Scheme, units.HumanSize(uint64(Holds(len(n.Nodes), c.Capacity, c.Scheme))),
		lo, hi, c.Period, WarnPeriods)
}

// payoutAddress is a node's devnet payout address: P2WPKH of the hash of
// its id. Nobody holds its key; the payouts are visible on chain and in
// `fincrypt mediator payouts`.
func payoutAddress(id fnet.NodeID, net *chaincfg.Params) (string, error) {
	a, err := btcutil.NewAddressWitnessPubKeyHash(btcutil.Hash160(id[:]), net)
	if err != nil {
		return "", err
	}
	return a.EncodeAddress(), nil
}

func (n *Net) loadState() error {
	path := filepath.Join(n.cfg.Dir, StateFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		pass := make([]byte, 16)
		if _, err := rand.Read(pass); err != nil {
			return err
		}
		n.st = state{Version: stateVersion, Mediator: "127.0.0.1:0", Passphrase: hex.EncodeToString(pass), Bitcoin: !n.cfg.NoBitcoin}
		for i := range n.cfg.Nodes {
			n.st.Nodes = append(n.st.Nodes, nodeListen(i))
		}
		return nil
	}
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, &n.st); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if n.st.Version != stateVersion {
		return fmt.Errorf("%s: version %d, want %d", path, n.st.Version, stateVersion)
	}
	if n.cfg.NoBitcoin && n.st.Bitcoin {
		return fmt.Errorf("%s: this devnet was created with bitcoin; it cannot drop it (start it without --no-bitcoin, or use a new directory)", path)
	}
	if !n.cfg.NoBitcoin && !n.st.Bitcoin {
		n.log.Info("this devnet was created with --no-bitcoin; it stays without payments")
	}
	// More nodes than last time: the new ones get fresh ports. Fewer: the
	// others stay stopped (their pieces are repaired elsewhere).
	for len(n.st.Nodes) < n.cfg.Nodes {
		n.st.Nodes = append(n.st.Nodes, nodeListen(len(n.st.Nodes)))
	}
	// Nodes of a devnet made before they had a network each move to theirs
	// (same port): the mediator places one piece per network.
	for i, hp := range n.st.Nodes {
		if host, port, err := stdnet.SplitHostPort(hp); err == nil && host == "127.0.0.1" && distinctLoopback {
			n.st.Nodes[i] = stdnet.JoinHostPort(nodeIP(i), port)
		}
	}
	return nil
}

// distinctLoopback: every address in 127.0.0.0/8 is the loopback (Linux),
// so each node listens on its own 127.0.i.1, a network (/24) of its own,
// as nodes of a real network would be. Elsewhere (macOS has 127.0.0.1
// only) the nodes share 127.0.0.1 and the mediator is told that they may
// (PlacementPolicy.SharedAddresses).
var distinctLoopback = runtime.GOOS == "linux"

func nodeIP(i int) string {
	if !distinctLoopback {
		return "127.0.0.1"
	}
	return fmt.Sprintf("127.0.%d.1", i+1)
}

func nodeListen(i int) string { return stdnet.JoinHostPort(nodeIP(i), "0") }

func (n *Net) saveState() error {
	b, err := json.MarshalIndent(&n.st, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(filepath.Join(n.cfg.Dir, StateFile), append(b, '\n'), 0o600)
}

// logger makes a logger writing to D/logs/<name>.log.
func (n *Net) logger(name string) (*slog.Logger, error) {
	f, err := os.OpenFile(filepath.Join(n.cfg.Dir, LogsDir, name+".log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	n.logs = append(n.logs, f)
	opts := &slog.HandlerOptions{Level: slog.LevelDebug}
	if n.cfg.LogJSON {
		return slog.New(slog.NewJSONHandler(f, opts)).With("role", name), nil
	}
	return slog.New(slog.NewTextHandler(f, opts)).With("role", name), nil
}

// Run serves the mediator, the nodes, the block miner and the control
// socket until ctx ends or one of them fails.
func (n *Net) Run(ctx context.Context) error {
	g := rungroup.New(ctx)
	run := g.Go
	run("mediator", n.Mediator.Run)
	for i, node := range n.Nodes {
		run(fmt.Sprintf(NodeDirFmt, i+1), node.Run)
	}
	if n.btc != nil {
		run("miner", n.mine)
	}
	run("control", func(ctx context.Context) error {
		stop := context.AfterFunc(ctx, func() { n.ctl.Close() })
		defer stop()
		if err := n.ctl.Serve(n.ctlLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	return g.Wait()
}

// mine mines one block every BlockInterval, so that deposits and payouts
// confirm.
func (n *Net) mine(ctx context.Context) error {
	t := time.NewTicker(n.cfg.BlockInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		n.mineMu.Lock()
		_, err := n.btc.Generate(1)
		n.mineMu.Unlock()
		if err != nil && ctx.Err() == nil {
			n.log.Warn("mining a block", "err", err)
		}
	}
}

// ErrNoBitcoin means the devnet runs without btcd.
var ErrNoBitcoin = errors.New("this devnet runs without bitcoin (no payments)")

// Fund sends sats to addr from the devnet's mined coins and mines MinConf
// blocks, so the deposit is credited at the mediator's next sync. It
// returns the txid.
func (n *Net) Fund(addr string, sats int64) (string, error) {
	if n.btc == nil {
		return "", ErrNoBitcoin
	}
	if sats <= 0 || sats > 10*btcutil.SatoshiPerBitcoin {
		return "", fmt.Errorf("amount %d sat: want 1 sat to 10 BTC", sats)
	}
	a, err := btcutil.DecodeAddress(addr, n.btc.Net)
	if err != nil || !a.IsForNet(n.btc.Net) {
		return "", fmt.Errorf("address %q is not a %s address", addr, n.btc.Net.Name)
	}
	n.mineMu.Lock()
	defer n.mineMu.Unlock()
	tx, err := n.btc.Send(a, sats)
	if errors.Is(err, btcdtest.ErrNoMatureCoins) {
		if _, err := n.btc.Generate(101); err != nil {
			return "", err
		}
		tx, err = n.btc.Send(a, sats)
	}
	if err != nil {
		return "", err
	}
	if _, err := n.btc.Generate(MinConf); err != nil {
		return "", err
	}
	n.log.Info("funded", "address", addr, "sat", sats, "txid", tx.TxHash().String())
	return tx.TxHash().String(), nil
}

// listenControl serves POST /fund?address=A&sat=N on D/devnet.sock.
func (n *Net) listenControl() error {
	path := filepath.Join(n.cfg.Dir, ControlSock)
	if len(path) >= 104 {
		return fmt.Errorf("control socket %s: path too long for a unix socket; use a shorter --dir", path)
	}
	if c, err := stdnet.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("%s: another devnet is running in %s", path, n.cfg.Dir)
	}
	os.Remove(path)
	ln, err := stdnet.Listen("unix", path)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /fund", func(w http.ResponseWriter, r *http.Request) {
		sats, err := strconv.ParseInt(r.URL.Query().Get("sat"), 10, 64)
		if err != nil {
			http.Error(w, "sat: "+err.Error(), http.StatusBadRequest)
			return
		}
		txid, err := n.Fund(r.URL.Query().Get("address"), sats)
		switch {
		case errors.Is(err, ErrNoBitcoin):
			http.Error(w, err.Error(), http.StatusNotFound)
		case err != nil:
			http.Error(w, err.Error(), http.StatusBadRequest)
		default:
			io.WriteString(w, txid+"\n")
		}
	})
	n.ctlLn = ln
	n.ctl = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	return nil
}

// Fund asks the devnet running in dir to send sats to addr; it returns the
// txid.
func Fund(ctx context.Context, dir, addr string, sats int64) (string, error) {
	sock := filepath.Join(dir, ControlSock)
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (stdnet.Conn, error) {
		var d stdnet.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	defer hc.CloseIdleConnections()
	u := fmt.Sprintf("http://devnet/fund?address=%s&sat=%d", addr, sats)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		return "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("no devnet is running in %s: %v", dir, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	switch resp.StatusCode {
	case http.StatusOK:
		return string(trimNL(body)), nil
	case http.StatusNotFound:
		return "", fmt.Errorf("%w", ErrNoBitcoin)
	}
	return "", fmt.Errorf("fund: %s", trimNL(body))
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// Close stops everything in reverse order: control socket, nodes,
// mediator, btcd, log files.
func (n *Net) Close() error {
	var errs []error
	if n.ctl != nil {
		n.ctl.Close()
		n.ctlLn.Close()
		os.Remove(filepath.Join(n.cfg.Dir, ControlSock))
	}
	for i := len(n.Nodes) - 1; i >= 0; i-- {
		errs = append(errs, n.Nodes[i].Close())
	}
	n.Nodes = nil
	if n.Mediator != nil {
		errs = append(errs, n.Mediator.Close())
		n.Mediator = nil
	}
	if n.btc != nil {
		n.btc.Stop()
		n.btc = nil
	}
	for _, f := range n.logs {
		f.Close()
	}
	n.logs = nil
	if n.lock != nil {
		n.lock.Close() // releases the flock
		n.lock = nil
	}
	return errors.Join(errs...)
}

// ErrRunning means another devnet runs in the directory.
var ErrRunning = errors.New("another devnet is running in this directory")

// lockDir takes an exclusive flock on D/lock, before anything in D changes.
func lockDir(dir string) (*os.File, error) {
	f, err := fsutil.Lock(filepath.Join(dir, "lock"))
	if errors.Is(err, fsutil.ErrLocked) {
		return nil, fmt.Errorf("%s: %w", dir, ErrRunning)
	}
	return f, err
}
