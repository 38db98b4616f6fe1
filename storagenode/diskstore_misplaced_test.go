package storagenode

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fincrypt/fincrypt/challenge"
	fnet "github.com/fincrypt/fincrypt/net"
)

// copyFile copies src to dst (creating dst's directory).
func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// readPiece reads a whole piece back through Open.
func readPiece(t *testing.T, s *DiskStore, id challenge.PieceID) []byte {
	t.Helper()
	p, err := s.Open(id)
	if err != nil {
		t.Fatalf("open piece %s: %v", id, err)
	}
	defer p.Close()
	b := make([]byte, p.Size())
	if n, err := p.ReadAt(b, 0); n != len(b) || (err != nil && !errors.Is(err, io.EOF)) {
		t.Fatalf("read piece %s: %d of %d bytes: %v", id, n, len(b), err)
	}
	return b
}

// At start, copies of an indexed piece's file found anywhere but at the
// piece's path (another directory, a directory nested under the right
// one) are moved to quarantine/: they were never served nor counted and
// only took space. The indexed copy stays where it is, served and
// counted, and a second start changes nothing more.
func TestDiskStoreQuarantinesCopiesOfIndexedPieces(t *testing.T) {
	dir := t.TempDir()
	data, id := randPiece(t, 41, 7000)
	h := id.String()
	wrongDir := "00"
	if strings.HasPrefix(h, "00") {
		wrongDir = "01"
	}
	s := open(t, dir, 1<<30)
	if err := s.Put(context.Background(), id, int64(len(data)), fnet.AccountID{7}, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	good := s.piecePath(id)
	s.Close()
	copies := []string{
		filepath.Join(dir, piecesDir, wrongDir, h+pieceExt),
		filepath.Join(dir, piecesDir, h[:2], h[:2], h+pieceExt),
		filepath.Join(dir, piecesDir, h+pieceExt),
	}
	for _, c := range copies {
		copyFile(t, good, c)
	}
	for round := range 2 {
		s := open(t, dir, 1<<30)
		for _, c := range copies {
			if _, err := os.Stat(c); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("start %d: copy %s of an indexed piece left in pieces/: %v", round, c, err)
			}
		}
		p, err := s.Stat(id)
		if err != nil || p.Account != (fnet.AccountID{7}) || p.Size != int64(len(data)) {
			t.Fatalf("start %d: the indexed piece: %+v, %v; want it kept with its account", round, p, err)
		}
		if _, err := os.Stat(good); err != nil {
			t.Fatalf("start %d: the indexed copy removed: %v", round, err)
		}
		if got := readPiece(t, s, id); !bytes.Equal(got, data) {
			t.Fatalf("start %d: the indexed piece reads back wrong", round)
		}
		if used, n := s.Usage(); used != int64(len(data)) || n != 1 {
			t.Fatalf("start %d: usage %d bytes in %d pieces, want %d in 1", round, used, n, len(data))
		}
		ents, err := os.ReadDir(filepath.Join(dir, quarantineDir))
		if err != nil || len(ents) != len(copies) {
			t.Fatalf("start %d: quarantine holds %d files, want the %d copies (%v)", round, len(ents), len(copies), err)
		}
		s.Close()
	}
}

// A valid piece file with no index entry, in a directory nested under the
// one its id names, is quarantined, not indexed: indexed, it would be
// counted in the node's usage though no read finds it at its path.
func TestDiskStoreQuarantinesNestedPieceFile(t *testing.T) {
	dir := t.TempDir()
	data, id := randPiece(t, 42, 6000)
	s := open(t, dir, 1<<30)
	if err := s.Put(context.Background(), id, int64(len(data)), fnet.AccountID{}, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	good := s.piecePath(id)
	if err := s.Delete(id); err != nil {
		t.Fatal(err)
	}
	s.Close()
	// Put it back by hand, one level too deep.
	s2 := open(t, t.TempDir(), 1<<30)
	if err := s2.Put(context.Background(), id, int64(len(data)), fnet.AccountID{}, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	nested := filepath.Join(filepath.Dir(good), id.String()[:2], filepath.Base(good))
	copyFile(t, s2.piecePath(id), nested)
	s2.Close()

	s = open(t, dir, 1<<30)
	defer s.Close()
	if _, err := s.Stat(id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a piece file nested one directory too deep was indexed: %v", err)
	}
	if used, n := s.Usage(); used != 0 || n != 0 {
		t.Fatalf("usage %d bytes in %d pieces, want nothing counted", used, n)
	}
	if _, err := os.Stat(nested); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the nested piece file left in pieces/: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, quarantineDir, filepath.Base(good))); err != nil {
		t.Fatalf("the nested piece file not in quarantine/: %v", err)
	}
}

