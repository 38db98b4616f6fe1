package fs_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/fincrypt/fincrypt/fs"
)

const nobody = 65534

// asNobody runs a shell command as uid/gid 65534 and returns its output and error.
func asNobody(t *testing.T, script string) (string, error) {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// openUp makes the temp directories above a mount point traversable by others.
func openUp(t *testing.T, dir string) {
	for d := dir; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
}

// TestAllowOther checks that --allow-other lets another user in, with mode
// bits and owners enforced by the kernel, and that without it others are
// kept out entirely.
func TestAllowOther(t *testing.T) {
	requireFUSE(t)
	tm := mountVaultOpt(t, newVault(t, fastKDF), fs.Options{AllowOther: true})
	openUp(t, tm.dir)
	writeFile(t, tm.path("pub"), []byte("public\n"))
	writeFile(t, tm.path("priv"), []byte("secret\n"))
	os.Chmod(tm.path("priv"), 0o600)
	os.Mkdir(tm.path("mine"), 0o755)
	os.Chown(tm.path("mine"), nobody, nobody)

	if out, err := asNobody(t, "cat "+tm.path("pub")); err != nil || out != "public\n" {
		t.Fatalf("other user reading a 0644 file: %q, %v", out, err)
	}
	if out, err := asNobody(t, "cat "+tm.path("priv")); err == nil || !strings.Contains(out, "Permission denied") {
		t.Fatalf("other user reading a 0600 file: %q, %v", out, err)
	}
	if out, err := asNobody(t, "echo x >> "+tm.path("pub")); err == nil || !strings.Contains(out, "Permission denied") {
		t.Fatalf("other user writing a 0644 file of root: %q, %v", out, err)
	}
	if out, err := asNobody(t, "touch "+tm.path("new")); err == nil {
		t.Fatalf("other user creating in root's 0755 directory: %q", out)
	}
	if out, err := asNobody(t, "echo hi > "+tm.path("mine", "f")+" && chmod 600 "+tm.path("mine", "f")); err != nil {
		t.Fatalf("other user writing in its own directory: %q, %v", out, err)
	}
	if st := stat(t, tm.path("mine", "f")); st.Uid != nobody || st.Gid != nobody || st.Mode&0o777 != 0o600 {
		t.Fatalf("file created by another user: uid %d gid %d mode %o", st.Uid, st.Gid, st.Mode)
	}
	mustEqual(t, "root reads it anyway", readFile(t, tm.path("mine", "f")), []byte("hi\n"))

	// Without allow_other, only the mounting user gets in.
	closed := mountVault(t, newVault(t, fastKDF))
	openUp(t, closed.dir)
	if out, err := asNobody(t, "ls "+closed.dir); err == nil {
		t.Fatalf("other user listed a mount without allow_other: %q", out)
	}
}
