package fs_test

import (
	"testing"
)

func TestSmoke(t *testing.T) {
	requireFUSE(t)
	home := newVault(t, fastKDF)
	tm := mountVault(t, home)
	writeFile(t, tm.path("a"), []byte("hello"))
	mustEqual(t, "a", readFile(t, tm.path("a")), []byte("hello"))
	tm.unmount()
	checkVault(t, home)
	tm = mountVault(t, home)
	mustEqual(t, "a after remount", readFile(t, tm.path("a")), []byte("hello"))
}