// A start that cannot quarantine an unreadable piece file (quarantine/ is
// not a directory) fails with the reason instead of opening a store that
// has not looked at the rest of its files; nothing is deleted, and the
// next start, once the operator fixed it, quarantines the file.
func TestDiskStoreOpenFailsWhenQuarantineFails(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 1<<30)
	s.Close()
	junk := filepath.Join(dir, piecesDir, "00", "not-a-piece"+pieceExt)
	if err := os.WriteFile(junk, []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	block := filepath.Join(dir, quarantineDir)
	if err := os.WriteFile(block, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := OpenDiskStore(dir, DiskStoreOptions{Capacity: 1 << 30, Logger: quiet}); err == nil || !strings.Contains(err.Error(), "quarantine") {
		if s != nil {
			s.Close()
		}
		t.Fatalf("open with quarantine/ a file: %v, want the quarantine's failure", err)
	}
	if _, err := os.Stat(junk); err != nil {
		t.Fatalf("the unreadable file is gone after a failed start: %v", err)
	}
	if err := os.Remove(block); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir, 1<<30)
	defer s.Close()
	if _, err := os.Stat(filepath.Join(block, filepath.Base(junk))); err != nil {
		t.Fatalf("not quarantined once possible: %v", err)
	}
}

// A piece file cut short after it was opened (a disk error, an operator's
// mistake) is never served as zeros: reading a leaf, bytes or a tree node
// past the cut fails.
func TestDiskPieceTruncatedFile(t *testing.T) {
	s := open(t, t.TempDir(), 1<<30)
	defer s.Close()
	data, id := randPiece(t, 43, 3*challenge.LeafSize+100)
	if err := s.Put(context.Background(), id, int64(len(data)), fnet.AccountID{}, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	p, err := s.Open(id)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := os.Truncate(s.piecePath(id), pieceHeaderSize+challenge.LeafSize+10); err != nil {
		t.Fatal(err)
	}
	dp := p.(*diskPiece)
	leaf := make([]byte, challenge.LeafSize)
	if n, err := dp.ReadLeaf(0, leaf); err != nil || n != challenge.LeafSize || !bytes.Equal(leaf, data[:challenge.LeafSize]) {
		t.Fatalf("leaf 0, before the cut: %d bytes, %v", n, err)
	}
	for _, i := range []int{1, 3} {
		if n, err := dp.ReadLeaf(i, leaf); err == nil {
			t.Fatalf("leaf %d, past the cut: %d bytes served, no error", i, n)
		}
	}
	buf := make([]byte, 100)
	if n, err := p.ReadAt(buf, 2*challenge.LeafSize); err == nil {
		t.Fatalf("bytes past the cut: %d served, no error", n)
	}
	if _, err := dp.Node(0, 0); err == nil {
		t.Fatal("a tree node past the cut read without an error")
	}
}

// List returns at most the limit asked for: the collector asks the
// mediator about one page at a time, and a page over fnet.MaxLivePieces
// is a request the mediator refuses.
func TestDiskStoreListLimit(t *testing.T) {
	s := open(t, t.TempDir(), 1<<30)
	defer s.Close()
	for i := range 5 {
		data, id := randPiece(t, uint64(200+i), 300+i)
		if err := s.Put(context.Background(), id, int64(len(data)), fnet.AccountID{}, bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
	}
	var after *challenge.PieceID
	var sizes []int
	for {
		page, err := s.List(after, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		sizes = append(sizes, len(page))
		after = &page[len(page)-1].ID
	}
	if len(sizes) != 3 || sizes[0] != 2 || sizes[1] != 2 || sizes[2] != 1 {
		t.Fatalf("pages of %v pieces for 5 at a limit of 2, want [2 2 1]", sizes)
	}
}
