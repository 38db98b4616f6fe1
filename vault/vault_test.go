package vault

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// fastKDF keeps tests quick; the format stores the parameters, so this is a
// real argon2id vault, just a cheap one.
var fastKDF = KDFParams{Time: 1, MemoryK: 64, Threads: 1}

func TestCreateOpenWrongPassword(t *testing.T) {
	home := t.TempDir()
	if err := Create(home, []byte("correct horse"), CreateOptions{KDF: fastKDF}); err != nil {
		t.Fatal(err)
	}
	if err := Create(home, []byte("again"), CreateOptions{KDF: fastKDF}); err == nil {
		t.Fatal("second Create over an existing vault succeeded")
	}
	v, err := Open(home, []byte("correct horse"), OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if v.KeyFile.ChunkSize != DefaultChunkSize {
		t.Errorf("chunk size %d", v.KeyFile.ChunkSize)
	}
	if _, err := Open(home, []byte("correct horsf"), OpenOptions{}); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("wrong password: got %v, want ErrWrongPassword", err)
	}
	if _, err := Open(t.TempDir(), []byte("x"), OpenOptions{}); !errors.Is(err, ErrNoVault) {
		t.Fatalf("empty home: got %v, want ErrNoVault", err)
	}
}

func TestChangePasswordKeepsMasterKey(t *testing.T) {
	home := t.TempDir()
	if err := Create(home, []byte("old"), CreateOptions{KDF: fastKDF}); err != nil {
		t.Fatal(err)
	}
	v1, err := Open(home, []byte("old"), OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sealed := v1.Keys.Chunk.Seal(nil, []byte("data"), ChunkAD(1, 2, 3))
	if err := ChangePassword(home, []byte("bad"), []byte("new"), KDFParams{}); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("change with wrong old password: %v", err)
	}
	if err := ChangePassword(home, []byte("old"), []byte("new"), KDFParams{}); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(home, []byte("old"), OpenOptions{}); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("old password still opens: %v", err)
	}
	v2, err := Open(home, []byte("new"), OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pt, err := v2.Keys.Chunk.Open(nil, sealed, ChunkAD(1, 2, 3))
	if err != nil || string(pt) != "data" {
		t.Fatalf("data sealed before the change: %q, %v", pt, err)
	}
}

func TestSealBindsAssociatedData(t *testing.T) {
	keys, err := DeriveKeys(bytes.Repeat([]byte{7}, KeySize))
	if err != nil {
		t.Fatal(err)
	}
	pt := []byte("the quick brown fox")
	sealed := keys.Chunk.Seal(nil, pt, ChunkAD(10, 0, 1))
	if len(sealed) != len(pt)+Overhead {
		t.Fatalf("sealed %d bytes, want %d", len(sealed), len(pt)+Overhead)
	}
	for name, ad := range map[string][]byte{
		"other file": ChunkAD(11, 0, 1), "other index": ChunkAD(10, 1, 1), "old version": ChunkAD(10, 0, 0),
	} {
		if _, err := keys.Chunk.Open(nil, sealed, ad); !errors.Is(err, ErrTampered) {
			t.Errorf("%s: got %v, want ErrTampered", name, err)
		}
	}
	// The meta key never opens a chunk, even with the same AD.
	if _, err := keys.Meta.Open(nil, sealed, ChunkAD(10, 0, 1)); !errors.Is(err, ErrTampered) {
		t.Errorf("meta key opened a chunk: %v", err)
	}
	for i := range sealed {
		bad := append([]byte(nil), sealed...)
		bad[i] ^= 0x40
		if _, err := keys.Chunk.Open(nil, bad, ChunkAD(10, 0, 1)); !errors.Is(err, ErrTampered) {
			t.Fatalf("flipped byte %d: got %v", i, err)
		}
	}
	if _, err := keys.Chunk.Open(nil, sealed[:Overhead-1], ChunkAD(10, 0, 1)); !errors.Is(err, ErrTampered) {
		t.Errorf("truncated: %v", err)
	}
	if keys.NameMAC(1, "a") == keys.NameMAC(2, "a") || keys.NameMAC(1, "a") != keys.NameMAC(1, "a") {
		t.Error("NameMAC must be deterministic and depend on the parent")
	}
}

