package fs

import (
	"fmt"
	"time"
)

// WaitIdle waits until no file of the mount is open (every handle
// released, so every closed file's chunks are sealed and committed), for
// tests and benchmarks that must not let one workload's background work
// spill into the next.
func (m *Mounted) WaitIdle(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		m.r.openMu.Lock()
		n := len(m.r.open)
		m.r.openMu.Unlock()
		if n == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d files still open after %v", n, timeout)
		}
		time.Sleep(100 * time.Microsecond)
	}
}
