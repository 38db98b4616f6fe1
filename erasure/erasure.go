// Package erasure splits a segment into k data and n-k parity pieces of equal
// size with Reed-Solomon coding (klauspost/reedsolomon), and rebuilds it, or
// any lost pieces, from any k of them. It works on ciphertext and needs no
// key: the client encodes sealed segments and the mediator's repair worker
// rebuilds lost pieces with the same code.
//
// Layout (docs/FORMAT.md): the segment is padded with zeros to k*P bytes,
// where P = ceil(len/k) is the piece size; piece i < k is bytes [i*P,(i+1)*P)
// and pieces k..n-1 are parity. Reed-Solomon is deterministic, so a rebuilt
// piece is byte-identical to the original and keeps its piece id.
package erasure

import (
	"errors"
	"fmt"

	"github.com/klauspost/reedsolomon"
)

// Limits of a scheme.
const (
	// MaxPieces bounds n (the library allows up to 256 shards).
	MaxPieces = 64
	// MinExpansion is the smallest n/k the network accepts (n >= 2k).
	MinExpansion = 2
)

// Errors callers test for.
var (
	ErrScheme      = errors.New("invalid erasure scheme")
	ErrTooFew      = errors.New("too few pieces to rebuild")
	ErrPieceSize   = errors.New("pieces differ in size")
	ErrEmptyInput  = errors.New("empty segment")
	ErrPieceNumber = errors.New("wrong number of pieces")
)

// Scheme is k-of-n: any K of the N pieces rebuild the segment.
type Scheme struct {
	K, N int
}

// String is "K/N".
func (s Scheme) String() string { return fmt.Sprintf("%d/%d", s.K, s.N) }

// ParseScheme parses "K/N".
func ParseScheme(v string) (Scheme, error) {
	var s Scheme
	var rest string
	n, _ := fmt.Sscanf(v, "%d/%d%s", &s.K, &s.N, &rest)
	if n != 2 {
		return Scheme{}, fmt.Errorf("%w %q: want K/N, e.g. 2/5", ErrScheme, v)
	}
	return s, s.Validate()
}

// Validate checks 1 <= K < N <= MaxPieces.
func (s Scheme) Validate() error {
	if s.K < 1 || s.N <= s.K || s.N > MaxPieces {
		return fmt.Errorf("%w %d/%d: want 1 <= K < N <= %d", ErrScheme, s.K, s.N, MaxPieces)
	}
	return nil
}

// CheckExpansion fails unless N/K >= MinExpansion.
func (s Scheme) CheckExpansion() error {
	if err := s.Validate(); err != nil {
		return err
	}
	if s.N < MinExpansion*s.K {
		return fmt.Errorf("%w %d/%d: expansion %.2f is below %d", ErrScheme, s.K, s.N, float64(s.N)/float64(s.K), MinExpansion)
	}
	return nil
}

// Coder encodes and rebuilds under one scheme. It is safe for concurrent use.
type Coder struct {
	s   Scheme
	enc reedsolomon.Encoder
}

// New returns a coder for k data pieces out of n.
func New(s Scheme) (*Coder, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	enc, err := reedsolomon.New(s.K, s.N-s.K)
	if err != nil {
		return nil, fmt.Errorf("%w %s: %v", ErrScheme, s, err)
	}
	return &Coder{s: s, enc: enc}, nil
}

// Scheme returns the coder's scheme.
func (c *Coder) Scheme() Scheme { return c.s }

// PieceSize is the size of each piece of a segment of size bytes.
func (c *Coder) PieceSize(size int) int { return (size + c.s.K - 1) / c.s.K }

// EncodedSize is the room Encode lays out the N pieces of a segment of size
// bytes in: a segment with this much capacity is encoded in place.
func (c *Coder) EncodedSize(size int) int { return c.PieceSize(size) * c.s.N }

// Encode returns the N pieces of segment. The pieces share one backing
// array: segment's own when its capacity is at least EncodedSize (then the
// data pieces are segment's bytes, zero-padded, and the parity pieces its
// spare capacity, so nothing is copied), a new one otherwise. Either way
// segment's first len(segment) bytes are not modified.
func (c *Coder) Encode(segment []byte) ([][]byte, error) {
	if len(segment) == 0 {
		return nil, ErrEmptyInput
	}
	p := c.PieceSize(len(segment))
	var buf []byte
	if cap(segment) >= p*c.s.N {
		buf = segment[:p*c.s.N]
		clear(buf[len(segment) : p*c.s.K]) // the data pieces' zero padding
	} else {
		buf = make([]byte, p*c.s.N)
		copy(buf, segment)
	}
	pieces := make([][]byte, c.s.N)
	for i := range pieces {
		pieces[i] = buf[i*p : (i+1)*p : (i+1)*p]
	}
	if err := c.enc.Encode(pieces); err != nil {
		return nil, fmt.Errorf("erasure encode: %w", err)
	}
	return pieces, nil
}

