package mediator

import (
	"path/filepath"
	"testing"

	"github.com/fincrypt/fincrypt/internal/pebblesched"
)

// TestStoreDoesNotPoll: the mediator's open store runs no goroutine that
// wakes the process while nothing happens (see pebblesched).
func TestStoreDoesNotPoll(t *testing.T) {
	st, err := OpenPebbleStore(filepath.Join(t.TempDir(), "db"), PebbleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if p := pebblesched.Polling(); p != "" {
		t.Fatalf("an open store polls:\n%s", p)
	}
}
