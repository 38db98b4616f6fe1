// Package storagenode is the storage node daemon: it stores encrypted
// pieces under tickets signed by its mediator, proves possession when
// challenged, stays registered with the mediator and collects pieces that
// no longer have a contract. New wires every part; read it first.
package storagenode

import (
	"context"
	"errors"
	"fmt"
	"github.com/fincrypt/fincrypt/internal/fsutil"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"

	"github.com/fincrypt/fincrypt/challenge"
	fnet "github.com/fincrypt/fincrypt/net"
)

// AddressFile is written to the node's directory once it listens.
const AddressFile = "address"

// Config is everything a storage node needs. cmd/fincrypt maps flags onto it.
type Config struct {
	Dir       string       // identity, address, pieces, index
	Listen    string       // host:port to bind; port 0 picks one
	Advertise string       // host:port others dial; default: the bound address
	Mediator  fnet.Address // the mediator to register with; it signs tickets
	Capacity  int64        // bytes of pieces offered
	Price     uint64       // satoshis per GiB per month
	Payout    string       // bitcoin address for payouts
	// Network is the bitcoin network of Payout: mainnet, testnet3, regtest
	// or simnet. Empty: the mediator's, learnt by registering (see
	// PayoutNetworks).
	Network string

	RetryMin       time.Duration // first retry delay when the mediator is unreachable (1s)
	RetryMax       time.Duration // longest retry delay (1m)
	RequestTimeout time.Duration // to read a request frame, or a mediator call (10s)
	IdleTimeout    time.Duration // longest pause within a transfer (30s)
	// ScrubRate is the bytes per second the scrubber re-reads pieces at:
	// 0 takes DefaultScrubRate, a negative rate disables scrubbing.
	ScrubRate int64
	// ScrubInterval is the least time between the starts of two scrub
	// passes (0: DefaultScrubInterval).
	ScrubInterval time.Duration
	// MinUploadRate (bytes/s) and UploadGrace give every upload a total
	// deadline of UploadGrace + size/MinUploadRate, after which it is
	// dropped with its temporary file and reservation (64 KiB/s, 30s).
	MinUploadRate int64
	UploadGrace   time.Duration
	// TicketTTL is the mediator's ticket lifetime (its --ticket-ttl; 1h):
	// a put ticket for a piece this node deleted is refused while a ticket
	// issued before the delete could still be valid.
	TicketTTL time.Duration
	// Transport carries the connection caps and request rates
	// (fnet.Config; zero fields take the defaults).
	Transport fnet.Config
}

// Networks maps --network names to their parameters.
var Networks = map[string]*chaincfg.Params{
	"mainnet":  &chaincfg.MainNetParams,
	"testnet3": &chaincfg.TestNet3Params,
	"regtest":  &chaincfg.RegressionNetParams,
	"simnet":   &chaincfg.SimNetParams,
}

// ErrConfig wraps every Validate failure.
var ErrConfig = errors.New("invalid storage node configuration")

// Validate fills defaults and checks the configuration.
func (c *Config) Validate() error {
	if c.Dir == "" {
		return fmt.Errorf("%w: no directory", ErrConfig)
	}
	if c.Listen == "" {
		return fmt.Errorf("%w: no listen address", ErrConfig)
	}
	switch {
	case c.Mediator.ID.IsZero() && c.Mediator.HostPort == "":
		return fmt.Errorf("%w: no mediator address (NODEID@host:port)", ErrConfig)
	case c.Mediator.ID.IsZero():
		return fmt.Errorf("%w: mediator address %s: the node id is all zeros, which is no node's key "+
			"(the mediator prints its id with `fincrypt id --dir MEDIATOR_DIR`)", ErrConfig, c.Mediator)
	case c.Mediator.HostPort == "":
		return fmt.Errorf("%w: mediator %s has no host:port (NODEID@host:port)", ErrConfig, c.Mediator.ID)
	}
	if c.Capacity < challenge.LeafSize {
		return fmt.Errorf("%w: capacity %d bytes is too small", ErrConfig, c.Capacity)
	}
	if _, err := c.PayoutNetworks(); err != nil {
		return err
	}
	if c.RetryMin <= 0 {
		c.RetryMin = time.Second
	}
	if c.RetryMax < c.RetryMin {
		c.RetryMax = max(time.Minute, c.RetryMin)
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 10 * time.Second
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 30 * time.Second
	}
	if c.ScrubRate == 0 {
		c.ScrubRate = DefaultScrubRate
	}
	if c.MinUploadRate <= 0 {
		c.MinUploadRate = DefaultMinUploadRate
	}
	if c.UploadGrace <= 0 {
		c.UploadGrace = DefaultUploadGrace
	}
	if c.TicketTTL <= 0 {
		c.TicketTTL = DefaultTicketTTL
	}
	switch {
	case c.ScrubInterval < 0:
		return fmt.Errorf("%w: scrub interval %s is negative", ErrConfig, c.ScrubInterval)
	case c.ScrubInterval == 0:
		c.ScrubInterval = DefaultScrubInterval
	}
	return nil
}

