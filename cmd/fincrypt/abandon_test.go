package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/mediator"
	"github.com/fincrypt/fincrypt/wallet"
)

// startMediator runs `fincrypt mediator` on a new directory with env and
// args until the test ends; it returns once the control socket answers.
func startMediator(t *testing.T, env []string, args ...string) string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command(binPath, append([]string{"mediator", "--dir", dir, "--listen", "127.0.0.1:0"}, args...)...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	deadline := time.Now().Add(2 * time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := mediator.ReadStatus(ctx, dir)
		cancel()
		if err == nil {
			return dir
		}
		select {
		case err := <-done:
			t.Fatalf("the mediator exited (%v): %s", err, stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("the mediator's control socket did not answer: %v", err)
		}
	}
}

// TestPayoutAbandonRefusals: `fincrypt mediator payouts abandon` refuses
// with one line and a documented exit code when its arguments are wrong,
// no mediator runs in DIR, the running mediator has no payments, or it
// has no such payout (real mediator processes; a payout that is not
// conflicted is refused in TestDevnet, the abandon itself is tested in
// mediator.TestAbandonPayoutOverTheControlSocket).
func TestPayoutAbandonRefusals(t *testing.T) {
	dir := t.TempDir()
	assertUserError(t, fincrypt(t, nil, "mediator", "payouts", "abandon", "--dir", dir, "1"), exitNotFound, "no mediator is running")
	assertUserError(t, fincrypt(t, nil, "mediator", "payouts", "abandon", "--dir", dir), exitUsage, "give one payout ID")
	assertUserError(t, fincrypt(t, nil, "mediator", "payouts", "abandon", "--dir", dir, "1", "2"), exitUsage, "give one payout ID")
	assertUserError(t, fincrypt(t, nil, "mediator", "payouts", "abandon", "--dir", dir, "x"), exitUsage, `"x" is not a number`)
	assertUserError(t, fincrypt(t, nil, "mediator", "payouts", "abandon", "1"), exitUsage, "--dir is required")
	assertUserError(t, fincrypt(t, nil, "mediator", "payouts", "--dir", dir, "abandn", "1"), exitUsage, `unexpected argument "abandn"`)

	plain := startMediator(t, nil)
	assertUserError(t, fincrypt(t, nil, "mediator", "payouts", "abandon", "--dir", plain, "1"), exitNotFound, "without payments")

	// A wallet without a bitcoin node (unmetered): no payout 1. --dir
	// may also be given to payouts.
	paying := startMediator(t, []string{"FINCRYPT_WALLET_PASSPHRASE=abandon test passphrase"})
	assertUserError(t, fincrypt(t, nil, "mediator", "payouts", "--dir", paying, "abandon", "1"), exitNotFound, "payout 1: no such payout")
}

// TestPayoutAbandonPrints: what `fincrypt mediator payouts abandon` prints
// of the mediator's answer (a control socket that answers as a mediator
// does once it abandoned payout 7), as text and as JSON.
func TestPayoutAbandonPrints(t *testing.T) {
	dir := t.TempDir()
	rep := wallet.Abandoned{
		Payout:   wallet.Payout{ID: 7, State: wallet.PayoutAbandoned, TxID: strings.Repeat("a", 64), ConflictTx: strings.Repeat("c", 64), ConflictHeight: 321},
		Returned: []wallet.Returned{{Node: "node-one", Amount: 12_345, Balance: 20_000}, {Node: "node-two", Amount: 678, Balance: 678}},
		Released: []string{strings.Repeat("d", 64) + ":1"},
		Spent:    []string{strings.Repeat("e", 64) + ":0"},
	}
	ln, err := net.Listen("unix", filepath.Join(dir, mediator.ControlSocket))
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	asked := make(chan string, 4)
	mux.HandleFunc("POST /payouts/{id}/abandon", func(w http.ResponseWriter, r *http.Request) {
		asked <- r.PathValue("id")
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(rep)
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	r := fincrypt(t, nil, "mediator", "payouts", "abandon", "--dir", dir, "7")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if id := <-asked; id != "7" {
		t.Fatalf("asked to abandon payout %q, want 7", id)
	}
	for _, want := range []string{
		"payout 7 (" + rep.Payout.TxID + ") abandoned; it was conflicted by " + rep.Payout.ConflictTx + " at height 321",
		"node-one  12345", "20000", "node-two  678", "released (spendable again):\n  " + rep.Released[0],
		"spent by another transaction (gone):\n  " + rep.Spent[0],
	} {
		if !strings.Contains(r.stdout, want) {
			t.Fatalf("output lacks %q:\n%s", want, r.stdout)
		}
	}
	r = fincrypt(t, nil, "mediator", "payouts", "abandon", "--dir", dir, "--json", "7")
	var got wallet.Abandoned
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &got) != nil {
		t.Fatalf("--json: exit %d %q %s", r.code, r.stdout, r.stderr)
	}
	<-asked
	if got.Payout.ID != 7 || len(got.Returned) != 2 || got.Returned[0] != rep.Returned[0] || got.Spent[0] != rep.Spent[0] {
		t.Fatalf("--json: %+v", got)
	}
}
