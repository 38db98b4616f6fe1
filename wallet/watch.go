package wallet

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/btcsuite/btcd/blockchain"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/wire"
)

// utxo is an output paying one of the wallet's scripts, seen in a block.
type utxo struct {
	Value   int64  `json:"value"`
	Script  []byte `json:"script"`
	Branch  uint32 `json:"branch"`
	Index   uint32 `json:"index"`
	Account string `json:"account,omitempty"` // deposit: the client account
	Height  int64  `json:"height"`
	Block   string `json:"block"`
	Gen     int64  `json:"gen"` // connection number, for the ledger keys
	// CreditKey is the ledger key of the deposit's credit, once credited.
	CreditKey   string `json:"credit_key,omitempty"`
	SpentHeight int64  `json:"spent_height,omitempty"`
	SpentBy     string `json:"spent_by,omitempty"`
	ReservedBy  uint64 `json:"reserved_by,omitempty"` // payout id
	// Coinbase marks a block reward paid to the wallet: the network lets
	// it be spent only after the coinbase maturity (100 blocks).
	Coinbase bool `json:"coinbase,omitempty"`
}

// confsNeeded is how many confirmations output u needs before it is
// credited (a deposit) or spent (by a payout): MinConf, and for a coinbase
// output at least the network's coinbase maturity, since a node refuses a
// transaction that spends one sooner and a block reward dropped by a
// reorganisation never comes back.
func (w *Wallet) confsNeeded(u *utxo) int64 {
	n := int64(w.cfg.MinConf)
	if u.Coinbase {
		n = max(n, int64(w.net.CoinbaseMaturity))
	}
	return n
}

func decodeUTXO(v []byte) (*utxo, error) {
	var u utxo
	if err := json.Unmarshal(v, &u); err != nil {
		return nil, fmt.Errorf("wallet store: corrupt utxo: %w", err)
	}
	return &u, nil
}

func parseOutPoint(s string) (wire.OutPoint, error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return wire.OutPoint{}, fmt.Errorf("bad outpoint %q", s)
	}
	h, err := chainhash.NewHashFromStr(s[:i])
	if err != nil {
		return wire.OutPoint{}, fmt.Errorf("bad outpoint %q: %w", s, err)
	}
	n, err := strconv.ParseUint(s[i+1:], 10, 32)
	if err != nil {
		return wire.OutPoint{}, fmt.Errorf("bad outpoint %q: %w", s, err)
	}
	return wire.OutPoint{Hash: *h, Index: uint32(n)}, nil
}

// DepositKey and ReorgKey are the ledger keys of a deposit's credit and of
// its reversal. gen numbers each time the wallet connects a block holding
// the output, so a deposit that reorganisations move away and back (even to
// the very same block) is credited, and reversed, once per connection.
func DepositKey(outpoint, block string, gen int64) string {
	return fmt.Sprintf("deposit/%s/%s/%d", outpoint, block, gen)
}

// ReorgKey is the ledger key that reverses DepositKey(outpoint, block, gen).
func ReorgKey(outpoint, block string, gen int64) string {
	return fmt.Sprintf("reorg/%s/%s/%d", outpoint, block, gen)
}

// SyncReport says what one Sync did.
type SyncReport struct {
	Tip          int64    `json:"tip"`
	Connected    int      `json:"connected"`    // blocks scanned
	Disconnected int      `json:"disconnected"` // blocks undone by a reorganisation
	Credited     []string `json:"credited,omitempty"`
	Reversed     []string `json:"reversed,omitempty"`
	Confirmed    []uint64 `json:"confirmed,omitempty"` // payouts
	// Abandoned: payouts whose input left the best chain (abandonOrphaned).
	Abandoned []uint64 `json:"abandoned,omitempty"`
	// Stray: outputs paying a wallet change address that no payout made
	// (logged; credited to no account).
	Stray []string `json:"stray,omitempty"`
}

