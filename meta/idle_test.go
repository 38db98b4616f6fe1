package meta

import (
	"path/filepath"
	"testing"

	"github.com/fincrypt/fincrypt/internal/pebblesched"
)

// TestIndexDoesNotPoll: an open index runs no goroutine that wakes the
// process while nothing happens (Pebble's default compaction scheduler
// polls ten times a second; see pebblesched).
func TestIndexDoesNotPoll(t *testing.T) {
	x := openTest(t, filepath.Join(t.TempDir(), "index"), testKeys(t, 1))
	defer x.Close()
	if p := pebblesched.Polling(); p != "" {
		t.Fatalf("an open index polls:\n%s", p)
	}
}
