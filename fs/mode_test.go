package fs_test

import (
	"fmt"
	"os"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/fincrypt/fincrypt/vault"
)

// TestCreateModes: with umask 0, every kind of file is created with exactly
// the mode bits asked for, 0000 and the special bits included, as on ext4
// (`mv -f` and package managers create files with 0000, then chmod). The
// modes are checked through the mount and again after a remount.
func TestCreateModes(t *testing.T) {
	requireFUSE(t)
	old := unix.Umask(0)
	t.Cleanup(func() { unix.Umask(old) })
	home := newVault(t, vault.CreateOptions{})
	tm := mountVault(t, home)
	perms := []uint32{0, 0o600, 0o644, 0o777, 0o4755, 0o2750, 0o1777, 0o7000, 0o001}
	type made struct {
		name string
		typ  uint32
		perm uint32
	}
	var all []made
	kinds := []struct {
		kind   string
		typ    uint32
		create func(p string, perm uint32) error
	}{
		{"open-creat", syscall.S_IFREG, func(p string, perm uint32) error {
			fd, err := unix.Open(p, unix.O_CREAT|unix.O_WRONLY|unix.O_EXCL, perm)
			if err == nil {
				unix.Close(fd)
			}
			return err
		}},
		{"open-creat-rdwr", syscall.S_IFREG, func(p string, perm uint32) error {
			fd, err := unix.Open(p, unix.O_CREAT|unix.O_RDWR|unix.O_TRUNC, perm)
			if err == nil {
				unix.Close(fd)
			}
			return err
		}},
		{"mknod-reg", syscall.S_IFREG, func(p string, perm uint32) error { return unix.Mknod(p, syscall.S_IFREG|perm, 0) }},
		{"mkdir", syscall.S_IFDIR, func(p string, perm uint32) error { return unix.Mkdir(p, perm) }},
		{"mkfifo", syscall.S_IFIFO, func(p string, perm uint32) error { return unix.Mkfifo(p, perm) }},
		{"mknod-sock", syscall.S_IFSOCK, func(p string, perm uint32) error { return unix.Mknod(p, syscall.S_IFSOCK|perm, 0) }},
		{"mknod-chr", syscall.S_IFCHR, func(p string, perm uint32) error {
			return unix.Mknod(p, syscall.S_IFCHR|perm, int(unix.Mkdev(1, 3)))
		}},
	}
	check := func(when string) {
		t.Helper()
		for _, m := range all {
			st := stat(t, tm.path(m.name))
			if st.Mode != m.typ|m.perm {
				t.Errorf("%s: %s has mode %#o, want %#o", when, m.name, st.Mode, m.typ|m.perm)
			}
		}
	}
	for _, k := range kinds {
		for _, perm := range perms {
			name := fmt.Sprintf("%s-%04o", k.kind, perm)
			if err := k.create(tm.path(name), perm); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			want := perm
			if k.typ == syscall.S_IFDIR {
				want &= 0o1777 // Linux's mkdir(2) drops set-user-ID and set-group-ID, as on ext4
			}
			all = append(all, made{name, k.typ, want})
		}
	}
	check("after create")
	// The creator may still write a file it created with mode 0000.
	f, err := os.OpenFile(tm.path("written-0000"), os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("data")); err != nil {
		t.Fatalf("writing through the descriptor that created a 0000 file: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	all = append(all, made{"written-0000", syscall.S_IFREG, 0})
	writeFile(t, tm.path("chmod-0000"), []byte("x"))
	if err := os.Chmod(tm.path("chmod-0000"), 0); err != nil {
		t.Fatal(err)
	}
	all = append(all, made{"chmod-0000", syscall.S_IFREG, 0})
	check("after a write")
	tm.unmount()
	tm = mountVault(t, home)
	check("after remount")
	mustEqual(t, "written-0000", readFile(t, tm.path("written-0000")), []byte("data"))
}
