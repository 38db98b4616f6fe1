package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"

	"github.com/fincrypt/fincrypt/internal/metrics/metricstest"
)

// metricsURL waits for the daemon's JSON log line that says where its
// metrics listener is, and checks that every line of the log so far is a
// JSON record.
func metricsURL(t *testing.T, logPath string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, _ := os.ReadFile(logPath)
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if l == "" {
				continue
			}
			var rec map[string]any
			if err := json.Unmarshal([]byte(l), &rec); err != nil {
				t.Fatalf("%s: not a JSON log line: %q", logPath, l)
			}
			if rec["msg"] == "serving metrics and status page" {
				return rec["url"].(string)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no metrics listener after 30s:\n%s", logPath, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestDaemonMetrics runs a mediator and a storage node as real processes
// with --metrics-listen 127.0.0.1:0 and --log-format json: the metrics
// follow the network (the node registers, rounds run), the pages are valid
// HTML, every log line is JSON; a public address without --metrics-public
// and an unknown log format are usage errors.
func TestDaemonMetrics(t *testing.T) {
	dir := t.TempDir()
	mdir, ndir := filepath.Join(dir, "mediator"), filepath.Join(dir, "node")
	daemon(t, dir, "mediator", "mediator", "--dir", mdir, "--listen", "127.0.0.1:0", "--period", "1s", "--heartbeat", "200ms",
		"--challenge-timeout", "500ms", "--metrics-listen", "127.0.0.1:0", "--log-format", "json")
	maddr := waitForFile(t, filepath.Join(mdir, "address"))
	medURL := metricsURL(t, filepath.Join(dir, "mediator.log"))
	payout, _ := btcutil.NewAddressPubKeyHash(bytes.Repeat([]byte{7}, 20), &chaincfg.SimNetParams)
	nodeArgs := []string{"storage", "--dir", ndir, "--listen", "127.0.0.1:0", "--mediator", maddr, "--capacity", "64MiB",
		"--price", "1234", "--payout-address", payout.EncodeAddress(), "--network", "simnet"}
	daemon(t, dir, "node", append(nodeArgs, "--metrics-listen", "127.0.0.1:0", "--log-format", "json")...)
	nodeURL := metricsURL(t, filepath.Join(dir, "node.log"))

	var rounds float64
	waitFor(t, "the node online and rounds counted", 60*time.Second, func() (bool, string) {
		m, _ := metricstest.Scrape(t, medURL)
		online := m.Must(t, "fincrypt_mediator_nodes", "state", "online")
		rounds = m.Must(t, "fincrypt_mediator_challenge_rounds_total")
		return online == 1 && rounds >= 1, fmt.Sprintf("%v nodes online, %v rounds", online, rounds)
	})
	waitFor(t, "more rounds", 60*time.Second, func() (bool, string) {
		m, _ := metricstest.Scrape(t, medURL)
		return m.Must(t, "fincrypt_mediator_challenge_rounds_total") > rounds, "rounds not growing"
	})
	nm, _ := metricstest.Scrape(t, nodeURL)
	if v := nm.Must(t, "fincrypt_node_capacity_bytes"); v != 64<<20 {
		t.Errorf("node capacity %v, want 64MiB", v)
	}
	if v := nm.Must(t, "fincrypt_node_price_sats_per_gib_month"); v != 1234 {
		t.Errorf("node price %v, want 1234", v)
	}
	for what, u := range map[string]string{"mediator": medURL, "node": nodeURL} {
		page := metricstest.Get(t, u)
		if err := metricstest.ValidHTML(page); err != nil {
			t.Errorf("%s page: %v", what, err)
		}
	}
	if page := string(metricstest.Get(t, medURL)); !strings.Contains(page, "Storage nodes") || !strings.Contains(page, "127.0.0.1") {
		t.Errorf("mediator page lacks the nodes table:\n%s", page)
	}
	for _, name := range []string{"mediator", "node"} {
		metricsURL(t, filepath.Join(dir, name+".log")) // every line JSON, now with the rounds' lines
	}

	// Usage errors, before anything starts.
	assertUserError(t, fincrypt(t, nil, append(nodeArgs[:len(nodeArgs):len(nodeArgs)], "--metrics-listen", "0.0.0.0:9100")...),
		exitUsage, "--metrics-public")
	assertUserError(t, fincrypt(t, nil, "mediator", "--dir", filepath.Join(dir, "m2"), "--metrics-listen", "192.0.2.1:9100"),
		exitUsage, "loopback")
	assertUserError(t, fincrypt(t, nil, "mediator", "--dir", filepath.Join(dir, "m3"), "--log-format", "xml"), exitUsage, "text or json")
}

// TestMountMetricsPrivacy mounts in the background with --metrics-listen
// and --log-format json (and --debug): the FUSE requests show in the
// metrics; the page is valid HTML; the log is JSON; and neither the log,
// the metrics nor the page names a file or shows its content.
func TestMountMetricsPrivacy(t *testing.T) {
	needFUSE(t)
	base := t.TempDir()
	v := newInitVault(t, base)
	const maxInodes = 16
	if r := fincrypt(t, nil, "--home", v.home, "--debug", "mount", "--password-file", v.pw, "--metrics-listen", "127.0.0.1:0",
		"--log-format", "json", "--max-inodes", fmt.Sprint(maxInodes), v.mnt); r.code != 0 {
		log, _ := os.ReadFile(filepath.Join(v.home, mountLogName))
		t.Fatalf("mount: %+v\nmount.log:\n%s", r, log)
	}
	t.Cleanup(func() {
		if isMounted(v.mnt) {
			fincrypt(t, nil, "umount", v.mnt)
		}
	})
	logPath := filepath.Join(v.home, mountLogName)
	url := metricsURL(t, logPath)
	const marker = "fincrypt-marker-5d3f9e1c"
	sh(t, v.mnt, `
		mkdir -p `+marker+`-dir
		echo "`+marker+` in the content" > `+marker+`-dir/`+marker+`-named-file
		cat `+marker+`-dir/`+marker+`-named-file > /dev/null
		ls -l `+marker+`-dir > /dev/null
		stat nonexistent-`+marker+` 2>/dev/null || true
		for i in $(seq 40); do : > `+marker+`-dir/f$i; done`)
	// The inode bound: 40 files and more, past a bound of 16. The kernel
	// holds at least a file kept open (and its directory); where it takes
	// prune notifications the mount asks it to forget some (from a
	// goroutine of its own: waited for).
	held, err := os.Open(filepath.Join(v.mnt, marker+"-dir", "f1"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { held.Close() }) // before the unmount's cleanup, on failure
	var inodes float64
	waitFor(t, "the inode bound in the metrics", 60*time.Second, func() (bool, string) {
		m, _ := metricstest.Scrape(t, url)
		inodes = m.Must(t, "fincrypt_mount_kernel_inodes")
		bound, pruned := m.Must(t, "fincrypt_mount_max_inodes"), m.Must(t, "fincrypt_mount_pruned_inodes_total")
		supported := m.Must(t, "fincrypt_mount_inode_prune_supported")
		return bound == maxInodes && inodes >= 2 && (supported == 0 || pruned >= 1),
			fmt.Sprintf("%v held, bound %v, %v pruned, prune supported %v", inodes, bound, pruned, supported)
	})
	m, metricsBody := metricstest.Scrape(t, url)
	held.Close()
	if v := m.Must(t, "fincrypt_mount_fuse_op_duration_seconds", "op", "create"); v < 1 {
		t.Errorf("no create counted: %v", v)
	}
	if v := m.Must(t, "fincrypt_mount_fuse_op_duration_seconds", "op", "mkdir"); v < 1 {
		t.Errorf("no mkdir counted: %v", v)
	}
	page := metricstest.Get(t, url)
	if err := metricstest.ValidHTML(page); err != nil {
		t.Errorf("page: %v", err)
	}
	if !strings.Contains(string(page), "local only") {
		t.Errorf("the page of a vault without a network does not say so:\n%s", page)
	}
	if !strings.Contains(string(page), "Inodes held for the kernel") || !strings.Contains(string(page), fmt.Sprint(maxInodes)) {
		t.Errorf("the page does not show the inode bound of %d:\n%s", maxInodes, page)
	}
	v.umount(t)
	logb, _ := os.ReadFile(logPath)
	metricsURL(t, logPath) // every line JSON, through the unmount
	if !bytes.Contains(logb, []byte(`"msg":"mounted"`)) {
		t.Errorf("mount.log has no JSON mounted record:\n%s", logb)
	}
	for what, b := range map[string][]byte{"mount.log": logb, "metrics": metricsBody, "page": page} {
		if bytes.Contains(b, []byte(marker)) {
			t.Errorf("%s names the marker file or shows its content", what)
		}
	}
}

// TestDevnetMetrics: a devnet serves the mediator's metrics and every
// node's (labelled node="1".."N") on one listener, its page lists the
// nodes, and --log-format json makes its log files JSON.
func TestDevnetMetrics(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	d := filepath.Join(t.TempDir(), "devnet")
	p := startDevnet(t, nil, "--dir", d, "--no-bitcoin", "--nodes", "3", "--period", "1s",
		"--metrics-listen", addr, "--log-format", "json")
	url := "http://" + addr + "/"
	waitFor(t, "three nodes online and a round", 90*time.Second, func() (bool, string) {
		c := &http.Client{Timeout: 5 * time.Second}
		resp, err := c.Get(url + "metrics")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		m, _ := metricstest.Scrape(t, url)
		online, _ := m.Value("fincrypt_mediator_nodes", "state", "online")
		rounds, _ := m.Value("fincrypt_mediator_challenge_rounds_total")
		return online == 3 && rounds >= 1, fmt.Sprintf("%v online, %v rounds", online, rounds)
	})
	m, _ := metricstest.Scrape(t, url)
	for _, n := range []string{"1", "2", "3"} {
		if v := m.Must(t, "fincrypt_node_capacity_bytes", "node", n); v <= 0 {
			t.Errorf("node %s capacity %v", n, v)
		}
	}
	page := metricstest.Get(t, url)
	if err := metricstest.ValidHTML(page); err != nil {
		t.Errorf("page: %v", err)
	}
	if !strings.Contains(string(page), "Storage nodes of this devnet") {
		t.Errorf("devnet page lacks its nodes:\n%s", page)
	}
	p.interrupt(t)
	logs, _ := filepath.Glob(filepath.Join(d, "logs", "*.log"))
	if len(logs) == 0 {
		t.Fatal("no devnet logs")
	}
	for _, f := range logs {
		b, _ := os.ReadFile(f)
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if l != "" && !json.Valid([]byte(l)) {
				t.Fatalf("%s: not a JSON log line: %q", f, l)
			}
		}
	}
}
