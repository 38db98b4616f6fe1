package meta

import (
	"os"
	"strconv"
	"testing"
)

// TestPreadsProbe (FINCRYPT_PREADS_PROBE=N): N files' chunks written one
// batch each into an index that already holds 200,000 flushed chunk
// references, as a mount's closes do, for counting the reads of the
// index's tables with strace.
func TestPreadsProbe(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("FINCRYPT_PREADS_PROBE"))
	if n <= 0 {
		t.Skip("FINCRYPT_PREADS_PROBE not set")
	}
	dir := t.TempDir()
	x := openTest(t, dir, testKeys(t, 3))
	ref := func(ino uint64) *ChunkRef {
		var id ChunkID
		id[0], id[1], id[2], id[3] = byte(ino), byte(ino>>8), byte(ino>>16), 7
		return &ChunkRef{ID: id, Version: ino, Len: 100}
	}
	for i := uint64(0); i < 200; i++ {
		b := x.NewBatch()
		for j := uint64(0); j < 1000; j++ {
			ino := 2 + i*1000 + j
			b.PutInode(&Inode{Ino: ino, Mode: 0o100644, Nlink: 1})
			b.PutChunk(ino, 0, ref(ino))
		}
		if err := b.Commit(false); err != nil {
			t.Fatal(err)
		}
	}
	if err := x.Flush(); err != nil {
		t.Fatal(err)
	}
	s, err := x.WalkRefSum()
	if err != nil {
		t.Fatal(err)
	}
	x.TrackRefs(s)
	os.WriteFile("/proc/sys/vm/drop_caches", []byte("1"), 0)
	p0 := x.PointsRead()
	for i := uint64(0); i < uint64(n); i++ {
		ino := 1_000_000 + i*7919%uint64(n)
		b := x.NewBatch()
		b.PutInode(&Inode{Ino: ino, Mode: 0o100644, Nlink: 1})
		b.PutChunk(ino, 0, ref(ino))
		if err := b.Commit(false); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d point reads, %d read again", x.PointsRead()-p0, x.RefRereads())
}
