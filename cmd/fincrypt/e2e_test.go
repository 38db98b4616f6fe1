package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"
)

// e2eBigSize is the size of the one big file of TestE2EFaults: 200 MiB, as
// the issue asks (about 30 s more than 50 MiB on two cores).
// FINCRYPT_E2E_BIG (e.g. 50MiB, or a number of bytes) scales it.
func e2eBigSize(t *testing.T) int64 {
	s := os.Getenv("FINCRYPT_E2E_BIG")
	if s == "" {
		return 200 << 20
	}
	s = strings.TrimSuffix(strings.TrimSpace(s), "B")
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "Mi"):
		mult, s = 1<<20, strings.TrimSuffix(s, "Mi")
	case strings.HasSuffix(s, "Gi"):
		mult, s = 1<<30, strings.TrimSuffix(s, "Gi")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		t.Fatalf("FINCRYPT_E2E_BIG=%q: want a size such as 200MiB", os.Getenv("FINCRYPT_E2E_BIG"))
	}
	return n * mult
}

// e2eNode is one storage node process that can be killed and restarted.
type e2eNode struct {
	dir, id, hostport string
	ip                string
	args              []string
	kill              func()
	term              func(t *testing.T)
}

func (n *e2eNode) start(t *testing.T, logDir, name string) {
	t.Helper()
	listen := n.ip + ":0" // each node on a network (/24) of its own
	if n.hostport != "" {
		listen = n.hostport
	}
	n.term, n.kill = daemonTerm(t, logDir, name, append(append([]string{}, n.args...), "--listen", listen)...)
	addr := waitForFile(t, filepath.Join(n.dir, "address"))
	id, hp, ok := strings.Cut(addr, "@")
	if !ok {
		t.Fatalf("%s/address: %q is not NODEID@HOST:PORT", n.dir, addr)
	}
	n.id, n.hostport = id, hp
}

// daemonTerm is daemon with a graceful stop as well: term sends SIGTERM
// and waits (generously) for the process to exit.
func daemonTerm(t *testing.T, dir, name string, args ...string) (term func(t *testing.T), kill func()) {
	t.Helper()
	logPath := filepath.Join(dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binPath, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(done) }()
	kill = func() { cmd.Process.Kill(); <-done }
	term = func(t *testing.T) {
		t.Helper()
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			kill()
			t.Fatalf("%s did not exit within 30s of SIGTERM", name)
		}
	}
	t.Cleanup(func() {
		kill()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			if dir := os.Getenv("FINCRYPT_E2E_LOGS"); dir != "" { // whole logs, for a failure's post-mortem
				os.MkdirAll(dir, 0o755)
				os.WriteFile(filepath.Join(dir, name+".log"), b, 0o644)
			}
			if len(b) > 2000 {
				b = b[len(b)-2000:]
			}
			t.Logf("%s log:\n%s", name, b)
		}
	})
	return term, kill
}

// waitFor polls cond (which describes the state it saw) until it holds or
// the deadline passes.
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
		time.Sleep(300 * time.Millisecond)
	}
}

func clientStatus(t *testing.T, home string) (map[string]any, string) {
	t.Helper()
	r := fincrypt(t, nil, "--home", home, "status", "--json")
	if r.code != 0 {
		t.Fatalf("status --json: %+v", r)
	}
	var st map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("status --json is not JSON: %v\n%s", err, r.stdout)
	}
	return st, r.stdout
}

// durable: nothing pending, nothing degraded, and an index snapshot newer
// than the last sync (so that restore sees everything).
func durable(t *testing.T, home string) func() (bool, string) {
	return func() (bool, string) {
		st, raw := clientStatus(t, home)
		snap, _ := st["last_snapshot"].(string)
		lastSync, _ := st["last_sync"].(string)
		return st["pending_bytes"] == 0.0 && st["pending_files"] == 0.0 && st["segments_degraded"] == 0.0 &&
			st["segments_dead"] == 0.0 && st["segments_durable"].(float64) > 0 && snap != "" && lastSync != "" && snap > lastSync, raw
	}
}

// treeSums hashes every regular file under root, by relative path.
func treeSums(t *testing.T, root string) map[string]string {
	t.Helper()
	sums := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		h := sha256.New()
		if _, err := io.Copy(h, f); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		rel, _ := filepath.Rel(root, p)
		sums[rel] = hex.EncodeToString(h.Sum(nil))
		return nil
	})
	if err != nil {
		t.Fatalf("reading %s: %v", root, err)
	}
	return sums
}

