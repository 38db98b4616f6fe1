package wallet

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
)

// Tests of the payout state machine after the record (broadcast, conflict
// and its undoing, abandon, revive, an input reorganised away and back),
// written against the mutants gremlins left in payout.go 234-727
// (docs/TESTING.md, "wallet, seventh session").

// refusingChain is a fakeChain whose node refuses every transaction while
// refuse is set, as a node that is down or rejects the fee would.
type refusingChain struct {
	*fakeChain
	refuse atomic.Bool
	sent   atomic.Int64
}

func (c *refusingChain) SendRawTransaction(tx *wire.MsgTx, high bool) (*chainhash.Hash, error) {
	c.sent.Add(1)
	if c.refuse.Load() {
		return nil, errors.New("-26: min relay fee not met")
	}
	return c.fakeChain.SendRawTransaction(tx, high)
}

func onlyPayout(t *testing.T, w *Wallet) Payout {
	t.Helper()
	list, err := w.Payouts()
	if err != nil || len(list) != 1 {
		t.Fatalf("payouts: %+v %v", list, err)
	}
	return list[0]
}

func payoutByID(t *testing.T, w *Wallet, id uint64) Payout {
	t.Helper()
	list, err := w.Payouts()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range list {
		if p.ID == id {
			return p
		}
	}
	t.Fatalf("no payout %d in %+v", id, list)
	return Payout{}
}

func oneNodePeriod(t *testing.T, period uint64, gib int64, addr string) PeriodInput {
	t.Helper()
	return PeriodInput{Period: period, Length: Month, Nodes: []NodeTerms{{ID: "n", PriceSatPerGiBMonth: 1000, PayoutAddress: addr}},
		Holdings: []Holding{{Node: "n", Account: "acct", Bytes: gib * GiB, Passed: true}}}
}

// payoutSignedNotSent settles one period of 100 GiB for node n (paid to
// addr) and records its payout, which a crash right after signing leaves
// unsent.
func payoutSignedNotSent(t *testing.T, w *Wallet, addr string) *Payout {
	t.Helper()
	if _, err := w.Settle(oneNodePeriod(t, 1, 100, addr)); err != nil {
		t.Fatal(err)
	}
	crash := errors.New("crash")
	w.testHook = func(string) error { return crash }
	p, err := w.Payout(context.Background())
	w.testHook = nil
	if !errors.Is(err, crash) || p == nil {
		t.Fatalf("payout: %+v %v", p, err)
	}
	return p
}

// conflictedSetup records a payout of 100000 sat to node n that is never
// broadcast (a crash right after the record) and mines a transaction of
// the wallet's own key spending its input: the payout becomes conflicted.
// mods change the wallet's Config further (a power-loss test's FS).
func conflictedSetup(t *testing.T, seed int64, mods ...func(*Config)) (*fakeChain, *Wallet, *Payout, *wire.MsgTx, int64) {
	t.Helper()
	chain := newFakeChain(seed)
	w := newTestWallet(t, "regtest", func(c *Config) {
		c.Chain = chain
		c.MinConf = 2
		for _, m := range mods {
			m(c)
		}
	})
	dep := fakeDeposit(t, chain, w, "acct", 1_000_000, 1)
	chain.mine(2)
	mustSync(t, w)
	old := payoutSignedNotSent(t, w, regtestAddr(t))
	if old.State != PayoutSigned {
		t.Fatalf("recorded payout is %s, want signed", old.State)
	}
	conflict := spendElsewhere(t, chain, w, wire.OutPoint{Hash: dep.TxHash(), Index: 0}, 990_000)
	chain.mine(1)
	rep := mustSync(t, w)
	p := onlyPayout(t, w)
	if p.State != PayoutConflicted || p.ConflictTx != conflict.TxHash().String() || p.ConflictHeight != rep.Tip || p.Prev != PayoutSigned {
		t.Fatalf("after the conflicting spend at height %d: %+v", rep.Tip, p)
	}
	return chain, w, old, conflict, rep.Tip
}

