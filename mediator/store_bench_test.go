package mediator

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/challenge"
	"github.com/fincrypt/fincrypt/internal/pgtest"
	fnet "github.com/fincrypt/fincrypt/net"
)

// BenchmarkStoreBackends compares the two stores in one run: placements
// per second answered over QUIC by a real mediator on each (20 nodes,
// 500 placements, each recorded as pending in the store), and
// one repair scan over a million contracted pieces (200,000 segments of
// 2/5 over 50 nodes) on each. The pieces are committed one contract per
// transaction into Pebble, then copied into PostgreSQL by the migration
// (batched), whose rate is reported too. FINCRYPT_BENCH_PIECES sets the
// number of pieces (-short: 100,000). The PostgreSQL server is the test
// server of internal/pgtest (unix socket; fsync on only with
// FINCRYPT_PG_FSYNC=1, which make bench sets).
func BenchmarkStoreBackends(b *testing.B) {
	pieces := 1_000_000
	if testing.Short() {
		pieces = 100_000
	}
	if v, err := strconv.Atoi(os.Getenv("FINCRYPT_BENCH_PIECES")); err == nil && v > 0 {
		pieces = v
	}
	segments := pieces / DefaultScheme.N
	ctx := context.Background()
	for n := 0; n < b.N; n++ {
		// Placements over QUIC.
		rates := map[string]float64{}
		for _, backend := range []string{"pebble", "postgres"} {
			db := ""
			if backend == "postgres" {
				db = pgtest.NewDB(b)
			}
			_, c, _ := benchMediatorDB(b, 20, db)
			ids := make([]challenge.PieceID, DefaultScheme.N)
			const count = 500 // of 64 KiB pieces: under the account's quota of reserved bytes
			start := time.Now()
			for i := 0; i < count; i++ {
				ids[0][0], ids[0][1] = byte(i), byte(i>>8)
				if _, err := c.Place(ctx, DefaultScheme, 1<<16, ids); err != nil {
					b.Fatal(err)
				}
			}
			rates[backend] = count / time.Since(start).Seconds()
			b.ReportMetric(rates[backend], "placements/s_"+backend)
		}
		b.ReportMetric(rates["postgres"]/rates["pebble"], "placements_postgres_vs_pebble")

		// A million pieces: load Pebble, scan; copy to PostgreSQL, scan.
		log := slog.New(slog.NewTextHandler(io.Discard, nil))
		peb, err := OpenPebbleStore(b.TempDir(), PebbleOptions{NoSync: true})
		if err != nil {
			b.Fatal(err)
		}
		mid, _ := fnet.GenerateIdentity()
		c := newCore(testConfig(), peb, mid, nil)
		c.log = log
		var nodes []fnet.NodeID
		for i := 0; i < 50; i++ {
			id, _ := fnet.GenerateIdentity()
			addr := fnet.Address{ID: id.ID(), HostPort: fmt.Sprintf("10.%d.0.1:7780", i)}.String()
			c.dialBack = func(context.Context, fnet.Address) error { return nil }
			if _, err := c.Register(fromHost(fmt.Sprintf("10.%d.0.1:7780", i)), id.ID(), &fnet.RegisterRequest{Node: id.ID(), Address: addr, Capacity: 1 << 50, Price: 100}); err != nil {
				b.Fatal(err)
			}
			nodes = append(nodes, id.ID())
		}
		start := time.Now()
		for s := 0; s < segments; s++ {
			seg := &Segment{ID: newSegmentID(), Account: fnet.AccountID{1}, Scheme: DefaultScheme, PieceSize: 1 << 20, Created: start}
			for i := 0; i < DefaultScheme.N; i++ {
				var pid challenge.PieceID
				rand.Read(pid[:])
				seg.Pieces = append(seg.Pieces, Piece{Index: i, ID: pid, Node: nodes[(s+i*7)%len(nodes)]})
			}
			if err := peb.CommitSegment(ctx, seg); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(pieces)/time.Since(start).Seconds(), "commit_pieces/s_pebble")
		scan := func(backend string, st Store) float64 {
			c.store = st
			start := time.Now()
			res, err := c.RepairScan(ctx)
			if err != nil || res.Segments != segments || res.Repaired != 0 {
				b.Fatalf("%s scan: %+v %v", backend, res, err)
			}
			took := time.Since(start).Seconds()
			b.ReportMetric(took, "scan_s_"+backend)
			return took
		}
		pebScan := scan("pebble", peb)
		pg, err := OpenPostgresStore(ctx, pgtest.NewDB(b), PostgresOptions{})
		if err != nil {
			b.Fatal(err)
		}
		start = time.Now()
		if _, err := MigratePebbleToPostgres(ctx, peb, pg); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(pieces)/time.Since(start).Seconds(), "copy_pieces/s_postgres")
		pgScan := scan("postgres", pg)
		b.ReportMetric(pgScan/pebScan, "scan_postgres_vs_pebble")
		b.ReportMetric(float64(pieces), "pieces")
		c.stop()
		peb.Close()
		pg.Close()
	}
}
