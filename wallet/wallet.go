package wallet

import (
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/btcsuite/btcd/chaincfg"
	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/fincrypt/fincrypt/internal/pebblesched"
)

// DBDirName is the wallet's Pebble database inside Config.Dir.
const DBDirName = "wallet.db"

// Defaults of Config.
const (
	DefaultMinConf     = 6
	DefaultGracePeriod = 7 * 24 * time.Hour
	// DefaultRunwayPeriods: placement needs escrow for this many periods
	// at the account's current charge (docs/WALLET.md, "Delinquency").
	DefaultRunwayPeriods   = 3
	DefaultPayoutThreshold = 10_000 // satoshis
	DefaultFeeRate         = 2      // sat/vB
)

// Config configures a Wallet. Dir and Passphrase are required.
type Config struct {
	Dir        string // holds wallet-seed.json and wallet.db
	Passphrase []byte // decrypts the seed (Argon2id, see CreateSeed)
	// Network, if set, must match the seed file's network.
	Network string
	// Chain is the Bitcoin node's RPC (an *rpcclient.Client works). Nil means
	// no node: no deposits are seen and payouts can only be written as PSBTs.
	Chain Chain
	// MinConf is how many confirmations a deposit needs to be credited, and
	// a payout to be confirmed in the ledger (default 6).
	MinConf int
	// StartHeight is the first block a new wallet scans (0 = genesis; for
	// mainnet use the height at which the wallet was created). It is stored
	// when the database is created; later values are ignored.
	StartHeight int64
	// GracePeriod is how long a delinquent account keeps its segments before
	// they may be released (default 7 days).
	GracePeriod time.Duration
	// RunwayPeriods is the escrow, in periods at the account's current
	// charge, that new placements need and that a deposit must leave (after
	// repaying debt) to end delinquency (default DefaultRunwayPeriods).
	RunwayPeriods int
	// PayoutThreshold: node balances at or above it are paid out (default
	// 10 000 sat; never below the dust limit).
	PayoutThreshold int64
	// FeeRate of payout transactions in sat/vB (default 2).
	FeeRate int64
	Logger  *slog.Logger
	Now     func() time.Time // default time.Now
	// FS holds the wallet database instead of the operating system's file
	// system (power-loss tests pass a crashable in-memory one); the seed
	// file stays in Dir.
	FS vfs.FS
}

