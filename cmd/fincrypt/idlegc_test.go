package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/internal/metrics/metricstest"
)

// TestIdleMountStopsCollecting mounts a vault as a user does (a process of
// its own, looking for idleness every 50 ms): once idle, its Go collector
// is off (go_gc_gogc_percent -1 in its metrics, with a memory limit set),
// so the runtime's forced collection every two minutes does not wake it;
// work through the mount (32 MiB, past the limit's headroom) brings the
// collection that turns it back on, and the next quiet turns it off again.
func TestIdleMountStopsCollecting(t *testing.T) {
	needFUSE(t)
	base := t.TempDir()
	v := newInitVault(t, base)
	if r := fincrypt(t, []string{envIdleGCEvery + "=50ms"}, "--home", v.home, "--debug", "mount", "--password-file", v.pw,
		"--metrics-listen", "127.0.0.1:0", "--log-format", "json", v.mnt); r.code != 0 {
		log, _ := os.ReadFile(filepath.Join(v.home, mountLogName))
		t.Fatalf("mount: %+v\nmount.log:\n%s", r, log)
	}
	t.Cleanup(func() {
		if isMounted(v.mnt) {
			syscall.Unmount(v.mnt, syscall.MNT_DETACH)
		}
		if pid := v.pid(); pid > 0 {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	logPath := filepath.Join(v.home, mountLogName)
	url := metricsURL(t, logPath)
	count := func(msg string) int {
		b, _ := os.ReadFile(logPath)
		return bytes.Count(b, []byte(`"msg":"`+msg+`"`))
	}
	const off, on = "idle: the Go collector is off until work comes", "work: the Go collector is back on"
	waitFor(t, "the idle mount to turn its collector off", 30*time.Second, func() (bool, string) {
		return count(off) >= 1, fmt.Sprintf("%d off, %d on", count(off), count(on))
	})
	// A scrape reads the runtime's settings before its own allocation is
	// seen: the collector is off unless the mount came back to work. (The
	// runtime reports GOGC=off, -1, as a uint64: 2^64-1.)
	m, _ := metricstest.Scrape(t, url)
	if gogc, limit := m.Must(t, "go_gc_gogc_percent"), m.Must(t, "go_gc_gomemlimit_bytes"); count(on) == 0 && (gogc < 1<<63 || limit >= 1<<62) {
		t.Fatalf("the mount says its collector is off, but GOGC is %v and the memory limit %v", gogc, limit)
	}

	// Each pause is logged once and followed by at most one resume: the
	// collector is off while there are more offs than ons.
	paused := func() (bool, string) {
		return count(off) > count(on), fmt.Sprintf("%d off, %d on", count(off), count(on))
	}
	waitFor(t, "the mount, idle after the scrape, to have its collector off", 30*time.Second, paused)

	// Work: 32 MiB of files through the mount, allocated by the mount as
	// it serves them (the limit's headroom is the live heap, a few MB).
	ons := count(on)
	buf := bytes.Repeat([]byte("fincrypt"), 128<<10) // 1 MiB
	for i := range 32 {
		if err := os.WriteFile(filepath.Join(v.mnt, fmt.Sprintf("f%d", i)), buf, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the working mount to turn its collector back on", 30*time.Second, func() (bool, string) {
		return count(on) > ons, fmt.Sprintf("%d off, %d on (%d before the work)", count(off), count(on), ons)
	})
	waitFor(t, "the mount, idle again, to turn its collector off again", 60*time.Second, paused)
	for i := range 32 {
		got, err := os.ReadFile(filepath.Join(v.mnt, fmt.Sprintf("f%d", i)))
		if err != nil || !bytes.Equal(got, buf) {
			t.Fatalf("f%d read back %d bytes (%v), want the %d written", i, len(got), err, len(buf))
		}
	}
	v.umount(t)
	v.check(t)
}
