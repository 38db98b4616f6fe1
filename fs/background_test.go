package fs_test

import (
	"bytes"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/fs"
	"github.com/fincrypt/fincrypt/internal/fault"
	"github.com/fincrypt/fincrypt/vault"
)

// TestBackgroundSyncFaultContained makes the mount's background sync (which
// reclaims superseded chunks) panic: the mount keeps answering, the fault is
// recorded with its cause, and once the fault is gone the next tick syncs,
// clears it and reclaims the chunks; the vault then checks clean.
func TestBackgroundSyncFaultContained(t *testing.T) {
	fs.UseFileStore(t) // works on chunk files
	requireFUSE(t)
	home := newVault(t, vault.CreateOptions{ChunkSize: 4096})
	board := fault.New(nil)
	var failing atomic.Bool
	failing.Store(true)
	board.SetHook(func(work string) {
		if work == "sync" && failing.Load() {
			panic("injected fault in the background sync")
		}
	})
	tm := mountVaultOpt(t, home, fs.Options{Faults: board, SyncInterval: 20 * time.Millisecond})
	p := tm.path("f")
	want := randBytes(7, 5*4096)
	writeFile(t, p, randBytes(8, 5*4096))
	writeFile(t, p, want) // supersedes the first version's chunks

	waitFaults(t, board, func(l []fault.Fault) bool {
		return len(l) == 1 && l[0].Work == "sync" && l[0].Panics > 0 && strings.Contains(l[0].Err, "injected") && !l[0].Since.IsZero()
	})
	mustEqual(t, "read during the fault", readFile(t, p), want)
	writeFile(t, tm.path("g"), []byte("still answering"))
	store := vaultStoreDir(t, home)
	before := countChunks(t, store)

	failing.Store(false)
	waitFaults(t, board, func(l []fault.Fault) bool { return len(l) == 0 })
	deadline := time.Now().Add(30 * time.Second)
	for countChunks(t, store) >= before {
		if time.Now().After(deadline) {
			t.Fatalf("superseded chunks not reclaimed after the fault cleared: %d chunks, %d before", countChunks(t, store), before)
		}
		time.Sleep(20 * time.Millisecond)
	}
	mustEqual(t, "read after the fault", readFile(t, p), want)
	if !bytes.Equal(readFile(t, tm.path("g")), []byte("still answering")) {
		t.Fatal("g lost")
	}
	tm.unmount()
	checkVault(t, home)
}

func waitFaults(t *testing.T, b *fault.Board, ok func([]fault.Fault) bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !ok(b.List()) {
		if time.Now().After(deadline) {
			t.Fatalf("faults after 30s: %+v", b.List())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func vaultStoreDir(t *testing.T, home string) string {
	t.Helper()
	v, err := vault.Open(home, testPassword, vault.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	return v.StoreDir()
}
