// Package challenge holds the proof of possession shared by storage nodes and
// the mediator: a piece's id is the root of a Merkle tree over fixed-size
// leaves of its bytes, and a node proves it still holds a piece by opening a
// few leaves chosen from a fresh nonce. A verifier needs only the piece id and
// its size. The byte-level rules are in docs/PROTOCOL.md and
// docs/FORMAT.md §4.
package challenge

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
)

const (
	// LeafSize is the size of every leaf but the last, which may be shorter.
	LeafSize = 4096
	// MaxPieceSize is the largest piece a node stores: 65,536 leaves.
	MaxPieceSize = 256 << 20
	// HashSize is the size of every tree node and of a piece id.
	HashSize = sha256.Size

	leafPrefix = 0x00
	nodePrefix = 0x01
)

// ErrPieceSize is returned for a size outside 1..MaxPieceSize.
var ErrPieceSize = errors.New("piece size out of range")

// PieceID is the Merkle root of a piece.
type PieceID [HashSize]byte

// String returns the id as 64 lowercase hex digits.
func (p PieceID) String() string { return hex.EncodeToString(p[:]) }

// ParsePieceID parses 64 hex digits.
func ParsePieceID(s string) (PieceID, error) {
	var p PieceID
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != HashSize {
		return p, fmt.Errorf("piece id %q: want %d hex digits", s, 2*HashSize)
	}
	copy(p[:], b)
	return p, nil
}

// Hash is one tree node.
type Hash = [HashSize]byte

// CheckSize reports whether size is a valid piece size.
func CheckSize(size int64) error {
	if size < 1 || size > MaxPieceSize {
		return fmt.Errorf("%w: %d bytes (want 1..%d)", ErrPieceSize, size, MaxPieceSize)
	}
	return nil
}

// NumLeaves is the number of leaves of a piece of the given size (>= 1).
func NumLeaves(size int64) int {
	return int((size + LeafSize - 1) / LeafSize)
}

// LevelCounts returns the number of nodes on each level, leaves first and
// the root (a single node) last. A level with an odd count promotes its last
// node unchanged to the next level.
func LevelCounts(size int64) []int {
	n := NumLeaves(size)
	counts := []int{n}
	for n > 1 {
		n = (n + 1) / 2
		counts = append(counts, n)
	}
	return counts
}

// TreeNodes is the total number of nodes of the tree over a piece of size.
func TreeNodes(size int64) int {
	t := 0
	for _, c := range LevelCounts(size) {
		t += c
	}
	return t
}

// LeafHash hashes one leaf: SHA-256(0x00 || leaf).
func LeafHash(leaf []byte) Hash {
	h := sha256.New()
	h.Write([]byte{leafPrefix})
	h.Write(leaf)
	var out Hash
	h.Sum(out[:0])
	return out
}

// NodeHash hashes two children: SHA-256(0x01 || left || right).
func NodeHash(left, right Hash) Hash {
	var buf [1 + 2*HashSize]byte
	buf[0] = nodePrefix
	copy(buf[1:], left[:])
	copy(buf[1+HashSize:], right[:])
	return sha256.Sum256(buf[:])
}

// Tree is a whole Merkle tree in memory: Levels[0] are the leaf hashes and
// the last level holds the root alone.
type Tree struct {
	Size   int64
	Levels [][]Hash
}

// BuildTree builds the upper levels over the given leaf hashes.
func BuildTree(size int64, leaves []Hash) (*Tree, error) {
	if err := CheckSize(size); err != nil {
		return nil, err
	}
	if len(leaves) != NumLeaves(size) {
		return nil, fmt.Errorf("tree: %d leaf hashes for %d bytes, want %d", len(leaves), size, NumLeaves(size))
	}
	t := &Tree{Size: size, Levels: [][]Hash{leaves}}
	cur := leaves
	for len(cur) > 1 {
		next := make([]Hash, (len(cur)+1)/2)
		i := 0
		if nodeHashes16 != nil {
			for ; 2*i+32 <= len(cur); i += 16 {
				nodeHashes16(next[i:i+16], cur[2*i:2*i+32])
			}
		}
		for ; i < len(next); i++ {
			if 2*i+1 < len(cur) {
				next[i] = NodeHash(cur[2*i], cur[2*i+1])
			} else {
				next[i] = cur[2*i]
			}
		}
		t.Levels = append(t.Levels, next)
		cur = next
	}
	return t, nil
}

