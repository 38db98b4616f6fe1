package replicate

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/backup"
	"github.com/fincrypt/fincrypt/chunkstore"
	ffs "github.com/fincrypt/fincrypt/fs"
	"github.com/fincrypt/fincrypt/mediator/testplanet"
	"github.com/fincrypt/fincrypt/meta"
	"github.com/fincrypt/fincrypt/vault"
)

// TestScaleReport measures how the client's costs grow with the vault: it
// builds vaults of FINCRYPT_SCALE files (comma-separated, e.g.
// "10000,100000,1000000") directly through the meta API, every file one
// sealed chunk of 2 KiB held in the local store and located in a durable
// segment, 1000 files per directory, and prints one row per size and the
// growth from the first size. Not part of `make test`: scripts/bench.sh
// runs it (FINCRYPT_SCALE unset skips it).
//
// Rows: mount (fs.Mount after a clean unmount, until it serves), pending
// (the engine finding one new chunk to upload: what a write waits for
// beyond the round's tick), status (Replicator.Status after a change, one
// chunk pending), idle/min (the periodic passes an idle mount runs in a
// minute at the default intervals: six cache trims and one maintenance
// pass, timed one by one; the health check asks the mediator and is left
// out), maint_change (the maintenance pass after one durable file was
// overwritten, and the index records it read), version (the mount's
// backup.Versioner: the first reads the whole tree, the next after one file
// changed reads what changed; then backup.TakeVersion, the full walk, after
// another change; with the records each read),
// snapshot (Replicator.Snapshot after a change: the index exported and
// uploaded), check (fs.Check, unmounted), heap (the Go heap in use while the
// timed mount serves, less before it, after a collection each time).
// FINCRYPT_SCALE_EVICTED=1 leaves the chunks out of the local store, as a
// cache trimmed to nothing leaves them (every chunk only on the network):
// vaults of millions of index entries without millions of chunk files.
func TestScaleReport(t *testing.T) {
	spec := os.Getenv("FINCRYPT_SCALE")
	if spec == "" {
		t.Skip("FINCRYPT_SCALE is not set (e.g. 10000,100000): the scale report runs from scripts/bench.sh")
	}
	skipCheck := os.Getenv("FINCRYPT_SCALE_NOCHECK") != ""
	var rows []scaleRow
	for _, f := range strings.Split(spec, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			t.Fatalf("FINCRYPT_SCALE: %q is not a count of files", f)
		}
		row := measureScale(t, n, skipCheck)
		rows = append(rows, row)
		fmt.Printf("scale files=%d gen=%s mount=%s pending=%s status=%s idle_per_min=%s maint_change=%s(%d records) version=%s version_after_change=%s(%d records) version_full_walk=%s(%d records) snapshot=%s(%.1fMiB, %.2f B allocated a byte) check=%s heap=%.1fMiB\n", row.files,
			row.gen.Round(time.Millisecond), row.mount.Round(time.Microsecond), row.pending.Round(time.Microsecond),
			row.status.Round(time.Microsecond), row.idle.Round(time.Microsecond), row.maintChange.Round(time.Microsecond), row.maintRead,
			row.version1.Round(time.Millisecond), row.version2.Round(time.Microsecond), row.version2Read,
			row.versionFull.Round(time.Millisecond), row.versionFullRead, row.snapshot.Round(time.Millisecond), float64(row.snapshotBytes)/(1<<20), float64(row.snapshotAlloc)/float64(max(row.snapshotBytes, 1)),
			row.check.Round(time.Millisecond), float64(row.heap)/(1<<20))
	}
	if len(rows) > 1 {
		a, b := rows[0], rows[len(rows)-1]
		ratio := func(x, y time.Duration) string {
			if x <= 0 {
				return "-"
			}
			return fmt.Sprintf("%.1fx", float64(y)/float64(x))
		}
		fmt.Printf("scale growth %d->%d files (%.0fx): mount %s pending %s status %s idle_per_min %s maint_change %s version_after_change %s snapshot %s check %s\n",
			a.files, b.files, float64(b.files)/float64(a.files), ratio(a.mount, b.mount), ratio(a.pending, b.pending),
			ratio(a.status, b.status), ratio(a.idle, b.idle), ratio(a.maintChange, b.maintChange), ratio(a.version2, b.version2), ratio(a.snapshot, b.snapshot), ratio(a.check, b.check))
	}
}

