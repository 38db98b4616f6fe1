package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/meta"
	"github.com/fincrypt/fincrypt/vault"
)

// openIndex opens the index of the unmounted vault in home (the vault
// locked); done closes both.
func openIndex(t *testing.T, home, pw string, readOnly bool) (idx *meta.Index, done func()) {
	t.Helper()
	v, err := vault.Open(home, []byte(pw), vault.OpenOptions{Lock: true})
	if err != nil {
		t.Fatal(err)
	}
	idx, err = meta.Open(v.IndexDir(), v.Keys, meta.Options{ReadOnly: readOnly})
	if err != nil {
		v.Close()
		t.Fatal(err)
	}
	return idx, func() { idx.Close(); v.Close() }
}

// changeBehindTheFeed opens the unmounted vault's index directly and gives
// the file name (in the root) the permission bits perm without a change
// feed record, as a change the feed missed would leave it: the next delta
// snapshot does not carry it, while its state hash (of the whole index)
// does.
func changeBehindTheFeed(t *testing.T, home, pw, name string, perm uint32) {
	t.Helper()
	idx, done := openIndex(t, home, pw, false)
	defer done()
	d, err := idx.Lookup(meta.RootIno, name)
	if err != nil {
		t.Fatal(err)
	}
	in, err := idx.GetInode(d.Ino)
	if err != nil {
		t.Fatal(err)
	}
	in.Mode = in.Mode&^0o7777 | perm
	b := idx.NewBatch()
	b.PutInode(&in)
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	// Take the feed's record of it away (and any other: the unmount's
	// final snapshot left none that matter).
	view, err := idx.ChangeView()
	if err != nil {
		t.Fatal(err)
	}
	n, err := idx.DropChanges(view.Epoch)
	view.Close()
	if err != nil || n < 1 {
		t.Fatalf("dropping the change's feed record: %d dropped, %v", n, err)
	}
}

// replRecord reads a replication-state record of the unmounted vault in
// home; nil if it is absent.
func replRecord(t *testing.T, home, pw, name string) []byte {
	t.Helper()
	idx, done := openIndex(t, home, pw, true)
	defer done()
	b, err := idx.GetRepl(name)
	if errors.Is(err, meta.ErrNotFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRestoreAcceptMismatchCLI: a snapshot chain whose records all open but
// do not make the state hash it recorded (a file's mode changed in the
// index behind the change feed's back, then a delta stored over it), as
// processes: `restore` and `recover` without --accept-mismatch refuse,
// name the flag and write nothing; `restore --accept-mismatch` restores
// the files as the snapshots hold them, with the warning, and records no
// snapshot_hash, so the restored vault's first mount stores a new base,
// which restores without the flag. The mounted vault's status shows its
// inode bound (inodes in --json).
func TestRestoreAcceptMismatchCLI(t *testing.T) {
	needFUSE(t)
	n := startTestNet(t)
	v, acct := n.newVault(t, "v")
	fast := []string{"--flush-after", "100ms", "--snapshot-delay", "200ms"}
	v.mountWith(t, fast...)
	// A base large enough that the one-file delta after it stays a delta
	// (a new base is taken once the deltas pass a quarter of the base).
	files := map[string][]byte{"a": []byte("the file whose mode changes behind the feed")}
	for i := range 100 {
		files[fmt.Sprintf("d%d/f%03d", i%5, i)] = []byte(fmt.Sprint("small file ", i))
	}
	writeFiles(t, v.mnt, files)
	v.umount(t) // stores the base
	changeBehindTheFeed(t, v.home, "pw", "a", 0o600)

	v.mountWith(t, append(fast, "--max-inodes", "1000")...)
	if fi, err := os.Stat(filepath.Join(v.mnt, "a")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the change behind the feed does not show in the mount: %v %v", fi.Mode(), err)
	}
	writeFiles(t, v.mnt, map[string][]byte{"b": []byte("written after, in the delta")})
	waitFor(t, "a delta snapshot stored", time.Minute, func() (bool, string) {
		st, raw := clientStatus(t, v.home)
		return st["restorable"] == true, raw
	})
	st, raw := clientStatus(t, v.home)
	if in, ok := st["inodes"].(map[string]any); !ok || in["max"] != 1000.0 || in["live"] == nil || in["pruned"] == nil || in["prune_supported"] == nil {
		t.Errorf("status --json lacks the inode bound of --max-inodes 1000: %s", raw)
	}
	v.umount(t)

	refused := func(r result, what string) {
		t.Helper()
		if r.code != exitFailure || !strings.Contains(r.stderr, "--accept-mismatch") || !strings.Contains(r.stderr, "do not make the state") {
			t.Fatalf("%s of a mismatched chain without --accept-mismatch: want exit %d naming the flag, got %+v", what, exitFailure, r)
		}
	}
	home2 := filepath.Join(n.dir, "restored-home")
	refused(fincrypt(t, nil, "--home", home2, "restore", "--mediator", n.maddr, "--account", acct, "--password-file", v.pw), "restore")
	if ents, err := os.ReadDir(home2); err == nil && len(ents) > 0 {
		t.Fatalf("a refused restore left %d entries in its home (%s, ...)", len(ents), ents[0].Name())
	}
	indexBefore, _ := os.ReadDir(v.home)
	refused(fincrypt(t, nil, "--home", v.home, "recover", "--password-file", v.pw), "recover")
	if indexAfter, _ := os.ReadDir(v.home); len(indexAfter) != len(indexBefore) {
		t.Fatalf("a refused recover changed the home: %d entries, %d before", len(indexAfter), len(indexBefore))
	}

	r := fincrypt(t, nil, "--home", home2, "restore", "--mediator", n.maddr, "--account", acct, "--password-file", v.pw, "--accept-mismatch")
	if r.code != 0 || !strings.Contains(r.stderr, "do not add up") || !strings.Contains(r.stderr, "fincrypt check") {
		t.Fatalf("restore --accept-mismatch: want success with the warning, got %+v", r)
	}
	if h := replRecord(t, home2, "pw", "snapshot_hash"); h != nil {
		t.Fatalf("a restore that accepted a mismatch recorded snapshot_hash %x: the mount would take that state as covered", h)
	}
	rv := &vaultEnv{home: home2, mnt: filepath.Join(n.dir, "restored-mnt"), pw: v.pw}
	t.Cleanup(rv.kill)
	rv.mountWith(t, fast...)
	// The records as the snapshots hold them: the change the feed missed
	// is missing, what the delta carried is there.
	if fi, err := os.Stat(filepath.Join(rv.mnt, "a")); err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("restored a: %v %v, want the mode the snapshots hold (-rw-r--r--)", fi.Mode(), err)
	}
	if b, err := os.ReadFile(filepath.Join(rv.mnt, "b")); err != nil || string(b) != "written after, in the delta" {
		t.Fatalf("restored b: %q %v", b, err)
	}
	waitFor(t, "the restored vault's first mount stores a new base", time.Minute, func() (bool, string) {
		st, raw := clientStatus(t, home2)
		return st["restorable"] == true, raw
	})
	rv.umount(t)
	if h := replRecord(t, home2, "pw", "snapshot_hash"); h == nil {
		t.Fatal("after the first mount's snapshot, still no snapshot_hash")
	}
	home3 := filepath.Join(n.dir, "restored-again")
	if r := fincrypt(t, nil, "--home", home3, "restore", "--mediator", n.maddr, "--account", acct, "--password-file", v.pw); r.code != 0 || strings.Contains(r.stderr, "do not add up") {
		t.Fatalf("restore of the new base without --accept-mismatch: %+v", r)
	}
}
