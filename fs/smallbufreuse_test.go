package fs_test

import (
	"bytes"
	"fmt"
	"os"
	"testing"
)

// TestReusedSmallBufferReadsZeros writes and closes small files full of
// 0xff, whose buffers go back to the mount's pools, then writes new files
// with a gap before their first byte: the gap reads back as zeros after a
// remount, from what was sealed (a reused buffer's old bytes must never
// be stored).
func TestReusedSmallBufferReadsZeros(t *testing.T) {
	requireFUSE(t)
	home := newVault(t, fastKDF)
	tm := mountVault(t, home)
	full := bytes.Repeat([]byte{0xff}, 16000)
	offs := []int{1, 100, 4095, 4096, 5000, 9000, 12000, 16383}
	for _, off := range offs {
		for i := range 4 {
			name := tm.path(fmt.Sprintf("full-%d-%d", off, i))
			if err := os.WriteFile(name, full[:4000+4000*i], 0o644); err != nil {
				t.Fatal(err)
			}
		}
		f, err := os.Create(tm.path(fmt.Sprintf("gap-%d", off)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt([]byte("tail"), int64(off)); err != nil {
			f.Close()
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	tm.unmount()
	tm = mountVault(t, home)
	for _, off := range offs {
		got, err := os.ReadFile(tm.path(fmt.Sprintf("gap-%d", off)))
		if err != nil {
			t.Fatal(err)
		}
		want := append(make([]byte, off), "tail"...)
		if !bytes.Equal(got, want) {
			i := 0
			for i < len(got) && i < len(want) && got[i] == want[i] {
				i++
			}
			t.Fatalf("a file written at offset %d reads %d bytes, want %d; first difference at byte %d", off, len(got), len(want), i)
		}
	}
}
