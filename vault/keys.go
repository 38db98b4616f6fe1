// Package vault holds a client's secrets and settings: the password-wrapped
// master key, the subkeys derived from it, and the AEAD sealing of chunks and
// index records. Nothing in this package touches the network or FUSE.
package vault

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"

	"golang.org/x/crypto/hkdf"
)

// KeySize is the size of the master key and of every subkey.
const KeySize = 32

// Errors callers test for.
var (
	// ErrWrongPassword means the password did not unwrap the master key.
	ErrWrongPassword = errors.New("wrong password")
	// ErrTampered means a sealed record failed authentication: it was altered,
	// truncated, swapped with another record, or replayed from an older version.
	ErrTampered = errors.New("authentication failed: data was altered or does not belong here")
)

// Keys are the subkeys derived from the master key with HKDF-SHA256. Each has
// one purpose; the info strings are part of the vault format (docs/FORMAT.md).
type Keys struct {
	Chunk   *Sealer  // seals file chunks
	Meta    *Sealer  // seals index values
	nameKey [32]byte // keys the HMAC that hides names in index keys
	Account [32]byte // seed of the account's ed25519 identity
	Segment [32]byte // reserved for segment-level keys (network layer)

	// Backups (package backup): Blob seals content-addressed blobs,
	// blobIDKey keys the MAC that names them, Chunker seeds the
	// content-defined chunker's polynomial.
	Blob      *Sealer
	blobIDKey [32]byte
	Chunker   [32]byte

	// names holds keyed name hashers (*nameMAC) for reuse: NameMAC runs
	// for every lookup and every directory entry written, and a fresh
	// HMAC (two SHA-256 states, keyed) each time was 1-4 % of the mount's
	// CPU.
	names sync.Pool
}

// nameMAC is a reusable HMAC under the name key, with room for its input
// and output so that NameMAC allocates nothing.
type nameMAC struct {
	h   hash.Hash
	in  []byte
	sum [sha256.Size]byte
}

// DeriveKeys derives every subkey from the master key.
func DeriveKeys(master []byte) (*Keys, error) {
	if len(master) != KeySize {
		return nil, fmt.Errorf("master key is %d bytes, want %d", len(master), KeySize)
	}
	sub := func(info string) []byte {
		k := make([]byte, KeySize)
		r := hkdf.New(sha256.New, master, nil, []byte("fincrypt/v1 "+info))
		if _, err := io.ReadFull(r, k); err != nil {
			panic(err) // HKDF cannot fail for 32 bytes
		}
		return k
	}
	chunk, err := NewSealer(sub("chunk"), "fincrypt chunk v1")
	if err != nil {
		return nil, err
	}
	meta, err := NewSealer(sub("meta"), "fincrypt meta v1")
	if err != nil {
		return nil, err
	}
	k := &Keys{Chunk: chunk, Meta: meta}
	copy(k.nameKey[:], sub("name"))
	copy(k.Account[:], sub("account"))
	copy(k.Segment[:], sub("segment"))
	if k.Blob, err = NewSealer(sub("blob"), "fincrypt blob v1"); err != nil {
		return nil, err
	}
	copy(k.blobIDKey[:], sub("blob id"))
	copy(k.Chunker[:], sub("chunker"))
	return k, nil
}

// NameMAC returns a keyed hash of a name within a directory, used in index
// keys so that names never appear in the index in the clear. It is
// deterministic, so a lookup can find an entry without decrypting others.
func (k *Keys) NameMAC(parent uint64, name string) [16]byte {
	m, _ := k.names.Get().(*nameMAC)
	if m == nil {
		m = &nameMAC{h: hmac.New(sha256.New, k.nameKey[:])}
	} else {
		m.h.Reset() // back to the keyed state: the key is kept
	}
	m.in = binary.BigEndian.AppendUint64(m.in[:0], parent)
	m.in = append(m.in, name...)
	m.h.Write(m.in)
	var out [16]byte
	copy(out[:], m.h.Sum(m.sum[:0]))
	if cap(m.in) <= 4096 { // a name is at most 255 bytes in the file system
		k.names.Put(m)
	}
	return out
}

