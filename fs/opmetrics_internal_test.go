package fs

import (
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// BenchmarkOpStat is the cost the FUSE op metrics add to one request.
func BenchmarkOpStat(b *testing.B) {
	m := NewOpMetrics()
	w := m.wrap(nil).(*metricsFS)
	for b.Loop() {
		w.read.done(time.Now(), fuse.OK)
	}
}
