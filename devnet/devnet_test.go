package devnet

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestSchemeFor(t *testing.T) {
	for n, want := range map[int]string{5: "2/4", 8: "2/4", 4: "1/3", 3: "1/2", 2: "1/2"} {
		s, thr := SchemeFor(n)
		if s.String() != want || thr != s.N || s.CheckExpansion() != nil {
			t.Errorf("%d nodes: %s threshold %d, want %s", n, s, thr, want)
		}
	}
	if s, thr := SchemeFor(DefaultNodes); s != DefaultScheme || thr != DefaultRepairThreshold {
		t.Fatalf("default: %s/%d", s, thr)
	}
}

// runNet starts a devnet without bitcoin, waits for every node online and
// returns the mediator address and the online node ids; cleanup stops it.
func runNet(t *testing.T, dir string) (string, []string, func()) {
	t.Helper()
	n, err := Start(Config{Dir: dir, Nodes: 3, Period: time.Second, NoBitcoin: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	stop := func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
		if err := n.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	}
	var ids []string
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, err := n.Mediator.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		ids = ids[:0]
		for _, nd := range st.Nodes {
			if nd.Online {
				ids = append(ids, nd.ID)
			}
		}
		if len(ids) == 3 {
			break
		}
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("%d nodes online after 20s", len(ids))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := n.Fund("x", 1); !errors.Is(err, ErrNoBitcoin) {
		t.Errorf("fund without bitcoin: %v", err)
	}
	if _, err := Fund(context.Background(), dir, "x", 1); !errors.Is(err, ErrNoBitcoin) {
		t.Errorf("fund over the socket without bitcoin: %v", err)
	}
	addr, err := os.ReadFile(filepath.Join(dir, AddressFile))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(ids)
	return strings.TrimSpace(string(addr)), ids, stop
}

func TestDevnetRestartResumes(t *testing.T) {
	dir := t.TempDir()
	addr, ids, stop := runNet(t, dir)
	if _, err := Start(Config{Dir: dir, Nodes: 3, NoBitcoin: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}); !errors.Is(err, ErrRunning) {
		t.Fatalf("a second devnet on the same directory: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, AddressFile)); err != nil {
		t.Fatalf("the second devnet touched the first one's files: %v", err)
	}
	stop()
	if _, err := os.Stat(filepath.Join(dir, ControlSock)); err == nil {
		t.Fatal("control socket left behind")
	}
	addr2, ids2, stop2 := runNet(t, dir)
	defer stop2()
	if addr2 != addr || !slices.Equal(ids, ids2) {
		t.Fatalf("restart: mediator %s nodes %v, before %s %v", addr2, ids2, addr, ids)
	}
	for _, f := range []string{"devnet.log", "mediator.log", "node-1.log", "node-3.log"} {
		if fi, err := os.Stat(filepath.Join(dir, LogsDir, f)); err != nil || fi.Size() == 0 {
			t.Errorf("log %s: %v", f, err)
		}
	}
}