// Sync follows the node's best chain: it undoes blocks that are no longer in
// it (reversing their deposits and payout confirmations), scans new blocks
// for outputs paying the wallet's scripts and for spends of its outputs,
// credits deposits with MinConf confirmations, confirms payouts with MinConf
// confirmations and re-broadcasts payouts not yet mined. Each block commits
// atomically, so an interrupted Sync resumes where it stopped.
func (w *Wallet) Sync(ctx context.Context) (*SyncReport, error) {
	if w.cfg.Chain == nil {
		return nil, ErrNoChain
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.chainChecked {
		g, err := w.cfg.Chain.GetBlockHash(0)
		if err != nil {
			return nil, fmt.Errorf("sync: getblockhash 0: %w", err)
		}
		if *g != *w.net.GenesisHash {
			return nil, fmt.Errorf("%w: the node's genesis block is %s, %s's is %s", ErrWrongNetwork, g, NetworkName(w.net), w.net.GenesisHash)
		}
		w.chainChecked = true
	}
	rep := &SyncReport{}
	for attempt := 0; ; attempt++ {
		again, err := w.syncChain(ctx, rep)
		if err != nil {
			return rep, err
		}
		if !again {
			break
		}
		if attempt > 10 {
			return rep, fmt.Errorf("sync: the node's chain keeps changing")
		}
	}
	if err := w.settleConfirmations(rep); err != nil {
		return rep, err
	}
	if err := w.abandonOrphaned(rep); err != nil {
		return rep, err
	}
	w.rebroadcast(ctx)
	return rep, nil
}

func (w *Wallet) tip() (int64, error) {
	t := w.begin()
	defer t.discard()
	return t.getInt(kTip)
}

// syncChain reports whether it stopped because the chain changed under it.
func (w *Wallet) syncChain(ctx context.Context, rep *SyncReport) (bool, error) {
	c := w.cfg.Chain
	best, err := c.GetBlockCount()
	if err != nil {
		return false, fmt.Errorf("sync: getblockcount: %w", err)
	}
	tip, err := w.tip()
	if err != nil {
		return false, err
	}
	// A node behind the wallet (still syncing, or restarted from scratch)
	// is not a reorganisation: if its best block is ours at that height (or
	// below where the wallet started), wait for it instead of undoing blocks.
	if tip > best {
		behind := best < w.start
		if !behind {
			h, err := c.GetBlockHash(best)
			if err != nil {
				return false, fmt.Errorf("sync: getblockhash %d: %w", best, err)
			}
			t := w.begin()
			ours, _, err := t.get(heightKey(pBlock, best))
			t.discard()
			if err != nil {
				return false, err
			}
			behind = string(ours) == string(h[:])
		}
		if behind {
			w.log.Info("the bitcoin node is behind the wallet; waiting for it", "node", best, "wallet", tip)
			rep.Tip = tip
			return false, nil
		}
	}
	// Undo our blocks that are not in the node's best chain.
	for tip >= w.start {
		t := w.begin()
		ours, _, err := t.get(heightKey(pBlock, tip))
		t.discard()
		if err != nil {
			return false, err
		}
		if tip <= best {
			h, err := c.GetBlockHash(tip)
			if err != nil {
				return false, fmt.Errorf("sync: getblockhash %d: %w", tip, err)
			}
			if string(ours) == string(h[:]) {
				break
			}
		}
		if err := w.disconnect(tip, rep); err != nil {
			return false, err
		}
		tip--
		rep.Disconnected++
	}
	for h := tip + 1; h <= best; h++ {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		hash, err := c.GetBlockHash(h)
		if err != nil {
			return false, fmt.Errorf("sync: getblockhash %d: %w", h, err)
		}
		blk, err := c.GetBlock(hash)
		if err != nil {
			return false, fmt.Errorf("sync: getblock %s: %w", hash, err)
		}
		if blk.BlockHash() != *hash {
			return false, fmt.Errorf("sync: node returned block %s for %s", blk.BlockHash(), hash)
		}
		if h > w.start {
			t := w.begin()
			prev, ok, err := t.get(heightKey(pBlock, h-1))
			t.discard()
			if err != nil {
				return false, err
			}
			if ok && string(prev) != string(blk.Header.PrevBlock[:]) {
				return true, nil // reorganised while we scanned: start over
			}
		}
		if err := w.connect(h, blk, rep); err != nil {
			return false, err
		}
		rep.Connected++
	}
	rep.Tip = best
	return false, nil
}

// connect scans block blk at height h in one batch.
func (w *Wallet) connect(h int64, blk *wire.MsgBlock, rep *SyncReport) error {
	t := w.begin()
	defer t.discard()
	bh := blk.BlockHash()
	block := bh.String()
	for _, tx := range blk.Transactions {
		txid := tx.TxHash()
		payoutID, err := t.getInt(pPayoutTx + txid.String())
		if id := payoutID; err != nil {
			return err
		} else if id > 0 {
			if err := w.payoutMined(t, uint64(id), tx, h, block); err != nil {
				return err
			}
		}
		coinbase := blockchain.IsCoinBaseTx(tx)
		if !coinbase {
			for _, in := range tx.TxIn {
				op := in.PreviousOutPoint.String()
				var u utxo
				ok, err := t.getJSON(pUTXO+op, &u)
				if err != nil {
					return err
				}
				if !ok {
					continue
				}
				u.SpentHeight, u.SpentBy = h, txid.String()
				if err := t.setJSON(pUTXO+op, &u); err != nil {
					return err
				}
				if err := t.set(heightKey(pBlockSpend, h)+op, nil); err != nil {
					return err
				}
				if u.ReservedBy != 0 {
					if err := w.payoutInputSpent(t, u.ReservedBy, op, txid.String(), h); err != nil {
						return err
					}
				}
			}
		}
		for vout, out := range tx.TxOut {
			var si scriptInfo
			ok, err := t.getJSON(pScript+hex.EncodeToString(out.PkScript), &si)
			if err != nil {
				return err
			}
			if !ok || out.Value <= 0 {
				continue
			}
			op := wire.OutPoint{Hash: txid, Index: uint32(vout)}
			gen, err := t.next(kNextGen)
			if err != nil {
				return err
			}
			u := utxo{Value: out.Value, Script: out.PkScript, Branch: si.Branch, Index: si.Index, Account: si.Account, Height: h, Block: block, Gen: gen, Coinbase: coinbase}
			res, err := t.getInt(pReserve + op.String())
			if err != nil {
				return err
			}
			u.ReservedBy = uint64(res)
			if err := t.setJSON(pUTXO+op.String(), &u); err != nil {
				return err
			}
			if err := t.set(heightKey(pBlockUTXO, h)+op.String(), nil); err != nil {
				return err
			}
			if si.Account != "" {
				w.log.Info("deposit seen", "account", si.Account, "outpoint", op.String(), "sat", out.Value, "height", h)
			} else if payoutID == 0 {
				// Someone paid a change address (not a payout's change):
				// it is no client's deposit, so nobody's escrow grows.
				w.log.Warn("payment to a wallet change address credited to no account: a client who sent it must be refunded by the operator",
					"outpoint", op.String(), "sat", out.Value, "height", h)
				rep.Stray = append(rep.Stray, op.String())
			}
		}
	}
	if err := t.set(heightKey(pBlock, h), bh[:]); err != nil {
		return err
	}
	if err := t.setInt(kTip, h); err != nil {
		return err
	}
	return t.commit()
}

// disconnect undoes block h in one batch.
func (w *Wallet) disconnect(h int64, rep *SyncReport) error {
	t := w.begin()
	defer t.discard()
	now := w.cfg.Now()
	var created, spent, paid []string
	collect := func(dst *[]string) func(string, []byte) error {
		return func(k string, _ []byte) error { *dst = append(*dst, k); return nil }
	}
	if err := t.scan(heightKey(pBlockUTXO, h), collect(&created)); err != nil {
		return err
	}
	if err := t.scan(heightKey(pBlockSpend, h), collect(&spent)); err != nil {
		return err
	}
	if err := t.scan(heightKey(pBlockPay, h), collect(&paid)); err != nil {
		return err
	}
	for _, op := range created {
		var u utxo
		ok, err := t.getJSON(pUTXO+op, &u)
		if err != nil {
			return err
		}
		if ok && u.CreditKey != "" {
			if err := w.reverseDeposit(t, op, &u, now); err != nil {
				return err
			}
			rep.Reversed = append(rep.Reversed, op)
		}
		if ok && u.ReservedBy != 0 {
			w.log.Warn("reorg dropped an output reserved by a payout (it keeps its reservation if re-mined)", "outpoint", op, "payout", u.ReservedBy)
		}
		if err := t.del(pUTXO + op); err != nil {
			return err
		}
		if err := t.del(heightKey(pBlockUTXO, h) + op); err != nil {
			return err
		}
	}
	for _, op := range spent {
		var u utxo
		ok, err := t.getJSON(pUTXO+op, &u)
		if err != nil {
			return err
		}
		if ok && u.SpentHeight == h {
			if u.ReservedBy != 0 {
				if err := w.payoutInputUnspent(t, u.ReservedBy, u.SpentBy); err != nil {
					return err
				}
			}
			u.SpentHeight, u.SpentBy = 0, ""
			if err := t.setJSON(pUTXO+op, &u); err != nil {
				return err
			}
		}
		if err := t.del(heightKey(pBlockSpend, h) + op); err != nil {
			return err
		}
	}
	for _, k := range paid {
		if err := w.payoutUnmined(t, beUint([]byte(k)), now); err != nil {
			return err
		}
		if err := t.del(heightKey(pBlockPay, h) + k); err != nil {
			return err
		}
	}
	if err := t.del(heightKey(pBlock, h)); err != nil {
		return err
	}
	if err := t.setInt(kTip, h-1); err != nil {
		return err
	}
	w.log.Warn("block disconnected", "height", h, "outputs_dropped", len(created), "payouts_unmined", len(paid))
	return t.commit()
}

// OnChain sums the wallet's unspent outputs seen on chain: all of them, and
// those a payout may spend now (enough confirmations, credited, unreserved).
func (w *Wallet) OnChain() (total, spendable int64, err error) {
	t := w.begin()
	defer t.discard()
	coins, err := w.spendable(t)
	if err != nil {
		return 0, 0, err
	}
	for _, c := range coins {
		spendable += c.u.Value
	}
	err = t.scan(pUTXO, func(k string, v []byte) error {
		u, err := decodeUTXO(v)
		if err != nil {
			return err
		}
		if u.SpentHeight == 0 {
			total += u.Value
		}
		return nil
	})
	return total, spendable, err
}

// Run syncs every interval until ctx ends, logging failures (a node that
// is down is retried at the next tick). The mediator runs it in its errgroup.
func (w *Wallet) Run(ctx context.Context, every time.Duration) error {
	if w.cfg.Chain == nil {
		return ErrNoChain
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		if rep, err := w.Sync(ctx); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			w.log.Warn("sync failed; retrying", "err", err, "in", every)
		} else if rep.Connected+rep.Disconnected > 0 {
			w.log.Debug("synced", "tip", rep.Tip, "connected", rep.Connected, "disconnected", rep.Disconnected)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}
