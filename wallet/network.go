// Package wallet is the mediator's Bitcoin side: an HD wallet whose seed is
// encrypted in the mediator's directory, one deposit address per client
// account, a double-entry escrow ledger in Pebble, the settlement of each
// period, a deposit watcher that follows a btcd or bitcoind node over RPC,
// and batched payouts (broadcast, or written as PSBT files).
//
// The formats, accounts, idempotency keys and state machines are specified
// in docs/WALLET.md.
package wallet

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/chaincfg"
)

// Network names accepted by ParseNetwork and stored in the seed file.
const (
	Mainnet = "mainnet"
	Testnet = "testnet" // testnet3
	Regtest = "regtest"
	Simnet  = "simnet"
)

var networks = map[string]*chaincfg.Params{
	Mainnet: &chaincfg.MainNetParams,
	Testnet: &chaincfg.TestNet3Params,
	Regtest: &chaincfg.RegressionNetParams,
	Simnet:  &chaincfg.SimNetParams,
}

// ErrBadAddress means an address does not parse or belongs to another network.
var ErrBadAddress = errors.New("bad payout address")

// ParseNetwork maps a network name (mainnet, testnet, regtest, simnet) to
// btcd's parameters. "testnet3" is accepted as an alias of "testnet".
func ParseNetwork(name string) (*chaincfg.Params, error) {
	n := strings.ToLower(strings.TrimSpace(name))
	if n == "testnet3" {
		n = Testnet
	}
	if p, ok := networks[n]; ok {
		return p, nil
	}
	return nil, fmt.Errorf("unknown bitcoin network %q (want one of %s)", name, strings.Join(NetworkNames(), ", "))
}

// NetworkNames lists the accepted network names, sorted.
func NetworkNames() []string {
	out := make([]string, 0, len(networks))
	for n := range networks {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// NetworkName is the inverse of ParseNetwork.
func NetworkName(p *chaincfg.Params) string {
	for n, q := range networks {
		if q.Name == p.Name {
			return n
		}
	}
	return p.Name
}

// CheckPayoutAddress parses addr and checks that it belongs to net and is a
// kind of output a payout can pay (P2PKH, P2SH, P2WPKH, P2WSH or P2TR). A
// storage node's payout address is checked with it when the node registers.
func CheckPayoutAddress(addr string, net *chaincfg.Params) (btcutil.Address, error) {
	a, err := btcutil.DecodeAddress(strings.TrimSpace(addr), net)
	if err != nil {
		return nil, fmt.Errorf("%w %q: %v", ErrBadAddress, addr, err)
	}
	// DecodeAddress accepts any network sharing the same prefixes (regtest
	// and testnet share base58 prefixes), so check explicitly.
	if !a.IsForNet(net) {
		return nil, fmt.Errorf("%w %q: not an address for %s", ErrBadAddress, addr, NetworkName(net))
	}
	switch a.(type) {
	case *btcutil.AddressPubKeyHash, *btcutil.AddressScriptHash,
		*btcutil.AddressWitnessPubKeyHash, *btcutil.AddressWitnessScriptHash,
		*btcutil.AddressTaproot:
	default:
		return nil, fmt.Errorf("%w %q: %T cannot receive payouts", ErrBadAddress, addr, a)
	}
	// Bech32 addresses carry a human-readable part per network; DecodeAddress
	// already rejected a wrong one. Re-encoding must give the same string
	// (catches mixed case and padding games).
	if !strings.EqualFold(a.EncodeAddress(), strings.TrimSpace(addr)) {
		return nil, fmt.Errorf("%w %q: does not round-trip", ErrBadAddress, addr)
	}
	return a, nil
}
