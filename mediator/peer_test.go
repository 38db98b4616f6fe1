package mediator

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	fnet "github.com/fincrypt/fincrypt/net"
)

func TestPeerLifecycle(t *testing.T) {
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := Config{Dir: dir, Listen: "127.0.0.1:0", Period: 200 * time.Millisecond}
	p, err := New(log, nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, AddressFile))
	if err != nil {
		t.Fatal(err)
	}
	addr, err := fnet.ParseAddress(strings.TrimSpace(string(b)))
	if err != nil || addr != p.Address() {
		t.Fatalf("address file %q: %v", b, err)
	}

	// A second mediator on the same directory is refused, with a reason.
	if _, err := New(log, nil, cfg); !errors.Is(err, ErrLocked) {
		t.Fatalf("second mediator on one directory: %v", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	var st *Status
	for {
		st, err = ReadStatus(context.Background(), dir)
		if err == nil && st.Rounds >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status: %+v %v", st, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st.Mediator != addr.String() || st.Scheme != "2/5" {
		t.Fatalf("status: %+v", st)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadStatus(context.Background(), dir); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("status after close: %v", err)
	}

	// Restarted on the same directory: same identity, rounds kept.
	p2, err := New(log, nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Close()
	if p2.Identity.ID() != addr.ID {
		t.Fatal("identity changed across a restart")
	}
	st2, err := p2.Status(context.Background())
	if err != nil || st2.Rounds != st.Rounds && st2.Rounds != st.Rounds+1 {
		t.Fatalf("rounds after restart: %+v %v (before %d)", st2, err, st.Rounds)
	}

	// Bad configurations are refused before anything is created.
	bad := cfg
	bad.Dir = filepath.Join(t.TempDir(), "never")
	bad.RepairThreshold = 9
	if _, err := New(log, nil, bad); !errors.Is(err, ErrConfig) {
		t.Fatalf("bad config: %v", err)
	}
	if _, err := os.Stat(bad.Dir); !os.IsNotExist(err) {
		t.Fatal("a refused configuration created its directory")
	}
}
