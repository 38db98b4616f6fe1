package wallet

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
)

// TestReorgOfStartBlockOnShorterChain: the node switches to a shorter
// branch whose block at the wallet's start height is another one. That is
// a reorganisation, not a node that is behind: the wallet undoes its
// blocks down to the start height and scans the node's block there (the
// deposit in it is seen again, in its new block).
func TestReorgOfStartBlockOnShorterChain(t *testing.T) {
	chain := newFakeChain(41)
	w := newTestWallet(t, "regtest", func(c *Config) { c.Chain = chain; c.MinConf = 1; c.StartHeight = 1 })
	fakeDeposit(t, chain, w, "acct", 70_000, 1)
	chain.mine(2)
	if rep := mustSync(t, w); rep.Tip != 2 || mustBal(t, w, EscrowAccount("acct")) != 70_000 {
		t.Fatalf("first sync: %+v", rep)
	}
	// Nothing new: nothing undone, nothing scanned.
	if rep := mustSync(t, w); rep.Disconnected != 0 || rep.Connected != 0 || rep.Tip != 2 {
		t.Fatalf("sync with no new block: %+v", rep)
	}
	chain.reorg(2, func(*wire.MsgTx, bool) bool { return true })
	chain.mine(1) // height 1 again, another block, the deposit in it
	rep := mustSync(t, w)
	if rep.Disconnected != 2 || rep.Connected != 1 || rep.Tip != 1 {
		t.Fatalf("reorganised to a shorter branch at the start height: %+v, want 2 blocks undone, 1 scanned, tip 1", rep)
	}
	if b := mustBal(t, w, EscrowAccount("acct")); b != 70_000 {
		t.Fatalf("escrow %d after the deposit was mined again", b)
	}
	if err := w.CheckLedger(); err != nil {
		t.Fatal(err)
	}
}

// reorgMidScan is a fakeChain that switches to another branch (from
// height from on) right after handing out the block at.
type reorgMidScan struct {
	*fakeChain
	at     chainhash.Hash
	from   int
	branch []*wire.MsgBlock
	done   bool
}

func (c *reorgMidScan) GetBlock(h *chainhash.Hash) (*wire.MsgBlock, error) {
	b, err := c.fakeChain.GetBlock(h)
	if !c.done && *h == c.at {
		c.done = true
		c.mu.Lock()
		c.blocks = append(c.blocks[:c.from:c.from], c.branch...)
		c.mu.Unlock()
	}
	return b, err
}

// TestReorgDuringScan: the node switches branches while a Sync scans: the
// next block does not extend the one just scanned, and the Sync starts
// over instead of stacking the new branch on the old one. The wallet ends
// with the node's blocks at every height, and a deposit only the old
// branch held is not counted.
func TestReorgDuringScan(t *testing.T) {
	fc := newFakeChain(42)
	chain := &reorgMidScan{fakeChain: fc, from: 2}
	w := newTestWallet(t, "regtest", func(c *Config) { c.Chain = chain; c.MinConf = 1 })
	fc.mine(2)
	mustSync(t, w)
	gone := fakeDeposit(t, fc, w, "acct", 70_000, 1)
	fc.mine(2) // the old branch: 3 (with the deposit) and 4
	old := append([]*wire.MsgBlock(nil), fc.blocks...)
	fc.reorg(3, func(tx *wire.MsgTx, _ bool) bool { return tx.TxHash() != gone.TxHash() })
	fc.mine(4) // the new branch: 2 to 5, without it
	chain.branch = append([]*wire.MsgBlock(nil), fc.blocks[2:]...)
	fc.blocks = old
	chain.at = old[3].BlockHash()
	mustSync(t, w)
	if !chain.done {
		t.Fatal("the Sync did not fetch the block the reorganisation follows")
	}
	mustSync(t, w)
	tx := w.begin()
	defer tx.discard()
	for h := int64(0); h <= 5; h++ {
		ours, _, err := tx.get(heightKey(pBlock, h))
		if err != nil {
			t.Fatal(err)
		}
		want := fc.blocks[h].BlockHash()
		if string(ours) != string(want[:]) {
			t.Fatalf("height %d: the wallet keeps another block than the node's", h)
		}
	}
	if st, err := w.AccountStatus("acct"); err != nil || st.Escrow != 0 || st.Pending != 0 {
		t.Fatalf("a deposit only the old branch held: %+v %v", st, err)
	}
}

// TestZeroValueOutputIgnored: an output of 0 sat paying a deposit address
// (valid by consensus) is no deposit: nothing is recorded or credited.
func TestZeroValueOutputIgnored(t *testing.T) {
	chain := newFakeChain(43)
	w := newTestWallet(t, "regtest", func(c *Config) { c.Chain = chain; c.MinConf = 1 })
	fakeDeposit(t, chain, w, "acct", 0, 1)
	chain.mine(1)
	rep := mustSync(t, w)
	if len(rep.Credited) != 0 {
		t.Fatalf("a 0 sat output credited: %+v", rep)
	}
	tx := w.begin()
	defer tx.discard()
	n := 0
	if err := tx.scan(pUTXO, func(string, []byte) error { n++; return nil }); err != nil || n != 0 {
		t.Fatalf("%d outputs recorded for a 0 sat payment (%v)", n, err)
	}
}

// cancelAtHash is a fakeChain that cancels a Sync's context when asked for
// the hash at height at (once): after its undo loop, before it scans.
type cancelAtHash struct {
	*fakeChain
	at     int64
	cancel context.CancelFunc
}

