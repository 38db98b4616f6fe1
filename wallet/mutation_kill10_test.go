package wallet

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
)

// Tests written against the mutants that lived in the tenth session's
// whole-package run by mutant schemata (docs/TESTING.md).

// rpcStub answers getblockcount with 7 on a JSON-RPC over HTTP POST
// endpoint, after checking the client's basic authentication.
func rpcStub(t *testing.T) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Method string          `json:"method"`
			ID     json.RawMessage `json:"id"`
		}
		if u, p, ok := r.BasicAuth(); !ok || u != "user" || p != "pass" {
			http.Error(w, "unauthorised", http.StatusUnauthorized)
			return
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Method != "getblockcount" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"result":7,"error":null,"id":` + string(req.ID) + `}`))
	})
}

// TestDialRPCTransport: without a certificate file DialRPC speaks plain
// HTTP (btcd --notls on loopback, bitcoind), with one it speaks TLS and
// trusts that certificate (kills `DisableTLS: c.CertFile == ""` negated in
// DialRPC, which spoke TLS to a plain HTTP node and plain HTTP to a TLS
// one: every chain call failed).
func TestDialRPCTransport(t *testing.T) {
	plain := httptest.NewServer(rpcStub(t))
	defer plain.Close()
	tlsSrv := httptest.NewTLSServer(rpcStub(t))
	defer tlsSrv.Close()
	certFile := filepath.Join(t.TempDir(), "rpc.cert")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tlsSrv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		cfg  RPCConfig
	}{
		{"plain HTTP", RPCConfig{Host: strings.TrimPrefix(plain.URL, "http://"), User: "user", Pass: "pass"}},
		{"TLS", RPCConfig{Host: strings.TrimPrefix(tlsSrv.URL, "https://"), User: "user", Pass: "pass", CertFile: certFile}},
	} {
		cl, err := DialRPC(c.cfg)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		n, err := cl.GetBlockCount()
		cl.Shutdown()
		if err != nil || n != 7 {
			t.Fatalf("%s: getblockcount: %d, %v", c.name, n, err)
		}
	}
}

// TestPayoutPSBTRefusesABadChangeVout: a PSBT payout record whose change
// output index is out of range, or names an output that pays a node, is
// refused when its PSBT is built: the signer is never handed a PSBT that
// calls a node's output the wallet's change, nor one whose change carries no
// key path (kills `p.ChangeVout >= 0` → `> 0`, which left change output 0
// unchecked and undescribed, and `int(p.ChangeVout) >= len(tx.TxOut)` →
// `>`, an index out of range, in payoutPSBT).
func TestPayoutPSBTRefusesABadChangeVout(t *testing.T) {
	psbtDir := filepath.Join(t.TempDir(), "payouts")
	w, _, _, _ := psbtPayoutWallet(t, psbtDir)
	p, err := w.WritePayoutPSBT(psbtDir)
	if err != nil || p == nil || p.ChangeVout < 1 {
		t.Fatalf("payout: %+v %v", p, err)
	}
	tx, err := p.tx()
	if err != nil {
		t.Fatal(err)
	}
	rw := w.begin()
	defer rw.discard()
	if _, err := w.payoutPSBT(rw, p); err != nil {
		t.Fatalf("the payout as recorded: %v", err)
	}
	for _, vout := range []int32{0, int32(len(tx.TxOut)), int32(len(tx.TxOut)) + 1} {
		bad := *p
		bad.ChangeVout = vout
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Fatalf("change output %d of %d: panic %v, want an error", vout, len(tx.TxOut), r)
				}
			}()
			if data, err := w.payoutPSBT(rw, &bad); err == nil {
				t.Fatalf("change output %d of %d: a PSBT of %d bytes, no error", vout, len(tx.TxOut), len(data))
			}
		}()
	}
}

// lockedBuffer is a log sink safe for concurrent writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestDepositCreditAndReversalAreLogged: a deposit that ends an account's
// delinquency, and its reversal by a reorganisation that makes the account
// delinquent again, each leave their line in the wallet's log, with the
// account and the amount: the operator's record of money that came and
// went (kills the negated error checks after the delinquency mark's delete
// in creditDeposit and its write in reverseDeposit, which returned at once
// on success and skipped these lines; the ledger was the same).
func TestDepositCreditAndReversalAreLogged(t *testing.T) {
	var log lockedBuffer
	chain := newFakeChain(47)
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	w := newTestWallet(t, "regtest", func(c *Config) {
		c.Chain = chain
		c.MinConf = 2
		c.RunwayPeriods = 3
		c.Now = func() time.Time { return now }
		c.Logger = slog.New(slog.NewTextHandler(&log, nil))
	})
	fakeDeposit(t, chain, w, "alice", 100_000, 1)
	chain.mine(2)
	mustSync(t, w)
	in := settleInput(1, Holding{Node: "n1", Account: "alice", Bytes: 150 * GiB, Passed: true})
	in.End = now.Add(-time.Hour)
	if _, err := w.Settle(in); err != nil {
		t.Fatal(err)
	}
	if st, _ := w.AccountStatus("alice"); !st.Delinquent || st.Escrow != 0 {
		t.Fatalf("alice after a period she could not pay: %+v", st)
	}
	big := fakeDeposit(t, chain, w, "alice", 1_000_000, 2)
	chain.mine(2)
	if rep := mustSync(t, w); len(rep.Credited) != 1 {
		t.Fatalf("credited %v, want the one deposit", rep.Credited)
	}
	if st, _ := w.AccountStatus("alice"); st.Delinquent || st.Debt != 0 || st.Escrow != 1_000_000 {
		t.Fatalf("alice after paying up: %+v", st)
	}
	if !hasLogLine(log.String(), `msg="deposit credited"`, "account=alice", "sat=1000000") {
		t.Fatalf("no log line for the deposit that ended the delinquency:\n%s", log.String())
	}
	// A second period spends part of it: the reversal finds less in escrow.
	in = settleInput(2, Holding{Node: "n1", Account: "alice", Bytes: 150 * GiB, Passed: true})
	in.End = now
	if _, err := w.Settle(in); err != nil {
		t.Fatal(err)
	}
	gone := map[chainhash.Hash]bool{big.TxHash(): true}
	chain.reorg(2, func(tx *wire.MsgTx, _ bool) bool { return !gone[tx.TxHash()] })
	chain.gone = gone
	chain.mine(3)
	if rep := mustSync(t, w); len(rep.Reversed) != 1 {
		t.Fatalf("reversed %v, want the one deposit", rep.Reversed)
	}
	if st, _ := w.AccountStatus("alice"); !st.Delinquent || st.Debt != -150_000 || st.Escrow != 0 {
		t.Fatalf("alice after the reorganisation: %+v", st)
	}
	if !hasLogLine(log.String(), `msg="deposit reversed by a reorganisation"`, "account=alice", "sat=1000000", "from_escrow=850000") {
		t.Fatalf("no log line for the reversed deposit:\n%s", log.String())
	}
}

// hasLogLine reports whether one line of a text log holds every part.
func hasLogLine(log string, parts ...string) bool {
	for _, line := range strings.Split(log, "\n") {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(line, p)
		}
		if ok {
			return true
		}
	}
	return false
}

// TestEntryByKeyRefusesAMismatchedJournal: an idempotency key whose index
// points at a journal entry recorded under another key (a damaged store)
// is an error, not that other entry (kills `err == nil && ok && e.Key !=
// key` with `err == nil` negated in EntryByKey, which returned the other
// entry as the key's).
func TestEntryByKeyRefusesAMismatchedJournal(t *testing.T) {
	w := newTestWallet(t, "regtest", nil)
	fund(t, w, "alice", 5000, "one")
	fund(t, w, "bob", 7000, "two")
	e, ok, err := w.EntryByKey("deposit/one")
	if err != nil || !ok || e.Key != "deposit/one" {
		t.Fatalf("EntryByKey of a recorded key: %+v %v %v", e, ok, err)
	}
	tx := w.begin()
	seq, err := tx.getInt(pTxKey + "deposit/two")
	if err == nil {
		err = tx.setInt(pTxKey+"deposit/one", seq)
	}
	if err == nil {
		err = tx.commit()
	}
	tx.discard()
	if err != nil {
		t.Fatal(err)
	}
	if e, ok, err := w.EntryByKey("deposit/one"); err == nil {
		t.Fatalf("EntryByKey of a key indexed to another entry: %+v %v, no error", e, ok)
	}
}

