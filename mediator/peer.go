package mediator

import (
	"context"
	"errors"
	"fmt"
	"github.com/fincrypt/fincrypt/internal/fsutil"
	"github.com/fincrypt/fincrypt/internal/rungroup"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	fnet "github.com/fincrypt/fincrypt/net"
)

// ErrListen wraps a failure to listen on Config.Listen (an address that
// does not resolve, is not local, or is in use).
var ErrListen = errors.New("cannot listen")

// Files in the mediator's directory.
const (
	AddressFile = "address" // NODEID@host:port, written once listening
	dbDir       = "db"      // Pebble
)

// Peer is a running mediator: every service it is made of, built in New
// and closed in reverse order by Close.
type Peer struct {
	Log      *slog.Logger
	Config   Config
	Identity *fnet.Identity
	// Store is the durable state: Pebble under DIR/db, or PostgreSQL
	// (Config.DB).
	Store Store
	// Transport serves nodes and clients and dials nodes.
	Transport *fnet.Transport

	lock    *os.File
	pay     *payments
	nodes   *transportNodes
	core    *core
	control *controlServer

	// settleNow wakes the settlement service after a round.
	settleNow chan struct{}

	closeOnce sync.Once
	closeErr  error
}

// New builds a mediator from its configuration: identity (ident, or the one
// in DIR/identity, created if missing), store, QUIC transport, the services
// and the control socket. It writes DIR/address. Run starts serving; cancel
// its context, then Close releases everything. On failure everything built
// so far is closed.
func New(log *slog.Logger, ident *fnet.Identity, cfg Config) (_ *Peer, err error) {
	cfg = cfg.WithDefaults()
	if log != nil {
		cfg.Logger = log
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Dir == "" {
		return nil, fmt.Errorf("%w: no directory", ErrConfig)
	}
	p := &Peer{Log: cfg.Logger, Config: cfg, Identity: ident, settleNow: make(chan struct{}, 1)}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()

	{ // identity
		if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
			return nil, err
		}
		if p.Identity == nil {
			if p.Identity, err = fnet.LoadOrCreateIdentity(cfg.Dir); err != nil {
				return nil, fmt.Errorf("mediator identity: %w", err)
			}
		}
	}
	{ // one mediator per directory
		if p.lock, err = lockDir(cfg.Dir); err != nil {
			return nil, err
		}
	}
	{ // state
		if p.Store, err = openStore(cfg); err != nil {
			return nil, err
		}
	}
	if cfg.Payments.Enabled() { // wallet: escrow, ledger, payouts (payments.go)
		if p.pay, err = openPayments(cfg.Dir, cfg.Network, cfg.Payments, cfg.Logger.With("service", "wallet")); err != nil {
			return nil, err
		}
	}
	{ // transport
		tc := cfg.Transport
		tc.Logger = cfg.Logger.With("service", "transport")
		if p.Transport, err = fnet.Listen(p.Identity, cfg.Listen, tc); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrListen, err)
		}
		p.nodes = newTransportNodes(p.Transport)
	}
	{ // services: registry, accounts, placement, contracts, challenges, repair
		c := cfg
		c.Logger = cfg.Logger.With("service", "mediator")
		p.core = newCore(c, p.Store, p.Identity, p.nodes)
		p.core.obs = newObserver()
		p.core.pay = p.pay
		p.core.dialBack = func(ctx context.Context, addr fnet.Address) error {
			conn, err := p.Transport.Dial(ctx, addr)
			if err != nil {
				return err
			}
			return conn.Close()
		}
		if err := p.core.loadReservations(context.Background()); err != nil {
			return nil, fmt.Errorf("pending placements: %w", err)
		}
		if err := p.core.priceLegacyContracts(context.Background()); err != nil {
			return nil, fmt.Errorf("pricing contracts from before contract prices: %w", err)
		}
	}
	{ // control socket
		if p.control, err = listenControl(cfg.Dir, p.Status, p.controlPayments); err != nil {
			return nil, err
		}
	}
	{ // address file, last: it tells scripts the mediator is ready
		if err := fsutil.WriteFileAtomic(filepath.Join(cfg.Dir, AddressFile), []byte(p.Address().String()+"\n"), 0o644); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// Address is the mediator's NODEID@host:port: the advertised host:port if
// configured, else the bound one.
func (p *Peer) Address() fnet.Address {
	if p.Config.Advertise != "" {
		return fnet.Address{ID: p.Identity.ID(), HostPort: p.Config.Advertise}
	}
	return p.Transport.Address()
}

// Status reports the nodes and the network's counts.
func (p *Peer) Status(ctx context.Context) (*Status, error) {
	return p.core.Status(ctx, p.Address().String())
}

// ChallengeRound runs one challenge round now (tests, tools).
func (p *Peer) ChallengeRound(ctx context.Context) (RoundResult, error) { return p.core.Round(ctx) }

// RepairScan runs one repair scan now (tests, tools).
func (p *Peer) RepairScan(ctx context.Context) (RepairResult, error) { return p.core.RepairScan(ctx) }

// Run serves until ctx is done or a service fails; the services run in
// one group and the first error stops the others.
func (p *Peer) Run(ctx context.Context) error {
	g := rungroup.New(ctx)
	run := g.Go
	run("endpoint", func(ctx context.Context) error { return p.Transport.Serve(ctx, &endpoint{c: p.core}) })
	run("control", p.control.run)
	run("scheduler", p.schedule)    // schedule.go
	run("settlement", p.settlement) // on its own: a bitcoin node that is down never delays a round
	if p.pay != nil && p.pay.chain != nil {
		run("wallet", p.pay.watch)
	}
	p.Log.Info("mediator running", "address", p.Address().String(), "scheme", p.Config.Scheme.String(),
		"period", p.Config.Period, "offline_after", p.Config.OfflineAfter,
		"wallet", p.pay != nil, "metered", p.pay.metered())
	return g.Wait()
}

// Close stops every service, in reverse order of New.
func (p *Peer) Close() error {
	p.closeOnce.Do(func() {
		var errs []error
		if p.control != nil {
			errs = append(errs, p.control.close())
			os.Remove(filepath.Join(p.Config.Dir, ControlSocket))
		}
		if p.core != nil {
			p.core.stop()
		}
		if p.nodes != nil {
			p.nodes.close()
		}
		if p.Transport != nil {
			errs = append(errs, p.Transport.Close())
		}
		if p.pay != nil {
			errs = append(errs, p.pay.close())
		}
		if p.Store != nil {
			errs = append(errs, p.Store.Close())
		}
		if p.lock != nil {
			errs = append(errs, p.lock.Close()) // releases the flock
		}
		p.closeErr = errors.Join(errs...)
	})
	return p.closeErr
}

// LockFile is flocked by the running mediator.
const LockFile = "lock"

// lockDir takes an exclusive flock on DIR/lock, so that a second mediator
// on the same directory (in this process or another) stops at once.
func lockDir(dir string) (*os.File, error) {
	f, err := fsutil.Lock(filepath.Join(dir, LockFile))
	if errors.Is(err, fsutil.ErrLocked) {
		return nil, fmt.Errorf("%s: %w: another mediator is running there", dir, ErrLocked)
	}
	return f, err
}

// ErrStateElsewhere: the mediator was asked to use a database while its
// directory still holds Pebble state (or the reverse would lose it).
var ErrStateElsewhere = errors.New("mediator state is in another store")

// openStore opens Pebble under DIR/db, or the database cfg.DB names. It
// refuses a database while DIR/db holds state, so that a mediator never
// runs on an empty database next to its real state: `fincrypt mediator
// migrate` copies it and moves DIR/db aside.
func openStore(cfg Config) (Store, error) {
	if cfg.DB == "" {
		pebbleDir := filepath.Join(cfg.Dir, dbDir)
		if _, err := os.Stat(pebbleDir); errors.Is(err, os.ErrNotExist) {
			if _, err := os.Stat(pebbleDir + MigratedSuffix); err == nil {
				return nil, fmt.Errorf("%w: %s was migrated to a database (%s is the copy it was made from); run the mediator with --db URL", ErrStateElsewhere, pebbleDir, pebbleDir+MigratedSuffix)
			}
		}
		return OpenPebbleStore(pebbleDir, PebbleOptions{})
	}
	if _, err := os.Stat(filepath.Join(cfg.Dir, dbDir)); err == nil {
		return nil, fmt.Errorf("%w: %s holds a Pebble store; copy it with `fincrypt mediator migrate --from %s --to URL` first", ErrStateElsewhere, filepath.Join(cfg.Dir, dbDir), cfg.Dir)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return OpenPostgresStore(ctx, cfg.DB, PostgresOptions{})
}
