package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/devnet"
	"github.com/fincrypt/fincrypt/mediator"
	fnet "github.com/fincrypt/fincrypt/net"
	"github.com/fincrypt/fincrypt/vault"
	"github.com/fincrypt/fincrypt/wallet"
	"github.com/fincrypt/fincrypt/wallet/btcdtest"
)

// devnetProc is a `fincrypt devnet` running as a process.
type devnetProc struct {
	cmd    *exec.Cmd
	stderr bytes.Buffer
	done   chan error
}

func startDevnet(t *testing.T, env []string, args ...string) *devnetProc {
	t.Helper()
	p := &devnetProc{cmd: exec.Command(binPath, append([]string{"devnet"}, args...)...), done: make(chan error, 1)}
	p.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, env...)
	p.cmd.Stderr = &p.stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// interrupt sends SIGINT and waits for a clean exit.
func (p *devnetProc) interrupt(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("devnet exited with %v after SIGINT:\n%s", err, p.stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("devnet did not stop within 30s of SIGINT:\n%s", p.stderr.String())
	}
	if !strings.Contains(p.stderr.String(), "devnet stopped") {
		t.Fatalf("no clean stop reported:\n%s", p.stderr.String())
	}
}

func waitFile(t *testing.T, p *devnetProc, path string, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if b, err := os.ReadFile(path); err == nil && len(b) > 0 {
			return strings.TrimSpace(string(b))
		}
		select {
		case err := <-p.done:
			t.Fatalf("devnet exited (%v) before writing %s:\n%s", err, path, p.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s after %s:\n%s", path, timeout, p.stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func pollJSON(t *testing.T, what string, timeout time.Duration, env []string, v any, cond func() bool, args ...string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last result
	for {
		last = fincrypt(t, env, args...)
		if last.code == 0 && json.Unmarshal([]byte(last.stdout), v) == nil && cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: exit %d\n%s\n%s", what, last.code, last.stdout, last.stderr)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

type statusJSON struct {
	Mediator string `json:"mediator"`
	Nodes    []struct {
		ID     string `json:"id"`
		Online bool   `json:"online"`
	} `json:"nodes"`
}

func onlineIDs(st *statusJSON) []string {
	var ids []string
	for _, n := range st.Nodes {
		if n.Online {
			ids = append(ids, n.ID)
		}
	}
	sort.Strings(ids)
	return ids
}

// TestDevnet runs `fincrypt devnet` with 3 nodes and btcd: the nodes come
// online, a client's deposit address is funded through `devnet fund` and
// credited, the ledger and payouts answer, SIGINT stops everything, and a
// restart resumes the same network.
func TestDevnet(t *testing.T) {
	if testing.Short() {
		t.Skip("starts btcd and a network")
	}
	bin, err := btcdtest.Binary()
	if err != nil {
		t.Fatal(err)
	}
	env := []string{"FINCRYPT_BTCD=" + bin}
	d := filepath.Join(t.TempDir(), "net")
	med := filepath.Join(d, "mediator")

	// Prices ten million times the demo's, so that the 4 MiB stored below
	// earn the payout threshold within a period.
	price := "100000000000000"
	p := startDevnet(t, env, "--dir", d, "--nodes", "3", "--period", "2s", "--price", price)
	addr := waitFile(t, p, filepath.Join(d, "mediator.addr"), 60*time.Second)
	var st statusJSON
	pollJSON(t, "3 nodes online", 30*time.Second, env, &st, func() bool { return len(onlineIDs(&st)) == 3 },
		"mediator", "status", "--dir", med, "--json")
	if st.Mediator != addr {
		t.Fatalf("status names mediator %s, mediator.addr %s", st.Mediator, addr)
	}
	ids := onlineIDs(&st)

	// A client account: deposit address, funded by the devnet, credited.
	home := t.TempDir()
	pw := writePassword(t, "devnet test password")
	if r := fincrypt(t, env, "--home", home, "init", "--password-file", pw); r.code != 0 {
		t.Fatalf("init: %s", r.stderr)
	}
	r := fincrypt(t, env, "--home", home, "wallet", "deposit-address", "--password-file", pw, "--mediator", addr)
	if r.code != 0 || !strings.HasPrefix(r.stdout, "sb1") {
		t.Fatalf("deposit-address: exit %d %q %s", r.code, r.stdout, r.stderr)
	}
	depAddr := strings.TrimSpace(r.stdout)
	if r := fincrypt(t, env, "devnet", "fund", "--dir", d, "--address", depAddr, "--amount", "0.25"); r.code != 0 || len(strings.TrimSpace(r.stdout)) != 64 {
		t.Fatalf("devnet fund: exit %d %q %s", r.code, r.stdout, r.stderr)
	}
	var bal struct {
		Metered        bool
		Escrow         int64
		DepositAddress string
		CanPlace       bool
	}
	pollJSON(t, "the deposit credited", 30*time.Second, env, &bal, func() bool { return bal.Escrow == 25_000_000 },
		"--home", home, "wallet", "balance", "--json", "--password-file", pw, "--mediator", addr)
	if !bal.Metered || !bal.CanPlace || bal.DepositAddress != depAddr {
		t.Fatalf("balance %+v", bal)
	}
	var ledger struct {
		Metered  bool             `json:"metered"`
		Balances map[string]int64 `json:"balances"`
	}
	pollJSON(t, "the ledger", 10*time.Second, env, &ledger, func() bool { return ledger.Metered },
		"mediator", "ledger", "--dir", med, "--json")
	if ledger.Balances["ext:deposits"] != -25_000_000 {
		t.Fatalf("ledger balances %v", ledger.Balances)
	}
	// The whole cycle: an account stores data, the nodes earn each period
	// and a batched payout confirms on the devnet's chain.
	storeFunded(t, env, d, addr)
	var payouts []struct {
		ID            uint64 `json:"id"`
		State         string `json:"state"`
		TxID          string `json:"txid"`
		Amount        int64  `json:"amount"`
		Confirmations int64  `json:"confirmations"`
		Nodes         []struct {
			Node   string `json:"node"`
			Amount int64  `json:"amount"`
		} `json:"nodes"`
	}
	pollJSON(t, "a confirmed payout", 60*time.Second, env, &payouts, func() bool {
		return len(payouts) > 0 && payouts[0].State == "confirmed"
	}, "mediator", "payouts", "--dir", med, "--json")
	if po := payouts[0]; len(po.TxID) != 64 || po.Amount <= 0 || po.Confirmations < 1 || len(po.Nodes) == 0 {
		t.Fatalf("payout %+v", po)
	}
	// A confirmed payout cannot be abandoned; nothing changes.
	assertUserError(t, fincrypt(t, env, "mediator", "payouts", "abandon", "--dir", med, strconv.FormatUint(payouts[0].ID, 10)),
		exitRefused, fmt.Sprintf("payout %d is confirmed, not conflicted", payouts[0].ID))
	pollJSON(t, "the payout still confirmed", 10*time.Second, env, &payouts, func() bool {
		return len(payouts) > 0 && payouts[0].State == "confirmed"
	}, "mediator", "payouts", "--dir", med, "--json")

	p.interrupt(t)
	if _, err := os.Stat(filepath.Join(d, "devnet.sock")); err == nil {
		t.Fatal("the control socket outlived the devnet")
	}
	if r := fincrypt(t, env, "mediator", "status", "--dir", med); r.code != exitNotFound {
		t.Fatalf("status after stop: exit %d", r.code)
	}

	// Restart: same mediator address, same node ids, escrow kept.
	p = startDevnet(t, env, "--dir", d, "--nodes", "3", "--period", "2s", "--price", price)
	if got := waitFile(t, p, filepath.Join(d, "mediator.addr"), 60*time.Second); got != addr {
		t.Fatalf("restarted mediator at %s, was %s", got, addr)
	}
	pollJSON(t, "the same 3 nodes online", 30*time.Second, env, &st, func() bool { return len(onlineIDs(&st)) == 3 },
		"mediator", "status", "--dir", med, "--json")
	if got := onlineIDs(&st); strings.Join(got, ",") != strings.Join(ids, ",") {
		t.Fatalf("node ids after restart %v, before %v", got, ids)
	}
	pollJSON(t, "the escrow after restart", 30*time.Second, env, &bal, func() bool { return bal.Escrow == 25_000_000 },
		"--home", home, "wallet", "balance", "--json", "--password-file", pw, "--mediator", addr)
	p.interrupt(t)
}

// TestPaymentCommandErrors: the operator's and client's payment commands
// fail with one clear line and a documented exit code.
func TestPaymentCommandErrors(t *testing.T) {
	dir := t.TempDir()
	assertUserError(t, fincrypt(t, nil, "mediator", "ledger", "--dir", dir), exitNotFound, "no mediator is running")
	assertUserError(t, fincrypt(t, nil, "mediator", "payouts", "--dir", dir, "--json"), exitNotFound, "no mediator is running")
	assertUserError(t, fincrypt(t, nil, "mediator", "--dir", dir, "--btcd-rpc", "127.0.0.1:1"), exitUsage, "--network")
	assertUserError(t, fincrypt(t, nil, "mediator", "--dir", dir, "--fee-bps", "20000"), exitUsage, "--fee-bps")
	// A wallet seed made with another passphrase: exit 3, nothing changed.
	mdir := t.TempDir()
	if err := wallet.CreateSeed(filepath.Join(mdir, mediator.WalletDir), []byte("right"), "regtest", vault.KDFParams{Time: 1, MemoryK: 64, Threads: 1}); err != nil {
		t.Fatal(err)
	}
	seed, _ := os.ReadFile(filepath.Join(mdir, mediator.WalletDir, wallet.SeedFileName))
	assertUserError(t, fincrypt(t, []string{"FINCRYPT_WALLET_PASSPHRASE=wrong"}, "mediator", "--dir", mdir, "--listen", "127.0.0.1:0"), exitPassword, "wrong wallet passphrase")
	if after, _ := os.ReadFile(filepath.Join(mdir, mediator.WalletDir, wallet.SeedFileName)); !bytes.Equal(seed, after) {
		t.Fatal("the seed file changed")
	}
	assertUserError(t, fincrypt(t, nil, "devnet", "fund", "--dir", dir, "--address", "x", "--amount", "-1"), exitUsage, "--amount")
	assertUserError(t, fincrypt(t, nil, "devnet", "fund", "--dir", dir, "--address", "x"), exitFailure, "no devnet is running")
	home := t.TempDir()
	pw := writePassword(t, "payment errors password")
	if r := fincrypt(t, nil, "--home", home, "init", "--password-file", pw); r.code != 0 {
		t.Fatalf("init: %s", r.stderr)
	}
	assertUserError(t, fincrypt(t, nil, "--home", home, "wallet", "balance", "--password-file", pw), exitUsage, "no mediator")
	assertUserError(t, fincrypt(t, nil, "--home", home, "wallet", "balance", "--password-file", pw, "--mediator", "nonsense"), exitUsage, "mediator address")
}

// storeFunded stores 4 MiB for a new account of the devnet's mediator
// after funding its escrow through `fincrypt devnet fund`.
func storeFunded(t *testing.T, env []string, d, addr string) {
	t.Helper()
	maddr, err := fnet.ParseAddress(addr)
	if err != nil {
		t.Fatal(err)
	}
	id, err := fnet.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	cl, err := mediator.NewClient(id, maddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	da, err := cl.DepositAddress(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r := fincrypt(t, env, "devnet", "fund", "--dir", d, "--address", da.Address, "--amount", "1"); r.code != 0 {
		t.Fatalf("devnet fund: %s", r.stderr)
	}
	for {
		b, err := cl.Balance(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if b.CanPlace {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	data := bytes.Repeat([]byte("fincrypt devnet "), 4<<20/16)
	scheme, _ := devnet.SchemeFor(3)
	if _, err := cl.Store(ctx, scheme, data); err != nil {
		t.Fatalf("store on the devnet: %v", err)
	}
}
