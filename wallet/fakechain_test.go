package wallet

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand"
	"sync"
	"testing"
	"time"

	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"
)

// fakeChain is an in-memory chain for randomized tests of Sync and payouts:
// blocks, a mempool, reorganisations at will. It checks that transactions
// spending outputs it knows spend them once and carry valid signatures;
// inputs it does not know are "external" coins (deposits from clients).
type fakeChain struct {
	mu      sync.Mutex
	rng     *rand.Rand
	blocks  []*wire.MsgBlock
	mempool []*wire.MsgTx
	// gone lists transactions a reorganisation took away for good:
	// spending their outputs is refused as an orphan, as btcd does.
	gone map[chainhash.Hash]bool
}

func newFakeChain(seed int64) *fakeChain {
	c := &fakeChain{rng: rand.New(rand.NewSource(seed))}
	c.blocks = append(c.blocks, chaincfg.RegressionNetParams.GenesisBlock)
	return c
}

func (c *fakeChain) newBlock(prev chainhash.Hash, txs []*wire.MsgTx) *wire.MsgBlock {
	cb := wire.NewMsgTx(1)
	var tag [16]byte
	binary.BigEndian.PutUint64(tag[:], uint64(len(c.blocks)))
	binary.BigEndian.PutUint64(tag[8:], c.rng.Uint64())
	cb.AddTxIn(wire.NewTxIn(wire.NewOutPoint(&chainhash.Hash{}, wire.MaxPrevOutIndex), tag[:], nil))
	cb.AddTxOut(wire.NewTxOut(50, []byte{txscript.OP_TRUE}))
	b := wire.NewMsgBlock(&wire.BlockHeader{Version: 4, PrevBlock: prev, Timestamp: time.Unix(int64(len(c.blocks)), 0), Nonce: c.rng.Uint32()})
	b.AddTransaction(cb)
	for _, tx := range txs {
		b.AddTransaction(tx)
	}
	return b
}

// utxos is the unspent output set of the chain (plus mempool if asked).
func (c *fakeChain) utxos(withMempool bool) map[wire.OutPoint]*wire.TxOut {
	set := map[wire.OutPoint]*wire.TxOut{}
	apply := func(tx *wire.MsgTx) {
		for _, in := range tx.TxIn {
			delete(set, in.PreviousOutPoint)
		}
		h := tx.TxHash()
		for i, o := range tx.TxOut {
			set[wire.OutPoint{Hash: h, Index: uint32(i)}] = o
		}
	}
	for _, b := range c.blocks {
		for _, tx := range b.Transactions {
			apply(tx)
		}
	}
	if withMempool {
		for _, tx := range c.mempool {
			apply(tx)
		}
	}
	return set
}

// known reports whether an outpoint was ever created on the chain or in the mempool.
func (c *fakeChain) created(op wire.OutPoint) bool {
	for _, b := range c.blocks {
		for _, tx := range b.Transactions {
			if tx.TxHash() == op.Hash {
				return true
			}
		}
	}
	for _, tx := range c.mempool {
		if tx.TxHash() == op.Hash {
			return true
		}
	}
	return false
}

func (c *fakeChain) GetBlockCount() (int64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return int64(len(c.blocks) - 1), nil
}

func (c *fakeChain) GetBlockHash(h int64) (*chainhash.Hash, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if h < 0 || h >= int64(len(c.blocks)) {
		return nil, fmt.Errorf("height %d out of range", h)
	}
	x := c.blocks[h].BlockHash()
	return &x, nil
}

func (c *fakeChain) GetBlock(hash *chainhash.Hash) (*wire.MsgBlock, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := len(c.blocks) - 1; i >= 0; i-- {
		if c.blocks[i].Header.BlockHash() == *hash {
			return c.blocks[i], nil
		}
	}
	return nil, errors.New("block not found")
}

func (c *fakeChain) SendRawTransaction(tx *wire.MsgTx, _ bool) (*chainhash.Hash, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := tx.TxHash()
	for _, m := range c.mempool {
		if m.TxHash() == h {
			return nil, errors.New("-26: already have transaction " + h.String())
		}
	}
	for _, b := range c.blocks {
		for _, t := range b.Transactions {
			if t.TxHash() == h {
				return nil, errors.New("-27: transaction already in block chain")
			}
		}
	}
	set := c.utxos(true)
	fetch := txscript.NewMultiPrevOutFetcher(nil)
	external := false
	for _, in := range tx.TxIn {
		if c.gone[in.PreviousOutPoint.Hash] {
			return nil, fmt.Errorf("-22: orphan transaction %v: input %v unknown", h, in.PreviousOutPoint)
		}
		if at := c.coinbaseHeight(in.PreviousOutPoint.Hash); at >= 0 && int64(len(c.blocks))-at < int64(chaincfg.RegressionNetParams.CoinbaseMaturity) {
			return nil, fmt.Errorf("-26: tried to spend coinbase transaction output %v from height %d at height %d before required maturity", in.PreviousOutPoint, at, len(c.blocks))
		}
		if o, ok := set[in.PreviousOutPoint]; ok {
			fetch.AddPrevOut(in.PreviousOutPoint, o)
		} else if c.created(in.PreviousOutPoint) {
			return nil, fmt.Errorf("-26: input %v already spent", in.PreviousOutPoint)
		} else {
			external = true
		}
	}
	if external { // a client's coins from outside: nothing to verify
		c.mempool = append(c.mempool, tx)
		return &h, nil
	}
	sh := txscript.NewTxSigHashes(tx, fetch)
	for i, in := range tx.TxIn {
		o := fetch.FetchPrevOutput(in.PreviousOutPoint)
		vm, err := txscript.NewEngine(o.PkScript, tx, i, txscript.StandardVerifyFlags, nil, sh, o.Value, fetch)
		if err != nil {
			return nil, err
		}
		if err := vm.Execute(); err != nil {
			return nil, fmt.Errorf("-26: input %d: %w", i, err)
		}
	}
	c.mempool = append(c.mempool, tx)
	return &h, nil
}

