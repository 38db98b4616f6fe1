package fs_test

import (
	"os"
	"strings"
	"testing"

	"github.com/fincrypt/fincrypt/fs"
	"github.com/fincrypt/fincrypt/meta"
	"github.com/fincrypt/fincrypt/vault"
)

// TestCheckReportsIndexProblems damages the index behind the file system's
// back and expects Check to name each problem.
func TestCheckReportsIndexProblems(t *testing.T) {
	requireFUSE(t)
	home := newVault(t, vault.CreateOptions{ChunkSize: 4096})
	tm := mountVault(t, home)
	writeFile(t, tm.path("a"), randBytes(1, 10000))
	writeFile(t, tm.path("b"), []byte("b"))
	if err := os.Mkdir(tm.path("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	ia, ib := stat(t, tm.path("a")).Ino, stat(t, tm.path("b")).Ino
	tm.unmount()
	checkVault(t, home)

	v, err := vault.Open(home, testPassword, vault.OpenOptions{Lock: true})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	x, err := meta.Open(v.IndexDir(), v.Keys, meta.Options{})
	if err != nil {
		t.Fatal(err)
	}
	in, err := x.GetInode(ib)
	if err != nil {
		t.Fatal(err)
	}
	in.Nlink = 3
	b := x.NewBatch()
	b.PutInode(&in)                                                                            // wrong link count
	b.PutDirent(&meta.Dirent{Parent: meta.RootIno, Name: "ghost", Ino: 99999, Type: 0o100000}) // entry to nowhere
	b.DeleteChunk(ia, 1)                                                                       // chunk left unreferenced (and a hole)
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	x.Close()

	var out strings.Builder
	n, err := fs.Check(v, &out)
	if err != nil {
		t.Fatal(err)
	}
	report := out.String()
	for _, want := range []string{
		"link count 3, but 1 entries name it",
		`entry "ghost" in directory 1 names missing inode 99999`,
		// Changed behind the mount's back after a clean unmount:
		"does not match the record of the last clean unmount",
		"lost: 1 chunk(s) (",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("check report lacks %q:\n%s", want, report)
		}
	}
	if n != 3 {
		t.Errorf("check found %d problems, want 3 (an unreferenced chunk is not one by itself):\n%s", n, report)
	}
}

// TestCheckReportsFeedProblems: a chunk with no location that is missing
// from the pending feed (it would never be uploaded) is a problem check
// names.
func TestCheckReportsFeedProblems(t *testing.T) {
	requireFUSE(t)
	home := newVault(t, vault.CreateOptions{ChunkSize: 4096})
	tm := mountVault(t, home)
	writeFile(t, tm.path("a"), randBytes(2, 5000))
	ia := stat(t, tm.path("a")).Ino
	tm.unmount()
	checkVault(t, home)

	v, err := vault.Open(home, testPassword, vault.OpenOptions{Lock: true})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	x, err := meta.Open(v.IndexDir(), v.Keys, meta.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ref, ok, err := x.GetChunk(ia, 1)
	if err != nil || !ok {
		t.Fatalf("chunk 1 of a: %v %v", ok, err)
	}
	b := x.NewBatch()
	b.ForgetPending(ref.ID)
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	x.Close()
	var out strings.Builder
	n, err := fs.Check(v, &out)
	if err != nil {
		t.Fatal(err)
	}
	if want := "pending feed: chunk " + ref.ID.String() + " has no location and is not listed for upload"; n != 1 || !strings.Contains(out.String(), want) {
		t.Fatalf("check: %d problems, want 1 naming %q:\n%s", n, want, out.String())
	}
}

// TestCheckReadsEachRecordOnce: check compares the index with its
// clean-close record from the walk it makes anyway: it reads every index
// record once, and the pending feed and the locations once more for their
// own comparison, not the chunk references a second time (60 more records
// for 60 references before, a second decryption of every one of a
// million-file vault's references).
func TestCheckReadsEachRecordOnce(t *testing.T) {
	requireFUSE(t)
	home, _ := vaultWithFiles(t, 30) // 60 chunk references, a clean-close record
	v, err := vault.Open(home, testPassword, vault.OpenOptions{Lock: true})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	x, err := meta.Open(v.IndexDir(), v.Keys, meta.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	refs := 0
	if err := x.Walk(meta.Visitor{Chunk: func(uint64, uint64, meta.ChunkRef) { refs++ }}); err != nil {
		t.Fatal(err)
	}
	records := x.RecordsRead()
	if err := x.Locations(func(meta.ChunkID, meta.Location) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if err := x.PendingChunks(func(meta.Pending) error { return nil }); err != nil {
		t.Fatal(err)
	}
	feed := x.RecordsRead() - records
	x.Close()
	if refs != 60 {
		t.Fatalf("the vault holds %d chunk references, want 60", refs)
	}
	read := fs.CountCheckReads(t)
	var out strings.Builder
	if n, err := fs.Check(v, &out); err != nil || n != 0 {
		t.Fatalf("check: %d problems, %v:\n%s", n, err, out.String())
	}
	t.Logf("check read %d records; the index holds %d, the feed and locations %d", read(), records, feed)
	if got, want := read(), records+feed; got > want {
		t.Fatalf("check read %d index records, want at most %d (%d records, %d of the feed and locations): it read %d again",
			got, want, records, feed, got-want)
	}
}