// TestConflictUndoneByReorg: the block that spent a payout's input
// elsewhere leaves the chain. The payout returns to the state it had
// (signed), is broadcast by the same Sync, cannot be abandoned, and
// confirms: the node is paid once and nothing stays in flight.
func TestConflictUndoneByReorg(t *testing.T) {
	chain, w, old, conflict, _ := conflictedSetup(t, 21)
	chain.reorg(1, func(tx *wire.MsgTx, _ bool) bool { return tx.TxHash() != conflict.TxHash() })
	chain.mine(2)
	mustSync(t, w)
	p := onlyPayout(t, w)
	if p.State != PayoutBroadcast || p.ConflictTx != "" || p.ConflictHeight != 0 || p.Prev != "" {
		t.Fatalf("after the conflict left the chain: %+v (want broadcast, conflict cleared)", p)
	}
	if err := w.AbandonPayout(old.ID); !errors.Is(err, ErrNotConflicted) {
		t.Fatalf("abandoning a payout no longer conflicted: %v", err)
	}
	chain.mine(2)
	if rep := mustSync(t, w); len(rep.Confirmed) != 1 {
		t.Fatalf("not confirmed: %+v", rep)
	}
	if b := mustBal(t, w, PaidAccount("n")); b != old.Amount {
		t.Fatalf("paid %d, want %d", b, old.Amount)
	}
	if b := mustBal(t, w, AcctPayoutInflight); b != 0 {
		t.Fatalf("%d sat still in flight", b)
	}
	if err := w.CheckLedger(); err != nil {
		t.Fatal(err)
	}
}

// abandonedSetup is conflictedSetup with the conflicted payout abandoned
// once the conflicting spend is MinConf deep.
func abandonedSetup(t *testing.T, seed int64, mods ...func(*Config)) (*fakeChain, *Wallet, *Payout, *wire.MsgTx, int64) {
	t.Helper()
	chain, w, old, conflict, hc := conflictedSetup(t, seed, mods...)
	chain.mine(1)
	mustSync(t, w)
	if err := w.AbandonPayout(old.ID); err != nil {
		t.Fatal(err)
	}
	return chain, w, old, conflict, hc
}

// TestAbandonedPayoutMinedWithPartBalance: an abandoned payout is mined
// after all while its node has earned part of it again: the revive takes
// what the node's balance holds and records only the rest as overpaid.
func TestAbandonedPayoutMinedWithPartBalance(t *testing.T) {
	chain, w, old, conflict, hc := abandonedSetup(t, 22)
	ctx := context.Background()
	debit := old.Outputs[0].Debit
	if b := mustBal(t, w, NodeAccount("n")); b != debit {
		t.Fatalf("node balance %d after the abandon, want %d", b, debit)
	}
	// The node is paid again from new money, then earns 30000 sat more.
	fakeDeposit(t, chain, w, "acct", 500_000, 2)
	chain.mine(2)
	mustSync(t, w)
	p2, err := w.Payout(ctx)
	if err != nil || p2 == nil {
		t.Fatalf("new payout: %+v %v", p2, err)
	}
	if _, err := w.Settle(oneNodePeriod(t, 2, 30, regtestAddr(t))); err != nil {
		t.Fatal(err)
	}
	earned := mustBal(t, w, NodeAccount("n"))
	if earned != 30_000 {
		t.Fatalf("node balance %d, want 30000", earned)
	}
	// The conflicting spend leaves the chain; the abandoned payout is
	// broadcast by someone and mined.
	tip, _ := chain.GetBlockCount()
	chain.reorg(int(tip-hc+1), func(tx *wire.MsgTx, _ bool) bool { return tx.TxHash() != conflict.TxHash() })
	broadcastAgain(t, chain, old)
	chain.mine(2)
	if _, err := w.Sync(ctx); err != nil {
		t.Fatalf("sync with the abandoned payout mined: %v", err)
	}
	if b := mustBal(t, w, NodeAccount("n")); b != 0 {
		t.Fatalf("node balance %d after the revive, want 0 (its %d taken)", b, earned)
	}
	if b := mustBal(t, w, AcctExtOverpaid); b != -(debit - earned) {
		t.Fatalf("ext:overpaid %d, want %d", b, -(debit - earned))
	}
	if p := payoutByID(t, w, old.ID); p.State != PayoutConfirmed || p.Gen != 1 {
		t.Fatalf("revived payout %+v", p)
	}
	if b := mustBal(t, w, PaidAccount("n")); b != old.Amount+p2.Amount {
		t.Fatalf("paid %d, want %d", b, old.Amount+p2.Amount)
	}
	if b := mustBal(t, w, AcctPayoutInflight); b != 0 {
		t.Fatalf("%d sat still in flight", b)
	}
	if err := w.CheckLedger(); err != nil {
		t.Fatal(err)
	}
}

