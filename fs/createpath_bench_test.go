package fs_test

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// BenchmarkCreatePath creates files through a mount as fsbench's small-write
// (os.WriteFile of 1-16 KiB) and mktree (create and close, empty) do, 100
// files a directory; allocations per op are the mount's and the caller's.
func BenchmarkCreatePath(b *testing.B) {
	requireFUSE(b)
	for _, size := range []int{0, 8 << 10} {
		b.Run("bytes="+strconv.Itoa(size), func(b *testing.B) {
			tm := mountVault(b, newVault(b, fastKDF))
			data := randBytes(1, size)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				d := tm.path(strconv.Itoa(i / 100))
				if i%100 == 0 {
					if err := os.Mkdir(d, 0o755); err != nil {
						b.Fatal(err)
					}
				}
				if err := os.WriteFile(filepath.Join(d, "f"+strconv.Itoa(i)), data, 0o644); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}
