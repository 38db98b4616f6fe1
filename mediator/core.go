package mediator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	stdnet "net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
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
	// rng makes the random choices of placement (selectNodes).
	rng *lockedRand
	// pay is the wallet side (payments.go); nil without a wallet.
	pay *payments
	// obs counts rounds and repair scans for the metrics (metrics.go).
	obs *observer
	// started is when this mediator process started: a node's silence is
	// counted from its last heartbeat or from started, whichever is later,
	// so that a mediator that was itself down does not take every node for
	// gone before the nodes had a chance to heartbeat.
	started time.Time

	// mu serialises read-modify-write of segments and nodes (challenge
	// results, heartbeats, repair), never across network calls.
	mu sync.Mutex

	// repairMu lets one repair scan run at a time.
	repairMu sync.Mutex

	snapMu sync.Mutex // serialises snapshot pointer updates (snapshots.go)

	// terms caches the accounts' terms of the last settled period (terms.go).
	termsMu sync.Mutex
	terms   termsCache

	// rounds counts challenge rounds in progress: damage reports that
	// arrive meanwhile are carried to the next record (damage.go).
	rounds atomic.Int32

	resMu    sync.Mutex
	reserved map[SegmentID]reservation // uncommitted placements
	// resPieces indexes reserved by (node, piece id): the placements that
	// put that piece id on that node.
	resPieces map[nodePiece][]SegmentID

	// newAccounts rate-limits account creation per network (accounts.go).
	newAccounts buckets

	// resolve and dialBack verify a registering node's address
	// (registry.go): the Peer dials over its transport.
	resolve  func(ctx context.Context, host string) ([]netip.Addr, error)
	dialBack func(ctx context.Context, addr fnet.Address) error

	bg       sync.WaitGroup // background deletes
	bgCtx    context.Context
	bgCancel context.CancelFunc
}

type reservation struct {
	account fnet.AccountID
	nodes   []fnet.NodeID
	pieces  []challenge.PieceID // pieces[i] goes to nodes[i]
	size    int64
	expires time.Time
	// cost is what the reserved bytes cost for one period at their
	// nodes' prices, in satoshis (payments bound it by the escrow).
	cost int64
}

// bytes is the room the reservation takes on all its nodes.
func (r reservation) bytes() int64 { return r.size * int64(len(r.nodes)) }

