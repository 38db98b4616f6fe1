package replicate

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/quic-go/quic-go"

	"github.com/fincrypt/fincrypt/internal/units"
	"github.com/fincrypt/fincrypt/mediator"
	"github.com/fincrypt/fincrypt/mediator/testplanet"
	"github.com/fincrypt/fincrypt/meta"
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

// benchData is 8 MiB of the pattern (n bytes when n is smaller), made
// before a clock starts: the bare stream and the writer send it again and
// again until they have sent n bytes. Generated while they sent, as until
// the ninth session, the pattern took 27-34 % of the bare stream's CPU
// (so that the stream measured slower than a bare stream is whenever the
// machine is CPU-bound, and every ratio against it flattered Fincrypt) and
// about 1.2 CPU-s a GB of the cores the writer shares with the mount and
// the nodes. What the bytes are changes nothing measured: QUIC encrypts
// every packet, and the mount seals every chunk on its own under a random
// chunk id (no compression, no deduplication).
func benchData(n int64, state uint64) []byte {
	buf := make([]byte, min(n, 8<<20))
	(&pattern{n: int64(len(buf)), state: state}).Read(buf)
	return buf
}

// bareWrite is the size of the bare stream's writes: a full segment's
// piece (MaxSegment/K at the default scheme), which the engine also hands
// to its stream in one Write (fnet.Conn.Put).
const bareWrite = 8 << 20

// bareQUIC is the baseline: n bytes over one stream between two fnet
// transports on loopback, as the pieces travel, with no storage behind.
// The bytes are in memory before the clock starts (benchData) and the
// receiver drops them: what is timed is QUIC alone. The receiver runs
// where the planet's nodes run (benchProcesses): in this process, or in
// a process of its own, whose CPU the measure adds. (Reads of 1 MiB
// instead of io.Discard's 8 KiB measured no faster: the small buffer
// stays in cache.) With plain, both ends read their packets as quic-go
// does on a socket of its own (fnet.Config.NoGRO): quic-go alone.
func bareQUIC(b *testing.B, n int64, plain bool) measured {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, pids, stop := bareReceiver(b, ctx, nil, plain)
	defer stop()
	cid, _ := fnet.GenerateIdentity()
	cl, err := fnet.NewDialer(cid, fnet.Config{NoGRO: plain})
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	conn, err := cl.Dial(ctx, addr)
	if err != nil {
		b.Fatal(err)
	}
	data := benchData(n, 1)
	return measure(b, func() {
		s, err := conn.OpenStream(ctx)
		if err != nil {
			b.Fatal(err)
		}
		for left := n; left > 0; {
			w := data[:min(left, int64(len(data)), bareWrite)]
			if _, err := s.Write(w); err != nil {
				b.Fatal(err)
			}
			left -= int64(len(w))
		}
		s.Close()
		var ack [1]byte
		if _, err := io.ReadFull(s, ack[:]); err != nil {
			b.Fatal(err)
		}
	}, pids...)
}

// fanoutNodes and fanoutSlots shape BenchmarkBareFanout as the durable
// upload is shaped at the default scheme: each segment's four pieces go
// to four nodes, and the engine uploads two segments at once.
const fanoutNodes, fanoutSlots = 4, 2

// BenchmarkBareFanout is BenchmarkDurable's traffic without Fincrypt: 2n
// bytes (the 2x expansion of the default 2-of-4 scheme) from one client to
// fanoutNodes receivers, each taking n/2 as a run of streams of bareWrite
// bytes (a piece each, answered by one byte as a put is), fanoutSlots at
// a time per receiver, with no storage, hashing or sealing behind. The
// receivers run where the planet's nodes run (benchProcesses). It reports
// per GB of n, as BenchmarkDurable does, the CPU that QUIC alone costs the
// client (client-cpu-s/GB) and the receivers (nodes-cpu-s/GB) for that
// traffic: what BenchmarkDurable spends above these is Fincrypt's own work.
// ratio and cpu-ratio are against one bare stream of n bytes, as there.
func BenchmarkBareFanout(b *testing.B) {
	n := benchBytes(b)
	for range b.N {
		base := bareBaseline{n: n}
		base.run(b)
		got := bareFanout(b, n)
		base.run(b)
		report(b, n, got, base)
	}
}

