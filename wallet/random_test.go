package wallet

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"
)

// TestRandomHistory drives a wallet over an in-memory chain through a seeded
// random mix of deposits, blocks, reorganisations (some double-spending
// deposits, some deeper than MinConf), settlements, payouts and restarts,
// and checks the ledger after every step and, at the end, that the chain
// pays each node exactly its paid:<node> and holds exactly what the wallet
// owes.
func TestRandomHistory(t *testing.T) {
	for seed := int64(1); seed <= 3; seed++ {
		randomHistory(t, seed, 250)
	}
}

func randomHistory(t *testing.T, seed int64, steps int) {
	rng := newRand(seed)
	chain := newFakeChain(seed)
	dir := t.TempDir()
	if err := CreateSeed(dir, testPass, "regtest", cheapKDF); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Dir: dir, Passphrase: testPass, Chain: chain, MinConf: 3, PayoutThreshold: 1000, FeeRate: 2, Logger: testLogger()}
	w, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { w.Close() }()
	ctx := context.Background()
	accounts := []string{"a0", "a1", "a2"}
	nodes := []NodeTerms{}
	nodeScript := map[string]string{}
	for _, id := range []string{"n0", "n1", "n2"} {
		a := regtestAddr(t)
		nodes = append(nodes, NodeTerms{ID: id, PayoutAddress: a})
		dec, _ := btcutil.DecodeAddress(a, w.Network())
		s, _ := txscript.PayToAddrScript(dec)
		nodeScript[string(s)] = id
	}
	deposits := map[chainhash.Hash]bool{}
	var stats struct{ disconnected, reversed int }
	period := uint64(0)
	for step := 0; step < steps; step++ {
		r := rng.Intn(100)
		switch {
		case r < 25: // a client deposits from outside
			addr, err := w.DepositAddress(accounts[rng.Intn(len(accounts))])
			if err != nil {
				t.Fatal(err)
			}
			dec, _ := btcutil.DecodeAddress(addr, w.Network())
			script, _ := txscript.PayToAddrScript(dec)
			tx := wire.NewMsgTx(2)
			var ext chainhash.Hash
			rng.Read(ext[:])
			tx.AddTxIn(wire.NewTxIn(wire.NewOutPoint(&ext, 0), nil, nil))
			tx.AddTxOut(wire.NewTxOut(10_000+rng.Int63n(2_000_000), script))
			if _, err := chain.SendRawTransaction(tx, false); err != nil {
				t.Fatal(err)
			}
			deposits[tx.TxHash()] = true
		case r < 50:
			chain.mine(1 + rng.Intn(3))
		case r < 58: // reorganisation, up to one block deeper than MinConf
			chain.reorg(1+rng.Intn(4), func(tx *wire.MsgTx, spent bool) bool {
				return !deposits[tx.TxHash()] || spent || rng.Intn(2) == 0
			})
			chain.mine(rng.Intn(6))
		case r < 62: // the node falls behind, the wallet syncs, the node catches up
			k := 1 + rng.Intn(3)
			if k < len(chain.blocks) {
				chain.mu.Lock()
				saved := append([]*wire.MsgBlock(nil), chain.blocks[len(chain.blocks)-k:]...)
				chain.blocks = chain.blocks[:len(chain.blocks)-k]
				chain.mu.Unlock()
				rep, err := w.Sync(ctx)
				if err != nil || rep.Disconnected != 0 {
					t.Fatalf("seed %d step %d: behind: %+v %v", seed, step, rep, err)
				}
				chain.mu.Lock()
				chain.blocks = append(chain.blocks, saved...)
				chain.mu.Unlock()
			}
		case r < 75:
			period++
			in := PeriodInput{Period: period, Length: Month / 30, FeeBPS: uint32(rng.Intn(1000))}
			for _, n := range nodes {
				n.PriceSatPerGiBMonth = 100 + rng.Int63n(5000)
				in.Nodes = append(in.Nodes, n)
				for _, a := range accounts {
					if rng.Intn(10) < 6 {
						in.Holdings = append(in.Holdings, Holding{Node: n.ID, Account: a, Bytes: rng.Int63n(50 * GiB), Passed: rng.Intn(10) < 8})
					}
				}
			}
			if _, err := w.Settle(in); err != nil {
				t.Fatalf("seed %d step %d: settle: %v", seed, step, err)
			}
			if rng.Intn(4) == 0 { // the mediator settles again after a crash
				if rep, err := w.Settle(in); err != nil || !rep.Repeated {
					t.Fatalf("seed %d step %d: settle again: %v", seed, step, err)
				}
			}
		case r < 90:
			if _, err := w.Payout(ctx); err != nil && !errors.Is(err, ErrInsufficientFunds) {
				t.Fatalf("seed %d step %d: payout: %v", seed, step, err)
			}
		default: // restart
			w.Close()
			if w, err = Open(cfg); err != nil {
				t.Fatal(err)
			}
		}
		rep, err := w.Sync(ctx)
		if err != nil {
			t.Fatalf("seed %d step %d: sync: %v", seed, step, err)
		}
		stats.disconnected += rep.Disconnected
		stats.reversed += len(rep.Reversed)
		if err := w.CheckLedger(); err != nil {
			t.Fatalf("seed %d step %d: %v", seed, step, err)
		}
	}
	// Let everything confirm.
	for i := 0; i < 2; i++ {
		chain.mine(5)
		if _, err := w.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	payouts, err := w.Payouts()
	if err != nil {
		t.Fatal(err)
	}
	confirmed := 0
	for _, p := range payouts {
		if p.State != PayoutConfirmed {
			t.Fatalf("seed %d: payout %d is %s", seed, p.ID, p.State)
		}
		confirmed++
	}
	// What the chain paid each node is what the ledger says it paid.
	paidOnChain := map[string]int64{}
	tt := w.begin()
	defer tt.discard()
	ours := int64(0)
	for op, o := range chain.utxos(false) {
		ok, err := tt.getJSON(pScript+hexString(o.PkScript), &scriptInfo{})
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			ours += o.Value
		}
		_ = op
	}
	for _, b := range chain.blocks {
		for _, tx := range b.Transactions {
			for _, o := range tx.TxOut {
				if id, ok := nodeScript[string(o.PkScript)]; ok {
					paidOnChain[id] += o.Value
				}
			}
		}
	}
	for _, n := range nodes {
		if got := mustBal(t, w, PaidAccount(n.ID)); got != paidOnChain[n.ID] {
			t.Fatalf("seed %d: ledger paid %s %d, chain paid %d", seed, n.ID, got, paidOnChain[n.ID])
		}
	}
	// The chain holds exactly what the wallet owes (escrow, debt, unpaid
	// node balances, fees) plus deposits not yet credited.
	bals, err := w.Balances("")
	if err != nil {
		t.Fatal(err)
	}
	var owed int64
	for name, b := range bals {
		if strings.HasPrefix(name, "escrow:") || strings.HasPrefix(name, "debt:") || strings.HasPrefix(name, "node:") || name == AcctFeesMediator || name == AcctPayoutInflight {
			owed += b
		}
	}
	total, _, err := w.OnChain()
	if err != nil {
		t.Fatal(err)
	}
	pending := int64(0)
	for _, a := range accounts {
		st, _ := w.AccountStatus(a)
		pending += st.Pending
	}
	if total != ours || ours != owed+pending {
		t.Fatalf("seed %d: wallet sees %d, chain holds %d for it, it owes %d + %d pending; balances %v", seed, total, ours, owed, pending, bals)
	}
	t.Logf("seed %d: %d blocks, %d undone, %d deposits reversed, %d periods, %d payouts, %d sat paid, %d sat held, %d pending",
		seed, len(chain.blocks), stats.disconnected, stats.reversed, period, confirmed, paidOnChain["n0"]+paidOnChain["n1"]+paidOnChain["n2"], ours, pending)
	if stats.reversed == 0 || confirmed == 0 {
		t.Fatalf("seed %d: the history reversed no deposit or confirmed no payout; pick other seeds", seed)
	}
}

