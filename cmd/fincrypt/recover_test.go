package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fincrypt/fincrypt/chunkstore"
	"github.com/fincrypt/fincrypt/meta"
)

// TestDamagedIndexCLI: a torn index log after a clean unmount. `mount`
// refuses (exit 5) and deletes nothing, `check` says what is lost (exit 5),
// `recover` without a network says to use --local, and `recover --local`
// sets the unreferenced chunks aside so that the vault mounts again with
// what the index still holds.
func TestDamagedIndexCLI(t *testing.T) {
	v := newMountedVault(t)
	// Each file is fsynced, so its chunk reference is in the index's log
	// before the next file is created: the log's first half then holds
	// whole files whatever the timing of the commits of closed files.
	for i := 0; i < 20; i++ {
		f, err := os.Create(filepath.Join(v.mnt, fmt.Sprintf("f%02d", i)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteString(strings.Repeat(fmt.Sprint(i), 3000)); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	v.umount(t)
	logs, _ := filepath.Glob(filepath.Join(v.home, "index", "*.log"))
	torn := false
	for _, p := range logs {
		if st, err := os.Stat(p); err == nil && st.Size() > 1024 {
			os.Truncate(p, st.Size()/2)
			torn = true
		}
	}
	if !torn {
		t.Fatal("no index log to tear")
	}
	store := filepath.Join(v.home, "store")
	before := countStore(store)

	r := fincrypt(t, nil, "--home", v.home, "mount", "--password-file", v.pw, v.mnt)
	assertUserError(t, r, exitCorrupt, "fincrypt recover")
	if isMounted(v.mnt) {
		t.Fatal("mounted the damaged index")
	}
	r = fincrypt(t, nil, "--home", v.home, "check", "--password-file", v.pw)
	if r.code != exitCorrupt || !strings.Contains(r.stdout, "lost:") || !strings.Contains(r.stdout, "fincrypt recover") {
		t.Fatalf("check of a torn index: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if got := countStore(store); got != before {
		t.Fatalf("%d chunks in the store, %d before: something deleted them", got, before)
	}
	assertUserError(t, fincrypt(t, nil, "--home", v.home, "recover", "--password-file", v.pw), exitUsage, "--local")

	r = fincrypt(t, nil, "--home", v.home, "recover", "--local", "--password-file", v.pw)
	if r.code != 0 || !strings.Contains(r.stdout, "kept, not deleted") {
		t.Fatalf("recover --local: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	lost, _ := filepath.Glob(store + ".lost-*")
	if len(lost) != 1 || countStore(store)+countStore(lost[0]) != before {
		t.Fatalf("set aside %v: chunks were lost", lost)
	}
	v.check(t)
	v.mount(t)
	ents, err := os.ReadDir(v.mnt)
	if err != nil {
		t.Fatal(err)
	}
	whole := 0
	for _, e := range ents {
		var i int
		fmt.Sscanf(e.Name(), "f%02d", &i)
		b, err := os.ReadFile(filepath.Join(v.mnt, e.Name()))
		if err != nil {
			t.Fatalf("%s after recovery: %v", e.Name(), err)
		}
		switch {
		case string(b) == strings.Repeat(fmt.Sprint(i), 3000):
			whole++
		case strings.Trim(string(b), "\x00") == "":
			// The torn log kept its name and size but lost its chunk
			// reference: a hole, as after a power loss before fsync.
		default:
			t.Fatalf("%s after recovery holds %d bytes of something else", e.Name(), len(b))
		}
	}
	if whole == 0 {
		t.Fatal("no file survived the torn log whole: the test tore too much to show anything")
	}
	t.Logf("%d files listed, %d whole of 20 after the torn log; %d chunks set aside", len(ents), whole, countStore(lost[0]))
	v.umount(t)
}

// countStore counts the chunks in a chunk store: through the store for
// one of packs (format 2; read only, so a running writer may go on), else
// its chunk files (format 1, and the directories chunks are set aside in).
func countStore(dir string) int {
	if _, err := os.Stat(filepath.Join(dir, chunkstore.FormatFile)); err == nil {
		s, err := chunkstore.OpenExisting(dir)
		if err != nil {
			return -1
		}
		defer s.Close()
		n := 0
		if err := s.List(func(meta.ChunkID) error { n++; return nil }, func(string) {}); err != nil {
			return -1
		}
		return n
	}
	n := 0
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && d.Name() != "VAULT" {
			n++
		}
		return nil
	})
	return n
}
