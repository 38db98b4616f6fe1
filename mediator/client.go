package mediator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/fincrypt/fincrypt/challenge"
	"github.com/fincrypt/fincrypt/erasure"
	fnet "github.com/fincrypt/fincrypt/net"
)

// Client is the client half of the mediator protocol: an account (its
// ed25519 identity) registers, asks for placements, uploads pieces to the
// nodes under their tickets, commits, looks up and releases segments. The
// client's replication engine builds on it. It is safe for concurrent use.
type Client struct {
	id       *fnet.Identity
	mediator fnet.Address
	tr       *fnet.Transport
	ownTr    bool

	mu      sync.Mutex
	conns   map[fnet.NodeID]*fnet.Conn
	strikes map[fnet.NodeID]int

	// contact: whether the mediator answered the latest call (a refusal
	// is an answer), and when (MediatorAnswers).
	contactMu  sync.Mutex
	answered   bool
	answeredAt time.Time // of the latest answer
	contactAt  time.Time // of the latest call that ended either way
}

// maxStrikeNodes bounds the nodes whose failures a client remembers.
const maxStrikeNodes = 4096

// NewClient makes a client for the account id; tr may be nil, and then the
// client makes (and closes) its own dialling transport.
func NewClient(id *fnet.Identity, mediator fnet.Address, tr *fnet.Transport) (*Client, error) {
	c := &Client{id: id, mediator: mediator, tr: tr, conns: map[fnet.NodeID]*fnet.Conn{}}
	if tr == nil {
		var err error
		if c.tr, err = fnet.NewDialer(id, fnet.Config{}); err != nil {
			return nil, err
		}
		c.ownTr = true
	}
	return c, nil
}

// Account is the client's account id.
func (c *Client) Account() fnet.AccountID { return fnet.AccountID(c.id.ID()) }

// Close closes the client's connections (and its transport if it made it).
func (c *Client) Close() error {
	c.mu.Lock()
	for id, conn := range c.conns {
		conn.Close()
		delete(c.conns, id)
	}
	c.mu.Unlock()
	if c.ownTr {
		return c.tr.Close()
	}
	return nil
}

func (c *Client) conn(ctx context.Context, addr fnet.Address) (*fnet.Conn, error) {
	c.mu.Lock()
	conn := c.conns[addr.ID]
	c.mu.Unlock()
	if conn != nil && conn.Context().Err() == nil {
		return conn, nil
	}
	conn, err := c.tr.Dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur := c.conns[addr.ID]; cur != nil && cur.Context().Err() == nil {
		conn.Close() // another call dialled meanwhile: share its connection
		return cur, nil
	}
	c.conns[addr.ID] = conn
	return conn, nil
}

// retry runs fn on a connection to addr, once more on a fresh connection if
// the first failed at the transport level (e.g. the peer restarted).
func (c *Client) retry(ctx context.Context, addr fnet.Address, fn func(*fnet.Conn) error) error {
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		var conn *fnet.Conn
		if conn, err = c.conn(ctx, addr); err != nil {
			return err
		}
		if err = fn(conn); err == nil {
			return nil
		}
		var re *fnet.RemoteError
		// A remote error or a reply that breaks the protocol (a wrong
		// type or length) is the node's answer: asking again on a new
		// connection would only get it again.
		if errors.As(err, &re) || errors.Is(err, fnet.ErrMalformed) || ctx.Err() != nil {
			return err
		}
		c.mu.Lock()
		if c.conns[addr.ID] == conn {
			delete(c.conns, addr.ID)
		}
		c.mu.Unlock()
		conn.Close()
	}
	return err
}

func callMediator[T fnet.Message](ctx context.Context, c *Client, req fnet.Message) (T, error) {
	var rep T
	err := c.retry(ctx, c.mediator, func(conn *fnet.Conn) error {
		var err error
		rep, err = fnet.CallAnyFor[T](ctx, conn, req)
		return err
	})
	c.noteContact(ctx, err)
	return rep, err
}

