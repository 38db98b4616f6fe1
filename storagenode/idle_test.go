package storagenode

import (
	"testing"

	"github.com/fincrypt/fincrypt/internal/pebblesched"
)

// TestStoreDoesNotPoll: a node's open store runs no goroutine that wakes
// the process while nothing happens (see pebblesched).
func TestStoreDoesNotPoll(t *testing.T) {
	s := open(t, t.TempDir(), 1<<20)
	defer s.Close()
	if p := pebblesched.Polling(); p != "" {
		t.Fatalf("an open store polls:\n%s", p)
	}
}
