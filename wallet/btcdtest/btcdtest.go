// Package btcdtest starts a real btcd in regtest on loopback for tests: it
// finds or builds the btcd binary, mines blocks with the generate RPC, funds
// addresses from the coinbases it mined, and stops the node in cleanup.
//
// The binary is $FINCRYPT_BTCD, or tools/bin/btcd under the repository root;
// if neither exists it is built once with
// `go install github.com/btcsuite/btcd@v0.24.2` into tools/bin, under a file
// lock so that test binaries of several packages do not race.
package btcdtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/chaincfg/chainhash"
	"github.com/btcsuite/btcd/rpcclient"
	"github.com/btcsuite/btcd/txscript"
	"github.com/btcsuite/btcd/wire"
)

// BtcdVersion is the btcd module version the harness installs.
const BtcdVersion = "v0.24.2"

// Node is a running btcd in regtest with a mining key.
type Node struct {
	RPC  *rpcclient.Client
	Host string // 127.0.0.1:port of the JSON-RPC server (plain HTTP)
	User string
	Pass string
	Net  *chaincfg.Params
	Dir  string

	cmd       *exec.Cmd
	exited    chan struct{}
	minerKey  *btcec.PrivateKey
	minerAddr btcutil.Address
	minerPk   []byte

	mu    sync.Mutex
	coins []coinbase                 // mined coinbases not yet spent by Send
	sent  map[wire.OutPoint]coinbase // coinbases spent by Send, for Replace
}

type coinbase struct {
	op     wire.OutPoint
	value  int64
	height int64
}

// Start starts a btcd for one test and stops it in t.Cleanup.
func Start(t testing.TB) *Node {
	t.Helper()
	n, err := StartNode(t.TempDir())
	if err != nil {
		t.Fatalf("btcdtest: %v", err)
	}
	t.Cleanup(n.Stop)
	return n
}

// StartNode starts a btcd with its data in dir (for a node shared by the tests
// of a package, started from TestMain). The caller calls Stop.
func StartNode(dir string) (*Node, error) {
	return StartNodeNet(dir, &chaincfg.RegressionNetParams)
}

