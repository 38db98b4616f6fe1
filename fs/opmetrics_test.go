package fs_test

import (
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/fincrypt/fincrypt/fs"
)

// opCounts gathers the FUSE op metrics: requests and errors by operation.
func opCounts(t testing.TB, reg *prometheus.Registry) (reqs, errs map[string]float64) {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	reqs, errs = map[string]float64{}, map[string]float64{}
	for _, f := range fams {
		for _, m := range f.Metric {
			op := label(m, "op")
			switch f.GetName() {
			case "fincrypt_mount_fuse_op_duration_seconds":
				reqs[op] = float64(m.Histogram.GetSampleCount())
			case "fincrypt_mount_fuse_op_errors_total":
				errs[op] = m.Counter.GetValue()
			}
		}
	}
	return reqs, errs
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.Label {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// TestFUSEOpMetrics: with Options.Metrics every request a program makes
// is counted under its operation, and a failing one as an error.
func TestFUSEOpMetrics(t *testing.T) {
	requireFUSE(t)
	ops := fs.NewOpMetrics()
	reg := prometheus.NewRegistry()
	reg.MustRegister(ops.Collectors()...)
	tm := mountVaultOpt(t, newVault(t, fastKDF), fs.Options{Metrics: ops})
	before, errs0 := opCounts(t, reg)
	if err := os.Mkdir(tm.path("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tm.path("d/f"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(tm.path("d/f"), os.O_RDONLY|0x4000 /* O_DIRECT: reach the file system */, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Read(make([]byte, 4096))
	f.Close()
	if _, err := os.ReadDir(tm.path("d")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tm.path("d/missing")); !os.IsNotExist(err) {
		t.Fatalf("stat of a missing file: %v", err)
	}
	if err := syscall.Rmdir(tm.path("d")); err != syscall.ENOTEMPTY {
		t.Fatalf("rmdir of a directory with a file: %v", err)
	}
	if err := os.Remove(tm.path("d/f")); err != nil {
		t.Fatal(err)
	}
	after, errs1 := opCounts(t, reg)
	for _, op := range []string{"mkdir", "create", "write", "flush", "release", "open", "read", "lookup", "unlink"} {
		if after[op] <= before[op] {
			t.Errorf("op %s: %v requests before, %v after", op, before[op], after[op])
		}
	}
	if after["readdir"]+after["readdirplus"] <= before["readdir"]+before["readdirplus"] {
		t.Errorf("no readdir counted")
	}
	if errs1["rmdir"] <= errs0["rmdir"] {
		t.Errorf("the failed rmdir is not counted as an error")
	}
	if errs1["write"] != errs0["write"] {
		t.Errorf("successful writes counted as errors")
	}
}

// BenchmarkFUSEOpMetrics creates small files through a mount with and one
// without the FUSE op metrics, in alternating rounds in the same run, and
// reports files/s of each and the ratio with/without (1: no overhead).
func BenchmarkFUSEOpMetrics(b *testing.B) {
	requireFUSE(b)
	n := smallFileCount()
	data := make([][]byte, n)
	for i := range data {
		data[i] = randBytes(uint64(i), 1024+(i*2654435761)%(15*1024))
	}
	plain := mountVault(b, newVault(b, fastKDF))
	mo := fs.Options{Metrics: fs.NewOpMetrics()}
	if os.Getenv("FINCRYPT_BENCH_AA") != "" { // both plain: the noise of the ratio
		mo.Metrics = nil
	}
	metered := mountVaultOpt(b, newVault(b, fastKDF), mo)
	run := func(tm *testMount, name string, from int) time.Duration {
		dir := tm.path(name)
		start := time.Now()
		if from == 0 {
			for d := 0; d < 10; d++ {
				if err := os.MkdirAll(filepath.Join(dir, strconv.Itoa(d)), 0o755); err != nil {
					b.Fatal(err)
				}
			}
		}
		for i := from; i < min(from+smallRound, n); i++ {
			if err := createSmall(dir, i, data[i]); err != nil {
				b.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(dir, strconv.Itoa(i%10))); err != nil {
				b.Fatal(err)
			}
		}
		if err := tm.m.WaitIdle(time.Minute); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	var pt, mt time.Duration
	for it := 0; b.Loop(); it++ {
		name := "it" + strconv.Itoa(it)
		for from := 0; from < n; from += smallRound {
			if (from/smallRound)%2 == 0 { // alternate who goes first
				pt += run(plain, name, from)
				mt += run(metered, name, from)
			} else {
				mt += run(metered, name, from)
				pt += run(plain, name, from)
			}
		}
	}
	fps := func(d time.Duration) float64 { return float64(b.N*n) / d.Seconds() }
	b.ReportMetric(fps(mt), "metered-files/s")
	b.ReportMetric(fps(pt), "plain-files/s")
	b.ReportMetric(pt.Seconds()/mt.Seconds(), "ratio")
}
