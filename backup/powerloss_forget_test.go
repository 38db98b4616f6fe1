package backup

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/fincrypt/fincrypt/chunkstore"
	"github.com/fincrypt/fincrypt/meta"
)

// crashRepo is a repository whose index and chunk store are both on one
// crashable in-memory file system, so that a power cut (CrashClone with
// the default configuration: everything not synced is lost) reaches both.
type crashRepo struct {
	*memRepo
	mem *vfs.MemFS
}

func newCrashRepo(t *testing.T) *crashRepo {
	t.Helper()
	mem := vfs.NewCrashableMem()
	r := newMemRepo(t, mem)
	store, err := chunkstore.OpenFS("store", mem)
	if err != nil {
		t.Fatal(err)
	}
	r.repo.Store = store
	return &crashRepo{memRepo: r, mem: mem}
}

// cut opens what a power cut at this instant leaves: the index and the
// chunk store.
func (r *crashRepo) cut(t *testing.T) Repo {
	t.Helper()
	fs := r.mem.CrashClone(vfs.CrashCloneCfg{})
	idx, err := meta.Open(r.path, r.keys, meta.Options{FS: fs})
	if err != nil {
		t.Fatalf("the index does not open after the power cut: %v", err)
	}
	t.Cleanup(func() { idx.Close() })
	store, err := chunkstore.OpenFS("store", fs)
	if err != nil {
		t.Fatalf("the chunk store does not open after the power cut: %v", err)
	}
	return Repo{Keys: r.keys, Index: idx, Store: store}
}

func blobIDs(t *testing.T, idx *meta.Index) []meta.ChunkID {
	t.Helper()
	var ids []meta.ChunkID
	if err := idx.Blobs(func(id meta.ChunkID, _ uint32) error { ids = append(ids, id); return nil }); err != nil {
		t.Fatal(err)
	}
	return ids
}

// checkBlobsStored fails unless every blob record names a chunk the store
// holds: a later pass reuses a recorded blob without storing it again, so
// a record without its chunk is a snapshot that cannot restore.
func checkBlobsStored(t *testing.T, repo Repo, when string) {
	t.Helper()
	ids := blobIDs(t, repo.Index)
	if len(ids) == 0 {
		t.Fatalf("%s: no blob records after the power cut", when)
	}
	for _, id := range ids {
		if _, ok := repo.Store.Has(id); !ok {
			t.Fatalf("%s: blob %s is recorded after the power cut but its chunk is not in the store", when, id)
		}
	}
}

// TestPowerLossForgetSweep cuts the power right after a backup pass and
// right after forget (which sweeps), with the index and the chunk store
// on one crashable file system. After the pass: every blob record's chunk
// is in the store. After forget: the forgotten snapshot stays forgotten,
// the kept one is there, no blob record names a swept chunk, and the
// swept chunks stay deleted.
func TestPowerLossForgetSweep(t *testing.T) {
	r := newCrashRepo(t)
	src := t.TempDir()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for i, n := range []string{"a", "b"} {
		if err := os.WriteFile(filepath.Join(src, n), seeded(uint64(i)+1, 3000), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Run(context.Background(), r.repo, Options{Paths: []string{src}, Time: t0, Host: "t"}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "a"), seeded(99, 3000), 0o644); err != nil {
		t.Fatal(err)
	}
	second, err := Run(context.Background(), r.repo, Options{Paths: []string{src}, Time: t0.Add(time.Hour), Host: "t"})
	if err != nil {
		t.Fatal(err)
	}
	checkBlobsStored(t, r.cut(t), "after the second pass")

	before := blobIDs(t, r.repo.Index)
	res, err := Forget(r.repo, Policy{Last: 1}, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Forget) != 1 || res.Sweep.Blobs == 0 {
		t.Fatalf("forget: %d snapshots forgotten, %d blobs swept; want 1 and at least 1", len(res.Forget), res.Sweep.Blobs)
	}
	live := blobIDs(t, r.repo.Index)
	var swept []meta.ChunkID
	for _, id := range before {
		if !slices.Contains(live, id) {
			swept = append(swept, id)
		}
	}
	after := r.cut(t)
	snaps, err := Snapshots(after.Index)
	if err != nil || len(snaps) != 1 || snaps[0].ID.String() != second.Snapshot {
		t.Fatalf("snapshots after forget and the power cut: %+v, %v; want only the kept one, %s", snaps, err, second.Snapshot)
	}
	checkBlobsStored(t, after, "after forget")
	for _, id := range swept {
		if slices.Contains(blobIDs(t, after.Index), id) {
			t.Fatalf("blob %s, swept by forget, is recorded again after the power cut", id)
		}
		if _, ok := after.Store.Has(id); ok {
			t.Fatalf("chunk %s, deleted by forget's sweep, is back in the store after the power cut", id)
		}
	}
}

// TestPowerLossRemoveRoot cuts the power right after a backup root is
// removed: it stays removed.
func TestPowerLossRemoveRoot(t *testing.T) {
	r := newCrashRepo(t)
	src := t.TempDir()
	if _, err := AddRoot(r.repo.Index, src); err != nil {
		t.Fatal(err)
	}
	if err := RemoveRoot(r.repo.Index, src); err != nil {
		t.Fatal(err)
	}
	roots, err := Roots(r.cut(t).Index)
	if err != nil || slices.Contains(roots, src) {
		t.Fatalf("backup roots after the power cut: %v, %v; want %s gone, removed before it", roots, err, src)
	}
}

// TestPowerLossVersion cuts the power right after a version of a mount is
// taken: the version is there, its trees load and every chunk it names is
// pinned and in the store.
func TestPowerLossVersion(t *testing.T) {
	r := newCrashRepo(t)
	m := &mountTree{t: t, repo: r.repo, store: true}
	m.build(2, 3)
	rep := takeVersion(t, r.repo, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	after := r.cut(t)
	snaps, err := Snapshots(after.Index)
	if err != nil || len(snaps) != 1 || snaps[0].ID.String() != rep.Snapshot {
		t.Fatalf("versions after the power cut: %+v, %v; want the one taken before it, %s", snaps, err, rep.Snapshot)
	}
	pinned := map[meta.ChunkID]bool{}
	if err := after.Index.Pins(func(id meta.ChunkID, _ meta.Pin) error { pinned[id] = true; return nil }); err != nil {
		t.Fatal(err)
	}
	files := 0
	var walk func(id meta.TreeID)
	walk = func(id meta.TreeID) {
		tr, err := LoadTree(after.Index, id)
		if err != nil {
			t.Fatalf("a tree of the version after the power cut: %v", err)
		}
		for _, n := range tr.Nodes {
			if n.Type == TypeDir {
				walk(n.Subtree)
				continue
			}
			files++
			for _, b := range n.Blobs {
				if !pinned[b] {
					t.Fatalf("chunk %s of %s is not pinned after the power cut", b, n.Name)
				}
				if _, ok := after.Store.Has(b); !ok {
					t.Fatalf("chunk %s of %s is not in the store after the power cut", b, n.Name)
				}
			}
		}
	}
	walk(snaps[0].Tree)
	if files != 6 {
		t.Fatalf("the version after the power cut has %d files; want 6", files)
	}
}
