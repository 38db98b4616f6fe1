package fs_test

import (
	"bytes"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/fincrypt/fincrypt/fs"
	"github.com/fincrypt/fincrypt/vault"
)

// TestAppendTakesWholeChunkBuffers writes a file of four chunks in 32 KiB
// writes, as io.Copy does. The first chunk's buffer starts small and
// doubles (a small file pins little memory); each next chunk, written on
// from the file's end, takes a whole-chunk buffer at once, with no growing
// and copying. A write past the end that leaves a gap still starts small
// (sparse writes pin little memory), and the gap reads back as zeros.
func TestAppendTakesWholeChunkBuffers(t *testing.T) {
	requireFUSE(t)
	home := newVault(t, vault.CreateOptions{})
	tm := mountVault(t, home)
	const cs = vault.DefaultChunkSize
	want := make([]byte, 4*cs)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range want {
		want[i] = byte(rng.Uint32())
	}
	f, err := os.Create(tm.path("big"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close() // on a failure: the mount must not be busy
	var first int64
	g0 := fs.BufGrowths()
	for off := 0; off < len(want); off += 32 << 10 {
		if off == cs {
			first = fs.BufGrowths() - g0
		}
		if _, err := f.Write(want[off : off+32<<10]); err != nil {
			t.Fatal(err)
		}
	}
	rest := fs.BufGrowths() - g0 - first
	if first == 0 {
		t.Fatal("the first chunk's buffer never grew: the counter counts nothing")
	}
	if rest != 0 {
		t.Fatalf("chunks 1-3 grew their buffers %d times (the first chunk %d): want whole-chunk buffers at once", rest, first)
	}
	// A gap: 100 bytes into a new chunk past the end.
	tail := bytes.Repeat([]byte{0xee}, 1000)
	g1 := fs.BufGrowths()
	if _, err := f.WriteAt(tail, 4*cs+100); err != nil {
		t.Fatal(err)
	}
	if fs.BufGrowths() == g1 {
		t.Fatal("a small write leaving a gap past the end took a whole-chunk buffer")
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	want = append(append(want, make([]byte, 100)...), tail...)
	mustEqual(t, "file read back", readFile(t, tm.path("big")), want)
	tm.unmount()
	tm = mountVault(t, home)
	mustEqual(t, "file read back after a remount", readFile(t, tm.path("big")), want)
}