// StartNodeNet is StartNode on regtest or simnet. btcd wipes a regtest chain
// at every start; a simnet chain in dir survives restarts (the devnet
// uses it). Each start has a new mining key: coins mined by an earlier
// start are not spendable by Send.
func StartNodeNet(dir string, net *chaincfg.Params) (*Node, error) {
	if net.Name != chaincfg.RegressionNetParams.Name && net.Name != chaincfg.SimNetParams.Name {
		return nil, fmt.Errorf("btcdtest: network %s: want regtest or simnet", net.Name)
	}
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	key, err := btcec.NewPrivateKey()
	if err != nil {
		return nil, err
	}
	addr, err := btcutil.NewAddressPubKeyHash(btcutil.Hash160(key.PubKey().SerializeCompressed()), net)
	if err != nil {
		return nil, err
	}
	pk, err := txscript.PayToAddrScript(addr)
	if err != nil {
		return nil, err
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		n := &Node{Net: net, Dir: dir, User: "fincrypt", Pass: "fincrypt-test", minerKey: key, minerAddr: addr, minerPk: pk}
		if lastErr = n.start(bin); lastErr == nil {
			return n, nil
		}
	}
	return nil, lastErr
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (n *Node) start(bin string) error {
	var err error
	if n.Host == "" { // a restart keeps its port
		port, err := freePort()
		if err != nil {
			return err
		}
		n.Host = "127.0.0.1:" + strconv.Itoa(port)
	}
	netFlag := "--regtest"
	if n.Net.Name == chaincfg.SimNetParams.Name {
		netFlag = "--simnet"
	}
	args := []string{
		netFlag, "--datadir=" + filepath.Join(n.Dir, "data"), "--logdir=" + filepath.Join(n.Dir, "logs"),
		"--rpclisten=" + n.Host, "--notls", "--nolisten", "--rpcuser=" + n.User, "--rpcpass=" + n.Pass,
		"--miningaddr=" + n.minerAddr.EncodeAddress(), "--txindex", "--debuglevel=info",
	}
	n.cmd = exec.Command(bin, args...)
	var out bytes.Buffer
	n.cmd.Stdout, n.cmd.Stderr = &out, &out
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := n.cmd.Start(); err != nil {
		return fmt.Errorf("start btcd: %w", err)
	}
	n.exited = make(chan struct{})
	go func() { _ = n.cmd.Wait(); close(n.exited) }()
	n.RPC, err = rpcclient.New(&rpcclient.ConnConfig{Host: n.Host, User: n.User, Pass: n.Pass, HTTPPostMode: true, DisableTLS: true}, nil)
	if err != nil {
		n.kill()
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := n.RPC.GetBlockCount(); err == nil {
			return nil
		}
		select {
		case <-n.exited:
			return fmt.Errorf("btcd exited: %s", lastLines(out.String(), 20))
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			n.kill()
			return fmt.Errorf("btcd RPC on %s did not come up in 30s: %s", n.Host, lastLines(out.String(), 20))
		}
	}
}

func lastLines(s string, k int) string {
	lines := bytes.Split([]byte(s), []byte("\n"))
	if len(lines) > k {
		lines = lines[len(lines)-k:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

func (n *Node) kill() {
	if n.cmd != nil && n.cmd.Process != nil {
		_ = n.cmd.Process.Kill()
		<-n.exited
	}
}

// Stop asks btcd to stop, and kills it if it has not exited within 10 s.
func (n *Node) Stop() {
	if n.RPC != nil {
		_, _ = n.RPC.RawRequest("stop", nil)
		n.RPC.Shutdown()
	}
	select {
	case <-n.exited:
	case <-time.After(10 * time.Second):
		n.kill()
	}
}

// Restart starts a stopped node again on the same RPC port and data
// directory (a simnet chain survives it; btcd wipes a regtest one), with
// the same mining key.
func (n *Node) Restart() error {
	bin, err := Binary()
	if err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		if err = n.start(bin); err == nil || attempt == 20 {
			return err
		}
		time.Sleep(250 * time.Millisecond) // the port may linger
	}
}

// Generate mines k blocks and remembers their coinbases for Send.
func (n *Node) Generate(k uint32) ([]*chainhash.Hash, error) {
	base, err := n.RPC.GetBlockCount()
	if err != nil {
		return nil, err
	}
	hashes, err := n.RPC.Generate(k)
	if err != nil {
		return nil, fmt.Errorf("generate %d: %w", k, err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for i, h := range hashes {
		b, err := n.RPC.GetBlock(h)
		if err != nil {
			return nil, err
		}
		cb := b.Transactions[0]
		for j, o := range cb.TxOut {
			if bytes.Equal(o.PkScript, n.minerPk) {
				n.coins = append(n.coins, coinbase{op: wire.OutPoint{Hash: cb.TxHash(), Index: uint32(j)}, value: o.Value, height: base + 1 + int64(i)})
			}
		}
	}
	return hashes, nil
}

// MustGenerate is Generate that fails the test on error.
func (n *Node) MustGenerate(t testing.TB, k uint32) []*chainhash.Hash {
	t.Helper()
	h, err := n.Generate(k)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// ErrNoMatureCoins means Send found no coinbase old enough to spend; mine more.
var ErrNoMatureCoins = errors.New("btcdtest: no mature coinbase; generate more blocks")

// Send pays amount satoshis to addr from one mature coinbase, with change
// back to the miner, and returns the transaction (in the mempool; mine a
// block to confirm it). The transaction signals replaceability, so Replace
// can double-spend it.
func (n *Node) Send(addr btcutil.Address, amount int64) (*wire.MsgTx, error) {
	script, err := txscript.PayToAddrScript(addr)
	if err != nil {
		return nil, err
	}
	return n.spendCoinbase(func(value int64) []*wire.TxOut {
		return []*wire.TxOut{wire.NewTxOut(amount, script), wire.NewTxOut(value-amount-2000, n.minerPk)}
	}, nil)
}

// Replace double-spends tx (made by Send) with a higher fee, paying
// everything back to the miner: once mined, tx can never confirm.
func (n *Node) Replace(tx *wire.MsgTx) (*wire.MsgTx, error) {
	prev := tx.TxIn[0].PreviousOutPoint
	return n.spendCoinbase(func(value int64) []*wire.TxOut {
		return []*wire.TxOut{wire.NewTxOut(value-20000, n.minerPk)}
	}, &prev)
}

func (n *Node) spendCoinbase(outs func(value int64) []*wire.TxOut, which *wire.OutPoint) (*wire.MsgTx, error) {
	best, err := n.RPC.GetBlockCount()
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	var cb coinbase
	found := false
	if which != nil {
		cb, found = n.sent[*which]
	} else {
		for i, c := range n.coins {
			if best+1-c.height >= int64(n.Net.CoinbaseMaturity) {
				cb, found = c, true
				n.coins = append(n.coins[:i], n.coins[i+1:]...)
				if n.sent == nil {
					n.sent = map[wire.OutPoint]coinbase{}
				}
				n.sent[c.op] = c
				break
			}
		}
	}
	n.mu.Unlock()
	if !found {
		return nil, ErrNoMatureCoins
	}
	tx := wire.NewMsgTx(2)
	in := wire.NewTxIn(&cb.op, nil, nil)
	in.Sequence = wire.MaxTxInSequenceNum - 2
	tx.AddTxIn(in)
	for _, o := range outs(cb.value) {
		tx.AddTxOut(o)
	}
	sig, err := txscript.SignatureScript(tx, 0, n.minerPk, txscript.SigHashAll, n.minerKey, true)
	if err != nil {
		return nil, err
	}
	tx.TxIn[0].SignatureScript = sig
	if _, err := n.RPC.SendRawTransaction(tx, true); err != nil {
		return nil, fmt.Errorf("send: %w", err)
	}
	return tx, nil
}

// Tx returns a transaction by id (the node runs with --txindex).
func (n *Node) Tx(txid *chainhash.Hash) (*wire.MsgTx, error) {
	tx, err := n.RPC.GetRawTransaction(txid)
	if err != nil {
		return nil, err
	}
	return tx.MsgTx(), nil
}

// Confirmations returns how many blocks of the best chain confirm txid (0 in
// the mempool).
func (n *Node) Confirmations(txid *chainhash.Hash) (int64, error) {
	r, err := n.RPC.GetRawTransactionVerbose(txid)
	if err != nil {
		return 0, err
	}
	return int64(r.Confirmations), nil
}

// MinerAddress is the address the node mines to.
func (n *Node) MinerAddress() btcutil.Address { return n.minerAddr }

// Ready mines the blocks a wallet test needs: mature coinbases for Send and
// an active segwit (about 530 blocks; well under a second).
func (n *Node) Ready() error {
	if _, err := n.Generate(101); err != nil {
		return err
	}
	return n.ActivateSegwit()
}

// ActivateSegwit mines until btcd reports segwit active (btcd's regtest
// activates it by BIP 9 signalling, after three 144-block windows). Wallet
// outputs are P2WPKH, so spending them needs it.
func (n *Node) ActivateSegwit() error {
	for i := 0; i < 8; i++ {
		raw, err := n.RPC.RawRequest("getblockchaininfo", nil)
		if err != nil {
			return err
		}
		var info struct {
			Bip9 map[string]struct {
				Status string `json:"status"`
			} `json:"bip9_softforks"`
		}
		if err := json.Unmarshal(raw, &info); err != nil {
			return fmt.Errorf("getblockchaininfo: %w", err)
		}
		if info.Bip9["segwit"].Status == "active" {
			return nil
		}
		if _, err := n.Generate(144); err != nil {
			return err
		}
	}
	return errors.New("btcdtest: segwit did not activate")
}

// Invalidate makes btcd drop block hash and its descendants from its best
// chain (invalidateblock), and forgets the coinbases they paid.
func (n *Node) Invalidate(hash *chainhash.Hash) error {
	hdr, err := n.RPC.GetBlockHeaderVerbose(hash)
	if err != nil {
		return err
	}
	if err := n.RPC.InvalidateBlock(hash); err != nil {
		return fmt.Errorf("invalidateblock %s: %w", hash, err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	kept := n.coins[:0]
	for _, c := range n.coins {
		if c.height < int64(hdr.Height) {
			kept = append(kept, c)
		}
	}
	n.coins = kept
	return nil
}
