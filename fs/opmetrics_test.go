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
	"github.com/fincrypt/fincrypt/vault"
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
	// A file opened for writing is flushed at its close (a new one is
	// not: it is opened with FOPEN_NOFLUSH).
	f, err := os.OpenFile(tm.path("d/f"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	f, err = os.OpenFile(tm.path("d/f"), os.O_RDONLY|0x4000 /* O_DIRECT: reach the file system */, 0)
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

// TestCreateSendsNoFlush: a new file created, written and closed costs no
// FLUSH round trip (its handle is opened with FOPEN_NOFLUSH): at most six
// requests a file (LOOKUP of the new name, CREATE, GETXATTR before the
// first write, WRITE, RELEASE and the directory's GETATTR), where the
// FLUSH made seven. What each file holds is committed to the index by its
// RELEASE, without a FLUSH, and reads back after a remount.
func TestCreateSendsNoFlush(t *testing.T) {
	requireFUSE(t)
	ops := fs.NewOpMetrics()
	reg := prometheus.NewRegistry()
	reg.MustRegister(ops.Collectors()...)
	home := newVault(t, fastKDF)
	tm := mountVaultOpt(t, home, fs.Options{Metrics: ops})
	if err := os.Mkdir(tm.path("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	const files = 50
	data := make([][]byte, files)
	before, _ := opCounts(t, reg)
	for i := range files {
		data[i] = randBytes(uint64(i), 1000+i*97)
		writeFile(t, tm.path("d", "f"+strconv.Itoa(i)), data[i])
	}
	if err := tm.m.WaitIdle(time.Minute); err != nil {
		t.Fatal(err)
	}
	after, _ := opCounts(t, reg)
	total := 0.0
	for op, n := range after {
		total += n - before[op]
	}
	if n := after["flush"] - before["flush"]; n != 0 {
		t.Errorf("%v FLUSH requests for %d new files, want none", n, files)
	}
	if n := after["release"] - before["release"]; n != files {
		t.Errorf("%v RELEASE requests for %d files", n, files)
	}
	if total > 6*files {
		t.Errorf("%v requests for %d new files written and closed, want at most 6 a file", total, files)
	}
	releasedThenRemount(t, tm, data)
}

// releasedThenRemount checks that each file d/fI (I the index in data) has
// its chunk and size in the index once its RELEASE was served, then
// remounts the vault and checks each reads back; it returns the new mount.
func releasedThenRemount(t *testing.T, tm *testMount, data [][]byte) *testMount {
	t.Helper()
	for i := range data {
		var st syscall.Stat_t
		if err := syscall.Stat(tm.path("d", "f"+strconv.Itoa(i)), &st); err != nil {
			t.Fatal(err)
		}
		in, err := tm.m.Index().GetInode(st.Ino)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok, err := tm.m.Index().GetChunk(st.Ino, 0); err != nil || !ok || in.Size != uint64(len(data[i])) {
			t.Fatalf("file %d after its release: chunk in the index %v (%v), size %d, want %d", i, ok, err, in.Size, len(data[i]))
		}
	}
	tm.unmount()
	tm = mountVault(t, tm.home)
	for i := range data {
		mustEqual(t, "file "+strconv.Itoa(i)+" after a remount", readFile(t, tm.path("d", "f"+strconv.Itoa(i))), data[i])
	}
	return tm
}

// TestSmallFileReleaseSealsInline: the last release of a small file seals,
// stores and commits its one chunk itself, in one index batch with the
// size, instead of handing it to a sealing worker (two goroutines and
// their wake-ups per file). A file of several chunks, and a release that
// finds every sealing slot taken, still go through the worker; every file
// is in the index once released and reads back after a remount.
func TestSmallFileReleaseSealsInline(t *testing.T) {
	requireFUSE(t)
	home := newVault(t, vault.CreateOptions{KDF: fastKDF.KDF, ChunkSize: 64 << 10})
	tm := mountVault(t, home)
	if err := os.Mkdir(tm.path("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	const files = 40
	data := make([][]byte, files)
	queued := fs.ChunksQueued()
	for i := range files {
		data[i] = randBytes(uint64(i), 1000+i*397)
		writeFile(t, tm.path("d", "f"+strconv.Itoa(i)), data[i])
		// close(2) of a new file returns before its RELEASE is served
		// (FOPEN_NOFLUSH): wait for it, so that each release finds a
		// sealing slot free. Without the wait, on a loaded machine the
		// releases of the files before, each holding a slot through its
		// synced commit, took all four now and then, and the release
		// queued its chunk, as it must (the case tested below).
		if err := tm.m.WaitIdle(time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if n := fs.ChunksQueued() - queued; n != 0 {
		t.Errorf("%d chunks handed to the sealing worker for %d small files written and closed, want none", n, files)
	}
	// Two full chunks and a partial one: the writes queue the full ones
	// for the worker; the partial one is sealed by the release, or queued
	// if the worker is still busy with the others.
	big := randBytes(99, 2*64<<10+100)
	queued = fs.ChunksQueued()
	writeFile(t, tm.path("d", "big"), big)
	if err := tm.m.WaitIdle(time.Minute); err != nil {
		t.Fatal(err)
	}
	if n := fs.ChunksQueued() - queued; n != 2 && n != 3 {
		t.Errorf("%d chunks queued for a file of two full chunks and a partial one, want 2 or 3", n)
	}
	// Every sealing slot taken: the release queues its chunk and waits
	// for a slot without holding the file.
	hold := tm.m.HoldSealing()
	queued = fs.ChunksQueued()
	held := randBytes(100, 5000)
	writeFile(t, tm.path("d", "held"), held)
	deadline := time.Now().Add(time.Minute)
	for fs.ChunksQueued()-queued != 1 {
		if time.Now().After(deadline) {
			hold()
			t.Fatalf("%d chunks queued by a release that found no sealing slot, want 1", fs.ChunksQueued()-queued)
		}
		time.Sleep(time.Millisecond)
	}
	hold()
	if err := tm.m.WaitIdle(time.Minute); err != nil {
		t.Fatal(err)
	}
	tm = releasedThenRemount(t, tm, data)
	mustEqual(t, "big after a remount", readFile(t, tm.path("d", "big")), big)
	mustEqual(t, "held after a remount", readFile(t, tm.path("d", "held")), held)
}
