package mediator

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/challenge"
	fnet "github.com/fincrypt/fincrypt/net"
)

// BenchmarkProofVerify measures how many piece proofs the mediator verifies
// per second (32 pieces of 1 MiB per response, 4 openings each, as in a
// default challenge), against a baseline of plain SHA-256 over the same
// leaf bytes in the same run.
func BenchmarkProofVerify(b *testing.B) {
	const pieces, size, openings, rounds = 32, 1 << 20, DefaultChallengeOpenings, 20
	req := &fnet.ChallengeRequest{Openings: openings}
	rand.Read(req.Nonce[:])
	resp := &fnet.ChallengeResponse{Nonce: req.Nonce}
	var refs []PieceRef
	data := make([]byte, size)
	for i := 0; i < pieces; i++ {
		rand.Read(data)
		bld, _ := challenge.NewBuilder(size)
		bld.Write(data)
		tree, _ := bld.Tree()
		id := tree.Root()
		p, err := challenge.Prove(challenge.MemSource{Data: data, Tree: tree}, id, size, req.Nonce, openings)
		if err != nil {
			b.Fatal(err)
		}
		req.Pieces = append(req.Pieces, id)
		resp.Proofs = append(resp.Proofs, fnet.PieceProof{Status: fnet.ProofOK, Proof: p})
		refs = append(refs, PieceRef{ID: id, Size: size})
	}
	b.ResetTimer()
	var verified int
	var took, base time.Duration
	for n := 0; n < b.N; n++ {
		start := time.Now()
		for r := 0; r < rounds; r++ {
			for _, res := range verifyResponse(req, resp, refs) {
				if !res.ok {
					b.Fatalf("proof rejected: %s", res.why)
				}
				verified++
			}
		}
		took += time.Since(start)
		// Baseline: hash the opened leaves, nothing else.
		start = time.Now()
		for r := 0; r < rounds; r++ {
			for _, pp := range resp.Proofs {
				for _, o := range pp.Proof.Openings {
					sha256.Sum256(o.Leaf)
				}
			}
		}
		base += time.Since(start)
	}
	b.StopTimer()
	perSec := float64(verified) / took.Seconds()
	b.ReportMetric(perSec, "proofs/s")
	b.ReportMetric(took.Seconds()/base.Seconds(), "time_vs_sha256_of_leaves")
}

// BenchmarkPlacement measures placements per second answered over QUIC by a
// real mediator (Pebble, synced writes) with 20 registered nodes, against
// the round trip of an account request on the same connection.
func BenchmarkPlacement(b *testing.B) {
	const count = 200
	_, c, _ := benchMediator(b, 20)
	ctx := context.Background()
	ids := make([]challenge.PieceID, DefaultScheme.N)
	b.ResetTimer()
	var took, base time.Duration
	for n := 0; n < b.N; n++ {
		start := time.Now()
		for i := 0; i < count; i++ {
			ids[0][0], ids[0][1] = byte(i), byte(i>>8)
			if _, err := c.Place(ctx, DefaultScheme, 1<<20, ids); err != nil {
				b.Fatal(err)
			}
		}
		took += time.Since(start)
		start = time.Now()
		for i := 0; i < count; i++ {
			if _, err := c.RegisterAccount(ctx); err != nil {
				b.Fatal(err)
			}
		}
		base += time.Since(start)
	}
	b.StopTimer()
	b.ReportMetric(float64(count*b.N)/took.Seconds(), "placements/s")
	b.ReportMetric(float64(count*b.N)/base.Seconds(), "roundtrips/s")
	b.ReportMetric(base.Seconds()/took.Seconds(), "ratio_vs_roundtrip")
}

// benchMediator runs a real mediator (Pebble, synced writes) on loopback
// with n registered nodes and returns it, a registered client connected to
// it over QUIC, and the nodes' ids; both are closed when b ends.
func benchMediator(b *testing.B, n int) (*Peer, *Client, []fnet.NodeID) {
	b.Helper()
	return benchMediatorDB(b, n, "")
}

