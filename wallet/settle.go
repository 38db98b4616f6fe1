package wallet

import (
	"errors"
	"fmt"
	"math/big"
	"sort"
	"time"

	"github.com/btcsuite/btcd/chaincfg"
)

// Pricing constants: a price is satoshis per GiB per Month.
const (
	GiB   = 1 << 30
	Month = 30 * 24 * time.Hour
	// MaxFeeBPS is the largest mediator fee, in basis points (100%).
	MaxFeeBPS = 10_000
)

// ErrBadPeriod means a settlement input is malformed.
var ErrBadPeriod = errors.New("bad settlement input")

// NodeTerms are a storage node's terms for a period.
type NodeTerms struct {
	ID                  string `json:"id"`
	PriceSatPerGiBMonth int64  `json:"price_sat_per_gib_month"`
	PayoutAddress       string `json:"payout_address"`
}

// Holding says how many bytes of an account's pieces a node held during the
// period and whether it passed every challenge on them.
type Holding struct {
	Node    string `json:"node"`
	Account string `json:"account"`
	Bytes   int64  `json:"bytes"`
	Passed  bool   `json:"passed"`
	// Price, when set, is the contract price of these bytes (sat per GiB
	// per month); nil: the node's price in Nodes.
	Price *int64 `json:"price,omitempty"`
}

// PeriodInput is what the mediator gives Settle once per period.
type PeriodInput struct {
	Period   uint64        `json:"period"` // increasing period number
	End      time.Time     `json:"end"`    // when the period ended
	Length   time.Duration `json:"length"`
	FeeBPS   uint32        `json:"fee_bps"` // mediator fee, basis points of what clients pay
	Nodes    []NodeTerms   `json:"nodes"`
	Holdings []Holding     `json:"holdings"`
	// Unmetered records the period without payments (a mediator without a
	// Bitcoin node): what each node earned goes from ext:unmetered to
	// unmetered:<node>, which is never paid out; escrow, node balances, fees
	// and delinquency are untouched.
	Unmetered bool `json:"unmetered,omitempty"`
}

// SettleLine is the outcome for one (node, account) pair.
type SettleLine struct {
	Node      string `json:"node"`
	Account   string `json:"account"`
	Bytes     int64  `json:"bytes"`
	Passed    bool   `json:"passed"`
	Owed      int64  `json:"owed"`      // pro-rated price (0 if failed)
	Charged   int64  `json:"charged"`   // taken from escrow (Owed, or less if escrow ran out)
	Fee       int64  `json:"fee"`       // to the mediator
	Earned    int64  `json:"earned"`    // to the node: Charged - Fee
	Shortfall int64  `json:"shortfall"` // Owed - Charged
}

// PeriodReport is the result of settling a period; it is stored, and
// settling the same period again returns it with Repeated set.
type PeriodReport struct {
	Period     uint64       `json:"period"`
	Unmetered  bool         `json:"unmetered,omitempty"`
	Lines      []SettleLine `json:"lines"`
	Delinquent []string     `json:"delinquent,omitempty"` // accounts whose escrow did not cover the period
	Repeated   bool         `json:"-"`
}

// proRateDen is the denominator of a pro-rated amount: bytes * price *
// nanoseconds / (GiB * Month in ns).
var proRateDen = new(big.Int).Mul(big.NewInt(GiB), big.NewInt(int64(Month)))

// ProRate returns floor((bytes*price*length + carry) / (GiB*Month)) satoshis
// and the new carry (the remainder, in units of 1/(GiB*Month ns) satoshi).
// Rounding down never creates money; the carry keeps the fractions so that
// over many periods a node is paid floor of the exact total.
func ProRate(bytes, pricePerGiBMonth int64, length time.Duration, carry *big.Int) (int64, *big.Int) {
	num := new(big.Int).Mul(big.NewInt(bytes), big.NewInt(pricePerGiBMonth))
	num.Mul(num, big.NewInt(int64(length)))
	if carry != nil {
		num.Add(num, carry)
	}
	q, r := new(big.Int).QuoRem(num, proRateDen, new(big.Int))
	if !q.IsInt64() {
		return -1, nil // caller rejects: more than int64 satoshis
	}
	return q.Int64(), r
}

