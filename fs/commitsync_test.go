package fs_test

import (
	"io"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/chunkstore"
	"github.com/fincrypt/fincrypt/fs"
	"github.com/fincrypt/fincrypt/meta"
	"github.com/fincrypt/fincrypt/vault"
)

// syncService is an attached service that wants open files committed
// before a sync (as the replication engine does).
type syncService struct{ commit func() error }

func (s *syncService) CommitBeforeSync(commit func() error) { s.commit = commit }
func (s *syncService) Close() error                         { return nil }

// TestSyncCommitsClosedFiles: close(2) returns with a file's chunks only
// queued for sealing. The step the mount hands an attached service to run
// before a sync's mark waits for them and puts them in the index, so that
// a sync asked for right after a copy covers the copy.
func TestSyncCommitsClosedFiles(t *testing.T) {
	requireFUSE(t)
	home := newVault(t, vault.CreateOptions{KDF: fastKDF.KDF, ChunkSize: 64 << 10})
	svc := &syncService{}
	var idx *meta.Index
	tm := mountVaultOpt(t, home, fs.Options{Attach: func(x *meta.Index, _ *chunkstore.Store) (io.Closer, error) {
		idx = x
		return svc, nil
	}})
	if svc.commit == nil {
		t.Fatal("the mount did not hand its attached service the commit step")
	}
	release := tm.m.HoldSealing()
	want := randBytes(3, 3*64<<10+99) // four chunks
	writeFile(t, tm.path("copied"), want)
	chunks := func() int {
		n := 0
		if err := idx.Walk(meta.Visitor{Chunk: func(_, _ uint64, _ meta.ChunkRef) { n++ }}); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := chunks(); n != 0 {
		t.Fatalf("%d chunks committed with sealing held: the test cannot tell", n)
	}
	done := make(chan error, 1)
	go func() { done <- svc.commit() }()
	select {
	case err := <-done:
		release()
		t.Fatalf("the commit step returned (%v) while the closed file's chunks could not be sealed", err)
	case <-time.After(300 * time.Millisecond):
	}
	release()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the commit step did not return within a minute of sealing resuming")
	}
	if n := chunks(); n != 4 {
		t.Fatalf("%d chunks in the index once the commit step returned, want 4", n)
	}
	mustEqual(t, "copied file", readFile(t, tm.path("copied")), want)
}

// TestAttrNotStaleAcrossRelease: a reply whose inode was read from the
// index while a closed file's chunks were still sealing, and whose
// open-file check comes once the file has been released, carries the size
// the release committed, not the one read (the kernel would keep the old
// size for the attribute timeout: an append through a hard link once
// landed at offset 0).
func TestAttrNotStaleAcrossRelease(t *testing.T) {
	requireFUSE(t)
	home := newVault(t, vault.CreateOptions{KDF: fastKDF.KDF, ChunkSize: 64 << 10})
	tm := mountVault(t, home)
	release := tm.m.HoldSealing()
	writeFile(t, tm.path("f"), []byte("shared"))
	ino := stat(t, tm.path("f")).Ino
	stale, err := tm.m.Index().GetInode(ino)
	if err != nil {
		release()
		t.Fatal(err)
	}
	release()
	if err := tm.m.WaitIdle(time.Minute); err != nil {
		t.Fatal(err)
	}
	if stale.Size != 0 {
		t.Fatalf("the index had size %d while sealing was held: the test cannot tell", stale.Size)
	}
	if got := tm.m.StatAs(&stale); got != 6 {
		t.Fatalf("reply size %d for an inode read before the release committed 6", got)
	}
}
