// Package mediator is the daemon that coordinates a Fincrypt network: it
// keeps the registry of storage nodes and client accounts, places each
// segment's pieces on the cheapest healthy nodes, records contracts,
// challenges every node each period and repairs what is lost. peer.go wires
// the parts together; each concern has its own file:
//
//	config.go        Config, defaults, Validate
//	store.go         the Store interface (Pebble today, PostgreSQL-compatible later)
//	store_pebble.go  the Pebble implementation; model.go the records
//	registry.go      storage nodes: register, heartbeat, live pieces
//	accounts.go      client accounts
//	placement.go     choosing nodes and signing put tickets
//	contracts.go     commit, release, segment lookup
//	challenges.go    the periodic challenge round and its records
//	repair.go        marking lost pieces and rebuilding them elsewhere
//	status.go        the status report; control.go the control socket
//	endpoint.go      the QUIC request handler; nodeclient.go dialling nodes
//	client.go        the client half of the protocol
//
// The protocol is in docs/PROTOCOL.md (part 2), the state in
// docs/FORMAT.md §5.
package mediator

import (
	"errors"
	"fmt"
	"log/slog"
	stdnet "net"
	"time"

	"github.com/fincrypt/fincrypt/challenge"
	"github.com/fincrypt/fincrypt/erasure"
	fnet "github.com/fincrypt/fincrypt/net"
)

// Defaults.
const (
	DefaultPeriod            = time.Hour
	DefaultOfflineAfter      = 4 * time.Hour
	DefaultHeartbeatInterval = time.Minute
	DefaultChallengeSample   = 16
	DefaultChallengeOpenings = 4
	DefaultTicketTTL         = time.Hour
	DefaultGracePeriod       = 24 * time.Hour
	DefaultGCInterval        = time.Hour
	// DefaultRepairWorkers is the number of segments repaired at once.
	DefaultRepairWorkers = 4
	// DefaultRepairNodeTransfers bounds the repair transfers (a piece
	// fetched from a node, or put on it and verified) that run at once on
	// one node.
	DefaultRepairNodeTransfers = 2
	// MaxRepairWorkers bounds RepairWorkers and RepairNodeTransfers.
	MaxRepairWorkers = 64
)

// DefaultScheme suits a five-node devnet: any 2 of 5 pieces rebuild a
// segment (expansion 2.5), and repair starts below 4 healthy pieces.
var DefaultScheme = erasure.Scheme{K: 2, N: 5}

// DefaultRepairThreshold goes with DefaultScheme.
const DefaultRepairThreshold = 4

// ErrConfig is wrapped by every configuration error.
var ErrConfig = errors.New("invalid mediator configuration")

