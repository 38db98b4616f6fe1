package replicate

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/fincrypt/fincrypt/internal/units"
	"github.com/fincrypt/fincrypt/mediator/testplanet"
	fnet "github.com/fincrypt/fincrypt/net"
)

// benchBytes is the plaintext written (FINCRYPT_BENCH_BYTES overrides 1 GiB).
func benchBytes(b *testing.B) int64 {
	if s := os.Getenv("FINCRYPT_BENCH_BYTES"); s != "" {
		n, err := units.ParseSize(s)
		if err != nil {
			b.Fatal(err)
		}
		return int64(n)
	}
	return 1 << 30
}

// pattern is a cheap, incompressible-enough stream of n bytes.
type pattern struct {
	n, off int64
	state  uint64
}

func (p *pattern) Read(b []byte) (int, error) {
	if p.off >= p.n {
		return 0, io.EOF
	}
	if int64(len(b)) > p.n-p.off {
		b = b[:p.n-p.off]
	}
	for i := range b {
		p.state = p.state*6364136223846793005 + 1442695040888963407
		b[i] = byte(p.state >> 56)
	}
	p.off += int64(len(b))
	return len(b), nil
}

// bareQUIC is the baseline: n bytes over one stream between two fnet
// transports on loopback, as the pieces travel, with no storage behind.
func bareQUIC(b *testing.B, n int64) time.Duration {
	sid, _ := fnet.GenerateIdentity()
	cid, _ := fnet.GenerateIdentity()
	srv, err := fnet.Listen(sid, "127.0.0.1:0", fnet.Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go srv.Serve(ctx, fnet.HandlerFunc(func(_ context.Context, _ fnet.NodeID, s *quic.Stream) {
		io.Copy(io.Discard, s)
		s.Write([]byte{1})
		s.Close()
	}))
	cl, err := fnet.NewDialer(cid, fnet.Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	conn, err := cl.Dial(ctx, srv.Address())
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	s, err := conn.OpenStream(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.Copy(s, &pattern{n: n, state: 1}); err != nil {
		b.Fatal(err)
	}
	s.Close()
	var ack [1]byte
	if _, err := io.ReadFull(s, ack[:]); err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}

func report(b *testing.B, n int64, took, base time.Duration) {
	mb := float64(n) / 1e6
	b.ReportMetric(mb/took.Seconds(), "MB/s")
	b.ReportMetric(mb/base.Seconds(), "base-MB/s")
	b.ReportMetric(base.Seconds()/took.Seconds(), "ratio")
}

// BenchmarkDurable writes one file of FINCRYPT_BENCH_BYTES through the
// mount and measures until every piece of it is committed: plaintext MB/s
// made durable, against bare QUIC over loopback in the same run.
func BenchmarkDurable(b *testing.B) {
	n := benchBytes(b)
	for range b.N {
		p, c, _ := benchPlanet(b, n)
		start := time.Now()
		writeBench(b, c, n)
		c.waitSyncedFor(b, "bench write", 30*time.Minute)
		took := time.Since(start)
		report(b, n, took, bareQUIC(b, n))
		_ = p
	}
}

// BenchmarkRestore restores a vault holding one file of
// FINCRYPT_BENCH_BYTES into a fresh home and reads the file back: MB/s
// from the network, against bare QUIC in the same run.
func BenchmarkRestore(b *testing.B) {
	n := benchBytes(b)
	for range b.N {
		p, c, home := benchPlanet(b, n)
		writeBench(b, c, n)
		c.waitSyncedFor(b, "bench write", 30*time.Minute)
		acct := fnet.AccountID(c.rep.client.Account())
		c.unmount()
		os.RemoveAll(home)
		home2 := filepath.Join(b.TempDir(), "restored")
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
		if _, err := Restore(ctx, RestoreOptions{Home: home2, Mediator: p.Mediator.Address(), Account: acct, Password: testPassword}); err != nil {
			b.Fatal(err)
		}
		cancel()
		c2 := mount(b, p, home2, benchConfig())
		f, err := os.Open(filepath.Join(c2.mnt, "big"))
		if err != nil {
			b.Fatal(err)
		}
		got, err := io.Copy(io.Discard, f)
		f.Close()
		if err != nil || got != n {
			b.Fatalf("read back %d of %d bytes: %v", got, n, err)
		}
		took := time.Since(start)
		report(b, n, took, bareQUIC(b, n))
	}
}

func benchConfig() Config {
	cfg := fastConfig()
	cfg.PieceTimeout = time.Minute
	cfg.CallTimeout = time.Minute
	cfg.Parallel = 2
	return cfg
}

func benchPlanet(b *testing.B, n int64) (*testplanet.Planet, *client, string) {
	if _, err := os.Stat("/dev/fuse"); err != nil || os.Geteuid() != 0 {
		b.Skip("needs /dev/fuse and root")
	}
	p := testplanet.New(b, testplanet.Config{StorageNodes: 5, NodeCapacity: n + n/2 + 64<<20})
	home := filepath.Join(b.TempDir(), "home")
	if err := os.MkdirAll(home, 0o700); err != nil {
		b.Fatal(err)
	}
	newVaultChunks(b, home, 1<<20)
	return p, mount(b, p, home, benchConfig()), home
}

func writeBench(b *testing.B, c *client, n int64) {
	f, err := os.Create(filepath.Join(c.mnt, "big"))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.Copy(f, &pattern{n: n, state: 7}); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
}
