// Package net is Fincrypt's transport, shared by every role: ed25519
// identities and node ids, NODEID@host:port addresses, QUIC with mutual TLS
// 1.3 authentication and key pinning, framed versioned size-limited
// messages, and the tickets a mediator signs for storage nodes. Every
// message is specified in docs/PROTOCOL.md.
//
// Import it with an alias (fnet) where the standard library's net is used.
package net

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/quic-go/quic-go"
	"golang.org/x/crypto/hkdf"

	"github.com/fincrypt/fincrypt/internal/fsutil"
)

// IdentityFile is the name of the identity file inside a daemon's directory.
const IdentityFile = "identity"

// identityHeader is the first line of an identity file (format version 1).
const identityHeader = "fincrypt-identity-v1"

// NodeIDSize is the size of a node id: an ed25519 public key.
const NodeIDSize = ed25519.PublicKeySize

// NodeID is a node's ed25519 public key. Its text form is lowercase base32
// without padding (52 characters).
type NodeID [NodeIDSize]byte

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// NodeIDLen is the length of a node id's text form.
var NodeIDLen = idEncoding.EncodedLen(NodeIDSize)

// ErrBadNodeID is returned for a malformed node id.
var ErrBadNodeID = errors.New("malformed node id")

func (id NodeID) String() string { return idEncoding.EncodeToString(id[:]) }

// PublicKey returns the key that verifies this node's signatures.
func (id NodeID) PublicKey() ed25519.PublicKey { return ed25519.PublicKey(bytes.Clone(id[:])) }

// IsZero reports whether id is unset.
func (id NodeID) IsZero() bool { return id == NodeID{} }

// ParseNodeID parses the 52-character text form.
func ParseNodeID(s string) (NodeID, error) {
	var id NodeID
	if len(s) != NodeIDLen {
		return id, fmt.Errorf("%w %q: %d characters, want %d", ErrBadNodeID, s, len(s), NodeIDLen)
	}
	b, err := idEncoding.DecodeString(s)
	if err != nil || len(b) != NodeIDSize {
		return id, fmt.Errorf("%w %q: not lowercase base32", ErrBadNodeID, s)
	}
	copy(id[:], b)
	if id.String() != s { // reject non-canonical trailing bits
		return NodeID{}, fmt.Errorf("%w %q: not canonical", ErrBadNodeID, s)
	}
	return id, nil
}

// Identity is a node's ed25519 key pair.
type Identity struct {
	priv ed25519.PrivateKey
	id   NodeID
}

// NewIdentity makes an identity from a 32-byte seed.
func NewIdentity(seed []byte) (*Identity, error) {
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("identity seed: %d bytes, want %d", len(seed), ed25519.SeedSize)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	var id NodeID
	copy(id[:], priv.Public().(ed25519.PublicKey))
	return &Identity{priv: priv, id: id}, nil
}

// GenerateIdentity makes a fresh random identity.
func GenerateIdentity() (*Identity, error) {
	seed := make([]byte, ed25519.SeedSize)
	if _, err := rand.Read(seed); err != nil {
		return nil, err
	}
	return NewIdentity(seed)
}

// ID is the node id.
func (i *Identity) ID() NodeID { return i.id }

// Sign signs msg with the identity's key.
func (i *Identity) Sign(msg []byte) []byte { return ed25519.Sign(i.priv, msg) }

// PrivateKey exposes the key for TLS.
func (i *Identity) PrivateKey() ed25519.PrivateKey { return i.priv }

// marshal is the identity file: a header line and the base64 seed.
func (i *Identity) marshal() []byte {
	return []byte(identityHeader + "\n" + base64.StdEncoding.EncodeToString(i.priv.Seed()) + "\n")
}

// ParseIdentity reads the identity file format.
func ParseIdentity(b []byte) (*Identity, error) {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) != 2 || lines[0] != identityHeader {
		return nil, fmt.Errorf("identity: want a %q header line and one base64 line", identityHeader)
	}
	seed, err := base64.StdEncoding.DecodeString(lines[1])
	if err != nil {
		return nil, fmt.Errorf("identity: seed: %w", err)
	}
	return NewIdentity(seed)
}

