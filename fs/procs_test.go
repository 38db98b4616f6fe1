package fs_test

import (
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/fs"
	"github.com/fincrypt/fincrypt/vault"
)

// fuseReadersBlocked counts this process's threads blocked in read(2) on a
// /dev/fuse descriptor (go-fuse's idle readers), from /proc/self/task/*/syscall.
func fuseReadersBlocked(t *testing.T) int {
	t.Helper()
	fds := map[string]bool{}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && l == "/dev/fuse" {
			n, _ := strconv.Atoi(e.Name())
			fds["0x"+strconv.FormatInt(int64(n), 16)] = true
		}
	}
	tasks, err := filepath.Glob("/proc/self/task/*/syscall")
	if err != nil || len(tasks) == 0 {
		t.Skipf("no /proc/self/task/*/syscall on this kernel: %v", err)
	}
	n := 0
	for _, p := range tasks {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // the thread ended
		}
		f := strings.Fields(string(b))
		if len(f) >= 2 && f[0] == "0" && fds[f[1]] { // 0: read
			n++
		}
	}
	return n
}

// TestIdleReadersLeaveTheCPUsTheirPs: go-fuse keeps goroutines blocked
// reading /dev/fuse between requests, each holding a P until the runtime
// takes it away; a mount adds a P for each, so that while a program sends
// one request at a time, the readers never hold the Ps the CPUs need for
// the requests (procs.go). Without it the three idle readers of a
// two-CPU machine held both Ps. Each mount adds its own and gives them
// back when it ends.
func TestIdleReadersLeaveTheCPUsTheirPs(t *testing.T) {
	requireFUSE(t)
	// The mounts of earlier tests give their Ps back when their serve
	// loops return, a moment after their unmounts: counted from before
	// that, the base held another mount's Ps, which went back during the
	// test (a clean-clone CI run under -race: "GOMAXPROCS 5 while mounted,
	// want 11").
	for deadline := time.Now().Add(time.Minute); fs.ServingExtraProcs() != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("an earlier mount still holds %d added Ps after a minute", fs.ServingExtraProcs())
		}
	}
	base := runtime.GOMAXPROCS(0)
	tm := mountVault(t, newVault(t, fastKDF))
	if got, want := runtime.GOMAXPROCS(0), base+fs.IdleReaders(base); got != want {
		t.Fatalf("GOMAXPROCS %d while mounted, want %d (%d + %d idle readers)", got, want, base, fs.IdleReaders(base))
	}
	// One request at a time, as a program creating files sends them; the
	// readers are counted between the requests.
	most := 0
	for i := range 200 {
		writeFile(t, tm.path("f"+strconv.Itoa(i)), nil)
		most = max(most, fuseReadersBlocked(t))
	}
	if most == 0 {
		t.Fatal("no thread seen blocked reading /dev/fuse: the count does not see go-fuse's readers")
	}
	if spare := runtime.GOMAXPROCS(0) - base; most > spare {
		t.Fatalf("%d goroutines blocked reading /dev/fuse, but only %d Ps beyond the CPUs' %d: idle readers hold the Ps requests need", most, spare, base)
	}
	// A second mount adds its readers' Ps; each unmount gives its own back.
	tm2 := mountVault(t, newVault(t, fastKDF))
	if got, want := runtime.GOMAXPROCS(0), base+2*fs.IdleReaders(base); got != want {
		t.Fatalf("GOMAXPROCS %d with two mounts, want %d", got, want)
	}
	tm.unmount()
	waitProcs(t, base+fs.IdleReaders(base))
	tm2.unmount()
	waitProcs(t, base)
}

// waitProcs waits until GOMAXPROCS is want: a server gives its Ps back
// when its serve loop has ended, just after the unmount returns.
func waitProcs(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if runtime.GOMAXPROCS(0) == want {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("GOMAXPROCS %d, want %d", runtime.GOMAXPROCS(0), want)
}

// heldHeap is the heap memory the Go runtime holds from the operating
// system (in use or free, but not given back), from runtime/metrics.
func heldHeap() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/heap/unused:bytes"},
		{Name: "/memory/classes/heap/free:bytes"}}
	metrics.Read(s)
	var n uint64
	for _, x := range s {
		n += x.Value.Uint64()
	}
	return n
}

// TestMountGivesBackTheKDFsHeap: the 64 MiB the password's key derivation
// takes to open a vault are garbage once it is open; a mount returns them
// to the operating system before it serves (releaseStartupHeap), instead
// of leaving them to Go's background scavenger, which gave them back over
// the first minutes of service at up to 10 % of the mount's CPU. Counted
// in bytes the runtime holds, not in time.
func TestMountGivesBackTheKDFsHeap(t *testing.T) {
	requireFUSE(t)
	kdf := vault.CreateOptions{KDF: vault.KDFParams{Time: 1, MemoryK: 64 * 1024, Threads: 1}} // DefaultKDF's memory
	home := newVault(t, kdf)
	runtime.GC()
	debug.FreeOSMemory()
	before := heldHeap()
	tm := mountVault(t, home) // opens the vault (64 MiB of argon2id), then mounts
	after := heldHeap()
	if grew := int64(after) - int64(before); grew > 32<<20 {
		t.Fatalf("the process holds %d MiB more heap after opening and mounting the vault, want < 32: the key derivation's 64 MiB were not given back", grew>>20)
	}
	writeFile(t, tm.path("f"), []byte("x")) // the mount serves
}
