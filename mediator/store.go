package mediator

import (
	"context"
	"errors"
	"time"

	"github.com/fincrypt/fincrypt/challenge"
	fnet "github.com/fincrypt/fincrypt/net"
)

// Store errors.
var (
	ErrNotFound = errors.New("not found")
	ErrCorrupt  = errors.New("mediator state is corrupt")
	ErrExists   = errors.New("already exists")
)

// Store is the mediator's durable state. The default is Pebble under the
// mediator's directory (OpenPebbleStore); the interface is written so that
// it maps onto a PostgreSQL-compatible database (CockroachDB) as well: each
// method is one transaction over rows of a few tables (nodes, accounts,
// pending placements, segments with their pieces, a node->piece index,
// period records and counters), and no method hands out cursors that live
// past the call.
//
// Every method is safe for concurrent use. A method that returns nil has
// made its write durable. Methods that take a whole record replace it.
type Store interface {
	// PutNode inserts or replaces a node (Contracted is ignored).
	PutNode(ctx context.Context, n *Node) error
	// GetNode returns a node with Contracted filled in, or ErrNotFound.
	GetNode(ctx context.Context, id fnet.NodeID) (*Node, error)
	// ListNodes returns every node, Contracted filled in.
	ListNodes(ctx context.Context) ([]*Node, error)

	// CreateAccount inserts an account; ErrExists if it is there.
	CreateAccount(ctx context.Context, a *Account) error
	// GetAccount returns an account or ErrNotFound.
	GetAccount(ctx context.Context, id fnet.AccountID) (*Account, error)

	// PutPending records a placement awaiting its commit.
	PutPending(ctx context.Context, p *Pending) error
	// GetPending returns a pending placement or ErrNotFound.
	GetPending(ctx context.Context, id SegmentID) (*Pending, error)
	// PendingPlacements returns every uncommitted placement.
	PendingPlacements(ctx context.Context) ([]*Pending, error)
	// DeletePendingBefore removes placements that expired before t and
	// returns how many.
	DeletePendingBefore(ctx context.Context, t time.Time) (int, error)
	// DeletePending removes a pending placement (abandoned by its
	// client); ErrNotFound if there is none.
	DeletePending(ctx context.Context, id SegmentID) error
	// PendingPiece reports whether a piece is in some pending placement on
	// node (so that a node does not collect it before the commit).
	PendingPiece(ctx context.Context, node fnet.NodeID, piece challenge.PieceID) (bool, error)

	// CommitSegment records a contract and removes its pending placement,
	// in one transaction; ErrExists if the segment is already contracted.
	// It, UpdateSegment and DeleteSegment keep the counters segments,
	// pieces and healthy in step.
	CommitSegment(ctx context.Context, s *Segment) error
	// GetSegment returns a contract or ErrNotFound.
	GetSegment(ctx context.Context, id SegmentID) (*Segment, error)
	// UpdateSegment replaces a contract (piece states, results, nodes after
	// repair) and keeps the node index and contracted bytes in step.
	UpdateSegment(ctx context.Context, s *Segment) error
	// DeleteSegment removes a contract and returns it.
	DeleteSegment(ctx context.Context, id SegmentID) (*Segment, error)
	// Segments calls fn for every contract, in id order, starting after
	// the id `after` (zero: from the start), at most limit of them (<= 0:
	// no limit). Callers page with the last id they saw.
	Segments(ctx context.Context, after SegmentID, limit int, fn func(*Segment) error) error
	// NodePieces calls fn for every piece contracted on node.
	NodePieces(ctx context.Context, node fnet.NodeID, fn func(PieceRef) error) error
	// LookupPiece finds a piece contracted on node.
	LookupPiece(ctx context.Context, node fnet.NodeID, piece challenge.PieceID) (PieceRef, bool, error)

	// PutPeriodRecords writes (replaces) settlement records.
	PutPeriodRecords(ctx context.Context, recs []PeriodRecord) error
	// PeriodRecords returns the records of periods starting in [from, to).
	PeriodRecords(ctx context.Context, from, to time.Time) ([]PeriodRecord, error)

	// AddCounter adds delta to a named counter and returns the new value.
	AddCounter(ctx context.Context, name string, delta int64) (int64, error)
	// Counter returns a named counter (0 if never set).
	Counter(ctx context.Context, name string) (int64, error)

	// Close releases the store.
	Close() error
}

// Counter names. The store keeps segments, pieces and healthy in step
// with every contract change (same transaction); the others are added by
// the services.
const (
	CounterRepaired = "repaired"
	CounterRounds   = "rounds"
	CounterSegments = "segments"
	CounterPieces   = "pieces"
	CounterHealthy  = "healthy"
)