// TestRebroadcastLogsFailuresOnly: a payout the node already holds is
// re-sent on each Sync without a "rebroadcast failed" line; once the node
// refuses it (its input left the chain), each refusal is logged with the
// payout's id (kills `err != nil` → `==` after the re-send in rebroadcast,
// which logged every success as a failure and no failure). A Sync with the
// node at the wallet's own tip does not log that the node is behind (kills
// `tip > best` → `>=` in syncChain, which took a node in step for one
// behind and said so on every idle Sync). The reorganisation that takes
// the payout's input is logged with the payout (kills `u.ReservedBy != 0`
// negated in the block's undo, which logged the unreserved outputs).
func TestRebroadcastLogsFailuresOnly(t *testing.T) {
	var log lockedBuffer
	chain := newFakeChain(9)
	w := newTestWallet(t, "regtest", func(c *Config) {
		c.Chain = chain
		c.MinConf = 2
		c.Logger = slog.New(slog.NewTextHandler(&log, nil))
	})
	dep := fakeDeposit(t, chain, w, "acct", 1_000_000, 1)
	chain.mine(2)
	mustSync(t, w)
	settleHeld(t, w, 1, "n", "acct", 100)
	p, err := w.Payout(context.Background())
	if err != nil || p == nil || p.State != PayoutBroadcast {
		t.Fatalf("payout: %+v %v", p, err)
	}
	mustSync(t, w) // re-sent; the node already has it
	if strings.Contains(log.String(), `msg="rebroadcast failed"`) {
		t.Fatalf("a re-send the node took was logged as failed:\n%s", log.String())
	}
	if strings.Contains(log.String(), "node is behind the wallet") {
		t.Fatalf("a node at the wallet's tip was logged as behind:\n%s", log.String())
	}
	chain.reorg(2, func(tx *wire.MsgTx, _ bool) bool { return tx.TxHash() != dep.TxHash() })
	chain.gone = map[chainhash.Hash]bool{dep.TxHash(): true}
	chain.mine(3)
	mustSync(t, w)
	if list, _ := w.Payouts(); len(list) != 1 || list[0].State != PayoutBroadcast || list[0].LastError == "" {
		t.Fatalf("payout after its input left the chain: %+v", list)
	}
	if !hasLogLine(log.String(), "reorg dropped an output reserved by a payout", fmt.Sprintf("payout=%d", p.ID)) {
		t.Fatalf("the reorganisation that took the payout's input was not logged:\n%s", log.String())
	}
	if !hasLogLine(log.String(), `msg="rebroadcast failed"`, fmt.Sprintf("id=%d ", p.ID)) {
		t.Fatalf("the node's refusal of the re-send was not logged:\n%s", log.String())
	}
}

