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
	"time"

	"github.com/fincrypt/fincrypt/challenge"
	fnet "github.com/fincrypt/fincrypt/net"
)

// Reading a piece back never reaches past its bytes: the stored tree
// behind them is not served as data, and leaves and tree nodes outside
// the piece's tree are refused.
func TestDiskPieceBounds(t *testing.T) {
	s := open(t, t.TempDir(), 1<<30)
	defer s.Close()
	data, id := randPiece(t, 31, 2*challenge.LeafSize+300)
	size := int64(len(data))
	if err := s.Put(context.Background(), id, size, fnet.AccountID{}, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	p, err := s.Open(id)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	// A buffer reaching past the end gets the last bytes and io.EOF.
	buf := make([]byte, 1000)
	n, err := p.ReadAt(buf, size-10)
	if n != 10 || !errors.Is(err, io.EOF) || !bytes.Equal(buf[:10], data[size-10:]) {
		t.Fatalf("ReadAt 1000 bytes at %d of %d: %d bytes, %v", size-10, size, n, err)
	}
	// Exactly to the end: all of it, no error needed.
	if n, err := p.ReadAt(buf[:10], size-10); n != 10 || (err != nil && err != io.EOF) || !bytes.Equal(buf[:10], data[size-10:]) {
		t.Fatalf("ReadAt the last 10 bytes: %d, %v", n, err)
	}
	if n, err := p.ReadAt(buf, size); n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("ReadAt at the end: %d bytes, %v; want 0 and EOF", n, err)
	}
	for _, off := range []int64{-1, size + 1} {
		if n, err := p.ReadAt(buf, off); n != 0 || err == nil || errors.Is(err, io.EOF) {
			t.Fatalf("ReadAt at %d of %d: %d bytes, %v; want an error", off, size, n, err)
		}
	}
	dp := p.(*diskPiece)
	leaf := make([]byte, challenge.LeafSize)
	if n, err := dp.ReadLeaf(2, leaf); n != 300 || err != nil || !bytes.Equal(leaf[:n], data[2*challenge.LeafSize:]) {
		t.Fatalf("last leaf: %d bytes, %v", n, err)
	}
	if n, err := dp.ReadLeaf(0, leaf); n != challenge.LeafSize || err != nil || !bytes.Equal(leaf, data[:challenge.LeafSize]) {
		t.Fatalf("first leaf: %d bytes, %v", n, err)
	}
	for _, i := range []int{-1, 3} {
		if _, err := dp.ReadLeaf(i, leaf); err == nil {
			t.Fatalf("leaf %d of 3 read", i)
		}
	}
	b, err := challenge.NewBuilder(size)
	if err != nil {
		t.Fatal(err)
	}
	b.Write(data)
	tree, err := b.Tree()
	if err != nil {
		t.Fatal(err)
	}
	for l, level := range tree.Levels {
		for i, want := range level {
			if got, err := dp.Node(l, i); err != nil || got != want {
				t.Fatalf("tree node (%d,%d): %v", l, i, err)
			}
		}
		for _, i := range []int{-1, len(level)} {
			if _, err := dp.Node(l, i); err == nil {
				t.Fatalf("tree node (%d,%d) outside a level of %d read", l, i, len(level))
			}
		}
	}
	for _, l := range []int{-1, len(tree.Levels)} {
		if _, err := dp.Node(l, 0); err == nil {
			t.Fatalf("tree level %d of %d read", l, len(tree.Levels))
		}
	}
}

// A store fills to its capacity exactly and not a byte more; a refused or
// failed upload gives its reservation back.
func TestDiskStoreCapacityEdge(t *testing.T) {
	a, aid := randPiece(t, 32, 6000)
	c, cid := randPiece(t, 33, 4000)
	s := open(t, t.TempDir(), 10_000)
	defer s.Close()
	ctx := context.Background()
	if err := s.Put(ctx, aid, 6000, fnet.AccountID{}, bytes.NewReader(a)); err != nil {
		t.Fatal(err)
	}
	// Failed uploads of the piece that fills the store exactly.
	bad := append([]byte(nil), c...)
	bad[7] ^= 1
	for range 3 {
		if err := s.Put(ctx, cid, 4000, fnet.AccountID{}, bytes.NewReader(bad)); !errors.Is(err, ErrMismatch) {
			t.Fatalf("put of wrong bytes: %v", err)
		}
	}
	_, oid := randPiece(t, 34, 4001)
	if err := s.Put(ctx, oid, 4001, fnet.AccountID{}, bytes.NewReader(make([]byte, 4001))); !errors.Is(err, ErrFull) {
		t.Fatalf("a piece one byte over the capacity: %v, want full", err)
	}
	if err := s.Put(ctx, cid, 4000, fnet.AccountID{}, bytes.NewReader(c)); err != nil {
		t.Fatalf("the piece that fills the store exactly: %v", err)
	}
	if used, n := s.Usage(); used != 10_000 || n != 2 {
		t.Fatalf("usage %d bytes in %d pieces, want 10000 in 2", used, n)
	}
	_, one := randPiece(t, 35, 1)
	if err := s.Put(ctx, one, 1, fnet.AccountID{}, bytes.NewReader([]byte{0})); !errors.Is(err, ErrFull) {
		t.Fatalf("a byte in a full store: %v, want full", err)
	}
}