// bareFanout sends n/2 bytes to each of fanoutNodes receivers (bareQUIC's,
// in processes of their own with benchProcesses).
func bareFanout(b *testing.B, n int64) measured {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cid, _ := fnet.GenerateIdentity()
	cl, err := fnet.NewDialer(cid, fnet.Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	var pids []int
	conns := make([]*fnet.Conn, fanoutNodes)
	for i := range conns {
		addr, more, stop := bareReceiver(b, ctx, pids, false)
		defer stop()
		pids = more
		if conns[i], err = cl.Dial(ctx, addr); err != nil {
			b.Fatal(err)
		}
	}
	data := benchData(n, 1)
	// Each slot of each receiver sends its share of the 2n bytes, at most
	// at its share of FINCRYPT_BENCH_FANOUT_MBS (MB/s of the n bytes) when
	// set: the pace of a durable run, to see what the pace alone costs.
	share := 2 * n / (fanoutNodes * fanoutSlots)
	var slotRate float64 // bytes a second
	if v, err := strconv.ParseFloat(os.Getenv("FINCRYPT_BENCH_FANOUT_MBS"), 64); err == nil && v > 0 {
		slotRate = v * 1e6 * 2 / (fanoutNodes * fanoutSlots)
	}
	return measure(b, func() {
		errs := make(chan error, fanoutNodes*fanoutSlots)
		for _, conn := range conns {
			for range fanoutSlots {
				go func() { errs <- sendStreams(ctx, conn, data, share, slotRate) }()
			}
		}
		for range fanoutNodes * fanoutSlots {
			if err := <-errs; err != nil {
				b.Fatal(err)
			}
		}
	}, pids...)
}

// sendStreams sends n bytes of data over conn as streams of at most
// bareWrite bytes, one after another, each answered by one byte; with a
// rate (bytes a second), each stream starts no sooner than the rate allows.
func sendStreams(ctx context.Context, conn *fnet.Conn, data []byte, n int64, rate float64) error {
	t0 := time.Now()
	for left := n; left > 0; {
		if rate > 0 {
			time.Sleep(time.Until(t0.Add(time.Duration(float64(n-left) / rate * float64(time.Second)))))
		}
		s, err := conn.OpenStream(ctx)
		if err != nil {
			return err
		}
		w := data[:min(left, int64(len(data)), bareWrite)]
		if _, err := s.Write(w); err != nil {
			return err
		}
		left -= int64(len(w))
		s.Close()
		var ack [1]byte
		if _, err := io.ReadFull(s, ack[:]); err != nil {
			return err
		}
	}
	return nil
}

// serveBareBench reads a stream to its end and answers one byte.
func serveBareBench(_ context.Context, _ fnet.NodeID, s *quic.Stream) {
	io.Copy(io.Discard, s)
	s.Write([]byte{1})
	s.Close()
}

// bareReceiverEnv, set to a directory, makes this test binary serve
// serveBareBench instead of running tests: it writes its address to
// bare-address there and serves until SIGTERM. bareReceiverPlainEnv=1
// makes it read as quic-go does alone (fnet.Config.NoGRO).
const (
	bareReceiverEnv      = "FINCRYPT_BENCH_BARE_RECEIVER"
	bareReceiverPlainEnv = "FINCRYPT_BENCH_BARE_PLAIN"
)

func init() {
	if dir := os.Getenv(bareReceiverEnv); dir != "" {
		os.Exit(runBareReceiver(dir, os.Getenv(bareReceiverPlainEnv) == "1"))
	}
}

func runBareReceiver(dir string, plain bool) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	sid, _ := fnet.GenerateIdentity()
	srv, err := fnet.Listen(sid, "127.0.0.1:0", fnet.Config{NoGRO: plain})
	if err != nil {
		return 1
	}
	defer srv.Close()
	tmp := filepath.Join(dir, "bare-address.tmp")
	if os.WriteFile(tmp, []byte(srv.Address().String()), 0o600) != nil || os.Rename(tmp, filepath.Join(dir, "bare-address")) != nil {
		return 1
	}
	srv.Serve(ctx, fnet.HandlerFunc(serveBareBench))
	return 0
}

// bareReceiver starts a receiver of the bare stream where the planet's
// nodes run (benchProcesses): a process of its own, whose pid it appends
// to pids, or a server in this process. stop ends it. plain: as bareQUIC.
func bareReceiver(b *testing.B, ctx context.Context, pids []int, plain bool) (fnet.Address, []int, func()) {
	if benchProcesses() {
		addr, pid, stop := startBareReceiver(b, plain)
		return addr, append(pids, pid), stop
	}
	sid, _ := fnet.GenerateIdentity()
	srv, err := fnet.Listen(sid, "127.0.0.1:0", fnet.Config{NoGRO: plain})
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(ctx, fnet.HandlerFunc(serveBareBench))
	return srv.Address(), pids, func() { srv.Close() }
}

// startBareReceiver starts the bare stream's receiver as a process of its
// own and returns its address, its pid and how to stop it.
func startBareReceiver(b *testing.B, plain bool) (fnet.Address, int, func()) {
	dir := b.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.bench=^$")
	cmd.Env = append(os.Environ(), bareReceiverEnv+"="+dir)
	if plain {
		cmd.Env = append(cmd.Env, bareReceiverPlainEnv+"=1")
	}
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	stop := func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		raw, err := os.ReadFile(filepath.Join(dir, "bare-address"))
		if err == nil {
			addr, err := fnet.ParseAddress(string(raw))
			if err != nil {
				stop()
				b.Fatal(err)
			}
			return addr, cmd.Process.Pid, stop
		}
		if time.Now().After(deadline) {
			stop()
			b.Fatal("the bare receiver did not start")
		}
	}
}

// benchProcesses reports whether the planet's storage nodes (and the bare
// stream's receiver) run as processes of their own, as users run them:
// the default since the ninth session. FINCRYPT_BENCH_PROCESSES=0 runs
// them in the benchmark's process, as before, where the nodes' QUIC,
// hashing and disk writes share the client's scheduler and collector:
// there, four connections at once cost QUIC about 1.5x the CPU a byte of
// one connection and ran at a third of its pace, which no user's client
// pays and the one-connection bare stream did not. Across two processes
// the bare stream itself costs more CPU a byte than within one (4.4-4.8
// against 3.0-3.9 CPU-s a GB on a quiet machine), so ratios of the two
// layouts do not compare: only ratios of one layout do.
func benchProcesses() bool { return os.Getenv("FINCRYPT_BENCH_PROCESSES") != "0" }

// cpuTime is the CPU (user + system) this process has used (self), and
// the processes pids (the planet's nodes or the bare receiver when they
// run as processes of their own: others): the mediator, the mount and the
// writer run in this one, and so do the nodes unless benchProcesses.
func cpuTime(b *testing.B, pids ...int) (self, others time.Duration) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	for _, pid := range pids {
		ticks, err := testplanet.ProcessCPU(pid)
		if err != nil {
			b.Fatal(err)
		}
		others += time.Duration(ticks) * time.Second / testplanet.ProcessTicks
	}
	return self, others
}

