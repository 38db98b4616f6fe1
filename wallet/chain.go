package wallet

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

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
