package vault

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/fincrypt/fincrypt/internal/fsutil"
	"golang.org/x/crypto/argon2"
)

// File names under the vault's home directory (docs/FORMAT.md).
const (
	KeyFileName    = "vault.json" // the wrapped master key and KDF parameters
	ConfigFileName = "config"     // human-editable settings
	IndexDirName   = "index"      // the Pebble index
	StoreDirName   = "store"      // default local chunk store
	LockFileName   = "vault.lock" // held while the vault is open read-write
	keyFileFormat  = 1            // KeyFile.Format
	keyWrapDomain  = "fincrypt kek v1"
)

// ErrNoVault means the home directory holds no vault.
var ErrNoVault = errors.New("no vault here")

// ErrLocked means another process holds the vault open.
var ErrLocked = errors.New("the vault is in use by another fincrypt process (is it mounted?)")

// KDFParams are Argon2id's parameters, stored in the key file so that they can
// be raised for new vaults without breaking old ones.
type KDFParams struct {
	Time    uint32 `json:"time"`
	MemoryK uint32 `json:"memory_kib"`
	Threads uint8  `json:"threads"`
}

// DefaultKDF follows RFC 9106's second recommended option (64 MiB, t=3, p=4).
var DefaultKDF = KDFParams{Time: 3, MemoryK: 64 * 1024, Threads: 4}

// KeyFile is vault.json: everything needed to turn a password into the master key.
type KeyFile struct {
	Format     int       `json:"format"`
	VaultID    string    `json:"vault_id"`    // random, hex; names the vault, reveals nothing
	ChunkSize  uint32    `json:"chunk_size"`  // plaintext bytes per chunk, fixed for the vault's life
	KDF        string    `json:"kdf"`         // "argon2id"
	Params     KDFParams `json:"params"`      //
	Salt       string    `json:"salt"`        // base64, 32 bytes
	WrappedKey string    `json:"wrapped_key"` // base64: AES-256-GCM(KEK, master key), AD = domain || vault id
}

// DefaultChunkSize is the plaintext size of a chunk in new vaults.
const DefaultChunkSize = 1 << 20

// Vault is an unlocked vault: its home, its keys and its settings.
type Vault struct {
	Home    string
	KeyFile KeyFile
	Keys    *Keys
	Config  *Config
	master  []byte
	lock    *os.File
}

// CreateOptions tune a new vault; the zero value gives the defaults.
type CreateOptions struct {
	KDF       KDFParams // zero means DefaultKDF
	ChunkSize uint32    // zero means DefaultChunkSize
}

// Create makes a new vault in home, which must not already hold one.
func Create(home string, password []byte, opt CreateOptions) error {
	if len(password) == 0 {
		return errors.New("the password is empty")
	}
	if opt.KDF == (KDFParams{}) {
		opt.KDF = DefaultKDF
	}
	if opt.ChunkSize == 0 {
		opt.ChunkSize = DefaultChunkSize
	}
	if opt.ChunkSize < 4096 || opt.ChunkSize&(opt.ChunkSize-1) != 0 || opt.ChunkSize > 16<<20 {
		return fmt.Errorf("chunk size %d: want a power of two from 4 KiB to 16 MiB", opt.ChunkSize)
	}
	if err := os.MkdirAll(home, 0o700); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(home, KeyFileName)); err == nil {
		return fmt.Errorf("%s already holds a vault", home)
	}
	master := make([]byte, KeySize)
	id := make([]byte, 16)
	if _, err := rand.Read(master); err != nil {
		return err
	}
	if _, err := rand.Read(id); err != nil {
		return err
	}
	kf := KeyFile{Format: keyFileFormat, VaultID: hex.EncodeToString(id), ChunkSize: opt.ChunkSize}
	if err := kf.wrap(master, password, opt.KDF); err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(home, ConfigFileName), []byte(DefaultConfig().String()), 0o600); err != nil {
		return err
	}
	return kf.save(home)
}

func (kf *KeyFile) wrap(master, password []byte, p KDFParams) error {
	salt := make([]byte, 32)
	if _, err := rand.Read(salt); err != nil {
		return err
	}
	kf.KDF, kf.Params, kf.Salt = "argon2id", p, base64.StdEncoding.EncodeToString(salt)
	s, err := kf.kek(password)
	if err != nil {
		return err
	}
	kf.WrappedKey = base64.StdEncoding.EncodeToString(s.Seal(nil, master, []byte(kf.VaultID)))
	return nil
}

