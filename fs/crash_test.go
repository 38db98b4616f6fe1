package fs_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/chunkstore"
	"github.com/fincrypt/fincrypt/fs"
	"github.com/fincrypt/fincrypt/vault"
)

// The test binary doubles as a mount server for the crash test: with these
// variables set, TestMain mounts the vault and serves until killed.
const (
	envServeHome = "FINCRYPT_TEST_SERVE_HOME"
	envServeMnt  = "FINCRYPT_TEST_SERVE_MNT"
	// envServeWriteback=1 mounts with the kernel's write-back cache.
	envServeWriteback = "FINCRYPT_TEST_SERVE_WRITEBACK"
)

func TestMain(m *testing.M) {
	if home := os.Getenv(envServeHome); home != "" {
		os.Exit(serve(home, os.Getenv(envServeMnt)))
	}
	os.Exit(m.Run())
}

func serve(home, mnt string) int {
	v, err := vault.Open(home, testPassword, vault.OpenOptions{Lock: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	m, err := fs.Mount(v, mnt, fs.Options{WritebackCache: os.Getenv(envServeWriteback) == "1"})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("ready")
	m.Wait()
	return 0
}

// startServer runs the mount in a child process and returns once it serves.
func startServer(t *testing.T, home, mnt string, writeback bool) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envServeHome+"="+home, envServeMnt+"="+mnt)
	if writeback {
		cmd.Env = append(cmd.Env, envServeWriteback+"=1")
	}
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		syscall.Unmount(mnt, syscall.MNT_DETACH)
	})
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(out).ReadString('\n')
		if err == nil && line != "ready\n" {
			err = fmt.Errorf("server said %q", line)
		}
		ready <- err
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatalf("mount server: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("mount server did not become ready")
	}
	return cmd
}

// TestCrashDurability kills the mount server with SIGKILL during heavy
// writes, then checks that every file whose fsync returned reads back
// identical after a remount and that the vault checks clean; with and
// without the kernel's write-back cache.
func TestCrashDurability(t *testing.T) {
	requireFUSE(t)
	t.Run("direct", func(t *testing.T) { testCrashDurability(t, false) })
	t.Run("writeback", func(t *testing.T) { testCrashDurability(t, true) })
}

