package wallet

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/btcsuite/btcd/btcutil/hdkeychain"
	"github.com/cockroachdb/pebble/v2/vfs"
	"golang.org/x/crypto/argon2"

	"github.com/fincrypt/fincrypt/internal/fsutil"
	"github.com/fincrypt/fincrypt/vault"
)

// SeedFileName is the encrypted seed in the mediator's wallet directory.
const SeedFileName = "wallet-seed.json"

const (
	seedFileFormat = 1
	seedDomain     = "fincrypt wallet seed v1"
	seedLen        = 32 // bytes of BIP32 seed
)

// Seed errors callers test for.
var (
	ErrWrongPassphrase = errors.New("wrong wallet passphrase")
	ErrNoSeed          = errors.New("no wallet seed here")
	ErrSeedExists      = errors.New("a wallet seed already exists here")
)

// SeedFile is the JSON layout of wallet-seed.json (docs/WALLET.md). The seed
// is sealed with AES-256-GCM under a key derived from the operator's
// passphrase with Argon2id; the associated data binds the format, the network
// and the salt, so a seed file cannot be moved to another network unnoticed.
type SeedFile struct {
	Format  int             `json:"format"`
	Network string          `json:"network"`
	KDF     string          `json:"kdf"` // "argon2id"
	Params  vault.KDFParams `json:"params"`
	Salt    string          `json:"salt"`        // base64, 32 bytes
	Sealed  string          `json:"sealed_seed"` // base64: AES-256-GCM(key, seed)
}

func (sf *SeedFile) ad() []byte {
	return []byte(fmt.Sprintf("%s|format=%d|network=%s|salt=%s", seedDomain, sf.Format, sf.Network, sf.Salt))
}

func (sf *SeedFile) sealer(passphrase []byte) (*vault.Sealer, error) {
	if sf.KDF != "argon2id" {
		return nil, fmt.Errorf("seed file: kdf %q is not supported (want argon2id)", sf.KDF)
	}
	salt, err := base64.StdEncoding.DecodeString(sf.Salt)
	if err != nil || len(salt) < 16 {
		return nil, errors.New("seed file: bad salt")
	}
	p := sf.Params
	if p.Time == 0 || p.MemoryK < 8 || p.Threads == 0 {
		return nil, fmt.Errorf("seed file: bad argon2id parameters %+v", p)
	}
	return vault.NewSealer(argon2.IDKey(passphrase, salt, p.Time, p.MemoryK, p.Threads, vault.KeySize), seedDomain)
}

// CreateSeed generates a fresh random BIP32 seed for network net, encrypts it
// with a key derived from passphrase (Argon2id with kdf, or vault.DefaultKDF
// when kdf is zero) and writes it to dir/wallet-seed.json with mode 0600. It
// refuses to overwrite an existing seed.
func CreateSeed(dir string, passphrase []byte, net string, kdf vault.KDFParams) error {
	seed, err := hdkeychain.GenerateSeed(seedLen)
	if err != nil {
		return err
	}
	return writeSeed(dir, seed, passphrase, net, kdf)
}

// ImportSeed is CreateSeed with a given seed (16 to 64 bytes), for restoring
// a wallet from a backup.
func ImportSeed(dir string, seed, passphrase []byte, net string, kdf vault.KDFParams) error {
	if len(seed) < hdkeychain.MinSeedBytes || len(seed) > hdkeychain.MaxSeedBytes {
		return fmt.Errorf("seed is %d bytes, want %d to %d", len(seed), hdkeychain.MinSeedBytes, hdkeychain.MaxSeedBytes)
	}
	return writeSeed(dir, seed, passphrase, net, kdf)
}

func writeSeed(dir string, seed, passphrase []byte, net string, kdf vault.KDFParams) error {
	return writeSeedFS(vfs.Default, dir, seed, passphrase, net, kdf)
}

