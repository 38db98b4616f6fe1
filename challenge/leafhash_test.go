package challenge

import (
	"fmt"
	"testing"
)

// TestBuilderLeavesMatchLeafHash checks every leaf hash of the builder's
// tree against LeafHash, for writes that take the 16-leaf path (whole runs
// of 16 leaves) mixed with writes that do not (a partial leaf first, odd
// sizes, a short tail), and for data starting at every alignment.
func TestBuilderLeavesMatchLeafHash(t *testing.T) {
	for _, c := range []struct {
		size   int
		writes []int // sizes of the writes; the rest in one
		skew   int   // data starts this many bytes into its buffer
	}{
		{16 * LeafSize, nil, 0},
		{16 * LeafSize, nil, 1},
		{48*LeafSize + 3, nil, 3},
		{40*LeafSize + 100, []int{100, 16 * LeafSize, 5}, 7},
		{33 * LeafSize, []int{LeafSize - 1, 1, 16*LeafSize + 1}, 63},
		{2048 * LeafSize, []int{1 << 20, 1 << 20}, 0}, // a piece of the default scheme, in pipeCopy's writes
	} {
		t.Run(fmt.Sprint(c.size, c.writes, c.skew), func(t *testing.T) {
			buf := randBytes(uint64(c.size+c.skew), c.size+c.skew)
			data := buf[c.skew:]
			b, err := NewBuilder(int64(len(data)))
			if err != nil {
				t.Fatal(err)
			}
			rest := data
			for _, k := range c.writes {
				if _, err := b.Write(rest[:k]); err != nil {
					t.Fatal(err)
				}
				rest = rest[k:]
			}
			if _, err := b.Write(rest); err != nil {
				t.Fatal(err)
			}
			tree, err := b.Tree()
			if err != nil {
				t.Fatal(err)
			}
			leaves := tree.Levels[0]
			if len(leaves) != NumLeaves(int64(len(data))) {
				t.Fatalf("%d leaves, want %d", len(leaves), NumLeaves(int64(len(data))))
			}
			for i, h := range leaves {
				if want := LeafHash(data[i*LeafSize : min((i+1)*LeafSize, len(data))]); h != want {
					t.Fatalf("leaf %d of %d: hash %x, want %x", i, len(leaves), h[:8], want[:8])
				}
			}
			if Hash(tree.Root()) != naiveRoot(data) {
				t.Fatal("root differs from the definition")
			}
		})
	}
}

// TestLeafHashes16 checks the 16-leaf hash (where this CPU has one)
// against LeafHash on leaves that differ in one byte only, at each byte
// the message's blocks treat apart: the first (beside the prefix), the
// block boundaries, the last (in the padding block).
func TestLeafHashes16(t *testing.T) {
	if leafHashes16 == nil {
		t.Skip("no 16-leaf hash on this CPU")
	}
	for _, at := range []int{0, 1, 2, 3, 62, 63, 64, 65, 4091, 4092, 4094, 4095} {
		data := make([]byte, 16*LeafSize)
		for j := range 16 {
			data[j*LeafSize+at] = byte(j + 1)
		}
		got := leafHashes16([]Hash{{1}}, data)
		if len(got) != 17 || got[0] != (Hash{1}) {
			t.Fatalf("byte %d: appended %d hashes to 1, first now %x", at, len(got)-1, got[0][:4])
		}
		for j := range 16 {
			if want := LeafHash(data[j*LeafSize : (j+1)*LeafSize]); got[1+j] != want {
				t.Fatalf("byte %d, leaf %d: hash %x, want %x", at, j, got[1+j][:8], want[:8])
			}
		}
	}
}

func BenchmarkComputeID(b *testing.B) {
	data := randBytes(1, 8<<20)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		ComputeID(data)
	}
}

func BenchmarkComputeIDOneByOne(b *testing.B) {
	defer func(f func([]Hash, []byte) []Hash) { leafHashes16 = f }(leafHashes16)
	leafHashes16 = nil
	data := randBytes(1, 8<<20)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		ComputeID(data)
	}
}

// TestNodeHashes16 checks the 16-pair node hash (where this CPU has one)
// against NodeHash on pairs that differ in one byte only, at each byte
// the message's two blocks treat apart.
func TestNodeHashes16(t *testing.T) {
	if nodeHashes16 == nil {
		t.Skip("no 16-pair hash on this CPU")
	}
	for _, at := range []int{0, 1, 2, 3, 31, 32, 33, 59, 60, 62, 63} {
		pairs := make([]Hash, 32)
		for j := range 16 {
			b := pairs[2*j : 2*j+2]
			b[at/HashSize][at%HashSize] = byte(j + 1)
		}
		got := make([]Hash, 17)
		got[16] = Hash{7}
		nodeHashes16(got[:16], pairs)
		if got[16] != (Hash{7}) {
			t.Fatal("wrote past its 16 hashes")
		}
		for j := range 16 {
			if want := NodeHash(pairs[2*j], pairs[2*j+1]); got[j] != want {
				t.Fatalf("byte %d, pair %d: hash %x, want %x", at, j, got[j][:8], want[:8])
			}
		}
	}
}

// TestTreeLevelsMatchNodeHash checks every node of trees whose levels take
// the 16-pair path in part (odd counts, a promoted last node) against
// NodeHash of its children.
func TestTreeLevelsMatchNodeHash(t *testing.T) {
	for _, n := range []int{32, 33, 47, 64, 95, 2048, 2049} {
		leaves := make([]Hash, n)
		for i := range leaves {
			leaves[i] = LeafHash([]byte{byte(i), byte(i >> 8), 9})
		}
		tree, err := BuildTree(int64(n)*LeafSize, leaves)
		if err != nil {
			t.Fatal(err)
		}
		for l := 1; l < len(tree.Levels); l++ {
			below, level := tree.Levels[l-1], tree.Levels[l]
			if len(level) != (len(below)+1)/2 {
				t.Fatalf("%d leaves, level %d: %d nodes over %d", n, l, len(level), len(below))
			}
			for i, h := range level {
				want := below[2*i]
				if 2*i+1 < len(below) {
					want = NodeHash(below[2*i], below[2*i+1])
				}
				if h != want {
					t.Fatalf("%d leaves: node (%d,%d) is %x, want %x", n, l, i, h[:8], want[:8])
				}
			}
		}
	}
}

// BenchmarkBuildTree builds the upper levels over the 2048 leaves of an
// 8 MiB piece (a piece of the default scheme), with the CPU's 16-pair
// node hash where it has one; BenchmarkBuildTreeOneByOne without.
func BenchmarkBuildTree(b *testing.B) {
	leaves := make([]Hash, 2048)
	for i := range leaves {
		leaves[i][0], leaves[i][1] = byte(i), byte(i>>8)
	}
	for b.Loop() {
		BuildTree(int64(len(leaves))*LeafSize, leaves)
	}
}

func BenchmarkBuildTreeOneByOne(b *testing.B) {
	defer func(f func([]Hash, []Hash)) { nodeHashes16 = f }(nodeHashes16)
	nodeHashes16 = nil
	BenchmarkBuildTree(b)
}