func TestConfigRoundTripAndErrors(t *testing.T) {
	c := &Config{Store: "/mnt/fast/store", CacheSize: 3 << 30, Mediator: "abc@127.0.0.1:1", Scheme: "2/5"}
	back, err := ParseConfig([]byte(c.String()))
	if err != nil {
		t.Fatal(err)
	}
	if *back != *c {
		t.Fatalf("round trip: %+v != %+v", back, c)
	}
	for _, bad := range []string{"cache-size = lots\n", "colour = blue\n", "store\n", "mediator = garbage\n", "scheme = banana\n", "scheme = 3/5\n"} {
		if _, err := ParseConfig([]byte(bad)); err == nil {
			t.Errorf("ParseConfig(%q) accepted", bad)
		}
	}
}

func TestLockIsExclusive(t *testing.T) {
	home := t.TempDir()
	if err := Create(home, []byte("pw"), CreateOptions{KDF: fastKDF}); err != nil {
		t.Fatal(err)
	}
	v, err := Open(home, []byte("pw"), OpenOptions{Lock: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(home, []byte("pw"), OpenOptions{Lock: true}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second lock: %v", err)
	}
	v.Close()
	v2, err := Open(home, []byte("pw"), OpenOptions{Lock: true})
	if err != nil {
		t.Fatalf("lock after close: %v", err)
	}
	v2.Close()
	fi, err := os.Stat(filepath.Join(home, KeyFileName))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, %v", fi.Mode(), err)
	}
}

// TestSealInPlace: sealing and opening where the bytes lie (an index
// snapshot too large to hold twice) is the same format as Seal and Open:
// each opens what the other sealed, the result stays in the buffer's
// memory when it has room for the tag, and a flipped byte or other
// associated data is refused.
func TestSealInPlace(t *testing.T) {
	keys, err := DeriveKeys(bytes.Repeat([]byte{9}, KeySize))
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSealer(keys.Segment[:], "fincrypt snapshot v1")
	if err != nil {
		t.Fatal(err)
	}
	ad := []byte("snapshot 1")
	pt := bytes.Repeat([]byte("index record "), 1000)
	buf := make([]byte, NonceSize+len(pt), NonceSize+len(pt)+TagSize)
	copy(buf[NonceSize:], pt)
	sealed := s.SealInPlace(buf, ad)
	if len(sealed) != len(pt)+Overhead {
		t.Fatalf("sealed %d bytes, want %d", len(sealed), len(pt)+Overhead)
	}
	if &sealed[0] != &buf[0] {
		t.Fatal("sealed into new memory although the buffer had room for the tag")
	}
	if got, err := s.Open(nil, sealed, ad); err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("Open of SealInPlace's result: %v", err)
	}
	if _, err := s.Open(nil, sealed, []byte("snapshot 2")); !errors.Is(err, ErrTampered) {
		t.Fatalf("opened with other associated data: %v", err)
	}
	other := s.Seal(nil, pt, ad)
	got, err := s.OpenInPlace(other, ad)
	if err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("OpenInPlace of Seal's result: %v", err)
	}
	if &got[0] != &other[NonceSize] {
		t.Fatal("opened into new memory")
	}
	for _, i := range []int{0, NonceSize, len(sealed) / 2, len(sealed) - 1} {
		bad := s.Seal(nil, pt, ad)
		bad[i] ^= 1
		if _, err := s.OpenInPlace(bad, ad); !errors.Is(err, ErrTampered) {
			t.Fatalf("flipped byte %d: %v", i, err)
		}
	}
	if _, err := s.OpenInPlace(make([]byte, Overhead-1), ad); !errors.Is(err, ErrTampered) {
		t.Fatalf("short: %v", err)
	}
	// Without room for the tag the result is still right, in new memory.
	small := make([]byte, NonceSize+len(pt))
	copy(small[NonceSize:], pt)
	if got, err := s.Open(nil, s.SealInPlace(small, ad), ad); err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("sealed without room for the tag: %v", err)
	}
}
