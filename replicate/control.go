package replicate

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// ControlSocketName is the status socket in the vault's home, mode 0600:
// a client writes one command line ("status") and reads one JSON reply.
const ControlSocketName = "control.sock"

// ErrNotRunning means no mount serves the vault's control socket.
var ErrNotRunning = errors.New("the vault is not mounted (no control socket answers)")

// Control serves the control socket of a running replicator.
type Control struct {
	ln   net.Listener
	path string
	wg   sync.WaitGroup
}

// ServeControl listens on home/control.sock and answers status requests
// from r until Close.
func ServeControl(home string, r *Replicator) (*Control, error) {
	path := filepath.Join(home, ControlSocketName)
	os.Remove(path) // a stale socket of a killed mount
	// The home is 0700, so the moment before the chmod exposes nothing.
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	c := &Control{ln: ln, path: path}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			c.wg.Add(1)
			go func() {
				defer c.wg.Done()
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(10 * time.Second))
				line, err := bufio.NewReader(conn).ReadString('\n')
				if err != nil {
					return
				}
				enc := json.NewEncoder(conn)
				switch strings.TrimSpace(line) {
				case "status":
					var st Status
					if err := r.faults.Protect("status", func() error {
						st = r.Status(context.Background())
						return nil
					}); err != nil {
						enc.Encode(map[string]string{"error": err.Error()})
						return
					}
					enc.Encode(st)
				default:
					enc.Encode(map[string]string{"error": "unknown command"})
				}
			}()
		}
	}()
	return c, nil
}

// Close stops serving and removes the socket.
func (c *Control) Close() error {
	err := c.ln.Close()
	c.wg.Wait()
	os.Remove(c.path)
	return err
}

// QueryStatus asks the mount serving home for its status.
func QueryStatus(home string) (*Status, error) {
	conn, err := net.DialTimeout("unix", filepath.Join(home, ControlSocketName), 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotRunning, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := conn.Write([]byte("status\n")); err != nil {
		return nil, err
	}
	var st Status
	if err := json.NewDecoder(conn).Decode(&st); err != nil {
		return nil, fmt.Errorf("control socket reply: %w", err)
	}
	return &st, nil
}
