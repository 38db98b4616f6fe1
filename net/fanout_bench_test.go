package net

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

// fanoutBytes is what each fan-out benchmark run sends in all
// (FINCRYPT_FANOUT_MB overrides 256 MB).
func fanoutBytes() int64 {
	if s := os.Getenv("FINCRYPT_FANOUT_MB"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n > 0 {
			return int64(n) << 20
		}
	}
	return 256 << 20
}

func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkFanout sends pieces the way an upload does, over real
// transports on loopback with nothing stored behind them, so that the
// transport's own cost per byte (CPU of sender and receivers together) is
// measured apart from the storage: "1x1" is one stream to one node (the
// bare baseline of BenchmarkDurable), "4x2" two segments at once, each a
// piece to each of four nodes.
func BenchmarkFanout(b *testing.B) {
	for _, shape := range []struct{ nodes, par int }{{1, 1}, {4, 2}} {
		for _, chunked := range []bool{false, true} {
			name := fmt.Sprintf("%dx%d", shape.nodes, shape.par)
			if chunked {
				name += "-32k"
			}
			b.Run(name, func(b *testing.B) {
				benchFanout(b, shape.nodes, shape.par, 8<<20, chunked)
			})
		}
	}
}

func benchFanout(b *testing.B, nodes, par int, piece int, chunked bool) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var addrs []Address
	for range nodes {
		id, _ := GenerateIdentity()
		srv, err := Listen(id, "127.0.0.1:0", Config{RequestRate: -1, IPRequestRate: -1})
		if err != nil {
			b.Fatal(err)
		}
		defer srv.Close()
		go srv.Serve(ctx, HandlerFunc(func(_ context.Context, _ NodeID, s *quic.Stream) {
			buf := make([]byte, 1<<20)
			for {
				if _, err := io.ReadFull(s, buf); err != nil {
					break
				}
			}
			s.Write([]byte{1})
			s.Close()
		}))
		addrs = append(addrs, srv.Address())
	}
	cid, _ := GenerateIdentity()
	cl, err := NewDialer(cid, Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	conns := make([]*Conn, nodes)
	for i, a := range addrs {
		if conns[i], err = cl.Dial(ctx, a); err != nil {
			b.Fatal(err)
		}
	}
	data := make([]byte, piece)
	for i := range data {
		data[i] = byte(i * 7)
	}
	total := fanoutBytes()
	rounds := int(total / int64(piece*nodes*par))
	b.ResetTimer()
	for range b.N {
		c0, t0 := processCPU(b), time.Now()
		for range rounds {
			var wg sync.WaitGroup
			for range par {
				for _, c := range conns {
					wg.Go(func() {
						s, err := c.OpenStream(ctx)
						if err != nil {
							b.Error(err)
							return
						}
						if chunked {
							s.SetDeadline(time.Now().Add(time.Minute))
							_, err = io.CopyN(s, bytes.NewReader(data), int64(len(data)))
						} else {
							_, err = s.Write(data)
						}
						if err != nil {
							b.Error(err)
							return
						}
						s.Close()
						var ack [1]byte
						if _, err := io.ReadFull(s, ack[:]); err != nil {
							b.Error(err)
						}
					})
				}
			}
			wg.Wait()
		}
		wall, cpu := time.Since(t0), processCPU(b)-c0
		gb := float64(rounds*piece*nodes*par) / 1e9
		b.ReportMetric(gb*1000/wall.Seconds(), "MB/s")
		b.ReportMetric(cpu.Seconds()/gb, "cpu-s/GB")
	}
	var sent, lost uint64
	for _, c := range conns {
		st := c.qc.ConnectionStats()
		sent += st.PacketsSent
		lost += st.PacketsLost
	}
	b.ReportMetric(float64(lost)/float64(max(sent, 1))*100, "%lost")
	b.ReportMetric(float64(fanoutBytes())/float64(max(sent, 1))*float64(b.N), "B/pkt")
}
