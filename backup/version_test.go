package backup

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/meta"
	"github.com/fincrypt/fincrypt/vault"
)

const testCS = 4096 // chunk size of the synthetic mounts below

// mountTree builds, through the index API, what a mount's index holds for
// a tree of dirs directories of perDir files each under the root. With
// store, each file gets one sealed chunk in the chunk store (contents from
// content(ino)); without, only its chunk-map entry (for cost measurements).
type mountTree struct {
	t     testing.TB
	repo  Repo
	store bool
	next  uint64
}

func (m *mountTree) ino() uint64 { m.next++; return m.next }

func (m *mountTree) content(ino uint64, gen int) []byte {
	return []byte(fmt.Sprintf("file %d generation %d ", ino, gen) + string(seeded(ino+uint64(gen)<<32, 700)))
}

// putChunk gives file ino the one chunk data (replacing the one it had).
func (m *mountTree) putChunk(b *meta.Batch, ino uint64, data []byte) meta.ChunkID {
	var id meta.ChunkID
	copy(id[:], seeded(ino^uint64(len(data))<<40^uint64(time.Now().UnixNano()), 16))
	ver, err := m.repo.Index.NextVersion()
	if err != nil {
		m.t.Fatal(err)
	}
	if m.store {
		sealed := m.repo.Keys.Chunk.Seal(nil, data, vault.ChunkAD(ino, 0, ver))
		if err := m.repo.Store.Put(id, sealed); err != nil {
			m.t.Fatal(err)
		}
	}
	b.PutChunk(ino, 0, &meta.ChunkRef{ID: id, Version: ver, Len: uint32(len(data))})
	return id
}

func (m *mountTree) build(dirs, perDir int) {
	m.next = meta.RootIno
	now := time.Now().UnixNano()
	b := m.repo.Index.NewBatch()
	n := 0
	flush := func() {
		n++
		if n%2048 == 0 {
			if err := b.Commit(false); err != nil {
				m.t.Fatal(err)
			}
			b = m.repo.Index.NewBatch()
		}
	}
	b.PutInode(&meta.Inode{Ino: meta.RootIno, Mode: syscall.S_IFDIR | 0o755, Nlink: uint32(2 + dirs), Mtime: now, Ctime: now})
	for d := 0; d < dirs; d++ {
		dino := m.ino()
		b.PutInode(&meta.Inode{Ino: dino, Mode: syscall.S_IFDIR | 0o750, Nlink: 2, Mtime: now, Ctime: now, Uid: 7})
		b.PutDirent(&meta.Dirent{Parent: meta.RootIno, Name: fmt.Sprintf("d%04d", d), Ino: dino, Type: syscall.S_IFDIR})
		for f := 0; f < perDir; f++ {
			fino := m.ino()
			data := m.content(fino, 0)
			b.PutInode(&meta.Inode{Ino: fino, Mode: syscall.S_IFREG | 0o640, Nlink: 1, Size: uint64(len(data)), Mtime: now, Ctime: now})
			b.PutDirent(&meta.Dirent{Parent: dino, Name: fmt.Sprintf("f%05d", f), Ino: fino, Type: syscall.S_IFREG})
			m.putChunk(b, fino, data)
			flush()
		}
	}
	if err := b.Commit(true); err != nil {
		m.t.Fatal(err)
	}
	if m.store {
		if err := m.repo.Store.Sync(); err != nil {
			m.t.Fatal(err)
		}
	}
}

// rewrite gives file ino new contents (generation gen), as a mount's write
// does: a new chunk replaces the old one in the chunk map.
func (m *mountTree) rewrite(ino uint64, gen int) (old meta.ChunkID, data []byte) {
	ref, ok, err := m.repo.Index.GetChunk(ino, 0)
	if err != nil || !ok {
		m.t.Fatalf("chunk of %d: %v %v", ino, ok, err)
	}
	in, err := m.repo.Index.GetInode(ino)
	if err != nil {
		m.t.Fatal(err)
	}
	data = m.content(ino, gen)
	b := m.repo.Index.NewBatch()
	m.putChunk(b, ino, data)
	in.Size = uint64(len(data))
	in.Mtime++
	b.PutInode(&in)
	if err := b.Commit(true); err != nil {
		m.t.Fatal(err)
	}
	return ref.ID, data
}