// splitProportional divides total among weights with floor(total*w/sum);
// the result never sums to more than total.
func splitProportional(total int64, weights []int64) []int64 {
	out := make([]int64, len(weights))
	var sum int64
	for _, w := range weights {
		sum += w
	}
	if sum == 0 {
		return out
	}
	for i, w := range weights {
		x := new(big.Int).Mul(big.NewInt(total), big.NewInt(w))
		out[i] = x.Quo(x, big.NewInt(sum)).Int64()
	}
	return out
}

func (in *PeriodInput) validate(net *chaincfg.Params) (map[string]NodeTerms, error) {
	if in.Length <= 0 || in.Length > 366*24*time.Hour {
		return nil, fmt.Errorf("%w: period length %v", ErrBadPeriod, in.Length)
	}
	if in.FeeBPS > MaxFeeBPS {
		return nil, fmt.Errorf("%w: fee %d bps > %d", ErrBadPeriod, in.FeeBPS, MaxFeeBPS)
	}
	nodes := map[string]NodeTerms{}
	for _, n := range in.Nodes {
		if err := CheckID(n.ID); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadPeriod, err)
		}
		if _, dup := nodes[n.ID]; dup {
			return nil, fmt.Errorf("%w: node %s listed twice", ErrBadPeriod, n.ID)
		}
		if n.PriceSatPerGiBMonth < 0 || n.PriceSatPerGiBMonth > 21e14 {
			return nil, fmt.Errorf("%w: node %s price %d", ErrBadPeriod, n.ID, n.PriceSatPerGiBMonth)
		}
		if n.PayoutAddress != "" {
			if _, err := CheckPayoutAddress(n.PayoutAddress, net); err != nil {
				return nil, fmt.Errorf("%w: node %s: %v", ErrBadPeriod, n.ID, err)
			}
		}
		nodes[n.ID] = n
	}
	seen := map[[2]string]bool{}
	for _, h := range in.Holdings {
		if _, ok := nodes[h.Node]; !ok {
			return nil, fmt.Errorf("%w: holding on unknown node %q", ErrBadPeriod, h.Node)
		}
		if err := CheckID(h.Account); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadPeriod, err)
		}
		if h.Bytes < 0 {
			return nil, fmt.Errorf("%w: node %s account %s holds %d bytes", ErrBadPeriod, h.Node, h.Account, h.Bytes)
		}
		if h.Price != nil && (*h.Price < 0 || *h.Price > 21e14) {
			return nil, fmt.Errorf("%w: node %s account %s price %d", ErrBadPeriod, h.Node, h.Account, *h.Price)
		}
		k := [2]string{h.Node, h.Account}
		if seen[k] {
			return nil, fmt.Errorf("%w: node %s account %s listed twice", ErrBadPeriod, h.Node, h.Account)
		}
		seen[k] = true
	}
	return nodes, nil
}

// SettleKey is the idempotency key of one (node, account) line of a period.
func SettleKey(period uint64, node, account string) string {
	return fmt.Sprintf("settle/%d/%s/%s", period, node, account)
}

