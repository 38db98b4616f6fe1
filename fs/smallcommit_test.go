package fs_test

import (
	"bytes"
	"os"
	"strconv"
	"testing"
	"time"
)

// TestSmallFileCommitReadsOnlyItsInode: writing a new small file costs the
// index a point read for each of the kernel's look-ups (the directory's
// GETATTR, the LOOKUP of the new name, the create's directory) and one for
// the release's commit (the file's inode); its chunk, fresh and past the
// file's indexed end, costs none (meta.Batch.PutNewChunk). PutChunk read
// the entry it replaced and the chunk's location: 2 more a file.
func TestSmallFileCommitReadsOnlyItsInode(t *testing.T) {
	requireFUSE(t)
	tm := mountVault(t, newVault(t, fastKDF))
	if err := os.Mkdir(tm.path("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, tm.path("d", "first"), []byte("x"))
	if err := tm.m.WaitIdle(time.Minute); err != nil {
		t.Fatal(err)
	}
	const files = 40
	data := func(i int) []byte { return bytes.Repeat([]byte{byte(i)}, 3000+i) }
	points := tm.m.Index().PointsRead()
	for i := range files {
		if err := os.WriteFile(tm.path("d", "f"+strconv.Itoa(i)), data(i), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := tm.m.WaitIdle(time.Minute); err != nil {
		t.Fatal(err)
	}
	reads := tm.m.Index().PointsRead() - points
	t.Logf("%.2f index point reads a small file written", float64(reads)/files)
	if reads > 4*files {
		t.Errorf("%d index point reads for %d small files written, want at most 4 a file (three look-ups, the release's inode)", reads, files)
	}
	// What was committed reads back, after a remount too.
	tm.unmount()
	checkVault(t, tm.home)
	tm = mountVault(t, tm.home)
	for i := range files {
		got, err := os.ReadFile(tm.path("d", "f"+strconv.Itoa(i)))
		if err != nil || !bytes.Equal(got, data(i)) {
			t.Fatalf("f%d: %d bytes (%v), want %d written", i, len(got), err, len(data(i)))
		}
	}
}
