package replicate

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/internal/fault"
)

// injector panics in the named kinds of work while they are switched on.
type injector struct {
	mu   sync.Mutex
	on   map[string]bool
	hits map[string]int
}

func newInjector(b *fault.Board) *injector {
	in := &injector{on: map[string]bool{}, hits: map[string]int{}}
	b.SetHook(func(work string) {
		in.mu.Lock()
		on := in.on[work]
		if on {
			in.hits[work]++
		}
		in.mu.Unlock()
		if on {
			panic("injected fault in " + work)
		}
	})
	return in
}

func (in *injector) set(work string, on bool) {
	in.mu.Lock()
	in.on[work] = on
	in.mu.Unlock()
}

// waitFault waits until status shows a fault of work caused by a panic, or,
// with want false, until it shows none at all.
func (c *client) waitFault(t *testing.T, work string, want bool) *Status {
	t.Helper()
	deadline := time.Now().Add(40 * time.Second)
	for {
		st, err := QueryStatus(c.home)
		if err != nil {
			t.Fatal(err)
		}
		if !want && len(st.Faults) == 0 {
			return st
		}
		for _, f := range st.Faults {
			if want && f.Work == work && f.Panics > 0 {
				if f.Since.IsZero() || !strings.Contains(f.Err, "injected fault") {
					t.Fatalf("fault of %s without its time or cause: %+v", work, f)
				}
				return st
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("status after 40s (want a fault of %q: %v): faults %+v", work, want, st.Faults)
		}
		c.rep.Kick()
		time.Sleep(50 * time.Millisecond)
	}
}

// answers checks that the mount serves: what was written reads back, and a
// new file can be written and read.
func (c *client) answers(t *testing.T, files map[string][]byte, name string) {
	t.Helper()
	checkTree(t, c.mnt, files)
	p := filepath.Join(c.mnt, "alive", name)
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, []byte(name), 0o644); err != nil {
		t.Fatalf("the mount stopped answering: %v", err)
	}
	files[filepath.Join("alive", name)] = []byte(name)
}

// TestBackgroundFaultsContained makes each kind of background work panic in
// turn: the mount keeps answering from the local store, status shows what
// failed, since when and why, and once the fault is gone the next retry
// succeeds and the status clears. Before, a panic in any of them killed the
// mount process (every program in the folder got ENOTCONN).
func TestBackgroundFaultsContained(t *testing.T) {
	p, home := planetAndVault(t)
	board := fault.New(nil)
	inj := newInjector(board)
	cfg := fastConfig()
	cfg.Faults = board
	inj.set("upload segment", true) // the packing goroutine, where the mount died
	c := mount(t, p, home, cfg)
	files := writeTree(t, c.mnt, 1)

	st := c.waitFault(t, "upload", true)
	if st.PendingChunks == 0 {
		t.Fatalf("the upload that panicked recorded its chunks as uploaded: %+v", st)
	}
	c.answers(t, files, "during-upload-fault")
	inj.set("upload segment", false)
	c.waitSynced("after the upload fault cleared")
	c.waitFault(t, "", false)

	for _, work := range []string{"snapshot", "maintain", "health", "evict"} {
		inj.set(work, true)
		if work == "evict" {
			// The cache is trimmed only after the index changed (or a
			// fetch): the last change may have been trimmed before the
			// fault was switched on, so make one now.
			c.answers(t, files, "before-"+work+"-fault")
		}
		c.waitFault(t, work, true)
		c.answers(t, files, "during-"+work+"-fault")
		inj.set(work, false)
		c.waitFault(t, "", false)
	}
	c.waitSynced("after the faults")

	// A fetch of an evicted chunk that panics fails that read only.
	c.dropCaches(t)
	inj.set("fetch", true)
	var name string
	for n := range files {
		if strings.HasPrefix(n, "media/") {
			name = n
		}
	}
	_, err := os.ReadFile(filepath.Join(c.mnt, name))
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("read with a failing fetch: %v, want EIO", err)
	}
	c.waitFault(t, "fetch", true)
	if _, err := os.Stat(filepath.Join(c.mnt, "docs")); err != nil {
		t.Fatalf("the mount stopped answering after a fetch fault: %v", err)
	}
	inj.set("fetch", false)
	checkTree(t, c.mnt, files)
	c.waitFault(t, "", false)
	c.unmount()
}
