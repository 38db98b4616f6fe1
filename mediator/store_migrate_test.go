package mediator

import (
	"bytes"
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/fincrypt/fincrypt/challenge"
	"github.com/fincrypt/fincrypt/erasure"
	"github.com/fincrypt/fincrypt/internal/pgtest"
	fnet "github.com/fincrypt/fincrypt/net"
)

// fillStore writes some of every kind of record.
func fillStore(t *testing.T, st Store) {
	t.Helper()
	ctx := context.Background()
	n1, n2 := fnet.NodeID{1}, fnet.NodeID{2}
	for _, n := range []fnet.NodeID{n1, n2} {
		if err := st.PutNode(ctx, &Node{ID: n, Address: n.String() + "@10.0.0.1:1", Price: 7, Passed: 2}); err != nil {
			t.Fatal(err)
		}
	}
	st.CreateAccount(ctx, &Account{ID: fnet.AccountID{9}, Created: time.Unix(1700000000, 0)})
	st.PutPending(ctx, &Pending{Segment: SegmentID{5}, Account: fnet.AccountID{9}, Scheme: erasure.Scheme{K: 1, N: 1},
		Pieces: []challenge.PieceID{{5}}, Nodes: []fnet.NodeID{n2}, Expires: time.Unix(1800000000, 0)})
	for i := byte(1); i <= 4; i++ {
		if err := st.CommitSegment(ctx, suiteSegment(i, 9, 100, n1, n2)); err != nil {
			t.Fatal(err)
		}
	}
	st.PutPeriodRecords(ctx, []PeriodRecord{{Period: time.Unix(1700000000, 0), Node: n1, Account: fnet.AccountID{9}, Bytes: 400, Pieces: 4}})
	st.AddCounter(ctx, CounterRounds, 12)
}

// dump is every record of a store, read through the Store interface.
func dump(t *testing.T, st Store) map[string]any {
	t.Helper()
	ctx := context.Background()
	nodes, err := st.ListNodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pend, _ := st.PendingPlacements(ctx)
	var segs [][]byte
	st.Segments(ctx, SegmentID{}, 0, func(s *Segment) error { segs = append(segs, encodeSegment(s)); return nil })
	recs, _ := st.PeriodRecords(ctx, time.Unix(0, 0), time.Unix(1900000000, 0))
	acct, _ := st.GetAccount(ctx, fnet.AccountID{9})
	counters := map[string]int64{}
	for _, c := range []string{CounterRounds, CounterSegments, CounterPieces, CounterHealthy} {
		counters[c], _ = st.Counter(ctx, c)
	}
	var refs []PieceRef
	st.NodePieces(ctx, fnet.NodeID{2}, func(r PieceRef) error { refs = append(refs, r); return nil })
	pp, _ := st.PendingPiece(ctx, fnet.NodeID{2}, challenge.PieceID{5})
	return map[string]any{"nodes": nodes, "pending": pend, "segments": segs, "records": recs, "account": acct,
		"counters": counters, "refs": refs, "pendingPiece": pp}
}

func TestMigratePebbleToPostgres(t *testing.T) {
	ctx := context.Background()
	src, _ := pebbleBackend(t)
	fillStore(t, src)
	url := pgtest.NewDB(t)
	dst, err := OpenPostgresStore(ctx, url, PostgresOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	rep, err := MigratePebbleToPostgres(ctx, src.(*PebbleStore), dst)
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]int64{}
	for _, r := range rep {
		rows[r.Table] = r.Rows
	}
	want := map[string]int64{"nodes": 2, "node_contracted": 2, "accounts": 1, "pending": 1, "pending_pieces": 1,
		"segments": 4, "pieces": 8, "period_records": 1, "counters": 4}
	if !reflect.DeepEqual(rows, want) {
		t.Fatalf("rows %v, want %v", rows, want)
	}
	a, b := dump(t, src), dump(t, dst)
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("state differs after the copy:\npebble   %+v\npostgres %+v", a, b)
	}
	// A second copy into the now non-empty database changes nothing.
	if _, err := MigratePebbleToPostgres(ctx, src.(*PebbleStore), dst); !errors.Is(err, ErrTargetNotEmpty) {
		t.Fatalf("copy into a non-empty database: %v", err)
	}
	if c := dump(t, dst); !reflect.DeepEqual(b, c) {
		t.Fatal("refused copy changed the target")
	}
	// The verification catches a copy that differs from the source.
	sums := map[string]*rowSum{}
	for _, tb := range pgTables {
		if sums[tb], err = tableSum(ctx, dst, tb); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := verifyCopy(ctx, dst, sums); err != nil {
		t.Fatalf("verify of an intact copy: %v", err)
	}
	changed := suiteSegment(1, 8, 100, fnet.NodeID{1}, fnet.NodeID{2})
	if _, err := dst.pool.Exec(ctx, `UPDATE segments SET record = $1 WHERE id = $2`, encodeSegment(changed), changed.ID[:]); err != nil {
		t.Fatal(err)
	}
	if _, err := verifyCopy(ctx, dst, sums); !errors.Is(err, ErrMigrateMismatch) {
		t.Fatalf("verify of a changed copy: %v", err)
	}
}

// TestMigrateRefusesUnknownRecords: a key the copy does not know fails the
// whole copy, and the target stays empty (one transaction).
func TestMigrateRefusesUnknownRecords(t *testing.T) {
	ctx := context.Background()
	src, _ := pebbleBackend(t)
	fillStore(t, src)
	ps := src.(*PebbleStore)
	if err := ps.db.Set([]byte("zz/stray"), []byte{1}, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	dst, err := OpenPostgresStore(ctx, pgtest.NewDB(t), PostgresOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if _, err := MigratePebbleToPostgres(ctx, ps, dst); !errors.Is(err, ErrCorrupt) || !bytes.Contains([]byte(err.Error()), []byte("zz/")) {
		t.Fatalf("copy of an unknown record: %v", err)
	}
	for _, tb := range pgTables {
		if s, err := tableSum(ctx, dst, tb); err != nil || s.rows != 0 {
			t.Fatalf("table %s after a failed copy: %d rows %v", tb, s.rows, err)
		}
	}
}
