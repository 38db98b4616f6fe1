package storagenode

import (
	"bytes"
	"context"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/fincrypt/fincrypt/challenge"
	"github.com/fincrypt/fincrypt/internal/powerloss"
	fnet "github.com/fincrypt/fincrypt/net"
)

// syncCountFS counts the syncs of directories opened with OpenDir, by path.
type syncCountFS struct {
	vfs.FS
	mu    sync.Mutex
	syncs map[string]int
}

type countedDir struct {
	vfs.File
	fs   *syncCountFS
	name string
}

func (f *syncCountFS) OpenDir(name string) (vfs.File, error) {
	d, err := f.FS.OpenDir(name)
	if err != nil {
		return nil, err
	}
	return &countedDir{File: d, fs: f, name: name}, nil
}

func (d *countedDir) Sync() error {
	d.fs.mu.Lock()
	d.fs.syncs[filepath.Clean(d.name)]++
	d.fs.mu.Unlock()
	return d.File.Sync()
}

// A stored piece costs one directory sync, its own directory's (the rename
// into it), not also one of tmp/: the temporary name's removal need not be
// durable. The power-loss tests (TestPowerLossPieceStore) check that every
// acknowledged piece survives a cut without it.
func TestPutSyncsOnlyThePiecesDirectory(t *testing.T) {
	fs := &syncCountFS{FS: vfs.NewMem(), syncs: map[string]int{}}
	st, err := OpenDiskStore("/node/data", DiskStoreOptions{Capacity: 1 << 30, Logger: slog.New(slog.DiscardHandler), FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	const pieces = 5
	fs.mu.Lock()
	clear(fs.syncs)
	fs.mu.Unlock()
	for range pieces {
		data := powerloss.Fill(rng, make([]byte, 100<<10))
		id, err := challenge.ComputeID(data)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Put(context.Background(), id, int64(len(data)), fnet.AccountID{1}, bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	total := 0
	for dir, n := range fs.syncs {
		if strings.HasPrefix(dir, "/node/data/"+indexDir) {
			continue // the index's own (pebble's) directory syncs
		}
		if !strings.HasPrefix(dir, "/node/data/"+piecesDir+"/") {
			t.Errorf("directory %s synced %d times by %d uploads", dir, n, pieces)
		}
		total += n
	}
	if total != pieces {
		t.Fatalf("%d directory syncs for %d pieces (%v), want one each", total, pieces, fs.syncs)
	}
}