// measured is a wall-clock time and the CPU spent in it: in all, and in
// the processes measure was given (the nodes' or the bare receiver's).
type measured struct{ wall, cpu, others time.Duration }

func measure(b *testing.B, f func(), pids ...int) measured {
	s0, o0 := cpuTime(b, pids...)
	t0 := time.Now()
	f()
	wall := time.Since(t0)
	s1, o1 := cpuTime(b, pids...)
	return measured{wall, s1 - s0 + o1 - o0, o1 - o0}
}

// profiled runs f under a CPU profile written to FINCRYPT_BENCH_CPUPROFILE
// (when set): the measured work alone, without the bare baseline's runs
// or the planet's start that -cpuprofile would mix in. It profiles this
// process: the mount, the engine and the mediator, and the nodes with
// FINCRYPT_BENCH_PROCESSES=0; else each node's process writes a profile
// of its own (nodeProfile).
func profiled(b *testing.B, f func()) {
	path := os.Getenv("FINCRYPT_BENCH_CPUPROFILE")
	if path == "" {
		f()
		return
	}
	out, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer out.Close()
	if err := pprof.StartCPUProfile(out); err != nil {
		b.Fatal(err)
	}
	defer pprof.StopCPUProfile()
	f()
}

// nodeProfile is where the nodes' processes write their CPU profiles
// (testplanet.Config.NodeCPUProfile): FINCRYPT_BENCH_CPUPROFILE with
// ".node0" and so on appended, when the nodes run as processes of their
// own. Each covers its node's whole run (the planet's start, the measured
// work, the second bare run while the node idles, its stop).
func nodeProfile() string {
	if !benchProcesses() {
		return ""
	}
	return os.Getenv("FINCRYPT_BENCH_CPUPROFILE")
}

// bareBaseline runs bareQUIC twice, before and after the measured work,
// and keeps the faster run: on a shared machine the load of other jobs
// comes and goes, and the faster run is the fairer ceiling. best is over
// Fincrypt's transport as the pieces travel (with UDP GRO since the
// twelfth session), plain over quic-go alone (fnet.Config.NoGRO), which
// GRO outpaces: ratio is against best, quicgo-ratio against plain.
type bareBaseline struct {
	n           int64
	best, plain measured
}

func (bb *bareBaseline) run(b *testing.B) {
	faster := func(m measured, best *measured) {
		if best.wall == 0 || m.wall < best.wall {
			*best = m
		}
	}
	faster(bareQUIC(b, bb.n, false), &bb.best)
	faster(bareQUIC(b, bb.n, true), &bb.plain)
}

// report gives MB/s against the bare stream's (ratio), and the same
// comparison by CPU spent per byte (cpu-ratio: bare CPU per byte over
// ours), which the load of other jobs on the machine disturbs less.
func report(b *testing.B, n int64, got measured, bb bareBaseline) {
	base := bb.best
	mb := float64(n) / 1e6
	b.ReportMetric(mb/got.wall.Seconds(), "MB/s")
	b.ReportMetric(mb/base.wall.Seconds(), "base-MB/s")
	b.ReportMetric(base.wall.Seconds()/got.wall.Seconds(), "ratio")
	b.ReportMetric(got.cpu.Seconds()/(mb/1000), "cpu-s/GB")
	b.ReportMetric(base.cpu.Seconds()/(mb/1000), "base-cpu-s/GB")
	b.ReportMetric(base.cpu.Seconds()/got.cpu.Seconds(), "cpu-ratio")
	b.ReportMetric(mb/bb.plain.wall.Seconds(), "quicgo-MB/s")
	b.ReportMetric(bb.plain.wall.Seconds()/got.wall.Seconds(), "quicgo-ratio")
	// The same CPU split by process: the client's (mount, engine, writer
	// and mediator) and the nodes' (their processes, with benchProcesses),
	// and the bare stream's receiver's.
	if got.others > 0 {
		b.ReportMetric((got.cpu-got.others).Seconds()/(mb/1000), "client-cpu-s/GB")
		b.ReportMetric(got.others.Seconds()/(mb/1000), "nodes-cpu-s/GB")
		b.ReportMetric(base.others.Seconds()/(mb/1000), "base-recv-cpu-s/GB")
	}
}

