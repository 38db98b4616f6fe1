package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/mediator"
)

// TestMediatorExitCodes: a bad listen address or configuration is a usage
// error (2); only a mediator already running on the directory is busy (6).
func TestMediatorExitCodes(t *testing.T) {
	dir := t.TempDir()
	assertUserError(t, fincrypt(t, nil, "mediator", "--dir", dir, "--listen", "999.1.1.1:0"), exitUsage, "listen")
	assertUserError(t, fincrypt(t, nil, "mediator", "--dir", dir, "--listen", "127.0.0.1:0",
		"--offline-after", "1s", "--period", "1h"), exitUsage, "offline-after")
	assertUserError(t, fincrypt(t, nil, "mediator", "--dir", dir, "--listen", "127.0.0.1:0",
		"--repair-workers", "-1"), exitUsage, "repair workers")
	assertUserError(t, fincrypt(t, nil, "mediator", "--dir", dir, "--listen", "127.0.0.1:0",
		"--repair-node-transfers", "1000"), exitUsage, "repair transfers per node")

	first := exec.Command(binPath, "mediator", "--dir", dir, "--listen", "127.0.0.1:0")
	first.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		first.Process.Kill()
		first.Wait()
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(dir, mediator.AddressFile)); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first mediator wrote no address file")
		}
		time.Sleep(20 * time.Millisecond)
	}
	assertUserError(t, fincrypt(t, nil, "mediator", "--dir", dir, "--listen", "127.0.0.1:0"), exitBusy, "another mediator")
	// migrate needs the mediator stopped.
	assertUserError(t, fincrypt(t, nil, "mediator", "migrate", "--from", dir, "--to", "postgres:///m?host=/nonexistent"), exitBusy, "stop the mediator")
}

// TestMediatorDBUsage: --db and migrate reject what they cannot use, before
// touching any state.
func TestMediatorDBUsage(t *testing.T) {
	dir := t.TempDir()
	assertUserError(t, fincrypt(t, nil, "mediator", "--dir", dir, "--listen", "127.0.0.1:0", "--db", "mysql://x/y"), exitUsage, "postgres://")
	assertUserError(t, fincrypt(t, nil, "mediator", "migrate", "--from", dir, "--to", "/srv/db"), exitUsage, "postgres://")
	assertUserError(t, fincrypt(t, nil, "mediator", "migrate", "--from", dir, "--to", "postgres:///m?host=/nonexistent"), exitNotFound, "db")
	// A directory with Pebble state is not silently left behind.
	st, err := mediator.OpenPebbleStore(filepath.Join(dir, "db"), mediator.PebbleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	assertUserError(t, fincrypt(t, nil, "mediator", "--dir", dir, "--listen", "127.0.0.1:0", "--db", "postgres:///m?host=/nonexistent"), exitUsage, "fincrypt mediator migrate")
}

// TestMediatorHelpDefaults: flags whose default is computed say how, not
// "(default: 0)".
func TestMediatorHelpDefaults(t *testing.T) {
	r := fincrypt(t, nil, "mediator", "--help")
	if r.code != 0 {
		t.Fatalf("mediator --help: %+v", r)
	}
	for _, line := range strings.Split(r.stdout, "\n") {
		if strings.Contains(line, "(default: 0") {
			t.Errorf("misleading default: %s", strings.TrimSpace(line))
		}
	}
	if !strings.Contains(r.stdout, "3 heartbeats") {
		t.Errorf("--online-window does not state its default:\n%s", r.stdout)
	}
}
