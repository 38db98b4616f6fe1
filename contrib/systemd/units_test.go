// Package systemd holds the service units in this directory; its test checks them.
package systemd

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/fincrypt/fincrypt/internal/testbin"
)

var bin string

func TestMain(m *testing.M) { testbin.Main(m, &bin) }

const installed = "/usr/local/bin/fincrypt"

var units = []struct {
	file, as string // as: the name verified (an instance for a template)
	user     bool
}{
	{"fincrypt-storage@.service", "fincrypt-storage@node1.service", false},
	{"fincrypt-mediator.service", "fincrypt-mediator.service", false},
	{"fincrypt-mount.service", "fincrypt-mount.service", true},
}

// TestUnitsVerify runs systemd-analyze verify on every unit, with ExecStart pointing at the
// freshly built binary, and fails on any complaint (unknown keys are only warnings there).
func TestUnitsVerify(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed (package systemd): units not verified")
	}
	dir := t.TempDir()
	rt := t.TempDir() // a runtime dir for the --user manager
	os.Chmod(rt, 0o700)
	for _, u := range units {
		t.Run(u.file, func(t *testing.T) {
			b, err := os.ReadFile(u.file)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(b), "ExecStart="+installed+" ") {
				t.Fatalf("ExecStart does not run %s", installed)
			}
			p := filepath.Join(dir, u.as)
			if err := os.WriteFile(p, []byte(strings.ReplaceAll(string(b), installed, bin)), 0o644); err != nil {
				t.Fatal(err)
			}
			args := []string{"verify", "--man=no", p}
			if u.user {
				args = append([]string{"--user"}, args...)
			}
			cmd := exec.Command(sa, args...)
			cmd.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+rt, "SYSTEMD_LOG_COLOR=0")
			out, err := cmd.CombinedOutput()
			if err != nil || len(strings.TrimSpace(string(out))) > 0 {
				t.Fatalf("systemd-analyze %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		})
	}
}

// TestUnitsUseRealFlags checks that every --flag an ExecStart passes is one the command has.
func TestUnitsUseRealFlags(t *testing.T) {
	exec1 := regexp.MustCompile(`(?m)^ExecStart=` + regexp.QuoteMeta(installed) + ` (\S+)(.*)$`)
	flag := regexp.MustCompile(`--[a-z][a-z-]*`)
	for _, u := range units {
		b, err := os.ReadFile(u.file)
		if err != nil {
			t.Fatal(err)
		}
		m := exec1.FindStringSubmatch(string(b))
		if m == nil {
			t.Fatalf("%s: no ExecStart", u.file)
		}
		help, err := exec.Command(bin, m[1], "--help").CombinedOutput()
		if err != nil {
			t.Fatalf("%s: fincrypt %s --help: %v\n%s", u.file, m[1], err, help)
		}
		for _, f := range flag.FindAllString(m[2]+" "+commentedFlags(string(b)), -1) {
			if !strings.Contains(string(help), f+" ") {
				t.Errorf("%s: fincrypt %s has no %s", u.file, m[1], f)
			}
		}
	}
}

// commentedFlags returns the flags the comments tell operators to add.
func commentedFlags(unit string) string {
	var out []string
	for _, l := range strings.Split(unit, "\n") {
		if strings.HasPrefix(l, "#") && strings.Contains(l, "_ARGS") {
			out = append(out, l)
		}
	}
	return strings.Join(out, " ")
}
