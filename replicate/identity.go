package replicate

import (
	fnet "github.com/fincrypt/fincrypt/net"
	"github.com/fincrypt/fincrypt/vault"
)

// AccountIdentity is the vault's account identity on the network: the
// ed25519 key whose seed is vault.Keys.Account. Its node id is the account
// id that `fincrypt init --mediator` registers and `fincrypt account` prints.
func AccountIdentity(v *vault.Vault) (*fnet.Identity, error) {
	return KeysIdentity(v.Keys)
}

// KeysIdentity is AccountIdentity from the derived keys.
func KeysIdentity(k *vault.Keys) (*fnet.Identity, error) {
	return fnet.NewIdentity(k.Account[:])
}
