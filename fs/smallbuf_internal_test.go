package fs

import (
	"testing"

	"github.com/fincrypt/fincrypt/vault"
)

// TestSmallBufClasses checks newBuf's small buffers: empty, with room for
// what was asked, a power-of-two capacity under twice the request (so a
// small file pins little memory), whether it comes from a pool or not;
// putBuf keeps only buffers of a class's exact size, so a buffer of any
// other capacity never comes back from newBuf.
func TestSmallBufClasses(t *testing.T) {
	for _, cs := range []uint64{vault.DefaultChunkSize, 64 << 10, 12345 << 4} {
		r := &fsys{cs: cs, smallBufs: newSmallBufs(cs)}
		r.bufs.New = func() any { b := make([]byte, 0, cs); return &b }
		for round := 0; round < 3; round++ {
			for _, n := range []uint64{0, 1, 4095, 4096, 4097, 8191, 8192, 8193, 12000, cs / 8, cs/4 - 1, cs / 4, cs/4 + 1, cs} {
				b := r.newBuf(n)
				c := uint64(cap(b))
				if len(b) != 0 {
					t.Fatalf("cs %d: newBuf(%d) has length %d, want 0", cs, n, len(b))
				}
				if c < n {
					t.Fatalf("cs %d: newBuf(%d) has capacity %d", cs, n, c)
				}
				if n > cs/4 {
					if c != cs {
						t.Fatalf("cs %d: newBuf(%d) has capacity %d, want a whole chunk", cs, n, c)
					}
				} else if c&(c-1) != 0 || c < smallBufMin || c >= 2*max(n, smallBufMin) {
					t.Fatalf("cs %d: newBuf(%d) has capacity %d, want the power of two at or above max(%d, %d)", cs, n, c, n, smallBufMin)
				}
				// Dirty it and hand it back, with a buffer of a size no class has.
				b = append(b, make([]byte, c)...)
				for i := range b {
					b[i] = 0xa5
				}
				r.putBuf(b)
				r.putBuf(make([]byte, 100, max(n, smallBufMin)+1))
			}
		}
	}
}
