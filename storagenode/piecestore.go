package storagenode

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/fincrypt/fincrypt/challenge"
	fnet "github.com/fincrypt/fincrypt/net"
)

// PieceInfo is a stored piece's index entry.
type PieceInfo struct {
	ID       challenge.PieceID
	Size     int64
	StoredAt time.Time
	Account  fnet.AccountID
	// OrphanedAt is when the mediator first said the piece had no live
	// contract (zero while it has one).
	OrphanedAt time.Time
}

// Piece is an open stored piece. It reads single leaves and tree nodes for
// challenges (challenge.Source) and byte ranges for downloads.
type Piece interface {
	challenge.Source
	io.ReaderAt // offsets within the piece's bytes
	Size() int64
	Close() error
}

// Errors a PieceStore returns (besides context and I/O errors).
var (
	ErrNotFound = fnet.ErrNotFound
	ErrFull     = fnet.ErrFull
	ErrMismatch = fnet.ErrMismatch
	ErrCorrupt  = errors.New("stored piece is corrupt")
)

// PieceStore keeps pieces durably.
//
// Put reads r until EOF, which must yield exactly size bytes whose Merkle
// root is id; it returns only after the bytes, the tree and the index entry
// are on stable storage, and a Put that fails or is interrupted (also by a
// crash) leaves no visible piece. Putting a piece already held succeeds
// without reading r, and clears its orphan mark (the upload is a new
// placement). A full store returns ErrFull and keeps everything it holds.
// Delete of a missing piece succeeds. Implementations are safe for
// concurrent use.
type PieceStore interface {
	Put(ctx context.Context, id challenge.PieceID, size int64, account fnet.AccountID, r io.Reader) error
	Open(id challenge.PieceID) (Piece, error)
	Stat(id challenge.PieceID) (PieceInfo, error)
	Delete(id challenge.PieceID) error
	// List returns up to limit entries in id order, starting after after
	// (nil: from the first).
	List(after *challenge.PieceID, limit int) ([]PieceInfo, error)
	// SetOrphaned records (or, with a zero time, clears) OrphanedAt.
	SetOrphaned(id challenge.PieceID, since time.Time) error
	// DeleteOrphan deletes the piece only if it is still marked orphaned
	// since since (not unmarked, nor uploaded again, meanwhile); it
	// reports whether it did.
	DeleteOrphan(id challenge.PieceID, since time.Time) (bool, error)
	// Usage is the bytes held (piece sizes) and the number of pieces.
	Usage() (used int64, pieces int64)
	Capacity() int64
	Close() error
}
