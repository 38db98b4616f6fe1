package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/devnet"
	"github.com/fincrypt/fincrypt/internal/units"
	"github.com/fincrypt/fincrypt/wallet/btcdtest"
)

// Sizes and periods of TestDemo: `make test` stores 256 MiB with 3-second
// periods; `make demo-check` sets FINCRYPT_DEMO_SIZE=1GiB and
// FINCRYPT_DEMO_TEST_PERIOD=10s (the demo's own period).
const (
	demoDefaultSize   = 256 << 20
	demoDefaultPeriod = "3s"
	demoFileSize      = 32 << 20
	demoMorePeriods   = 6
)

// demoRun is `make demo` in a directory laid out like a fresh clone after
// `make build tools`: scripts/demo.sh from this tree, bin/fincrypt the
// binary under test, tools/bin/btcd.
type demoRun struct {
	t    *testing.T
	root string
	env  []string
}

func (d *demoRun) script(args ...string) (string, error) {
	cmd := exec.Command("bash", append([]string{filepath.Join(d.root, "scripts", "demo.sh")}, args...)...)
	cmd.Env = d.env
	cmd.Dir = d.root
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		return "", err
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return out.String(), err
	case <-time.After(5 * time.Minute):
		cmd.Process.Kill()
		<-done
		return out.String(), fmt.Errorf("demo.sh %v did not finish within 5 minutes", args)
	}
}

func (d *demoRun) fincrypt(args ...string) result {
	return fincrypt(d.t, d.env, args...)
}

// leftovers lists the mounts and processes that still name the demo's
// directory.
func (d *demoRun) leftovers() []string {
	var out []string
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, d.root) {
				out = append(out, "mount: "+l)
			}
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Contains(b, []byte(d.root)) {
			continue
		}
		out = append(out, fmt.Sprintf("process %s: %s", filepath.Base(filepath.Dir(p)), bytes.ReplaceAll(b, []byte{0}, []byte{' '})))
	}
	return out
}

type demoStatus struct {
	PendingBytes     uint64 `json:"pending_bytes"`
	SegmentsDurable  int    `json:"segments_durable"`
	SegmentsDegraded int    `json:"segments_degraded"`
	SegmentsDead     int    `json:"segments_dead"`
	Online           bool   `json:"online"`
	EscrowWarning    string `json:"escrow_warning"`
	Protected        bool   `json:"protected"`
	Refusal          *struct {
		Reason string `json:"reason"`
	} `json:"refusal"`
	Payments *struct {
		EscrowSat          int64   `json:"escrow_sat"`
		PricePerGiBMonth   float64 `json:"price_sat_per_gib_month"`
		ChargePerPeriodSat float64 `json:"charge_per_period_sat"`
		RunwaySeconds      int64   `json:"runway_seconds"`
		Warning            string  `json:"warning"`
	} `json:"payments"`
	Errors []string `json:"errors"`
}

