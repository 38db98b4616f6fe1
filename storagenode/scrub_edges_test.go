package storagenode

import (
	"bytes"
	"context"
	"errors"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/challenge"
	fnet "github.com/fincrypt/fincrypt/net"
)

// Damage the scrubber finds besides flipped bits: an indexed piece whose
// file is gone, a truncated file, and an index entry whose size is not the
// file's. Each is dropped and reported; the healthy piece is kept.
func TestScrubFindsMissingAndMisfitFiles(t *testing.T) {
	s, ids := scrubStore(t, t.TempDir(), 3000, 4000, 5000, 6000)
	defer s.Close()
	if err := os.Remove(s.piecePath(ids[0])); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(s.piecePath(ids[1]), pieceHeaderSize+10); err != nil {
		t.Fatal(err)
	}
	info, err := s.Stat(ids[2])
	if err != nil {
		t.Fatal(err)
	}
	info.Size++
	if err := s.db.Set(indexKey(ids[2]), encodeIndex(info), nil); err != nil {
		t.Fatal(err)
	}
	m := &fakeMediator{}
	sc, _ := testScrubber(s, m)
	res, err := sc.Pass(context.Background())
	if err != nil || res.Checked != 4 || res.Damaged != 3 {
		t.Fatalf("pass: %+v %v, want 4 checked, 3 damaged", res, err)
	}
	for _, id := range ids[:3] {
		if _, err := s.Stat(id); !errors.Is(err, ErrNotFound) {
			t.Errorf("damaged piece %s still indexed: %v", id, err)
		}
		if _, err := s.Open(id); err == nil {
			t.Errorf("damaged piece %s still served", id)
		}
	}
	if _, n := s.Usage(); n != 1 {
		t.Fatalf("%d pieces held, want 1", n)
	}
	if p, err := s.Open(ids[3]); err != nil {
		t.Fatalf("healthy piece: %v", err)
	} else {
		p.Close()
	}
	if n, err := sc.Report(context.Background()); err != nil || n != 3 {
		t.Fatalf("report: %d %v", n, err)
	}
	got := m.reported()
	slices.SortFunc(got, func(a, b challenge.PieceID) int { return bytes.Compare(a[:], b[:]) })
	want := slices.Clone(ids[:3])
	slices.SortFunc(want, func(a, b challenge.PieceID) int { return bytes.Compare(a[:], b[:]) })
	if !slices.Equal(got, want) {
		t.Fatalf("reported %v, want %v", got, want)
	}
}

// A piece found damaged but deleted, or deleted and stored again, before
// it is dropped is left alone: the new copy is neither quarantined nor
// reported.
func TestScrubDropSkipsAPieceChangedMeanwhile(t *testing.T) {
	s, ids := scrubStore(t, t.TempDir(), 5000)
	defer s.Close()
	checked, err := s.Stat(ids[0])
	if err != nil {
		t.Fatal(err)
	}
	why := errors.New("found damaged")
	if err := s.Delete(ids[0]); err != nil {
		t.Fatal(err)
	}
	if dropped, err := s.dropDamaged(checked, why); dropped || err != nil {
		t.Fatalf("drop of a deleted piece: %v %v", dropped, err)
	}
	data, id := randPiece(t, 100, 5000) // scrubStore's bytes
	for {
		if err := s.Put(context.Background(), id, 5000, fnet.AccountID{2}, bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		again, err := s.Stat(id)
		if err != nil {
			t.Fatal(err)
		}
		if !again.StoredAt.Equal(checked.StoredAt) {
			break
		}
		s.Delete(id) // the same clock reading: store it again
		time.Sleep(time.Millisecond)
	}
	if dropped, err := s.dropDamaged(checked, why); dropped || err != nil {
		t.Fatalf("drop of a piece stored again since the check: %v %v", dropped, err)
	}
	if p, err := s.Open(id); err != nil {
		t.Fatalf("the piece stored again: %v", err)
	} else {
		p.Close()
	}
	if ds, err := s.Damaged(10); err != nil || len(ds) != 0 {
		t.Fatalf("damage recorded for a piece changed meanwhile: %+v %v", ds, err)
	}
	if used, n := s.Usage(); used != 5000 || n != 1 {
		t.Fatalf("usage %d bytes in %d pieces, want 5000 in 1", used, n)
	}
}