func testCrashDurability(t *testing.T, writeback bool) {
	home := newVault(t, vault.CreateOptions{ChunkSize: 64 << 10})
	mnt := t.TempDir()
	srv := startServer(t, home, mnt, writeback)

	var (
		mu      sync.Mutex
		durable = map[string][32]byte{} // files whose last fsync returned
		wg      sync.WaitGroup
		stop    = make(chan struct{})
	)
	stopped := func() bool {
		select {
		case <-stop:
			return true
		default:
			return false
		}
	}
	// Writers of new files, each fsynced.
	for w := 0; w < 3; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 400 && !stopped(); i++ {
				name := fmt.Sprintf("w%d-%03d", w, i)
				data := randBytes(uint64(w*1000+i), 1000+(i*7919)%(600<<10))
				if !writeSynced(filepath.Join(mnt, name), os.O_TRUNC, data) {
					return
				}
				mu.Lock()
				durable[name] = sha256.Sum256(data)
				mu.Unlock()
			}
		}()
	}
	// A writer that rewrites parts of files it fsynced before; a file leaves
	// the durable set while it is being changed.
	wg.Add(1)
	go func() {
		defer wg.Done()
		name := "rewritten"
		p := filepath.Join(mnt, name)
		data := randBytes(42, 1<<20)
		for i := 0; i < 200 && !stopped(); i++ {
			mu.Lock()
			delete(durable, name)
			mu.Unlock()
			copy(data[(i*40009)%(1<<20-5000):], randBytes(uint64(i), 5000))
			if !writeSynced(p, 0, data) {
				return
			}
			mu.Lock()
			durable[name] = sha256.Sum256(data)
			mu.Unlock()
		}
	}()
	// A heavy writer that never fsyncs.
	wg.Add(1)
	go func() {
		defer wg.Done()
		f, err := os.Create(filepath.Join(mnt, "stream"))
		if err != nil {
			return
		}
		defer f.Close()
		buf := randBytes(7, 1<<20)
		for i := 0; i < 2000 && !stopped(); i++ {
			if _, err := f.Write(buf); err != nil {
				return
			}
		}
	}()

	// Kill once enough files are durable (bounded in time), while the
	// writers are still going.
	start := time.Now()
	for time.Since(start) < 20*time.Second {
		time.Sleep(100 * time.Millisecond)
		mu.Lock()
		n := len(durable)
		mu.Unlock()
		if n >= 20 && time.Since(start) > time.Second {
			break
		}
	}
	if err := srv.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	srv.Wait()
	close(stop)
	// The dead connection fails every writer's next call. Wait for them all
	// before detaching: a writer still running after the detach would write
	// into the bare mountpoint directory and count that file as durable.
	wg.Wait()
	if err := syscall.Unmount(mnt, syscall.MNT_DETACH); err != nil {
		t.Fatalf("detaching the dead mount: %v", err)
	}
	if ents, err := os.ReadDir(mnt); err != nil || len(ents) != 0 {
		t.Fatalf("the bare mountpoint holds %d entries (%v): a write escaped the mount", len(ents), err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(durable) < 5 {
		t.Fatalf("only %d files were fsynced before the kill; the test proves little", len(durable))
	}
	t.Logf("%d files fsynced before the kill", len(durable))

	// The offline check reads the crashed index (Pebble replays its log
	// read-only) and finds it consistent; chunks written but never committed
	// are only noted (the next mount collects them).
	v, err := vault.Open(home, testPassword, vault.OpenOptions{Lock: true})
	if err != nil {
		t.Fatal(err)
	}
	var report strings.Builder
	n, err := fs.Check(v, &report)
	v.Close()
	if err != nil {
		t.Fatalf("check after the crash: %v", err)
	}
	if n != 0 {
		t.Errorf("check after the crash found %d problems:\n%s", n, report.String())
	}
	t.Logf("check after the crash: %s", strings.TrimSpace(report.String()))

	tm := mountVault(t, home)
	for name, sum := range durable {
		b, err := os.ReadFile(tm.path(name))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if sha256.Sum256(b) != sum {
			t.Errorf("%s: content differs from what was fsynced (%d bytes)", name, len(b))
		}
	}
	tm.unmount()
	checkVault(t, home)
}

// TestTamperedChunks alters chunk files in the store: a flipped byte, a chunk
// moved to another position and an older version put back all read as EIO,
// never as wrong data, and Check reports them.
func TestTamperedChunks(t *testing.T) {
	fs.UseFileStore(t) // works on chunk files
	requireFUSE(t)
	const cs = 4096
	home := newVault(t, vault.CreateOptions{ChunkSize: cs})
	store := filepath.Join(home, vault.StoreDirName)
	chunkFiles := func() map[string][]byte {
		out := map[string][]byte{}
		filepath.Walk(store, func(p string, info os.FileInfo, err error) error {
			if err == nil && info.Mode().IsRegular() && info.Name() != chunkstore.OwnerFile {
				out[p] = readFile(t, p)
			}
			return nil
		})
		return out
	}
	tm := mountVault(t, home)
	data := randBytes(5, 2*cs)
	writeFile(t, tm.path("f"), data)
	tm.unmount()
	v1 := chunkFiles()
	if len(v1) != 2 {
		t.Fatalf("%d chunk files, want 2", len(v1))
	}
	tm = mountVault(t, home)
	f, err := os.OpenFile(tm.path("f"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("new"), 0) // chunk 0 gets a new version
	f.Close()
	tm.unmount()
	v2 := chunkFiles()
	var chunk0, chunk1, old0 string
	for p := range v2 {
		if _, ok := v1[p]; ok {
			chunk1 = p
		} else {
			chunk0 = p
		}
	}
	for p := range v1 {
		if p != chunk1 {
			old0 = p
		}
	}
	if chunk0 == "" || chunk1 == "" || old0 == "" {
		t.Fatalf("could not tell the chunks apart: %v %v", v1, v2)
	}
	want0 := append([]byte("new"), data[3:cs]...)

	cases := []struct {
		name   string
		tamper func()
	}{
		{"flipped byte", func() {
			b := bytes.Clone(v2[chunk1])
			b[len(b)/2] ^= 1
			os.WriteFile(chunk1, b, 0o600)
		}},
		{"truncated", func() { os.WriteFile(chunk1, v2[chunk1][:100], 0o600) }},
		{"moved to another position", func() { os.WriteFile(chunk1, v2[chunk0], 0o600) }},
		{"older version replayed", func() { os.WriteFile(chunk0, v1[old0], 0o600) }},
		{"missing", func() { os.Remove(chunk1) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for p, b := range v2 { // restore the good state
				os.WriteFile(p, b, 0o600)
			}
			checkVault(t, home)
			tc.tamper()
			var out strings.Builder
			v, err := vault.Open(home, testPassword, vault.OpenOptions{Lock: true})
			if err != nil {
				t.Fatal(err)
			}
			n, err := fs.Check(v, &out)
			v.Close()
			if err != nil || n == 0 {
				t.Fatalf("check after tampering: %d problems, %v", n, err)
			}
			t.Logf("check: %s", strings.TrimSpace(out.String()))
			tm := mountVault(t, home)
			f, err := os.Open(tm.path("f"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			buf := make([]byte, cs)
			// One chunk is intact and must still read; the other gives EIO.
			bad, good, goodWant := int64(cs), int64(0), want0
			if tc.name == "older version replayed" {
				bad, good, goodWant = 0, cs, data[cs:]
			}
			if _, err := f.ReadAt(buf, good); err != nil {
				t.Fatalf("intact chunk: %v", err)
			}
			mustEqual(t, "intact chunk", buf, goodWant)
			_, err = f.ReadAt(buf, bad)
			wantErrno(t, "tampered chunk", err, syscall.EIO)
		})
	}
}

// writeSynced writes data at offset 0 of path (created if missing; flag may
// add O_TRUNC) and fsyncs it; it reports whether the fsync returned success,
// which is when the data must survive a crash.
func writeSynced(path string, flag int, data []byte) bool {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|flag, 0o644)
	if err != nil {
		return false
	}
	defer f.Close()
	if _, err := f.WriteAt(data, 0); err != nil {
		return false
	}
	return f.Sync() == nil
}