func (c *Config) setDefaults() {
	if c.MinConf == 0 {
		c.MinConf = DefaultMinConf
	}
	if c.GracePeriod == 0 {
		c.GracePeriod = DefaultGracePeriod
	}
	if c.RunwayPeriods <= 0 {
		c.RunwayPeriods = DefaultRunwayPeriods
	}
	if c.PayoutThreshold == 0 {
		c.PayoutThreshold = DefaultPayoutThreshold
	}
	if c.FeeRate == 0 {
		c.FeeRate = DefaultFeeRate
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate checks the configuration after defaults are applied.
func (c *Config) Validate() error {
	switch {
	case c.Dir == "":
		return errors.New("wallet: no directory")
	case c.MinConf < 1 || c.MinConf > 1000:
		return fmt.Errorf("wallet: min confirmations %d out of range 1..1000", c.MinConf)
	case c.StartHeight < 0:
		return fmt.Errorf("wallet: start height %d is negative", c.StartHeight)
	case c.GracePeriod < 0:
		return fmt.Errorf("wallet: negative grace period")
	case c.PayoutThreshold < dustLimit:
		return fmt.Errorf("wallet: payout threshold %d sat is below the dust limit %d", c.PayoutThreshold, dustLimit)
	case c.FeeRate < 1 || c.FeeRate > 10_000:
		return fmt.Errorf("wallet: fee rate %d sat/vB out of range 1..10000", c.FeeRate)
	}
	return nil
}

// Wallet is the mediator's wallet and ledger. Its methods are safe for
// concurrent use; state changes are serialised.
type Wallet struct {
	cfg  Config
	net  *chaincfg.Params
	keys *hdKeys
	db   *pebble.DB
	log  *slog.Logger
	mu   sync.Mutex
	// start is the first height scanned, fixed when the database is created.
	start int64
	// chainChecked is set once the node's genesis block matched the network.
	chainChecked bool

	// testHook, if set, is called at named points (crash simulation).
	testHook func(point string) error
}

// Open decrypts the seed in cfg.Dir and opens (or creates) the wallet
// database next to it.
func Open(cfg Config) (*Wallet, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	seed, sf, err := openSeed(cfg.Dir, cfg.Passphrase)
	if err != nil {
		return nil, err
	}
	net, _ := ParseNetwork(sf.Network)
	if cfg.Network != "" {
		want, err := ParseNetwork(cfg.Network)
		if err != nil {
			return nil, err
		}
		if want.Name != net.Name {
			return nil, fmt.Errorf("wallet: the seed is for %s, not %s", sf.Network, cfg.Network)
		}
	}
	keys, err := newHDKeys(seed, net)
	clear(seed)
	if err != nil {
		return nil, err
	}
	po := &pebble.Options{Logger: pebbleLogger{cfg.Logger.With("service", "wallet.db")}, FS: cfg.FS}
	pebblesched.Quiet(po) // nothing wakes the process while the database idles
	db, err := pebble.Open(filepath.Join(cfg.Dir, DBDirName), po)
	if err != nil {
		return nil, fmt.Errorf("wallet database: %w", err)
	}
	w := &Wallet{cfg: cfg, net: net, keys: keys, db: db, log: cfg.Logger.With("service", "wallet")}
	if err := w.initStore(); err != nil {
		db.Close()
		return nil, err
	}
	return w, nil
}

func (w *Wallet) initStore() error {
	t := w.begin()
	defer t.discard()
	v, err := t.getInt(kVersion)
	if err != nil {
		return err
	}
	if v == 0 {
		if err := t.setInt(kVersion, storeVersion); err != nil {
			return err
		}
		if err := t.set(kNetwork, []byte(NetworkName(w.net))); err != nil {
			return err
		}
		if err := t.setInt(kTip, w.cfg.StartHeight-1); err != nil {
			return err
		}
		if err := t.setInt(kStart, w.cfg.StartHeight); err != nil {
			return err
		}
		w.start = w.cfg.StartHeight
		return t.commit()
	}
	if v != storeVersion {
		return fmt.Errorf("wallet database: version %d, want %d", v, storeVersion)
	}
	n, _, err := t.get(kNetwork)
	if err != nil {
		return err
	}
	if string(n) != NetworkName(w.net) {
		return fmt.Errorf("wallet database is for %s, the seed for %s", n, NetworkName(w.net))
	}
	w.start, err = t.getInt(kStart)
	return err
}

// Close closes the database.
func (w *Wallet) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.db == nil {
		return nil
	}
	err := w.db.Close()
	w.db = nil
	return err
}

// Network returns the wallet's chain parameters.
func (w *Wallet) Network() *chaincfg.Params { return w.net }

func (w *Wallet) hook(point string) error {
	if w.testHook != nil {
		return w.testHook(point)
	}
	return nil
}

// scriptInfo is what the store knows about one of the wallet's scripts.
type scriptInfo struct {
	Branch  uint32 `json:"branch"`
	Index   uint32 `json:"index"`
	Account string `json:"account,omitempty"` // deposit branch only
}

// DepositAddress returns the client account's deposit address, deriving and
// recording it on first use (m/84'/coin'/0'/0/i, i allocated in order).
func (w *Wallet) DepositAddress(account string) (string, error) {
	if err := CheckID(account); err != nil {
		return "", err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	t := w.begin()
	defer t.discard()
	idx, ok, err := t.get(pAccount + account)
	if err != nil {
		return "", err
	}
	if ok {
		a, _, _, err := w.keys.address(BranchDeposit, uint32(beUint(idx)))
		if err != nil {
			return "", err
		}
		return a.EncodeAddress(), nil
	}
	i, err := t.next(kNextDep)
	if err != nil {
		return "", err
	}
	a, script, _, err := w.keys.address(BranchDeposit, uint32(i))
	if err != nil {
		return "", err
	}
	if err := t.setInt(pAccount+account, i); err != nil {
		return "", err
	}
	if err := t.setJSON(pScript+hex.EncodeToString(script), scriptInfo{Branch: BranchDeposit, Index: uint32(i), Account: account}); err != nil {
		return "", err
	}
	if err := t.commit(); err != nil {
		return "", err
	}
	w.log.Info("new deposit address", "account", account, "index", i, "address", a.EncodeAddress())
	return a.EncodeAddress(), nil
}

// newChangeScript allocates the next change address inside t.
func (w *Wallet) newChangeScript(t *rw) ([]byte, uint32, error) {
	i, err := t.next(kNextChange)
	if err != nil {
		return nil, 0, err
	}
	_, script, _, err := w.keys.address(BranchChange, uint32(i))
	if err != nil {
		return nil, 0, err
	}
	return script, uint32(i), t.setJSON(pScript+hex.EncodeToString(script), scriptInfo{Branch: BranchChange, Index: uint32(i)})
}

// pebbleLogger sends Pebble's messages to slog: its routine chatter at debug
// level, its errors as errors.
type pebbleLogger struct{ l *slog.Logger }

func (p pebbleLogger) Infof(format string, args ...any) { p.l.Debug(fmt.Sprintf(format, args...)) }
func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...))
}
func (p pebbleLogger) Fatalf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...))
	panic(fmt.Sprintf(format, args...))
}
