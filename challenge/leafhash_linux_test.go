package challenge

import (
	"syscall"
	"testing"
	"unsafe"
)

// guarded returns n bytes (a multiple of the page size) between two pages
// no one may read: a read before its first byte or past its last faults
// and ends the test binary.
func guarded(t *testing.T, n int) []byte {
	page := syscall.Getpagesize()
	mem, err := syscall.Mmap(-1, 0, n+2*page, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Munmap(mem) })
	if err := syscall.Mprotect(mem[:page], syscall.PROT_NONE); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mprotect(mem[page+n:], syscall.PROT_NONE); err != nil {
		t.Fatal(err)
	}
	data := mem[page : page+n]
	copy(data, randBytes(uint64(n), n))
	return data
}

// TestLeafHashes16StaysInBounds hashes 16 leaves that fill the memory
// between two pages no one may read.
func TestLeafHashes16StaysInBounds(t *testing.T) {
	if leafHashes16 == nil {
		t.Skip("no 16-leaf hash on this CPU")
	}
	data := guarded(t, 16*LeafSize)
	got := leafHashes16(nil, data)
	for j := range 16 {
		if want := LeafHash(data[j*LeafSize : (j+1)*LeafSize]); got[j] != want {
			t.Fatalf("leaf %d: hash %x, want %x", j, got[j][:8], want[:8])
		}
	}
}

// TestNodeHashes16StaysInBounds hashes 16 pairs at the end and at the
// start of memory between two pages no one may read.
func TestNodeHashes16StaysInBounds(t *testing.T) {
	if nodeHashes16 == nil {
		t.Skip("no 16-pair hash on this CPU")
	}
	mem := guarded(t, syscall.Getpagesize())
	all := unsafe.Slice((*Hash)(unsafe.Pointer(&mem[0])), len(mem)/HashSize)
	for _, pairs := range [][]Hash{all[len(all)-32:], all[:32]} {
		got := make([]Hash, 16)
		nodeHashes16(got, pairs)
		for j := range 16 {
			if want := NodeHash(pairs[2*j], pairs[2*j+1]); got[j] != want {
				t.Fatalf("pair %d: hash %x, want %x", j, got[j][:8], want[:8])
			}
		}
	}
}
