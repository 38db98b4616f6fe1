package mediator

// Tests of accounts.go (reservation policy, the new-account token bucket)
// at their edges (docs/TESTING.md, "mediator, eighth session").

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	fnet "github.com/fincrypt/fincrypt/net"
)

// TestReservationPolicyEdges: Validate's bounds at each edge, the
// defaults (a hold no longer than the ticket lifetime), and a hold of one
// second more per whole MiB, capped at the ticket lifetime.
func TestReservationPolicyEdges(t *testing.T) {
	const ttl = time.Hour
	ok := ReservationPolicy{AccountBytes: 1, Hold: ttl, NewAccounts: 1, NewAccountEvery: 1}
	if err := ok.validate(ttl); err != nil {
		t.Fatalf("smallest valid policy, hold = ticket lifetime: %v", err)
	}
	for name, mut := range map[string]func(*ReservationPolicy){
		"no account bytes":        func(p *ReservationPolicy) { p.AccountBytes = 0 },
		"no hold":                 func(p *ReservationPolicy) { p.Hold = 0 },
		"hold past the ticket":    func(p *ReservationPolicy) { p.Hold = ttl + 1 },
		"no new accounts":         func(p *ReservationPolicy) { p.NewAccounts = 0 },
		"no new-account interval": func(p *ReservationPolicy) { p.NewAccountEvery = 0 },
	} {
		p := ok
		mut(&p)
		if err := p.validate(ttl); err == nil {
			t.Errorf("%s: %+v accepted", name, p)
		}
	}
	d := ReservationPolicy{}.withDefaults(time.Minute)
	if d.AccountBytes != 1<<30 || d.Hold != time.Minute || d.NewAccounts != 20 || d.NewAccountEvery != time.Minute {
		t.Fatalf("defaults with a one-minute ticket: %+v", d)
	}
	if d := (ReservationPolicy{}).withDefaults(ttl); d.Hold != 2*time.Minute {
		t.Fatalf("default hold with a one-hour ticket: %s", d.Hold)
	}
	if d := ok.withDefaults(ttl); d != ok {
		t.Fatalf("withDefaults changed a set policy: %+v", d)
	}
	p := ReservationPolicy{Hold: 2 * time.Minute}
	for _, tc := range []struct {
		bytes int64
		ttl   time.Duration
		want  time.Duration
	}{
		{0, ttl, 2 * time.Minute},
		{1<<20 - 1, ttl, 2 * time.Minute},
		{3 << 20, ttl, 2*time.Minute + 3*time.Second},
		{3 << 20, 2*time.Minute + time.Second, 2*time.Minute + time.Second},
	} {
		if got := p.hold(tc.bytes, tc.ttl); got != tc.want {
			t.Errorf("hold of %d bytes, ticket %s: %s, want %s", tc.bytes, tc.ttl, got, tc.want)
		}
	}
}

// TestNewAccountBucket: a burst of tokens per key, refilled one per
// interval and never beyond the burst; a key's bucket is its own; once
// the map holds more than 4096 keys the full buckets are forgotten.
func TestNewAccountBucket(t *testing.T) {
	var b buckets
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const every = time.Minute
	for i := range 2 {
		if !b.take("a", 2, every, t0) {
			t.Fatalf("token %d of a burst of 2 refused", i)
		}
	}
	if b.take("a", 2, every, t0) {
		t.Fatal("third token of a burst of 2 given")
	}
	if !b.take("b", 2, every, t0) {
		t.Fatal("another key held up")
	}
	if b.take("a", 2, every, t0.Add(every-1)) {
		t.Fatal("a token given before an interval passed")
	}
	if !b.take("a", 2, every, t0.Add(every)) || b.take("a", 2, every, t0.Add(every)) {
		t.Fatal("after one interval: want exactly one token")
	}
	later := t0.Add(100 * every)
	for i := range 2 {
		if !b.take("a", 2, every, later) {
			t.Fatalf("after a long pause, token %d of 2 refused", i)
		}
	}
	if b.take("a", 2, every, later) {
		t.Fatal("a long pause filled the bucket beyond its burst")
	}

	// Memory: 4097 keys, each one token taken; an interval later they are
	// full again and the next take forgets them.
	var m buckets
	for i := range 4097 {
		m.take(fmt.Sprint(i), 2, every, t0)
	}
	if len(m.last) != 4097 {
		t.Fatalf("%d keys kept, want 4097", len(m.last))
	}
	m.take("new", 2, every, t0.Add(every))
	if len(m.last) != 1 {
		t.Fatalf("%d keys kept after their buckets refilled, want only the new one", len(m.last))
	}
}

// TestRegisterAccountAgainTakesNoToken: registering an account that exists
// answers "not new" and does not use up its network's new-account tokens.
func TestRegisterAccountAgainTakesNoToken(t *testing.T) {
	w := newWorld(t, 0)
	w.c.cfg.Reservations.NewAccounts = 1
	ctx := fnet.WithRemoteIP(context.Background(), netip.MustParseAddr("192.0.2.7"))
	id, _ := fnet.GenerateIdentity()
	acct := fnet.AccountID(id.ID())
	if fresh, err := w.c.RegisterAccount(ctx, acct); err != nil || !fresh {
		t.Fatalf("first registration: %v, %v", fresh, err)
	}
	for i := range 3 {
		if fresh, err := w.c.RegisterAccount(ctx, acct); err != nil || fresh {
			t.Fatalf("registration %d of an existing account: new %v, %v", i+2, fresh, err)
		}
	}
	other, _ := fnet.GenerateIdentity()
	if _, err := w.c.RegisterAccount(ctx, fnet.AccountID(other.ID())); !errors.Is(err, ErrNewAccountRate) {
		t.Fatalf("a second new account from the network: %v, want ErrNewAccountRate", err)
	}
	if err := w.c.requireAccount(context.Background(), fnet.AccountID(other.ID())); !errors.Is(err, ErrUnknownAccount) {
		t.Fatalf("refused account: %v, want ErrUnknownAccount", err)
	}
	if err := w.c.requireAccount(context.Background(), acct); err != nil {
		t.Fatal(err)
	}
}