// noteContact records whether a call reached the mediator: it answered
// (with a reply or a refusal), or it did not (unreachable, or no answer
// before the deadline). A call the caller cancelled says nothing.
func (c *Client) noteContact(ctx context.Context, err error) {
	var re *fnet.RemoteError
	ok := err == nil || errors.As(err, &re)
	if !ok && errors.Is(ctx.Err(), context.Canceled) {
		return
	}
	now := time.Now()
	c.contactMu.Lock()
	defer c.contactMu.Unlock()
	c.answered, c.contactAt = ok, now
	if ok {
		c.answeredAt = now
	}
}

// MediatorAnswers reports whether the mediator answered the latest call
// (false before any), when it last answered, and when the latest call
// ended.
func (c *Client) MediatorAnswers() (ok bool, lastAnswer, lastCall time.Time) {
	c.contactMu.Lock()
	defer c.contactMu.Unlock()
	return c.answered, c.answeredAt, c.contactAt
}

// RegisterAccount registers the account (idempotent); it reports whether
// the account is new.
func (c *Client) RegisterAccount(ctx context.Context) (bool, error) {
	rep, err := callMediator[*fnet.AccountReply](ctx, c, &fnet.AccountRequest{})
	if err != nil {
		return false, fmt.Errorf("register account: %w", err)
	}
	return rep.Created, nil
}

// Place asks where to store the pieces (ids in piece order) of a segment
// under scheme s (zero: the mediator's default).
func (c *Client) Place(ctx context.Context, s erasure.Scheme, pieceSize int64, ids []challenge.PieceID) (*fnet.PlacementReply, error) {
	rep, err := callMediator[*fnet.PlacementReply](ctx, c, &fnet.PlacementRequest{
		K: uint8(s.K), N: uint8(s.N), PieceSize: uint64(pieceSize), Pieces: ids,
	})
	if err != nil {
		return nil, fmt.Errorf("placement: %w", err)
	}
	if len(rep.Targets) != len(ids) {
		return nil, fmt.Errorf("placement: %d targets for %d pieces", len(rep.Targets), len(ids))
	}
	return rep, nil
}

// Upload stores pieces[i] at placement target i, all at once. It returns
// the receipts of the pieces stored and the errors of the others (nil
// entries for success).
func (c *Client) Upload(ctx context.Context, pl *fnet.PlacementReply, pieces [][]byte) ([]fnet.StoredPiece, []error) {
	errs := make([]error, len(pieces))
	var (
		mu     sync.Mutex
		wg     sync.WaitGroup
		stored []fnet.StoredPiece
	)
	for i, t := range pl.Targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := c.PutPiece(ctx, t, pieces[i])
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs[i] = err
				return
			}
			stored = append(stored, fnet.StoredPiece{Index: uint8(i), Node: t.Ticket.Node, Piece: t.Ticket.Piece, Size: uint64(len(pieces[i]))})
		}()
	}
	wg.Wait()
	return stored, errs
}

// PutPiece uploads one piece under a put ticket.
func (c *Client) PutPiece(ctx context.Context, t fnet.Target, data []byte) error {
	addr, err := fnet.ParseAddress(t.Address)
	if err != nil {
		return err
	}
	return c.retry(ctx, addr, func(conn *fnet.Conn) error {
		return conn.Put(ctx, &fnet.PutRequest{Piece: t.Ticket.Piece, Ticket: t.Ticket}, bytes.NewReader(data))
	})
}

// GetPiece downloads a whole piece under a get ticket and checks that its
// bytes hash to the piece id. A node must announce exactly the ticket's
// size (fnet.CheckGetReply) and no more is ever read; a node that fails
// in any way but by the caller's cancellation gets a strike (Strikes).
func (c *Client) GetPiece(ctx context.Context, t fnet.Target) ([]byte, error) {
	addr, err := fnet.ParseAddress(t.Address)
	if err != nil {
		return nil, err
	}
	data, err := c.getPiece(ctx, addr, t)
	if err != nil && ctx.Err() == nil {
		c.strike(addr.ID)
	}
	return data, err
}

func (c *Client) getPiece(ctx context.Context, addr fnet.Address, t fnet.Target) ([]byte, error) {
	// The ticket's size was set by the mediator: bounded by the largest
	// piece (CheckSize), and the node must announce exactly it.
	if err := challenge.CheckSize(t.Ticket.Size); err != nil {
		return nil, fmt.Errorf("get %s: %w", t.Ticket.Piece, err)
	}
	data := make([]byte, t.Ticket.Size)
	if err := c.getPieceInto(ctx, addr, t, data); err != nil {
		return nil, err
	}
	return data, nil
}

