package fs_test

import (
	"fmt"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	fincryptfs "github.com/fincrypt/fincrypt/fs"
	"github.com/fincrypt/fincrypt/vault"
)

// TestReadAheadOutOfOrder reads a file as the kernel sends a sequential
// reader's read-ahead: requests of a chunk's size that are not aligned to
// chunks (each spans two), taking the file's lock in any order within a
// few chunks. Every chunk must be loaded once: a request that comes late
// finds its chunk still in the window, and starts no load of chunks the
// window already had. The window used to be dropped whenever a request
// went back, and chunks already read were loaded again (131 loads for 24
// chunks here; 256 MiB read back after a restore took 2.2 loads per chunk).
func TestReadAheadOutOfOrder(t *testing.T) {
	requireFUSE(t)
	const (
		cs     = 64 << 10
		chunks = 24
		half   = cs / 2
	)
	tm := mountVault(t, newVault(t, vault.CreateOptions{KDF: fastKDF.KDF, ChunkSize: cs}))
	p := tm.path("f")
	model := randBytes(3, chunks*cs)
	writeFile(t, p, model)
	// Released, so that the reader's handle holds none of the writer's
	// buffers: every chunk comes from the store.
	if err := tm.m.WaitIdle(time.Minute); err != nil {
		t.Fatal(err)
	}
	// Counted from before the open, which starts loading chunk 0.
	loads0, _ := fincryptfs.ChunkOpens()
	r, err := os.OpenFile(p, os.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })

	// Request k covers [half+k*cs, half+(k+1)*cs): the tail of chunk k
	// and the head of chunk k+1. They come in blocks of four, each block
	// backwards (3 2 1 0 7 6 5 4 ...), after a first short one.
	var order []int
	for b := 0; b < chunks-1; b += 4 {
		for k := min(b+3, chunks-2); k >= b; k-- {
			order = append(order, k)
		}
	}
	mustEqual(t, "head", readDirect(t, r, 0, half), model[:half])
	for _, k := range order {
		off := half + k*cs
		mustEqual(t, fmt.Sprintf("request %d", k), readDirect(t, r, int64(off), cs), model[off:off+cs])
	}
	mustEqual(t, "tail", readDirect(t, r, chunks*cs-half, half), model[chunks*cs-half:])
	if loads, _ := fincryptfs.ChunkOpens(); loads-loads0 != chunks {
		t.Fatalf("%d chunks loaded for a file of %d read once", loads-loads0, chunks)
	}

	// A reader that goes back past the window is served from where it
	// reads, and a sequential pass after it loads each chunk once more.
	mustEqual(t, "chunk 2 again", readDirect(t, r, 2*cs, cs), model[2*cs:3*cs])
	loads0, _ = fincryptfs.ChunkOpens()
	for i := 3; i < chunks; i++ {
		mustEqual(t, fmt.Sprintf("chunk %d again", i), readDirect(t, r, int64(i*cs), cs), model[i*cs:(i+1)*cs])
	}
	if loads, _ := fincryptfs.ChunkOpens(); loads-loads0 != chunks-3 {
		t.Fatalf("%d chunks loaded for %d read again in order", loads-loads0, chunks-3)
	}
}
