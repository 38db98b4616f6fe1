package replicate

import (
	"math/rand/v2"
	"testing"
)

// TestStatusCountsUnsavedOpenFiles: what the mount's open files hold and
// the index does not (ReportUnsaved) is pending, and a vault with any is
// not restorable, even when the index itself is wholly uploaded and
// covered by the stored snapshot; a file pending in both is counted once.
func TestStatusCountsUnsavedOpenFiles(t *testing.T) {
	e := newEngine(t, nil)
	rng := rand.New(rand.NewPCG(7, 8))
	e.addChunks(t, rng, 200)
	e.uploadPending(t)
	if err := e.r.Snapshot(); err != nil {
		t.Fatal(err)
	}
	if st := e.r.Status(e.p.Context()); !st.Restorable || st.PendingChunks != 0 {
		t.Fatalf("uploaded and snapshotted: restorable %v, %d chunks pending", st.Restorable, st.PendingChunks)
	}

	var inos []uint64
	chunks, bytes := 0, uint64(0)
	e.r.ReportUnsaved(func() ([]uint64, int, uint64) { return inos, chunks, bytes })
	if st := e.r.Status(e.p.Context()); !st.Restorable || st.UnsavedOpenFiles != 0 {
		t.Fatalf("no open file holds anything: restorable %v, %d unsaved open files", st.Restorable, st.UnsavedOpenFiles)
	}
	inos, chunks, bytes = []uint64{1 << 40}, 2, 5000
	st := e.r.Status(e.p.Context())
	if st.Restorable || st.UnprotectedSince == nil || st.UnsavedOpenFiles != 1 || st.PendingFiles != 1 || st.PendingChunks != 2 || st.PendingBytes != 5000 {
		t.Fatalf("an open file holds 2 chunks (5000 bytes) outside the index: restorable %v (unprotected since %v), %d unsaved open files, pending %d files %d chunks %d bytes",
			st.Restorable, st.UnprotectedSince, st.UnsavedOpenFiles, st.PendingFiles, st.PendingChunks, st.PendingBytes)
	}
	// A size change only (no chunk) still is not restorable.
	chunks, bytes = 0, 0
	if st := e.r.Status(e.p.Context()); st.Restorable || st.PendingFiles != 1 {
		t.Fatalf("an open file's size is outside the index: restorable %v, %d pending files", st.Restorable, st.PendingFiles)
	}

	// A file with a chunk pending in the index and more in the mount is one file.
	e.addChunks(t, rng, 300)
	pend, err := e.r.pending()
	if err != nil || len(pend) != 1 {
		t.Fatalf("pending after a new chunk: %d, %v", len(pend), err)
	}
	inos, chunks, bytes = []uint64{pend[0].ino}, 1, 10
	st = e.r.Status(e.p.Context())
	if st.PendingFiles != 1 || st.PendingChunks != 2 || st.PendingBytes != uint64(pend[0].size)+10 || st.UnsavedOpenFiles != 1 {
		t.Fatalf("one file pending in the index and in the mount: %d files, %d chunks, %d bytes (want 1, 2, %d), %d unsaved open files",
			st.PendingFiles, st.PendingChunks, st.PendingBytes, pend[0].size+10, st.UnsavedOpenFiles)
	}
}
