package storagenode

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/challenge"
	fnet "github.com/fincrypt/fincrypt/net"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func open(t *testing.T, dir string, capacity int64) *DiskStore {
	t.Helper()
	s, err := OpenDiskStore(dir, DiskStoreOptions{Capacity: capacity, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func randPiece(t *testing.T, seed uint64, n int) ([]byte, challenge.PieceID) {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{byte(seed), 9}).Read(b)
	id, err := challenge.ComputeID(b)
	if err != nil {
		t.Fatal(err)
	}
	return b, id
}

func TestDiskStoreBasics(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 1<<20)
	defer func() { s.Close() }()
	ctx := context.Background()
	data, id := randPiece(t, 1, 3*challenge.LeafSize+5)
	if err := s.Put(ctx, id, int64(len(data)), fnet.AccountID{7}, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(s.piecePath(id))
	if err != nil || fi.Size() != PieceFileSize(int64(len(data))) {
		t.Fatalf("piece file: %v %v", fi, err)
	}
	info, err := s.Stat(id)
	if err != nil || info.Size != int64(len(data)) || info.Account != (fnet.AccountID{7}) || !info.OrphanedAt.IsZero() {
		t.Fatalf("stat: %+v %v", info, err)
	}
	p, err := s.Open(id)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data))
	if _, err := p.ReadAt(got, 0); err != nil && !errors.Is(err, io.EOF) || !bytes.Equal(got, data) {
		t.Fatalf("read back: %v", err)
	}
	// The stored tree serves proofs that verify.
	var nonce challenge.Nonce
	proof, err := challenge.Prove(p, id, p.Size(), nonce, 8)
	if err != nil || challenge.Verify(id, p.Size(), nonce, 8, proof) != nil {
		t.Fatalf("proof from disk: %v", err)
	}
	p.Close()
	if used, n := s.Usage(); used != int64(len(data)) || n != 1 {
		t.Fatalf("usage %d %d", used, n)
	}
	// Orphan marks persist and clear.
	when := time.Unix(1000, 5)
	if err := s.SetOrphaned(id, when); err != nil {
		t.Fatal(err)
	}
	if info, _ := s.Stat(id); !info.OrphanedAt.Equal(when) {
		t.Fatalf("orphaned at %v", info.OrphanedAt)
	}
	// Wrong length in either direction and wrong content leave nothing.
	other, oid := randPiece(t, 2, 10_000)
	for name, r := range map[string]io.Reader{
		"short": bytes.NewReader(other[:9_999]),
		"long":  io.MultiReader(bytes.NewReader(other), bytes.NewReader([]byte{1})),
		"wrong": bytes.NewReader(append([]byte{other[0] ^ 1}, other[1:]...)),
	} {
		if err := s.Put(ctx, oid, int64(len(other)), fnet.AccountID{}, r); err == nil {
			t.Fatalf("%s upload accepted", name)
		}
		if _, err := s.Stat(oid); !errors.Is(err, ErrNotFound) {
			t.Fatalf("%s upload visible", name)
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, tmpDir)); len(ents) != 0 {
		t.Fatalf("temporary files left: %d", len(ents))
	}
	// Capacity: 1 MiB total.
	big, bid := randPiece(t, 3, 1<<20)
	if err := s.Put(ctx, bid, int64(len(big)), fnet.AccountID{}, bytes.NewReader(big)); !errors.Is(err, ErrFull) {
		t.Fatalf("over capacity: %v", err)
	}
	if err := s.Delete(id); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(id); err != nil {
		t.Fatalf("second delete: %v", err)
	}
	if _, err := os.Stat(s.piecePath(id)); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("file survived delete")
	}
	if used, n := s.Usage(); used != 0 || n != 0 {
		t.Fatalf("usage after delete %d %d", used, n)
	}
}