// networkOrder is the order in which PayoutNetworks lists the networks an
// address is valid on (base58 testnet addresses are also regtest ones).
var networkOrder = []string{"mainnet", "testnet3", "regtest", "simnet"}

// PayoutNetworks returns the networks the node offers the mediator at
// registration: Network if set (the payout address must be for it), else
// every network the payout address is valid on. The mediator accepts the
// one it pays on; see Contact.
func (c *Config) PayoutNetworks() ([]string, error) {
	if c.Network != "" {
		params, ok := Networks[c.Network]
		if !ok {
			return nil, fmt.Errorf("%w: unknown network %q (mainnet, testnet3, regtest, simnet)", ErrConfig, c.Network)
		}
		addr, err := btcutil.DecodeAddress(c.Payout, params)
		if err != nil {
			return nil, fmt.Errorf("%w: payout address %q: %v", ErrConfig, c.Payout, err)
		}
		if !addr.IsForNet(params) {
			return nil, fmt.Errorf("%w: payout address %q is not a %s address", ErrConfig, c.Payout, c.Network)
		}
		return []string{c.Network}, nil
	}
	var nets []string
	for _, n := range networkOrder {
		if addr, err := btcutil.DecodeAddress(c.Payout, Networks[n]); err == nil && addr.IsForNet(Networks[n]) {
			nets = append(nets, n)
		}
	}
	if len(nets) == 0 {
		return nil, fmt.Errorf("%w: payout address %q is not a bitcoin address of any network (mainnet, testnet3, regtest, simnet)",
			ErrConfig, c.Payout)
	}
	return nets, nil
}

// Peer is a running storage node.
type Peer struct {
	Log       *slog.Logger
	Identity  *fnet.Identity
	Config    Config
	Store     PieceStore
	Transport *fnet.Transport
	Endpoint  *Endpoint
	Contact   *Contact
	Collector *Collector
	Scrubber  *Scrubber

	closers []func() error
	once    sync.Once
	disk    *DiskStore // the Store, for the scrub cursor and damage (metrics.go)
	stats   *nodeStats // event counters (metrics.go)
}

