package stress_test

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"

	"github.com/fincrypt/fincrypt/internal/fsutil"
	"github.com/fincrypt/fincrypt/internal/testbin"
	"github.com/fincrypt/fincrypt/mediator"
	"github.com/fincrypt/fincrypt/meta"
	fnet "github.com/fincrypt/fincrypt/net"
	"github.com/fincrypt/fincrypt/vault"
)

// bin is the fincrypt binary the tests run: mounts, storage nodes and the
// mediator are real processes, so that each can be killed with SIGKILL.
var bin string

func TestMain(m *testing.M) {
	// Modes at create are compared with the oracle's exactly.
	syscall.Umask(0)
	testbin.Main(m, &bin)
}

const password = "stress test password"

func requireFUSE(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: the stress suite mounts FUSE with mount(2), which needs root (CI runs as root)")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("skipping: /dev/fuse is missing: %v", err)
	}
}

// run runs the binary to completion (bounded) and returns its output.
func run(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("fincrypt %s: %w\n%s%s", strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String(), nil
}

// daemon is a long-running fincrypt process that can be killed and started
// again on the same directory and port.
type daemon struct {
	t        *testing.T
	name     string
	dir      string // its --dir, where it writes "address"
	logDir   string
	args     []string
	ip       string // where it listens (empty: 127.0.0.1)
	hostport string // kept across restarts
	id       string
	cmd      *exec.Cmd
	done     chan struct{}
	starts   int
}

func (d *daemon) running() bool {
	if d.done == nil {
		return false
	}
	select {
	case <-d.done:
		return false
	default:
		return true
	}
}

// start starts the daemon and waits until it listens; it fails the test
// (from the test's goroutine only: others use tryStart).
func (d *daemon) start() {
	d.t.Helper()
	if err := d.tryStart(); err != nil {
		d.t.Fatal(err)
	}
}

func (d *daemon) tryStart() error {
	// The first start takes a port the kernel does not hand out for port
	// 0, and restarts keep it: chaos restarts a daemon up to 1.6 s after
	// killing it, and meanwhile any socket binding port 0 could have taken
	// an ephemeral one.
	listen := d.hostport
	if listen == "" {
		ip := cmp.Or(d.ip, "127.0.0.1")
		listen = net.JoinHostPort(ip, testbin.Port(ip))
	}
	addrFile := filepath.Join(d.dir, "address")
	os.Remove(addrFile)
	d.starts++
	logf, err := os.OpenFile(filepath.Join(d.logDir, d.name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(logf, "=== start %d at %s\n", d.starts, time.Now().Format(time.RFC3339Nano))
	d.cmd = exec.Command(bin, append(append([]string{}, d.args...), "--listen", listen)...)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	if err := d.cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	d.done = done
	go func() { d.cmd.Wait(); logf.Close(); close(done) }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		b, err := os.ReadFile(addrFile)
		if err == nil && len(bytes.TrimSpace(b)) > 0 {
			id, hp, ok := strings.Cut(strings.TrimSpace(string(b)), "@")
			if !ok {
				return fmt.Errorf("%s: address %q", d.name, b)
			}
			d.id, d.hostport = id, hp
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("%s exited at start %d; see %s", d.name, d.starts, filepath.Join(d.logDir, d.name+".log"))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not write its address", d.name)
		}
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (d *daemon) kill() {
	if !d.running() {
		return
	}
	d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.done
}

// stop sends SIGTERM and waits (bounded) for a clean exit.
func (d *daemon) stop() {
	if !d.running() {
		return
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(60 * time.Second):
		d.t.Errorf("%s did not exit within 60s of SIGTERM; killing it", d.name)
		d.kill()
	}
}

func (d *daemon) address() string { return d.id + "@" + d.hostport }

// network is a mediator and storage nodes, each its own process, with a
// fast period and the devnet's scheme 2/4 over five nodes.
type network struct {
	t     *testing.T
	dir   string
	med   *daemon
	nodes []*daemon
	mu    sync.Mutex // serialises kills and restarts
}

func newNetwork(t *testing.T, dir string, nodes int) *network {
	t.Helper()
	n := &network{t: t, dir: dir}
	mdir := filepath.Join(dir, "mediator")
	n.med = &daemon{t: t, name: "mediator", dir: mdir, logDir: dir, args: []string{"mediator", "--dir", mdir,
		"--period", "2s", "--heartbeat", "200ms", "--online-window", "2s", "--offline-after", "30s",
		"--challenge-timeout", "2s", "--scheme", "2/4", "--repair-threshold", "4", "--network", "simnet"}}
	n.med.start()
	payout, _ := btcutil.NewAddressPubKeyHash(bytes.Repeat([]byte{7}, 20), &chaincfg.SimNetParams)
	for i := 0; i < nodes; i++ {
		ndir := filepath.Join(dir, fmt.Sprintf("node%d", i))
		d := &daemon{t: t, name: fmt.Sprintf("node%d", i), dir: ndir, logDir: dir, ip: fmt.Sprintf("127.0.%d.1", i+1), // a network each
			args: []string{"storage", "--dir", ndir,
				"--mediator", n.med.address(), "--capacity", "4GiB", "--price", fmt.Sprint(1000 + i),
				"--payout-address", payout.EncodeAddress(), "--network", "simnet"}}
		d.start()
		n.nodes = append(n.nodes, d)
	}
	t.Cleanup(func() {
		for _, d := range n.nodes {
			d.kill()
		}
		n.med.kill()
	})
	n.waitOnline(nodes)
	return n
}

func (n *network) status() (*mediator.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return mediator.ReadStatus(ctx, n.med.dir)
}

// waitOnline waits until want nodes are online at a running mediator.
func (n *network) waitOnline(want int) {
	n.t.Helper()
	waitFor(n.t, fmt.Sprintf("%d nodes online", want), 2*time.Minute, func() (bool, string) {
		st, err := n.status()
		if err != nil {
			return false, err.Error()
		}
		on := 0
		for _, x := range st.Nodes {
			if x.Online {
				on++
			}
		}
		return on >= want, fmt.Sprintf("%d online", on)
	})
}

// allUp restarts whatever chaos left stopped and waits for every node.
func (n *network) allUp() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.med.running() {
		n.med.start()
	}
	for _, d := range n.nodes {
		if !d.running() {
			d.start()
		}
	}
	n.waitOnline(len(n.nodes))
}

// accountSegments reads, with the mediator stopped, the ids of the
// segments the mediator holds for an account; it starts it again after.
func (n *network) accountSegments(acct string) map[string]bool {
	n.t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	n.med.stop()
	defer func() { n.med.start(); n.waitOnline(len(n.nodes)) }()
	store, err := mediator.OpenPebbleStore(filepath.Join(n.med.dir, "db"), mediator.PebbleOptions{})
	if err != nil {
		n.t.Fatal(err)
	}
	defer store.Close()
	out := map[string]bool{}
	err = store.Segments(context.Background(), mediator.SegmentID{}, 0, func(s *mediator.Segment) error {
		if fnet.NodeID(s.Account).String() == acct {
			out[fmt.Sprintf("%x", s.ID[:])] = true
		}
		return nil
	})
	if err != nil {
		n.t.Fatal(err)
	}
	return out
}

func waitFor(t *testing.T, what string, limit time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached after %v; last state: %s", what, limit, state)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// client is a vault home with its mount (a background `fincrypt mount`).
type client struct {
	t       *testing.T
	home    string
	mnt     string
	pwFile  string
	net     *network // nil: local only
	acct    string
	mounted bool
}

func newClient(t *testing.T, dir string, net *network, chunkSize string) *client {
	t.Helper()
	c := &client{t: t, home: filepath.Join(dir, "home"), mnt: filepath.Join(dir, "mnt"), net: net,
		pwFile: filepath.Join(dir, "password")}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.pwFile, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"--home", c.home, "init", "--password-file", c.pwFile, "--chunk-size", chunkSize}
	if net != nil {
		args = append(args, "--mediator", net.med.address())
	}
	if _, err := run(args...); err != nil {
		t.Fatal(err)
	}
	if net != nil {
		out, err := run("--home", c.home, "account")
		if err != nil {
			t.Fatal(err)
		}
		c.acct = strings.TrimSpace(out)
	}
	t.Cleanup(func() {
		if pid := c.pid(); pid > 0 {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		if fsutil.IsMountPoint(c.mnt) {
			syscall.Unmount(c.mnt, syscall.MNT_DETACH)
		}
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(c.home, "mount.log"))
			if len(b) > 6000 {
				b = b[len(b)-6000:]
			}
			t.Logf("%s/mount.log (tail):\n%s", c.home, b)
		}
	})
	return c
}

func (c *client) mount() {
	c.t.Helper()
	args := []string{"--home", c.home, "mount", "--password-file", c.pwFile}
	if c.net != nil {
		args = append(args, "--cache-size", "1", "--flush-after", "200ms", "--snapshot-interval", "500ms")
	}
	if _, err := run(append(args, c.mnt)...); err != nil {
		b, _ := os.ReadFile(filepath.Join(c.home, "mount.log"))
		c.t.Fatalf("%v\nmount.log:\n%s", err, b)
	}
	c.mounted = true
}

func (c *client) umount() {
	c.t.Helper()
	var err error
	for i := 0; i < 50; i++ { // a file closed just now may keep the mount busy a moment
		if _, err = run("umount", c.mnt); err == nil {
			c.mounted = false
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	c.t.Fatal(err)
}

// pid is the serving mount process, or 0.
func (c *client) pid() int {
	b, err := os.ReadFile(filepath.Join(c.home, "mount.pid"))
	if err != nil {
		return 0
	}
	var pid int
	fmt.Sscan(string(b), &pid)
	return pid
}

// kill9 kills the mount process with SIGKILL and detaches the dead mount.
func (c *client) kill9() {
	c.t.Helper()
	pid := c.pid()
	if pid <= 0 {
		c.t.Error("no mount.pid: the mount is not running")
		return
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		c.t.Error(err)
		return
	}
	waitFor(c.t, "the killed mount process gone", 30*time.Second, func() (bool, string) {
		return syscall.Kill(pid, 0) != nil, fmt.Sprintf("pid %d alive", pid)
	})
}

// detach removes the dead mount once nothing uses it any more.
func (c *client) detach() {
	c.t.Helper()
	if err := syscall.Unmount(c.mnt, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
		c.t.Fatalf("detaching the dead mount: %v", err)
	}
	c.mounted = false
}

// check runs `fincrypt check` (the vault unmounted) and fails on problems.
func (c *client) check(what string) {
	c.t.Helper()
	out, err := run("--home", c.home, "check", "--password-file", c.pwFile)
	if err != nil {
		c.t.Fatalf("check %s: %v", what, err)
	}
	c.t.Logf("check %s: %s", what, strings.ReplaceAll(strings.TrimSpace(out), "\n", "; "))
}

type clientStatus struct {
	PendingBytes  uint64     `json:"pending_bytes"`
	PendingChunks int        `json:"pending_chunks"`
	Unsaved       int        `json:"unsaved_open_files"`
	Restorable    bool       `json:"restorable"`
	Durable       int        `json:"segments_durable"`
	Degraded      int        `json:"segments_degraded"`
	CacheBytes    uint64     `json:"cache_bytes"`
	LastSync      *time.Time `json:"last_sync"`
	LastSnapshot  *time.Time `json:"last_snapshot"`
	Errors        []string   `json:"errors"`
}

func (c *client) status() (*clientStatus, string, error) {
	out, err := run("--home", c.home, "status", "--json")
	if err != nil {
		return nil, "", err
	}
	var st clientStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return nil, out, fmt.Errorf("status --json: %v", err)
	}
	return &st, out, nil
}

// waitSynced waits until nothing is pending, no open file holds writes
// the index does not have (close(2) returns before the mount's RELEASE
// commits them), and a stored snapshot covers everything and is newer
// than the last upload: then a restore sees everything.
func (c *client) waitSynced(limit time.Duration) {
	c.t.Helper()
	waitFor(c.t, "synced (nothing pending, restorable, a snapshot after the last upload)", limit, func() (bool, string) {
		st, raw, err := c.status()
		if err != nil {
			return false, err.Error()
		}
		return st.PendingChunks == 0 && st.PendingBytes == 0 && st.Unsaved == 0 && st.Restorable &&
			st.LastSync != nil && st.LastSnapshot != nil && st.LastSnapshot.After(*st.LastSync), raw
	})
}

// indexSegments lists the segment ids of the client's index (unmounted).
func (c *client) indexSegments() map[string]bool {
	c.t.Helper()
	v, err := vault.Open(c.home, []byte(password), vault.OpenOptions{Lock: true})
	if err != nil {
		c.t.Fatal(err)
	}
	defer v.Close()
	idx, err := meta.Open(v.IndexDir(), v.Keys, meta.Options{ReadOnly: true})
	if err != nil {
		c.t.Fatal(err)
	}
	defer idx.Close()
	out := map[string]bool{}
	if err := idx.Segments(func(s meta.Segment) error {
		out[fmt.Sprintf("%x", s.ID[:])] = true
		return nil
	}); err != nil {
		c.t.Fatal(err)
	}
	return out
}

// checkLog fails the test on any fault the mount survived only by
// containing it (a panic in background work is logged with its stack and
// retried; a test must still see it) and lists the errors it logged.
func (c *client) checkLog() {
	c.t.Helper()
	b, err := os.ReadFile(filepath.Join(c.home, "mount.log"))
	if err != nil {
		c.t.Fatal(err)
	}
	var errs []string
	seen := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, "panic") || strings.Contains(line, "fatal error") || strings.Contains(line, "internal error") {
			c.t.Fatalf("%s/mount.log: a fault in the mount: %s", c.home, line)
		}
		if strings.Contains(line, "level=ERROR") {
			msg := line
			if i := strings.Index(line, "msg="); i >= 0 {
				msg = line[i:]
			}
			if !seen[msg] && len(errs) < 5 {
				errs = append(errs, msg)
			}
			seen[msg] = true
		}
	}
	if len(errs) > 0 {
		c.t.Logf("%s/mount.log: %d distinct errors logged, e.g.:\n%s", c.home, len(seen), strings.Join(errs, "\n"))
	}
}

// restore restores the client's account into a fresh home under dir.
func (c *client) restore(dir string) *client {
	c.t.Helper()
	r := &client{t: c.t, home: filepath.Join(dir, "home"), mnt: filepath.Join(dir, "mnt"), net: c.net, pwFile: c.pwFile, acct: c.acct}
	if _, err := run("--home", r.home, "restore", "--mediator", c.net.med.address(), "--account", c.acct, "--password-file", c.pwFile); err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() {
		if pid := r.pid(); pid > 0 {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		if fsutil.IsMountPoint(r.mnt) {
			syscall.Unmount(r.mnt, syscall.MNT_DETACH)
		}
	})
	return r
}