// coinbaseHeight is the height of the block whose coinbase is txid, or -1.
func (c *fakeChain) coinbaseHeight(txid chainhash.Hash) int64 {
	for h, b := range c.blocks {
		if b.Transactions[0].TxHash() == txid {
			return int64(h)
		}
	}
	return -1
}

// mineReward adds a block holding the whole mempool whose coinbase pays sat
// to script, as a miner paying a deposit address from its block reward.
func (c *fakeChain) mineReward(script []byte, sat int64) *wire.MsgTx {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := c.newBlock(c.blocks[len(c.blocks)-1].BlockHash(), c.mempool)
	b.Transactions[0].TxOut[0] = wire.NewTxOut(sat, script)
	c.blocks = append(c.blocks, b)
	c.mempool = nil
	return b.Transactions[0]
}

// mine adds k blocks, the first holding the whole mempool.
func (c *fakeChain) mine(k int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := 0; i < k; i++ {
		c.blocks = append(c.blocks, c.newBlock(c.blocks[len(c.blocks)-1].BlockHash(), c.mempool))
		c.mempool = nil
	}
}

// reorg drops the top depth blocks. Their transactions return to the
// mempool, except those keep() rejects (double-spent by the reorg), and
// those that spend a dropped one. keep learns whether any transaction spends
// an output of tx.
func (c *fakeChain) reorg(depth int, keep func(tx *wire.MsgTx, spent bool) bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if depth >= len(c.blocks) {
		depth = len(c.blocks) - 1
	}
	dropped := c.blocks[len(c.blocks)-depth:]
	c.blocks = c.blocks[:len(c.blocks)-depth]
	var back []*wire.MsgTx
	gone := map[chainhash.Hash]bool{}
	for _, b := range dropped {
		for _, tx := range b.Transactions[1:] {
			back = append(back, tx)
		}
	}
	back = append(back, c.mempool...)
	c.mempool = nil
	referenced := map[chainhash.Hash]bool{}
	for _, tx := range back {
		for _, in := range tx.TxIn {
			referenced[in.PreviousOutPoint.Hash] = true
		}
	}
	for _, b := range c.blocks {
		for _, tx := range b.Transactions {
			for _, in := range tx.TxIn {
				referenced[in.PreviousOutPoint.Hash] = true
			}
		}
	}
	for _, tx := range back {
		ok := keep(tx, referenced[tx.TxHash()])
		for _, in := range tx.TxIn {
			if gone[in.PreviousOutPoint.Hash] {
				ok = false
			}
		}
		if ok {
			c.mempool = append(c.mempool, tx)
		} else {
			gone[tx.TxHash()] = true
		}
	}
}

// TestNodeBehindAndSameBlockBack: a node that falls behind changes nothing;
// a real reorganisation reverses the deposit; a second one that brings back
// the very same block credits it again.
func TestNodeBehindAndSameBlockBack(t *testing.T) {
	chain := newFakeChain(3)
	w := newTestWallet(t, "regtest", func(c *Config) { c.Chain = chain; c.MinConf = 2 })
	fakeDeposit(t, chain, w, "acct", 70_000, 1)
	chain.mine(3)
	mustSync(t, w)
	if b := mustBal(t, w, EscrowAccount("acct")); b != 70_000 {
		t.Fatalf("escrow %d", b)
	}
	base := append([]*wire.MsgBlock(nil), chain.blocks[:len(chain.blocks)-3]...)
	saved := append([]*wire.MsgBlock(nil), chain.blocks[len(chain.blocks)-3:]...)

	chain.blocks = append([]*wire.MsgBlock(nil), base...) // the node is behind
	if rep := mustSync(t, w); rep.Disconnected != 0 || mustBal(t, w, EscrowAccount("acct")) != 70_000 {
		t.Fatalf("behind: %+v", rep)
	}
	chain.mine(4) // a longer branch without the deposit
	if rep := mustSync(t, w); rep.Disconnected != 3 || len(rep.Reversed) != 1 || mustBal(t, w, EscrowAccount("acct")) != 0 {
		t.Fatalf("reorg: %+v", rep)
	}
	chain.blocks = append(append([]*wire.MsgBlock(nil), base...), saved...) // the old branch wins
	chain.mine(2)
	if rep := mustSync(t, w); rep.Disconnected != 4 || len(rep.Credited) != 1 || mustBal(t, w, EscrowAccount("acct")) != 70_000 {
		t.Fatalf("back to the first branch: %+v, escrow %d", rep, mustBal(t, w, EscrowAccount("acct")))
	}
	if err := w.CheckLedger(); err != nil {
		t.Fatal(err)
	}
}
