package wallet

import (
	"encoding/binary"
	"fmt"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcutil"
	"github.com/btcsuite/btcd/btcutil/hdkeychain"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/txscript"
)

// Derivation: BIP84, m/84'/coin'/0'/branch/index, P2WPKH. coin is the
// network's BIP44 coin type (0 mainnet, 1 testnet and regtest, 115 simnet).
const (
	purposeBIP84 = 84
	// BranchDeposit holds one address per client account (index from the
	// account's row in the store, allocated in order from 0).
	BranchDeposit uint32 = 0
	// BranchChange holds change addresses of payouts, one per payout.
	BranchChange uint32 = 1
)

type hdKeys struct {
	net         *chaincfg.Params
	fingerprint uint32 // master key fingerprint, as PSBT stores it
	account     *hdkeychain.ExtendedKey
	branches    [2]*hdkeychain.ExtendedKey
}

func newHDKeys(seed []byte, net *chaincfg.Params) (*hdKeys, error) {
	master, err := hdkeychain.NewMaster(seed, net)
	if err != nil {
		return nil, fmt.Errorf("master key: %w", err)
	}
	pub, err := master.ECPubKey()
	if err != nil {
		return nil, err
	}
	k := &hdKeys{net: net, fingerprint: binary.LittleEndian.Uint32(btcutil.Hash160(pub.SerializeCompressed())[:4])}
	acct := master
	for _, i := range []uint32{purposeBIP84, net.HDCoinType, 0} {
		if acct, err = acct.Derive(hdkeychain.HardenedKeyStart + i); err != nil {
			return nil, fmt.Errorf("account key: %w", err)
		}
	}
	k.account = acct
	for b := range k.branches {
		if k.branches[b], err = acct.Derive(uint32(b)); err != nil {
			return nil, fmt.Errorf("branch key: %w", err)
		}
	}
	return k, nil
}

// path is the full BIP32 path of a key, as PSBT records it.
func (k *hdKeys) path(branch, index uint32) []uint32 {
	h := uint32(hdkeychain.HardenedKeyStart)
	return []uint32{h + purposeBIP84, h + k.net.HDCoinType, h, branch, index}
}

func (k *hdKeys) child(branch, index uint32) (*hdkeychain.ExtendedKey, error) {
	if branch > BranchChange || index >= hdkeychain.HardenedKeyStart {
		return nil, fmt.Errorf("key %d/%d out of range", branch, index)
	}
	return k.branches[branch].Derive(index)
}

func (k *hdKeys) privKey(branch, index uint32) (*btcec.PrivateKey, error) {
	c, err := k.child(branch, index)
	if err != nil {
		return nil, err
	}
	return c.ECPrivKey()
}

// address returns the P2WPKH address and output script of a key.
func (k *hdKeys) address(branch, index uint32) (*btcutil.AddressWitnessPubKeyHash, []byte, []byte, error) {
	c, err := k.child(branch, index)
	if err != nil {
		return nil, nil, nil, err
	}
	pub, err := c.ECPubKey()
	if err != nil {
		return nil, nil, nil, err
	}
	pk := pub.SerializeCompressed()
	a, err := btcutil.NewAddressWitnessPubKeyHash(btcutil.Hash160(pk), k.net)
	if err != nil {
		return nil, nil, nil, err
	}
	script, err := txscript.PayToAddrScript(a)
	if err != nil {
		return nil, nil, nil, err
	}
	return a, script, pk, nil
}