// BenchmarkDurable writes one file of FINCRYPT_BENCH_BYTES through the
// mount and measures until every piece of it is committed: plaintext MB/s
// made durable, against bare QUIC over loopback in the same run.
//
// Where the CPU goes (tenth session). client-cpu-s/GB and nodes-cpu-s/GB
// split cpu-s/GB by process; BenchmarkBareFanout sends the same traffic
// (2 GB of 8 MiB streams a GB of file, to four receivers, two at a time)
// with nothing behind it, so the difference is Fincrypt's own work. With
// FINCRYPT_BENCH_CPUPROFILE=F the client's profile of the measured work
// goes to F and each node's process writes F.node0 ... of its whole run
// (go tool pprof -top the-test-binary F.node*). `perf record -e cpu-clock
// -g -p PIDS` works on this machine too (no hardware counters) and shows
// what pprof cannot: the kernel's share and the runtime's own threads.
// Figures at a load average of 43 to 73 (eight agents on two cores; no
// quiet window came), 1 GiB, one binary, runs alternated:
//   - durable 20-30 MB/s, ratio 0.11-0.16, 25.8-28.5 cpu-s/GB: client
//     12.9-14.2, nodes 13.0-14.4 (9 runs; a tenth beside a build: 32.6);
//   - bare fan-out 64-79 MB/s, ratio 0.38-0.52, 9.5-12.7 cpu-s/GB: client
//     3.9-5.1, receivers 5.6-7.5 (6 runs). Paced to a durable run's 25
//     MB/s (FINCRYPT_BENCH_FANOUT_MBS=25), 11.9/14.1: client 4.9/5.7,
//     receivers 7.0/8.4, about 10 % more than at full pace (each stream
//     still goes at full speed, then the slot waits). QUIC alone, shaped
//     as the upload is, reaches 0.4-0.5 of one bare stream here: the
//     ceiling of about 0.25 named in the ninth session is not QUIC's but
//     Fincrypt's own work, about 15 cpu-s/GB (client about 8.5, nodes
//     about 6.5).
//   - the nodes' pprof (4 nodes, 11.7 s sampled for 1.07 GB): receiving
//     (QUIC's transport and connection goroutines) about 50 %, the put 28 %
//     (SHA-256 of the piece for its id, once, 17.8 %; write(2) into the
//     page cache 6.9 %; the tree, fsyncs, rename and Pebble commit under
//     2 %), reading the stream into the put's buffers 8.7 %; garbage
//     collection under 1 %. perf adds what pprof does not see: the Go
//     runtime's sysmon thread 14 % and the scheduler's search for work
//     (findRunnable) 10.5 % of the nodes' CPU, against 10.5 % and 13.7 %
//     in the bare stream's receiver: the same runtime costs, per wake-up.
//     Each node takes a quarter of the traffic at a fraction of a core,
//     so it wakes for fewer packets each time than a saturated receiver.
//   - perf over the nodes' whole run against the fan-out's receivers
//     (load 62-79, 1000 samples a second, per GB of file): 17.3 against
//     8.2 cpu-s. The put 3.3 (SHA-256 2.0, write(2) 0.9) against none;
//     the rest, 14.0 against 8.2, is the same code: QUIC's connection
//     goroutine 3.9 against 2.8, its transport's receiving 3.3 against
//     2.5, stream reads 1.3 against 0.3, sysmon 2.2 against 0.9, the
//     scheduler's search for work 1.6 against 0.9. The durable run took
//     2.8 times as long a GB (17 against 49 MB/s), its pieces arriving as
//     a steady trickle rather than in bursts, so each wake-up of a node
//     handles fewer packets: the likely reason, not measured apart.
//   - the client's pprof (12.7 s for 1.07 GB): QUIC sending 2 GB about
//     46 %, piece ids 17 %, FUSE and the writer's write(2) 14 %, sealing
//     and the local store's writes 6 %, reading sealed chunks back to
//     pack them 4 %.
//
// Eleventh session (1 GiB, the binaries before and after alternated).
// SHA-256 of the Merkle leaves was the largest share of Fincrypt's own
// CPU on both sides: 19 % of the client's profile (piece ids, 2 GB hashed
// a GB of file) and 22 % of the nodes' (the hash while receiving), all in
// SHA-NI's block function, one 4 KiB leaf at a time at 1.0-1.16 GB per
// CPU-second here. challenge.Builder now hashes 16 leaves at once in
// AVX-512 registers, and BuildTree 16 pairs at once (leafhash_amd64.s):
// ComputeID at 2.8-3.4 GB per CPU-second. With that and whole-chunk write
// buffers for appended files (fs), three pairs at a load average of 14 to
// 28: cpu-s/GB 22.7/22.0/21.7 before, 19.8/19.2/19.4 after (client
// 10.7-11.3 to 9.3-9.7, nodes 11.1-11.5 to 9.8-10.1), ratio 0.204/0.187/
// 0.227 to 0.243/0.239/0.254. Where the rest goes (profiles after): the
// client's QUIC sending about half of its CPU, FUSE and the writer's
// write(2) 14 %, piece ids 8-10 %, sealing and the local store's writes
// 8 %, reading sealed chunks back 5 % (preadv 4 %); the nodes' put 19 %
// (the hash 7 %, write(2) 8 %), the rest QUIC and the runtime. Packing
// segments from sealed chunks still in memory would not help here: the
// writer runs hundreds of MB ahead of the uploads (write-s/GB 4-7 against
// 15-25 for the whole), so every chunk has left any small buffer by the
// time its segment is packed; it is read back from the page cache.
//
// Tried and dropped (same binary, switched by environment, alternated):
// a node pausing 500 us after a short read so that packets gather (nodes
// 13.8/14.7 against 13.4/13.8 cpu-s/GB: no better; the transport's
// goroutine still wakes per packet); an 8 MiB first stream window instead
// of 1 MiB, so a piece never waits for a window update (13.4/13.0 against
// 13.9/13.0); GOMAXPROCS=1 in the nodes' processes (12.5/12.7 against
// 13.5/14.4, 7-12 % less, but no user's node runs so). A stream read
// costs no more than it should: 12,000 reads a node for 537 MB (45 KB
// each), so the deadline set before each read is negligible.
//
// Twelfth session. QUIC's syscalls were the largest part left: the
// client's sendmsg 15 % of its CPU, the nodes' recvmmsg 15 %. quic-go
// sends GSO runs of 14 packets (20 KiB, full: 20 KB a sendmsg measured)
// but reads one packet a slot, and without UDP_GRO the kernel cut every
// run into packets on loopback inside the sender's sendmsg. The transport
// now reads with UDP_GRO (net/gro_linux.go): in BareFanout (perf stat, 3
// s) a receiver reads about 220 KB a recvmmsg and sends an ACK per ~150
// KB received, the client 20 KB a sendmsg. Three pairs of the old
// binary (037ad3a) and the new alternated, 1 GiB, load 23-30:
// cpu-s/GB 16.86/16.60/16.90 to 13.99/14.36/14.45 (client 8.1-8.3 to
// 6.9-7.2, nodes 8.5-8.6 to 7.1-7.3), MB/s 61.0/64.6/62.4 to 71.6/76.8/
// 80.6. The bare stream over the transport gains as much (4.3-4.5 to
// 3.6-3.8 cpu-s/GB), so ratio stays 0.251-0.267 to 0.252-0.275; against
// quic-go alone, the old baseline, 0.287/0.310/0.334 (quicgo-ratio).
// BenchmarkRestore, two pairs at load 12-24: 7.99/8.55 to 6.28/6.99
// cpu-s/GB, 133/130 to 191/143 MB/s. BenchmarkBareFanout: 8.2-8.4 to
// 5.8-6.6 cpu-s/GB. Judged and left: a larger InitialPacketSize (path MTU
// discovery reaches within 20 bytes of quic-go's 1452-byte ceiling, and a
// set size fails the handshake where the path is smaller); the cipher
// (TLS 1.3 in Go picks AES-GCM when both ends have AES hardware, as here:
// gcmAesEnc, about 3 GB/s a core, 12 % of the client for the chunks' and
// the packets' sealing); socket buffers (quic-go forces its 7 MiB as
// root, no warning); Parallel 3 (no change at load 22-26); ACK frequency
// (quic-go has no ACK_FREQUENCY yet; its ACKs are already rare, above);
// the mount's extra Ps for idle FUSE readers (fs/procs.go: GOMAXPROCS 5
// in the client) left out: client 6.41/5.99 against 6.43/6.66 cpu-s/GB at
// load 28-38, within the noise, and they are mktree's gain.
// What is left: QUIC in quic-go's own code (packing, framing, its locks,
// the packets' AES-GCM) about 45 % of the client; the Go runtime's
// wake-ups (perf: sysmon 9-14 %, context switches about 20 % of each
// process); Fincrypt's own: sealing 11 %, piece ids 11 %, the writer's
// write(2) through FUSE 10 %, FUSE 5 %, reading chunks back 5 %.
//
// Thirteenth session. A timeline of a run (bytes written and uploaded,
// the client's and the nodes' CPU, every 250 ms) showed two serial
// stretches: the nodes idle for the first 2.0-2.3 s, because the engine
// found the writer's chunks only at its next scan (ScanInterval, 2 s),
// when the writer was 650 MB ahead; and the file's last segment (16
// sealed 1 MiB chunks, which the planner does not count as full) sent
// alone in a round of its own once the round's slowest upload had ended.
// Now a segment's worth written wakes the engine (meta.Index.OnPending),
// the first upload starting 0.25 s into the run, and a sync sends the
// partly filled segment beside the running uploads. The writer then
// shares the cores with the uploads (write-s/GB median 4.4 before, 8.3
// after) and the slots are busy 0.95-0.99 of the time (0.78-0.91). The
// binaries alternated, 1 GiB, 22 pairs at a load average of 2.5 to 22
// (no quiet window lasted): ratio median 0.258 against 0.221 (each
// pair's ratio of the two: median +11 %, -38 % to +72 %, better in 14 of
// 22), quicgo-ratio 0.308 against 0.275 (+4 %), cpu-s/GB 16.2 against
// 15.8 (+1 %, within the noise). Apart: the wake alone, 11 pairs at load
// 10-23, ratio +0.6 % (better in 6), cpu-s/GB +0.5 %; the late segment
// alone, a third binary in 12 of the 22 rounds, ratio +4 % (better in
// 8). On a loaded machine no core idles for the wake to fill, and a node
// that receives a slower stream likely spends more a byte (the tenth
// session's trickle): the wake is for a machine with idle cores, and for
// the time from a write to its upload. The client allocates 0.24 bytes
// a byte written and collects 3-5 times a GB (client-alloc-B/B,
// client-gcs/GB): garbage collection is no lever. Tried and dropped:
// Parallel 3 (FINCRYPT_BENCH_PARALLEL, 3 pairs at load 8-22: ratio
// 0.285/0.267/0.193 against 0.267/0.240/0.232).
//
// Fifteenth session: do rounds drain the upload slots? A round stops
// taking segments once streamFor (10 s) has passed and its plan is done,
// waits for its last uploads, runs its other duties, and the next round
// plans again. slots-drained counts the slot time so lost (Replicator.
// drained), and FINCRYPT_BENCH_TIMELINE writes the run every 250 ms.
// 3 GiB at load 4-13: rounds of 14 s (the cut waits for the plan taken
// before it, and the writer is hundreds of MB ahead), slots-busy 0.990,
// slots-drained 0.0018; a drain leaves one slot idle for part of one
// upload, and the next round starts at once (a segment's worth written
// has kicked it). 1 GiB, 5 runs at load 9-18: slots-drained 0.0003 to
// 0.0068. So a pool of uploads that outlives rounds would gain under 1 %
// here; it would also let a round's maintenance run beside commits, and
// its walk (maintainWalk) reads the locations and then the segments
// apart: a segment committed in between would look dead. Not done.
//
// Sixteenth session (a load average of 6 to 27 throughout: two other
// sessions on the two cores). Profiles of 512 MiB runs put Fincrypt's
// own work at: the piece ids' SHA-256 (client 1.6-1.8, nodes 1.5-1.7
// cpu-s a GB of plaintext), the nodes' write(2) of pieces 0.9-1.1 (4.4
// in a run whose page cache pages were new to the VM: see below), the
// local store's pwritev 0.35-0.5 and read-back 0.5, sealing 0.5, the
// writer's write(2) and the FUSE server 2. The leaves (and the tree's
// upper levels) now hash two at a time with SHA-NI where the CPU has no
// AVX-512 (challenge/leafhash_shani_amd64.go): sha256 in the profiles
// 1.56/1.66 to 0.65/0.93 (client), 1.71/1.51 to 0.78/0.97 (nodes).
// BenchmarkDurable, base and new alternated, 7 pairs: cpu-s/GB 51.2/42.2/
// 31.4/46.2/38.0/39.1/36.1 to 43.4/32.6/29.2/34.7/35.0/33.9/28.8 (median
// 39.1 to 33.9, better in every pair, each by 7-25 %; client 19.8 to 17.0,
// nodes 19.3 to 16.9 median), quicgo-ratio median 0.30 to 0.35, where the
// profiles' saving alone would give about 5 %; BenchmarkRestore, 3 pairs:
// 16.9/17.7/16.9 to 13.0/15.0/15.6 (the client checks every piece's id as
// it reads it).
// At such load every figure, the bare stream's too, moves by a third
// from run to run: the pairs' direction is the finding, not the size.
// Tried and not taken: dropping a stored piece from the nodes' page
// cache after its fsync (POSIX_FADV_DONTNEED). write(2) into pages the
// VM had never touched cost 0.37-0.42 s of system time per 256 MiB and
// into pages freed so 0.04-0.06 s, but between benchmark runs the
// removed temporary directories free as many pages as the next run
// writes: nodes' write(2) 0.95/1.23 against 0.73/0.89 without the drop,
// no gain, and a restore would read pieces from disk.
//
// Seventeenth session: where does the durable path wait? At load 1-4 the
// two cores were not busy for 14 % of a 1 GiB run (/proc/stat: idle 5.3 %,
// iowait 8.8 %), the disk busy for 34 % (163 MB/s written). Off-CPU (perf
// record -e sched:sched_switch -a -g, 8 s at load about 8), the tasks
// asleep on the disk: the in-process mediator's Pebble log 2.8 s (565
// syncs: the planet's five nodes heartbeat every 100 ms, each a synced
// PutNode, and the placements' and commits' syncs queue behind them); the
// nodes' piece fsyncs 1.6 s and directory fsyncs 0.3 s, about 33 ms a
// piece, half the device's cache flush and half waiting for the piece's
// data, whose early writeback starts only at its end (writebackChunk is
// 8 MiB, a full segment's piece). From the client, a put spent 566 ms
// writing its 8 MiB into the stream, then 132 ms (at most 392) until the
// node's receipt (load 8-10): the slot waits on the node for a fifth of
// each put. A scratch build starting the writeback every 1 MiB, two
// pairs at load 11-19: that wait 202/219 to 136/116 ms, MB/s 20.9/21.4 to
// 21.5/20.5 (at that load the cores, not the waits, set the pace; not
// kept). The planet's heartbeats now come at the mediator's default, once
// a minute, as the challenges do (benchPlanet): disk flushes 35-42 to
// 14-17 a second (two of three pairs; other runs shared the disk). Base
// and new alternated, 1 GiB, 6 pairs (the last two new first) at load
// 9-27 throughout (other benchmarks and builds; no core idled): MB/s
// 20.0/22.1/18.5/37.4/14.5/21.5 to 20.7/17.5/18.4/17.7/19.5/27.4 (median
// 20.7 to 19.0), quicgo-ratio median 0.273 to 0.271 (better in 3 of 6),
// cpu-s/GB median 36.4 to 39.8 (higher in 5 of 6, -7 % to +14 %; no
// mechanism found), slots-busy median 0.978 to 0.975. On cores kept busy
// by others no wait shows in the pace; the heartbeats' change is for the
// benchmark's fidelity. The largest wait measured is the node's tail (the
// late writeback, and three cache flushes a piece: the file, its
// directory, the index).
// Also tried, not taken: pieces written with O_DIRECT on the nodes (the
// page cache's copy is 8 % of all CPU in a perf profile of a 2 GiB run,
// most of it the VM's host faults on fresh pages). BenchmarkPutDisk (a
// node's write path alone, 6 pairs): 1.67 to 1.46 cpu-s/GB, system time
// 0.75 to 0.47; but BenchmarkDurable, 8 pairs at load 2-25: cpu-s/GB
// median 39.4 to 38.7, MB/s 21.3 to 21.5 (better in 3 and 4 of 8: within
// the noise), and BenchmarkRestore 36 % slower (2 pairs: 70/79 to 45/50
// MB/s; the pieces are read from the disk, no longer from the page cache
// the writes filled), for a write path with more to get wrong.
func BenchmarkDurable(b *testing.B) {
	n := benchBytes(b)
	for range b.N {
		base := bareBaseline{n: n}
		base.run(b)
		p, c, _ := benchPlanet(b, n)
		data := benchData(n, 7)
		var write time.Duration
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		stopLine := timeline(b, c, nodePids(p))
		got := measure(b, func() {
			profiled(b, func() {
				t0 := time.Now()
				writeBench(b, c, n, data)
				write = time.Since(t0)
				c.rep.RequestSync()
				c.waitSyncedFor(b, "bench write", 30*time.Minute)
			})
		}, nodePids(p)...)
		stopLine()
		runtime.ReadMemStats(&m1)
		base.run(b)
		report(b, n, got, base)
		// The client's allocation (the mount, the engine, the mediator and
		// the writer: this process) per plaintext byte, and its garbage
		// collections per GB.
		b.ReportMetric(float64(m1.TotalAlloc-m0.TotalAlloc)/float64(n), "client-alloc-B/B")
		b.ReportMetric(float64(m1.NumGC-m0.NumGC)/(float64(n)/1e9), "client-gcs/GB")
		// Where the time went, in seconds per GB of plaintext: the writer
		// through the mount (sealing and the local store included), then
		// each stage of the segments' uploads summed over the slots.
		reportStages(b, n, append([]stage{{"write", write}}, c.rep.stages.uploadStages()...))
		// Piece bytes sent per plaintext byte: the scheme's expansion
		// (N/K) times the padding of the segments' size classes.
		var sent int64
		c.rep.idx.Segments(func(s meta.Segment) error {
			if s.Kind == meta.KindData {
				sent += int64(s.Class) * int64(s.N) / int64(s.K)
			}
			return nil
		})
		b.ReportMetric(float64(sent)/float64(n), "sent-B/B")
		// How busy the upload slots were: 1 when Parallel segments were
		// in flight all the time, lower when the engine left slots idle
		// (between rounds, or waiting for a round's slowest upload).
		busy := time.Duration(c.rep.uploadBusy.Load())
		b.ReportMetric(busy.Seconds()/(got.wall.Seconds()*float64(c.rep.cfg.Parallel)), "slots-busy")
		// Of the idle rest, the share lost to rounds cut at streamFor:
		// slots left empty while such a round waited for its last uploads
		// and until the next round launched one.
		drained := time.Duration(c.rep.drained.Load())
		b.ReportMetric(drained.Seconds()/(got.wall.Seconds()*float64(c.rep.cfg.Parallel)), "slots-drained")
		// Segment buffers allocated (2x a segment each): Parallel when
		// the free list keeps them for the whole write.
		b.ReportMetric(float64(c.rep.segBufs.made.Load()), "segbufs")
	}
}

