package mediator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/challenge"
	"github.com/fincrypt/fincrypt/erasure"
	"github.com/fincrypt/fincrypt/internal/pgtest"
	fnet "github.com/fincrypt/fincrypt/net"
)

// storeBackend opens a fresh store for one subtest; reopen closes nothing
// and opens the same state again.
type storeBackend func(t *testing.T) (st Store, reopen func() Store)

func pebbleBackend(t *testing.T) (Store, func() Store) {
	dir := t.TempDir()
	open := func() Store {
		st, err := OpenPebbleStore(dir, PebbleOptions{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	return open(), open
}

func postgresBackend(t *testing.T) (Store, func() Store) {
	url := pgtest.NewDB(t)
	open := func() Store {
		st, err := OpenPostgresStore(context.Background(), url, PostgresOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	return open(), open
}

func TestStorePebble(t *testing.T) { testStoreContract(t, pebbleBackend) }

func TestStorePostgres(t *testing.T) {
	defer func(p int) { pgPage = p }(pgPage)
	pgPage = 7 // page boundaries inside the small data of the suite
	testStoreContract(t, postgresBackend)
}

func TestMain(m *testing.M) { os.Exit(pgtest.Wrap(m).Run()) }

// seg builds a contract of n pieces on nodes (zero: no node).
func suiteSegment(id byte, acct byte, size int64, nodes ...fnet.NodeID) *Segment {
	s := &Segment{ID: SegmentID{id, 0xaa}, Account: fnet.AccountID{acct}, Scheme: erasure.Scheme{K: 1, N: len(nodes)}, PieceSize: size,
		Created: time.Unix(1700000000, 0)}
	for i, n := range nodes {
		p := Piece{Index: i, ID: challenge.PieceID{id, byte(i), 0x55}, Node: n, Price: uint64(100 + i)}
		if n.IsZero() {
			p.State = PieceLost
		}
		s.Pieces = append(s.Pieces, p)
	}
	return s
}

// testStoreContract is the Store contract, run against every backend.
func testStoreContract(t *testing.T, open storeBackend) {
	ctx := context.Background()
	n1, n2, n3 := fnet.NodeID{1}, fnet.NodeID{2}, fnet.NodeID{3}
	counters := func(t *testing.T, st Store, segs, pieces, healthy int64) {
		t.Helper()
		for name, want := range map[string]int64{CounterSegments: segs, CounterPieces: pieces, CounterHealthy: healthy} {
			if got, err := st.Counter(ctx, name); err != nil || got != want {
				t.Fatalf("counter %s = %d (%v), want %d", name, got, err, want)
			}
		}
	}
	contracted := func(t *testing.T, st Store, id fnet.NodeID, want uint64) {
		t.Helper()
		n, err := st.GetNode(ctx, id)
		if err != nil || n.Contracted != want {
			t.Fatalf("node %s contracted %v (%v), want %d", id, n, err, want)
		}
	}

	t.Run("Nodes", func(t *testing.T) {
		st, _ := open(t)
		if _, err := st.GetNode(ctx, n1); !errors.Is(err, ErrNotFound) {
			t.Fatalf("missing node: %v", err)
		}
		for i, id := range []fnet.NodeID{n2, n1, n3} {
			n := &Node{ID: id, Address: fmt.Sprintf("%s@10.0.%d.1:7780", id, i), Price: uint64(10 * i), Contracted: 999,
				Registered: time.Unix(1700000000, 0).UTC(), Passed: 3, RepPass: 1.5}
			if err := st.PutNode(ctx, n); err != nil {
				t.Fatal(err)
			}
		}
		got, err := st.GetNode(ctx, n1)
		if err != nil || got.Price != 10 || got.Contracted != 0 || got.Passed != 3 || got.RepPass != 1.5 || !got.Registered.Equal(time.Unix(1700000000, 0)) {
			t.Fatalf("node: %+v %v", got, err)
		}
		got.Price = 77
		if err := st.PutNode(ctx, got); err != nil {
			t.Fatal(err)
		}
		all, err := st.ListNodes(ctx)
		if err != nil || len(all) != 3 {
			t.Fatalf("list: %d %v", len(all), err)
		}
		for i, n := range all {
			if n.ID != []fnet.NodeID{n1, n2, n3}[i] {
				t.Fatalf("list order: %d is %s", i, n.ID)
			}
		}
		if all[0].Price != 77 {
			t.Fatalf("replaced node: %+v", all[0])
		}
		if err := st.CommitSegment(ctx, suiteSegment(2, 1, 100, n1, n2, fnet.NodeID{})); err != nil {
			t.Fatal(err)
		}
		all, _ = st.ListNodes(ctx)
		if all[0].Contracted != 100 || all[1].Contracted != 100 || all[2].Contracted != 0 {
			t.Fatalf("contracted in list: %d %d %d", all[0].Contracted, all[1].Contracted, all[2].Contracted)
		}
	})

	t.Run("Accounts", func(t *testing.T) {
		st, _ := open(t)
		a := &Account{ID: fnet.AccountID{7}, Created: time.Unix(1700000000, 5).UTC()}
		if _, err := st.GetAccount(ctx, a.ID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("missing account: %v", err)
		}
		if err := st.CreateAccount(ctx, a); err != nil {
			t.Fatal(err)
		}
		if err := st.CreateAccount(ctx, &Account{ID: a.ID}); !errors.Is(err, ErrExists) {
			t.Fatalf("second create: %v", err)
		}
		got, err := st.GetAccount(ctx, a.ID)
		if err != nil || !got.Created.Equal(a.Created) {
			t.Fatalf("account %+v %v", got, err)
		}
	})

	t.Run("Pending", func(t *testing.T) {
		st, _ := open(t)
		t0 := time.Unix(1700000000, 0)
		mk := func(id byte, exp time.Duration) *Pending {
			return &Pending{Segment: SegmentID{id}, Account: fnet.AccountID{1}, Scheme: erasure.Scheme{K: 1, N: 2}, PieceSize: 50,
				Pieces: []challenge.PieceID{{id, 1}, {id, 2}}, Nodes: []fnet.NodeID{n1, n2}, Prices: []uint64{5, 6}, Expires: t0.Add(exp)}
		}
		for i, p := range []*Pending{mk(1, time.Second), mk(2, time.Minute), mk(3, time.Hour)} {
			if err := st.PutPending(ctx, p); err != nil {
				t.Fatal(i, err)
			}
		}
		if got, err := st.GetPending(ctx, SegmentID{2}); err != nil || got.Prices[1] != 6 || got.Nodes[0] != n1 || !got.Expires.Equal(t0.Add(time.Minute)) {
			t.Fatalf("pending: %+v %v", got, err)
		}
		if _, err := st.GetPending(ctx, SegmentID{9}); !errors.Is(err, ErrNotFound) {
			t.Fatalf("missing pending: %v", err)
		}
		if ok, err := st.PendingPiece(ctx, n2, challenge.PieceID{1, 2}); !ok || err != nil {
			t.Fatalf("pending piece: %v %v", ok, err)
		}
		if ok, _ := st.PendingPiece(ctx, n1, challenge.PieceID{1, 2}); ok {
			t.Fatal("pending piece on the wrong node")
		}
		if n, err := st.DeletePendingBefore(ctx, t0.Add(time.Minute)); n != 1 || err != nil {
			t.Fatalf("expired: %d %v", n, err)
		}
		if ok, _ := st.PendingPiece(ctx, n2, challenge.PieceID{1, 2}); ok {
			t.Fatal("piece of an expired placement still pending")
		}
		if err := st.DeletePending(ctx, SegmentID{1}); !errors.Is(err, ErrNotFound) {
			t.Fatalf("delete of a removed placement: %v", err)
		}
		if err := st.DeletePending(ctx, SegmentID{3}); err != nil {
			t.Fatal(err)
		}
		all, err := st.PendingPlacements(ctx)
		if err != nil || len(all) != 1 || all[0].Segment != (SegmentID{2}) {
			t.Fatalf("left: %v %v", all, err)
		}
		// The commit of a pending placement removes it and its pieces.
		s := suiteSegment(0, 1, 50, n1, n2)
		s.ID = SegmentID{2}
		s.Pieces[0].ID, s.Pieces[1].ID = challenge.PieceID{2, 1}, challenge.PieceID{2, 2}
		if err := st.CommitSegment(ctx, s); err != nil {
			t.Fatal(err)
		}
		if all, _ := st.PendingPlacements(ctx); len(all) != 0 {
			t.Fatalf("pending after commit: %d", len(all))
		}
		if ok, _ := st.PendingPiece(ctx, n1, challenge.PieceID{2, 1}); ok {
			t.Fatal("piece still pending after commit")
		}
	})

	t.Run("Segments", func(t *testing.T) {
		st, _ := open(t)
		for _, id := range []fnet.NodeID{n1, n2, n3} {
			st.PutNode(ctx, &Node{ID: id})
		}
		a := suiteSegment(1, 1, 1000, n1, n2, fnet.NodeID{})
		if err := st.CommitSegment(ctx, a); err != nil {
			t.Fatal(err)
		}
		if err := st.CommitSegment(ctx, a); !errors.Is(err, ErrExists) {
			t.Fatalf("second commit: %v", err)
		}
		counters(t, st, 1, 3, 2)
		contracted(t, st, n1, 1000)
		got, err := st.GetSegment(ctx, a.ID)
		if err != nil || !bytes.Equal(encodeSegment(got), encodeSegment(a)) {
			t.Fatalf("segment round trip: %v", err)
		}
		if _, err := st.GetSegment(ctx, SegmentID{9}); !errors.Is(err, ErrNotFound) {
			t.Fatalf("missing segment: %v", err)
		}
		// Repair: piece 0 moves from n1 to n3, piece 2 gets n1.
		a.Pieces[0].Node, a.Pieces[0].ID = n3, challenge.PieceID{1, 0, 0x66}
		a.Pieces[2].Node, a.Pieces[2].State = n1, PieceHealthy
		a.Pieces[1].Passed, a.Repaired = 4, 2
		if err := st.UpdateSegment(ctx, a); err != nil {
			t.Fatal(err)
		}
		counters(t, st, 1, 3, 3)
		contracted(t, st, n1, 1000)
		contracted(t, st, n3, 1000)
		if _, ok, _ := st.LookupPiece(ctx, n1, challenge.PieceID{1, 0, 0x55}); ok {
			t.Fatal("moved piece still found on its old node")
		}
		ref, ok, err := st.LookupPiece(ctx, n3, challenge.PieceID{1, 0, 0x66})
		if !ok || err != nil || ref.Segment != a.ID || ref.Index != 0 || ref.Size != 1000 || ref.Account != a.Account || ref.Price != 100 {
			t.Fatalf("lookup: %+v %v %v", ref, ok, err)
		}
		var refs []PieceRef
		if err := st.NodePieces(ctx, n1, func(r PieceRef) error { refs = append(refs, r); return nil }); err != nil {
			t.Fatal(err)
		}
		if len(refs) != 1 || refs[0].Index != 2 || refs[0].State != PieceHealthy {
			t.Fatalf("node pieces: %+v", refs)
		}
		short := *a
		short.Pieces = a.Pieces[:2]
		if err := st.UpdateSegment(ctx, &short); err == nil {
			t.Fatal("update changing the piece count accepted")
		}
		if err := st.UpdateSegment(ctx, suiteSegment(8, 1, 10, n1)); !errors.Is(err, ErrNotFound) {
			t.Fatalf("update of a missing segment: %v", err)
		}
		got, _ = st.GetSegment(ctx, a.ID)
		if got.Repaired != 2 || got.Pieces[1].Passed != 4 {
			t.Fatalf("updated segment: %+v", got)
		}
		del, err := st.DeleteSegment(ctx, a.ID)
		if err != nil || del.ID != a.ID || del.Pieces[0].Node != n3 {
			t.Fatalf("delete: %+v %v", del, err)
		}
		if _, err := st.DeleteSegment(ctx, a.ID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("second delete: %v", err)
		}
		counters(t, st, 0, 0, 0)
		contracted(t, st, n1, 0)
		contracted(t, st, n3, 0)
		if _, ok, _ := st.LookupPiece(ctx, n3, challenge.PieceID{1, 0, 0x66}); ok {
			t.Fatal("piece of a deleted segment still indexed")
		}
	})

	t.Run("SharedPieceIndex", func(t *testing.T) {
		// The store never lets a second segment take or drop another
		// segment's (node, piece) index entry.
		st, _ := open(t)
		node, other := fnet.NodeID{1}, fnet.NodeID{2}
		piece := challenge.PieceID{9}
		mk := func(id byte, n fnet.NodeID) *Segment {
			s := &Segment{ID: SegmentID{id}, Scheme: erasure.Scheme{K: 1, N: 2}, PieceSize: 100}
			s.Pieces = []Piece{{Index: 0, ID: piece, Node: n}, {Index: 1, ID: challenge.PieceID{id}, State: PieceLost}}
			return s
		}
		if err := st.CommitSegment(ctx, mk(1, node)); err != nil {
			t.Fatal(err)
		}
		if err := st.CommitSegment(ctx, mk(2, node)); !errors.Is(err, ErrPieceShared) {
			t.Fatalf("second commit of (node, piece): %v", err)
		}
		b := mk(2, other)
		if err := st.CommitSegment(ctx, b); err != nil {
			t.Fatal(err)
		}
		b.Pieces[0].Node = node
		if err := st.UpdateSegment(ctx, b); !errors.Is(err, ErrPieceShared) {
			t.Fatalf("update moving a piece onto its twin: %v", err)
		}
		if _, err := st.DeleteSegment(ctx, SegmentID{2}); err != nil {
			t.Fatal(err)
		}
		ref, ok, err := st.LookupPiece(ctx, node, piece)
		if err != nil || !ok || ref.Segment != (SegmentID{1}) {
			t.Fatalf("index after the other segment went: %+v %v %v", ref, ok, err)
		}
		if n, _ := st.Counter(ctx, CounterSegments); n != 1 {
			t.Fatalf("segments %d", n)
		}
	})

	t.Run("Paging", func(t *testing.T) {
		st, _ := open(t)
		const total = 30
		for i := total; i > 0; i-- {
			if err := st.CommitSegment(ctx, suiteSegment(byte(i), 1, 10, n1)); err != nil {
				t.Fatal(err)
			}
		}
		var all []SegmentID
		if err := st.Segments(ctx, SegmentID{}, 0, func(s *Segment) error { all = append(all, s.ID); return nil }); err != nil {
			t.Fatal(err)
		}
		if len(all) != total {
			t.Fatalf("%d segments, want %d", len(all), total)
		}
		var paged []SegmentID
		after := SegmentID{}
		for {
			n := 0
			err := st.Segments(ctx, after, 4, func(s *Segment) error { paged = append(paged, s.ID); after = s.ID; n++; return nil })
			if err != nil {
				t.Fatal(err)
			}
			if n > 4 {
				t.Fatalf("page of %d over the limit of 4", n)
			}
			if n == 0 {
				break
			}
		}
		for i := range all {
			if i > 0 && bytes.Compare(all[i-1][:], all[i][:]) >= 0 {
				t.Fatalf("segments out of order at %d", i)
			}
			if paged[i] != all[i] {
				t.Fatalf("paged %d differs", i)
			}
		}
		if len(paged) != total {
			t.Fatalf("paged %d", len(paged))
		}
		stop := errors.New("stop")
		n := 0
		if err := st.Segments(ctx, SegmentID{}, 0, func(*Segment) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
			t.Fatalf("fn's error: %v after %d", err, n)
		}
	})

	t.Run("PeriodRecords", func(t *testing.T) {
		st, _ := open(t)
		p0 := time.Unix(1700000000, 0)
		var recs []PeriodRecord
		for i := 0; i < 3; i++ {
			for _, n := range []fnet.NodeID{n2, n1} {
				recs = append(recs, PeriodRecord{Period: p0.Add(time.Duration(i) * time.Minute), Node: n, Account: fnet.AccountID{5}, Bytes: uint64(i), Passed: 1, Price: 9})
			}
		}
		if err := st.PutPeriodRecords(ctx, recs); err != nil {
			t.Fatal(err)
		}
		recs[0].Bytes = 42 // written again: replaced, not added
		if err := st.PutPeriodRecords(ctx, recs[:1]); err != nil {
			t.Fatal(err)
		}
		got, err := st.PeriodRecords(ctx, p0, p0.Add(2*time.Minute))
		if err != nil || len(got) != 4 {
			t.Fatalf("records [p0, p0+2m): %d %v", len(got), err)
		}
		if got[0].Node != n1 || got[1].Node != n2 || got[1].Bytes != 42 || !got[2].Period.Equal(p0.Add(time.Minute)) || got[3].Price != 9 {
			t.Fatalf("records: %+v", got)
		}
		if got, _ := st.PeriodRecords(ctx, p0.Add(2*time.Minute), p0.Add(2*time.Minute+1)); len(got) != 2 {
			t.Fatalf("one period: %d", len(got))
		}
	})

	t.Run("ConcurrentWriters", func(t *testing.T) {
		// What the Pebble store serialises with its mutex, the others
		// must serialise too: no lost counter update, no lost contracted
		// bytes, under writers racing on the same rows.
		st, _ := open(t)
		const writers, each = 4, 15
		var wg sync.WaitGroup
		errs := make(chan error, writers)
		for w := 0; w < writers; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				for i := 0; i < each; i++ {
					s := suiteSegment(byte(w*each+i), 1, 10, n1, n2)
					if err := st.CommitSegment(ctx, s); err != nil {
						errs <- err
						return
					}
					if _, err := st.AddCounter(ctx, CounterRounds, 1); err != nil {
						errs <- err
						return
					}
					if i%3 == 0 {
						if _, err := st.DeleteSegment(ctx, s.ID); err != nil {
							errs <- err
							return
						}
					}
				}
			}(w)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		left := int64(writers * (each - each/3))
		counters(t, st, left, 2*left, 2*left)
		if v, err := st.Counter(ctx, CounterRounds); v != writers*each || err != nil {
			t.Fatalf("rounds %d %v", v, err)
		}
		st.PutNode(ctx, &Node{ID: n1})
		contracted(t, st, n1, uint64(10*left))
	})

	t.Run("ConcurrentUpdates", func(t *testing.T) {
		// Writers replace one contract at once, each from its own read,
		// moving piece 0 between nodes: the contracted bytes must match
		// the record that won, whichever it was.
		st, _ := open(t)
		for _, id := range []fnet.NodeID{n1, n2, n3} {
			st.PutNode(ctx, &Node{ID: id})
		}
		base := suiteSegment(1, 1, 1000, n1, n2)
		if err := st.CommitSegment(ctx, base); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				for i := 0; i < 10; i++ {
					s, err := st.GetSegment(ctx, base.ID)
					if err != nil {
						errs <- err
						return
					}
					if s.Pieces[0].Node == n1 {
						s.Pieces[0].Node = n3
					} else {
						s.Pieces[0].Node = n1
					}
					if err := st.UpdateSegment(ctx, s); err != nil {
						errs <- err
						return
					}
				}
			}(w)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		final, _ := st.GetSegment(ctx, base.ID)
		other := n1
		if final.Pieces[0].Node == n1 {
			other = n3
		}
		contracted(t, st, final.Pieces[0].Node, 1000)
		contracted(t, st, other, 0)
		contracted(t, st, n2, 1000)
	})

	t.Run("Reopen", func(t *testing.T) {
		st, reopen := open(t)
		st.PutNode(ctx, &Node{ID: n1, Price: 5})
		st.CreateAccount(ctx, &Account{ID: fnet.AccountID{1}})
		st.PutPending(ctx, &Pending{Segment: SegmentID{4}, Pieces: []challenge.PieceID{{4}}, Nodes: []fnet.NodeID{n1}, Expires: time.Unix(1800000000, 0)})
		if err := st.CommitSegment(ctx, suiteSegment(1, 1, 10, n1)); err != nil {
			t.Fatal(err)
		}
		st.PutPeriodRecords(ctx, []PeriodRecord{{Period: time.Unix(1700000000, 0), Node: n1, Bytes: 10}})
		st.AddCounter(ctx, CounterRepaired, 3)
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
		if err := st.Close(); !errors.Is(err, ErrClosed) {
			t.Fatalf("second close: %v", err)
		}
		st = reopen()
		contracted(t, st, n1, 10)
		counters(t, st, 1, 1, 1)
		if _, err := st.GetAccount(ctx, fnet.AccountID{1}); err != nil {
			t.Fatal(err)
		}
		if ok, _ := st.PendingPiece(ctx, n1, challenge.PieceID{4}); !ok {
			t.Fatal("pending piece lost")
		}
		if v, _ := st.Counter(ctx, CounterRepaired); v != 3 {
			t.Fatalf("repaired %d", v)
		}
		if r, _ := st.PeriodRecords(ctx, time.Unix(0, 0), time.Unix(1800000000, 0)); len(r) != 1 || r[0].Bytes != 10 {
			t.Fatalf("period records %+v", r)
		}
	})
}

// TestPostgresSchemaVersion: the schema is migrated once, recorded in
// schema_version, and a database migrated by a newer mediator is refused.
func TestPostgresSchemaVersion(t *testing.T) {
	ctx := context.Background()
	url := pgtest.NewDB(t)
	st, err := OpenPostgresStore(ctx, url, PostgresOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if v, err := st.SchemaVersion(ctx); err != nil || v != PostgresSchemaVersion {
		t.Fatalf("schema version %d %v", v, err)
	}
	st.Close()
	st, err = OpenPostgresStore(ctx, url, PostgresOptions{}) // migrations already applied: a no-op
	if err != nil {
		t.Fatal(err)
	}
	var rows int
	if err := st.pool.QueryRow(ctx, `SELECT COUNT(*) FROM schema_version`).Scan(&rows); err != nil || rows != PostgresSchemaVersion {
		t.Fatalf("schema_version rows %d %v", rows, err)
	}
	if _, err := st.pool.Exec(ctx, `INSERT INTO schema_version (version, applied) VALUES ($1, 0)`, PostgresSchemaVersion+1); err != nil {
		t.Fatal(err)
	}
	st.Close()
	if _, err := OpenPostgresStore(ctx, url, PostgresOptions{}); !errors.Is(err, ErrSchemaNewer) {
		t.Fatalf("newer schema: %v", err)
	}
	if _, err := OpenPostgresStore(ctx, "postgres:///nosuchdb?host=/nonexistent", PostgresOptions{}); err == nil {
		t.Fatal("unreachable database accepted")
	}
}
