// Package hostile holds the attacks that issue 18's hostile-peer tests and
// benchmarks share: floods of frame headers and of connections from other
// loopback addresses (other networks). Test support only: nothing outside
// tests imports it.
package hostile

import (
	"context"
	"encoding/binary"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	fnet "github.com/fincrypt/fincrypt/net"
)

// HeaderFlood starts conns attackers dialling addr from host (a loopback
// address) that open every stream they may, each bounded to 2000 streams,
// and write only one of headers on each (a frame header announcing a large
// body) and nothing more. The returned func stops them and reports the
// streams opened.
func HeaderFlood(t testing.TB, ctx context.Context, addr fnet.Address, host string, conns int, headers [][]byte) func() int64 {
	t.Helper()
	var (
		wg     sync.WaitGroup
		opened atomic.Int64
		trs    []*fnet.Transport
	)
	stop := make(chan struct{})
	for i := range conns {
		aid, _ := fnet.GenerateIdentity()
		tr, err := fnet.NewDialerAt(aid, host+":0", fnet.Config{})
		if err != nil {
			t.Fatal(err)
		}
		trs = append(trs, tr)
		a, err := tr.Dial(ctx, addr)
		if err != nil {
			t.Fatalf("attacker %d: %v", i, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer a.Close()
			for k := 0; k < 2000; k++ {
				select {
				case <-stop:
					return
				default:
				}
				octx, ocancel := context.WithTimeout(ctx, 200*time.Millisecond)
				s, err := a.OpenStream(octx)
				ocancel()
				if err != nil {
					continue
				}
				s.Write(headers[k%len(headers)])
				opened.Add(1)
			}
		}()
	}
	return func() int64 {
		close(stop)
		wg.Wait()
		for _, tr := range trs {
			tr.Close()
		}
		return opened.Load()
	}
}

// ConnFlood dials addr from host n times, each time as a fresh identity,
// all at once, and holds every connection the peer accepts open and idle.
// A dial the peer refuses (its per-address or total cap) gives up after two
// seconds. The returned func closes them all and reports how many were
// accepted.
func ConnFlood(t testing.TB, ctx context.Context, addr fnet.Address, host string, n int) func() int {
	t.Helper()
	var (
		mu       sync.Mutex
		trs      []*fnet.Transport
		accepted int
		wg       sync.WaitGroup
	)
	for range n {
		id, _ := fnet.GenerateIdentity()
		tr, err := fnet.NewDialerAt(id, host+":0", fnet.Config{})
		if err != nil {
			t.Fatal(err)
		}
		trs = append(trs, tr)
		wg.Add(1)
		go func() {
			defer wg.Done()
			dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			if _, err := tr.Dial(dctx, addr); err == nil {
				mu.Lock()
				accepted++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return func() int {
		for _, tr := range trs {
			tr.Close()
		}
		return accepted
	}
}

// MediatorHeaders are frame headers announcing the largest body of a
// challenge response, a placement request and a live request: what a
// mediator reads from peers.
func MediatorHeaders() [][]byte {
	headers := [][]byte{
		{fnet.Version, byte(fnet.TypeChallengeResponse), 0, 0, 0, 0},
		{fnet.Version, byte(fnet.TypePlacementRequest), 0, 0, 0, 0},
		{fnet.Version, byte(fnet.TypeLiveRequest), 0, 0, 0, 0},
	}
	for _, h := range headers {
		binary.BigEndian.PutUint32(h[2:], uint32(fnet.BodyLimit(fnet.MsgType(h[1]))))
	}
	return headers
}