// Config is the mediator's configuration; zero fields take defaults
// (WithDefaults), and Validate checks the result.
type Config struct {
	// Dir holds the identity, the Pebble state (DIR/db), DIR/address and
	// the control socket DIR/control.sock.
	Dir string
	// DB, when set, is a postgres:// URL: the state (everything behind
	// Store) lives in that PostgreSQL or CockroachDB database instead of
	// DIR/db (docs/OPERATIONS.md). The identity, the wallet and snapshot
	// pointers stay in Dir.
	DB string
	// Listen is the UDP host:port for QUIC (port 0 picks one).
	Listen string
	// Advertise is the host:port others dial, when it differs from Listen.
	Advertise string
	// Scheme is the default K/N; placements may ask for another with
	// N/K >= 2.
	Scheme erasure.Scheme
	// RepairThreshold: a segment with fewer healthy pieces is repaired.
	// K < threshold <= N. For another scheme the same margin below N applies.
	RepairThreshold int
	// RepairWorkers is the number of segments a repair scan rebuilds at
	// once, most endangered first (repair.go); 1 repairs one at a time.
	RepairWorkers int
	// RepairNodeTransfers bounds the concurrent repair transfers per
	// storage node (as source or as target), so that a repair wave does not
	// swamp one node.
	RepairNodeTransfers int
	// Period between challenge rounds.
	Period time.Duration
	// OfflineAfter: a node silent this long has all its pieces counted lost.
	OfflineAfter time.Duration
	// HeartbeatInterval is what nodes are told to use.
	HeartbeatInterval time.Duration
	// OnlineWindow: a node silent longer counts as offline (not placed on,
	// not challenged). Default 3 heartbeat intervals.
	OnlineWindow time.Duration
	// ChallengeSample is the number of pieces challenged per node per round.
	ChallengeSample int
	// ChallengeOpenings is the number of leaves opened per piece.
	ChallengeOpenings int
	// ChallengeTimeout is a challenge's deadline (default min(Period/2, 30s)).
	ChallengeTimeout time.Duration
	// TicketTTL is the lifetime of tickets and of uncommitted placements.
	TicketTTL time.Duration
	// GracePeriod and GCInterval are told to nodes: they delete pieces the
	// mediator reports without contract after GracePeriod.
	GracePeriod time.Duration
	GCInterval  time.Duration
	// Network is the Bitcoin network nodes must be paid on ("" accepts any:
	// a private network without payments).
	Network string
	// Payments configures the wallet, escrow and payouts (payments.go);
	// zero: no wallet.
	Payments Payments
	// MaxPrice is the highest asking price (satoshis per GiB per month) a
	// storage node may register with; a node asking more is refused
	// (terms.go). Zero: DefaultMaxPrice.
	MaxPrice uint64
	// WarnRunway: clients are warned while their escrow lasts less than
	// this at their current usage (zero: DefaultWarnRunway).
	WarnRunway time.Duration
	// Placement is what an operator of many nodes cannot get around:
	// diversity by verified address, vetting, reputation (reputation.go).
	Placement PlacementPolicy
	// Reservations bounds what accounts may hold without uploading
	// (accounts.go).
	Reservations ReservationPolicy
	// Transport tunes QUIC and carries the connection caps and request
	// rates (fnet.Config; zero fields take the defaults).
	Transport fnet.Config
	// Logger, or slog.Default().
	Logger *slog.Logger
}