// New builds a storage node: the piece store (reconciled with the disk),
// the listening transport, the endpoint, the mediator contact, the
// collector and the scrubber. On failure everything built so far is closed.
func New(log *slog.Logger, ident *fnet.Identity, cfg Config) (_ *Peer, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p := &Peer{Log: log, Identity: ident, Config: cfg, stats: newNodeStats()}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()

	var disk *DiskStore
	{ // piece store
		store, err := OpenDiskStore(cfg.Dir, DiskStoreOptions{Capacity: cfg.Capacity, Logger: log.With("service", "piecestore"),
			ReleaseWindow: cfg.TicketTTL})
		if err != nil {
			return nil, err
		}
		p.Store, disk, p.disk = store, store, store
		p.closers = append(p.closers, store.Close)
	}

	{ // transport
		tcfg := cfg.Transport
		tcfg.Logger = log.With("service", "transport")
		tr, err := fnet.Listen(ident, cfg.Listen, tcfg)
		if err != nil {
			return nil, err
		}
		p.Transport = tr
		p.closers = append(p.closers, tr.Close)
	}

	{ // endpoint
		p.Endpoint = NewEndpoint(log.With("service", "endpoint"), ident.ID(), cfg.Mediator.ID, p.Store,
			cfg.RequestTimeout, cfg.IdleTimeout)
		p.Endpoint.MinUploadRate, p.Endpoint.UploadGrace, p.Endpoint.TicketTTL = cfg.MinUploadRate, cfg.UploadGrace, cfg.TicketTTL
		p.Endpoint.stats = p.stats
	}

	{ // mediator contact
		nets, err := cfg.PayoutNetworks()
		if err != nil {
			return nil, err
		}
		p.Contact = newContact(log.With("service", "contact"), p.Transport, cfg.Mediator, nets,
			p.registerRequest, p.heartbeat, cfg.RetryMin, cfg.RetryMax, cfg.RequestTimeout)
		p.Contact.handler = p.Endpoint
	}

	{ // garbage collection
		p.Collector = newCollector(log.With("service", "collector"), p.Store, p.Contact)
	}

	{ // scrubbing: find damage on the own disk, report it
		p.Scrubber = newScrubber(log.With("service", "scrubber"), disk, p.Contact, cfg.ScrubRate, cfg.ScrubInterval,
			cfg.RetryMin, cfg.RetryMax)
		p.Scrubber.stats = p.stats
	}

	if ip := p.Transport.Addr().IP; cfg.Advertise == "" && ip.IsUnspecified() {
		log.Warn("listening on all interfaces without --advertise: the mediator and clients will be told "+
			p.Address().HostPort+", which they cannot dial", "listen", cfg.Listen)
	}

	{ // address file, last: it tells others the node is ready
		if err := fsutil.WriteFileAtomic(filepath.Join(cfg.Dir, AddressFile), []byte(p.Address().String()+"\n"), 0o644); err != nil {
			return nil, fmt.Errorf("address file: %w", err)
		}
	}
	return p, nil
}

// Address is the node's NODEID@host:port.
func (p *Peer) Address() fnet.Address {
	hp := p.Config.Advertise
	if hp == "" {
		hp = p.Transport.Addr().String()
	}
	return fnet.Address{ID: p.Identity.ID(), HostPort: hp}
}

func (p *Peer) registerRequest() *fnet.RegisterRequest {
	used, n := p.Store.Usage()
	return &fnet.RegisterRequest{
		Node: p.Identity.ID(), Address: p.Address().String(),
		Capacity: uint64(p.Store.Capacity()), Used: uint64(used), Pieces: uint64(n),
		Price: p.Config.Price, PayoutAddress: p.Config.Payout,
	}
}

func (p *Peer) heartbeat() *fnet.Heartbeat {
	used, n := p.Store.Usage()
	return &fnet.Heartbeat{Capacity: uint64(p.Store.Capacity()), Used: uint64(used), Pieces: uint64(n)}
}

// Run serves until ctx is done or a service fails. A registration the
// mediator refuses for good ends it with an error that wraps
// ErrRegistrationRefused.
func (p *Peer) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p.Log.Info("storage node running", "address", p.Address(), "mediator", p.Config.Mediator,
		"capacity", p.Config.Capacity, "price", p.Config.Price)
	services := []struct {
		name string
		run  func(context.Context) error
	}{
		{"endpoint", func(ctx context.Context) error { return p.Transport.Serve(ctx, p.Endpoint) }},
		{"contact", p.Contact.Run},
		{"collector", p.Collector.Run},
		{"scrubber", p.Scrubber.Run},
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(services))
	for _, s := range services {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.run(ctx); err != nil {
				errs <- fmt.Errorf("%s: %w", s.name, err)
				cancel()
			}
		}()
	}
	<-ctx.Done()
	p.Transport.Close() // unblocks Accept
	wg.Wait()
	close(errs)
	return <-errs
}

// Close closes the services in reverse order of construction.
func (p *Peer) Close() error {
	var errs []error
	p.once.Do(func() {
		for i := len(p.closers) - 1; i >= 0; i-- {
			errs = append(errs, p.closers[i]())
		}
	})
	return errors.Join(errs...)
}
