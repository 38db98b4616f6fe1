package replicate

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	fnet "github.com/fincrypt/fincrypt/net"
)

// TestSyncSnapshotsPendingChunks: nothing would upload or snapshot on its
// own (FlushAfter, SnapshotDelay and SnapshotInterval are an hour), so the
// data is pending and not restorable until a sync asks. The sync's snapshot
// is exported while the chunks are pending, uploads them and adds their
// locations: a restore from it reads every file.
func TestSyncSnapshotsPendingChunks(t *testing.T) {
	p, home := planetAndVault(t)
	cfg := fastConfig()
	cfg.FlushAfter, cfg.SnapshotDelay, cfg.SnapshotInterval = time.Hour, time.Hour, time.Hour
	c := mount(t, p, home, cfg)
	waitStatus(t, home, "the empty vault's first snapshot", func(st *Status) bool { return st.Restorable })
	files := writeTree(t, c.mnt, 3)

	st, err := QueryStatus(home)
	if err != nil {
		t.Fatal(err)
	}
	if st.PendingChunks == 0 || st.Restorable || st.UnprotectedSince == nil {
		t.Fatalf("fresh writes: want pending, not restorable, unprotected: %+v", st)
	}
	// A snapshot taken now exports the pending chunks' references, so it
	// must upload them and add their locations.
	if err := c.rep.Snapshot(); err != nil {
		t.Fatal(err)
	}
	// An index change that raced the snapshot's export (a commit of the
	// chunks it uploaded) is covered by the next one, which a sync asks for.
	mark0 := c.rep.RequestSync()
	waitStatus(t, home, "restorable after the snapshot", func(st *Status) bool { return st.Restorable && st.Covered(mark0) })
	// More writes, and a sync for them.
	for name, b := range writeTree(t, c.mnt, 4) {
		files[name] = b
	}
	mark := c.rep.RequestSync()
	st = waitStatus(t, home, "sync", func(st *Status) bool { return st.Covered(mark) })
	if !st.Restorable || st.PendingChunks != 0 || st.UnprotectedSince != nil {
		t.Fatalf("after sync: want restorable with nothing pending: %+v", st)
	}

	acct := fnet.AccountID(c.rep.client.Account())
	c.unmount()
	home2 := filepath.Join(t.TempDir(), "restored")
	if _, err := Restore(p.Context(), RestoreOptions{Home: home2, Mediator: mediatorAddr(p), Account: acct, Password: testPassword}); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(home)
	c2 := mount(t, p, home2, cfg)
	checkTree(t, c2.mnt, files)
	if st, err := QueryStatus(home2); err != nil || !st.Restorable {
		t.Fatalf("a restored vault starts restorable: %+v, %v", st, err)
	}
}

func waitStatus(t *testing.T, home, what string, cond func(*Status) bool) *Status {
	t.Helper()
	deadline := time.Now().Add(40 * time.Second)
	for {
		st, err := QueryStatus(home)
		if err != nil {
			t.Fatal(err)
		}
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached after 40s: %+v", what, st)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