func (kf *KeyFile) kek(password []byte) (*Sealer, error) {
	if kf.KDF != "argon2id" {
		return nil, fmt.Errorf("key file: kdf %q is not supported (want argon2id)", kf.KDF)
	}
	salt, err := base64.StdEncoding.DecodeString(kf.Salt)
	if err != nil || len(salt) < 16 {
		return nil, fmt.Errorf("key file: bad salt")
	}
	p := kf.Params
	if p.Time == 0 || p.MemoryK < 8 || p.Threads == 0 {
		return nil, fmt.Errorf("key file: bad argon2id parameters %+v", p)
	}
	return NewSealer(argon2.IDKey(password, salt, p.Time, p.MemoryK, p.Threads, KeySize), keyWrapDomain)
}

func (kf *KeyFile) unwrap(password []byte) ([]byte, error) {
	s, err := kf.kek(password)
	if err != nil {
		return nil, err
	}
	wrapped, err := base64.StdEncoding.DecodeString(kf.WrappedKey)
	if err != nil {
		return nil, fmt.Errorf("key file: bad wrapped key")
	}
	master, err := s.Open(nil, wrapped, []byte(kf.VaultID))
	if err != nil {
		return nil, ErrWrongPassword
	}
	if len(master) != KeySize {
		return nil, fmt.Errorf("key file: master key is %d bytes", len(master))
	}
	return master, nil
}

func (kf *KeyFile) save(home string) error {
	b, err := json.MarshalIndent(kf, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(filepath.Join(home, KeyFileName), append(b, '\n'), 0o600)
}

// ReadKeyFile reads and checks home/vault.json.
func ReadKeyFile(home string) (KeyFile, error) {
	var kf KeyFile
	b, err := os.ReadFile(filepath.Join(home, KeyFileName))
	if errors.Is(err, os.ErrNotExist) {
		return kf, fmt.Errorf("%s: %w (run `fincrypt init` first)", home, ErrNoVault)
	}
	if err != nil {
		return kf, err
	}
	if err := json.Unmarshal(b, &kf); err != nil {
		return kf, fmt.Errorf("%s: %v", KeyFileName, err)
	}
	if kf.Format != keyFileFormat {
		return kf, fmt.Errorf("%s: format %d, this fincrypt reads format %d", KeyFileName, kf.Format, keyFileFormat)
	}
	if kf.ChunkSize < 4096 || kf.ChunkSize&(kf.ChunkSize-1) != 0 {
		return kf, fmt.Errorf("%s: bad chunk size %d", KeyFileName, kf.ChunkSize)
	}
	return kf, nil
}

// OpenOptions control Open.
type OpenOptions struct {
	// Lock takes the vault's exclusive lock, as a mount or an offline check
	// must; it fails with ErrLocked while another process holds it.
	Lock bool
}

// Open unlocks the vault in home with password.
func Open(home string, password []byte, opt OpenOptions) (*Vault, error) {
	kf, err := ReadKeyFile(home)
	if err != nil {
		return nil, err
	}
	master, err := kf.unwrap(password)
	if err != nil {
		return nil, err
	}
	keys, err := DeriveKeys(master)
	if err != nil {
		return nil, err
	}
	cfg, err := LoadConfig(filepath.Join(home, ConfigFileName))
	if err != nil {
		return nil, err
	}
	v := &Vault{Home: home, KeyFile: kf, Keys: keys, Config: cfg, master: master}
	if opt.Lock {
		if err := v.takeLock(); err != nil {
			return nil, err
		}
	}
	return v, nil
}

func (v *Vault) takeLock() error {
	f, err := fsutil.Lock(filepath.Join(v.Home, LockFileName))
	if errors.Is(err, fsutil.ErrLocked) {
		return ErrLocked
	}
	if err != nil {
		return err
	}
	v.lock = f
	return nil
}

// Close releases the vault's lock.
func (v *Vault) Close() error {
	if v.lock != nil {
		err := v.lock.Close()
		v.lock = nil
		return err
	}
	return nil
}

// IndexDir is where the Pebble index lives.
func (v *Vault) IndexDir() string { return filepath.Join(v.Home, IndexDirName) }

// StoreDir is where sealed chunks live locally.
func (v *Vault) StoreDir() string {
	if v.Config.Store != "" {
		if filepath.IsAbs(v.Config.Store) {
			return v.Config.Store
		}
		return filepath.Join(v.Home, v.Config.Store)
	}
	return filepath.Join(v.Home, StoreDirName)
}

// ChangePassword rewraps the master key under a new password. Data is not
// re-encrypted: only vault.json changes, atomically.
func ChangePassword(home string, oldPassword, newPassword []byte, p KDFParams) error {
	if len(newPassword) == 0 {
		return errors.New("the new password is empty")
	}
	kf, err := ReadKeyFile(home)
	if err != nil {
		return err
	}
	master, err := kf.unwrap(oldPassword)
	if err != nil {
		return err
	}
	if p == (KDFParams{}) {
		p = kf.Params
	}
	if err := kf.wrap(master, newPassword, p); err != nil {
		return err
	}
	return kf.save(home)
}
