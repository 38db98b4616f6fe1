package testbin

import (
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestPortIsBelowTheEphemeralRange: the port is free on the address and
// not one the kernel hands out for port 0; a port taken is not returned.
func TestPortIsBelowTheEphemeralRange(t *testing.T) {
	b, err := os.ReadFile(portRange)
	if err != nil {
		t.Skipf("no ephemeral range to stay below: %v", err)
	}
	low, _ := strconv.Atoi(strings.Fields(string(b))[0])
	if low < 1024+10000 {
		t.Skipf("ephemeral range starts at %d: no room below it", low)
	}
	var held []net.PacketConn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	seen := map[string]bool{}
	for range 50 {
		p := Port("127.0.0.1")
		n, err := strconv.Atoi(p)
		if err != nil || n < low-10000 || n >= low {
			t.Fatalf("port %q, want one in [%d, %d)", p, low-10000, low)
		}
		if seen[p] {
			t.Fatalf("port %s returned while a socket holds it", p)
		}
		seen[p] = true
		c, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", p))
		if err != nil {
			t.Fatalf("port %s is not free: %v", p, err)
		}
		held = append(held, c)
	}
}