func (c *cancelAtHash) GetBlockHash(h int64) (*chainhash.Hash, error) {
	if h == c.at && c.cancel != nil {
		c.cancel()
		c.cancel = nil
	}
	return c.fakeChain.GetBlockHash(h)
}

// TestSyncInterruptedAfterUndo: a Sync stopped after undoing blocks and
// before scanning the new branch leaves the tip where the undo stopped;
// the next Sync scans the new branch from there.
func TestSyncInterruptedAfterUndo(t *testing.T) {
	fc := newFakeChain(44)
	chain := &cancelAtHash{fakeChain: fc, at: -1}
	w := newTestWallet(t, "regtest", func(c *Config) { c.Chain = chain; c.MinConf = 1 })
	fc.mine(4)
	mustSync(t, w)
	fc.reorg(2, func(*wire.MsgTx, bool) bool { return true })
	fc.mine(3) // blocks 3 to 5 of another branch
	ctx, cancel := context.WithCancel(context.Background())
	chain.at, chain.cancel = 2, cancel // the undo loop's last look: block 2 is ours
	rep, err := w.Sync(ctx)
	if !errors.Is(err, context.Canceled) || rep.Disconnected != 2 || rep.Connected != 0 {
		t.Fatalf("interrupted sync: %+v %v", rep, err)
	}
	if tip, err := w.tip(); err != nil || tip != 2 {
		t.Fatalf("tip %d after undoing blocks 4 and 3 (%v), want 2", tip, err)
	}
	if rep := mustSync(t, w); rep.Disconnected != 0 || rep.Connected != 3 || rep.Tip != 5 {
		t.Fatalf("next sync: %+v, want blocks 3 to 5 scanned and nothing undone", rep)
	}
}

// flipFlop is a fakeChain that switches between branches a and b (which
// differ from height 2 on) each time it hands out its block at height 2,
// up to limit times.
type flipFlop struct {
	*fakeChain
	a, b         []*wire.MsgBlock
	flips, limit int
}

func (c *flipFlop) GetBlock(h *chainhash.Hash) (*wire.MsgBlock, error) {
	blk, err := c.fakeChain.GetBlock(h)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.flips < c.limit && *h == c.blocks[2].BlockHash() {
		c.flips++
		if c.blocks[2] == c.a[2] {
			c.blocks = c.b
		} else {
			c.blocks = c.a
		}
	}
	return blk, err
}

// TestSyncGivesUpWhenTheChainKeepsChanging: a node that reorganises under
// every scan makes a Sync start over, and give up with an error after a
// bounded number of tries instead of running for good; once the node
// settles, the next Sync holds its blocks.
func TestSyncGivesUpWhenTheChainKeepsChanging(t *testing.T) {
	fc := newFakeChain(44)
	chain := &flipFlop{fakeChain: fc}
	w := newTestWallet(t, "regtest", func(c *Config) { c.Chain = chain; c.MinConf = 1 })
	fc.mine(1)
	mustSync(t, w)
	fc.mine(2)
	chain.a = append([]*wire.MsgBlock(nil), fc.blocks...)
	fc.reorg(2, func(*wire.MsgTx, bool) bool { return true })
	fc.mine(2)
	chain.b = append([]*wire.MsgBlock(nil), fc.blocks...)
	chain.limit = 1000
	if _, err := w.Sync(context.Background()); err == nil || !strings.Contains(err.Error(), "keeps changing") {
		t.Fatalf("Sync against a chain reorganising under every scan: %v after %d reorganisations, want it to give up", err, chain.flips)
	}
	if chain.flips > 20 {
		t.Fatalf("Sync gave up after %d reorganisations, want about a dozen", chain.flips)
	}
	chain.limit = chain.flips // settled
	rep := mustSync(t, w)
	tx := w.begin()
	defer tx.discard()
	for h := int64(0); h <= 3; h++ {
		ours, _, err := tx.get(heightKey(pBlock, h))
		if err != nil {
			t.Fatal(err)
		}
		want := fc.blocks[h].BlockHash()
		if string(ours) != string(want[:]) {
			t.Fatalf("height %d after the node settled (%+v): the wallet keeps another block than the node's", h, rep)
		}
	}
}

// downChain is a fakeChain whose node is down (every call fails) until up.
type downChain struct {
	*fakeChain
	up atomic.Bool
}

func (c *downChain) GetBlockCount() (int64, error) {
	if !c.up.Load() {
		return 0, errors.New("connection refused")
	}
	return c.fakeChain.GetBlockCount()
}

func (c *downChain) GetBlockHash(h int64) (*chainhash.Hash, error) {
	if !c.up.Load() {
		return nil, errors.New("connection refused")
	}
	return c.fakeChain.GetBlockHash(h)
}

// TestRunRetriesWhileTheNodeIsDown: Run logs a failed Sync and tries again
// at the next tick; it follows the node once it is back, and ends only
// with its context.
func TestRunRetriesWhileTheNodeIsDown(t *testing.T) {
	chain := &downChain{fakeChain: newFakeChain(45)}
	w := newTestWallet(t, "regtest", func(c *Config) { c.Chain = chain; c.MinConf = 1 })
	chain.mine(3)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, 5*time.Millisecond) }()
	time.Sleep(50 * time.Millisecond) // several ticks with the node down
	select {
	case err := <-done:
		t.Fatalf("Run ended while the node was down: %v", err)
	default:
	}
	chain.up.Store(true)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if tip, err := w.tip(); err == nil && tip == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Run did not follow the node within 10 s of it coming back")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run returned %v, want context.Canceled", err)
	}
}
