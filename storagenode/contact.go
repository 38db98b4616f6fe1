package storagenode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	fnet "github.com/fincrypt/fincrypt/net"
)

// ErrRegistrationRefused means the mediator refused the node's registration
// for a reason that retrying cannot fix (wrong network, bad address, bad
// request, node id): the node stops.
var ErrRegistrationRefused = errors.New("the mediator refused the registration")

// Contact keeps the node registered with its mediator: it dials, registers,
// sends heartbeats at the interval the mediator sets, and retries with
// exponential backoff while the mediator is unreachable or fails. A
// registration refused for good (ErrRegistrationRefused) ends Run.
//
// The node offers the mediator its payout network: the configured one, or
// in turn each network the payout address is valid on, until the mediator
// accepts one (it accepts only the network it pays on). The accepted one
// is kept for later registrations.
type Contact struct {
	log       *slog.Logger
	tr        *fnet.Transport
	mediator  fnet.Address
	networks  []string // candidates, the accepted one first
	register  func() *fnet.RegisterRequest
	heartbeat func() *fnet.Heartbeat
	retryMin  time.Duration
	retryMax  time.Duration
	timeout   time.Duration
	// handler serves streams the mediator opens on the connection this
	// node dialled (challenges can come either way).
	handler fnet.Handler

	mu     sync.Mutex
	conn   *fnet.Conn
	policy fnet.NodePolicy
	ok     bool // registered on conn
	regs   int  // successful registrations (for tests and logs)
	wake   chan struct{}
}

// DefaultPolicy applies until the mediator sends one.
var DefaultPolicy = fnet.NodePolicy{HeartbeatInterval: time.Minute}

func newContact(log *slog.Logger, tr *fnet.Transport, mediator fnet.Address, networks []string,
	register func() *fnet.RegisterRequest, heartbeat func() *fnet.Heartbeat, retryMin, retryMax, timeout time.Duration) *Contact {
	return &Contact{log: log, tr: tr, mediator: mediator, networks: networks, register: register, heartbeat: heartbeat,
		retryMin: retryMin, retryMax: retryMax, timeout: timeout, policy: DefaultPolicy, wake: make(chan struct{}, 1)}
}

// Policy is the mediator's latest policy and whether the node is registered.
func (c *Contact) Policy() (fnet.NodePolicy, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.policy, c.ok
}

// Call sends a request to the mediator over the registered connection.
func (c *Contact) Call(ctx context.Context, req fnet.Message) (fnet.Message, error) {
	c.mu.Lock()
	conn, ok := c.conn, c.ok
	c.mu.Unlock()
	if conn == nil || !ok {
		return nil, fmt.Errorf("mediator %s: %w", c.mediator, fnet.ErrNotRegistered)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	return conn.Call(ctx, req)
}

func (c *Contact) setPolicy(p fnet.NodePolicy) {
	if p.HeartbeatInterval <= 0 {
		p.HeartbeatInterval = DefaultPolicy.HeartbeatInterval
	}
	c.mu.Lock()
	changed := p != c.policy
	c.policy = p
	c.mu.Unlock()
	if changed {
		c.log.Info("mediator policy", "heartbeat", p.HeartbeatInterval, "grace", p.GracePeriod, "gc_interval", p.GCInterval)
	}
}

func (c *Contact) drop(conn *fnet.Conn) {
	c.mu.Lock()
	if c.conn == conn {
		c.conn, c.ok = nil, false
	}
	c.mu.Unlock()
	conn.Close()
}

// Run keeps the node registered until ctx is done.
func (c *Contact) Run(ctx context.Context) error {
	backoff := c.retryMin
	wait := func() bool {
		t := time.NewTimer(backoff)
		defer t.Stop()
		backoff = min(2*backoff, c.retryMax)
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		}
	}
	for ctx.Err() == nil {
		dctx, cancel := context.WithTimeout(ctx, c.timeout)
		conn, err := c.tr.Dial(dctx, c.mediator)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			c.log.Warn("mediator unreachable, retrying", "mediator", c.mediator, "in", backoff, "err", err)
			if !wait() {
				return nil
			}
			continue
		}
		c.mu.Lock()
		c.conn = conn
		c.mu.Unlock()
		served := make(chan struct{})
		go func() {
			defer close(served)
			if c.handler != nil {
				c.tr.ServeConn(ctx, conn, c.handler)
			}
		}()
		err = c.session(ctx, conn, &backoff)
		c.drop(conn)
		<-served
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, ErrRegistrationRefused) {
			return err
		}
		c.log.Warn("lost the mediator, retrying", "mediator", c.mediator, "in", backoff, "err", err)
		if !wait() {
			return nil
		}
	}
	return nil
}

// registerOn registers on conn, offering each candidate network in turn.
// A refusal that retrying cannot fix, for every candidate, is
// ErrRegistrationRefused; any other failure is transient.
func (c *Contact) registerOn(ctx context.Context, conn *fnet.Conn) (*fnet.RegisterReply, string, error) {
	var refusals []string
	for i, network := range c.networks {
		req := c.register()
		req.Network = network
		rctx, cancel := context.WithTimeout(ctx, c.timeout)
		rep, err := fnet.CallFor[*fnet.RegisterReply](rctx, conn, req)
		cancel()
		if err == nil {
			if i > 0 { // remember it
				c.networks = append([]string{network}, append(c.networks[:i:i], c.networks[i+1:]...)...)
			}
			return rep, network, nil
		}
		var re *fnet.RemoteError
		if !errors.As(err, &re) || !refusedForGood(re.Code) {
			return nil, "", fmt.Errorf("register: %w", err)
		}
		c.log.Debug("registration refused", "network", network, "err", err)
		refusals = append(refusals, re.Error())
	}
	return nil, "", fmt.Errorf("%w: %s (check --network, --payout-address, --advertise and --price)",
		ErrRegistrationRefused, strings.Join(refusals, "; "))
}

// refusedForGood reports whether a mediator that answered a registration
// with this code would answer the same request again the same way.
func refusedForGood(code fnet.ErrorCode) bool {
	switch code {
	case fnet.CodeBadRequest, fnet.CodeUnauthorized, fnet.CodeUnsupported:
		return true
	}
	return false
}

// session registers on conn and sends heartbeats until something fails.
func (c *Contact) session(ctx context.Context, conn *fnet.Conn, backoff *time.Duration) error {
	for {
		rep, network, err := c.registerOn(ctx, conn)
		if err != nil {
			return err
		}
		c.setPolicy(rep.Policy)
		c.mu.Lock()
		c.ok = true
		c.regs++
		c.mu.Unlock()
		*backoff = c.retryMin
		c.log.Info("registered with the mediator", "mediator", c.mediator, "network", network)
		for {
			p, _ := c.Policy()
			t := time.NewTimer(p.HeartbeatInterval)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-conn.Context().Done():
				t.Stop()
				return fmt.Errorf("connection closed: %w", context.Cause(conn.Context()))
			case <-t.C:
			}
			hctx, cancel := context.WithTimeout(ctx, c.timeout)
			hb, err := fnet.CallFor[*fnet.HeartbeatReply](hctx, conn, c.heartbeat())
			cancel()
			if errors.Is(err, fnet.ErrNotRegistered) {
				c.log.Info("mediator forgot this node, registering again")
				c.mu.Lock()
				c.ok = false
				c.mu.Unlock()
				break
			}
			if err != nil {
				return fmt.Errorf("heartbeat: %w", err)
			}
			c.setPolicy(hb.Policy)
		}
	}
}
