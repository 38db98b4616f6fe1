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
// a client writes one command line and reads one JSON reply (or, where its
// command asks for them, lines before that reply: HandleStream). Commands:
// "status" (a Status); "sync" (asks for a snapshot of everything written so
// far: {"mark": time}, see Status.Covered); "sync-timeout DURATION" (bounds
// the uploads and final snapshot of the coming unmount: {"ok": true}).
const ControlSocketName = "control.sock"

// ErrNotRunning means no mount serves the vault's control socket.
var ErrNotRunning = errors.New("the vault is not mounted (no control socket answers)")

// Control serves the control socket of a running replicator.
type Control struct {
	ln   net.Listener
	path string
	wg   sync.WaitGroup

	ctx      context.Context // ends at Close: handlers stop
	cancel   context.CancelFunc
	mu       sync.Mutex
	handlers map[string]StreamHandler
}

// Handler serves a control command that another part of the mount adds
// (Handle; the command wires backups this way): arg is the rest of the
// command line, the result is encoded as the one JSON reply. It runs
// without the socket's deadline (a backup pass may take hours); ctx ends
// when the control socket closes.
type Handler func(ctx context.Context, arg string) any

// Handle serves command cmd with h from now on.
func (c *Control) Handle(cmd string, h Handler) {
	c.HandleStream(cmd, func(ctx context.Context, arg string, _ func(any) error) any { return h(ctx, arg) })
}

// StreamHandler is a Handler that may answer with lines before its reply:
// each send writes one JSON line at once (progress, say); the reply is the
// last line. Only a client that asked for such lines (in arg) may be sent
// them: it reads them with CallLines.
type StreamHandler func(ctx context.Context, arg string, send func(any) error) any

// HandleStream serves command cmd with h from now on.
func (c *Control) HandleStream(cmd string, h StreamHandler) {
	c.mu.Lock()
	c.handlers[cmd] = h
	c.mu.Unlock()
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
	c := &Control{ln: ln, path: path, handlers: map[string]StreamHandler{}}
	c.ctx, c.cancel = context.WithCancel(context.Background())
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
				cmd, arg, _ := strings.Cut(strings.TrimSpace(line), " ")
				switch cmd {
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
				case "sync":
					enc.Encode(syncReply{Mark: r.RequestSync()})
				case "sync-timeout":
					d, err := time.ParseDuration(arg)
					if err != nil || d <= 0 {
						enc.Encode(map[string]string{"error": "sync-timeout wants a positive duration"})
						return
					}
					r.SetSyncTimeout(d)
					enc.Encode(map[string]bool{"ok": true})
				default:
					c.mu.Lock()
					h := c.handlers[cmd]
					c.mu.Unlock()
					if h == nil {
						enc.Encode(map[string]string{"error": "unknown command"})
						return
					}
					conn.SetDeadline(time.Time{})
					var wmu sync.Mutex
					send := func(v any) error {
						wmu.Lock()
						defer wmu.Unlock()
						return enc.Encode(v)
					}
					var reply any
					if err := r.faults.Protect(cmd, func() error { reply = h(c.ctx, arg, send); return nil }); err != nil {
						reply = map[string]string{"error": err.Error()}
					}
					send(reply)
				}
			}()
		}
	}()
	return c, nil
}

// Close stops serving and removes the socket.
func (c *Control) Close() error {
	c.cancel()
	err := c.ln.Close()
	c.wg.Wait()
	os.Remove(c.path)
	return err
}

// QueryStatus asks the mount serving home for its status.
func QueryStatus(home string) (*Status, error) {
	var st Status
	if err := control(home, "status", &st); err != nil {
		return nil, err
	}
	return &st, nil
}

type syncReply struct {
	Mark  time.Time `json:"mark"`
	Error string    `json:"error,omitempty"`
}

// RequestSync asks the mount serving home for a snapshot of everything
// written so far; the mark it returns is for Status.Covered.
func RequestSync(home string) (time.Time, error) {
	var rep syncReply
	if err := control(home, "sync", &rep); err != nil {
		return time.Time{}, err
	}
	if rep.Error != "" || rep.Mark.IsZero() {
		return time.Time{}, fmt.Errorf("control socket: sync: %s (is the mount older than this fincrypt?)", rep.Error)
	}
	return rep.Mark, nil
}

// SetSyncTimeout tells the mount serving home how long its coming unmount
// may wait for uploads and the final snapshot.
func SetSyncTimeout(home string, d time.Duration) error {
	var rep struct {
		OK    bool   `json:"ok"`
		Error string `json:"error"`
	}
	if err := control(home, "sync-timeout "+d.String(), &rep); err != nil {
		return err
	}
	if !rep.OK {
		return fmt.Errorf("control socket: sync-timeout: %s", rep.Error)
	}
	return nil
}

// control sends one command to the mount serving home and decodes its reply.
func control(home, cmd string, reply any) error { return Call(home, cmd, reply, 30*time.Second) }

// CallLines sends one command to the mount serving home and hands each
// JSON line of its answer to fn until fn says it was the last (the reply),
// waiting at most timeout in all (0: as long as it takes).
func CallLines(home, cmd string, timeout time.Duration, fn func(line json.RawMessage) (last bool, err error)) error {
	conn, err := net.DialTimeout("unix", filepath.Join(home, ControlSocketName), 5*time.Second)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNotRunning, err)
	}
	defer conn.Close()
	if timeout > 0 {
		conn.SetDeadline(time.Now().Add(timeout))
	}
	if _, err := conn.Write([]byte(cmd + "\n")); err != nil {
		return err
	}
	dec := json.NewDecoder(conn)
	for {
		var line json.RawMessage
		if err := dec.Decode(&line); err != nil {
			return fmt.Errorf("control socket reply: %w", err)
		}
		if last, err := fn(line); last || err != nil {
			return err
		}
	}
}

// Call sends one command to the mount serving home and decodes its reply,
// waiting at most timeout (0: as long as it takes).
func Call(home, cmd string, reply any, timeout time.Duration) error {
	return CallLines(home, cmd, timeout, func(line json.RawMessage) (bool, error) {
		if err := json.Unmarshal(line, reply); err != nil {
			return true, fmt.Errorf("control socket reply: %w", err)
		}
		return true, nil
	})
}