// BlobID names a backup blob or tree by its content: HMAC-SHA256 under the
// "blob id" subkey of kind || 0x00 || data, cut to 16 bytes. Equal contents
// get equal ids within a vault, and nobody without the key can tell which
// contents an id names.
func (k *Keys) BlobID(kind string, data []byte) [16]byte {
	m := hmac.New(sha256.New, k.blobIDKey[:])
	m.Write([]byte(kind))
	m.Write([]byte{0})
	m.Write(data)
	var out [16]byte
	copy(out[:], m.Sum(nil))
	return out
}

// Sealer is AES-256-GCM with a random 96-bit nonce and a domain string
// prefixed to the associated data, so a record sealed for one purpose never
// opens as another.
//
// Sealed layout: nonce (12) || ciphertext || tag (16).
type Sealer struct {
	aead   cipher.AEAD
	domain []byte
}

// Overhead is the number of bytes sealing adds: NonceSize before the
// ciphertext and TagSize after it.
const (
	NonceSize = 12
	TagSize   = 16
	Overhead  = NonceSize + TagSize
)

// NewSealer returns a sealer under a 32-byte key.
func NewSealer(key []byte, domain string) (*Sealer, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("key is %d bytes, want %d", len(key), KeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Sealer{aead: aead, domain: []byte(domain)}, nil
}

func (s *Sealer) ad(ad []byte) []byte {
	out := make([]byte, 0, len(s.domain)+1+len(ad))
	out = append(out, s.domain...)
	out = append(out, 0)
	return append(out, ad...)
}

// Seal appends the sealed form of plaintext, bound to ad, to dst.
func (s *Sealer) Seal(dst, plaintext, ad []byte) []byte {
	var nonce [NonceSize]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err))
	}
	dst = append(dst, nonce[:]...)
	return s.aead.Seal(dst, nonce[:], plaintext, s.ad(ad))
}

// SealInPlace seals buf[NonceSize:] where it lies, for a plaintext too
// large to hold twice (an index snapshot): buf[:NonceSize] is room for the
// nonce, and the tag is appended, in buf's memory when its capacity has
// TagSize bytes to spare. The result is what Seal makes of
// buf[NonceSize:]; the plaintext is gone.
func (s *Sealer) SealInPlace(buf, ad []byte) []byte {
	if len(buf) < NonceSize {
		panic("vault: SealInPlace without room for the nonce")
	}
	if _, err := rand.Read(buf[:NonceSize]); err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err))
	}
	return s.aead.Seal(buf[:NonceSize], buf[:NonceSize], buf[NonceSize:], s.ad(ad))
}

// OpenInPlace opens sealed where it lies and returns the plaintext, a
// slice of sealed's memory; sealed is overwritten even when it fails
// (ErrTampered).
func (s *Sealer) OpenInPlace(sealed, ad []byte) ([]byte, error) {
	if len(sealed) < Overhead {
		return nil, fmt.Errorf("sealed record is %d bytes, shorter than the %d-byte minimum: %w", len(sealed), Overhead, ErrTampered)
	}
	out, err := s.aead.Open(sealed[NonceSize:NonceSize], sealed[:NonceSize], sealed[NonceSize:], s.ad(ad))
	if err != nil {
		return nil, ErrTampered
	}
	return out, nil
}

// Open appends the plaintext of sealed to dst. It fails with ErrTampered if
// sealed was altered or was sealed with different associated data.
func (s *Sealer) Open(dst, sealed, ad []byte) ([]byte, error) {
	if len(sealed) < Overhead {
		return nil, fmt.Errorf("sealed record is %d bytes, shorter than the %d-byte minimum: %w", len(sealed), Overhead, ErrTampered)
	}
	out, err := s.aead.Open(dst, sealed[:NonceSize], sealed[NonceSize:], s.ad(ad))
	if err != nil {
		return nil, ErrTampered
	}
	return out, nil
}

// ChunkAD is the associated data that binds a sealed chunk to its file, its
// position and its version, so chunks cannot be swapped between files or
// offsets, nor an older version replayed.
func ChunkAD(fileID, index, version uint64) []byte {
	ad := make([]byte, 24)
	binary.BigEndian.PutUint64(ad[0:], fileID)
	binary.BigEndian.PutUint64(ad[8:], index)
	binary.BigEndian.PutUint64(ad[16:], version)
	return ad
}
