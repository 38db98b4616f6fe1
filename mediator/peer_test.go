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

	"github.com/fincrypt/fincrypt/challenge"
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
	deadline := time.Now().Add(30 * time.Second) // two rounds of 200 ms; generous for -race on a busy machine
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
	if err != nil || st2.Rounds < st.Rounds {
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

// TestEndpointRefusesBadInput sends the mediator malformed frames and
// requests it must refuse, and checks that it keeps serving and changed
// nothing.
func TestEndpointRefusesBadInput(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	p, err := New(log, nil, Config{Dir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() { cancel(); <-done; p.Close() }()

	id, _ := fnet.GenerateIdentity()
	tr, err := fnet.NewDialer(id, fnet.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	conn, err := tr.Dial(ctx, p.Address())
	if err != nil {
		t.Fatal(err)
	}
	raw := func(b []byte) error {
		s, err := conn.OpenStream(ctx)
		if err != nil {
			return err
		}
		s.Write(b)
		s.Close()
		m, err := fnet.ReadAnyMessage(s)
		if err != nil {
			return err
		}
		if e, ok := m.(*fnet.ErrorReply); ok {
			return &fnet.RemoteError{Code: e.Code, Message: e.Message}
		}
		return nil
	}
	for name, frame := range map[string][]byte{
		"garbage":       []byte("hello mediator"),
		"wrong version": {9, byte(fnet.TypeAccountRequest), 0, 0, 0, 0},
		"oversized":     {fnet.Version, byte(fnet.TypePlacementRequest), 0xff, 0xff, 0xff, 0xff},
		"truncated":     {fnet.Version, byte(fnet.TypeCommitRequest), 0, 0, 0, 40, 1, 2, 3},
	} {
		if err := raw(frame); !errors.Is(err, fnet.ErrBadRequest) {
			t.Errorf("%s: %v", name, err)
		}
	}
	calls := []struct {
		name string
		req  fnet.Message
		want error
	}{
		{"a challenge sent to the mediator", &fnet.ChallengeRequest{Openings: 1}, fnet.ErrUnsupported},
		{"registration for another node", &fnet.RegisterRequest{Node: fnet.NodeID{1}, Address: "x"}, fnet.ErrUnauthorized},
		{"registration with a bad address", &fnet.RegisterRequest{Node: id.ID(), Address: "nowhere"}, fnet.ErrBadRequest},
		{"heartbeat before registering", &fnet.Heartbeat{}, fnet.ErrNotRegistered},
		{"placement before the account exists", &fnet.PlacementRequest{N: 5, K: 2, PieceSize: 1, Pieces: make([]challenge.PieceID, 5)}, fnet.ErrUnauthorized},
		{"commit of nothing", &fnet.CommitRequest{}, fnet.ErrNotFound},
		{"release of nothing", &fnet.ReleaseRequest{}, fnet.ErrNotFound},
	}
	for _, c := range calls {
		if _, err := conn.CallAny(ctx, c.req); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	// Still serving; nothing was recorded.
	rep, err := fnet.CallAnyFor[*fnet.AccountReply](ctx, conn, &fnet.AccountRequest{})
	if err != nil || !rep.Created {
		t.Fatalf("account after bad input: %+v %v", rep, err)
	}
	st, err := p.Status(ctx)
	if err != nil || len(st.Nodes) != 0 || st.Segments != 0 {
		t.Fatalf("state after bad input: %+v %v", st, err)
	}
}