// check validates a piece set with nil for missing pieces and returns the
// piece size and the number present.
func (c *Coder) check(pieces [][]byte) (int, int, error) {
	if len(pieces) != c.s.N {
		return 0, 0, fmt.Errorf("%w: %d, want %d", ErrPieceNumber, len(pieces), c.s.N)
	}
	size, have := -1, 0
	for i, p := range pieces {
		if p == nil {
			continue
		}
		if size >= 0 && len(p) != size {
			return 0, 0, fmt.Errorf("%w: piece %d is %d bytes, others %d", ErrPieceSize, i, len(p), size)
		}
		size = len(p)
		have++
	}
	if have < c.s.K {
		return 0, 0, fmt.Errorf("%w: %d of %d present, need %d", ErrTooFew, have, c.s.N, c.s.K)
	}
	if size == 0 {
		return 0, 0, fmt.Errorf("%w: pieces are empty", ErrPieceSize)
	}
	return size, have, nil
}

// Rebuild fills in the pieces listed in want (indices into pieces, which are
// nil there) from any K present ones; other missing pieces stay nil.
func (c *Coder) Rebuild(pieces [][]byte, want []int) error {
	if _, _, err := c.check(pieces); err != nil {
		return err
	}
	required := make([]bool, c.s.N)
	for _, i := range want {
		if i < 0 || i >= c.s.N {
			return fmt.Errorf("erasure rebuild: piece index %d out of range 0..%d", i, c.s.N-1)
		}
		if pieces[i] == nil {
			required[i] = true
		}
	}
	if err := c.enc.ReconstructSome(pieces, required); err != nil {
		return fmt.Errorf("erasure rebuild: %w", err)
	}
	return nil
}

// Decode returns the first size bytes of the segment from any K pieces (nil
// for missing ones). pieces is not modified.
func (c *Coder) Decode(pieces [][]byte, size int) ([]byte, error) {
	p, _, err := c.check(pieces)
	if err != nil {
		return nil, err
	}
	if size < 1 || size > p*c.s.K {
		return nil, fmt.Errorf("erasure decode: size %d out of range 1..%d", size, p*c.s.K)
	}
	work := make([][]byte, c.s.N)
	copy(work, pieces)
	if err := c.enc.ReconstructData(work); err != nil {
		return nil, fmt.Errorf("erasure decode: %w", err)
	}
	out := make([]byte, 0, size)
	for i := 0; i < c.s.K && len(out) < size; i++ {
		out = append(out, work[i][:min(p, size-len(out))]...)
	}
	return out, nil
}

// ReconstructData fills in the missing data pieces (0..K-1) from any K
// present ones, in place: a missing data piece is an entry of length 0,
// and is rebuilt into its spare capacity when it has the piece size (a
// caller that laid the data pieces out back to back in one buffer then
// holds the segment there), into a new array otherwise. Parity pieces
// that are missing stay missing.
func (c *Coder) ReconstructData(pieces [][]byte) error {
	if len(pieces) != c.s.N {
		return fmt.Errorf("%w: %d, want %d", ErrPieceNumber, len(pieces), c.s.N)
	}
	size, have := -1, 0
	for i, p := range pieces {
		if len(p) == 0 {
			continue
		}
		if size >= 0 && len(p) != size {
			return fmt.Errorf("%w: piece %d is %d bytes, others %d", ErrPieceSize, i, len(p), size)
		}
		size = len(p)
		have++
	}
	if have < c.s.K {
		return fmt.Errorf("%w: %d of %d present, need %d", ErrTooFew, have, c.s.N, c.s.K)
	}
	for i := c.s.K; i < c.s.N; i++ {
		if len(pieces[i]) == 0 {
			pieces[i] = nil // not to be rebuilt
		}
	}
	if err := c.enc.ReconstructData(pieces); err != nil {
		return fmt.Errorf("erasure decode: %w", err)
	}
	return nil
}

// Verify reports whether the parity pieces match the data pieces (all N
// must be present).
func (c *Coder) Verify(pieces [][]byte) (bool, error) {
	if _, have, err := c.check(pieces); err != nil {
		return false, err
	} else if have != c.s.N {
		return false, fmt.Errorf("%w: verify needs all %d pieces, have %d", ErrTooFew, c.s.N, have)
	}
	return c.enc.Verify(pieces)
}