// TestRun: the background loop credits a deposit without explicit Syncs and
// stops with its context.
func TestRun(t *testing.T) {
	chain := newFakeChain(9)
	w := newTestWallet(t, "regtest", func(c *Config) { c.Chain = chain; c.MinConf = 2 })
	addr, _ := w.DepositAddress("acct")
	dec, _ := btcutil.DecodeAddress(addr, w.Network())
	script, _ := txscript.PayToAddrScript(dec)
	tx := wire.NewMsgTx(2)
	tx.AddTxIn(wire.NewTxIn(wire.NewOutPoint(&chainhash.Hash{7}, 0), nil, nil))
	tx.AddTxOut(wire.NewTxOut(12345, script))
	if _, err := chain.SendRawTransaction(tx, false); err != nil {
		t.Fatal(err)
	}
	chain.mine(2)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, 5*time.Millisecond) }()
	deadline := time.Now().Add(30 * time.Second) // ends as soon as the deposit is credited
	for mustBal(t, w, EscrowAccount("acct")) != 12345 {
		if time.Now().After(deadline) {
			t.Fatal("Run did not credit the deposit within 30 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run returned %v", err)
	}
}

// TestSyncRefusesAnotherNetwork: a mainnet wallet does not follow a regtest node.
func TestSyncRefusesAnotherNetwork(t *testing.T) {
	w := newTestWallet(t, "mainnet", func(c *Config) { c.Chain = newFakeChain(1) })
	if _, err := w.Sync(context.Background()); !errors.Is(err, ErrWrongNetwork) {
		t.Fatalf("sync: %v", err)
	}
	if tip, _ := w.tip(); tip != -1 {
		t.Fatalf("scanned to %d", tip)
	}
}
