package storagenode

import (
	"bytes"
	"context"
	"io"
	"os"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/challenge"
	fnet "github.com/fincrypt/fincrypt/net"
)

// BenchmarkScrubPass measures a scrub pass without a rate limit (the
// limiter grants everything) against the baseline of reading the same
// piece files with io.Copy, both from the page cache: the ratio is the cost
// of checking (hashing the bytes, comparing the tree, the index) over
// reading alone. A real pass is bounded by --scrub-rate, far below both.
func BenchmarkScrubPass(b *testing.B) {
	const pieces, size = 16, 4 << 20
	s, err := OpenDiskStore(b.TempDir(), DiskStoreOptions{Capacity: 1 << 30, Logger: quiet, NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	var ids []challenge.PieceID
	data := make([]byte, size)
	for i := range pieces {
		data[0], data[1] = byte(i), 0xa5
		id, _ := challenge.ComputeID(data)
		if err := s.Put(context.Background(), id, size, fnet.AccountID{1}, bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
		ids = append(ids, id)
	}
	total := int64(pieces) * PieceFileSize(size)
	var readTime, scrubTime time.Duration
	b.SetBytes(total)
	for b.Loop() {
		t0 := time.Now()
		for _, id := range ids {
			f, err := os.Open(s.piecePath(id))
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.Copy(io.Discard, f); err != nil {
				b.Fatal(err)
			}
			f.Close()
		}
		t1 := time.Now()
		sc := newScrubber(quiet, s, nil, 1<<30, time.Hour, time.Second, time.Second)
		sc.limit = &recordingLimiter{}
		res, err := sc.Pass(context.Background())
		if err != nil || res.Checked != pieces || res.Damaged != 0 || res.Bytes != total {
			b.Fatalf("pass: %+v %v", res, err)
		}
		readTime += t1.Sub(t0)
		scrubTime += time.Since(t1)
	}
	b.ReportMetric(float64(scrubTime)/float64(readTime), "scrub/read")
	b.ReportMetric(float64(total)*float64(b.N)/scrubTime.Seconds()/(1<<20), "scrub-MiB/s")
	b.ReportMetric(float64(total)*float64(b.N)/readTime.Seconds()/(1<<20), "read-MiB/s")
}
