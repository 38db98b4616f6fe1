package storagenode

import (
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// TestWritebackSteps checks when a piece's writer starts the kernel's
// writeback: once exactly writebackChunk bytes are written past the last
// start, and not before. Writeback is advice (Put's fsync makes the piece
// durable), but starting it at each write, or never before the fsync, is
// not what the writer promises.
func TestWritebackSteps(t *testing.T) {
	f, err := vfs.NewMem().Create("/p", vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := &writebackWriter{f: f}
	step := func(n int, wantStarted int64) {
		t.Helper()
		if _, err := w.Write(make([]byte, n)); err != nil {
			t.Fatal(err)
		}
		if w.started != wantStarted {
			t.Fatalf("after %d bytes: writeback started at %d, want %d", w.off, w.started, wantStarted)
		}
	}
	step(1, 0)                             // 1 byte: no writeback yet
	step(writebackChunk-2, 0)              // one byte short of a chunk
	step(1, writebackChunk)                // exactly a chunk
	step(1, writebackChunk)                // a byte more: not again
	step(writebackChunk-2, writebackChunk) // one byte short of the next
	step(1, 2*writebackChunk)
}