// BenchmarkRestore restores a vault holding one file of
// FINCRYPT_BENCH_BYTES into a fresh home and reads the file back: MB/s
// from the network, against bare QUIC in the same run.
func BenchmarkRestore(b *testing.B) {
	n := benchBytes(b)
	for range b.N {
		base := bareBaseline{n: n}
		base.run(b)
		p, c, home := benchPlanet(b, n)
		writeBench(b, c, n, benchData(n, 7))
		c.rep.RequestSync()
		c.waitSyncedFor(b, "bench write", 30*time.Minute)
		acct := fnet.AccountID(c.rep.client.Account())
		c.unmount()
		os.RemoveAll(home)
		home2 := filepath.Join(b.TempDir(), "restored")
		var c2 *client
		var index, read time.Duration
		got := measure(b, func() {
			profiled(b, func() {
				t0 := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
				if _, err := Restore(ctx, RestoreOptions{Home: home2, Mediator: p.Mediator.Address(), Account: acct, Password: testPassword}); err != nil {
					b.Fatal(err)
				}
				cancel()
				c2 = mount(b, p, home2, benchConfig())
				index = time.Since(t0)
				t0 = time.Now()
				f, err := os.Open(filepath.Join(c2.mnt, "big"))
				if err != nil {
					b.Fatal(err)
				}
				got, err := io.Copy(io.Discard, f)
				f.Close()
				if err != nil || got != n {
					b.Fatalf("read back %d of %d bytes: %v", got, n, err)
				}
				read = time.Since(t0)
			})
		}, nodePids(p)...)
		// Where the time went, per GB: the index restored and mounted,
		// the file read back, and the segments' fetches summed over the
		// reads and read-aheads running at once.
		reportStages(b, n, append([]stage{{"index", index}, {"read", read}}, c2.rep.stages.fetchStages()...))
		// Segment downloads per data segment: 1 when read-ahead fetches
		// nothing twice and nothing in vain.
		data := 0
		c2.rep.idx.Segments(func(s meta.Segment) error {
			if s.Kind == meta.KindData {
				data++
			}
			return nil
		})
		b.ReportMetric(float64(c2.rep.segFetches.Load())/float64(max(data, 1)), "fetches/segment")
		// Piece downloads per segment download: K when no hedge or backup
		// fetched a piece in vain.
		b.ReportMetric(float64(c2.rep.stages.pieceGets.Load())/float64(max(c2.rep.segFetches.Load(), 1)), "pieces/fetch")
		// Segment downloads that took a new buffer rather than one a
		// segment before had (allocated, and faulted in page by page).
		b.ReportMetric(float64(c2.rep.segFetches.Load()-c2.rep.bufReuses.Load()), "new-bufs")
		// Sealed bytes the local store kept per plaintext byte read: the
		// head of the file (streamHead), not all of it, when a reader
		// streams it once (chunkstore.Admission).
		if kept, ok := c2.rep.store.Bytes(); ok {
			b.ReportMetric(float64(kept)/float64(n), "kept-B/B")
		}
		base.run(b)
		report(b, n, got, base)
	}
}

