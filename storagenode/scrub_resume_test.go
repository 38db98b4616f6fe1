package storagenode

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/fincrypt/fincrypt/challenge"
	fnet "github.com/fincrypt/fincrypt/net"
)

// cancellingLimiter grants reads until armed, then cancels the pass's
// context on the next read and fails it, as a node shutting down does.
type cancellingLimiter struct {
	armed  bool
	cancel context.CancelFunc
}

func (l *cancellingLimiter) WaitN(ctx context.Context, n int) error {
	if l.armed {
		l.cancel()
	}
	return ctx.Err()
}

// A pass stopped while it reads a piece leaves that piece to the resumed
// pass: every piece is checked once over the two runs.
func TestScrubPieceInterruptedIsCheckedOnResume(t *testing.T) {
	dir := t.TempDir()
	s, ids := scrubStore(t, dir, 1000, 2000, 3000, 4000, 5000)
	defer func() { s.Close() }()
	sc, _ := testScrubber(s, &fakeMediator{})
	ctx, cancel := context.WithCancel(context.Background())
	l := &cancellingLimiter{cancel: cancel}
	sc.limit = l
	var seen []challenge.PieceID
	sc.afterPiece = func(id challenge.PieceID) {
		seen = append(seen, id)
		if len(seen) == 2 {
			l.armed = true // the third piece's read is cut
		}
	}
	res, err := sc.Pass(ctx)
	if !errors.Is(err, context.Canceled) || res.Checked != 2 {
		t.Fatalf("pass cut during the third piece: %+v %v; want 2 checked, canceled", res, err)
	}
	sc.limit = &recordingLimiter{}
	res, err = sc.Pass(context.Background())
	if err != nil || res.Checked != 3 || res.Damaged != 0 {
		t.Fatalf("resumed pass: %+v %v; want the last 3 checked", res, err)
	}
	if len(seen) != len(ids) {
		t.Fatalf("%d pieces checked over the two runs, want each of the %d once", len(seen), len(ids))
	}
	for i := range seen {
		if i > 0 && bytes.Compare(seen[i-1][:], seen[i][:]) >= 0 {
			t.Fatalf("pieces checked out of order or twice: %x", seen)
		}
	}
	if _, n := s.Usage(); n != 5 {
		t.Fatalf("%d pieces held after the passes, want 5", n)
	}
}

// Storing again a piece whose damage is not yet reported leaves no read
// of the index open: the store closes without a leaked iterator.
func TestScrubStoredAgainClosesCleanly(t *testing.T) {
	s, ids := scrubStore(t, t.TempDir(), 5000)
	closed := false
	defer func() {
		if !closed {
			s.Close()
		}
	}()
	flipAt(t, s.piecePath(ids[0]), pieceHeaderSize+1)
	sc, _ := testScrubber(s, &fakeMediator{})
	if res, err := sc.Pass(context.Background()); err != nil || res.Damaged != 1 {
		t.Fatalf("pass: %+v %v", res, err)
	}
	data, id := randPiece(t, 100, 5000) // the same bytes scrubStore stored
	if err := s.Put(context.Background(), id, int64(len(data)), fnet.AccountID{1}, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	closed = true
	if err := s.Close(); err != nil {
		t.Fatalf("close after a damaged piece was stored again: %v", err)
	}
}
