package mediator

import (
	"context"
	"fmt"
	"math"
	"time"

	fnet "github.com/fincrypt/fincrypt/net"
	"github.com/fincrypt/fincrypt/wallet"
)

// Prices are satoshis per GiB per month (wallet.GiB, wallet.Month).
const (
	// TypicalPrice is about what storage sells for: cloud object storage
	// costs $0.005-0.025 per GB-month and a decentralised network's
	// operators earn less; at $100 000 per bitcoin 100 sat is $0.10, a
	// generous price for a storage node.
	TypicalPrice = 100
	// DefaultMaxPrice is 100 times TypicalPrice: room for the bitcoin
	// price to fall and for premium nodes, while a node that asks
	// millions of satoshis (a typo, or a node set up to drain escrow) is
	// refused at registration.
	DefaultMaxPrice = 100 * TypicalPrice
	// MaxMaxPrice bounds MaxPrice: every bitcoin there is per GiB-month
	// (settlement caps a price there anyway).
	MaxMaxPrice = 21_000_000 * 100_000_000
	// DefaultWarnRunway: clients are warned a week before their escrow
	// runs out.
	DefaultWarnRunway = 7 * 24 * time.Hour
)

func (c Config) validatePrices() error {
	if c.MaxPrice > MaxMaxPrice {
		return fmt.Errorf("max price %d sat per GiB-month: want at most %d", c.MaxPrice, uint64(MaxMaxPrice))
	}
	if c.WarnRunway < 0 {
		return fmt.Errorf("warn runway %s must not be negative", c.WarnRunway)
	}
	return nil
}

// checkPrice refuses (BadRequest, which a node does not retry) a node whose
// asking price is above the mediator's limit; the message names both.
func (c *core) checkPrice(price uint64) error {
	if price > c.cfg.MaxPrice {
		return fmt.Errorf("%w: asking price %d sat per GiB-month is above this mediator's limit of %d (--max-price); lower --price",
			fnet.ErrBadRequest, price, c.cfg.MaxPrice)
	}
	return nil
}

// accountTerms is what an account paid for in the last settled period:
// the bytes its pieces took on the nodes and their mean price.
type accountTerms struct {
	Bytes int64  // piece bytes held for the account
	Price uint64 // sat per GiB-month, weighted by bytes
}

// runway is how long escrow lasts at the terms; -1 when nothing is charged.
func (t accountTerms) runway(escrow int64) time.Duration {
	m := float64(t.Bytes) * float64(t.Price) / wallet.GiB
	if m <= 0 {
		return -1
	}
	if escrow <= 0 {
		return 0
	}
	r := float64(escrow) / m * float64(wallet.Month)
	if r >= math.MaxInt64 {
		return math.MaxInt64
	}
	return time.Duration(r)
}

// termsCache holds every account's terms of one settled period, computed
// once from that period's records when a client first asks.
type termsCache struct {
	period int64 // unix ns of the period's start (CounterSettled)
	terms  map[fnet.AccountID]accountTerms
}

// accountTermsOf returns the account's terms in the last settled period
// (zero before the first).
func (c *core) accountTermsOf(ctx context.Context, acct fnet.AccountID) (accountTerms, error) {
	through, err := c.store.Counter(ctx, CounterSettled)
	if err != nil || through == 0 {
		return accountTerms{}, err
	}
	c.termsMu.Lock()
	defer c.termsMu.Unlock()
	if c.terms.terms == nil || c.terms.period != through {
		recs, err := c.store.PeriodRecords(ctx, time.Unix(0, through), time.Unix(0, through+1))
		if err != nil {
			return accountTerms{}, err
		}
		type sum struct{ bytes, cost float64 }
		sums := map[fnet.AccountID]*sum{}
		for _, r := range recs {
			s := sums[r.Account]
			if s == nil {
				s = &sum{}
				sums[r.Account] = s
			}
			s.bytes += float64(r.Bytes)
			s.cost += float64(r.Bytes) * float64(min(r.Price, MaxMaxPrice))
		}
		terms := make(map[fnet.AccountID]accountTerms, len(sums))
		for a, s := range sums {
			if s.bytes > 0 {
				terms[a] = accountTerms{Bytes: int64(s.bytes), Price: uint64(s.cost / s.bytes)}
			}
		}
		c.terms = termsCache{period: through, terms: terms}
	}
	return c.terms.terms[acct], nil
}

// fillTerms adds to a metered BalanceReply what the account pays (its
// terms in the last settled period), how long its escrow lasts at them,
// and sets Low while that is shorter than WarnRunway.
func (c *core) fillTerms(ctx context.Context, acct fnet.AccountID, rep *fnet.BalanceReply, delinquentSince time.Time) error {
	t, err := c.accountTermsOf(ctx, acct)
	if err != nil {
		return fmt.Errorf("balance: %w", err)
	}
	rep.Bytes, rep.Price = t.Bytes, t.Price
	rep.Runway = t.runway(rep.Escrow)
	rep.WarnRunway = c.cfg.WarnRunway
	rep.DelinquentSince = delinquentSince
	rep.Low = rep.Delinquent || rep.Debt < 0 || (rep.Runway >= 0 && rep.Runway < c.cfg.WarnRunway)
	return nil
}
