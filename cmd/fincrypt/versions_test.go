package main

// Versions of the mount (issue 10) with the real binary and a network on
// loopback: `fincrypt snapshot` through the running mount, the versions in
// `snapshots --json`, a file overwritten and one deleted after the first
// version, the home destroyed and restored by password, and the first
// version restored from the storage nodes; forget killed at several
// moments keeps the newest version whole.

import (
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

type versionJSON struct {
	Snapshot   string `json:"snapshot"`
	Unchanged  bool   `json:"unchanged"`
	Files      uint64 `json:"files"`
	NewChunks  uint64 `json:"new_chunks"`
	IndexBytes uint64 `json:"index_bytes"`
}

func takeSnapshot(t *testing.T, home, pw string) versionJSON {
	t.Helper()
	r := fincrypt(t, nil, "--home", home, "snapshot", "--password-file", pw, "--json")
	if r.code != 0 {
		t.Fatalf("snapshot: %+v", r)
	}
	var v versionJSON
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
		t.Fatalf("snapshot --json: %v\n%s", err, r.stdout)
	}
	return v
}

func TestMountVersionsSurviveTheHome(t *testing.T) {
	needFUSE(t)
	n := startTestNet(t)
	v, acct := n.newVault(t, "ver")
	v.mountWith(t, "--version-interval", "0")
	writeFiles(t, v.mnt, map[string][]byte{
		"docs/a.txt":   randBytes(300<<10, 1),
		"docs/b.txt":   randBytes(10<<10, 2),
		"photos/c.raw": randBytes(1<<20+5, 3),
	})
	first := takeSnapshot(t, v.home, v.pw) // in the mount process
	if first.Snapshot == "" || first.Files != 3 {
		t.Fatalf("first version: %+v", first)
	}
	firstSums := treeSums(t, v.mnt)
	if again := takeSnapshot(t, v.home, v.pw); !again.Unchanged {
		t.Fatalf("a version of the unchanged mount: %+v", again)
	}
	// Ransomware: a file overwritten, one deleted.
	writeFiles(t, v.mnt, map[string][]byte{"docs/a.txt": randBytes(300<<10, 9)})
	if err := os.Remove(filepath.Join(v.mnt, "photos/c.raw")); err != nil {
		t.Fatal(err)
	}
	second := takeSnapshot(t, v.home, v.pw)
	if second.Snapshot == "" || second.Files != 2 {
		t.Fatalf("second version: %+v", second)
	}
	secondSums := treeSums(t, v.mnt)
	snaps := listSnapshots(t, v.home, v.pw)
	if len(snaps) != 2 || snaps[0].ID != first.Snapshot || snaps[1].ID != second.Snapshot {
		t.Fatalf("snapshots while mounted: %+v", snaps)
	}
	r := fincrypt(t, nil, "--home", v.home, "snapshots", "--password-file", v.pw, "--json")
	var withSource []struct {
		Source string `json:"source"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &withSource); err != nil || withSource[0].Source != "mount" {
		t.Fatalf("snapshots --json source: %v %s", err, r.stdout)
	}
	v.umount(t) // uploads, and stores the final index snapshot

	n.restoreInto(t, v.home, acct, v.pw)
	snaps = listSnapshots(t, v.home, v.pw)
	if len(snaps) != 2 || snaps[0].ID != first.Snapshot || snaps[1].ID != second.Snapshot {
		t.Fatalf("after a restore by password: %+v", snaps)
	}
	dst := filepath.Join(n.dir, "first")
	restoreSnapshot(t, v.home, v.pw, first.Snapshot, dst, "--sync-timeout", "30s")
	sameSums(t, "the first version from the network", treeSums(t, dst), firstSums)
	(&vaultEnv{home: v.home, pw: v.pw}).check(t)

	// forget --keep-last 1, killed at several moments, keeps the newest.
	for _, d := range []time.Duration{0, 20 * time.Millisecond, 100 * time.Millisecond} {
		cmd := exec.Command(binPath, "--home", v.home, "forget", "--password-file", v.pw, "--keep-last", "1", "--sync-timeout", "5s")
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + n.dir}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(d)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		found := false
		for _, s := range listSnapshots(t, v.home, v.pw) {
			found = found || s.ID == second.Snapshot
		}
		if !found {
			t.Fatalf("forget killed after %v lost the kept version", d)
		}
	}
	if r := fincrypt(t, nil, "--home", v.home, "forget", "--password-file", v.pw, "--keep-last", "1", "--sync-timeout", "30s"); r.code != 0 {
		t.Fatalf("forget: %+v", r)
	}
	if s := listSnapshots(t, v.home, v.pw); len(s) != 1 || s[0].ID != second.Snapshot {
		t.Fatalf("after forget: %+v", s)
	}
	dst = filepath.Join(n.dir, "second")
	restoreSnapshot(t, v.home, v.pw, second.Snapshot, dst, "--sync-timeout", "30s")
	sameSums(t, "the kept version", treeSums(t, dst), secondSums)
	(&vaultEnv{home: v.home, pw: v.pw}).check(t)
}

// randBytes is n seeded pseudo-random bytes.
func randBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}
