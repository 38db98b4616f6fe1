package fs_test

import (
	"math/rand/v2"
	"syscall"
	"testing"

	"github.com/fincrypt/fincrypt/fs"
	"github.com/fincrypt/fincrypt/vault"
)

// TestReorderedReadsLoadEachChunkOnce reads a file as a cold sequential
// reader's READs reach the mount: the kernel has several in flight and they
// overtake each other (on a 1 GiB read, 284 of 1024 came out of order, up to
// 7 chunks back). Each chunk is loaded (read from the store and opened) once,
// in order or not; the loads ahead were dropped and made again when a READ
// came out of order (1778 chunk reads for 1024 chunks).
func TestReorderedReadsLoadEachChunkOnce(t *testing.T) {
	requireFUSE(t)
	const cs, chunks = 64 << 10, 48
	home := newVault(t, vault.CreateOptions{KDF: fastKDF.KDF, ChunkSize: cs})
	want := randBytes(21, chunks*cs)
	tm := mountVault(t, home)
	writeFile(t, tm.path("f"), want)
	tm.unmount()

	inOrder := make([]uint64, chunks)
	for i := range inOrder {
		inOrder[i] = uint64(i)
	}
	// Out of order as seen on a real mount: within each run of 8 chunks a
	// few READs overtake the ones before them (seeded).
	rng := rand.New(rand.NewPCG(7, 7))
	reordered := append([]uint64(nil), inOrder...)
	for b := 0; b+8 <= chunks; b += 8 {
		rng.Shuffle(8, func(i, j int) { reordered[b+i], reordered[b+j] = reordered[b+j], reordered[b+i] })
	}
	// One READ lags 7 chunks behind the furthest one.
	reordered[20], reordered[27] = reordered[27], reordered[20]

	for _, tc := range []struct {
		name  string
		order []uint64
	}{{"in order", inOrder}, {"reordered", reordered}} {
		t.Run(tc.name, func(t *testing.T) {
			tm := mountVault(t, home) // a fresh mount: nothing cached
			defer tm.unmount()
			var st syscall.Stat_t
			if err := syscall.Stat(tm.path("f"), &st); err != nil {
				t.Fatal(err)
			}
			loads0, _ := fs.ChunkOpens()
			got, err := tm.m.ReadChunksInOrder(st.Ino, tc.order)
			if err != nil {
				t.Fatal(err)
			}
			loads, _ := fs.ChunkOpens()
			for i, idx := range tc.order {
				mustEqual(t, "chunk read", got[i], want[idx*cs:(idx+1)*cs])
			}
			if n := loads - loads0; n != chunks {
				t.Errorf("%d chunk loads for %d chunks read once each, want one load each", n, chunks)
			}
		})
	}
}
