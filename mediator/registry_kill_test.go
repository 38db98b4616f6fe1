package mediator

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	fnet "github.com/fincrypt/fincrypt/net"
)

// TestRegisterAndHeartbeatAnswerThePolicy: a registration (new or again)
// answers the mediator's node policy, not an empty one.
func TestRegisterAndHeartbeatAnswerThePolicy(t *testing.T) {
	w := newWorld(t, 0)
	id := w.addNode("10.0.0.1:7000", 100)
	want := w.c.policy()
	if want.HeartbeatInterval == 0 || want.GracePeriod == 0 || want.GCInterval == 0 {
		t.Fatalf("policy %+v has zero fields", want)
	}
	req := &fnet.RegisterRequest{Node: id.ID(), Address: w.addrs[0], Price: 100, Capacity: 1 << 30, PayoutAddress: "payout-10.0.0.1:7000"}
	got, err := w.c.Register(fromHost("10.0.0.1:7000"), id.ID(), req)
	if err != nil || got != want {
		t.Fatalf("register again: %+v %v, want %+v", got, err, want)
	}
	hb, err := w.c.Heartbeat(fromHost("10.0.0.1:7000"), id.ID(), &fnet.Heartbeat{Capacity: 1 << 30})
	if err != nil || hb != want {
		t.Fatalf("heartbeat: %+v %v, want %+v", hb, err, want)
	}
}

// TestNewUsesTheLoggerItIsGiven: New logs to the logger passed to it,
// else to the configuration's.
func TestNewUsesTheLoggerItIsGiven(t *testing.T) {
	var given, configured bytes.Buffer
	cfg := Config{Dir: t.TempDir(), Listen: "127.0.0.1:0", Logger: slog.New(slog.NewTextHandler(&configured, nil))}
	p, err := New(slog.New(slog.NewTextHandler(&given, nil)), nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	p.Log.Info("marker")
	p.Close()
	if !strings.Contains(given.String(), "marker") || strings.Contains(configured.String(), "marker") {
		t.Errorf("New with a logger: given %q, configured %q", given.String(), configured.String())
	}
	given.Reset()
	cfg.Dir = t.TempDir()
	p, err = New(nil, nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	p.Log.Info("marker")
	p.Close()
	if !strings.Contains(configured.String(), "marker") {
		t.Errorf("New without a logger: configured %q", configured.String())
	}
}
