package mediator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/fincrypt/fincrypt/challenge"
	fnet "github.com/fincrypt/fincrypt/net"
)

// Errors the mediator returns to clients and callers test for. Each wraps
// the net sentinel that selects the error code sent on the wire.
var (
	ErrNotEnoughNodes = fmt.Errorf("not enough healthy storage nodes (%w)", fnet.ErrBusy)
	ErrBadScheme      = fmt.Errorf("erasure scheme refused (%w)", fnet.ErrBadRequest)
	ErrUnknownAccount = fmt.Errorf("account not registered (%w)", fnet.ErrUnauthorized)
	ErrNotOwner       = fmt.Errorf("segment belongs to another account (%w)", fnet.ErrUnauthorized)
	ErrNoPlacement    = fmt.Errorf("no pending placement (expired, committed or never made) (%w)", fnet.ErrNotFound)
	ErrNoSegment      = fmt.Errorf("no such segment (%w)", fnet.ErrNotFound)
	ErrBadCommit      = fmt.Errorf("commit does not match the placement (%w)", fnet.ErrBadRequest)
	ErrTooManyPending = fmt.Errorf("too many uncommitted placements (%w)", fnet.ErrBusy)
)

// MaxPendingPerAccount bounds the placements an account may hold without
// committing them, so that no account can reserve the network's space.
const MaxPendingPerAccount = 1024

// NodeClient is how the mediator talks to storage nodes: challenges, and the
// reads, writes and deletes of repair and release. transportNodes
// implements it over QUIC; tests may substitute nodes in memory.
type NodeClient interface {
	Challenge(ctx context.Context, addr fnet.Address, req *fnet.ChallengeRequest) (*fnet.ChallengeResponse, error)
	Get(ctx context.Context, addr fnet.Address, t fnet.SignedTicket) ([]byte, error)
	Put(ctx context.Context, addr fnet.Address, t fnet.SignedTicket, data []byte) error
	Delete(ctx context.Context, addr fnet.Address, t fnet.SignedTicket) error
}

// core is the state every service shares.
type core struct {
	cfg   Config
	log   *slog.Logger
	store Store
	id    *fnet.Identity
	nodes NodeClient
	now   func() time.Time

	// mu serialises read-modify-write of segments and nodes (challenge
	// results, heartbeats, repair), never across network calls.
	mu sync.Mutex

	// repairMu lets one repair scan run at a time.
	repairMu sync.Mutex

	snapMu sync.Mutex // serialises snapshot pointer updates (snapshots.go)

	resMu    sync.Mutex
	reserved map[SegmentID]reservation // uncommitted placements

	bg       sync.WaitGroup // background deletes
	bgCtx    context.Context
	bgCancel context.CancelFunc
}

type reservation struct {
	account fnet.AccountID
	nodes   []fnet.NodeID
	size    int64
	expires time.Time
}

func newCore(cfg Config, store Store, id *fnet.Identity, nodes NodeClient) *core {
	c := &core{
		cfg: cfg, log: cfg.Logger, store: store, id: id, nodes: nodes,
		now: time.Now, reserved: map[SegmentID]reservation{},
	}
	c.bgCtx, c.bgCancel = context.WithCancel(context.Background())
	return c
}

// loadReservations reserves room for the placements that were pending
// when the mediator stopped.
func (c *core) loadReservations(ctx context.Context) error {
	pending, err := c.store.PendingPlacements(ctx)
	if err != nil {
		return err
	}
	now := c.now()
	for _, p := range pending {
		if p.Expires.After(now) {
			c.reserve(p.Segment, reservation{account: p.Account, nodes: p.Nodes, size: p.PieceSize, expires: p.Expires})
		}
	}
	return nil
}

// stop cancels background work and waits for it.
func (c *core) stop() {
	c.bgCancel()
	c.bg.Wait()
}

func (c *core) online(n *Node, now time.Time) bool { return now.Sub(n.LastSeen) <= c.cfg.OnlineWindow }
func (c *core) gone(n *Node, now time.Time) bool   { return now.Sub(n.LastSeen) > c.cfg.OfflineAfter }

// reservedBytes sums live reservations per node.
func (c *core) reservedBytes(now time.Time) map[fnet.NodeID]int64 {
	c.resMu.Lock()
	defer c.resMu.Unlock()
	out := map[fnet.NodeID]int64{}
	for id, r := range c.reserved {
		if now.After(r.expires) {
			delete(c.reserved, id)
			continue
		}
		for _, n := range r.nodes {
			out[n] += r.size
		}
	}
	return out
}

// reserve records a placement's reservation; it fails if the account has
// MaxPendingPerAccount placements awaiting commit already.
func (c *core) reserve(seg SegmentID, r reservation) error {
	c.resMu.Lock()
	defer c.resMu.Unlock()
	n := 0
	for _, o := range c.reserved {
		if o.account == r.account {
			n++
		}
	}
	if n >= MaxPendingPerAccount {
		return fmt.Errorf("%w: %d placements await their commit (at most %d per account)", ErrTooManyPending, n, MaxPendingPerAccount)
	}
	c.reserved[seg] = r
	return nil
}

func (c *core) unreserve(seg SegmentID) {
	c.resMu.Lock()
	delete(c.reserved, seg)
	c.resMu.Unlock()
}

// ticket signs a ticket for one operation on one piece at one node.
func (c *core) ticket(node fnet.NodeID, piece challenge.PieceID, op fnet.Op, acct fnet.AccountID, size int64) fnet.SignedTicket {
	return fnet.SignTicket(c.id, fnet.Ticket{
		Node: node, Piece: piece, Op: op, Account: acct, Size: size,
		Expires: c.now().Add(c.cfg.TicketTTL),
	})
}

func nodeAddress(n *Node) (fnet.Address, error) {
	a, err := fnet.ParseAddress(n.Address)
	if err != nil {
		return fnet.Address{}, fmt.Errorf("node %s: %w", n.ID, err)
	}
	if a.ID != n.ID {
		return fnet.Address{}, fmt.Errorf("node %s: address %s names another node", n.ID, n.Address)
	}
	return a, nil
}

// deleteLater sends delete tickets for pieces in the background; a node
// that misses one collects the piece itself once the mediator reports it
// without contract (LiveRequest).
func (c *core) deleteLater(acct fnet.AccountID, size int64, pieces map[fnet.NodeID]challenge.PieceID) {
	if len(pieces) == 0 {
		return
	}
	c.bg.Add(1)
	go func() {
		defer c.bg.Done()
		ctx, cancel := context.WithTimeout(c.bgCtx, 10*time.Second)
		defer cancel()
		for node, piece := range pieces {
			if ctx.Err() != nil {
				return
			}
			n, err := c.store.GetNode(ctx, node)
			if err != nil || !c.online(n, c.now()) {
				continue // an offline node collects it when it asks (LiveRequest)
			}
			addr, err := nodeAddress(n)
			if err != nil {
				continue
			}
			t := c.ticket(node, piece, fnet.OpDelete, acct, size)
			if err := c.nodes.Delete(ctx, addr, t); err != nil && !errors.Is(err, fnet.ErrNotFound) {
				c.log.Debug("delete failed; the node will collect it", "node", node, "piece", piece, "err", err)
			}
		}
	}()
}