func takeVersion(t testing.TB, repo Repo, at time.Time) *VersionReport {
	t.Helper()
	rep, err := TakeVersion(repo, VersionOptions{ChunkSize: testCS, Time: at, Host: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// TestVersionPinsWhatItNamesAndForgetReleasesIt: a version of a mount
// names its files' chunks and pins them; after a file is rewritten the old
// version still restores its old bytes, with metadata; a second version
// after one change adds one tree per directory on the way and one pin; an
// unchanged mount records no version; forget drops the old version's pin
// and deletes the chunk no file references, while the kept version still
// restores; the pending feed stays exact throughout.
func TestVersionPinsWhatItNamesAndForgetReleasesIt(t *testing.T) {
	repo := newRepo(t)
	m := &mountTree{t: t, repo: repo, store: true}
	m.build(3, 4) // inos 2..16: d0000 is 2, its files 3..6
	t0 := time.Now().Add(-2 * time.Hour)
	v1 := takeVersion(t, repo, t0)
	if v1.Snapshot == "" || v1.Files != 12 || v1.Dirs != 3 || v1.NewChunks != 12 || v1.NewTrees != 4 {
		t.Fatalf("first version: %+v", v1)
	}
	if rep := takeVersion(t, repo, t0.Add(time.Minute)); !rep.Unchanged || rep.Snapshot != "" || rep.NewChunks != 0 || rep.NewTrees != 0 {
		t.Fatalf("a version of an unchanged mount: %+v", rep)
	}
	const ino = 4
	oldData := m.content(ino, 0)
	oldID, newData := m.rewrite(ino, 1)
	v2 := takeVersion(t, repo, t0.Add(time.Hour))
	if v2.NewChunks != 1 || v2.NewTrees != 2 || v2.NewBytes != uint64(len(newData)) {
		t.Fatalf("second version after one change: %+v (want 1 chunk, 2 trees: the directory and the root)", v2)
	}
	if pinned, _ := repo.Index.Pinned(oldID); !pinned {
		t.Fatal("the first version's chunk of the rewritten file is not pinned")
	}
	if rep, err := repo.Index.VerifyFeed(); err != nil || !rep.OK() {
		t.Fatalf("pending feed: %+v %v", rep, err)
	}
	snaps := mustSnapshots(t, repo)
	if len(snaps) != 2 || snaps[0].Source != SourceMount || snaps[0].Paths != nil {
		t.Fatalf("snapshots: %+v", snaps)
	}
	restoreFile := func(s Snapshot, overwrite bool) []byte {
		t.Helper()
		dir := t.TempDir()
		if _, err := Restore(context.Background(), repo, s, RestoreOptions{Path: "/d0000/f00001", Target: dir, Overwrite: overwrite}); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, "d0000", "f00001")
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := os.Stat(p)
		if fi.Mode().Perm() != 0o640 {
			t.Fatalf("restored mode %v, want 0640", fi.Mode())
		}
		return b
	}
	if got := restoreFile(snaps[0], false); !bytes.Equal(got, oldData) {
		t.Fatalf("the first version restores %q..., want the old contents", got[:20])
	}
	if got := restoreFile(snaps[1], false); !bytes.Equal(got, newData) {
		t.Fatal("the second version does not restore the new contents")
	}
	// The file drops nothing here by itself: the chunk is only the
	// version's now. Forget keeps the newest version.
	res, err := Forget(repo, Policy{Last: 1}, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Forget) != 1 || res.Forget[0].ID != snaps[0].ID || res.Sweep.Pins != 1 || res.Sweep.Trees != 2 {
		t.Fatalf("forget: %+v", res)
	}
	if pinned, _ := repo.Index.Pinned(oldID); pinned {
		t.Fatal("the forgotten version's chunk is still pinned")
	}
	if _, ok := repo.Store.Has(oldID); ok {
		t.Fatal("the forgotten version's chunk, which no file references, is still in the store")
	}
	if got := restoreFile(snaps[1], false); !bytes.Equal(got, newData) {
		t.Fatal("the kept version no longer restores")
	}
	if rep, err := repo.Index.VerifyFeed(); err != nil || !rep.OK() {
		t.Fatalf("pending feed after forget: %+v %v", rep, err)
	}
}

// TestForgetRulesApplyToEachSourceApart: --keep-last 1 keeps the newest
// backup and the newest version of the mount.
func TestForgetRulesApplyToEachSourceApart(t *testing.T) {
	repo := newRepo(t)
	m := &mountTree{t: t, repo: repo, store: true}
	m.build(1, 2)
	t0 := time.Now().Add(-3 * time.Hour)
	takeVersion(t, repo, t0)
	m.rewrite(3, 1)
	takeVersion(t, repo, t0.Add(time.Hour))
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "a"), []byte("backed up"), 0o644)
	if _, err := Run(context.Background(), repo, Options{Paths: []string{src}, Time: t0.Add(30 * time.Minute)}); err != nil {
		t.Fatal(err)
	}
	res, err := Forget(repo, Policy{Last: 1}, true)
	if err != nil {
		t.Fatal(err)
	}
	var kept []Source
	for _, s := range res.Keep {
		kept = append(kept, s.Source)
	}
	if len(res.Keep) != 2 || len(res.Forget) != 1 || res.Forget[0].Source != SourceMount || !res.Forget[0].Time.Equal(t0) {
		t.Fatalf("keep %v, forget %+v", kept, res.Forget)
	}
}