// TestPayoutInputBackWithinMinConf: a payout's input leaves the chain and
// comes back before MinConf blocks passed: the payout is not abandoned,
// the note of the missing input is cleared (so a later Sync does not
// abandon it by the old count), and it confirms once the node takes it.
func TestPayoutInputBackWithinMinConf(t *testing.T) {
	chain := &refusingChain{fakeChain: newFakeChain(23)}
	w := newTestWallet(t, "regtest", func(c *Config) { c.Chain = chain; c.MinConf = 2 })
	ctx := context.Background()
	dep := fakeDeposit(t, chain.fakeChain, w, "acct", 1_000_000, 1)
	chain.mine(2)
	mustSync(t, w)
	if _, err := w.Settle(oneNodePeriod(t, 1, 100, regtestAddr(t))); err != nil {
		t.Fatal(err)
	}
	old, err := w.Payout(ctx)
	if err != nil || old == nil {
		t.Fatalf("payout: %+v %v", old, err)
	}
	chain.refuse.Store(true)
	chain.reorg(2, func(tx *wire.MsgTx, _ bool) bool { return tx.TxHash() != dep.TxHash() })
	chain.mine(3)
	rep := mustSync(t, w)
	if p := onlyPayout(t, w); p.State != PayoutBroadcast || p.MissingSince != rep.Tip {
		t.Fatalf("input gone: %+v, want broadcast and missing since %d", p, rep.Tip)
	}
	// The deposit is mined again: the input is back.
	chain.refuse.Store(false)
	if _, err := chain.fakeChain.SendRawTransaction(dep, false); err != nil {
		t.Fatal(err)
	}
	chain.refuse.Store(true)
	chain.mine(1)
	mustSync(t, w)
	if p := onlyPayout(t, w); p.State != PayoutBroadcast || p.MissingSince != 0 {
		t.Fatalf("input back: %+v, want broadcast, missing_since cleared", p)
	}
	chain.mine(3)
	if rep := mustSync(t, w); len(rep.Abandoned) != 0 {
		t.Fatalf("abandoned with its input back in the chain: %+v", rep)
	}
	if p := onlyPayout(t, w); p.State != PayoutBroadcast {
		t.Fatalf("payout %+v", p)
	}
	chain.refuse.Store(false)
	mustSync(t, w) // re-broadcast
	chain.mine(2)
	if rep := mustSync(t, w); len(rep.Confirmed) != 1 {
		t.Fatalf("not confirmed: %+v", rep)
	}
	if b := mustBal(t, w, PaidAccount("n")); b != old.Amount || mustBal(t, w, AcctPayoutInflight) != 0 {
		t.Fatalf("paid %d, want %d", b, old.Amount)
	}
	if err := w.CheckLedger(); err != nil {
		t.Fatal(err)
	}
}