// WithDefaults returns c with zero fields set to defaults.
func (c Config) WithDefaults() Config {
	if c.Scheme == (erasure.Scheme{}) {
		c.Scheme = DefaultScheme
		if c.RepairThreshold == 0 {
			c.RepairThreshold = DefaultRepairThreshold
		}
	}
	if c.RepairThreshold == 0 {
		c.RepairThreshold = c.Scheme.K + (c.Scheme.N-c.Scheme.K+1)/2
	}
	if c.RepairWorkers == 0 {
		c.RepairWorkers = DefaultRepairWorkers
	}
	if c.RepairNodeTransfers == 0 {
		c.RepairNodeTransfers = DefaultRepairNodeTransfers
	}
	if c.Period == 0 {
		c.Period = DefaultPeriod
	}
	if c.OfflineAfter == 0 {
		c.OfflineAfter = DefaultOfflineAfter
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if c.OnlineWindow == 0 {
		c.OnlineWindow = 3 * c.HeartbeatInterval
	}
	if c.ChallengeSample == 0 {
		c.ChallengeSample = DefaultChallengeSample
	}
	if c.ChallengeOpenings == 0 {
		c.ChallengeOpenings = DefaultChallengeOpenings
	}
	if c.ChallengeTimeout == 0 {
		c.ChallengeTimeout = min(c.Period/2, 30*time.Second)
	}
	if c.TicketTTL == 0 {
		c.TicketTTL = DefaultTicketTTL
	}
	if c.GracePeriod == 0 {
		c.GracePeriod = DefaultGracePeriod
	}
	if c.GCInterval == 0 {
		c.GCInterval = DefaultGCInterval
	}
	if c.MaxPrice == 0 {
		c.MaxPrice = DefaultMaxPrice
	}
	if c.WarnRunway == 0 {
		c.WarnRunway = DefaultWarnRunway
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	c.Placement = c.Placement.withDefaults()
	c.Reservations = c.Reservations.withDefaults(c.TicketTTL)
	return c
}

// Validate checks a configuration (after WithDefaults).
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrConfig}, args...)...)
	}
	if c.Listen == "" {
		return bad("no listen address")
	}
	if c.DB != "" && !IsPostgresURL(c.DB) {
		return bad("database %q: want a postgres:// or postgresql:// URL", c.DB)
	}
	if c.Advertise != "" {
		if _, _, err := stdnet.SplitHostPort(c.Advertise); err != nil {
			return bad("advertise %q: want host:port", c.Advertise)
		}
	}
	if err := c.Scheme.CheckExpansion(); err != nil {
		return bad("scheme: %v", err)
	}
	if c.Scheme.N > fnet.MaxSegmentPieces {
		return bad("scheme %s: N above %d", c.Scheme, fnet.MaxSegmentPieces)
	}
	if c.RepairThreshold <= c.Scheme.K || c.RepairThreshold > c.Scheme.N {
		return bad("repair threshold %d: want %d < threshold <= %d", c.RepairThreshold, c.Scheme.K, c.Scheme.N)
	}
	if c.RepairWorkers < 1 || c.RepairWorkers > MaxRepairWorkers {
		return bad("repair workers %d: want 1..%d", c.RepairWorkers, MaxRepairWorkers)
	}
	if c.RepairNodeTransfers < 1 || c.RepairNodeTransfers > MaxRepairWorkers {
		return bad("repair transfers per node %d: want 1..%d", c.RepairNodeTransfers, MaxRepairWorkers)
	}
	for name, d := range map[string]time.Duration{
		"period": c.Period, "offline-after": c.OfflineAfter, "heartbeat": c.HeartbeatInterval,
		"online window": c.OnlineWindow, "challenge timeout": c.ChallengeTimeout,
		"ticket ttl": c.TicketTTL, "grace period": c.GracePeriod, "gc interval": c.GCInterval,
	} {
		if d <= 0 {
			return bad("%s %s must be positive", name, d)
		}
	}
	if c.OnlineWindow < c.HeartbeatInterval || c.OfflineAfter <= c.OnlineWindow {
		return bad("offline-after %s, online window %s, heartbeat %s: want offline-after > online window >= heartbeat", c.OfflineAfter, c.OnlineWindow, c.HeartbeatInterval)
	}
	if c.ChallengeTimeout > c.Period {
		return bad("challenge timeout %s exceeds the period %s", c.ChallengeTimeout, c.Period)
	}
	if c.GracePeriod < c.TicketTTL {
		return bad("grace period %s is shorter than the ticket lifetime %s: nodes would collect pieces before their commit", c.GracePeriod, c.TicketTTL)
	}
	if c.ChallengeSample < 1 || c.ChallengeSample > fnet.MaxChallengePieces {
		return bad("challenge sample %d: want 1..%d", c.ChallengeSample, fnet.MaxChallengePieces)
	}
	if c.ChallengeOpenings < 1 || c.ChallengeOpenings > challenge.MaxOpenings {
		return bad("challenge openings %d: want 1..%d", c.ChallengeOpenings, challenge.MaxOpenings)
	}
	if err := c.validatePrices(); err != nil {
		return bad("%v", err)
	}
	if err := c.Placement.validate(); err != nil {
		return bad("%v", err)
	}
	if err := c.Reservations.validate(c.TicketTTL); err != nil {
		return bad("%v", err)
	}
	return c.Payments.validate(c.Network)
}

// threshold is the repair threshold for a segment's scheme. A scheme other
// than the configured one keeps the same safety margin above K (repair starts
// while that many spare pieces remain), capped at N.
func (c Config) threshold(s erasure.Scheme) int {
	if s == c.Scheme {
		return c.RepairThreshold
	}
	t := s.K + (c.RepairThreshold - c.Scheme.K)
	return max(min(t, s.N), s.K+1)
}
