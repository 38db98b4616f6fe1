package chunkstore_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/fincrypt/fincrypt/chunkstore"
	"github.com/fincrypt/fincrypt/internal/powerloss"
	"github.com/fincrypt/fincrypt/meta"
	"github.com/fincrypt/fincrypt/vault"
)

type fileState struct {
	ref     meta.ChunkRef
	content []byte
	synced  bool // fsynced (or synced by a sync of everything) since its last write
	// located: the replication engine recorded (committed with sync) where
	// the chunk lives on the network, as it does on an upload receipt.
	located *meta.Location
}

// TestPowerLoss runs the client's index and chunk store on one file system
// that loses what was not synced (pebble's crashable MemFS), drives them as
// the mount does (chunks written, index committed without sync; fsync =
// the file's chunks synced, then the index; unmount and the background sync
// = every chunk, then the index; superseded chunks deleted after the index
// sync), cuts the power at a seeded random step, and checks after the
// "reboot" that every file whose fsync was acknowledged reads back what it
// held then. Steps that sync more than 128 chunks at once take the syncfs
// path. Each fsync in chunkstore and each sync in meta is needed here.
func TestPowerLoss(t *testing.T) {
	home := filepath.Join(t.TempDir(), "home")
	if err := vault.Create(home, []byte("pw"), vault.CreateOptions{KDF: vault.KDFParams{Time: 1, MemoryK: 64, Threads: 1}}); err != nil {
		t.Fatal(err)
	}
	v, err := vault.Open(home, []byte("pw"), vault.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	runs := powerloss.Runs(t, 40)
	for _, format := range []int{chunkstore.FormatFiles, chunkstore.FormatPacks} {
		for seed := 0; seed < runs; seed++ {
			powerLossRun(t, v.Keys, uint64(seed), format)
		}
	}
}

func powerLossRun(t *testing.T, keys *vault.Keys, seed uint64, format int) {
	rng := rand.New(rand.NewPCG(seed, 21))
	mem := vfs.NewCrashableMem()
	const indexDir, storeDir = "/vault/index", "/vault/store"
	idx, err := meta.Open(indexDir, keys, meta.Options{FS: mem})
	if err != nil {
		t.Fatal(err)
	}
	store, err := chunkstore.OpenFSFormat(storeDir, mem, format)
	if err != nil {
		t.Fatal(err)
	}
	files := map[uint64]*fileState{}
	unsynced := map[uint64][]meta.ChunkID{} // per file, chunks written since its last fsync
	var pending []meta.ChunkID              // superseded, deleted after the next index sync
	version := uint64(0)
	ackAll := func() {
		for _, f := range files {
			f.synced = true
		}
		clear(unsynced)
	}
	indexSync := func() {
		if err := idx.Sync(); err != nil {
			t.Fatal(err)
		}
		for _, id := range pending {
			if err := store.Delete(id); err != nil {
				t.Fatal(err)
			}
		}
		pending = pending[:0]
	}
	write := func(ino uint64) {
		version++
		content := make([]byte, 64+rng.IntN(512))
		for i := range content {
			content[i] = byte(rng.Uint32())
		}
		id := chunkstore.NewID()
		// A copy: under the race detector pebble's in-memory file system
		// scrambles what it was given to write (invariants builds).
		if err := store.Put(id, bytes.Clone(content)); err != nil {
			t.Fatal(err)
		}
		ref := meta.ChunkRef{ID: id, Version: version, Len: uint32(len(content))}
		b := idx.NewBatch()
		b.PutChunk(ino, 0, &ref)
		if err := b.Commit(false); err != nil {
			t.Fatal(err)
		}
		if old := files[ino]; old != nil {
			pending = append(pending, old.ref.ID)
		}
		files[ino] = &fileState{ref: ref, content: content}
		unsynced[ino] = append(unsynced[ino], id)
	}
	fsync := func(ino uint64) {
		if err := store.SyncIDs(unsynced[ino]); err != nil {
			t.Fatal(err)
		}
		delete(unsynced, ino)
		indexSync()
		if f := files[ino]; f != nil {
			f.synced = true
		}
	}
	syncAll := func() {
		if err := store.Sync(); err != nil {
			t.Fatal(err)
		}
		indexSync()
		ackAll()
	}

	locate := func(ino uint64) {
		f := files[ino]
		if f == nil || !f.synced {
			return
		}
		var seg meta.SegmentID
		for i := range seg {
			seg[i] = byte(rng.Uint32())
		}
		loc := &meta.Location{Segment: seg, Offset: uint32(rng.IntN(1 << 20)), Length: f.ref.Len}
		b := idx.NewBatch()
		b.PutLocation(f.ref.ID, loc)
		if err := b.Commit(true); err != nil {
			t.Fatal(err)
		}
		f.located = loc
	}

	steps := 20 + rng.IntN(60)
	crashAt := rng.IntN(steps)
	ino := uint64(2)
	for step := 0; step < crashAt; step++ {
		switch op := rng.IntN(20); {
		case op < 6: // a new file, often fsynced at once
			write(ino)
			if op < 4 {
				fsync(ino)
			}
			ino++
		case op < 10: // rewrite a file, often fsynced at once
			f := 2 + rng.Uint64N(ino-1)
			write(f)
			if op < 8 {
				fsync(f)
			}
		case op < 12:
			fsync(2 + rng.Uint64N(ino-1))
		case op < 15: // an upload receipt recorded
			locate(2 + rng.Uint64N(ino-1))
		case op < 19:
			syncAll()
		default: // a burst of files, then one sync: more than 128 chunks
			for range 130 {
				write(ino)
				ino++
			}
			if rng.IntN(2) == 0 {
				syncAll()
			} else {
				ids := []meta.ChunkID{}
				for _, l := range unsynced {
					ids = append(ids, l...)
				}
				if err := store.SyncIDs(ids); err != nil {
					t.Fatal(err)
				}
				indexSync()
				ackAll()
			}
		}
	}
	// Power cut: the clone keeps what was synced and a random part of the rest.
	clone := mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(50), RNG: rand.New(rand.NewPCG(seed, 22))})
	idx.Close()

	idx2, err := meta.Open(indexDir, keys, meta.Options{FS: clone})
	if err != nil {
		t.Fatalf("seed %d: the index does not open after the power cut: %v", seed, err)
	}
	defer idx2.Close()
	store2, err := chunkstore.OpenFS(storeDir, clone)
	if err != nil {
		t.Fatalf("seed %d: %v", seed, err)
	}
	if store2.Format() != format {
		t.Fatalf("seed %d: the store's format is %d after the cut, want %d", seed, store2.Format(), format)
	}
	checked := 0
	for ino, f := range files {
		if !f.synced {
			continue
		}
		checked++
		ref, ok, err := idx2.GetChunk(ino, 0)
		if err != nil || !ok {
			t.Fatalf("seed %d: fsynced file %d lost its chunk reference (ok=%v, %v)", seed, ino, ok, err)
		}
		if ref != f.ref {
			t.Fatalf("seed %d: fsynced file %d: reference %+v, acknowledged %+v", seed, ino, ref, f.ref)
		}
		got, err := store2.Get(ref.ID, nil)
		if err != nil {
			t.Fatalf("seed %d: fsynced file %d: chunk %s: %v", seed, ino, ref.ID, err)
		}
		if !bytes.Equal(got, f.content) {
			t.Fatalf("seed %d: fsynced file %d: chunk %s holds %d bytes, not the %d acknowledged", seed, ino, ref.ID, len(got), len(f.content))
		}
		if f.located != nil {
			loc, err := idx2.GetLocation(ref.ID)
			if err != nil || loc != *f.located {
				t.Fatalf("seed %d: file %d: recorded location lost: %+v, %v", seed, ino, loc, err)
			}
		}
	}
	if testing.Verbose() {
		fmt.Printf("format %d seed %d: cut after %d of %d steps, %d fsynced files intact\n", format, seed, crashAt, steps, checked)
	}
}
