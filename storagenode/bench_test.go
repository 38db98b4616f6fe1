package storagenode_test

import (
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/fincrypt/fincrypt/challenge"
	fnet "github.com/fincrypt/fincrypt/net"
	"github.com/fincrypt/fincrypt/storagenode"
)

// The benchmarks run the node in a second process: this test binary
// re-executed with benchHelperEnv set to the node's directory. Besides the
// storage node the helper serves a bare quic-go stream (same QUIC and TLS
// configuration, no framing, no disk) as the baseline.
const (
	benchHelperEnv   = "FINCRYPT_BENCH_HELPER"
	benchMediatorEnv = "FINCRYPT_BENCH_MEDIATOR"
	bareAddressFile  = "bare-address"
)

func runBenchHelper(dir string) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	fail := func(err error) int { log.Error("bench helper", "err", err); return 1 }
	med, err := fnet.ParseAddress(os.Getenv(benchMediatorEnv))
	if err != nil {
		return fail(err)
	}
	ident, err := fnet.LoadOrCreateIdentity(dir)
	if err != nil {
		return fail(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	bare, err := fnet.Listen(ident, "127.0.0.1:0", fnet.Config{})
	if err != nil {
		return fail(err)
	}
	defer bare.Close()
	go bare.Serve(ctx, fnet.HandlerFunc(serveBare))
	if err := os.WriteFile(filepath.Join(dir, bareAddressFile), []byte(bare.Address().String()), 0o644); err != nil {
		return fail(err)
	}
	peer, err := storagenode.New(log, ident, storagenode.Config{Dir: dir, Listen: "127.0.0.1:0", Mediator: med,
		Capacity: 8 << 30, Payout: payoutAddress(nil), Network: "simnet",
		ScrubRate: -1}) // a scrub pass over the fixtures would compete with what is measured
	if err != nil {
		return fail(err)
	}
	defer peer.Close()
	if err := peer.Run(ctx); err != nil {
		return fail(err)
	}
	return 0
}

// serveBare: 'u' then a u64 length: read that many bytes, answer one
// byte; 'd' then a u64 length: send that many bytes.
func serveBare(ctx context.Context, peer fnet.NodeID, s *quic.Stream) {
	var h [9]byte
	if _, err := io.ReadFull(s, h[:]); err != nil {
		return
	}
	n := int64(binary.BigEndian.Uint64(h[1:]))
	switch h[0] {
	case 'u':
		io.CopyN(io.Discard, s, n)
		s.Write([]byte{1})
	case 'd':
		io.CopyN(s, newPattern(0, n), n)
	}
}

// pattern is a cheap, reproducible byte stream: a random 1 MiB block
// repeated, with the piece's seed in its first 8 bytes so pieces differ.
type pattern struct {
	seed uint64
	off  int64
	left int64
}

var patternBlock = func() []byte {
	b := make([]byte, 1<<20)
	rand.NewChaCha8([32]byte{42}).Read(b)
	return b
}()

func newPattern(seed uint64, size int64) *pattern { return &pattern{seed: seed, left: size} }

func (p *pattern) Read(b []byte) (int, error) {
	if p.left == 0 {
		return 0, io.EOF
	}
	pos := p.off % int64(len(patternBlock))
	n := copy(b[:min(int64(len(b)), p.left)], patternBlock[pos:])
	if p.off < 8 {
		var s [8]byte
		binary.BigEndian.PutUint64(s[:], p.seed)
		copy(b[:n], s[p.off:])
	}
	p.off += int64(n)
	p.left -= int64(n)
	return n, nil
}

func patternID(b testing.TB, seed uint64, size int64) challenge.PieceID {
	bl, _ := challenge.NewBuilder(size)
	io.Copy(bl, newPattern(seed, size))
	t, err := bl.Tree()
	if err != nil {
		b.Fatal(err)
	}
	return t.Root()
}

type benchNode struct {
	node, bare fnet.Address
	c, bc      *fnet.Conn
	med        *mediator
}

func startBenchNode(b *testing.B, dir string) *benchNode {
	med := newMediator(b)
	cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.bench=^$")
	cmd.Env = append(os.Environ(), benchHelperEnv+"="+dir, benchMediatorEnv+"="+med.tr.Address().String())
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	b.Cleanup(func() { cmd.Process.Signal(syscall.SIGTERM); <-done })
	read := func(name string) fnet.Address {
		deadline := time.Now().Add(5 * time.Minute) // reconciling 100k pieces takes a while
		for {
			if s, err := os.ReadFile(filepath.Join(dir, name)); err == nil && len(s) > 0 {
				a, err := fnet.ParseAddress(strings.TrimSpace(string(s)))
				if err != nil {
					b.Fatal(err)
				}
				return a
			}
			select {
			case <-done:
				b.Fatal("bench helper exited")
			case <-time.After(20 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				b.Fatal("bench helper did not start")
			}
		}
	}
	os.Remove(filepath.Join(dir, storagenode.AddressFile))
	os.Remove(filepath.Join(dir, bareAddressFile))
	bn := &benchNode{med: med}
	bn.bare = read(bareAddressFile)
	bn.node = read(storagenode.AddressFile)
	bn.c = dialNode(b, bn.node)
	bn.bc = dialNode(b, bn.bare)
	return bn
}

func (bn *benchNode) bareUpload(b *testing.B, n int64) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s, err := bn.bc.OpenStream(ctx)
	if err != nil {
		b.Fatal(err)
	}
	var h [9]byte
	h[0] = 'u'
	binary.BigEndian.PutUint64(h[1:], uint64(n))
	s.Write(h[:])
	if _, err := io.Copy(s, newPattern(0, n)); err != nil {
		b.Fatal(err)
	}
	s.Close()
	if _, err := io.ReadFull(s, h[:1]); err != nil {
		b.Fatal(err)
	}
}

func (bn *benchNode) bareDownload(b *testing.B, n int64) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s, err := bn.bc.OpenStream(ctx)
	if err != nil {
		b.Fatal(err)
	}
	var h [9]byte
	h[0] = 'd'
	binary.BigEndian.PutUint64(h[1:], uint64(n))
	s.Write(h[:])
	s.Close()
	if got, err := io.Copy(io.Discard, s); err != nil || got != n {
		b.Fatalf("bare download: %d bytes, %v", got, err)
	}
}