// TestDemo runs the demo as a user does: `make demo` (scripts/demo.sh)
// starts the devnet, funds the account and mounts ./Fincrypt once the
// deposit is credited; random data and a source tree are copied in and
// become durable; after six more periods the escrow is far from exhausted
// and nothing is scheduled for release; the script's stop leaves no mount
// and no process behind.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole demo")
	}
	needFUSE(t)
	btcd, err := btcdtest.Binary()
	if err != nil {
		t.Fatal(err)
	}
	size := uint64(demoDefaultSize)
	if s := os.Getenv("FINCRYPT_DEMO_SIZE"); s != "" {
		if size, err = units.ParseSize(s); err != nil {
			t.Fatalf("FINCRYPT_DEMO_SIZE: %v", err)
		}
	}
	period := demoDefaultPeriod
	if p := os.Getenv("FINCRYPT_DEMO_TEST_PERIOD"); p != "" {
		period = p
	}
	periodD, err := time.ParseDuration(period)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()

	root := t.TempDir()
	d := &demoRun{t: t, root: root}
	for _, l := range []struct{ src, dst string }{
		{"../../scripts/demo.sh", "scripts/demo.sh"}, {binPath, "bin/fincrypt"}, {btcd, "tools/bin/btcd"},
	} {
		src, _ := filepath.Abs(l.src)
		dst := filepath.Join(root, l.dst)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(src, dst); err != nil {
			t.Fatal(err)
		}
	}
	d.env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "FINCRYPT_DEMO_PERIOD=" + period}
	// The nodes' default capacity is a share of the free disk; on a small
	// disk give them what the data needs (pieces at 2/4 over 5 nodes, with
	// room for padding and repair).
	var fsst syscall.Statfs_t
	if err := syscall.Statfs(root, &fsst); err != nil {
		t.Fatal(err)
	}
	need := int64(size) * 2 / 5 * 2
	if devnet.DefaultCapacity(fsst.Bavail*uint64(fsst.Bsize), devnet.DefaultNodes) < need {
		t.Logf("small disk: the nodes get --capacity %d", need)
		d.env = append(d.env, fmt.Sprintf("FINCRYPT_DEMO_CAPACITY=%d", need))
	}
	t.Cleanup(func() {
		if left := d.leftovers(); len(left) > 0 {
			d.script("stop") // the test failed half-way: do not leave the demo running
		}
	})

	// make demo
	out, err := d.script()
	if err != nil {
		t.Fatalf("make demo: %v\n%s\n%s", err, out, tail(filepath.Join(root, ".demo", "devnet.out")))
	}
	t.Logf("make demo after %s:\n%s", time.Since(start).Round(time.Second), out)
	for _, words := range []string{"the network holds about", "The deposit is credited", "mounted at:"} {
		if !strings.Contains(out, words) {
			t.Errorf("make demo does not say %q", words)
		}
	}
	home := filepath.Join(root, ".demo", "home")
	mnt := filepath.Join(root, "Fincrypt")
	d.env = append(d.env, "FINCRYPT_HOME="+home, "FINCRYPT_PASSWORD=demo-password-change-me")

	// The user's first look: no refusal.
	var st demoStatus
	r := d.fincrypt("status", "--json")
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &st) != nil {
		t.Fatalf("status: %+v", r)
	}
	if !st.Protected || st.Refusal != nil || st.EscrowWarning != "" {
		t.Fatalf("first status after make demo refuses: %s", r.stdout)
	}

	// Random data and a source tree.
	sums := map[string][32]byte{}
	rng := rand.New(rand.NewChaCha8([32]byte{19}))
	buf := make([]byte, 1<<20)
	if err := os.MkdirAll(filepath.Join(mnt, "random"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i := 0; uint64(i)*demoFileSize < size; i++ {
		name := filepath.Join(mnt, "random", fmt.Sprintf("r%03d.bin", i))
		f, err := os.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		for n := uint64(0); n < min(demoFileSize, size-uint64(i)*demoFileSize); n += uint64(len(buf)) {
			for j := 0; j < len(buf); j += 8 {
				v := rng.Uint64()
				for k := range 8 {
					buf[j+k] = byte(v >> (8 * k))
				}
			}
			f.Write(buf)
			h.Write(buf)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		sums[name] = [32]byte(h.Sum(nil))
	}
	src, _ := filepath.Abs("../../net")
	if err := filepath.WalkDir(src, func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(filepath.Dir(src), path)
		dst := filepath.Join(mnt, "src", rel)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		sums[dst] = sha256.Sum256(b)
		return os.WriteFile(dst, b, 0o644)
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s in %d files after %s", units.HumanSize(size), len(sums), time.Since(start).Round(time.Second))

	// Everything durable; a refusal or an escrow warning fails at once.
	deadline := time.Now().Add(5*time.Minute + time.Duration(size>>20)*time.Second)
	for {
		r = d.fincrypt("status", "--json")
		st = demoStatus{}
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &st) != nil {
			t.Fatalf("status: %+v", r)
		}
		if st.Refusal != nil || st.EscrowWarning != "" || (st.Payments != nil && st.Payments.Warning != "") {
			t.Fatalf("the demo refuses or warns while storing %s:\n%s\n%s", units.HumanSize(size), r.stdout, d.fincrypt("status").stdout)
		}
		if st.PendingBytes == 0 && st.SegmentsDurable > 0 && st.SegmentsDegraded == 0 && st.Online {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not durable after %s:\n%s", time.Since(start).Round(time.Second), r.stdout)
		}
		time.Sleep(time.Second)
	}
	t.Logf("all durable after %s: %d segments", time.Since(start).Round(time.Second), st.SegmentsDurable)

	// Six more periods, charged.
	med := filepath.Join(root, ".demo", "net", "mediator")
	rounds := func() int64 {
		var ms struct {
			Rounds int64 `json:"rounds"`
		}
		r := d.fincrypt("mediator", "status", "--dir", med, "--json")
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &ms) != nil {
			t.Fatalf("mediator status: %+v", r)
		}
		return ms.Rounds
	}
	from := rounds()
	deadline = time.Now().Add(demoMorePeriods*periodD + 3*time.Minute)
	for rounds() < from+demoMorePeriods {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than %d challenge rounds after %s", demoMorePeriods, time.Since(start).Round(time.Second))
		}
		time.Sleep(periodD / 2)
	}
	// The escrow is not exhausted, nothing is scheduled for release, and the
	// account pays every period for the data it holds.
	var bal struct {
		Escrow, Bytes        int64
		Delinquent, CanPlace bool
		ReleaseAt            time.Time
		Runway               time.Duration
	}
	deadline = time.Now().Add(time.Minute)
	for {
		r = d.fincrypt("wallet", "balance", "--json")
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &bal) != nil {
			t.Fatalf("wallet balance: %+v", r)
		}
		if bal.Bytes >= int64(size) { // the pieces of everything stored were charged
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a settled period charged %d bytes of pieces, want at least %d: %s", bal.Bytes, size, r.stdout)
		}
		time.Sleep(periodD / 2)
	}
	if bal.Escrow <= 0 || bal.Delinquent || !bal.CanPlace || !bal.ReleaseAt.IsZero() || bal.Runway < 24*time.Hour {
		t.Fatalf("after %d more periods: %s", demoMorePeriods, r.stdout)
	}
	if r := d.fincrypt("status", "--json"); r.code != 0 || json.Unmarshal([]byte(r.stdout), &st) != nil {
		t.Fatalf("status: %+v", r)
	}
	if !st.Protected || st.SegmentsDead != 0 || st.Payments == nil || st.Payments.ChargePerPeriodSat <= 0 ||
		st.Payments.RunwaySeconds < 86400 || st.Payments.Warning != "" || !st.Online {
		t.Fatalf("status after %d more periods:\n%s", demoMorePeriods, r.stdout)
	}
	human := d.fincrypt("status").stdout
	t.Logf("fincrypt status:\n%s", human)
	for _, words := range []string{"online (the mediator answers)", "sat per GiB-month of your data", "runway:"} {
		if !strings.Contains(human, words) {
			t.Errorf("status does not say %q", words)
		}
	}
	for name, sum := range sums {
		f, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil || [32]byte(h.Sum(nil)) != sum {
			t.Fatalf("%s reads back wrong (%v)", name, err)
		}
	}

	// make demo-stop
	if out, err := d.script("stop"); err != nil {
		t.Fatalf("demo stop: %v\n%s", err, out)
	}
	deadline = time.Now().Add(30 * time.Second)
	for left := d.leftovers(); len(left) > 0; left = d.leftovers() {
		if time.Now().After(deadline) {
			t.Fatalf("after make demo-stop:\n%s", strings.Join(left, "\n"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("whole demo: %s", time.Since(start).Round(time.Second))
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}