func sameSums(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	bad := 0
	for name, sum := range want {
		if got[name] != sum {
			if bad < 10 {
				t.Errorf("%s: %s differs or is missing (got %.12q, want %.12q)", what, name, got[name], sum)
			}
			bad++
		}
	}
	if bad > 0 {
		t.Fatalf("%s: %d of %d files differ", what, bad, len(want))
	}
}

func dropPageCache(t *testing.T) {
	t.Helper()
	syscall.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0); err != nil {
		t.Logf("drop_caches: %v (reading through the remounted FUSE mount anyway)", err)
	}
}

func countPieces(t *testing.T, nodeDir string) int {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(nodeDir, "pieces", "*", "*.piece"))
	if err != nil {
		t.Fatal(err)
	}
	return len(m)
}

func writeSynced(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestE2EFaults runs a mediator and five storage nodes as processes (a
// devnet runs all nodes in one process, so single nodes could not be
// killed) with the devnet's scheme 2/4 and repair threshold 4, so that one
// node is spare for repair. Through a real mount it writes a git
// repository, 2,000 small files and a big file, then: kills N-K = 2 nodes
// and reads everything back with an emptied cache; corrupts every piece on
// one node and waits for the mediator to find and repair them; kills -9 the
// mount during writes; restarts the mediator and then each node in turn
// while a client writes and fsyncs; and finally restores into a fresh home.
func TestE2EFaults(t *testing.T) {
	needFUSE(t)
	if testing.Short() {
		t.Skip("skipping end-to-end fault test in -short mode")
	}
	start := time.Now()
	dir := t.TempDir()
	mdir := filepath.Join(dir, "mediator")
	// A wallet passphrase without a Bitcoin node: unmetered, so the ledger
	// records what each node earned per period (docs/WALLET.md).
	wpw := writePassword(t, "e2e wallet")
	medArgs := func(listen string) []string {
		// Deadlines generous for a loaded machine: a node that answers a
		// challenge late, or whose heartbeat is late, is not paid for the
		// period or not chosen for repair, which the checks below would take
		// for misbehaviour.
		return []string{"mediator", "--dir", mdir, "--listen", listen, "--period", "2s",
			"--heartbeat", "200ms", "--online-window", "2s", "--challenge-timeout", "2s", "--scheme", "2/4", "--repair-threshold", "4",
			"--wallet-passphrase-file", wpw, "--network", "simnet", "--max-price", "2000000000000"}
	}
	medTerm, _ := daemonTerm(t, dir, "mediator", medArgs("127.0.0.1:0")...)
	maddr := waitForFile(t, filepath.Join(mdir, "address"))
	payout, _ := btcutil.NewAddressPubKeyHash(bytes.Repeat([]byte{7}, 20), &chaincfg.SimNetParams)
	nodes := make([]*e2eNode, 5)
	for i := range nodes {
		ndir := filepath.Join(dir, fmt.Sprintf("node%d", i))
		nodes[i] = &e2eNode{dir: ndir, ip: fmt.Sprintf("127.0.%d.1", i+1), args: []string{"storage", "--dir", ndir, "--mediator", maddr,
			// ~1e12 sat/GiB/month: a few MiB earn thousands of sat per 2s period.
			"--capacity", "1GiB", "--price", fmt.Sprint(1_000_000_000_000 + i),
			"--payout-address", payout.EncodeAddress(), "--network", "simnet"}}
		nodes[i].start(t, dir, fmt.Sprintf("node%d", i))
	}
	medStatus := func() (map[string]any, string) {
		r := fincrypt(t, nil, "mediator", "status", "--dir", mdir, "--json")
		if r.code != 0 {
			t.Fatalf("mediator status: %+v", r)
		}
		var st map[string]any
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
			t.Fatalf("mediator status --json: %v\n%s", err, r.stdout)
		}
		return st, r.stdout
	}
	waitFor(t, "5 nodes online", 30*time.Second, func() (bool, string) {
		st, raw := medStatus()
		online := 0
		ns, _ := st["nodes"].([]any)
		for _, n := range ns {
			if m, _ := n.(map[string]any); m["online"] == true {
				online++
			}
		}
		return online == 5, raw
	})

	home := filepath.Join(dir, "home")
	mnt := filepath.Join(dir, "mnt")
	pw := writePassword(t, "pw")
	r := fincrypt(t, nil, "--home", home, "init", "--password-file", pw, "--mediator", maddr)
	if r.code != 0 {
		t.Fatalf("init --mediator: %+v", r)
	}
	r = fincrypt(t, nil, "--home", home, "account")
	acct := strings.TrimSpace(r.stdout)
	if r.code != 0 || acct == "" {
		t.Fatalf("account: %+v", r)
	}
	mount := func(home, mnt string, extra ...string) {
		t.Helper()
		args := append([]string{"--home", home, "mount", "--password-file", pw, "--flush-after", "200ms", "--snapshot-delay", "500ms"}, extra...)
		if r := fincrypt(t, nil, append(args, mnt)...); r.code != 0 {
			log, _ := os.ReadFile(filepath.Join(home, mountLogName))
			t.Fatalf("mount: %+v\n%s", r, log)
		}
		if !isMounted(mnt) {
			t.Fatal("mount returned 0 but nothing is mounted")
		}
	}
	umount := func(mnt string) {
		t.Helper()
		if r := fincrypt(t, nil, "umount", mnt); r.code != 0 || isMounted(mnt) {
			t.Fatalf("umount %s: %+v", mnt, r)
		}
	}
	t.Cleanup(func() {
		for _, m := range []string{mnt, filepath.Join(dir, "mnt2")} {
			if isMounted(m) {
				syscall.Unmount(m, syscall.MNT_DETACH)
			}
		}
		for _, h := range []string{home, filepath.Join(dir, "restored")} {
			if pid := (&vaultEnv{home: h}).pid(); pid > 0 {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	mount(home, mnt)

	// 1. A git repository, 2,000 small files and a big file.
	sh(t, mnt, `mkdir repo && cd repo && git init -q . &&
		for d in 0 1 2 3 4 5 6 7 8 9; do mkdir src$d; for i in $(seq 1 30); do
			printf 'package p%d\n\n// file %d of dir %d\nfunc F%d() int { return %d }\n' $d $i $d $i $((d*i)) > src$d/f$i.go; done; done &&
		git add -A && git -c user.name=e2e -c user.email=e2e@invalid commit -q -m 'three hundred files' &&
		echo change >> src0/f1.go && git -c user.name=e2e -c user.email=e2e@invalid commit -q -am second`)
	rng := rand.New(rand.NewSource(7))
	for i := 0; i < 2000; i++ {
		b := make([]byte, rng.Intn(4096)+1)
		rng.Read(b)
		p := filepath.Join(mnt, "small", fmt.Sprintf("d%02d", i%40), fmt.Sprintf("f%04d", i))
		if i < 40 {
			os.MkdirAll(filepath.Dir(p), 0o755)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bigSize := e2eBigSize(t)
	f, err := os.Create(filepath.Join(mnt, "big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	for left := bigSize; left > 0; left -= int64(len(buf)) {
		rng.Read(buf)
		n := int64(len(buf))
		if left < n {
			n = left
		}
		if _, err := f.Write(buf[:n]); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	sh(t, mnt, "sync -f .")
	sums := treeSums(t, mnt)
	if len(sums) < 2300 {
		t.Fatalf("only %d files in the tree", len(sums))
	}
	t.Logf("wrote %d files (big file %d MiB) at %v", len(sums), bigSize>>20, time.Since(start).Round(time.Second))
	waitFor(t, "data durable", 5*time.Minute, durable(t, home))
	t.Logf("durable at %v", time.Since(start).Round(time.Second))

	// Empty the client's cache: remount bounded to 1 byte, wait until the
	// local store shrank, then kill N-K nodes and drop the page cache.
	umount(mnt)
	mount(home, mnt, "--cache-size", "1")
	waitFor(t, "cache evicted", time.Minute, func() (bool, string) {
		st, raw := clientStatus(t, home)
		return st["cache_bytes"].(float64) < float64(bigSize/10), raw
	})
	for _, n := range nodes[:2] {
		if c := countPieces(t, n.dir); c == 0 {
			t.Fatalf("%s holds no pieces: killing it proves nothing", n.dir)
		}
		n.kill()
	}
	dropPageCache(t)
	sameSums(t, "with 2 of 5 nodes down", treeSums(t, mnt), sums)
	sh(t, filepath.Join(mnt, "repo"), "git fsck --full --no-progress && test -z \"$(git status --porcelain)\"")
	t.Logf("read back with 2 nodes down at %v", time.Since(start).Round(time.Second))
	nodes[0].start(t, dir, "node0-restarted")
	nodes[1].start(t, dir, "node1-restarted")
	// Before the corruption, a settled period with every node paid for the
	// account's bytes it holds (a restarted node that missed a challenge
	// earns nothing for that period, like the victim after step 2).
	restartedAt := time.Now()
	waitFor(t, "a period after the restarts in which every node holding bytes is paid", 20*time.Second, func() (bool, string) {
		periods, _ := ledgerSettlements(t, mdir, acct)
		for p, lines := range periods {
			if p <= restartedAt.UnixNano() {
				continue
			}
			all := lines[nodes[2].id].earned > 0 // the victim-to-be, too
			for _, n := range nodes {
				if l := lines[n.id]; l.bytes > 0 && l.earned <= 0 {
					all = false
				}
			}
			if all {
				return true, fmt.Sprint(lines)
			}
		}
		return false, fmt.Sprintf("%d periods settled", len(periods))
	})
	t.Logf("every node paid again at %v", time.Since(start).Round(time.Millisecond))

	// 2. Corrupt every piece on one node; the mediator's challenges find
	// it, the pieces are rebuilt elsewhere, and the node is not paid for
	// the period in which it failed.
	victim := nodes[2]
	corrupted := time.Now()
	flipped := 0
	filepath.WalkDir(filepath.Join(victim.dir, "pieces"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || !strings.HasSuffix(p, ".piece") {
			return nil
		}
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		fi, _ := f.Stat()
		if fi.Size() <= 64 {
			return nil
		}
		// Every byte after the 64-byte header (docs/FORMAT.md §4): a
		// challenge opens only a few leaves, so partial damage would be
		// found only by chance in a given period.
		body := make([]byte, fi.Size()-64)
		if _, err := f.ReadAt(body, 64); err != nil {
			t.Fatal(err)
		}
		for i := range body {
			body[i] ^= 0xff
		}
		if _, err := f.WriteAt(body, 64); err != nil {
			t.Fatal(err)
		}
		flipped++
		return nil
	})
	if flipped == 0 {
		t.Fatalf("no pieces on %s to corrupt", victim.dir)
	}
	waitFor(t, "corrupt pieces found and repaired", 2*time.Minute, func() (bool, string) {
		st, raw := medStatus()
		var failed float64
		ns, _ := st["nodes"].([]any)
		for _, n := range ns {
			if m, _ := n.(map[string]any); m["id"] == victim.id {
				failed, _ = m["failed"].(float64)
			}
		}
		return failed > 0 && st["repaired"].(float64) >= float64(flipped) && st["lost"] == 0.0 &&
			st["healthy"] == st["pieces"], raw
	})
	checkNotPaid(t, mdir, acct, victim.id, nodes, corrupted)
	st, _ := medStatus()
	t.Logf("mediator: %v segments, %v pieces, %v healthy, %v lost, %v repaired", st["segments"], st["pieces"], st["healthy"], st["lost"], st["repaired"])
	t.Logf("%d corrupted pieces repaired at %v", flipped, time.Since(start).Round(time.Second))

	// 3. kill -9 the mount while it writes; fsynced files survive.
	umount(mnt)
	mount(home, mnt)
	synced := map[string][]byte{}
	for i := 0; i < 20; i++ {
		b := make([]byte, rng.Intn(256<<10)+1)
		rng.Read(b)
		name := fmt.Sprintf("crash/synced%02d", i)
		writeSynced(t, filepath.Join(mnt, name), b)
		synced[name] = b
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() { // unsynced writes, until the mount dies or 2,000 files
		defer wg.Done()
		b := make([]byte, 64<<10)
		for i := 0; i < 2000; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if os.WriteFile(filepath.Join(mnt, "crash", fmt.Sprintf("unsynced%04d", i)), b, 0o644) != nil {
				return
			}
		}
	}()
	waitFor(t, "unsynced writes under way", 30*time.Second, func() (bool, string) {
		m, _ := filepath.Glob(filepath.Join(mnt, "crash", "unsynced*"))
		return len(m) >= 10, fmt.Sprintf("%d unsynced files", len(m))
	})
	pid := (&vaultEnv{home: home}).pid()
	if pid <= 0 {
		t.Fatal("no mount.pid")
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "mount process gone", 20*time.Second, func() (bool, string) {
		return syscall.Kill(pid, 0) != nil, fmt.Sprintf("pid %d alive", pid)
	})
	if err := syscall.Unmount(mnt, syscall.MNT_DETACH); err != nil {
		t.Fatalf("umount -l: %v", err)
	}
	close(stop)
	wg.Wait()
	mount(home, mnt)
	for name, want := range synced {
		got, err := os.ReadFile(filepath.Join(mnt, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("after kill -9: %s: %d bytes, err %v; want %d bytes", name, len(got), err, len(want))
		}
		sum := sha256.Sum256(want)
		sums[name] = hex.EncodeToString(sum[:])
	}
	waitFor(t, "uploads resumed and finished", 3*time.Minute, durable(t, home))
	t.Logf("kill -9 survived, durable again at %v", time.Since(start).Round(time.Second))

	// 4. Restart the mediator, then every storage node one after another,
	// while a client writes and fsyncs: nothing is lost.
	nodeSeenSince := func(id string, since time.Time) (bool, string) {
		// Not medStatus: a mediator that is starting up may not answer yet.
		r := fincrypt(t, nil, "mediator", "status", "--dir", mdir, "--json")
		var st map[string]any
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &st) != nil {
			return false, fmt.Sprintf("%+v", r)
		}
		raw := r.stdout
		ns, _ := st["nodes"].([]any)
		for _, n := range ns {
			m, _ := n.(map[string]any)
			if m["id"] != id {
				continue
			}
			seen, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(m["last_seen"]))
			return m["online"] == true && seen.After(since), raw
		}
		return false, raw
	}
	allSeenSince := func(since time.Time) func() (bool, string) {
		return func() (bool, string) {
			for _, n := range nodes {
				if ok, raw := nodeSeenSince(n.id, since); !ok {
					return false, n.id + " not seen yet: " + raw
				}
			}
			return true, ""
		}
	}
	type written struct{ name, sum string }
	var (
		wmu      sync.Mutex
		wrote    []written
		werrs    []string
		wstop    = make(chan struct{})
		wdone    = make(chan struct{})
		wstarted = make(chan struct{})
	)
	go func() { // fsynced writes until stopped, at most 300 files
		defer close(wdone)
		wrng := rand.New(rand.NewSource(11))
		for i := 0; i < 300; i++ {
			if i == 5 {
				close(wstarted)
			}
			select {
			case <-wstop:
				return
			case <-time.After(30 * time.Millisecond): // pacing only, so the writes span the restarts
			}
			b := make([]byte, 4<<10+wrng.Intn(60<<10+1))
			wrng.Read(b)
			name := fmt.Sprintf("restart/d%d/w%03d", i%4, i)
			p := filepath.Join(mnt, name)
			err := os.MkdirAll(filepath.Dir(p), 0o755)
			var f *os.File
			if err == nil {
				f, err = os.Create(p)
			}
			if err == nil {
				if _, err = f.Write(b); err == nil {
					err = f.Sync()
				}
				if cerr := f.Close(); err == nil {
					err = cerr
				}
			}
			wmu.Lock()
			if err != nil {
				werrs = append(werrs, fmt.Sprintf("%s: %v", name, err))
			} else {
				sum := sha256.Sum256(b)
				wrote = append(wrote, written{name, hex.EncodeToString(sum[:])})
			}
			wmu.Unlock()
		}
	}()
	nWrote := func() int { wmu.Lock(); defer wmu.Unlock(); return len(wrote) }
	select {
	case <-wstarted:
	case <-wdone:
	case <-time.After(30 * time.Second):
		t.Fatal("writer did not get going in 30s")
	}
	before := nWrote()
	_, mhostport, _ := strings.Cut(maddr, "@")
	medTerm(t)
	restarted := time.Now()
	medTerm, _ = daemonTerm(t, dir, "mediator-restarted", medArgs(mhostport)...)
	waitFor(t, "nodes back with the restarted mediator", time.Minute, allSeenSince(restarted))
	for i, n := range nodes {
		n.term(t)
		restarted := time.Now()
		n.start(t, dir, fmt.Sprintf("node%d-rolled", i))
		waitFor(t, fmt.Sprintf("node%d online again", i), time.Minute, func() (bool, string) { return nodeSeenSince(n.id, restarted) })
	}
	during := nWrote() - before
	close(wstop)
	<-wdone
	wmu.Lock()
	if len(werrs) > 0 {
		t.Errorf("%d of %d writes failed during the restarts, e.g. %s", len(werrs), len(werrs)+len(wrote), werrs[0])
	}
	if during == 0 {
		t.Errorf("no file was written while the mediator and nodes restarted")
	}
	for _, w := range wrote {
		sums[w.name] = w.sum
	}
	t.Logf("restarted mediator and 5 nodes; %d files fsynced (%d during the restarts)", len(wrote), during)
	wmu.Unlock()
	waitFor(t, "durable after the restarts", 3*time.Minute, durable(t, home))
	waitFor(t, "mediator: every piece healthy after the restarts", time.Minute, func() (bool, string) {
		st, raw := medStatus()
		return st["lost"] == 0.0 && st["pieces"].(float64) > 0 && st["healthy"] == st["pieces"], raw
	})
	dropPageCache(t)
	for _, w := range wrote {
		b, err := os.ReadFile(filepath.Join(mnt, w.name))
		sum := sha256.Sum256(b)
		if err != nil || hex.EncodeToString(sum[:]) != w.sum {
			t.Fatalf("after the restarts: %s: %d bytes, err %v, sha256 %x, want %s", w.name, len(b), err, sum, w.sum)
		}
	}
	t.Logf("restarts survived, %d files verified, durable at %v", len(wrote), time.Since(start).Round(time.Second))
	// What survived of the unsynced files is whatever the index holds now:
	// it must be durable too, so it is part of what a restore must bring back.
	all := treeSums(t, mnt)
	sameSums(t, "before restore", all, sums)
	umount(mnt)

	// 5. Lose the home; restore from the network into a fresh one.
	if err := os.RemoveAll(home); err != nil {
		t.Fatal(err)
	}
	home2 := filepath.Join(dir, "restored")
	if r := fincrypt(t, nil, "--home", home2, "restore", "--mediator", maddr, "--account", acct, "--password-file", pw); r.code != 0 {
		t.Fatalf("restore: %+v", r)
	}
	mnt2 := filepath.Join(dir, "mnt2")
	mount(home2, mnt2)
	dropPageCache(t)
	got := treeSums(t, mnt2)
	sameSums(t, "restored", got, all)
	if len(got) != len(all) {
		t.Fatalf("restored %d files, want %d", len(got), len(all))
	}
	sh(t, filepath.Join(mnt2, "repo"), "git fsck --full --no-progress && test -z \"$(git status --porcelain)\"")
	umount(mnt2)
	t.Logf("restored %d files byte-identical; whole test %v", len(all), time.Since(start).Round(time.Second))
}

// e2eSettled is one settlement line read back from the ledger's journal:
// what a node earned for an account's bytes in one period.
type e2eSettled struct {
	bytes, earned int64
}

// ledgerSettlements reads `fincrypt mediator ledger --json` and returns the
// settlement lines of account acct by period (unix nanoseconds of its start)
// and node. An unmetered line is the journal entry settle/<period>/<node>/
// <account>, memo "period P: B bytes, unmetered", moving the earnings from
// ext:unmetered to unmetered:<node> (no postings when it earned nothing).
func ledgerSettlements(t *testing.T, mdir, acct string) (map[int64]map[string]e2eSettled, string) {
	t.Helper()
	r := fincrypt(t, nil, "mediator", "ledger", "--dir", mdir, "--json", "--limit", "10000")
	if r.code != 0 {
		t.Fatalf("mediator ledger: %+v", r)
	}
	var rep struct {
		Metered bool `json:"metered"`
		Entries []struct {
			Seq      uint64 `json:"seq"`
			Key      string `json:"key"`
			Memo     string `json:"memo"`
			Postings []struct {
				Account string `json:"account"`
				Amount  int64  `json:"amount"`
			} `json:"postings"`
		} `json:"entries"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("mediator ledger --json: %v\n%s", err, r.stdout)
	}
	if rep.Metered {
		t.Fatalf("mediator ledger: metered, want unmetered (no --btcd-rpc)")
	}
	if len(rep.Entries) >= 10000 {
		t.Fatalf("mediator ledger: %d entries, more than one page", len(rep.Entries))
	}
	out := map[int64]map[string]e2eSettled{}
	for _, e := range rep.Entries {
		parts := strings.Split(e.Key, "/")
		if len(parts) != 4 || parts[0] != "settle" || parts[3] != acct {
			continue
		}
		period, err := strconv.ParseInt(parts[1], 10, 64)
		if err != nil {
			t.Fatalf("ledger entry %d: key %q", e.Seq, e.Key)
		}
		node := parts[2]
		var s e2eSettled
		if _, err := fmt.Sscanf(e.Memo, "period %d: %d bytes", new(int64), &s.bytes); err != nil {
			t.Fatalf("ledger entry %d %s: memo %q: %v", e.Seq, e.Key, e.Memo, err)
		}
		for _, p := range e.Postings {
			if p.Account == "unmetered:"+node {
				s.earned += p.Amount
			}
		}
		if out[period] == nil {
			out[period] = map[string]e2eSettled{}
		}
		out[period][node] = s
	}
	return out, r.stdout
}

// checkNotPaid asserts from the mediator's ledger that in every settled
// period since since in which the victim held the account's bytes and
// earned nothing for them (it failed its challenges), each other node that
// held bytes of the account earned something; that there is such a period;
// and, so that "nothing" means something, that the victim earned before.
func checkNotPaid(t *testing.T, mdir, acct, victim string, nodes []*e2eNode, since time.Time) {
	t.Helper()
	t0 := time.Now()
	var failedIn []int64
	var periods map[int64]map[string]e2eSettled
	waitFor(t, "the victim's failed period settled in the ledger", 15*time.Second, func() (bool, string) {
		var raw string
		periods, raw = ledgerSettlements(t, mdir, acct)
		failedIn = failedIn[:0]
		for p, lines := range periods {
			// The period of the round that started before the corruption
			// may have passed; only rounds starting after it must fail.
			if v, ok := lines[victim]; ok && v.bytes > 0 && v.earned == 0 && p > since.UnixNano() {
				failedIn = append(failedIn, p)
			}
		}
		if len(raw) > 2000 {
			raw = raw[len(raw)-2000:]
		}
		return len(failedIn) > 0, fmt.Sprintf("%d periods settled; ledger tail: %s", len(periods), raw)
	})
	// Every piece body on the victim is flipped, so its first round after
	// the corruption in which it held the account's bytes must have failed
	// (not only some later one).
	first := int64(-1)
	for p, lines := range periods {
		if v, ok := lines[victim]; ok && v.bytes > 0 && p > since.UnixNano() && (first < 0 || p < first) {
			first = p
		}
	}
	if v := periods[first][victim]; v.earned != 0 {
		t.Errorf("ledger period %d, the first after the corruption: the victim %s held %d bytes and earned %d sat, want 0", first, victim, v.bytes, v.earned)
	}
	paidBefore := false
	for p, lines := range periods {
		if v, ok := lines[victim]; ok && p < since.UnixNano() && v.earned > 0 {
			paidBefore = true
		}
	}
	if !paidBefore {
		t.Errorf("ledger: the victim %s earned nothing before its pieces were corrupted either: %v", victim, periods)
	}
	for _, p := range failedIn {
		lines := periods[p]
		others := 0
		for _, n := range nodes {
			if n.id == victim {
				continue
			}
			l, ok := lines[n.id]
			if !ok || l.bytes == 0 {
				continue
			}
			others++
			if l.earned <= 0 {
				t.Errorf("ledger period %d: healthy node %s held %d bytes of the account and earned %d sat", p, n.id, l.bytes, l.earned)
			}
		}
		if others == 0 {
			t.Errorf("ledger period %d: no other node held bytes of the account: %v", p, lines)
		}
		t.Logf("ledger period %d: victim held %d bytes and earned 0; %v", p, lines[victim].bytes, lines)
	}
	t.Logf("ledger checked: victim unpaid in %d period(s), in %v", len(failedIn), time.Since(t0).Round(time.Millisecond))
}
