package replicate

import (
	"bytes"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/fincrypt/fincrypt/meta"
)

// TestSequentialReadPrefetches reads a file of many segments back from the
// network: it comes back intact, the segments after the one being read are
// fetched ahead, and every segment is downloaded exactly once (read-ahead
// neither fetches in vain nor makes a reader fetch again).
func TestSequentialReadPrefetches(t *testing.T) {
	p, home := planetAndVault(t)
	old := MaxSegment
	MaxSegment = SizeClasses[1] // 272 KiB: a few MiB make many segments
	t.Cleanup(func() { MaxSegment = old })
	c := mount(t, p, home, fastConfig())
	data := make([]byte, 3<<20+12345)
	rand.New(rand.NewSource(5)).Read(data)
	if err := os.WriteFile(filepath.Join(c.mnt, "seq"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	c.waitSynced("sequential file")
	c.dropCaches(t)
	c.rep.dropSegmentCache()
	segs := 0
	for _, s := range segmentPieces(t, c.rep.idx) {
		if s.Kind == meta.KindData {
			segs++
		}
	}
	if segs < 8 {
		t.Fatalf("%d data segments: the test wants many", segs)
	}
	fetched, ahead := c.rep.segFetches.Load(), c.rep.prefetched.Load()

	f, err := os.Open(filepath.Join(c.mnt, "seq"))
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	_, err = io.CopyBuffer(&got, f, make([]byte, 64<<10))
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), data) {
		t.Fatalf("read back %d bytes that differ from the %d written", got.Len(), len(data))
	}
	c.rep.prefetches.Wait() // none still running is counted short
	n, pre := c.rep.segFetches.Load()-fetched, c.rep.prefetched.Load()-ahead
	if n != int64(segs) {
		t.Fatalf("%d segment downloads for %d data segments (%d of them read-ahead)", n, segs, pre)
	}
	if pre == 0 {
		t.Fatalf("a sequential read of %d segments fetched none ahead", segs)
	}
}
