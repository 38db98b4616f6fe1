// Package metrics serves a daemon's Prometheus metrics (/metrics) and its
// read-only status page (/) on one HTTP listener (--metrics-listen).
//
// Each daemon builds its own prometheus.Registry (never the global
// default, so that several daemons in one process, as in tests and the
// devnet, do not collide) and registers collectors that read the daemon's
// existing state at scrape time; counters and histograms are kept only
// where an event has no state to read back (an upload, a challenge round).
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Namespace prefixes every Fincrypt metric.
const Namespace = "fincrypt"

// ErrNotLoopback is returned for a listen address that is not loopback
// when public listening was not asked for.
var ErrNotLoopback = errors.New("not a loopback address")

// NewRegistry returns a registry with the Go runtime and process collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// CheckAddr checks a --metrics-listen address: HOST:PORT whose host is a
// loopback IP or "localhost", unless public is set.
func CheckAddr(addr string, public bool) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("metrics address %q: want HOST:PORT (e.g. 127.0.0.1:9100): %w", addr, err)
	}
	if public {
		return nil
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("metrics address %q: %w: the metrics and status page show the daemon's state to anyone "+
			"who can connect; use 127.0.0.1 (or ::1), or say --metrics-public", addr, ErrNotLoopback)
	}
	return nil
}

// PageFunc renders the current status page (nil: no page, / answers 404).
type PageFunc func(ctx context.Context) (*Page, error)

// Options configures a Server.
type Options struct {
	Addr     string // HOST:PORT; port 0 picks a free one
	Public   bool   // allow a non-loopback address
	Registry *prometheus.Registry
	Page     PageFunc
	Logger   *slog.Logger
}

// Server is the metrics and status listener.
type Server struct {
	ln  net.Listener
	srv *http.Server
	log *slog.Logger
}

// Listen checks the address, binds it and returns a server ready to Serve.
func Listen(o Options) (*Server, error) {
	if err := CheckAddr(o.Addr, o.Public); err != nil {
		return nil, err
	}
	if o.Registry == nil {
		return nil, errors.New("metrics: no registry")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", o.Addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(o.Registry, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(o.Logger.Handler(), slog.LevelWarn), ErrorHandling: promhttp.ContinueOnError,
		Registry: o.Registry, // promhttp_metric_handler_errors_total
	}))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		if o.Page == nil {
			http.NotFound(w, r)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 20*time.Second)
		defer cancel()
		p, err := o.Page(ctx)
		if err != nil {
			o.Logger.Warn("status page", "err", err)
			p = &Page{Title: "Fincrypt", Errors: []string{"The status is not available: " + err.Error()}}
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		if err := p.Render(w); err != nil {
			o.Logger.Warn("status page", "err", err)
		}
	})
	s := &Server{ln: ln, log: o.Logger,
		srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: time.Minute}}
	return s, nil
}

// Addr is the bound address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// URL is http://ADDR/.
func (s *Server) URL() string { return "http://" + s.ln.Addr().String() + "/" }

// Serve serves until ctx is done.
func (s *Server) Serve(ctx context.Context) error {
	s.log.Info("serving metrics and status page", "url", s.URL())
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.srv.Shutdown(sctx)
		<-errc
		return nil
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("metrics: %w", err)
	}
}

// Close stops the server at once.
func (s *Server) Close() error { return s.srv.Close() }

// Start listens and serves in the background until the returned stop is
// called (daemons whose main loop is elsewhere: the mount).
func Start(o Options) (srv *Server, stop func(), err error) {
	srv, err = Listen(o)
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ctx) }()
	return srv, func() { cancel(); <-done }, nil
}