// GetPieceInto is GetPiece reading into dst, which must be exactly the
// ticket's size: a caller fetching several pieces lays them out in one
// buffer. The piece id is checked as the bytes arrive. On error dst holds
// garbage; dst is not written to after GetPieceInto returns.
func (c *Client) GetPieceInto(ctx context.Context, t fnet.Target, dst []byte) error {
	addr, err := fnet.ParseAddress(t.Address)
	if err != nil {
		return err
	}
	if int64(len(dst)) != t.Ticket.Size {
		return fmt.Errorf("get %s: a buffer of %d bytes for a piece of %d", t.Ticket.Piece, len(dst), t.Ticket.Size)
	}
	err = c.getPieceInto(ctx, addr, t, dst)
	if err != nil && ctx.Err() == nil {
		c.strike(addr.ID)
	}
	return err
}

// getPieceInto reads the piece into dst (its size) and hashes it as it
// arrives, so that the id check is done when the last byte is.
func (c *Client) getPieceInto(ctx context.Context, addr fnet.Address, t fnet.Target, dst []byte) error {
	var root challenge.PieceID
	err := c.retry(ctx, addr, func(conn *fnet.Conn) error {
		r, n, err := conn.Get(ctx, &fnet.GetRequest{Piece: t.Ticket.Piece, Ticket: t.Ticket})
		if err != nil {
			return err
		}
		defer r.Close()
		if n != int64(len(dst)) {
			return fmt.Errorf("get %s: %w: %d bytes announced, %d wanted", t.Ticket.Piece, fnet.ErrReplyLength, n, len(dst))
		}
		b, err := challenge.NewBuilder(n)
		if err != nil {
			return fmt.Errorf("get %s: %w", t.Ticket.Piece, err)
		}
		const step = 256 << 10
		for off := 0; off < len(dst); {
			m, err := io.ReadFull(r, dst[off:min(off+step, len(dst))])
			b.Write(dst[off : off+m])
			off += m
			if err != nil {
				return fmt.Errorf("get %s: %w", t.Ticket.Piece, err)
			}
		}
		tree, err := b.Tree()
		if err != nil {
			return fmt.Errorf("get %s: %w", t.Ticket.Piece, err)
		}
		root = tree.Root()
		return nil
	})
	if err != nil {
		return err
	}
	if root != t.Ticket.Piece {
		return fmt.Errorf("piece %s: %w", t.Ticket.Piece, fnet.ErrMismatch)
	}
	return nil
}

// strike counts a failure against node.
func (c *Client) strike(node fnet.NodeID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.strikes == nil || len(c.strikes) >= maxStrikeNodes {
		c.strikes = map[fnet.NodeID]int{}
	}
	c.strikes[node]++
}

// Strikes is how many piece reads from node failed (wrong length or type,
// bytes that do not match the piece id, errors, timeouts). Reads ask nodes
// with fewer strikes first.
func (c *Client) Strikes(node fnet.NodeID) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.strikes[node]
}

// ByStrikes orders targets so that nodes with fewer strikes come first,
// keeping the order among equals.
func (c *Client) ByStrikes(idx []int, target func(int) fnet.Target) {
	c.mu.Lock()
	n := make(map[int]int, len(idx))
	for _, i := range idx {
		if a, err := fnet.ParseAddress(target(i).Address); err == nil {
			n[i] = c.strikes[a.ID]
		}
	}
	c.mu.Unlock()
	slices.SortStableFunc(idx, func(a, b int) int { return n[a] - n[b] })
}

// Commit records the contract for a placement.
func (c *Client) Commit(ctx context.Context, seg fnet.SegmentID, stored []fnet.StoredPiece) error {
	if _, err := callMediator[*fnet.CommitReply](ctx, c, &fnet.CommitRequest{Segment: seg, Pieces: stored}); err != nil {
		return fmt.Errorf("commit %x: %w", seg, err)
	}
	return nil
}