// Settle settles one period: every node earns its pro-rated price for the
// bytes of each account it held and passed its challenges on; the amount
// moves from the account's escrow to the node, less the mediator's fee.
// When an account's escrow does not cover what it owes, each of its lines is
// charged floor(escrow*owed/total) and the rest is recorded as shortfall;
// the account becomes delinquent. The whole period commits atomically, and
// settling the same period again changes nothing and returns the stored
// report (Repeated set).
func (w *Wallet) Settle(in PeriodInput) (*PeriodReport, error) {
	nodes, err := in.validate(w.net)
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	t := w.begin()
	defer t.discard()
	var prev PeriodReport
	if ok, err := t.getJSON(pSettled+be64(in.Period), &prev); err != nil {
		return nil, err
	} else if ok {
		prev.Repeated = true
		return &prev, nil
	}
	hs := append([]Holding(nil), in.Holdings...)
	sort.Slice(hs, func(i, j int) bool {
		if hs[i].Account != hs[j].Account {
			return hs[i].Account < hs[j].Account
		}
		return hs[i].Node < hs[j].Node
	})
	rep := &PeriodReport{Period: in.Period, Unmetered: in.Unmetered}
	carries := map[int]*big.Int{}
	for i, h := range hs {
		line := SettleLine{Node: h.Node, Account: h.Account, Bytes: h.Bytes, Passed: h.Passed}
		if h.Passed && h.Bytes > 0 {
			ck := pCarry + h.Node + "/" + h.Account
			c, _, err := t.get(ck)
			if err != nil {
				return nil, err
			}
			price := nodes[h.Node].PriceSatPerGiBMonth
			if h.Price != nil {
				price = *h.Price
			}
			owed, carry := ProRate(h.Bytes, price, in.Length, new(big.Int).SetBytes(c))
			if owed < 0 {
				return nil, fmt.Errorf("%w: node %s account %s owes more than 2^63 sat", ErrBadPeriod, h.Node, h.Account)
			}
			line.Owed = owed
			carries[i] = carry
		}
		rep.Lines = append(rep.Lines, line)
	}
	now := w.cfg.Now()
	if in.End.IsZero() {
		in.End = now
	}
	// Per account: charge what escrow covers.
	for start := 0; start < len(rep.Lines); {
		end := start
		acct := rep.Lines[start].Account
		var total int64
		for end < len(rep.Lines) && rep.Lines[end].Account == acct {
			total += rep.Lines[end].Owed
			end++
		}
		lines := rep.Lines[start:end]
		if in.Unmetered {
			for i := range lines {
				l := &lines[i]
				l.Earned = l.Owed
				if _, err := t.post(SettleKey(in.Period, l.Node, l.Account), fmt.Sprintf("period %d: %d bytes, unmetered", in.Period, l.Bytes), now,
					Posting{AcctExtUnmetered, -l.Owed}, Posting{UnmeteredAccount(l.Node), l.Owed}); err != nil {
					return nil, err
				}
			}
			start = end
			continue
		}
		escrow, err := t.balance(EscrowAccount(acct))
		if err != nil {
			return nil, err
		}
		short := false
		if escrow >= total {
			for i := range lines {
				lines[i].Charged = lines[i].Owed
			}
		} else {
			short = true
			weights := make([]int64, len(lines))
			for i := range lines {
				weights[i] = lines[i].Owed
			}
			for i, c := range splitProportional(escrow, weights) {
				lines[i].Charged = c
			}
		}
		var charged int64
		for i := range lines {
			l := &lines[i]
			l.Shortfall = l.Owed - l.Charged
			l.Fee = l.Charged * int64(in.FeeBPS) / MaxFeeBPS
			l.Earned = l.Charged - l.Fee
			charged += l.Charged
			if _, err := t.post(SettleKey(in.Period, l.Node, l.Account), fmt.Sprintf("period %d: %d bytes", in.Period, l.Bytes), now,
				Posting{EscrowAccount(acct), -l.Charged},
				Posting{NodeAccount(l.Node), l.Earned},
				Posting{AcctFeesMediator, l.Fee}); err != nil {
				return nil, err
			}
		}
		// The account's charge is what the period cost (owed), not what the
		// escrow could still pay: runway and the end of delinquency are
		// measured against it.
		if err := t.setInt(pCharge+acct, total); err != nil {
			return nil, err
		}
		debt, err := t.balance(DebtAccount(acct))
		if err != nil {
			return nil, err
		}
		if short {
			rep.Delinquent = append(rep.Delinquent, acct)
		}
		// A period the escrow covered ends delinquency only if what is left
		// also covers the runway; the grace keeps running from the first
		// missed period otherwise.
		left := escrow - charged
		if err := w.setDelinquent(t, acct, short || debt < 0 || !w.coversRunway(left, total), in.Period, in.End, short || debt < 0); err != nil {
			return nil, err
		}
		start = end
	}
	for _, n := range in.Nodes {
		if n.PayoutAddress != "" {
			if err := t.set(pNodeAddr+n.ID, []byte(n.PayoutAddress)); err != nil {
				return nil, err
			}
		}
	}
	for i, c := range carries {
		l := rep.Lines[i]
		if err := t.set(pCarry+l.Node+"/"+l.Account, c.Bytes()); err != nil {
			return nil, err
		}
	}
	if err := t.setJSON(pSettled+be64(in.Period), rep); err != nil {
		return nil, err
	}
	if err := t.commit(); err != nil {
		return nil, err
	}
	w.log.Info("period settled", "period", in.Period, "lines", len(rep.Lines), "delinquent", len(rep.Delinquent))
	return rep, nil
}

