package storagenode

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	fnet "github.com/fincrypt/fincrypt/net"
)

// flipOnFS flips one bit of the file at path on fsys.
func flipOnFS(t *testing.T, fsys vfs.FS, path string, off int) {
	t.Helper()
	f, err := fsys.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	b[off] ^= 0x04
	w, err := fsys.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// The scrubber quarantines a damaged piece's file on the store's own file
// system (DiskStoreOptions.FS), not on the operating system's: the file
// leaves pieces/ for quarantine/ at once, and a restart neither serves nor
// re-indexes it. A piece whose index entry gives another size than its
// (valid) file would otherwise be re-indexed at the next start, after the
// node had reported it lost.
func TestScrubQuarantinesOnTheStoreFS(t *testing.T) {
	fsys := vfs.NewMem()
	const dir = "/node/data"
	openMem := func() *DiskStore {
		t.Helper()
		s, err := OpenDiskStore(dir, DiskStoreOptions{Capacity: 64 << 20, Logger: quiet, FS: fsys})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := openMem()
	sizes := []int{3000, 5000, 7000}
	var pieces []PieceInfo
	for i, n := range sizes {
		data, id := randPiece(t, uint64(40+i), n)
		if err := s.Put(context.Background(), id, int64(n), fnet.AccountID{1}, bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		p, err := s.Stat(id)
		if err != nil {
			t.Fatal(err)
		}
		pieces = append(pieces, p)
	}
	// Piece 0: a bit flipped in its bytes. Piece 1: its index entry says
	// one byte more than its whole, valid file.
	flipOnFS(t, fsys, s.piecePath(pieces[0].ID), pieceHeaderSize+100)
	misfit := pieces[1]
	misfit.Size++
	if err := s.db.Set(indexKey(misfit.ID), encodeIndex(misfit), nil); err != nil {
		t.Fatal(err)
	}
	sc, _ := testScrubber(s, &fakeMediator{})
	res, err := sc.Pass(context.Background())
	if err != nil || res.Checked != 3 || res.Damaged != 2 {
		t.Fatalf("pass: %+v %v, want 3 checked, 2 damaged", res, err)
	}
	for _, p := range pieces[:2] {
		if _, err := fsys.Stat(s.piecePath(p.ID)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("damaged piece %s: its file is left in pieces/ (stat: %v)", p.ID, err)
		}
		if _, err := fsys.Stat(filepath.Join(dir, quarantineDir, filepath.Base(s.piecePath(p.ID)))); err != nil {
			t.Errorf("damaged piece %s: not in quarantine/: %v", p.ID, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openMem()
	defer s.Close()
	for _, p := range pieces[:2] {
		if got, err := s.Stat(p.ID); !errors.Is(err, ErrNotFound) {
			t.Errorf("after a restart the damaged piece %s is indexed again: %+v %v", p.ID, got, err)
		}
	}
	if used, n := s.Usage(); used != int64(sizes[2]) || n != 1 {
		t.Fatalf("after a restart: %d bytes in %d pieces, want %d in 1", used, n, sizes[2])
	}
	if ds, err := s.Damaged(10); err != nil || len(ds) != 2 {
		t.Fatalf("damage to report after a restart: %+v %v, want the 2 pieces", ds, err)
	}
}
