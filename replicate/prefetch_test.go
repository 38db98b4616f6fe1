package replicate

import (
	"bytes"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/fincrypt/fincrypt/meta"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
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
	failed := counterValue(t, c.rep.fetches.errors)

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
	// A download that failed (a node refusing under load) is not kept, and
	// the read that needs the segment downloads it again: each segment is
	// downloaded once with success.
	bad := int64(counterValue(t, c.rep.fetches.errors) - failed)
	if n-bad != int64(segs) {
		t.Fatalf("%d segment downloads (%d failed) for %d data segments (%d of them read-ahead)", n, bad, segs, pre)
	}
	if bad > 0 {
		t.Logf("%d of %d downloads failed and were made again", bad, n)
	}
	if pre == 0 {
		t.Fatalf("a sequential read of %d segments fetched none ahead", segs)
	}
}

// counterValue is a counter's value.
func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