// LoadIdentity reads DIR/identity.
func LoadIdentity(dir string) (*Identity, error) { return loadIdentityFS(vfs.Default, dir) }

func loadIdentityFS(fs vfs.FS, dir string) (*Identity, error) {
	p := filepath.Join(dir, IdentityFile)
	f, err := fs.Open(p)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	id, err := ParseIdentity(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return id, nil
}

// LoadOrCreateIdentity reads DIR/identity, creating DIR and a new identity
// (mode 0600, written durably) when there is none.
func LoadOrCreateIdentity(dir string) (*Identity, error) {
	return loadOrCreateIdentityFS(vfs.Default, dir)
}

// loadOrCreateIdentityFS is LoadOrCreateIdentity on fs (the power-loss
// test's crashable one). The sync points, each guarded by
// TestPowerLossIdentityFile: the parent of every directory it creates, the
// temporary file's data (and its Close error) before it is linked, and
// the directory after the link. Without them a power cut after a node's
// first start could take the identity it has already given out.
func loadOrCreateIdentityFS(fs vfs.FS, dir string) (*Identity, error) {
	id, err := loadIdentityFS(fs, dir)
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		return id, err
	}
	if err := fsutil.MkdirAllSyncedFS(fs, dir); err != nil {
		return nil, err
	}
	id, err = GenerateIdentity()
	if err != nil {
		return nil, err
	}
	p := filepath.Join(dir, IdentityFile)
	tmp := p + ".tmp"
	f, err := fs.Create(tmp, vfs.WriteCategoryUnspecified)
	if err != nil {
		return nil, err
	}
	if fs == vfs.Default { // the key is readable by its owner only, before it is written
		err = os.Chmod(tmp, 0o600)
	}
	if err == nil {
		_, err = f.Write(id.marshal())
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = fs.Link(tmp, p) // fails if another process created it meanwhile
	}
	fs.Remove(tmp)
	if errors.Is(err, os.ErrExist) {
		return loadIdentityFS(fs, dir)
	}
	if err == nil {
		err = fsutil.SyncDirFS(fs, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("identity %s: %w", p, err)
	}
	return id, nil
}

// Address is where a node listens, pinned to its id: NODEID@host:port.
type Address struct {
	ID       NodeID
	HostPort string
}

// ErrBadAddress is returned for a malformed address.
var ErrBadAddress = errors.New("malformed address")

func (a Address) String() string { return a.ID.String() + "@" + a.HostPort }

// ParseAddress parses NODEID@host:port (IPv6 hosts in brackets).
func ParseAddress(s string) (Address, error) {
	s = strings.TrimSpace(s)
	at := strings.IndexByte(s, '@')
	if at < 0 {
		return Address{}, fmt.Errorf("%w %q: want NODEID@host:port", ErrBadAddress, s)
	}
	id, err := ParseNodeID(s[:at])
	if err != nil {
		return Address{}, fmt.Errorf("%w %q: %w", ErrBadAddress, s, err)
	}
	hp := s[at+1:]
	host, port, err := splitHostPort(hp)
	if err != nil || host == "" || port == "" {
		return Address{}, fmt.Errorf("%w %q: want NODEID@host:port", ErrBadAddress, s)
	}
	return Address{ID: id, HostPort: hp}, nil
}

// statelessResetKey is the key of the QUIC stateless reset tokens this
// identity hands out. It is derived from the private key, so a daemon that
// restarts with the same identity can reset the connections its previous
// process had open: peers learn at once that it restarted instead of waiting
// for their idle timeout (RFC 9000, section 10.3).
func (id *Identity) statelessResetKey() quic.StatelessResetKey {
	var k quic.StatelessResetKey
	r := hkdf.New(sha256.New, id.priv.Seed(), nil, []byte("fincrypt/v1 quic stateless reset"))
	if _, err := io.ReadFull(r, k[:]); err != nil {
		panic(err) // HKDF cannot fail for 32 bytes
	}
	return k
}
