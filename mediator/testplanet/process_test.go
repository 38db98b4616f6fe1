package testplanet_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/fincrypt/fincrypt/internal/pgtest"
	"github.com/fincrypt/fincrypt/internal/testbin"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"

	"github.com/fincrypt/fincrypt/mediator"
	"github.com/fincrypt/fincrypt/mediator/testplanet"
	fnet "github.com/fincrypt/fincrypt/net"
)

// fincryptBin is the binary the real-process tests run, built in TestMain.
var fincryptBin string

// TestMain builds the fincrypt binary, and stops the package's PostgreSQL
// server (if a test started one) after the tests.
func TestMain(m *testing.M) { testbin.Main(pgtest.Wrap(m), &fincryptBin) }

type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// start runs the fincrypt binary with args, logging to dir/name.log, and
// kills it at cleanup (printing the log tail if the test failed).
func start(t *testing.T, dir, name string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, log: filepath.Join(dir, name+".log"), done: make(chan struct{})}
	logf, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(fincryptBin, args...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); logf.Close(); close(p.done) }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			b, _ := os.ReadFile(p.log)
			s := string(b)
			if len(s) > 3000 {
				s = "..." + s[len(s)-3000:]
			}
			t.Logf("%s log:\n%s", name, s)
		}
	})
	return p
}

func waitFile(t *testing.T, p *proc, path string) string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if b, err := os.ReadFile(path); err == nil {
			return strings.TrimSpace(string(b))
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited before writing %s", p.name, path)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not write %s", p.name, path)
		}
	}
}

