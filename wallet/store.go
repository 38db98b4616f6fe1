package wallet

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// Key prefixes of the wallet database (docs/WALLET.md, "Store").
const (
	kVersion    = "m/version"
	kNetwork    = "m/network"
	kNextDep    = "m/next/deposit"
	kNextChange = "m/next/change"
	kNextPayout = "m/next/payout"
	kNextSeq    = "m/next/seq"
	kNextGen    = "m/next/gen"
	kTip        = "m/tip"
	kStart      = "m/start"
	pAccount    = "acct/"
	pScript     = "script/"
	pBalance    = "bal/"
	pTxKey      = "tx/"
	pJournal    = "j/"
	pSettled    = "settled/"
	pCarry      = "carry/"
	pDelinquent = "delinq/"
	pCharge     = "charge/"
	pBlock      = "blk/"
	pUTXO       = "utxo/"
	pBlockUTXO  = "bu/"
	pBlockSpend = "bs/"
	pBlockPay   = "bp/"
	pPayout     = "payout/"
	pPayoutTx   = "ptx/"
	pNodeAddr   = "nodeaddr/"
	pReserve    = "reserve/"

	storeVersion = 1
)

func be64(v uint64) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return string(b[:])
}

func heightKey(prefix string, h int64) string { return prefix + be64(uint64(h)) }

// rw reads and writes through one indexed Pebble batch, so that a whole
// operation (a settlement, a block, a payout) commits atomically with
// pebble.Sync or not at all.
type rw struct {
	b *pebble.Batch
}

func (w *Wallet) begin() *rw { return &rw{b: w.db.NewIndexedBatch()} }

// commit applies the batch durably and closes it; a deferred discard after
// it is a no-op (closing a Pebble batch twice could reset one that the pool
// has since handed to another goroutine).
func (t *rw) commit() error {
	if err := t.b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("wallet store commit: %w", err)
	}
	b := t.b
	t.b = nil
	return b.Close()
}

func (t *rw) discard() {
	if t.b != nil {
		_ = t.b.Close()
		t.b = nil
	}
}

func (t *rw) get(key string) ([]byte, bool, error) {
	v, c, err := t.b.Get([]byte(key))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("wallet store get %q: %w", key, err)
	}
	out := append([]byte(nil), v...)
	return out, true, c.Close()
}

func (t *rw) set(key string, v []byte) error { return t.b.Set([]byte(key), v, nil) }
func (t *rw) del(key string) error           { return t.b.Delete([]byte(key), nil) }

func (t *rw) getJSON(key string, v any) (bool, error) {
	data, ok, err := t.get(key)
	if err != nil || !ok {
		return ok, err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return false, fmt.Errorf("wallet store %q: corrupt record: %w", key, err)
	}
	return true, nil
}

func (t *rw) setJSON(key string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return t.set(key, data)
}

func (t *rw) getInt(key string) (int64, error) {
	v, ok, err := t.get(key)
	if err != nil || !ok {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("wallet store %q: corrupt integer (%d bytes)", key, len(v))
	}
	return int64(binary.BigEndian.Uint64(v)), nil
}

func (t *rw) setInt(key string, v int64) error { return t.set(key, []byte(be64(uint64(v)))) }

// next returns the counter at key and increments it.
func (t *rw) next(key string) (int64, error) {
	v, err := t.getInt(key)
	if err != nil {
		return 0, err
	}
	return v, t.setInt(key, v+1)
}

// scan calls fn for every key with prefix, in key order. fn gets the key
// without the prefix; the value is only valid during the call.
func (t *rw) scan(prefix string, fn func(k string, v []byte) error) error {
	it, err := t.b.NewIter(&pebble.IterOptions{LowerBound: []byte(prefix), UpperBound: prefixEnd(prefix)})
	if err != nil {
		return err
	}
	for ok := it.First(); ok; ok = it.Next() {
		if err := fn(string(it.Key()[len(prefix):]), it.Value()); err != nil {
			it.Close()
			return err
		}
	}
	if err := it.Error(); err != nil {
		it.Close()
		return err
	}
	return it.Close()
}

func prefixEnd(p string) []byte {
	b := []byte(p)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return b[:i+1]
		}
	}
	return nil
}