// TestPayoutBroadcastRefused: a node that refuses the payout leaves it
// recorded (signed, the nodes debited, the error kept) and Payout says so;
// the next Sync re-broadcasts it, and a node that already has it counts as
// success; nothing is planned twice.
func TestPayoutBroadcastRefused(t *testing.T) {
	chain := &refusingChain{fakeChain: newFakeChain(24)}
	w := newTestWallet(t, "regtest", func(c *Config) { c.Chain = chain; c.MinConf = 1 })
	ctx := context.Background()
	fakeDeposit(t, chain.fakeChain, w, "acct", 1_000_000, 1)
	chain.mine(1)
	mustSync(t, w)
	if _, err := w.Settle(oneNodePeriod(t, 1, 100, regtestAddr(t))); err != nil {
		t.Fatal(err)
	}
	chain.refuse.Store(true)
	p, err := w.Payout(ctx)
	if !errors.Is(err, ErrBroadcast) || p == nil {
		t.Fatalf("payout refused by the node: %+v %v (want ErrBroadcast)", p, err)
	}
	got := onlyPayout(t, w)
	if got.State != PayoutSigned || !strings.Contains(got.LastError, "min relay fee") || p.LastError != got.LastError {
		t.Fatalf("refused payout recorded as %+v (returned %+v)", got, p)
	}
	if b := mustBal(t, w, NodeAccount("n")); b != 0 {
		t.Fatalf("node balance %d after its payout was recorded", b)
	}
	if again, err := w.Payout(ctx); again != nil || err != nil {
		t.Fatalf("a second payout while the first waits: %+v %v", again, err)
	}
	sent := chain.sent.Load()
	chain.refuse.Store(false)
	mustSync(t, w)
	if chain.sent.Load() == sent {
		t.Fatal("Sync did not re-broadcast the signed payout")
	}
	if got := onlyPayout(t, w); got.State != PayoutBroadcast || got.LastError != "" || got.Confirmations != 0 {
		t.Fatalf("after the re-broadcast: %s, last error %q, %d confirmations (want broadcast, none, 0)", got.State, got.LastError, got.Confirmations)
	}
	// The node already has it: still success, no error kept.
	mustSync(t, w)
	if got := onlyPayout(t, w); got.State != PayoutBroadcast || got.LastError != "" {
		t.Fatalf("after a re-broadcast the node already had: %+v", got)
	}
	chain.mine(1)
	mustSync(t, w)
	sent = chain.sent.Load()
	if got := onlyPayout(t, w); got.State != PayoutConfirmed || got.Confirmations != 1 {
		t.Fatalf("mined: %+v", got)
	}
	mustSync(t, w)
	if chain.sent.Load() != sent {
		t.Fatal("a confirmed payout was broadcast again")
	}
	if b := mustBal(t, w, PaidAccount("n")); b != p.Amount {
		t.Fatalf("paid %d, want %d", b, p.Amount)
	}
	if err := w.CheckLedger(); err != nil {
		t.Fatal(err)
	}
}

// TestPayoutRefusesUnverifiableSignature: a payout whose signed transaction
// does not verify (here the coin's record names another key than the one
// its script pays, as a damaged record would) is neither recorded nor sent:
// the node keeps its balance and nothing is reserved.
func TestPayoutRefusesUnverifiableSignature(t *testing.T) {
	chain := &refusingChain{fakeChain: newFakeChain(25)}
	w := newTestWallet(t, "regtest", func(c *Config) { c.Chain = chain; c.MinConf = 1 })
	dep := fakeDeposit(t, chain.fakeChain, w, "acct", 1_000_000, 1)
	chain.mine(1)
	mustSync(t, w)
	if _, err := w.Settle(oneNodePeriod(t, 1, 100, regtestAddr(t))); err != nil {
		t.Fatal(err)
	}
	op := wire.OutPoint{Hash: dep.TxHash(), Index: 0}
	tx := w.begin()
	var u utxo
	if ok, err := tx.getJSON(pUTXO+op.String(), &u); !ok || err != nil {
		t.Fatal(ok, err)
	}
	u.Index++
	if err := tx.setJSON(pUTXO+op.String(), &u); err != nil {
		t.Fatal(err)
	}
	if err := tx.commit(); err != nil {
		t.Fatal(err)
	}
	sent := chain.sent.Load()
	p, err := w.Payout(context.Background())
	if err == nil || !strings.Contains(err.Error(), "verify input 0") {
		t.Fatalf("payout with a signature that does not verify: %+v %v", p, err)
	}
	if list, err := w.Payouts(); err != nil || len(list) != 0 {
		t.Fatalf("recorded: %+v %v", list, err)
	}
	if chain.sent.Load() != sent {
		t.Fatal("an unverified transaction was sent")
	}
	if b := mustBal(t, w, NodeAccount("n")); b != 100_000 {
		t.Fatalf("node balance %d, want 100000 (nothing paid)", b)
	}
}

