package wallet

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fincrypt/fincrypt/vault"
)

// craftSeedFile writes a seed file sealed as writeSeedFS seals it, with the
// salt, KDF parameters and seed given (writeSeedFS itself refuses some).
func craftSeedFile(t *testing.T, salt []byte, p vault.KDFParams, seed []byte) string {
	t.Helper()
	dir := t.TempDir()
	sf := SeedFile{Format: seedFileFormat, Network: "regtest", KDF: "argon2id", Params: p, Salt: base64.StdEncoding.EncodeToString(salt)}
	// Seal with parameters the sealer accepts, then write the ones asked for.
	sealP := p
	sealP.Time, sealP.Threads = max(sealP.Time, 1), max(sealP.Threads, 1)
	sealP.MemoryK = max(sealP.MemoryK, 8)
	s := sf
	s.Params = sealP
	sealSalt := salt
	if len(sealSalt) < 16 {
		sealSalt = append(append([]byte(nil), salt...), make([]byte, 16-len(salt))...)
		s.Salt = base64.StdEncoding.EncodeToString(sealSalt)
	}
	sl, err := s.sealer(testPass)
	if err != nil {
		t.Fatal(err)
	}
	sf.Sealed = base64.StdEncoding.EncodeToString(sl.Seal(nil, seed, sf.ad()))
	if sealP != p || len(sealSalt) != len(salt) {
		sf.Sealed = base64.StdEncoding.EncodeToString(make([]byte, 64)) // never opened: refused before
	}
	data, err := json.Marshal(&sf)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, SeedFileName), data, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func openSeedDir(dir string) error {
	w, err := Open(Config{Dir: dir, Passphrase: testPass, Logger: testLogger()})
	if err == nil {
		w.Close()
	}
	return err
}

// TestSeedBounds: each bound of the seed file (seed length, salt length,
// Argon2id parameters, passphrase) at its edge and one step past it.
func TestSeedBounds(t *testing.T) {
	seed := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i + 1)
		}
		return b
	}
	for _, tc := range []struct {
		n  int
		ok bool
	}{{15, false}, {16, true}, {64, true}, {65, false}} {
		dir := t.TempDir()
		err := ImportSeed(dir, seed(tc.n), testPass, "regtest", cheapKDF)
		if (err == nil) != tc.ok {
			t.Errorf("ImportSeed of %d bytes: %v, want ok=%v", tc.n, err, tc.ok)
		}
		if tc.ok {
			if err := openSeedDir(dir); err != nil {
				t.Errorf("opening an imported seed of %d bytes: %v", tc.n, err)
			}
			if sf, err := ReadSeedFile(dir); err != nil || sf.Params != cheapKDF {
				t.Errorf("seed file sealed with %+v (%v), want the parameters asked for, %+v", sf.Params, err, cheapKDF)
			}
		} else if _, err := os.Stat(filepath.Join(dir, SeedFileName)); err == nil {
			t.Errorf("refused seed of %d bytes left a seed file", tc.n)
		}
		// The same lengths sealed into a file by hand: Open checks too.
		err = openSeedDir(craftSeedFile(t, seed(32), cheapKDF, seed(tc.n)))
		if (err == nil) != tc.ok {
			t.Errorf("opening a sealed seed of %d bytes: %v, want ok=%v", tc.n, err, tc.ok)
		}
	}
	if err := CreateSeed(t.TempDir(), nil, "regtest", cheapKDF); err == nil || !strings.Contains(err.Error(), "passphrase is empty") {
		t.Errorf("empty passphrase: %v", err)
	}
	for _, tc := range []struct {
		name string
		salt int
		p    vault.KDFParams
		ok   bool
	}{
		{"salt of 16 bytes", 16, cheapKDF, true},
		{"salt of 15 bytes", 15, cheapKDF, false},
		{"memory 8 KiB", 32, vault.KDFParams{Time: 1, MemoryK: 8, Threads: 1}, true},
		{"memory 7 KiB", 32, vault.KDFParams{Time: 1, MemoryK: 7, Threads: 1}, false},
		{"no threads", 32, vault.KDFParams{Time: 1, MemoryK: 64, Threads: 0}, false},
		{"no time", 32, vault.KDFParams{Time: 0, MemoryK: 64, Threads: 1}, false},
	} {
		err := openSeedDir(craftSeedFile(t, seed(tc.salt), tc.p, seed(32)))
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v, want ok=%v", tc.name, err, tc.ok)
		}
		if !tc.ok && errors.Is(err, ErrWrongPassphrase) {
			t.Errorf("%s: refused as a wrong passphrase, not as a bad file", tc.name)
		}
	}
}
