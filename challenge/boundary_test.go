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

// TestTreeNodeRange: Tree.Node answers every node of every level and
// refuses, with an error and not a panic, the level one past the root and
// the index one past the end of a level (a prover's Source is asked for
// nodes by index).
func TestTreeNodeRange(t *testing.T) {
	tr, _ := build(t, randBytes(7, 5*LeafSize+10)) // 6 leaves: levels of 6, 3, 2, 1
	for level, nodes := range tr.Levels {
		for i, want := range nodes {
			if got, err := tr.Node(level, i); err != nil || got != want {
				t.Fatalf("node (%d,%d): %x, %v; want %x", level, i, got, err, want)
			}
		}
	}
	for _, c := range [][2]int{{-1, 0}, {len(tr.Levels), 0}, {0, -1}, {0, len(tr.Levels[0])}, {1, len(tr.Levels[1])}} {
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Fatalf("node (%d,%d) of a %d-level tree: panic %v, want an error", c[0], c[1], len(tr.Levels), r)
				}
			}()
			if h, err := tr.Node(c[0], c[1]); err == nil {
				t.Fatalf("node (%d,%d) of a %d-level tree: %x, no error", c[0], c[1], len(tr.Levels), h)
			}
		}()
	}
}

// TestParsePieceID: the text form round-trips, and text that is not hex or
// not 32 bytes long is refused (kills both negations in ParsePieceID,
// which no challenge test reached).
func TestParsePieceID(t *testing.T) {
	id, err := ComputeID(randBytes(3, 100))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := ParsePieceID(id.String()); err != nil || got != id {
		t.Fatalf("ParsePieceID(%s): %s, %v", id, got, err)
	}
	s := id.String()
	for _, bad := range []string{"", s[:62], s + "00", "zz" + s[2:], s[:63] + "g"} {
		if got, err := ParsePieceID(bad); err == nil {
			t.Fatalf("ParsePieceID(%q): %s, no error", bad, got)
		}
	}
}
