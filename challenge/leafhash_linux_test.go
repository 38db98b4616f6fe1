package challenge

import (
	"syscall"
	"testing"
)

// TestLeafHashes16StaysInBounds hashes 16 leaves that fill the memory
// between two pages no one may read: a read before the first leaf or past
// the last faults and ends the test binary.
func TestLeafHashes16StaysInBounds(t *testing.T) {
	if leafHashes16 == nil {
		t.Skip("no 16-leaf hash on this CPU")
	}
	page := syscall.Getpagesize()
	n := 16 * LeafSize
	mem, err := syscall.Mmap(-1, 0, n+2*page, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Munmap(mem)
	if err := syscall.Mprotect(mem[:page], syscall.PROT_NONE); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mprotect(mem[page+n:], syscall.PROT_NONE); err != nil {
		t.Fatal(err)
	}
	data := mem[page : page+n]
	copy(data, randBytes(16, n))
	got := leafHashes16(nil, data)
	for j := range 16 {
		if want := LeafHash(data[j*LeafSize : (j+1)*LeafSize]); got[j] != want {
			t.Fatalf("leaf %d: hash %x, want %x", j, got[j][:8], want[:8])
		}
	}
}