// TestSignedPayoutInputGoneAbandoned: a payout the node never accepted
// (state signed) whose input leaves the chain for good is abandoned like a
// broadcast one: its node gets the balance back, nothing stays in flight.
func TestSignedPayoutInputGoneAbandoned(t *testing.T) {
	chain := &refusingChain{fakeChain: newFakeChain(26)}
	w := newTestWallet(t, "regtest", func(c *Config) { c.Chain = chain; c.MinConf = 2 })
	dep := fakeDeposit(t, chain.fakeChain, w, "acct", 1_000_000, 1)
	chain.mine(2)
	mustSync(t, w)
	if _, err := w.Settle(oneNodePeriod(t, 1, 100, regtestAddr(t))); err != nil {
		t.Fatal(err)
	}
	chain.refuse.Store(true)
	if p, err := w.Payout(context.Background()); !errors.Is(err, ErrBroadcast) || p == nil || p.State != PayoutSigned {
		t.Fatalf("payout refused by the node: %+v %v", p, err)
	}
	chain.reorg(2, func(tx *wire.MsgTx, _ bool) bool { return tx.TxHash() != dep.TxHash() })
	chain.gone = map[chainhash.Hash]bool{dep.TxHash(): true}
	chain.mine(3)
	mustSync(t, w)
	// Missing for 1 block of MinConf 2, however often it syncs: kept.
	for range 2 {
		if rep := mustSync(t, w); len(rep.Abandoned) != 0 || onlyPayout(t, w).State != PayoutSigned {
			t.Fatalf("abandoned with its input missing for 1 block of 2: %+v", rep)
		}
	}
	chain.mine(1)
	rep := mustSync(t, w)
	if p := onlyPayout(t, w); p.State != PayoutAbandoned || len(rep.Abandoned) != 1 {
		t.Fatalf("signed payout whose input left the chain: %s, report %+v", p.State, rep)
	}
	if b := mustBal(t, w, NodeAccount("n")); b != 100_000 || mustBal(t, w, AcctPayoutInflight) != 0 {
		t.Fatalf("node balance %d, in flight %d after the abandon", b, mustBal(t, w, AcctPayoutInflight))
	}
	if err := w.CheckLedger(); err != nil {
		t.Fatal(err)
	}
}

