package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBackupProgressJSON: `backup run --json` and `restore --snapshot --json` print
// progress lines and a summary whose counts are the work done (files and bytes of the
// folder, as the excludes, .fincryptignore and CACHEDIR.TAG leave it) and whose totals
// (from the counting walk) are the same; then, run without the power to read everything,
// the pass names each unreadable file and folder in its report and goes on.
func TestBackupProgressJSON(t *testing.T) {
	base := t.TempDir()
	home, pw := filepath.Join(base, "home"), writePassword(t, "pw")
	if r := fincrypt(t, nil, "--home", home, "init", "--password-file", pw); r.code != 0 {
		t.Fatalf("init: %+v", r)
	}
	src := filepath.Join(base, "src")
	fillSource(t, src, 5, 300<<10, 7)
	sh(t, src, `echo hello > a.txt; ln d0/f000.bin d0/hard; echo x > skip.tmp; mkdir -p proj cache locked
		printf '*.o\n' > proj/.fincryptignore; echo obj > proj/m.o
		printf 'Signature: 8a477f597d28d172789f06886806bc55' > cache/CACHEDIR.TAG; echo c > cache/c
		mkfifo fifo; echo s > secret; echo l > locked/inner; chmod 000 secret locked`)
	// What the pass keeps: every regular file but skip.tmp, proj/m.o and the cache's.
	var wantFiles, wantBytes, linkBytes int64
	for _, f := range []string{"a.txt", "d0/hard", "proj/.fincryptignore", "secret", "locked/inner",
		"d0/f000.bin", "d1/f001.bin", "d2/f002.bin", "d0/f003.bin", "d1/f004.bin"} {
		fi, err := os.Lstat(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		wantFiles++
		wantBytes += fi.Size()
		if f == "d0/hard" {
			linkBytes = fi.Size()
		}
	}
	if r := fincrypt(t, nil, "--home", home, "backup", "add", "--password-file", pw, src); r.code != 0 {
		t.Fatalf("backup add: %+v", r)
	}
	r := fincrypt(t, nil, "--home", home, "backup", "run", "--password-file", pw, "--json", "--exclude", "*.tmp")
	if r.code != 0 {
		t.Fatalf("backup run: %+v", r)
	}
	sum := progressLines(t, "backup run --json", r.stdout)
	if sum.lines == 0 || sum.Files != wantFiles || sum.Bytes != wantBytes || sum.TotalFiles != wantFiles || sum.TotalBytes != wantBytes {
		t.Fatalf("backup run --json: %d progress lines, summary %+v; want %d files, %d bytes, and the same totals", sum.lines, sum, wantFiles, wantBytes)
	}
	var rep backupReport
	if err := json.Unmarshal(sum.Result, &rep); err != nil || int64(rep.Files) != wantFiles || int64(rep.TotalBytes) != wantBytes {
		t.Fatalf("the summary's result %s (%v): want the pass's report", sum.Result, err)
	}

	target := filepath.Join(base, "restored")
	r = fincrypt(t, nil, "--home", home, "restore", "--password-file", pw, "--snapshot", rep.Snapshot, "--target", target, "--json")
	if r.code != 0 {
		t.Fatalf("restore --snapshot --json: %+v", r)
	}
	rs := progressLines(t, "restore --snapshot --json", r.stdout)
	// The hard link's second name is linked, not written.
	if rs.lines == 0 || rs.Files != wantFiles-1 || rs.Bytes != wantBytes-linkBytes || rs.TotalFiles != rs.Files || rs.TotalBytes != rs.Bytes {
		t.Fatalf("restore --json: %d progress lines, summary %+v; want %d files, %d bytes, and the same totals", rs.lines, rs, wantFiles-1, wantBytes-linkBytes)
	}
	var res struct {
		Files     int64  `json:"files"`
		HardLinks int64  `json:"hard_links"`
		Snapshot  string `json:"snapshot"`
	}
	if err := json.Unmarshal(rs.Result, &res); err != nil || res.Files != rs.Files || res.HardLinks != 1 || res.Snapshot != rep.Snapshot {
		t.Fatalf("restore's result %s (%v)", rs.Result, err)
	}
	if b, err := os.ReadFile(filepath.Join(target, src, "locked/inner")); err != nil || string(b) != "l\n" {
		t.Fatalf("restored locked/inner: %q %v", b, err)
	}

	// Root without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH cannot read mode-000 entries.
	if os.Geteuid() != 0 {
		t.Skip("not root: the unreadable-entries half needs root (setpriv drops its override)")
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("setpriv (util-linux) is missing: the unreadable-entries half is not run")
	}
	// secret changed (a file unchanged since the last pass is not read at all).
	os.WriteFile(filepath.Join(src, "secret"), []byte("changed"), 0)
	cmd := exec.Command("setpriv", "--bounding-set=-dac_override,-dac_read_search", binPath,
		"--home", home, "backup", "run", "--password-file", pw, "--json", "--exclude", "*.tmp")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + base}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("backup run without read override: %v\n%s\n%s", err, out.String(), errb.String())
		}
		t.Fatal(err)
	}
	sum = progressLines(t, "backup run --json (unreadable entries)", out.String())
	var rep2 backupReport
	if err := json.Unmarshal(sum.Result, &rep2); err != nil {
		t.Fatal(err)
	}
	named := map[string]string{}
	for _, s := range rep2.Skipped {
		named[strings.TrimPrefix(s.Path, src+"/")] = s.Reason
	}
	for _, p := range []string{"secret", "locked"} {
		if !strings.Contains(named[p], "unreadable") {
			t.Errorf("the report does not name %s as unreadable: %v", p, rep2.Skipped)
		}
	}
	if int64(rep2.Files) != wantFiles-2 || sum.Files != wantFiles-2 {
		t.Errorf("the pass with unreadable entries kept %d files (summary %d), want %d", rep2.Files, sum.Files, wantFiles-2)
	}
}
