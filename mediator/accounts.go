package mediator

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	fnet "github.com/fincrypt/fincrypt/net"
)

// Errors of the reservation limits; each wraps fnet.ErrBusy (try later).
var (
	ErrAccountQuota   = fmt.Errorf("account's uncommitted placements reach its quota (%w)", fnet.ErrBusy)
	ErrNewAccountRate = fmt.Errorf("too many new accounts from this network; try later (%w)", fnet.ErrBusy)
)

// ReservationPolicy bounds what an account may hold without uploading, so
// that accounts which ask for placements and never upload cannot take the
// network's room (docs/SECURITY.md, "Adversaries").
type ReservationPolicy struct {
	// AccountBytes bounds the bytes (pieces times piece size) that one
	// account's uncommitted placements reserve on the nodes (default 1
	// GiB). With payments the escrow bounds them too: the reserved bytes
	// at their nodes' prices must not cost more for one period than the
	// account's confirmed escrow, beyond one placement at a time.
	AccountBytes int64
	// Hold is how long a placement keeps its room reserved before the
	// bytes should have arrived (default 2 minutes, at most the ticket
	// lifetime), plus one second per MiB of the placement. A commit
	// within the ticket lifetime still succeeds after it (the nodes check
	// their own room); an abandoned placement (Release) frees its room at
	// once.
	Hold time.Duration
	// NewAccounts is how many accounts one network (IPv4 /24, IPv6 /48)
	// may create at once (default 20); then one per NewAccountEvery
	// (default 1 minute).
	NewAccounts     int
	NewAccountEvery time.Duration
}

func (p ReservationPolicy) withDefaults(ticketTTL time.Duration) ReservationPolicy {
	if p.AccountBytes == 0 {
		p.AccountBytes = 1 << 30
	}
	if p.Hold == 0 {
		p.Hold = min(2*time.Minute, ticketTTL)
	}
	if p.NewAccounts == 0 {
		p.NewAccounts = 20
	}
	if p.NewAccountEvery == 0 {
		p.NewAccountEvery = time.Minute
	}
	return p
}

func (p ReservationPolicy) validate(ticketTTL time.Duration) error {
	switch {
	case p.AccountBytes <= 0:
		return fmt.Errorf("reserved bytes per account %d must be positive", p.AccountBytes)
	case p.Hold <= 0 || p.Hold > ticketTTL:
		return fmt.Errorf("reservation hold %s: want 0 < hold <= ticket ttl %s", p.Hold, ticketTTL)
	case p.NewAccounts < 1:
		return fmt.Errorf("new accounts %d: want >= 1", p.NewAccounts)
	case p.NewAccountEvery <= 0:
		return fmt.Errorf("new account interval %s must be positive", p.NewAccountEvery)
	}
	return nil
}

// hold is how long a placement of bytes keeps its room reserved.
func (p ReservationPolicy) hold(bytes int64, ticketTTL time.Duration) time.Duration {
	return min(p.Hold+time.Duration(bytes>>20)*time.Second, ticketTTL)
}

// buckets is a token bucket per key.
type buckets struct {
	mu   sync.Mutex
	last map[string]bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

// take takes a token from key's bucket of burst tokens refilled one per
// every; false if it is empty.
func (b *buckets) take(key string, burst int, every time.Duration, now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.last == nil {
		b.last = map[string]bucket{}
	}
	k, ok := b.last[key]
	if !ok {
		k = bucket{tokens: float64(burst), at: now}
	}
	k.tokens = min(float64(burst), k.tokens+float64(now.Sub(k.at))/float64(every))
	k.at = now
	if k.tokens < 1 {
		b.last[key] = k
		return false
	}
	k.tokens--
	b.last[key] = k
	// Forget full buckets now and then, so that the map stays small.
	if len(b.last) > 4096 {
		for key, v := range b.last {
			if v.tokens+float64(now.Sub(v.at))/float64(every) >= float64(burst) {
				delete(b.last, key)
			}
		}
	}
	return true
}

// RegisterAccount creates the account of the connection's peer; it is
// idempotent and reports whether the account is new. Only the holder of the
// account key can open such a connection, so only it acts on the account.
// New accounts are rate-limited per network of the connection's address.
func (c *core) RegisterAccount(ctx context.Context, acct fnet.AccountID) (bool, error) {
	if _, err := c.store.GetAccount(ctx, acct); err == nil {
		return false, nil
	} else if !errors.Is(err, ErrNotFound) {
		return false, err
	}
	key := "unknown"
	if ip, ok := fnet.RemoteIP(ctx); ok {
		key = subnetOf(ip)
	}
	p := c.cfg.Reservations
	if !c.newAccounts.take(key, p.NewAccounts, p.NewAccountEvery, c.now()) {
		return false, fmt.Errorf("%w: network %s", ErrNewAccountRate, key)
	}
	err := c.store.CreateAccount(ctx, &Account{ID: acct, Created: c.now()})
	if errors.Is(err, ErrExists) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("account %s: %w", fnet.NodeID(acct), err)
	}
	c.log.Info("account registered", "account", fnet.NodeID(acct))
	return true, nil
}

func (c *core) requireAccount(ctx context.Context, acct fnet.AccountID) error {
	_, err := c.store.GetAccount(ctx, acct)
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("%w: %s", ErrUnknownAccount, fnet.NodeID(acct))
	}
	return err
}
