package replicate

import (
	"sync"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/mediator/testplanet"
)

// smallSegmentsMount mounts a vault on a planet of six storage nodes with
// segments of the smallest size class but one (a few hundred KiB make
// one), parallel uploads, and per-piece and per-call timeouts long enough
// for a loaded machine.
func smallSegmentsMount(t *testing.T, parallel int, timeout time.Duration) (*testplanet.Planet, *client) {
	t.Helper()
	p, home := planetWithVault(t, testplanet.Config{StorageNodes: 6})
	old := MaxSegment
	MaxSegment = SizeClasses[1]
	t.Cleanup(func() { MaxSegment = old })
	cfg := fastConfig()
	cfg.Parallel = parallel
	cfg.PieceTimeout = timeout
	cfg.CallTimeout = timeout
	return p, mount(t, p, home, cfg)
}

// uploadStarts counts the segment uploads the engine starts, calling at
// (if set) with the count, from the engine's own hook, before the upload.
type uploadStarts struct {
	mu sync.Mutex
	n  int
}

func (u *uploadStarts) hook(c *client, at func(n int)) {
	c.rep.faults.SetHook(func(work string) {
		if work != "upload segment" {
			return
		}
		u.mu.Lock()
		u.n++
		n := u.n
		u.mu.Unlock()
		if at != nil {
			at(n)
		}
	})
}

func (u *uploadStarts) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.n
}

// noUploadLeft fails unless every placement was either recorded or
// released (no upload intent left) and no chunk is in flight.
func (c *client) noUploadLeft(t *testing.T) {
	t.Helper()
	var intents []string
	c.rep.idx.ReplRecords("up/", func(name string, _ []byte) error { intents = append(intents, name); return nil })
	c.rep.mu.Lock()
	inflight := len(c.rep.inflight)
	c.rep.mu.Unlock()
	if len(intents) != 0 || inflight != 0 {
		t.Fatalf("after sync: %d upload intents left (placements neither recorded nor released), %d chunks in flight", len(intents), inflight)
	}
}