// delinquency is the stored record of an account that ran out of escrow.
type delinquency struct {
	SincePeriod uint64    `json:"since_period"`
	Since       time.Time `json:"since"`
}

// setDelinquent records the account's standing after a period: stay
// says it may not leave delinquency (escrow below the runway, or in debt),
// start that it enters it (the period was not covered). A delinquency keeps
// the time it started.
func (w *Wallet) setDelinquent(t *rw, acct string, stay bool, period uint64, at time.Time, start bool) error {
	var d delinquency
	was, err := t.getJSON(pDelinquent+acct, &d)
	if err != nil {
		return err
	}
	now := start || (was && stay)
	switch {
	case now && !was:
		w.log.Warn("account delinquent", "account", acct, "period", period)
		return t.setJSON(pDelinquent+acct, delinquency{SincePeriod: period, Since: at.UTC()})
	case !now && was:
		return t.del(pDelinquent + acct)
	}
	return nil
}

// AccountStatus is a client account's standing, for placement decisions and
// `fincrypt wallet balance` / `fincrypt status`.
type AccountStatus struct {
	Account        string `json:"account"`
	DepositAddress string `json:"deposit_address,omitempty"`
	Escrow         int64  `json:"escrow"` // credited, unspent satoshis
	Debt           int64  `json:"debt"`   // <= 0: owed after a reorg took back a spent deposit
	Pending        int64  `json:"pending"`
	LastCharge     int64  `json:"last_charge"` // what the last settled period cost, sat (owed: more than was taken when the escrow ran short)
	// PeriodsLeft is Escrow / LastCharge (-1 when nothing was charged).
	PeriodsLeft int64 `json:"periods_left"`
	// Needed is the escrow new placements need, and that ends delinquency
	// (with no debt): RunwayPeriods × LastCharge, at least 1 sat.
	Needed     int64 `json:"needed"`
	Delinquent bool  `json:"delinquent"`
	// DelinquentSince and ReleaseAt (DelinquentSince + grace period) are set
	// when Delinquent: after ReleaseAt the account's segments may be released.
	DelinquentSince time.Time `json:"delinquent_since,omitzero"`
	ReleaseAt       time.Time `json:"release_at,omitzero"`
}

// WarnRunway is how much escrow time left makes `fincrypt status` warn.
const WarnRunway = 14 * 24 * time.Hour

// Runway is how long the escrow lasts at the last period's charge, for
// periods of the given length; -1 when nothing was charged yet.
func (s AccountStatus) Runway(period time.Duration) time.Duration {
	if s.PeriodsLeft < 0 {
		return -1
	}
	return time.Duration(s.PeriodsLeft) * period
}

