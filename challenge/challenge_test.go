package challenge

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
)

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func build(t *testing.T, data []byte) (*Tree, PieceID) {
	t.Helper()
	b, err := NewBuilder(int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	// Write in odd-sized pieces to exercise leaf boundaries.
	for rest := data; len(rest) > 0; {
		k := min(len(rest), 1000+len(rest)%777)
		if _, err := b.Write(rest[:k]); err != nil {
			t.Fatal(err)
		}
		rest = rest[k:]
	}
	tree, err := b.Tree()
	if err != nil {
		t.Fatal(err)
	}
	return tree, tree.Root()
}

// naiveRoot recomputes the root from scratch as docs/FORMAT.md §4 says.
func naiveRoot(data []byte) Hash {
	var level []Hash
	for off := 0; off < len(data); off += LeafSize {
		level = append(level, LeafHash(data[off:min(off+LeafSize, len(data))]))
	}
	for len(level) > 1 {
		var next []Hash
		for i := 0; i < len(level); i += 2 {
			if i+1 < len(level) {
				next = append(next, NodeHash(level[i], level[i+1]))
			} else {
				next = append(next, level[i])
			}
		}
		level = next
	}
	return level[0]
}

var sizes = []int{1, 100, LeafSize - 1, LeafSize, LeafSize + 1, 3 * LeafSize, 5*LeafSize + 17, 64 * LeafSize, 100*LeafSize + 1}

func TestTreeMatchesDefinition(t *testing.T) {
	for _, n := range sizes {
		data := randBytes(uint64(n), n)
		tree, id := build(t, data)
		if Hash(id) != naiveRoot(data) {
			t.Fatalf("size %d: builder root differs from definition", n)
		}
		if got := TreeNodes(int64(n)); got != func() int {
			s := 0
			for _, l := range tree.Levels {
				s += len(l)
			}
			return s
		}() {
			t.Fatalf("size %d: TreeNodes %d disagrees with tree", n, got)
		}
		if cid, _ := ComputeID(data); cid != id {
			t.Fatalf("size %d: ComputeID differs", n)
		}
	}
}

func TestDistinctContentDistinctID(t *testing.T) {
	a := randBytes(1, 3*LeafSize)
	b := bytes.Clone(a)
	b[LeafSize+5] ^= 1
	ia, _ := ComputeID(a)
	ib, _ := ComputeID(b)
	ic, _ := ComputeID(a[:len(a)-1])
	if ia == ib || ia == ic {
		t.Fatal("different contents share an id")
	}
	// A single leaf's hash must not be accepted as a two-leaf root.
	one, _ := ComputeID(a[:LeafSize])
	if one == NodeHash(LeafHash(a[:LeafSize/2]), LeafHash(a[LeafSize/2:LeafSize])) {
		t.Fatal("domain separation broken")
	}
}

func TestBuilderRejectsWrongLength(t *testing.T) {
	b, _ := NewBuilder(10)
	if _, err := b.Write(make([]byte, 11)); !errors.Is(err, ErrTooLong) {
		t.Fatalf("want ErrTooLong, got %v", err)
	}
	b.Write(make([]byte, 9))
	if _, err := b.Tree(); err == nil {
		t.Fatal("short input accepted")
	}
	if _, err := NewBuilder(0); !errors.Is(err, ErrPieceSize) {
		t.Fatal("empty piece accepted")
	}
	if _, err := NewBuilder(MaxPieceSize + 1); !errors.Is(err, ErrPieceSize) {
		t.Fatal("oversized piece accepted")
	}
}

func TestProveVerifyRoundTrip(t *testing.T) {
	for _, n := range sizes {
		data := randBytes(uint64(n)+7, n)
		tree, id := build(t, data)
		for s := range 5 {
			var nonce Nonce
			copy(nonce[:], randBytes(uint64(s*1000+n), NonceSize))
			for _, k := range []int{1, 4, MaxOpenings} {
				p, err := Prove(MemSource{data, tree}, id, int64(n), nonce, k)
				if err != nil {
					t.Fatalf("size %d: prove: %v", n, err)
				}
				if err := Verify(id, int64(n), nonce, k, p); err != nil {
					t.Fatalf("size %d k %d: verify: %v", n, k, err)
				}
				// The same proof does not answer another nonce.
				other := nonce
				other[0] ^= 0xff
				// (With one leaf every nonce opens leaf 0; the digest still differs.)
				if Verify(id, int64(n), other, k, p) == nil {
					t.Fatalf("size %d: proof accepted for another nonce", n)
				}
			}
		}
	}
}

func TestIndicesSpread(t *testing.T) {
	var nonce Nonce
	id := PieceID{1}
	seen := map[int]bool{}
	size := int64(1000 * LeafSize)
	for i := range 50 {
		nonce[0] = byte(i)
		for _, x := range Indices(nonce, id, size, 8) {
			if x < 0 || x >= 1000 {
				t.Fatalf("index %d out of range", x)
			}
			seen[x] = true
		}
	}
	if len(seen) < 300 { // 400 draws over 1000 leaves: ~330 distinct expected
		t.Fatalf("indices poorly spread: %d distinct of 400", len(seen))
	}
}

// A node that lost or altered any byte of an opened leaf fails.
func TestAlteredOrLostLeafFails(t *testing.T) {
	n := 37*LeafSize + 100
	data := randBytes(9, n)
	tree, id := build(t, data)
	var nonce Nonce
	nonce[3] = 42
	const k = 8
	opened := Indices(nonce, id, int64(n), k)

	altered := bytes.Clone(data)
	i := opened[3]
	altered[i*LeafSize+LeafLen(int64(n), i)/2] ^= 0x01
	// The altered node recomputes its leaf hash honestly, so its tree is
	// consistent with its bytes but not with the id.
	atree, _ := build(t, altered)
	p, err := Prove(MemSource{altered, atree}, id, int64(n), nonce, k)
	if err != nil {
		t.Fatal(err)
	}
	if err := Verify(id, int64(n), nonce, k, p); !errors.Is(err, ErrProof) {
		t.Fatalf("altered leaf passed: %v", err)
	}
	// Keeping the original tree but altered bytes fails too.
	p, _ = Prove(MemSource{altered, tree}, id, int64(n), nonce, k)
	if err := Verify(id, int64(n), nonce, k, p); !errors.Is(err, ErrProof) {
		t.Fatalf("altered leaf with original tree passed: %v", err)
	}
	// Lost: the leaf was zeroed (a hole) or truncated.
	lost := bytes.Clone(data)
	clear(lost[i*LeafSize : i*LeafSize+LeafLen(int64(n), i)])
	p, _ = Prove(MemSource{lost, tree}, id, int64(n), nonce, k)
	if err := Verify(id, int64(n), nonce, k, p); !errors.Is(err, ErrProof) {
		t.Fatalf("zeroed leaf passed: %v", err)
	}
	if _, err := Prove(MemSource{data[:i*LeafSize], tree}, id, int64(n), nonce, k); err == nil {
		t.Fatal("truncated piece produced a proof")
	}
	// An altered byte in a leaf that was not opened is not detected by
	// this nonce (sampling), but the untouched proof still verifies.
	p, _ = Prove(MemSource{data, tree}, id, int64(n), nonce, k)
	if err := Verify(id, int64(n), nonce, k, p); err != nil {
		t.Fatal(err)
	}
}

// hashOnly is a node that kept the whole tree of hashes but no bytes: the
// best it can do is send the right paths with made-up leaves.
type hashOnly struct{ tree *Tree }

func (h hashOnly) ReadLeaf(i int, buf []byte) (int, error) {
	n := LeafLen(h.tree.Size, i)
	lh := h.tree.Levels[0][i]
	for j := range n { // fill with something derived from what it has
		buf[j] = lh[j%HashSize]
	}
	return n, nil
}
func (h hashOnly) Node(level, index int) (Hash, error) { return h.tree.Node(level, index) }

func TestHashesOnlyCannotAnswer(t *testing.T) {
	n := 20 * LeafSize
	data := randBytes(5, n)
	tree, id := build(t, data)
	for s := range 20 {
		var nonce Nonce
		nonce[0] = byte(s)
		p, err := Prove(hashOnly{tree}, id, int64(n), nonce, 4)
		if err != nil {
			t.Fatal(err)
		}
		if err := Verify(id, int64(n), nonce, 4, p); !errors.Is(err, ErrProof) {
			t.Fatalf("hash-only node passed: %v", err)
		}
		// Swapping in the leaf hash for the leaf does not help either.
		for j := range p.Openings {
			lh := tree.Levels[0][p.Openings[j].Index]
			p.Openings[j].Leaf = lh[:]
		}
		p.Digest = Digest(nonce, id, p.Openings)
		if err := Verify(id, int64(n), nonce, 4, p); !errors.Is(err, ErrProof) {
			t.Fatalf("leaf-hash answer passed: %v", err)
		}
	}
}

func TestTamperedProofFails(t *testing.T) {
	n := 9*LeafSize + 3
	data := randBytes(11, n)
	tree, id := build(t, data)
	var nonce Nonce
	good, _ := Prove(MemSource{data, tree}, id, int64(n), nonce, 3)
	cases := map[string]func(p *Proof){
		"digest":     func(p *Proof) { p.Digest[0] ^= 1 },
		"path":       func(p *Proof) { p.Openings[0].Path[0][0] ^= 1 },
		"short path": func(p *Proof) { p.Openings[0].Path = p.Openings[0].Path[1:] },
		"long path":  func(p *Proof) { p.Openings[0].Path = append(p.Openings[0].Path, Hash{}) },
		"index":      func(p *Proof) { p.Openings[0].Index ^= 1 },
		"drop":       func(p *Proof) { p.Openings = p.Openings[1:] },
		"piece":      func(p *Proof) { p.Piece[0] ^= 1 },
		"leaf len":   func(p *Proof) { p.Openings[0].Leaf = p.Openings[0].Leaf[1:] },
	}
	for name, f := range cases {
		p := good
		p.Openings = make([]Opening, len(good.Openings))
		for i, o := range good.Openings {
			p.Openings[i] = Opening{Index: o.Index, Leaf: bytes.Clone(o.Leaf), Path: append([]Hash{}, o.Path...)}
		}
		f(&p)
		if err := Verify(id, int64(n), nonce, 3, p); err == nil {
			t.Errorf("%s: tampered proof accepted", name)
		}
	}
}