// benchMediatorDB is benchMediator with its state in the database at db
// (empty: Pebble).
func benchMediatorDB(b *testing.B, n int, db string) (*Peer, *Client, []fnet.NodeID) {
	b.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	p, err := New(log, nil, Config{Dir: b.TempDir(), DB: db, Listen: "127.0.0.1:0", Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	b.Cleanup(func() { cancel(); <-done; p.Close() })
	var nodes []fnet.NodeID
	for i := 0; i < n; i++ {
		id, _ := fnet.GenerateIdentity()
		addr := fnet.Address{ID: id.ID(), HostPort: fmt.Sprintf("10.%d.0.1:7780", i)}.String()
		p.core.dialBack = func(context.Context, fnet.Address) error { return nil } // no node behind these addresses
		if _, err := p.core.Register(fromHost(fmt.Sprintf("10.%d.0.1:7780", i)), id.ID(), &fnet.RegisterRequest{Node: id.ID(), Address: addr, Capacity: 1 << 40, Price: uint64(100 + i)}); err != nil {
			b.Fatal(err)
		}
		nodes = append(nodes, id.ID())
	}
	cid, _ := fnet.GenerateIdentity()
	c, err := NewClient(cid, p.Address(), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	if _, err := c.RegisterAccount(ctx); err != nil {
		b.Fatal(err)
	}
	return p, c, nodes
}

func dirSize(dir string) int64 {
	var n int64
	filepath.Walk(dir, func(_ string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			n += info.Size()
		}
		return nil
	})
	return n
}

// rss is the process's resident memory (Linux), which also counts Pebble's
// block cache and memtables kept outside the Go heap.
func rss() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	var size, res uint64
	fmt.Sscan(string(b), &size, &res)
	return res * uint64(os.Getpagesize())
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// BenchmarkMillionPieces contracts one million synthetic pieces (200,000
// segments of 2/5 over 50 nodes) and reports the mediator's heap and disk
// for them, per piece, the raw record bytes per piece as the baseline, and
// the time of one repair scan over everything. -short: 100,000 pieces.
func BenchmarkMillionPieces(b *testing.B) {
	pieces := 1_000_000
	if testing.Short() {
		pieces = 100_000
	}
	segments := pieces / DefaultScheme.N
	for n := 0; n < b.N; n++ {
		dir := b.TempDir()
		heap0, rss0 := heapInUse(), rss()
		st, err := OpenPebbleStore(dir, PebbleOptions{NoSync: true})
		if err != nil {
			b.Fatal(err)
		}
		log := slog.New(slog.NewTextHandler(io.Discard, nil))
		mid, _ := fnet.GenerateIdentity()
		c := newCore(testConfig(), st, mid, nil)
		c.log = log
		ctx := context.Background()
		var nodes []fnet.NodeID
		for i := 0; i < 50; i++ {
			id, _ := fnet.GenerateIdentity()
			addr := fnet.Address{ID: id.ID(), HostPort: fmt.Sprintf("10.%d.0.1:7780", i)}.String()
			c.dialBack = func(context.Context, fnet.Address) error { return nil } // no node behind these addresses
			if _, err := c.Register(fromHost(fmt.Sprintf("10.%d.0.1:7780", i)), id.ID(), &fnet.RegisterRequest{Node: id.ID(), Address: addr, Capacity: 1 << 50, Price: 100}); err != nil {
				b.Fatal(err)
			}
			nodes = append(nodes, id.ID())
		}
		acct := fnet.AccountID{1}
		start := time.Now()
		for s := 0; s < segments; s++ {
			seg := &Segment{ID: newSegmentID(), Account: acct, Scheme: DefaultScheme, PieceSize: 1 << 20, Created: start}
			for i := 0; i < DefaultScheme.N; i++ {
				var pid challenge.PieceID
				rand.Read(pid[:])
				seg.Pieces = append(seg.Pieces, Piece{Index: i, ID: pid, Node: nodes[(s+i*7)%len(nodes)]})
			}
			if err := st.CommitSegment(ctx, seg); err != nil {
				b.Fatal(err)
			}
		}
		load := time.Since(start)
		if err := st.Flush(); err != nil {
			b.Fatal(err)
		}
		heap, rssNow := heapInUse()-heap0, rss()
		disk := dirSize(dir)
		start = time.Now()
		res, err := c.RepairScan(ctx)
		if err != nil || res.Segments != segments || res.Repaired != 0 {
			b.Fatalf("scan: %+v %v", res, err)
		}
		scan := time.Since(start)
		start = time.Now()
		status, err := c.Status(ctx, "")
		if err != nil || status.Pieces != int64(pieces) || status.Healthy != int64(pieces) {
			b.Fatalf("status: %+v %v", status, err)
		}
		statusTook := time.Since(start)
		st.Close()
		// Baseline: the raw bytes of a piece's share of its contract record
		// plus its index entry, before Pebble's overhead and compression.
		raw := float64(pieceRecordSize) + float64(segmentHeaderSize)/float64(DefaultScheme.N) + float64(len(pfxPiece)+64+17)
		b.ReportMetric(float64(pieces), "pieces")
		b.ReportMetric(float64(heap), "heap_bytes")
		if rssNow > rss0 {
			b.ReportMetric(float64(rssNow-rss0), "rss_growth_bytes")
		}
		b.ReportMetric(float64(disk), "disk_bytes")
		b.ReportMetric(float64(disk)/float64(pieces), "disk_bytes/piece")
		b.ReportMetric(raw, "raw_bytes/piece")
		b.ReportMetric(float64(disk)/float64(pieces)/raw, "disk_vs_raw")
		b.ReportMetric(float64(pieces)/load.Seconds(), "commits_pieces/s")
		b.ReportMetric(scan.Seconds(), "scan_s")
		b.ReportMetric(statusTook.Seconds()*1000, "status_ms")
	}
}

// BenchmarkSegmentHealth measures a client's periodic health check of 1,000
// segments over QUIC against a real mediator: batched HealthRequests, with
// one SegmentRequest per segment (what the check did before, signing a get
// ticket per healthy piece) as the baseline in the same run.
func BenchmarkSegmentHealth(b *testing.B) {
	const segments = 1000
	p, c, nodes := benchMediator(b, 10)
	ctx := context.Background()
	ids := make([]fnet.SegmentID, segments)
	for s := range ids {
		seg := &Segment{ID: newSegmentID(), Account: c.Account(), Scheme: DefaultScheme, PieceSize: 1 << 20, Created: time.Now()}
		for i := 0; i < DefaultScheme.N; i++ {
			var pid challenge.PieceID
			rand.Read(pid[:])
			seg.Pieces = append(seg.Pieces, Piece{Index: i, ID: pid, Node: nodes[(s+i)%len(nodes)]})
		}
		if err := p.core.store.CommitSegment(ctx, seg); err != nil {
			b.Fatal(err)
		}
		ids[s] = fnet.SegmentID(seg.ID)
	}
	b.ResetTimer()
	var took, base time.Duration
	for n := 0; n < b.N; n++ {
		start := time.Now()
		h, err := c.Health(ctx, ids)
		if err != nil || len(h) != segments || !h[segments-1].Known || int(h[0].Healthy) != DefaultScheme.N {
			b.Fatalf("health: %d answers, %v", len(h), err)
		}
		took += time.Since(start)
		start = time.Now()
		for _, id := range ids {
			if _, err := c.Segment(ctx, id); err != nil {
				b.Fatal(err)
			}
		}
		base += time.Since(start)
	}
	b.StopTimer()
	b.ReportMetric(float64(segments*b.N)/took.Seconds(), "segments/s")
	b.ReportMetric(float64(segments*b.N)/base.Seconds(), "baseline_segments/s")
	b.ReportMetric(base.Seconds()/took.Seconds(), "speedup_vs_per_segment")
}