// Root is the piece id.
func (t *Tree) Root() PieceID { return PieceID(t.Levels[len(t.Levels)-1][0]) }

// Node returns the node at (level, index); it satisfies NodeReader.
func (t *Tree) Node(level, index int) (Hash, error) {
	if level < 0 || level >= len(t.Levels) || index < 0 || index >= len(t.Levels[level]) {
		return Hash{}, fmt.Errorf("tree node (%d,%d) out of range", level, index)
	}
	return t.Levels[level][index], nil
}

// Builder computes the Merkle tree of a piece while its bytes stream
// through Write, holding only the leaf hashes (32 bytes per 4 KiB).
type Builder struct {
	size   int64
	n      int64
	leaf   []byte
	leaves []Hash
	h      hash.Hash // reused for every leaf
}

// leafHash is LeafHash with the builder's hash state (no allocation).
func (b *Builder) leafHash(leaf []byte) Hash {
	if b.h == nil {
		b.h = sha256.New()
	}
	b.h.Reset()
	b.h.Write([]byte{leafPrefix})
	b.h.Write(leaf)
	var out Hash
	b.h.Sum(out[:0])
	return out
}

// leafHashes16, when this CPU has a way to hash 16 whole leaves at once,
// appends the LeafHash of each of the 16 leaves of data (16*LeafSize
// bytes) to dst.
var leafHashes16 func(dst []Hash, data []byte) []Hash

// nodeHashes16, when this CPU has a way to hash 16 pairs at once, sets
// dst[j] to NodeHash(pairs[2j], pairs[2j+1]) for j < 16.
var nodeHashes16 func(dst []Hash, pairs []Hash)

// NewBuilder expects exactly size bytes.
func NewBuilder(size int64) (*Builder, error) {
	if err := CheckSize(size); err != nil {
		return nil, err
	}
	return &Builder{size: size, leaf: make([]byte, 0, LeafSize), leaves: make([]Hash, 0, NumLeaves(size))}, nil
}

// ErrTooLong is returned when more bytes arrive than the declared size.
var ErrTooLong = errors.New("more bytes than the declared size")

// Write hashes p; it fails once more than the declared size was written.
func (b *Builder) Write(p []byte) (int, error) {
	if b.n+int64(len(p)) > b.size {
		return 0, ErrTooLong
	}
	b.n += int64(len(p))
	written := len(p)
	if len(b.leaf) > 0 {
		k := min(LeafSize-len(b.leaf), len(p))
		b.leaf = append(b.leaf, p[:k]...)
		p = p[k:]
		if len(b.leaf) == LeafSize {
			b.leaves = append(b.leaves, b.leafHash(b.leaf))
			b.leaf = b.leaf[:0]
		}
	}
	// Whole leaves: 16 at a time where the CPU hashes them side by side
	// (crypto/sha256's SHA-NI hashes one leaf at a time, at 1.0-1.5 GB per
	// CPU-second on the machine this was measured on; AVX-512 16 at once,
	// at about twice that; without AVX-512, SHA-NI two at once, about 1.5
	// times one: leafhash_shani_amd64.go), then one by one.
	if leafHashes16 != nil {
		for len(p) >= 16*LeafSize {
			b.leaves = leafHashes16(b.leaves, p[:16*LeafSize])
			p = p[16*LeafSize:]
		}
	}
	for len(p) >= LeafSize {
		b.leaves = append(b.leaves, b.leafHash(p[:LeafSize]))
		p = p[LeafSize:]
	}
	b.leaf = append(b.leaf, p...)
	return written, nil
}

// Tree returns the finished tree; it fails unless exactly size bytes came.
func (b *Builder) Tree() (*Tree, error) {
	if b.n != b.size {
		return nil, fmt.Errorf("tree: got %d bytes, want %d", b.n, b.size)
	}
	leaves := b.leaves
	if len(b.leaf) > 0 {
		leaves = append(leaves, b.leafHash(b.leaf))
	}
	return BuildTree(b.size, leaves)
}

// ComputeID returns the id of data held in memory (tests and small pieces).
func ComputeID(data []byte) (PieceID, error) {
	b, err := NewBuilder(int64(len(data)))
	if err != nil {
		return PieceID{}, err
	}
	b.Write(data)
	t, err := b.Tree()
	if err != nil {
		return PieceID{}, err
	}
	return t.Root(), nil
}
