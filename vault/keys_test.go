package vault

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// refNameMAC is NameMAC as the format defines it (docs/FORMAT.md): HMAC-
// SHA256 under the name key of the parent (8 bytes, big-endian) and the
// name, cut to 16 bytes.
func refNameMAC(k *Keys, parent uint64, name string) [16]byte {
	m := hmac.New(sha256.New, k.nameKey[:])
	var p [8]byte
	binary.BigEndian.PutUint64(p[:], parent)
	m.Write(p[:])
	m.Write([]byte(name))
	return [16]byte(m.Sum(nil))
}

// TestNameMACReused: NameMAC reuses its hashers, and a reused one gives
// what a fresh HMAC gives, for names of every length, from many goroutines
// at once; a call allocates nothing.
func TestNameMACReused(t *testing.T) {
	k, err := DeriveKeys(bytes.Repeat([]byte{5}, KeySize))
	if err != nil {
		t.Fatal(err)
	}
	other, err := DeriveKeys(bytes.Repeat([]byte{6}, KeySize))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				name := strings.Repeat("n", (i*7+g)%300) + strconv.Itoa(i)
				parent := uint64(i%5) << (g * 4)
				if got, want := k.NameMAC(parent, name), refNameMAC(k, parent, name); got != want {
					errs <- "NameMAC(" + strconv.FormatUint(parent, 10) + ", " + name + ") differs from a fresh HMAC"
					return
				}
				if k.NameMAC(parent, name) == other.NameMAC(parent, name) {
					errs <- "two vaults' keys give the same NameMAC"
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
	if raceEnabled {
		return
	}
	if a := testing.AllocsPerRun(1000, func() { k.NameMAC(42, "some-file-name.txt") }); a != 0 {
		t.Fatalf("NameMAC allocates %v times a call, want 0", a)
	}
}
