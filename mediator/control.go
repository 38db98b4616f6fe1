package mediator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	stdnet "net"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// ControlSocket is the name of the control socket in the mediator's
// directory. It speaks HTTP: GET /status returns the Status as JSON. Only
// processes that can open DIR (mode 0700) reach it.
const ControlSocket = "control.sock"

// ErrNotRunning means no mediator answers on the control socket.
var ErrNotRunning = errors.New("no mediator is running in this directory")

type controlServer struct {
	ln  stdnet.Listener
	srv *http.Server
}

func listenControl(dir string, status func(context.Context) (*Status, error), more func(*http.ServeMux)) (*controlServer, error) {
	path := filepath.Join(dir, ControlSocket)
	if len(path) >= 104 {
		return nil, fmt.Errorf("control socket %s: path longer than a unix socket allows (103 bytes); use a shorter --dir", path)
	}
	// A socket left by a mediator that died is removed; a live one
	// answers, and then this mediator must not start.
	if c, err := stdnet.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("control socket %s: another mediator is running", path)
	}
	os.Remove(path)
	ln, err := stdnet.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		st, err := status(r.Context())
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(st)
	})
	if more != nil {
		more(mux)
	}
	return &controlServer{ln: ln, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}}, nil
}

func (s *controlServer) run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s.srv.Shutdown(sctx)
	})
	defer stop()
	if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("control socket: %w", err)
	}
	return nil
}

func (s *controlServer) close() error {
	err := s.srv.Close()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	s.ln.Close()
	return err
}

// ReadStatus asks the mediator running in dir for its status.
func ReadStatus(ctx context.Context, dir string) (*Status, error) {
	path := filepath.Join(dir, ControlSocket)
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (stdnet.Conn, error) {
			var d stdnet.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://mediator/status", nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w (%s): %v", ErrNotRunning, dir, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("mediator status: %s: %s", resp.Status, body)
	}
	st := &Status{}
	if err := json.Unmarshal(body, st); err != nil {
		return nil, fmt.Errorf("mediator status: %w", err)
	}
	return st, nil
}
