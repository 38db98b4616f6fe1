package replicate

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// TestRequestSyncCommitsFirst: a sync commits what open and just-closed
// files hold (the mount's step, fs.CommitBeforeSyncer) before it takes its
// mark, so the snapshot that covers the mark holds them; a failing step is
// shown as the engine's error and the sync still goes ahead.
func TestRequestSyncCommitsFirst(t *testing.T) {
	e := newEngine(t, nil)
	var committed time.Time
	e.r.CommitBeforeSync(func() error {
		time.Sleep(20 * time.Millisecond) // chunks being sealed
		committed = time.Now()
		return nil
	})
	mark := e.r.RequestSync()
	if committed.IsZero() {
		t.Fatal("RequestSync did not commit the open files")
	}
	if mark.Before(committed) {
		t.Fatalf("the sync's mark %v comes before the commit ended at %v: a snapshot covering the mark may miss it", mark, committed)
	}
	e.r.CommitBeforeSync(func() error { return errors.New("disk full") })
	before := e.r.RequestSync()
	if before.Before(mark) {
		t.Fatalf("mark %v after a failed commit, before the earlier %v", before, mark)
	}
	st := e.r.Status(t.Context())
	if len(st.Errors) == 0 || !strings.Contains(st.Errors[len(st.Errors)-1], "disk full") {
		t.Fatalf("a failed commit before a sync is not shown: %q", st.Errors)
	}
}