const (
	benchTotal     = 1 << 30
	benchPieceSize = challenge.MaxPieceSize
	benchPieces    = benchTotal / benchPieceSize
)

func reportThroughput(b *testing.B, node, base time.Duration) {
	mb := float64(benchTotal) * float64(b.N) / 1e6
	b.ReportMetric(mb/node.Seconds(), "MB/s")
	b.ReportMetric(mb/base.Seconds(), "base-MB/s")
	b.ReportMetric(base.Seconds()/node.Seconds(), "ratio")
}

// BenchmarkUpload1GiB uploads 1 GiB (4 pieces of 256 MiB) to a node in
// another process, against a bare quic-go stream of 1 GiB.
func BenchmarkUpload1GiB(b *testing.B) {
	bn := startBenchNode(b, b.TempDir())
	ids := make([]challenge.PieceID, benchPieces)
	for i := range ids {
		ids[i] = patternID(b, uint64(i+1), benchPieceSize)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	var node, base time.Duration
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		for i, id := range ids {
			req := &fnet.PutRequest{Piece: id, Ticket: bn.med.ticket(bn.node.ID, id, fnet.OpPut, benchPieceSize)}
			if err := bn.c.Put(ctx, req, newPattern(uint64(i+1), benchPieceSize)); err != nil {
				b.Fatal(err)
			}
		}
		node += time.Since(start)
		start = time.Now()
		bn.bareUpload(b, benchTotal)
		base += time.Since(start)
		b.StopTimer()
		for _, id := range ids {
			if _, err := bn.c.Call(ctx, &fnet.DeleteRequest{Piece: id, Ticket: bn.med.ticket(bn.node.ID, id, fnet.OpDelete, benchPieceSize)}); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
	}
	reportThroughput(b, node, base)
}

// BenchmarkDownload1GiB downloads 1 GiB (4 whole pieces) from a node in
// another process, against a bare quic-go stream of 1 GiB.
func BenchmarkDownload1GiB(b *testing.B) {
	bn := startBenchNode(b, b.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	ids := make([]challenge.PieceID, benchPieces)
	for i := range ids {
		ids[i] = patternID(b, uint64(i+1), benchPieceSize)
		req := &fnet.PutRequest{Piece: ids[i], Ticket: bn.med.ticket(bn.node.ID, ids[i], fnet.OpPut, benchPieceSize)}
		if err := bn.c.Put(ctx, req, newPattern(uint64(i+1), benchPieceSize)); err != nil {
			b.Fatal(err)
		}
	}
	var node, base time.Duration
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		for _, id := range ids {
			r, _, err := bn.c.Get(ctx, &fnet.GetRequest{Piece: id, Ticket: bn.med.ticket(bn.node.ID, id, fnet.OpGet, benchPieceSize)})
			if err != nil {
				b.Fatal(err)
			}
			n, err := io.Copy(io.Discard, r)
			r.Close()
			if err != nil || n != benchPieceSize {
				b.Fatalf("download: %d bytes, %v", n, err)
			}
		}
		node += time.Since(start)
		start = time.Now()
		bn.bareDownload(b, benchTotal)
		base += time.Since(start)
	}
	reportThroughput(b, node, base)
}

// populate writes count pieces of size bytes into a store in dir, without
// fsync (a benchmark fixture, not a node's normal write path).
func populate(b *testing.B, dir string, count int, size int64) []challenge.PieceID {
	st, err := storagenode.OpenDiskStore(dir, storagenode.DiskStoreOptions{Capacity: 1 << 40, NoSync: true,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	ids := make([]challenge.PieceID, count)
	buf := make([]byte, size)
	for i := range ids {
		copy(buf, patternBlock[:size])
		binary.BigEndian.PutUint64(buf, uint64(i))
		ids[i], _ = challenge.ComputeID(buf)
		if err := st.Put(context.Background(), ids[i], size, fnet.AccountID{}, strings.NewReader(string(buf))); err != nil {
			b.Fatal(err)
		}
	}
	return ids
}

var (
	challengeFixture sync.Once
	challengeDirs    [2]string
	challengeIDs     [2][]challenge.PieceID
)

// BenchmarkChallenge100kPieces is the time for a node holding 100,000
// pieces to answer one challenge (32 random pieces, 8 leaves each) over
// QUIC, against the same challenge on a node holding 100 pieces.
func BenchmarkChallenge100kPieces(b *testing.B) {
	const size = 3 * challenge.LeafSize
	const perChallenge, openings = 32, 8
	// The fixture is built once per process: the benchmark function runs
	// more than once (b.N = 1 first).
	challengeFixture.Do(func() {
		tmp := filepath.Dir(fincryptBin) // the test binary's directory, removed after the run
		bigDir, smallDir := filepath.Join(tmp, "fixture-100k"), filepath.Join(tmp, "fixture-100")
		start := time.Now()
		bigIDs := populate(b, bigDir, 100_000, size)
		smallIDs := populate(b, smallDir, 100, size)
		b.Logf("populated 100,100 pieces in %v", time.Since(start))
		challengeDirs = [2]string{bigDir, smallDir}
		challengeIDs = [2][]challenge.PieceID{bigIDs, smallIDs}
	})
	if challengeIDs[0] == nil {
		b.Fatal("fixture failed")
	}
	bigDir, smallDir := challengeDirs[0], challengeDirs[1]
	bigIDs, smallIDs := challengeIDs[0], challengeIDs[1]
	big := startBenchNode(b, bigDir)
	small := startBenchNode(b, smallDir)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	rng := rand.New(rand.NewPCG(1, 2))
	bigConn, smallConn := dialWith(b, big.med.tr, big.node), dialWith(b, small.med.tr, small.node)
	run := func(bn *benchNode, ids []challenge.PieceID) time.Duration {
		mc := bigConn
		if bn == small {
			mc = smallConn
		}
		req := &fnet.ChallengeRequest{Openings: openings, Pieces: make([]challenge.PieceID, perChallenge)}
		for i := range req.Pieces {
			req.Pieces[i] = ids[rng.IntN(len(ids))]
		}
		binary.BigEndian.PutUint64(req.Nonce[:], rng.Uint64())
		t0 := time.Now()
		rep, err := fnet.CallFor[*fnet.ChallengeResponse](ctx, mc, req)
		el := time.Since(t0)
		if err != nil {
			b.Fatal(err)
		}
		for i, p := range rep.Proofs {
			if err := challenge.Verify(req.Pieces[i], size, req.Nonce, openings, p.Proof); err != nil {
				b.Fatal(err)
			}
		}
		return el
	}
	const rounds = 10 // challenges per iteration, so that -benchtime 1x still averages
	var tBig, tSmall time.Duration
	b.ResetTimer()
	for range b.N {
		for range rounds {
			tBig += run(big, bigIDs)
			tSmall += run(small, smallIDs)
		}
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(b.N*rounds) }
	b.ReportMetric(ms(tBig), "ms/challenge")
	b.ReportMetric(ms(tSmall), "base-ms/challenge")
	b.ReportMetric(float64(tBig)/float64(tSmall), "ratio")
}
