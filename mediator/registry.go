package mediator

import (
	"context"
	"errors"
	"fmt"
	stdnet "net"
	"net/netip"
	"slices"

	"github.com/fincrypt/fincrypt/wallet"

	fnet "github.com/fincrypt/fincrypt/net"
)

// policy is what nodes are told on registration and heartbeat.
func (c *core) policy() fnet.NodePolicy {
	return fnet.NodePolicy{
		HeartbeatInterval: c.cfg.HeartbeatInterval,
		GracePeriod:       c.cfg.GracePeriod,
		GCInterval:        c.cfg.GCInterval,
	}
}

// Register records (or refreshes) a storage node; peer is the node id the
// connection authenticated.
func (c *core) Register(ctx context.Context, peer fnet.NodeID, req *fnet.RegisterRequest) (fnet.NodePolicy, error) {
	if req.Node != peer {
		return fnet.NodePolicy{}, fmt.Errorf("%w: registration for node %s over a connection from %s", fnet.ErrUnauthorized, req.Node, peer)
	}
	if err := c.checkPrice(req.Price); err != nil {
		return fnet.NodePolicy{}, err
	}
	addr, err := fnet.ParseAddress(req.Address)
	if err != nil {
		return fnet.NodePolicy{}, fmt.Errorf("%w: %v", fnet.ErrBadRequest, err)
	}
	if addr.ID != peer {
		return fnet.NodePolicy{}, fmt.Errorf("%w: address %s names another node", fnet.ErrBadRequest, req.Address)
	}
	if c.cfg.Network != "" && !sameNetwork(req.Network, c.cfg.Network) {
		return fnet.NodePolicy{}, fmt.Errorf("%w: node is paid on %q, this mediator on %q", fnet.ErrBadRequest, req.Network, c.cfg.Network)
	}
	if c.cfg.Network != "" {
		// The address itself must be of the network, not only the name the node gave.
		params, err := wallet.ParseNetwork(c.cfg.Network)
		if err != nil {
			return fnet.NodePolicy{}, err
		}
		if _, err := wallet.CheckPayoutAddress(req.PayoutAddress, params); err != nil {
			return fnet.NodePolicy{}, fmt.Errorf("%w: payout address: %v", fnet.ErrBadRequest, err)
		}
	}
	if err := c.checkPayout(peer, req.PayoutAddress); err != nil {
		return fnet.NodePolicy{}, err
	}
	ip, err := c.verifyAddress(ctx, addr)
	if err != nil {
		c.log.Info("storage node address refused", "node", peer, "address", req.Address, "err", err)
		return fnet.NodePolicy{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	n, err := c.store.GetNode(ctx, peer)
	isNew := errors.Is(err, ErrNotFound)
	if isNew {
		n = &Node{ID: peer, Registered: now}
		c.log.Info("storage node registered", "node", peer, "address", req.Address, "capacity", req.Capacity, "price", req.Price)
	} else if err != nil {
		return fnet.NodePolicy{}, err
	}
	n.Address, n.IP = req.Address, ip
	n.Capacity, n.Used, n.Pieces = req.Capacity, req.Used, req.Pieces
	if err := c.notePrice(ctx, n, n.Price, req.Price, isNew, now); err != nil { // contract prices (prices.go)
		return fnet.NodePolicy{}, err
	}
	n.PayoutAddress, n.Network = req.PayoutAddress, req.Network
	n.LastSeen = now
	if err := c.store.PutNode(ctx, n); err != nil {
		return fnet.NodePolicy{}, err
	}
	return c.policy(), nil
}

// Heartbeat refreshes a registered node; an unknown node gets
// fnet.ErrNotRegistered and registers again.
func (c *core) Heartbeat(ctx context.Context, peer fnet.NodeID, hb *fnet.Heartbeat) (fnet.NodePolicy, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, err := c.store.GetNode(ctx, peer)
	if errors.Is(err, ErrNotFound) {
		return fnet.NodePolicy{}, fmt.Errorf("node %s: %w", peer, fnet.ErrNotRegistered)
	}
	if err != nil {
		return fnet.NodePolicy{}, err
	}
	// The verified address is where the node's connection comes from; a
	// node that moved (or a record from before verification) registers
	// again and is verified again.
	if from, ok := fnet.RemoteIP(ctx); !ok || !n.IP.IsValid() || from != n.IP {
		return fnet.NodePolicy{}, fmt.Errorf("node %s: connection from %s, verified address %s: %w", peer, from, n.IP, fnet.ErrNotRegistered)
	}
	n.Capacity, n.Used, n.Pieces = hb.Capacity, hb.Used, hb.Pieces
	n.LastSeen = c.now()
	return c.policy(), c.store.PutNode(ctx, n)
}

// Live tells a node which of its pieces are under contract (or in a
// placement not yet committed); it collects the others after the grace
// period.
func (c *core) Live(ctx context.Context, peer fnet.NodeID, req *fnet.LiveRequest) (*fnet.LiveReply, error) {
	if _, err := c.store.GetNode(ctx, peer); errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("node %s: %w", peer, fnet.ErrNotRegistered)
	} else if err != nil {
		return nil, err
	}
	rep := &fnet.LiveReply{Live: make([]bool, len(req.Pieces))}
	for i, p := range req.Pieces {
		_, ok, err := c.store.LookupPiece(ctx, peer, p)
		if err != nil {
			return nil, err
		}
		if !ok {
			if ok, err = c.store.PendingPiece(ctx, peer, p); err != nil {
				return nil, err
			}
		}
		rep.Live[i] = ok
	}
	return rep, nil
}

// verifyAddress checks a registering node's advertised address: the host
// must resolve to the address the registration comes from, and the node
// must answer there, with its key, on the advertised port. It returns that
// address: the one placement diversity counts (reputation.go), whatever
// name the node gave.
func (c *core) verifyAddress(ctx context.Context, addr fnet.Address) (netip.Addr, error) {
	from, ok := fnet.RemoteIP(ctx)
	if !ok {
		return netip.Addr{}, fmt.Errorf("%w: the registration's source address is unknown", fnet.ErrBadRequest)
	}
	host, port, err := stdnet.SplitHostPort(addr.HostPort)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%w: address %s: %v", fnet.ErrBadRequest, addr, err)
	}
	rctx, cancel := context.WithTimeout(ctx, c.cfg.Placement.DialBackTimeout)
	defer cancel()
	ips, err := c.resolve(rctx, host)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%w: advertised host %q does not resolve: %v", fnet.ErrBadRequest, host, err)
	}
	if !slices.ContainsFunc(ips, func(ip netip.Addr) bool { return ip.Unmap() == from }) {
		return netip.Addr{}, fmt.Errorf("%w: advertised host %q resolves to %v, but the node connects from %s", fnet.ErrBadRequest, host, ips, from)
	}
	if c.dialBack == nil {
		return netip.Addr{}, fmt.Errorf("%w: this mediator cannot dial nodes back", fnet.ErrInternal)
	}
	back := fnet.Address{ID: addr.ID, HostPort: stdnet.JoinHostPort(from.String(), port)}
	if err := c.dialBack(rctx, back); err != nil {
		return netip.Addr{}, fmt.Errorf("%w: the mediator could not reach the node at %s: %v", fnet.ErrBadRequest, back.HostPort, err)
	}
	return from, nil
}