// LowEscrow reports whether a client should be warned: it is delinquent, or
// its escrow lasts less than WarnRunway at its current usage.
func (s AccountStatus) LowEscrow(period time.Duration) bool {
	r := s.Runway(period)
	return s.Delinquent || s.Debt < 0 || (r >= 0 && r < WarnRunway)
}

// CanPlace reports whether the account may get new placements: not
// delinquent, no debt, and escrow for the runway (Needed, at least 1 sat).
func (s AccountStatus) CanPlace() bool {
	return !s.Delinquent && s.Escrow > 0 && s.Escrow >= s.Needed && s.Debt == 0
}

// coversRunway reports whether escrow lasts RunwayPeriods at charge per
// period (and is positive).
func (w *Wallet) coversRunway(escrow, charge int64) bool {
	return escrow > 0 && escrow >= w.runwayNeed(charge)
}

// runwayNeed is RunwayPeriods times charge, saturating.
func (w *Wallet) runwayNeed(charge int64) int64 {
	r := int64(w.cfg.RunwayPeriods)
	if charge > 0 && charge > (1<<62)/r {
		return 1 << 62
	}
	return max(charge*r, 1)
}

// AccountStatus returns an account's standing. Pending counts deposits seen
// on chain that do not yet have enough confirmations.
func (w *Wallet) AccountStatus(account string) (AccountStatus, error) {
	if err := CheckID(account); err != nil {
		return AccountStatus{}, err
	}
	t := w.begin()
	defer t.discard()
	st := AccountStatus{Account: account, PeriodsLeft: -1}
	var err error
	if st.Escrow, err = t.balance(EscrowAccount(account)); err != nil {
		return st, err
	}
	if st.Debt, err = t.balance(DebtAccount(account)); err != nil {
		return st, err
	}
	if st.LastCharge, err = t.getInt(pCharge + account); err != nil {
		return st, err
	}
	if st.LastCharge > 0 {
		st.PeriodsLeft = st.Escrow / st.LastCharge
	}
	st.Needed = w.runwayNeed(st.LastCharge)
	var d delinquency
	ok, err := t.getJSON(pDelinquent+account, &d)
	if err != nil {
		return st, err
	}
	if ok {
		st.Delinquent, st.DelinquentSince, st.ReleaseAt = true, d.Since, d.Since.Add(w.cfg.GracePeriod)
	}
	if idx, ok, err := t.get(pAccount + account); err != nil {
		return st, err
	} else if ok {
		a, _, _, err := w.keys.address(BranchDeposit, uint32(beUint(idx)))
		if err != nil {
			return st, err
		}
		st.DepositAddress = a.EncodeAddress()
	}
	err = t.scan(pUTXO, func(k string, v []byte) error {
		u, err := decodeUTXO(v)
		if err != nil {
			return err
		}
		if u.Account == account && u.CreditKey == "" {
			st.Pending += u.Value
		}
		return nil
	})
	return st, err
}

// Releasable lists delinquent accounts whose grace period ended by now.
func (w *Wallet) Releasable(now time.Time) ([]string, error) {
	t := w.begin()
	defer t.discard()
	var out []string
	err := t.scan(pDelinquent, func(k string, v []byte) error {
		var d delinquency
		if err := jsonUnmarshal(v, &d); err != nil {
			return fmt.Errorf("delinquency %s: %w", k, err)
		}
		if !now.Before(d.Since.Add(w.cfg.GracePeriod)) {
			out = append(out, k)
		}
		return nil
	})
	return out, err
}

// SetPayoutAddress records a node's payout address after checking it against
// the wallet's network (a node's registration calls it; Settle also records
// the addresses in its input).
func (w *Wallet) SetPayoutAddress(node, addr string) error {
	if err := CheckID(node); err != nil {
		return err
	}
	if _, err := CheckPayoutAddress(addr, w.net); err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	t := w.begin()
	defer t.discard()
	if err := t.set(pNodeAddr+node, []byte(addr)); err != nil {
		return err
	}
	return t.commit()
}