// Release ends a contract; the mediator deletes the pieces.
func (c *Client) Release(ctx context.Context, seg fnet.SegmentID) error {
	if _, err := callMediator[*fnet.ReleaseReply](ctx, c, &fnet.ReleaseRequest{Segment: seg}); err != nil {
		return fmt.Errorf("release %x: %w", seg, err)
	}
	return nil
}

// Segment looks up a contract, with get tickets for its healthy pieces.
func (c *Client) Segment(ctx context.Context, seg fnet.SegmentID) (*fnet.SegmentReply, error) {
	rep, err := callMediator[*fnet.SegmentReply](ctx, c, &fnet.SegmentRequest{Segment: seg})
	if err != nil {
		return nil, fmt.Errorf("segment %x: %w", seg, err)
	}
	return rep, nil
}

// Health reports how many pieces of each segment are healthy, in order,
// asking MaxHealthBatch segments a call.
func (c *Client) Health(ctx context.Context, ids []fnet.SegmentID) ([]fnet.SegmentHealth, error) {
	out := make([]fnet.SegmentHealth, 0, len(ids))
	for batch := range slices.Chunk(ids, fnet.MaxHealthBatch) {
		rep, err := callMediator[*fnet.HealthReply](ctx, c, &fnet.HealthRequest{Segments: batch})
		if err != nil {
			return nil, fmt.Errorf("segment health: %w", err)
		}
		if len(rep.Segments) != len(batch) {
			return nil, fmt.Errorf("segment health: %d answers to %d segments", len(rep.Segments), len(batch))
		}
		out = append(out, rep.Segments...)
	}
	return out, nil
}

// Store erasure-codes data under scheme s, places, uploads and commits it,
// and returns the segment id. It fails if fewer than K pieces were stored.
func (c *Client) Store(ctx context.Context, s erasure.Scheme, data []byte) (fnet.SegmentID, error) {
	coder, err := erasure.New(s)
	if err != nil {
		return fnet.SegmentID{}, err
	}
	pieces, err := coder.Encode(data)
	if err != nil {
		return fnet.SegmentID{}, err
	}
	ids := make([]challenge.PieceID, len(pieces))
	for i, p := range pieces {
		if ids[i], err = challenge.ComputeID(p); err != nil {
			return fnet.SegmentID{}, err
		}
	}
	pl, err := c.Place(ctx, s, int64(len(pieces[0])), ids)
	if err != nil {
		return fnet.SegmentID{}, err
	}
	stored, errs := c.Upload(ctx, pl, pieces)
	if len(stored) < s.K {
		return fnet.SegmentID{}, fmt.Errorf("upload: %d of %d pieces stored: %w", len(stored), len(pieces), errors.Join(errs...))
	}
	if err := c.Commit(ctx, pl.Segment, stored); err != nil {
		return fnet.SegmentID{}, err
	}
	return pl.Segment, nil
}

// Fetch downloads any K healthy pieces of a segment and decodes its first
// size bytes.
func (c *Client) Fetch(ctx context.Context, seg fnet.SegmentID, size int) ([]byte, error) {
	info, err := c.Segment(ctx, seg)
	if err != nil {
		return nil, err
	}
	s := erasure.Scheme{K: int(info.K), N: int(info.N)}
	coder, err := erasure.New(s)
	if err != nil {
		return nil, err
	}
	pieces := make([][]byte, s.N)
	have := 0
	var errs []error
	order := make([]int, len(info.Pieces))
	for i := range order {
		order[i] = i
	}
	c.ByStrikes(order, func(i int) fnet.Target { return info.Pieces[i].Target })
	for _, i := range order {
		p := info.Pieces[i]
		if have == s.K {
			break
		}
		if !p.Healthy {
			continue
		}
		data, err := c.GetPiece(ctx, p.Target)
		if err != nil {
			errs = append(errs, fmt.Errorf("piece %d: %w", i, err))
			continue
		}
		pieces[i] = data
		have++
	}
	if have < s.K {
		return nil, fmt.Errorf("segment %x: %d of %d pieces readable: %w", seg, have, s.K, errors.Join(errs...))
	}
	return coder.Decode(pieces, size)
}
