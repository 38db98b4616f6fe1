package wallet

import (
	"testing"

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