// A release is remembered for the release window to the nanosecond and
// forgotten after it, by a lookup and by the pruning at start.
func TestDiskStoreReleaseWindow(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenDiskStore(dir, DiskStoreOptions{Capacity: 1 << 20, Logger: quiet, ReleaseWindow: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()
	data, id := randPiece(t, 36, 100)
	if err := s.Put(context.Background(), id, 100, fnet.AccountID{}, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.ReleasedAt(id); ok {
		t.Fatal("a piece never deleted reported released")
	}
	if err := s.Delete(id); err != nil {
		t.Fatal(err)
	}
	at, ok := s.ReleasedAt(id)
	if !ok || time.Since(at) > time.Minute || time.Since(at) < 0 {
		t.Fatalf("release at %v (%v), want now", at, ok)
	}
	if err := s.pruneReleases(at.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got, ok := s.ReleasedAt(id); !ok || !got.Equal(at) {
		t.Fatalf("release forgotten by a prune at exactly the window's end: %v %v", got, ok)
	}
	s.releaseWindow = time.Since(at) - time.Millisecond
	if _, ok := s.ReleasedAt(id); ok {
		t.Fatal("a release older than the window still reported")
	}
	s.releaseWindow = time.Hour
	if err := s.pruneReleases(at.Add(time.Hour + time.Nanosecond)); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.ReleasedAt(id); ok {
		t.Fatal("a release older than the window survived the prune")
	}
}

// At start, a piece file found in another directory than its id's is
// quarantined, not indexed (nothing would find it there); a second file of
// the same name quarantined later keeps the first.
func TestDiskStoreQuarantinesMisplacedFiles(t *testing.T) {
	dir := t.TempDir()
	data, id := randPiece(t, 37, 5000)
	wrongDir := "00"
	if strings.HasPrefix(id.String(), "00") {
		wrongDir = "01"
	}
	var moved string
	for round := range 2 {
		s := open(t, dir, 1<<30)
		if round > 0 {
			if used, n := s.Usage(); n != 0 || used != 0 {
				t.Fatalf("usage %d bytes in %d pieces: the misplaced file was indexed", used, n)
			}
			if _, err := s.Stat(id); !errors.Is(err, ErrNotFound) {
				t.Fatalf("the misplaced piece indexed: %v", err)
			}
			if _, err := os.Stat(moved); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("a piece file in the wrong directory left in pieces/: %v", err)
			}
		}
		if err := s.Put(context.Background(), id, 5000, fnet.AccountID{}, bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		good := s.piecePath(id)
		s.Close()
		moved = filepath.Join(dir, piecesDir, wrongDir, filepath.Base(good))
		if err := os.MkdirAll(filepath.Dir(moved), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(good, moved); err != nil {
			t.Fatal(err)
		}
	}
	s := open(t, dir, 1<<30)
	defer s.Close()
	if _, err := s.Stat(id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the misplaced piece indexed: %v", err)
	}
	ents, err := os.ReadDir(filepath.Join(dir, quarantineDir))
	if err != nil || len(ents) != 2 {
		t.Fatalf("quarantine holds %d files, want both misplaced copies (%v)", len(ents), err)
	}
}

// Space an upload in progress has reserved is not offered to another: with
// 1000 bytes held and one 6000-byte upload under way in a 10000-byte
// store, a second is refused as full at once (saying 3000 bytes are free),
// and once the first is in, a third is refused too.
func TestDiskStoreReservationsCount(t *testing.T) {
	s := open(t, t.TempDir(), 10_000)
	defer s.Close()
	ctx := context.Background()
	a, aid := randPiece(t, 38, 6000)
	b, bid := randPiece(t, 39, 6000)
	c, cid := randPiece(t, 40, 1000)
	if err := s.Put(ctx, cid, 1000, fnet.AccountID{}, bytes.NewReader(c)); err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- s.Put(ctx, aid, 6000, fnet.AccountID{}, pr) }()
	// The first upload has its reservation once its first bytes are read.
	if _, err := pw.Write(a[:10]); err != nil {
		t.Fatal(err)
	}
	// The refusal tells what is free: 10000 less 1000 held, 6000 reserved.
	if err := s.Put(ctx, bid, 6000, fnet.AccountID{}, bytes.NewReader(b)); !errors.Is(err, ErrFull) || !strings.Contains(err.Error(), " 3000 bytes free of 10000") {
		t.Fatalf("a second upload beside a reserved one, over the capacity: %v, want full with 3000 bytes free", err)
	}
	if _, err := pw.Write(a[10:]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if err := <-done; err != nil {
		t.Fatalf("the first upload: %v", err)
	}
	if err := s.Put(ctx, bid, 6000, fnet.AccountID{}, bytes.NewReader(b)); !errors.Is(err, ErrFull) {
		t.Fatalf("an upload over the capacity after the first: %v, want full", err)
	}
	if used, n := s.Usage(); used != 7000 || n != 2 {
		t.Fatalf("usage %d bytes in %d pieces, want 7000 in 2", used, n)
	}
}