// TestSetPayoutAddress: a node's payout address is recorded as given; a
// bad node id or an address of another network is refused and records
// nothing (kills the three negated error checks in SetPayoutAddress, which
// no wallet test reached: under each a good address was not recorded, the
// call returning nil before its commit).
func TestSetPayoutAddress(t *testing.T) {
	w := newTestWallet(t, "regtest", nil)
	stored := func(node string) string {
		tx := w.begin()
		defer tx.discard()
		v, _, err := tx.get(pNodeAddr + node)
		if err != nil {
			t.Fatal(err)
		}
		return string(v)
	}
	addr := regtestAddr(t)
	if err := w.SetPayoutAddress("n1", addr); err != nil {
		t.Fatal(err)
	}
	if got := stored("n1"); got != addr {
		t.Fatalf("payout address of n1: %q, want %q", got, addr)
	}
	if err := w.SetPayoutAddress("bad id!", addr); !errors.Is(err, ErrBadID) {
		t.Fatalf("bad node id: %v, want ErrBadID", err)
	}
	main, err := btcutil.NewAddressWitnessPubKeyHash(make([]byte, 20), &chaincfg.MainNetParams)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.SetPayoutAddress("n2", main.EncodeAddress()); err == nil {
		t.Fatal("a mainnet address accepted by a regtest wallet")
	}
	if got := stored("n2") + stored("bad id!"); got != "" {
		t.Fatalf("refused addresses recorded: %q", got)
	}
}
