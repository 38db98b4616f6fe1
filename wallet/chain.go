package wallet

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/rpcclient"
	"github.com/btcsuite/btcd/wire"
)

// Chain is the part of a Bitcoin node's RPC the wallet uses. Every call
// exists in both btcd and bitcoind; *rpcclient.Client implements it. Blocks
// are scanned with getblockhash/getblock, so no address or tx index is needed.
type Chain interface {
	GetBlockCount() (int64, error)
	GetBlockHash(height int64) (*chainhash.Hash, error)
	GetBlock(hash *chainhash.Hash) (*wire.MsgBlock, error)
	SendRawTransaction(tx *wire.MsgTx, allowHighFees bool) (*chainhash.Hash, error)
}

// Chain errors callers test for.
var (
	// ErrNoChain means the wallet was opened without a Bitcoin node.
	ErrNoChain = errors.New("no bitcoin node configured")
	// ErrWrongNetwork means the node follows another network than the wallet.
	ErrWrongNetwork = errors.New("the bitcoin node is on another network")
)

// RPCConfig is how to reach a btcd or bitcoind JSON-RPC server.
type RPCConfig struct {
	Host string // host:port
	User string
	Pass string
	// CertFile is btcd's rpc.cert for TLS; empty means plain HTTP (btcd's
	// --notls on loopback, or bitcoind, which speaks plain HTTP).
	CertFile string
}

// DialRPC connects to the node in HTTP POST mode (no websockets, so it works
// with bitcoind as well as btcd). The caller shuts the client down.
func DialRPC(c RPCConfig) (*rpcclient.Client, error) {
	cc := &rpcclient.ConnConfig{Host: c.Host, User: c.User, Pass: c.Pass, HTTPPostMode: true, DisableTLS: c.CertFile == ""}
	if c.CertFile != "" {
		pem, err := os.ReadFile(c.CertFile)
		if err != nil {
			return nil, fmt.Errorf("rpc certificate: %w", err)
		}
		cc.Certificates = pem
	}
	cl, err := rpcclient.New(cc, nil)
	if err != nil {
		return nil, fmt.Errorf("bitcoin rpc %s: %w", c.Host, err)
	}
	return cl, nil
}

// alreadyKnown reports whether a sendrawtransaction error means the node
// already has the transaction (in its mempool or its chain), which for a
// re-broadcast is success. The messages differ between btcd and bitcoind.
func alreadyKnown(err error) bool {
	if err == nil {
		return false
	}
	s := strings.ToLower(err.Error())
	for _, m := range []string{"already have transaction", "already exists", "already in block chain",
		"txn-already-in-mempool", "txn-already-known", "transaction already in block chain", "already in the mempool"} {
		if strings.Contains(s, m) {
			return true
		}
	}
	return false
}

func jsonUnmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }

// DefaultRPCTimeout bounds one call to the Bitcoin node (WithTimeout).
const DefaultRPCTimeout = 10 * time.Second

// ErrRPCTimeout is returned by a call that WithTimeout gave up on.
var ErrRPCTimeout = errors.New("bitcoin node did not answer in time")

// WithTimeout bounds every call to c by d: the RPC client retries a node
// that is down for about 20 s a call, and the wallet holds its lock
// meanwhile. A call given up on finishes in the background (the RPC
// client's own retries bound it) and its result is dropped.
func WithTimeout(c Chain, d time.Duration) Chain {
	if d <= 0 {
		d = DefaultRPCTimeout
	}
	return timeoutChain{c: c, d: d}
}

type timeoutChain struct {
	c Chain
	d time.Duration
}

func bounded[T any](d time.Duration, what string, f func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		v, err := f()
		ch <- result{v, err}
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case r := <-ch:
		return r.v, r.err
	case <-t.C:
		var zero T
		return zero, fmt.Errorf("%s: %w (%s)", what, ErrRPCTimeout, d)
	}
}

func (t timeoutChain) GetBlockCount() (int64, error) {
	return bounded(t.d, "getblockcount", t.c.GetBlockCount)
}

func (t timeoutChain) GetBlockHash(h int64) (*chainhash.Hash, error) {
	return bounded(t.d, "getblockhash", func() (*chainhash.Hash, error) { return t.c.GetBlockHash(h) })
}

func (t timeoutChain) GetBlock(hash *chainhash.Hash) (*wire.MsgBlock, error) {
	return bounded(t.d, "getblock", func() (*wire.MsgBlock, error) { return t.c.GetBlock(hash) })
}

func (t timeoutChain) SendRawTransaction(tx *wire.MsgTx, allowHighFees bool) (*chainhash.Hash, error) {
	return bounded(t.d, "sendrawtransaction", func() (*chainhash.Hash, error) { return t.c.SendRawTransaction(tx, allowHighFees) })
}
