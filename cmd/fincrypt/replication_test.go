package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"
)

// daemon runs the binary in the background until the test ends (or kill
// is called); its log is shown if the test fails.
func daemon(t *testing.T, dir, name string, args ...string) (kill func()) {
	t.Helper()
	_, kill = daemonTerm(t, dir, name, args...)
	return kill
}

func waitForFile(t *testing.T, path string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if b, err := os.ReadFile(path); err == nil && len(bytes.TrimSpace(b)) > 0 {
			return strings.TrimSpace(string(b))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s was not written", path)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestReplicationProcesses runs a mediator and five storage nodes as real
// processes, joins a vault to them, writes through the mount until `status
// --json` says it is durable, then restores into a fresh home and reads
// everything back.
func TestReplicationProcesses(t *testing.T) {
	needFUSE(t)
	dir := t.TempDir()
	mdir := filepath.Join(dir, "mediator")
	medArgs := []string{"mediator", "--dir", mdir, "--period", "2s", "--heartbeat", "200ms", "--challenge-timeout", "1s"}
	stopMediator := daemon(t, dir, "mediator", append(medArgs, "--listen", "127.0.0.1:0")...)
	maddr := waitForFile(t, filepath.Join(mdir, "address"))
	payout, _ := btcutil.NewAddressPubKeyHash(bytes.Repeat([]byte{7}, 20), &chaincfg.SimNetParams)
	for i := 0; i < 5; i++ {
		ndir := filepath.Join(dir, fmt.Sprintf("node%d", i))
		daemon(t, dir, fmt.Sprintf("node%d", i), "storage", "--dir", ndir, "--listen", fmt.Sprintf("127.0.%d.1:0", i+1), // a network each
			"--mediator", maddr, "--capacity", "64MiB", "--price", fmt.Sprint(1000+i),
			"--payout-address", payout.EncodeAddress(), "--network", "simnet")
		waitForFile(t, filepath.Join(ndir, "address"))
	}
	time.Sleep(time.Second) // let the nodes register

	v := &vaultEnv{home: filepath.Join(dir, "home"), mnt: filepath.Join(dir, "mnt"), pw: writePassword(t, "pw")}
	r := fincrypt(t, nil, "--home", v.home, "init", "--password-file", v.pw, "--mediator", maddr)
	if r.code != 0 || !strings.Contains(r.stdout, "Account: ") {
		t.Fatalf("init --mediator: %+v", r)
	}
	acct, _, _ := strings.Cut(r.stdout[strings.Index(r.stdout, "Account: ")+9:], "\n")
	if r := fincrypt(t, nil, "--home", v.home, "account"); r.code != 0 || strings.TrimSpace(r.stdout) != acct {
		t.Fatalf("account: %+v, want %s", r, acct)
	}
	assertUserError(t, fincrypt(t, nil, "--home", v.home, "status"), exitNotFound, "not mounted")
	if r := fincrypt(t, nil, "--home", v.home, "mount", "--password-file", v.pw, "--flush-after", "200ms", "--snapshot-delay", "500ms", v.mnt); r.code != 0 {
		log, _ := os.ReadFile(filepath.Join(v.home, mountLogName))
		t.Fatalf("mount: %+v\n%s", r, log)
	}
	t.Cleanup(func() {
		if isMounted(v.mnt) {
			syscall.Unmount(v.mnt, syscall.MNT_DETACH)
		}
	})
	// Offline: the mediator is down while we write, and the mount is
	// killed -9 before anything reached the network.
	stopMediator()
	mountPID := v.pid()
	rng := rand.New(rand.NewSource(5))
	files := map[string][]byte{}
	for i := 0; i < 5; i++ {
		b := make([]byte, rng.Intn(200<<10)+1)
		rng.Read(b)
		name := fmt.Sprintf("d%d/f%d", i%2, i)
		os.MkdirAll(filepath.Join(v.mnt, filepath.Dir(name)), 0o755)
		f, err := os.Create(filepath.Join(v.mnt, name))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(b); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil { // durable locally: survives kill -9
			t.Fatal(err)
		}
		f.Close()
		files[name] = b
	}
	if r := fincrypt(t, nil, "--home", v.home, "status", "--json"); r.code != 0 || !strings.Contains(r.stdout, `"pending_files": 5`) {
		t.Fatalf("status while offline: %+v", r)
	}
	if err := syscall.Kill(mountPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	syscall.Unmount(v.mnt, syscall.MNT_DETACH)
	_, hostport, _ := strings.Cut(maddr, "@")
	daemon(t, dir, "mediator2", append(medArgs, "--listen", hostport)...)
	if r := fincrypt(t, nil, "--home", v.home, "mount", "--password-file", v.pw, "--flush-after", "200ms", "--snapshot-delay", "500ms", v.mnt); r.code != 0 {
		log, _ := os.ReadFile(filepath.Join(v.home, mountLogName))
		t.Fatalf("mount after kill -9: %+v\n%s", r, log)
	}
	// The first sync, followed until nothing is pending.
	if r := fincrypt(t, nil, "--home", v.home, "status", "--watch", "--json"); r.code != 0 {
		t.Fatalf("status --watch --json: %+v", r)
	} else {
		first, sum := jsonProgress(t, "sync", r.stdout)
		if sum.Files != sum.TotalFiles || sum.Bytes != sum.TotalBytes || (first.TotalFiles == 5 && sum.Files != 5) {
			t.Fatalf("status --watch: first %+v, summary %+v", first, sum)
		}
	}

	deadline := time.Now().Add(60 * time.Second)
	for {
		r := fincrypt(t, nil, "--home", v.home, "status", "--json")
		if r.code != 0 {
			t.Fatalf("status --json: %+v", r)
		}
		var st map[string]any
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
			t.Fatalf("status --json is not JSON: %v\n%s", err, r.stdout)
		}
		for _, k := range []string{"account", "pending_bytes", "pending_files", "segments_durable", "segments_degraded", "last_sync"} {
			if _, ok := st[k]; !ok {
				t.Fatalf("status --json lacks %q: %s", k, r.stdout)
			}
		}
		if st["account"] != acct {
			t.Fatalf("status account %v, want %s", st["account"], acct)
		}
		snap, _ := st["last_snapshot"].(string)
		sync, _ := st["last_sync"].(string)
		if st["pending_files"].(float64) == 0 && st["segments_durable"].(float64) > 0 && snap != "" && sync != "" && snap > sync {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not durable after 60s: %s", r.stdout)
		}
		time.Sleep(300 * time.Millisecond)
	}
	if r := fincrypt(t, nil, "--home", v.home, "status"); r.code != 0 || !strings.Contains(r.stdout, "durable") {
		t.Fatalf("status: %+v", r)
	}
	v.umount(t)

	home2 := filepath.Join(dir, "restored")
	assertUserError(t, fincrypt(t, nil, "--home", home2, "restore", "--mediator", maddr, "--account", acct, "--password-file", writePassword(t, "nope")), exitPassword, "wrong password")
	if err := os.RemoveAll(v.home); err != nil {
		t.Fatal(err)
	}
	if r := fincrypt(t, nil, "--home", home2, "restore", "--mediator", maddr, "--account", acct, "--password-file", v.pw, "--json"); r.code != 0 {
		t.Fatalf("restore: %+v", r)
	} else {
		_, sum := jsonProgress(t, "restore", r.stdout)
		var recs, segs int64
		if _, err := fmt.Sscanf(r.stderr[strings.Index(r.stderr, "("):], "(%d index records, %d segments)", &recs, &segs); err != nil {
			t.Fatalf("restore's message: %v\n%s", err, r.stderr)
		}
		if sum.Files != segs || sum.TotalFiles != segs || sum.Bytes != sum.TotalBytes || sum.Bytes == 0 {
			t.Fatalf("restore --json summary %+v, restore says %d segments", sum, segs)
		}
	}
	v2 := &vaultEnv{home: home2, mnt: filepath.Join(dir, "mnt2"), pw: v.pw}
	v2.mount(t)
	t.Cleanup(func() {
		if isMounted(v2.mnt) {
			syscall.Unmount(v2.mnt, syscall.MNT_DETACH)
		}
	})
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(v2.mnt, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("restored %s: %d bytes, err %v; want %d bytes", name, len(got), err, len(want))
		}
	}
	v2.umount(t)
	if r := fincrypt(t, nil, "--home", home2, "check", "--password-file", v.pw, "--json"); r.code != 0 {
		t.Fatalf("check --json: %+v", r)
	} else {
		_, sum := jsonProgress(t, "check", r.stdout)
		var total int64
		for _, b := range files {
			total += int64(len(b))
		}
		if sum.Bytes != total || sum.TotalBytes != total || sum.Files != sum.TotalFiles || sum.Files < int64(len(files)) {
			t.Fatalf("check --json summary %+v; the files hold %d bytes", sum, total)
		}
	}
}