// writeSeedFS is writeSeed on fs (the power-loss test's crashable one).
func writeSeedFS(fs vfs.FS, dir string, seed, passphrase []byte, net string, kdf vault.KDFParams) error {
	if len(passphrase) == 0 {
		return errors.New("the wallet passphrase is empty")
	}
	params, err := ParseNetwork(net)
	if err != nil {
		return err
	}
	if kdf == (vault.KDFParams{}) {
		kdf = vault.DefaultKDF
	}
	if err := fsutil.MkdirAllSyncedFS(fs, dir); err != nil {
		return err
	}
	path := filepath.Join(dir, SeedFileName)
	if _, err := fs.Stat(path); err == nil {
		return fmt.Errorf("%s: %w", path, ErrSeedExists)
	}
	salt := make([]byte, 32)
	if _, err := rand.Read(salt); err != nil {
		return err
	}
	sf := SeedFile{Format: seedFileFormat, Network: NetworkName(params), KDF: "argon2id", Params: kdf,
		Salt: base64.StdEncoding.EncodeToString(salt)}
	s, err := sf.sealer(passphrase)
	if err != nil {
		return err
	}
	sf.Sealed = base64.StdEncoding.EncodeToString(s.Seal(nil, seed, sf.ad()))
	data, err := json.MarshalIndent(&sf, "", "  ")
	if err != nil {
		return err
	}
	return writeFileExclusive(fs, path, append(data, '\n'))
}

// writeFileExclusive writes a new file durably; it fails if path exists.
// The sync points, each guarded by TestPowerLossSeedFile: the temporary
// file's data before it is linked, and the directory after the link.
func writeFileExclusive(fs vfs.FS, path string, data []byte) error {
	var suffix [8]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		return err
	}
	tmpName := filepath.Join(filepath.Dir(path), fmt.Sprintf(".%s.tmp%x", filepath.Base(path), suffix))
	tmp, err := fs.Create(tmpName, vfs.WriteCategoryUnspecified)
	if err != nil {
		return err
	}
	defer fs.Remove(tmpName)
	if fs == vfs.Default { // the seed is readable by its owner only, before it is written
		if err := os.Chmod(tmpName, 0o600); err != nil {
			tmp.Close()
			return err
		}
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	// Link fails if path exists: never overwrite a seed.
	if err := fs.Link(tmpName, path); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%s: %w", path, ErrSeedExists)
		}
		return err
	}
	return fsutil.SyncDirFS(fs, filepath.Dir(path))
}

// ReadSeedFile reads and checks dir/wallet-seed.json without decrypting it.
func ReadSeedFile(dir string) (*SeedFile, error) { return readSeedFileFS(vfs.Default, dir) }

func readSeedFileFS(fs vfs.FS, dir string) (*SeedFile, error) {
	path := filepath.Join(dir, SeedFileName)
	data, err := readAll(fs, path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", path, ErrNoSeed)
	}
	if err != nil {
		return nil, err
	}
	var sf SeedFile
	if err := json.Unmarshal(data, &sf); err != nil {
		return nil, fmt.Errorf("%s: not a seed file: %v", path, err)
	}
	if sf.Format != seedFileFormat {
		return nil, fmt.Errorf("%s: format %d, want %d", path, sf.Format, seedFileFormat)
	}
	if _, err := ParseNetwork(sf.Network); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &sf, nil
}

func readAll(fs vfs.FS, path string) ([]byte, error) {
	f, err := fs.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	buf := make([]byte, st.Size())
	n, err := f.ReadAt(buf, 0)
	if n == len(buf) {
		err = nil
	}
	return buf[:n], err
}

// openSeed decrypts the seed in dir.
func openSeed(dir string, passphrase []byte) ([]byte, *SeedFile, error) {
	return openSeedFS(vfs.Default, dir, passphrase)
}

func openSeedFS(fs vfs.FS, dir string, passphrase []byte) ([]byte, *SeedFile, error) {
	sf, err := readSeedFileFS(fs, dir)
	if err != nil {
		return nil, nil, err
	}
	s, err := sf.sealer(passphrase)
	if err != nil {
		return nil, nil, err
	}
	sealed, err := base64.StdEncoding.DecodeString(sf.Sealed)
	if err != nil {
		return nil, nil, errors.New("seed file: bad sealed seed")
	}
	seed, err := s.Open(nil, sealed, sf.ad())
	if err != nil {
		return nil, nil, ErrWrongPassphrase
	}
	if len(seed) < hdkeychain.MinSeedBytes || len(seed) > hdkeychain.MaxSeedBytes {
		return nil, nil, fmt.Errorf("seed file: seed is %d bytes", len(seed))
	}
	return seed, sf, nil
}
