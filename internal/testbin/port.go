package testbin

import (
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
)

// portRange is where Linux picks the port of a socket bound to port 0.
const portRange = "/proc/sys/net/ipv4/ip_local_port_range"

// Port returns a UDP port on ip that is free now, for a daemon that must
// come back on the port it first had (the nodes pin their mediator's
// address). It is chosen below the kernel's ephemeral range: a port the
// kernel handed out for port 0 could be taken, while the daemon is down
// between a kill and its restart, by any socket on the machine that binds
// port 0 (every QUIC dialer does), and the restart would fail; a port
// below the range is taken only by a socket that names it. Where there is
// no such range to read, or too little room below it, Port returns "0":
// the daemon takes a port of the kernel's choice.
func Port(ip string) string {
	b, err := os.ReadFile(portRange)
	if err != nil {
		return "0"
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return "0"
	}
	low, err := strconv.Atoi(f[0])
	const span = 10000
	if err != nil || low < 1024+span {
		return "0"
	}
	for range 100 {
		port := strconv.Itoa(low - span + rand.IntN(span))
		c, err := net.ListenPacket("udp", net.JoinHostPort(ip, port))
		if err != nil {
			continue // taken: another
		}
		c.Close()
		return port
	}
	return "0"
}