func TestDiskStoreLock(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 1<<20)
	if _, err := OpenDiskStore(dir, DiskStoreOptions{Capacity: 1, Logger: quiet}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v", err)
	}
	s.Close()
	open(t, dir, 1<<20).Close()
}

func TestDiskStoreConcurrentPuts(t *testing.T) {
	s := open(t, t.TempDir(), 1<<30)
	defer s.Close()
	data, id := randPiece(t, 4, 70_000)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Put(context.Background(), id, int64(len(data)), fnet.AccountID{}, bytes.NewReader(data)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if used, n := s.Usage(); used != int64(len(data)) || n != 1 {
		t.Fatalf("usage %d %d after concurrent puts of one piece", used, n)
	}
}

func TestDiskStoreList(t *testing.T) {
	s := open(t, t.TempDir(), 1<<30)
	defer s.Close()
	want := map[challenge.PieceID]bool{}
	for i := range 25 {
		data, id := randPiece(t, uint64(100+i), 100+i)
		s.Put(context.Background(), id, int64(len(data)), fnet.AccountID{}, bytes.NewReader(data))
		want[id] = true
	}
	var after *challenge.PieceID
	seen := 0
	for {
		page, err := s.List(after, 7)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		for i, p := range page {
			if !want[p.ID] {
				t.Fatalf("unexpected or repeated piece %s", p.ID)
			}
			delete(want, p.ID)
			if i > 0 && bytes.Compare(page[i-1].ID[:], p.ID[:]) >= 0 {
				t.Fatal("not in id order")
			}
			seen++
		}
		after = &page[len(page)-1].ID
	}
	if seen != 25 || len(want) != 0 {
		t.Fatalf("listed %d, missing %d", seen, len(want))
	}
}

// Reconciliation repairs every state a crash can leave.
func TestDiskStoreReconcile(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 1<<30)
	ctx := context.Background()
	var ids []challenge.PieceID
	for i := range 4 {
		data, id := randPiece(t, uint64(i+10), 20_000)
		if err := s.Put(ctx, id, int64(len(data)), fnet.AccountID{}, bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	s.Close()
	// 0: renamed but never indexed (crash before the index commit).
	_, stray := randPiece(t, 99, 5000)
	strayPath := filepath.Join(dir, piecesDir, stray.String()[:2], stray.String()+pieceExt)
	os.WriteFile(strayPath, make([]byte, PieceFileSize(5000)), 0o600)
	// 1: indexed, file lost.
	os.Remove(filepath.Join(dir, piecesDir, ids[1].String()[:2], ids[1].String()+pieceExt))
	// 2: indexed, file truncated.
	os.Truncate(filepath.Join(dir, piecesDir, ids[2].String()[:2], ids[2].String()+pieceExt), 1000)
	// 3: an interrupted upload.
	os.WriteFile(filepath.Join(dir, tmpDir, "x.part"), []byte("partial"), 0o600)

	s = open(t, dir, 1<<30)
	defer s.Close()
	if _, err := os.Stat(strayPath); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("unreadable unindexed piece file left in pieces/")
	}
	if _, err := os.Stat(filepath.Join(dir, quarantineDir, stray.String()+pieceExt)); err != nil {
		t.Fatalf("unreadable piece file not quarantined: %v", err)
	}
	for i, id := range ids {
		_, err := s.Stat(id)
		if gone := i == 1 || i == 2; gone != errors.Is(err, ErrNotFound) {
			t.Fatalf("piece %d: %v", i, err)
		}
	}
	// The truncated file is kept for the operator, out of pieces/.
	if _, err := os.Stat(filepath.Join(dir, quarantineDir, ids[2].String()+pieceExt)); err != nil {
		t.Fatalf("truncated piece file not quarantined: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, tmpDir)); len(ents) != 0 {
		t.Fatal("temporary upload kept")
	}
	if used, n := s.Usage(); n != 2 || used != 40_000 {
		t.Fatalf("usage %d %d", used, n)
	}
	// A corrupt header is reported, not served.
	p := filepath.Join(dir, piecesDir, ids[0].String()[:2], ids[0].String()+pieceExt)
	f, _ := os.OpenFile(p, os.O_RDWR, 0)
	f.WriteAt([]byte{0xff}, 20)
	f.Close()
	if _, err := s.Open(ids[0]); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("corrupt header: %v", err)
	}
}

// A lost index is rebuilt from the piece files: valid pieces stay served
// (account unknown), corrupt ones are quarantined, none is deleted.
func TestDiskStoreRebuildsLostIndex(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 1<<30)
	ctx := context.Background()
	pieces := map[challenge.PieceID][]byte{}
	var ids []challenge.PieceID
	for i, n := range []int{1, challenge.LeafSize, 3*challenge.LeafSize + 17, 20_000, 9000} {
		data, id := randPiece(t, uint64(100+i), n)
		if err := s.Put(ctx, id, int64(n), fnet.AccountID{byte(i + 1)}, bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		pieces[id] = data
		ids = append(ids, id)
	}
	s.Close()
	if err := os.RemoveAll(filepath.Join(dir, indexDir)); err != nil {
		t.Fatal(err)
	}
	pathOf := func(id challenge.PieceID) string {
		return filepath.Join(dir, piecesDir, id.String()[:2], id.String()+pieceExt)
	}
	flip := func(id challenge.PieceID, off int64) {
		f, err := os.OpenFile(pathOf(id), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		b := []byte{0}
		f.ReadAt(b, off)
		b[0] ^= 0x40
		f.WriteAt(b, off)
		f.Close()
	}
	// ids[3]: one data byte flipped; ids[4]: one stored tree node flipped
	// (the bytes still hash to the id, but challenges would read it).
	flip(ids[3], pieceHeaderSize+12345)
	flip(ids[4], PieceFileSize(9000)-40)
	corrupt := map[challenge.PieceID]bool{ids[3]: true, ids[4]: true}

	s = open(t, dir, 1<<30)
	defer func() { s.Close() }()
	var wantUsed int64
	for _, id := range ids {
		info, err := s.Stat(id)
		if corrupt[id] {
			if !errors.Is(err, ErrNotFound) {
				t.Fatalf("corrupt piece %s indexed: %+v %v", id, info, err)
			}
			if _, err := os.Stat(filepath.Join(dir, quarantineDir, id.String()+pieceExt)); err != nil {
				t.Fatalf("corrupt piece %s not quarantined: %v", id, err)
			}
			continue
		}
		if err != nil || info.Size != int64(len(pieces[id])) || info.Account != (fnet.AccountID{}) || info.StoredAt.IsZero() {
			t.Fatalf("piece %s after index loss: %+v %v", id, info, err)
		}
		wantUsed += info.Size
		p, err := s.Open(id)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, p.Size())
		if _, err := p.ReadAt(got, 0); err != nil && err != io.EOF {
			t.Fatal(err)
		}
		var nonce challenge.Nonce
		nonce[0] = 5
		proof, err := challenge.Prove(p, id, p.Size(), nonce, 4)
		p.Close()
		if !bytes.Equal(got, pieces[id]) || err != nil || challenge.Verify(id, int64(len(got)), nonce, 4, proof) != nil {
			t.Fatalf("piece %s after index loss: data or proof wrong (%v)", id, err)
		}
	}
	if used, n := s.Usage(); n != 3 || used != wantUsed {
		t.Fatalf("usage %d bytes in %d pieces, want %d in 3", used, n, wantUsed)
	}
	if list, err := s.List(nil, 10); err != nil || len(list) != 3 {
		t.Fatalf("list: %d entries, %v", len(list), err)
	}
	// A third start finds everything indexed and changes nothing.
	s.Close()
	s = open(t, dir, 1<<30)
	if used, n := s.Usage(); n != 3 || used != wantUsed {
		t.Fatalf("usage after another start: %d %d", used, n)
	}
}
