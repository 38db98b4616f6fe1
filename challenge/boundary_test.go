package challenge

import (
	"errors"
	"testing"
)

// TestCheckSizeBounds: 1 and MaxPieceSize are piece sizes, 0 and
// MaxPieceSize+1 are not.
func TestCheckSizeBounds(t *testing.T) {
	for _, size := range []int64{1, LeafSize, MaxPieceSize} {
		if err := CheckSize(size); err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
	}
	for _, size := range []int64{-1, 0, MaxPieceSize + 1} {
		if err := CheckSize(size); !errors.Is(err, ErrPieceSize) {
			t.Fatalf("size %d: %v, want ErrPieceSize", size, err)
		}
	}
}

// TestMemSourceLeafRange: a piece of whole leaves has no leaf at index
// NumLeaves (one past the end), nor at -1.
func TestMemSourceLeafRange(t *testing.T) {
	data := make([]byte, 2*LeafSize)
	src := MemSource{Data: data}
	buf := make([]byte, LeafSize)
	if n, err := src.ReadLeaf(1, buf); err != nil || n != LeafSize {
		t.Fatalf("last leaf: %d bytes, %v", n, err)
	}
	for _, i := range []int{-1, NumLeaves(int64(len(data)))} {
		if n, err := src.ReadLeaf(i, buf); err == nil {
			t.Fatalf("leaf %d of a %d-leaf piece: %d bytes, no error", i, NumLeaves(int64(len(data))), n)
		}
	}
}
