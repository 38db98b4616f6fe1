package vault

import (
	"bytes"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Tests written against the mutants gremlins left alive in this package
// (docs/TESTING.md); each was run by hand against the mutant it names.

// TestConfigErrorNamesTheLine: an error points at the line it is on,
// counting comments and blank lines (kills `n++` → `n--` in ParseConfig).
func TestConfigErrorNamesTheLine(t *testing.T) {
	data := "# settings\n\nstore = /x\ncolour = blue\n"
	_, err := ParseConfig([]byte(data))
	if err == nil || !strings.Contains(err.Error(), "line 4:") {
		t.Fatalf("ParseConfig: %v, want an error naming line 4", err)
	}
}

// TestConfigValueBounds: each end of the accepted values of scheme and
// mediator, and the value just outside it.
func TestConfigValueBounds(t *testing.T) {
	for _, tc := range []struct {
		line string
		ok   bool
	}{
		{"scheme = 1/2", true},
		{"scheme = 2/4", true},
		{"scheme = 2/3", false},
		{"scheme = 0/2", false},
		{"scheme = 1/1", false},
		{"scheme = 2", false},
		{"scheme = x/4", false},
		{"scheme = 2/y", false},
		{"scheme =", true},
		{"mediator = abc@127.0.0.1:1", true},
		{"mediator = @127.0.0.1:1", false},
		{"mediator = abc", false},
		{"mediator = abc@127.0.0.1", false},
		{"mediator =", true},
	} {
		c, err := ParseConfig([]byte(tc.line + "\n"))
		if (err == nil) != tc.ok {
			t.Errorf("%q: err %v, want ok=%v", tc.line, err, tc.ok)
			continue
		}
		if tc.ok {
			_, v, _ := strings.Cut(tc.line, "=")
			v = strings.TrimSpace(v)
			if got := c.Scheme + c.Mediator; got != v {
				t.Errorf("%q: parsed %q", tc.line, got)
			}
		}
	}
}

// TestLoadConfig: a missing file gives the defaults, a file its settings,
// a file that cannot be read or parsed an error naming it (kills the
// read error's `err != nil` negated in LoadConfig).
func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	c, err := LoadConfig(filepath.Join(dir, "none"))
	if err != nil || *c != *DefaultConfig() {
		t.Fatalf("missing file: %+v, %v; want the defaults", c, err)
	}
	want := &Config{Store: "s", CacheSize: 1 << 20, Scheme: "2/5"}
	p := filepath.Join(dir, "config")
	if err := os.WriteFile(p, []byte(want.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err = LoadConfig(p)
	if err != nil || c == nil || *c != *want {
		t.Fatalf("LoadConfig: %+v, %v; want %+v", c, err, want)
	}
	if c, err := LoadConfig(dir); err == nil {
		t.Fatalf("LoadConfig of a directory: %+v, no error", c)
	}
	if err := os.WriteFile(p, []byte("colour = blue\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(p); err == nil || !strings.Contains(err.Error(), p) {
		t.Fatalf("bad config: %v, want an error naming %s", err, p)
	}
}

// TestSealEmptyPlaintext: a sealed empty record is exactly Overhead bytes
// and opens (kills `len(sealed) < Overhead` → `<=` in Open).
func TestSealEmptyPlaintext(t *testing.T) {
	keys, err := DeriveKeys(bytes.Repeat([]byte{3}, KeySize))
	if err != nil {
		t.Fatal(err)
	}
	sealed := keys.Meta.Seal(nil, nil, []byte("ad"))
	if len(sealed) != Overhead {
		t.Fatalf("sealed empty record is %d bytes, want %d", len(sealed), Overhead)
	}
	pt, err := keys.Meta.Open(nil, sealed, []byte("ad"))
	if err != nil || len(pt) != 0 {
		t.Fatalf("Open of the empty record: %q, %v", pt, err)
	}
}

// TestCreateOptionBounds: the KDF parameters asked for are the ones
// written (kills `opt.KDF == (KDFParams{})` negated, which would put the
// default's in their place), and the chunk size's two ends are accepted,
// one power of two beyond either refused (kills `< 4096` → `<= 4096` and
// `> 16<<20` → `>= 16<<20` in Create, and `< 4096` → `<= 4096` in
// ReadKeyFile).
func TestCreateOptionBounds(t *testing.T) {
	home := filepath.Join(t.TempDir(), "home")
	if err := Create(home, []byte("pw"), CreateOptions{KDF: fastKDF, ChunkSize: 4096}); err != nil {
		t.Fatal(err)
	}
	kf, err := ReadKeyFile(home)
	if err != nil {
		t.Fatal(err)
	}
	if kf.Params != fastKDF || kf.ChunkSize != 4096 {
		t.Fatalf("written: %+v, chunk size %d; want %+v and 4096", kf.Params, kf.ChunkSize, fastKDF)
	}
	if err := Create(filepath.Join(t.TempDir(), "big"), []byte("pw"), CreateOptions{KDF: fastKDF, ChunkSize: 16 << 20}); err != nil {
		t.Fatalf("16 MiB chunks: %v", err)
	}
	for _, size := range []uint32{2048, 32 << 20, 4096 + 4096/2} {
		if err := Create(filepath.Join(t.TempDir(), "bad"), []byte("pw"), CreateOptions{KDF: fastKDF, ChunkSize: size}); err == nil {
			t.Errorf("chunk size %d accepted", size)
		}
	}
}

// TestKEKSaltBound: a key file's salt of 16 bytes is enough, 15 is not
// (kills `len(salt) < 16` → `<= 16` in kek); Argon2id's least memory, 8
// KiB, is accepted, 7 is not (kills `p.MemoryK < 8` → `<= 8`).
func TestKEKSaltBound(t *testing.T) {
	salt := base64.StdEncoding.EncodeToString(make([]byte, 16))
	for _, tc := range []struct {
		mem uint32
		ok  bool
	}{{8, true}, {7, false}} {
		kf := &KeyFile{KDF: "argon2id", Params: KDFParams{Time: 1, MemoryK: tc.mem, Threads: 1}, Salt: salt}
		if _, err := kf.kek([]byte("pw")); (err == nil) != tc.ok {
			t.Errorf("%d KiB: %v, want ok=%v", tc.mem, err, tc.ok)
		}
	}
	for _, tc := range []struct {
		n  int
		ok bool
	}{{16, true}, {15, false}} {
		kf := &KeyFile{KDF: "argon2id", Params: fastKDF, Salt: base64.StdEncoding.EncodeToString(make([]byte, tc.n))}
		if _, err := kf.kek([]byte("pw")); (err == nil) != tc.ok {
			t.Errorf("%d-byte salt: %v, want ok=%v", tc.n, err, tc.ok)
		}
	}
}

// TestSealerEdges: the edges of the sealer's inputs (mutant schemata,
// tenth session). A sealer with an empty domain seals and opens a record
// with no associated data (kills `len(s.domain)+1+len(ad)` →
// `len(s.domain)-1+len(ad)`, a negative capacity, a panic); SealInPlace of
// an empty plaintext, a buffer of just the nonce's room, is sealed
// (kills `len(buf) < NonceSize` → `<=`, a panic); and OpenInPlace opens a
// sealed empty record, exactly Overhead bytes (kills `len(sealed) <
// Overhead` → `<=`, ErrTampered).
func TestSealerEdges(t *testing.T) {
	keys, err := DeriveKeys(bytes.Repeat([]byte{5}, KeySize))
	if err != nil {
		t.Fatal(err)
	}
	bare, err := NewSealer(keys.Segment[:], "")
	if err != nil {
		t.Fatal(err)
	}
	sealed := bare.Seal(nil, []byte("record"), nil)
	if pt, err := bare.Open(nil, sealed, nil); err != nil || string(pt) != "record" {
		t.Fatalf("empty domain, no associated data: %q, %v", pt, err)
	}
	if _, err := bare.Open(nil, sealed, []byte{0}); !errors.Is(err, ErrTampered) {
		t.Fatalf("empty domain: opened with other associated data: %v", err)
	}

	s, err := NewSealer(keys.Segment[:], "fincrypt snapshot v1")
	if err != nil {
		t.Fatal(err)
	}
	ad := []byte("snapshot 7")
	empty := s.SealInPlace(make([]byte, NonceSize), ad)
	if len(empty) != Overhead {
		t.Fatalf("SealInPlace of nothing: %d bytes, want %d", len(empty), Overhead)
	}
	if pt, err := s.Open(nil, empty, ad); err != nil || len(pt) != 0 {
		t.Fatalf("Open of SealInPlace of nothing: %q, %v", pt, err)
	}
	if pt, err := s.OpenInPlace(s.Seal(nil, nil, ad), ad); err != nil || len(pt) != 0 {
		t.Fatalf("OpenInPlace of a sealed empty record: %q, %v", pt, err)
	}
	bad := s.Seal(nil, nil, ad)
	bad[NonceSize] ^= 1
	if _, err := s.OpenInPlace(bad, ad); !errors.Is(err, ErrTampered) {
		t.Fatalf("OpenInPlace of a flipped empty record: %v", err)
	}
}
