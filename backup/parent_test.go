package backup

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

// TestParentFromTheHead: a pass finds its parent through the head record of
// its folders, without reading the snapshot history: with 400 older
// snapshots of its folders and newer ones of other folders and of the mount,
// a pass reads a handful of index records, takes the newest snapshot of its
// own folders as parent, and reads no unchanged file. When the head names a
// snapshot that is gone (forget), the pass falls back to reading the
// history once, finds the newest remaining one, and the head is right again.
func TestParentFromTheHead(t *testing.T) {
	repo := newRepo(t)
	src := t.TempDir()
	for i := range 5 {
		writeFile(t, filepath.Join(src, "d", string(rune('a'+i))), seeded(uint64(i), 40<<10), 0o644)
	}
	run := func(what string, at time.Time) (*Report, int64) {
		t.Helper()
		before := repo.Index.RecordsRead()
		rep, err := Run(context.Background(), repo, Options{Paths: []string{src}, Time: at})
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return rep, repo.Index.RecordsRead() - before
	}
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	first, _ := run("the first pass", now)
	// History: older snapshots of the same folders, newer ones of others.
	b := repo.Index.NewBatch()
	for i := range 400 {
		s := Snapshot{ID: newSnapID(), Time: now.Add(-time.Duration(i+1) * time.Hour), Paths: []string{src}}
		b.PutBackupSnapshot(s.ID, s.encode())
	}
	for _, s := range []Snapshot{{ID: newSnapID(), Time: now.Add(time.Hour), Paths: []string{src, "/elsewhere"}},
		{ID: newSnapID(), Time: now.Add(time.Hour), Source: SourceMount}} {
		b.PutBackupSnapshot(s.ID, s.encode())
	}
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}

	second, reads := run("the second pass", now.Add(2*time.Hour))
	t.Logf("the second pass read %d index records (402 snapshots in the history)", reads)
	if second.Parent != first.Snapshot {
		t.Fatalf("parent %s, want the first pass's %s", second.Parent, first.Snapshot)
	}
	if second.BytesRead != 0 || second.Unchanged != 5 {
		t.Fatalf("the second pass read unchanged files: %+v", second)
	}
	if reads > 40 {
		t.Fatalf("the second pass read %d index records: it reads the snapshot history to find its parent", reads)
	}

	// The head's snapshot is forgotten: the newest remaining is the parent.
	b = repo.Index.NewBatch()
	id, _ := FindSnapshot(repo.Index, second.Snapshot)
	b.DeleteBackupSnapshot(id.ID)
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	third, _ := run("after the head's snapshot was forgotten", now.Add(3*time.Hour))
	if third.Parent != first.Snapshot || third.BytesRead != 0 {
		t.Fatalf("after the head's snapshot was forgotten: parent %s (want %s), %d bytes read", third.Parent, first.Snapshot, third.BytesRead)
	}
	fourth, reads := run("the pass after", now.Add(4*time.Hour))
	if fourth.Parent != third.Snapshot || reads > 40 {
		t.Fatalf("the pass after: parent %s (want %s), %d records read", fourth.Parent, third.Snapshot, reads)
	}
}
