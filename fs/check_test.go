package fs_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"sort"
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

	v, x := openUnmounted(t, home)
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

	v, x := openUnmounted(t, home)
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

// TestCheckMergesTheFeed: check compares the pending feed with the chunks
// that want it by merging two lists in chunk id order (sets of a million
// chunks each before). Among 18 pending chunks, two taken off the feed (the
// first and the last in id order, where a merge that stops early or starts
// late goes wrong) and one located but still listed give exactly three
// problems, each naming its chunk.
func TestCheckMergesTheFeed(t *testing.T) {
	requireFUSE(t)
	home := newVault(t, vault.CreateOptions{ChunkSize: 4096})
	tm := mountVault(t, home)
	var inos []uint64
	for i := range 6 {
		p := tm.path(fmt.Sprintf("f%d", i))
		writeFile(t, p, randBytes(uint64(10+i), 10000)) // 3 chunks
		inos = append(inos, stat(t, p).Ino)
	}
	tm.unmount()
	checkVault(t, home)

	v, x := openUnmounted(t, home)
	type at struct {
		id         meta.ChunkID
		ino, index uint64
	}
	var refs []at
	for _, ino := range inos {
		for i := range uint64(3) {
			ref, ok, err := x.GetChunk(ino, i)
			if err != nil || !ok {
				t.Fatalf("chunk %d of inode %d: %v %v", i, ino, ok, err)
			}
			refs = append(refs, at{ref.ID, ino, i})
		}
	}
	sort.Slice(refs, func(i, j int) bool { return bytes.Compare(refs[i].id[:], refs[j].id[:]) < 0 })
	first, last, stale := refs[0], refs[len(refs)-1], refs[len(refs)/2]
	b := x.NewBatch()
	b.ForgetPending(first.id)
	b.ForgetPending(last.id)
	b.PutLocation(stale.id, &meta.Location{Offset: 0, Length: 100})
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	b = x.NewBatch()
	b.MarkPending(stale.id, stale.ino, stale.index, 100) // located, and listed again
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	x.Close()
	var out strings.Builder
	n, err := fs.Check(v, &out)
	if err != nil {
		t.Fatal(err)
	}
	missing := " has no location and is not listed for upload"
	wants := []string{
		"pending feed: chunk " + first.id.String() + missing,
		"pending feed: chunk " + last.id.String() + missing,
		"pending feed: chunk " + stale.id.String() + " is listed for upload but is located or no longer referenced",
	}
	for _, want := range wants {
		if !strings.Contains(out.String(), want) {
			t.Errorf("check does not report %q", want)
		}
	}
	if n != len(wants) {
		t.Errorf("check: %d problems, want %d", n, len(wants))
	}
	if t.Failed() {
		t.Logf("check's report:\n%s", out.String())
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
	checked := fs.CheckedIndex(t)
	var out strings.Builder
	if n, err := fs.Check(v, &out); err != nil || n != 0 {
		t.Fatalf("check: %d problems, %v:\n%s", n, err, out.String())
	}
	read := checked().RecordsRead()
	t.Logf("check read %d records; the index holds %d, the feed and locations %d", read, records, feed)
	if got, want := read, records+feed; got > want {
		t.Fatalf("check read %d index records, want at most %d (%d records, %d of the feed and locations): it read %d again",
			got, want, records, feed, got-want)
	}
}

// TestCheckLooksUpNoLocationPerChunk: of a vault whose chunks are all
// evicted from the local store (each only in its durable segment), check
// reads the locations in one pass, not one point read per chunk missing
// from the store (60 point reads more for 60 chunks before: 43 % of the
// check of such a vault of a million files), and still tells chunks on the
// network from chunks lost.
func TestCheckLooksUpNoLocationPerChunk(t *testing.T) {
	requireFUSE(t)
	home, _ := vaultWithFiles(t, 30) // 60 chunks
	v, err := vault.Open(home, testPassword, vault.OpenOptions{Lock: true})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	idx, store, err := fs.OpenOffline(v, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	var ids []meta.ChunkID
	if err := idx.Walk(meta.Visitor{Chunk: func(_, _ uint64, ref meta.ChunkRef) { ids = append(ids, ref.ID) }}); err != nil {
		t.Fatal(err)
	}
	// Evict every chunk but the last into a segment, as a trimmed cache
	// leaves them; the last is lost (no copy anywhere).
	seg := meta.SegmentID{1}
	err = fs.ChangeOffline(v, idx, func() error {
		b := idx.NewBatch()
		for i, id := range ids[:len(ids)-1] {
			b.PutLocation(id, &meta.Location{Segment: seg, Offset: uint32(i) * 8192, Length: 8192})
		}
		b.PutSegment(&meta.Segment{ID: seg, Kind: meta.KindData, State: meta.SegmentDurable, K: 2, N: 4, Healthy: 4,
			Used: uint32(len(ids)) * 8192, Class: uint32(len(ids)) * 8192, Pieces: make([]meta.SegmentPiece, 4)})
		return b.Commit(true)
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if err := store.Delete(id); err != nil {
			t.Fatal(err)
		}
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	if err := idx.Close(); err != nil {
		t.Fatal(err)
	}
	checked := fs.CheckedIndex(t)
	var out strings.Builder
	n, err := fs.Check(v, &out)
	if err != nil {
		t.Fatal(err)
	}
	report := out.String()
	if n != 1 || !strings.Contains(report, ids[len(ids)-1].String()+" is missing from the store") ||
		!strings.Contains(report, fmt.Sprintf("note: %d chunk(s) are only on the network", len(ids)-1)) {
		t.Fatalf("check: %d problems, want the one lost chunk, and %d on the network:\n%s", n, len(ids)-1, report)
	}
	points := checked().PointsRead()
	t.Logf("check made %d point reads for %d chunks missing from the store", points, len(ids))
	if points >= int64(len(ids)) {
		t.Fatalf("check made %d point reads for %d chunks missing from the store: one a chunk", points, len(ids))
	}
}

// openUnmounted opens an unmounted vault (closed at the test's end) and its
// index, for a test to damage before it checks the vault; the test closes
// the index.
func openUnmounted(t *testing.T, home string) (*vault.Vault, *meta.Index) {
	t.Helper()
	v, err := vault.Open(home, testPassword, vault.OpenOptions{Lock: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	x, err := meta.Open(v.IndexDir(), v.Keys, meta.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return v, x
}