func newCore(cfg Config, store Store, id *fnet.Identity, nodes NodeClient) *core {
	c := &core{
		cfg: cfg, log: cfg.Logger, store: store, id: id, nodes: nodes,
		now: time.Now, started: time.Now(), reserved: map[SegmentID]reservation{},
		resPieces: map[nodePiece][]SegmentID{},
		resolve: func(ctx context.Context, host string) ([]netip.Addr, error) {
			return stdnet.DefaultResolver.LookupNetIP(ctx, "ip", host)
		},
	}
	c.bgCtx, c.bgCancel = context.WithCancel(context.Background())
	c.rng = newLockedRand(cfg.Placement.Seed)
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
			r := reservation{account: p.Account, nodes: p.Nodes, pieces: p.Pieces, size: p.PieceSize, expires: p.Expires}
			r.expires = minTime(r.expires, now.Add(c.cfg.Reservations.hold(r.bytes(), c.cfg.TicketTTL)))
			c.reserve(p.Segment, r, -1)
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

// gone: silent past the offline limit, counting from the node's last
// heartbeat or from this process's start, whichever is later.
func (c *core) gone(n *Node, now time.Time) bool {
	since := n.LastSeen
	if c.started.After(since) {
		since = c.started
	}
	return now.Sub(since) > c.cfg.OfflineAfter
}

// reservedBytes sums live reservations per node.
func (c *core) reservedBytes(now time.Time) map[fnet.NodeID]int64 {
	c.resMu.Lock()
	defer c.resMu.Unlock()
	out := map[fnet.NodeID]int64{}
	for id, r := range c.reserved {
		if now.After(r.expires) {
			c.dropReservation(id)
			continue
		}
		for _, n := range r.nodes {
			out[n] += r.size
		}
	}
	return out
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// reserve records a placement's reservation; it fails if the account has
// MaxPendingPerAccount placements awaiting commit already, or if the
// account's live reservations with this one would take more than
// Reservations.AccountBytes or, with budget >= 0, cost more for one period
// than budget satoshis (one placement at a time is always allowed: an
// account with any escrow can upload, if only one segment at a time).
func (c *core) reserve(seg SegmentID, r reservation, budget int64) error {
	c.resMu.Lock()
	defer c.resMu.Unlock()
	n, bytes, cost := 0, r.bytes(), r.cost
	now := c.now()
	for id, o := range c.reserved {
		if o.account == r.account && id != seg && !now.After(o.expires) {
			n++
			bytes += o.bytes()
			cost += o.cost
		}
	}
	if n >= MaxPendingPerAccount {
		return fmt.Errorf("%w: %d placements await their commit (at most %d per account)", ErrTooManyPending, n, MaxPendingPerAccount)
	}
	if limit := c.cfg.Reservations.AccountBytes; bytes > limit {
		return fmt.Errorf("%w: %d bytes reserved with this placement, at most %d", ErrAccountQuota, bytes, limit)
	}
	if budget >= 0 && n > 0 && cost > budget {
		return fmt.Errorf("%w: uncommitted placements would cost %d sat a period, escrow %d sat", ErrAccountQuota, cost, budget)
	}
	c.dropReservation(seg)
	c.reserved[seg] = r
	for i, n := range r.nodes {
		if i < len(r.pieces) {
			k := nodePiece{n, r.pieces[i]}
			c.resPieces[k] = append(c.resPieces[k], seg)
		}
	}
	return nil
}

// holds reports whether the reservation puts piece on node.
func (r reservation) holds(node fnet.NodeID, piece challenge.PieceID) bool {
	for i, n := range r.nodes {
		if n == node && i < len(r.pieces) && r.pieces[i] == piece {
			return true
		}
	}
	return false
}

type nodePiece struct {
	node  fnet.NodeID
	piece challenge.PieceID
}

// dropReservation removes a reservation and its index entries (resMu held).
func (c *core) dropReservation(seg SegmentID) {
	r, ok := c.reserved[seg]
	if !ok {
		return
	}
	delete(c.reserved, seg)
	for i, n := range r.nodes {
		if i >= len(r.pieces) {
			continue
		}
		k := nodePiece{n, r.pieces[i]}
		segs := slices.DeleteFunc(c.resPieces[k], func(s SegmentID) bool { return s == seg })
		if len(segs) == 0 {
			delete(c.resPieces, k)
		} else {
			c.resPieces[k] = segs
		}
	}
}

// reservedPiece reports whether a live placement other than except puts
// piece on node.
func (c *core) reservedPiece(node fnet.NodeID, piece challenge.PieceID, except SegmentID) bool {
	c.resMu.Lock()
	defer c.resMu.Unlock()
	now := c.now()
	for _, id := range c.resPieces[nodePiece{node, piece}] {
		if r, ok := c.reserved[id]; ok && id != except && !now.After(r.expires) && r.holds(node, piece) {
			return true
		}
	}
	return false
}

func (c *core) unreserve(seg SegmentID) {
	c.resMu.Lock()
	c.dropReservation(seg)
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

// pieceDelete is a piece to delete from a node.
type pieceDelete struct {
	node    fnet.NodeID
	piece   challenge.PieceID
	account fnet.AccountID
	size    int64
}

// deleteLater sends delete tickets for one segment's pieces in the
// background (deletePieces).
func (c *core) deleteLater(acct fnet.AccountID, size int64, pieces map[fnet.NodeID]challenge.PieceID) {
	dels := make([]pieceDelete, 0, len(pieces))
	for node, piece := range pieces {
		dels = append(dels, pieceDelete{node: node, piece: piece, account: acct, size: size})
	}
	c.deletePieces(dels)
}

// deletePieces sends delete tickets in the background. A piece that a
// contract or a pending placement still holds on that node (another
// segment with identical bytes) is kept. A node that misses a delete
// collects the piece itself once the mediator reports it without
// contract (LiveRequest).
func (c *core) deletePieces(dels []pieceDelete) {
	if len(dels) == 0 {
		return
	}
	c.bg.Add(1)
	go func() {
		defer c.bg.Done()
		ctx, cancel := context.WithTimeout(c.bgCtx, 10*time.Second)
		defer cancel()
		for _, d := range dels {
			if ctx.Err() != nil {
				return
			}
			if c.referenced(ctx, d.node, d.piece) {
				continue
			}
			n, err := c.store.GetNode(ctx, d.node)
			if err != nil || !c.online(n, c.now()) {
				continue // an offline node collects it when it asks (LiveRequest)
			}
			addr, err := nodeAddress(n)
			if err != nil {
				continue
			}
			t := c.ticket(d.node, d.piece, fnet.OpDelete, d.account, d.size)
			if err := c.nodes.Delete(ctx, addr, t); err != nil && !errors.Is(err, fnet.ErrNotFound) {
				c.log.Debug("delete failed; the node will collect it", "node", d.node, "piece", d.piece, "err", err)
			}
		}
	}()
}

// referenced reports whether a contract or a placement holds piece on
// node; on a store error it says yes (keeping a piece is the safe side:
// the node collects it later if it is really unreferenced).
func (c *core) referenced(ctx context.Context, node fnet.NodeID, piece challenge.PieceID) bool {
	if _, ok, err := c.store.LookupPiece(ctx, node, piece); err != nil || ok {
		return true
	}
	if ok, err := c.store.PendingPiece(ctx, node, piece); err != nil || ok {
		return true
	}
	return c.reservedPiece(node, piece, SegmentID{})
}