type scaleRow struct {
	files                                    int
	gen, mount, pending, status, idle, check time.Duration
	maintChange                              time.Duration // maintain after one overwrite
	maintRead                                int64         // records it read
	version1, version2, snapshot             time.Duration
	versionFull                              time.Duration // TakeVersion (full walk) after one change
	version2Read, versionFullRead            int64         // records read (scanned and looked up)
	snapshotBytes                            int64         // the index snapshot's records, before sealing
	snapshotAlloc                            int64         // bytes the process allocated while Snapshot ran
	heap                                     int64
}

// heapInUse is the Go heap in use after a collection.
func heapInUse() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse)
}

func measureScale(t *testing.T, n int, skipCheck bool) scaleRow {
	row := scaleRow{files: n}
	home := filepath.Join(t.TempDir(), "home")
	newVaultChunks(t, home, 64<<10)
	v, err := vault.Open(home, testPassword, vault.OpenOptions{Lock: true})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	start := time.Now()
	generateVault(t, v, n)
	row.gen = time.Since(start)

	// Mounts: the first has no clean-unmount record (as after a crash),
	// the second collects, the third is the steady state that is timed.
	if os.Geteuid() == 0 {
		for i := 0; i < 3; i++ {
			mnt := t.TempDir()
			before := heapInUse()
			start := time.Now()
			m, err := ffs.Mount(v, mnt, ffs.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if i == 2 {
				row.mount = time.Since(start)
				row.heap = heapInUse() - before
			}
			if err := m.Unmount(); err != nil {
				t.Fatal(err)
			}
		}
	}

	// The engine, stopped after its start so that its steps are timed one
	// by one.
	p := testplanet.New(t, testplanet.Config{StorageNodes: 4})
	idx, err := meta.Open(v.IndexDir(), v.Keys, meta.Options{})
	if err != nil {
		t.Fatal(err)
	}
	store, err := chunkstore.Open(v.StoreDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg := fastConfig()
	cfg.ScanInterval, cfg.FlushAfter, cfg.CheckInterval = time.Hour, time.Hour, time.Hour
	cfg.MaintainInterval, cfg.SnapshotInterval = time.Hour, time.Hour
	r, err := New(v, idx, store, p.Client, cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	r.ctx, r.cancel = context.WithCancel(context.Background()) // its steps run on
	changes := 0
	change := func() {
		changes++
		ino, err := idx.NextIno()
		if err != nil {
			t.Fatal(err)
		}
		id := chunkstore.NewID()
		if err := store.Put(id, v.Keys.Chunk.Seal(nil, make([]byte, 2048), vault.ChunkAD(ino, 0, 1))); err != nil {
			t.Fatal(err)
		}
		b := idx.NewBatch()
		b.PutInode(&meta.Inode{Ino: ino, Mode: syscall.S_IFREG | 0o644, Nlink: 1, Size: 2048})
		b.PutDirent(&meta.Dirent{Parent: meta.RootIno, Name: fmt.Sprintf("new%d", changes), Ino: ino, Type: syscall.S_IFREG})
		b.PutChunk(ino, 0, &meta.ChunkRef{ID: id, Version: 1, Len: 2048})
		if err := b.Commit(false); err != nil {
			t.Fatal(err)
		}
	}
	timed := func(f func()) time.Duration {
		start := time.Now()
		f()
		return time.Since(start)
	}
	// Steady state: the second change after the first was seen.
	change()
	r.pending()
	r.Status(context.Background())
	change()
	row.pending = timed(func() {
		if got, err := r.pending(); err != nil || len(got) != 2 {
			t.Fatalf("pending: %d chunks, %v", len(got), err)
		}
	})
	change()
	row.status = timed(func() {
		if st := r.Status(context.Background()); st.PendingChunks != 3 {
			t.Fatalf("status: %d pending", st.PendingChunks)
		}
	})
	// Maintenance after a durable file is overwritten (inode 3 is the
	// first file generateVault wrote): what a busy mount's minutely pass
	// costs, once it has counted (its first pass after the mount walks).
	r.maintain()
	overwrite := func() {
		id := chunkstore.NewID()
		ver, err := idx.NextVersion()
		if err != nil {
			t.Fatal(err)
		}
		if err := store.Put(id, v.Keys.Chunk.Seal(nil, make([]byte, 2048), vault.ChunkAD(3, 0, ver))); err != nil {
			t.Fatal(err)
		}
		b := idx.NewBatch()
		b.PutChunk(3, 0, &meta.ChunkRef{ID: id, Version: ver, Len: 2048})
		if err := b.Commit(false); err != nil {
			t.Fatal(err)
		}
	}
	overwrite()
	read := idx.RecordsRead()
	row.maintChange = timed(func() { r.maintain() })
	row.maintRead = idx.RecordsRead() - read
	// Idle: what the periodic passes cost once nothing changes (each
	// pass run once first, as after the change).
	r.maintain()
	r.evict()
	maint := timed(func() { r.maintain() })
	var trim time.Duration
	if r.idleTrims() {
		trim = timed(func() { r.evict() })
	}
	row.idle = maint + 6*trim
	// A version of the whole tree (fs.Mounted.TakeVersion, `fincrypt
	// snapshot`): the first, and the next after one file changed.
	// The mount's Versioner: its first version reads the whole tree, the
	// next follows the change. The full walk (TakeVersion) after the same
	// change is timed too.
	repo := backup.Repo{Keys: v.Keys, Index: idx, Store: store}
	vs := backup.NewVersioner(repo)
	version := func(full bool) {
		var err error
		if full {
			_, err = backup.TakeVersion(repo, backup.VersionOptions{ChunkSize: 64 << 10, Host: "scale"})
		} else {
			_, err = vs.Take(backup.VersionOptions{ChunkSize: 64 << 10, Host: "scale"})
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	row.version1 = timed(func() { version(false) })
	overwrite()
	reads := func() int64 { return idx.RecordsRead() + idx.PointsRead() }
	read = reads()
	row.version2 = timed(func() { version(false) })
	row.version2Read = reads() - read
	overwrite()
	read = reads()
	row.versionFull = timed(func() { version(true) })
	row.versionFullRead = reads() - read
	// The index snapshot after a change (every SnapshotInterval while
	// writes go on): it exports and uploads the whole index.
	change()
	if _, err := idx.ExportState(func(k, v []byte) error {
		row.snapshotBytes += int64(8 + len(k) + len(v))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// A loaded machine can leave too few nodes healthy for a moment: the
	// last of the tries within two minutes is timed.
	for deadline := time.Now().Add(2 * time.Minute); ; {
		var err error
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		row.snapshot = timed(func() { err = r.Snapshot() })
		runtime.ReadMemStats(&m1)
		row.snapshotAlloc = int64(m1.TotalAlloc - m0.TotalAlloc)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Logf("snapshot: %v (not timed)", err)
			row.snapshot = 0
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	r.cancel()
	r.store.SetFetcher(nil)
	if err := idx.Close(); err != nil {
		t.Fatal(err)
	}
	// The engine's steps changed the index outside a mount: as after a
	// crash, there is no clean-unmount record to compare with.
	os.Remove(filepath.Join(home, ffs.CleanFileName))
	if !skipCheck {
		var out strings.Builder
		row.check = timed(func() {
			if n, err := ffs.Check(v, &out); err != nil || n != 0 {
				t.Fatalf("check: %d problems, %v\n%.2000s", n, err, out.String())
			}
		})
	}
	return row
}

// generateVault writes n files of one 2 KiB chunk each, 1000 per
// directory, through the meta API, with their sealed chunks in the store
// and located in durable segments of 1000 chunks.
func generateVault(t *testing.T, v *vault.Vault, n int) {
	idx, err := meta.Open(v.IndexDir(), v.Keys, meta.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer idx.Close()
	store, err := chunkstore.Open(v.StoreDir())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UnixNano()
	root := meta.Inode{Ino: meta.RootIno, Mode: syscall.S_IFDIR | 0o755, Nlink: 2, Atime: now, Mtime: now, Ctime: now}
	plain := make([]byte, 2048)
	rand.Read(plain)
	evicted := os.Getenv("FINCRYPT_SCALE_EVICTED") == "1"
	const perDir = 1000
	for d := 0; d*perDir < n; d++ {
		dino, err := idx.NextIno()
		if err != nil {
			t.Fatal(err)
		}
		b := idx.NewBatch()
		root.Nlink++
		b.PutInode(&meta.Inode{Ino: dino, Mode: syscall.S_IFDIR | 0o755, Nlink: 2, Atime: now, Mtime: now, Ctime: now})
		b.PutDirent(&meta.Dirent{Parent: meta.RootIno, Name: fmt.Sprintf("d%05d", d), Ino: dino, Type: syscall.S_IFDIR})
		var seg meta.SegmentID
		rand.Read(seg[:])
		off := uint32(0)
		for i := 0; i < perDir && d*perDir+i < n; i++ {
			fino, err := idx.NextIno()
			if err != nil {
				t.Fatal(err)
			}
			ver, err := idx.NextVersion()
			if err != nil {
				t.Fatal(err)
			}
			id := chunkstore.NewID()
			sealedLen := len(plain) + vault.Overhead
			if !evicted {
				sealed := v.Keys.Chunk.Seal(nil, plain, vault.ChunkAD(fino, 0, ver))
				if err := store.Put(id, sealed); err != nil {
					t.Fatal(err)
				}
			}
			b.PutInode(&meta.Inode{Ino: fino, Mode: syscall.S_IFREG | 0o644, Nlink: 1, Size: uint64(len(plain)), Atime: now, Mtime: now, Ctime: now})
			b.PutDirent(&meta.Dirent{Parent: dino, Name: fmt.Sprintf("f%05d", i), Ino: fino, Type: syscall.S_IFREG})
			b.PutChunk(fino, 0, &meta.ChunkRef{ID: id, Version: ver, Len: uint32(len(plain))})
			b.PutLocation(id, &meta.Location{Segment: seg, Offset: off, Length: uint32(sealedLen)})
			off += uint32(sealedLen)
		}
		b.PutSegment(&meta.Segment{ID: seg, Kind: meta.KindData, State: meta.SegmentDurable, K: 2, N: 4, Healthy: 4,
			Used: off, Class: off, Created: now, Checked: now, Pieces: make([]meta.SegmentPiece, 4)})
		if err := b.Commit(false); err != nil {
			t.Fatal(err)
		}
	}
	b := idx.NewBatch()
	b.PutInode(&root)
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	if err := store.Sync(); err != nil {
		t.Fatal(err)
	}
}

// idleTrims reports whether an idle mount trims the cache (lists the
// store) every evictEvery: not once the trim waits for a change.
func (r *Replicator) idleTrims() bool {
	gen := r.idx.Generation()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.evictGen, r.cacheDirty, r.lastEvict = gen+1, false, time.Time{} // a trim just ran, long ago
	return r.trimDueLocked(gen)
}
