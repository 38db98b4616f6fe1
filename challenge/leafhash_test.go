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