// reportStages reports each stage's time in seconds per GB of n bytes.
func reportStages(b *testing.B, n int64, stages []stage) {
	gb := float64(n) / 1e9
	for _, s := range stages {
		b.ReportMetric(s.d.Seconds()/gb, s.name+"-s/GB")
	}
}

// benchConfig is the engine's defaults, as a user's mount has them, with
// timeouts that a loaded machine does not trip; the benchmarks ask for the
// sync a user waits for (`fincrypt sync`) once the data is written.
// FINCRYPT_BENCH_TESTCONFIG=1 takes the tests' intervals instead (a flush
// of partly filled segments after 200 ms, a snapshot every 150 ms of
// writing, maintenance every 300 ms), as the benchmarks did before.
func benchConfig() Config {
	cfg := Config{}
	if os.Getenv("FINCRYPT_BENCH_TESTCONFIG") == "1" {
		cfg = fastConfig()
	}
	cfg.PieceTimeout = time.Minute
	cfg.CallTimeout = time.Minute
	if s := os.Getenv("FINCRYPT_BENCH_PARALLEL"); s != "" { // to compare settings
		cfg.Parallel, _ = strconv.Atoi(s)
	}
	return cfg
}

func benchPlanet(b *testing.B, n int64) (*testplanet.Planet, *client, string) {
	if _, err := os.Stat("/dev/fuse"); err != nil || os.Geteuid() != 0 {
		b.Skip("needs /dev/fuse and root")
	}
	// Challenges every 10 minutes, not the planet's every second: a real
	// network challenges hourly, and a round a second over every node's
	// pieces is work no user's upload competes with. Heartbeats at the
	// mediator's defaults (a minute; online within 3), not the planet's
	// every 100 ms: each is a synced write to the mediator's store, which
	// here shares the disk with the nodes and the client (seventeenth
	// session, in BenchmarkDurable's comment).
	p := testplanet.New(b, testplanet.Config{StorageNodes: 5, NodeCapacity: n + n/2 + 64<<20,
		Reconfigure: func(c *mediator.Config) {
			c.Period = 10 * time.Minute
			c.HeartbeatInterval, c.OnlineWindow, c.OfflineAfter = 0, 0, 0 // the defaults
		},
		NodeProcesses: benchProcesses(), NodeCPUProfile: nodeProfile()})
	home := filepath.Join(b.TempDir(), "home")
	if err := os.MkdirAll(home, 0o700); err != nil {
		b.Fatal(err)
	}
	newVaultChunks(b, home, 1<<20)
	return p, mount(b, p, home, benchConfig()), home
}