// TestRevivedPayoutUnminedIsAbandonedAgain: an abandoned payout is mined
// after all (the conflicting spend left the chain), taking 30000 sat its
// node had earned since and recording the rest as overpaid; then a second
// reorganisation brings the conflicting spend back and drops the payout.
// The payout can never be mined: it returns to abandoned and the revive is
// reversed, so the node's 30000 sat are payable again, nothing is overpaid
// and nothing stays in flight. (It stayed "broadcast" for good before,
// with its debit in flight and the node's 30000 sat lost to it.)
func TestRevivedPayoutUnminedIsAbandonedAgain(t *testing.T) {
	chain, w, old, conflict, hc := abandonedSetup(t, 31)
	ctx := context.Background()
	dep2 := fakeDeposit(t, chain, w, "acct", 500_000, 2)
	chain.mine(2)
	mustSync(t, w)
	p2, err := w.Payout(ctx)
	if err != nil || p2 == nil {
		t.Fatalf("new payout: %+v %v", p2, err)
	}
	if _, err := w.Settle(oneNodePeriod(t, 2, 30, regtestAddr(t))); err != nil {
		t.Fatal(err)
	}
	base := append([]*wire.MsgBlock(nil), chain.blocks[:hc]...) // the chain before the conflicting spend

	// First branch: without the conflicting spend; the old payout mined.
	tip, _ := chain.GetBlockCount()
	chain.reorg(int(tip-hc+1), func(tx *wire.MsgTx, _ bool) bool { return tx.TxHash() != conflict.TxHash() })
	broadcastAgain(t, chain, old)
	chain.mine(2)
	mustSync(t, w)
	if p := payoutByID(t, w, old.ID); p.State != PayoutConfirmed || mustBal(t, w, NodeAccount("n")) != 0 || mustBal(t, w, AcctExtOverpaid) != -70_000 {
		t.Fatalf("revived: %s, node %d, overpaid %d", p.State, mustBal(t, w, NodeAccount("n")), mustBal(t, w, AcctExtOverpaid))
	}

	// Second branch, longer: the conflicting spend again, the new payout.
	p2raw, err := p2.tx()
	if err != nil {
		t.Fatal(err)
	}
	chain.blocks, chain.mempool = base, nil
	for _, tx := range []*wire.MsgTx{conflict, dep2, p2raw} {
		if _, err := chain.SendRawTransaction(tx, false); err != nil {
			t.Fatal(err)
		}
		chain.mine(1)
	}
	chain.mine(3)
	mustSync(t, w)
	if p := payoutByID(t, w, old.ID); p.State != PayoutAbandoned {
		t.Fatalf("old payout %s after its block and its revive left the chain, want abandoned", p.State)
	}
	if p := payoutByID(t, w, p2.ID); p.State != PayoutConfirmed {
		t.Fatalf("new payout %s", p.State)
	}
	for acct, want := range map[string]int64{
		NodeAccount("n"): 30_000, AcctExtOverpaid: 0, AcctPayoutInflight: 0, PaidAccount("n"): p2.Amount,
	} {
		if got := mustBal(t, w, acct); got != want {
			t.Errorf("%s = %d, want %d", acct, got, want)
		}
	}
	if err := w.CheckLedger(); err != nil {
		t.Fatal(err)
	}
}

// TestAbandonReleasesUnspentInputs: a payout of two inputs, one of them
// spent elsewhere, is abandoned: the other input is the wallet's again and
// pays the next payout.
func TestAbandonReleasesUnspentInputs(t *testing.T) {
	chain := newFakeChain(27)
	w := newTestWallet(t, "regtest", func(c *Config) { c.Chain = chain; c.MinConf = 2 })
	ctx := context.Background()
	big := fakeDeposit(t, chain, w, "acct", 60_000, 1)
	small := fakeDeposit(t, chain, w, "acct", 50_000, 2)
	chain.mine(2)
	mustSync(t, w)
	old := payoutSignedNotSent(t, w, regtestAddr(t))
	if len(old.Inputs) != 2 {
		t.Fatalf("payout inputs %v: want both deposits", old.Inputs)
	}
	spendElsewhere(t, chain, w, wire.OutPoint{Hash: small.TxHash(), Index: 0}, 49_000)
	chain.mine(2)
	mustSync(t, w)
	if _, spendable, _ := w.OnChain(); spendable != 0 {
		t.Fatalf("%d sat spendable while the payout holds its inputs", spendable)
	}
	if err := w.AbandonPayout(old.ID); err != nil {
		t.Fatal(err)
	}
	if total, spendable, err := w.OnChain(); err != nil || spendable != 60_000 || total != 60_000 {
		t.Fatalf("after the abandon: %d on chain, %d spendable (%v), want the 60000 sat input released", total, spendable, err)
	}
	fakeDeposit(t, chain, w, "acct", 50_000, 3)
	chain.mine(2)
	mustSync(t, w)
	p, err := w.Payout(ctx)
	if err != nil || p == nil {
		t.Fatalf("new payout: %+v %v", p, err)
	}
	found := false
	for _, in := range p.Inputs {
		found = found || in == (wire.OutPoint{Hash: big.TxHash(), Index: 0}).String()
	}
	if !found {
		t.Fatalf("the released input does not pay the new payout: %v", p.Inputs)
	}
}