// TestVersionCostGrowsWithTheChange: the second version of a mount of
// 2000 files after one file changed writes one pin and two trees, a few
// hundred bytes of index, not a record per file.
func TestVersionCostGrowsWithTheChange(t *testing.T) {
	repo := newRepo(t)
	m := &mountTree{t: t, repo: repo}
	m.build(20, 100)
	first := takeVersion(t, repo, time.Now().Add(-time.Hour))
	if first.NewChunks != 2000 || first.NewTrees != 21 {
		t.Fatalf("first version: %+v", first)
	}
	m.rewrite(50, 1)
	second := takeVersion(t, repo, time.Now())
	if second.NewChunks != 1 || second.NewTrees != 2 || second.IndexBytes > first.IndexBytes/20 {
		t.Fatalf("second version: %+v (first: %d index bytes)", second, first.IndexBytes)
	}
	t.Logf("first version %d index bytes, second after one change %d", first.IndexBytes, second.IndexBytes)
}

// BenchmarkVersion measures a version of a mount of N files (the index
// API's records, 100 files a directory) and the next one after one file
// changed: time and index bytes written.
func BenchmarkVersion(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("files=%d", n), func(b *testing.B) {
			for range b.N {
				b.StopTimer()
				repo := newRepo(b)
				m := &mountTree{t: b, repo: repo}
				m.build(n/100, 100)
				b.StartTimer()
				t0, c0 := time.Now(), cpuTime()
				first, err := TakeVersion(repo, VersionOptions{ChunkSize: testCS, Time: time.Now().Add(-time.Hour)})
				if err != nil {
					b.Fatal(err)
				}
				d1, cpu1 := time.Since(t0), cpuTime()-c0
				b.StopTimer()
				m.rewrite(uint64(n/2), 1)
				b.StartTimer()
				t1, c1 := time.Now(), cpuTime()
				second, err := TakeVersion(repo, VersionOptions{ChunkSize: testCS})
				if err != nil {
					b.Fatal(err)
				}
				d2, cpu2 := time.Since(t1), cpuTime()-c1
				b.ReportMetric(d1.Seconds(), "first_s")
				b.ReportMetric(float64(first.IndexBytes), "first_index_B")
				b.ReportMetric(d2.Seconds(), "second_s")
				b.ReportMetric(float64(second.IndexBytes), "second_index_B")
				b.ReportMetric(cpu1.Seconds(), "first_cpu_s")
				b.ReportMetric(cpu2.Seconds(), "second_cpu_s")
			}
		})
	}
}

// TestVersionCrashBeforeItsRecord: a version that stops after its pins
// and trees are durable but before its record (a crash) leaves the kept
// version whole, the feed exact, and the next version reuses the pins; a
// forget then sweeps what the crashed one left, and a sweep that stops
// after its records' commit (before deleting local copies) loses nothing
// kept either.
func TestVersionCrashBeforeItsRecord(t *testing.T) {
	repo := newRepo(t)
	m := &mountTree{t: t, repo: repo, store: true}
	m.build(2, 3)
	t0 := time.Now().Add(-time.Hour)
	takeVersion(t, repo, t0)
	oldID, newData := m.rewrite(4, 1)
	crash := fmt.Errorf("crash")
	testHookAfterPins = func() error { return crash }
	_, err := TakeVersion(repo, VersionOptions{ChunkSize: testCS, Time: t0.Add(time.Minute)})
	testHookAfterPins = nil
	if err != crash {
		t.Fatalf("the crashed version: %v", err)
	}
	if n := len(mustSnapshots(t, repo)); n != 1 {
		t.Fatalf("%d snapshots after a version crashed before its record, want 1", n)
	}
	if rep, err := repo.Index.VerifyFeed(); err != nil || !rep.OK() {
		t.Fatalf("pending feed after the crash: %+v %v", rep, err)
	}
	// The kept version still restores the old bytes.
	dir := t.TempDir()
	s := mustSnapshots(t, repo)[0]
	if _, err := Restore(context.Background(), repo, s, RestoreOptions{Target: dir}); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "d0000", "f00001")); !bytes.Equal(got, m.content(4, 0)) {
		t.Fatal("the kept version lost its old bytes after a crashed version")
	}
	// The next version reuses the crashed one's pin.
	rep := takeVersion(t, repo, t0.Add(2*time.Minute))
	if rep.Snapshot == "" || rep.NewChunks != 0 || rep.NewTrees != 0 {
		t.Fatalf("the version after the crash: %+v (want the crashed one's pins and trees reused)", rep)
	}
	// Forget the first: the sweep frees its chunk; the kept one restores.
	res, err := Forget(repo, Policy{Last: 1}, false)
	if err != nil || res.Sweep.Pins != 1 {
		t.Fatalf("forget: %+v %v", res, err)
	}
	if _, ok := repo.Store.Has(oldID); ok {
		t.Fatal("the forgotten version's chunk is still in the store")
	}
	dir = t.TempDir()
	if _, err := Restore(context.Background(), repo, mustSnapshots(t, repo)[0], RestoreOptions{Target: dir}); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "d0000", "f00001")); !bytes.Equal(got, newData) {
		t.Fatal("the kept version does not restore")
	}
}

// cpuTime is the CPU time (user and system) the process used so far: on a
// shared machine, a steadier measure than the wall clock.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