// statusJSON runs `fincrypt mediator status --json` and returns the raw
// object, so that the test checks the field names scripts rely on.
func statusJSON(t *testing.T, dir string) map[string]any {
	t.Helper()
	out, err := exec.Command(fincryptBin, "mediator", "status", "--dir", dir, "--json").Output()
	if err != nil {
		t.Fatalf("mediator status: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatalf("status output is not JSON: %v\n%s", err, out)
	}
	return m
}

func num(t *testing.T, m map[string]any, k string) float64 {
	t.Helper()
	v, ok := m[k].(float64)
	if !ok {
		t.Fatalf("status JSON: field %q missing or not a number in %v", k, m)
	}
	return v
}

func nodesOf(t *testing.T, m map[string]any) []map[string]any {
	t.Helper()
	list, ok := m["nodes"].([]any)
	if !ok {
		t.Fatalf("status JSON: no nodes list in %v", m)
	}
	var out []map[string]any
	for _, n := range list {
		out = append(out, n.(map[string]any))
	}
	return out
}

func waitStatus(t *testing.T, dir, what string, timeout time.Duration, cond func(map[string]any) bool) map[string]any {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		m := statusJSON(t, dir)
		if cond(m) {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %v", what, m)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestDaemons runs the real binary: a mediator and six storage nodes as
// processes, a client storing two segments, a node killed with SIGKILL and
// its pieces repaired, and `mediator status --json` checked field by field.
func TestDaemons(t *testing.T) {
	dir := t.TempDir()
	mdir := filepath.Join(dir, "mediator")
	med := start(t, dir, "mediator", "--debug", "mediator", "--dir", mdir, "--listen", "127.0.0.1:0",
		"--period", "1s", "--heartbeat", "100ms", "--online-window", "1s", "--offline-after", "3s",
		"--challenge-timeout", "1s", "--repair-threshold", "5")
	maddr := waitFile(t, med, filepath.Join(mdir, mediator.AddressFile))
	payout, _ := btcutil.NewAddressPubKeyHash(bytes.Repeat([]byte{7}, 20), &chaincfg.SimNetParams)
	nodes := map[string]*proc{} // by node id
	for i := 0; i < 6; i++ {
		ndir := filepath.Join(dir, fmt.Sprintf("node%d", i))
		p := start(t, dir, fmt.Sprintf("node%d", i), "storage", "--dir", ndir, "--listen", testplanet.NodeIP(i)+":0", // a network each
			"--mediator", maddr, "--capacity", "64MiB", "--price", fmt.Sprint(1000+i),
			"--payout-address", payout.EncodeAddress(), "--network", "simnet")
		addr, err := fnet.ParseAddress(waitFile(t, p, filepath.Join(ndir, "address")))
		if err != nil {
			t.Fatal(err)
		}
		nodes[addr.ID.String()] = p
	}
	st := waitStatus(t, mdir, "six nodes online", 15*time.Second, func(m map[string]any) bool {
		online := 0
		for _, n := range nodesOf(t, m) {
			if n["online"] == true {
				online++
			}
		}
		return online == 6
	})
	for _, n := range nodesOf(t, st) {
		for _, k := range []string{"capacity", "used", "price", "passed", "failed"} {
			num(t, n, k)
		}
		id, _ := n["id"].(string)
		addr, _ := n["address"].(string)
		if nodes[id] == nil || !strings.HasPrefix(addr, id+"@127.0.") {
			t.Fatalf("status node id %q address %q", id, addr)
		}
		if num(t, n, "capacity") != 64<<20 {
			t.Fatalf("capacity %v", n["capacity"])
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	mAddr, _ := fnet.ParseAddress(maddr)
	cid, _ := fnet.GenerateIdentity()
	client, err := mediator.NewClient(cid, mAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if _, err := client.RegisterAccount(ctx); err != nil {
		t.Fatal(err)
	}
	data := map[fnet.SegmentID][]byte{}
	for i := 0; i < 2; i++ {
		d := randomData(uint64(100+i), segSize)
		seg, err := client.Store(ctx, mediator.DefaultScheme, d)
		if err != nil {
			t.Fatal(err)
		}
		data[seg] = d
	}
	st = waitStatus(t, mdir, "challenges passed", 10*time.Second, func(m map[string]any) bool {
		var passed float64
		for _, n := range nodesOf(t, m) {
			passed += num(t, n, "passed")
		}
		return passed >= 10
	})
	if num(t, st, "segments") != 2 || num(t, st, "pieces") != 10 || num(t, st, "healthy") != 10 ||
		num(t, st, "lost") != 0 || num(t, st, "repaired") != 0 {
		t.Fatalf("status: %v", st)
	}

	// Kill a node that holds pieces, for good.
	var first fnet.SegmentID
	for s := range data {
		first = s
		break
	}
	info, err := client.Segment(ctx, first)
	if err != nil {
		t.Fatal(err)
	}
	victim := info.Pieces[0].Target.Ticket.Node
	held := 0
	for s := range data {
		info, _ := client.Segment(ctx, s)
		for _, pc := range info.Pieces {
			if pc.Target.Ticket.Node == victim {
				held++
			}
		}
	}
	nodes[victim.String()].cmd.Process.Signal(syscall.SIGKILL)
	st = waitStatus(t, mdir, "repair of the dead node's pieces", 20*time.Second, func(m map[string]any) bool {
		return num(t, m, "repaired") >= float64(held) && num(t, m, "healthy") == 10
	})
	if num(t, st, "repaired") != float64(held) || num(t, st, "lost") != 0 {
		t.Fatalf("after repair: %v", st)
	}
	for s, d := range data {
		info, err := client.Segment(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		for _, pc := range info.Pieces {
			if !pc.Healthy || pc.Target.Ticket.Node == victim {
				t.Fatalf("segment still relies on the dead node: %+v", pc)
			}
		}
		got, err := client.Fetch(ctx, s, len(d))
		if err != nil || !bytes.Equal(got, d) {
			t.Fatalf("fetch after repair: %v", err)
		}
	}

	// SIGTERM stops the mediator cleanly; status then says it is not running.
	med.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-med.done:
	case <-time.After(10 * time.Second):
		t.Fatal("mediator did not stop on SIGTERM")
	}
	if code := med.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("mediator exit code %d", code)
	}
	err = exec.Command(fincryptBin, "mediator", "status", "--dir", mdir).Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 4 {
		t.Fatalf("status without a mediator: %v", err)
	}
}
