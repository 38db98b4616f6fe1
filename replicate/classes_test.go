package replicate

import (
	"testing"

	"github.com/fincrypt/fincrypt/vault"
)

// TestFullSegmentsHardlyPadded: for every chunk size a vault may have, a
// segment packed full of sealed chunks leaves under 0.1% of its size class
// to padding (the largest class once left a whole MiB of every full
// segment of 1 MiB chunks to it), and a single sealed chunk fits a class.
func TestFullSegmentsHardlyPadded(t *testing.T) {
	for i := 1; i < len(SizeClasses); i++ {
		if SizeClasses[i] <= SizeClasses[i-1] {
			t.Fatalf("size classes %v not increasing", SizeClasses)
		}
	}
	for cs := 4 << 10; cs <= 16<<20; cs *= 2 {
		sealed := cs + vault.Overhead
		if classFor(sealed) == 0 {
			t.Fatalf("a sealed %d-byte chunk fits no class", cs)
		}
		n := MaxSegment / sealed
		used := n * sealed
		class := classFor(used)
		if class != MaxSegment {
			t.Fatalf("%d sealed %d-byte chunks (%d bytes) in class %d, want the largest", n, cs, used, class)
		}
		if pad := class - used; pad*1000 >= class {
			t.Errorf("a full segment of %d-byte chunks: %d sealed chunks, %d of %d bytes padding", cs, n, pad, class)
		}
	}
}
