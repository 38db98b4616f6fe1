package challenge

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

const (
	// MaxOpenings bounds the leaves opened per piece in one challenge.
	MaxOpenings = 32
	// NonceSize is the size of a challenge nonce.
	NonceSize = 32

	indexDomain  = "fincrypt-challenge-v1"
	digestDomain = "fincrypt-proof-v1"
)

// Nonce is a challenge's fresh random value, chosen by the verifier.
type Nonce [NonceSize]byte

// ErrProof is wrapped by every verification failure.
var ErrProof = errors.New("proof rejected")

// Indices derives which leaves a challenge opens: k indices (repeats
// allowed) from SHA-256(domain || nonce || piece id), see docs/PROTOCOL.md.
func Indices(nonce Nonce, id PieceID, size int64, k int) []int {
	n := uint64(NumLeaves(size))
	h := sha256.New()
	h.Write([]byte(indexDomain))
	h.Write(nonce[:])
	h.Write(id[:])
	var seed [HashSize]byte
	h.Sum(seed[:0])
	out := make([]int, k)
	var buf [HashSize + 4]byte
	copy(buf[:], seed[:])
	for j := range out {
		binary.BigEndian.PutUint32(buf[HashSize:], uint32(j))
		x := sha256.Sum256(buf[:])
		out[j] = int(binary.BigEndian.Uint64(x[:8]) % n)
	}
	return out
}

// Opening is one opened leaf and the sibling hashes from the leaf up to
// (not including) the root; levels where the node has no sibling (it was
// promoted) contribute nothing.
type Opening struct {
	Index uint32
	Leaf  []byte
	Path  []Hash
}

// Proof answers a challenge for one piece.
type Proof struct {
	Piece    PieceID
	Openings []Opening
	Digest   Hash
}

// Digest is SHA-256(domain || nonce || piece id || for each opening:
// uint32 index || leaf bytes).
func Digest(nonce Nonce, id PieceID, openings []Opening) Hash {
	h := sha256.New()
	h.Write([]byte(digestDomain))
	h.Write(nonce[:])
	h.Write(id[:])
	var ib [4]byte
	for _, o := range openings {
		binary.BigEndian.PutUint32(ib[:], o.Index)
		h.Write(ib[:])
		h.Write(o.Leaf)
	}
	var out Hash
	h.Sum(out[:0])
	return out
}

// LeafLen is the length of leaf i of a piece of the given size.
func LeafLen(size int64, i int) int {
	if int64(i+1)*LeafSize <= size {
		return LeafSize
	}
	return int(size - int64(i)*LeafSize)
}

// Source is what a prover reads: single leaves and single tree nodes, so
// that answering never needs the whole piece.
type Source interface {
	// ReadLeaf reads leaf i into buf (len >= LeafSize) and returns its length.
	ReadLeaf(i int, buf []byte) (int, error)
	// Node returns the tree node at (level, index); level 0 are leaf hashes.
	Node(level, index int) (Hash, error)
}

// Prove opens k leaves of the piece chosen by nonce.
func Prove(src Source, id PieceID, size int64, nonce Nonce, k int) (Proof, error) {
	if err := CheckSize(size); err != nil {
		return Proof{}, err
	}
	if k < 1 || k > MaxOpenings {
		return Proof{}, fmt.Errorf("challenge: %d openings (want 1..%d)", k, MaxOpenings)
	}
	counts := LevelCounts(size)
	p := Proof{Piece: id, Openings: make([]Opening, 0, k)}
	for _, idx := range Indices(nonce, id, size, k) {
		leaf := make([]byte, LeafSize)
		n, err := src.ReadLeaf(idx, leaf)
		if err != nil {
			return Proof{}, fmt.Errorf("piece %s leaf %d: %w", id, idx, err)
		}
		if n != LeafLen(size, idx) {
			return Proof{}, fmt.Errorf("piece %s leaf %d: read %d bytes, want %d", id, idx, n, LeafLen(size, idx))
		}
		o := Opening{Index: uint32(idx), Leaf: leaf[:n]}
		i := idx
		for level := 0; level < len(counts)-1; level++ {
			if sib := i ^ 1; sib < counts[level] {
				h, err := src.Node(level, sib)
				if err != nil {
					return Proof{}, fmt.Errorf("piece %s node (%d,%d): %w", id, level, sib, err)
				}
				o.Path = append(o.Path, h)
			}
			i /= 2
		}
		p.Openings = append(p.Openings, o)
	}
	p.Digest = Digest(nonce, id, p.Openings)
	return p, nil
}

// Verify checks a proof knowing only the piece id and size.
func Verify(id PieceID, size int64, nonce Nonce, k int, p Proof) error {
	if err := CheckSize(size); err != nil {
		return err
	}
	if p.Piece != id {
		return fmt.Errorf("%w: proof for piece %s, want %s", ErrProof, p.Piece, id)
	}
	want := Indices(nonce, id, size, k)
	if len(p.Openings) != len(want) {
		return fmt.Errorf("%w: piece %s: %d openings, want %d", ErrProof, id, len(p.Openings), len(want))
	}
	counts := LevelCounts(size)
	for j, o := range p.Openings {
		idx := want[j]
		if int(o.Index) != idx {
			return fmt.Errorf("%w: piece %s opening %d: leaf %d, want %d", ErrProof, id, j, o.Index, idx)
		}
		if len(o.Leaf) != LeafLen(size, idx) {
			return fmt.Errorf("%w: piece %s leaf %d: %d bytes, want %d", ErrProof, id, idx, len(o.Leaf), LeafLen(size, idx))
		}
		h := LeafHash(o.Leaf)
		path := o.Path
		i := idx
		for level := 0; level < len(counts)-1; level++ {
			if sib := i ^ 1; sib < counts[level] {
				if len(path) == 0 {
					return fmt.Errorf("%w: piece %s leaf %d: path too short", ErrProof, id, idx)
				}
				if i%2 == 0 {
					h = NodeHash(h, path[0])
				} else {
					h = NodeHash(path[0], h)
				}
				path = path[1:]
			}
			i /= 2
		}
		if len(path) != 0 {
			return fmt.Errorf("%w: piece %s leaf %d: path too long", ErrProof, id, idx)
		}
		if h != Hash(id) {
			return fmt.Errorf("%w: piece %s leaf %d: path does not lead to the piece id", ErrProof, id, idx)
		}
	}
	if Digest(nonce, id, p.Openings) != p.Digest {
		return fmt.Errorf("%w: piece %s: digest over nonce and leaves does not match", ErrProof, id)
	}
	return nil
}

// MemSource serves a piece held in memory (tests, tools).
type MemSource struct {
	Data []byte
	Tree *Tree
}

// ReadLeaf implements Source.
func (m MemSource) ReadLeaf(i int, buf []byte) (int, error) {
	off := int64(i) * LeafSize
	if i < 0 || off >= int64(len(m.Data)) {
		return 0, fmt.Errorf("leaf %d out of range", i)
	}
	return copy(buf[:LeafLen(int64(len(m.Data)), i)], m.Data[off:]), nil
}

// Node implements Source.
func (m MemSource) Node(level, index int) (Hash, error) { return m.Tree.Node(level, index) }