// benchWrite is the size of writeBench's write(2) calls: io.Copy's, as
// the benchmark wrote before its data was made ahead of the clock.
const benchWrite = 32 << 10

// writeBench writes n bytes of data (benchData), again and again, to the
// file "big" through the mount.
// nodePids are the processes of the planet's nodes (none when they run in
// this one).
func nodePids(p *testplanet.Planet) []int {
	var pids []int
	for _, n := range p.Nodes {
		if pid := n.Pid(); pid != 0 {
			pids = append(pids, pid)
		}
	}
	return pids
}

// benchWritten counts the bytes writeBench has written (timeline).
var benchWritten atomic.Int64

// timeline writes, every 250 ms until the function it returns is called,
// a line of BenchmarkDurable's progress to the file FINCRYPT_BENCH_TIMELINE
// (when set; "-" for stderr): seconds since the start, MB written through
// the mount and MB of segment content uploaded (put returned), segment
// uploads running (of Parallel slots), the engine's rounds finished
// since the start, and the CPU cores the client and
// the node processes used over the interval. It shows where the slots
// idle (between rounds, waiting for a round's slowest upload) and what
// the cores did meanwhile.
func timeline(b *testing.B, c *client, pids []int) (stop func()) {
	path := os.Getenv("FINCRYPT_BENCH_TIMELINE")
	if path == "" {
		return func() {}
	}
	out := os.Stderr
	if path != "-" {
		f, err := os.Create(path)
		if err != nil {
			b.Fatal(err)
		}
		out = f
	}
	uploaded := func() float64 {
		var m dto.Metric
		if err := c.rep.uploads.bytes.Write(&m); err != nil {
			return 0
		}
		return m.GetCounter().GetValue()
	}
	benchWritten.Store(0)
	fmt.Fprintf(out, "# t-s\twritten-MB\tuploaded-MB\tuploading\tround\tclient-cores\tnodes-cores\n")
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tk := time.NewTicker(250 * time.Millisecond)
		defer tk.Stop()
		t0 := time.Now()
		prev := t0
		s0, o0 := cpuTime(b, pids...)
		up0, r0 := uploaded(), c.rep.rounds.Load()
		for {
			select {
			case <-quit:
				return
			case now := <-tk.C:
				s, o := cpuTime(b, pids...)
				dt := now.Sub(prev).Seconds()
				fmt.Fprintf(out, "%.2f\t%.0f\t%.0f\t%d\t%d\t%.2f\t%.2f\n", now.Sub(t0).Seconds(),
					float64(benchWritten.Load())/1e6, (uploaded()-up0)/1e6, c.rep.uploading.Load(), c.rep.rounds.Load()-r0,
					(s-s0).Seconds()/dt, (o-o0).Seconds()/dt)
				prev, s0, o0 = now, s, o
			}
		}
	}()
	return func() {
		close(quit)
		<-done
		if out != os.Stderr {
			out.Close()
		}
	}
}

func writeBench(b *testing.B, c *client, n int64, data []byte) {
	f, err := os.Create(filepath.Join(c.mnt, "big"))
	if err != nil {
		b.Fatal(err)
	}
	for off := int64(0); off < n; {
		at := int(off % int64(len(data)))
		w := data[at:min(at+benchWrite, len(data), at+int(n-off))]
		if _, err := f.Write(w); err != nil {
			b.Fatal(err)
		}
		off += int64(len(w))
		benchWritten.Add(int64(len(w)))
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
}
