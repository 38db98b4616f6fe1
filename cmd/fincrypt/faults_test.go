package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/internal/fault"
	"github.com/fincrypt/fincrypt/replicate"
)

// TestStatusShowsFaults: `fincrypt status` says which background work is
// failing, since when, how often and why.
func TestStatusShowsFaults(t *testing.T) {
	since := time.Date(2026, 12, 5, 21, 0, 0, 0, time.UTC)
	st := &replicate.Status{Faults: []fault.Fault{{Work: "upload", Since: since, Last: since.Add(time.Minute),
		Failures: 3, Panics: 1, Err: "upload: internal error (panic): boom"}}}
	var out bytes.Buffer
	printStatus(&out, st)
	line := ""
	for _, l := range strings.Split(out.String(), "\n") {
		if strings.HasPrefix(l, "fault:") {
			line = l
		}
	}
	for _, want := range []string{"upload", since.Local().Format(time.RFC3339), "3 time(s)", "1 internal error", "boom"} {
		if !strings.Contains(line, want) {
			t.Fatalf("fault line %q lacks %q; status:\n%s", line, want, out.String())
		}
	}
	out.Reset()
	printStatus(&out, &replicate.Status{})
	if strings.Contains(out.String(), "fault:") {
		t.Fatalf("status without faults shows one:\n%s", out.String())
	}
}

// TestStatusShowsInodes: `fincrypt status` shows the inodes the kernel
// holds and the bound, and says when the kernel cannot prune.
func TestStatusShowsInodes(t *testing.T) {
	inodeLine := func(st *replicate.Status) string {
		var out bytes.Buffer
		printStatus(&out, st)
		for _, l := range strings.Split(out.String(), "\n") {
			if strings.HasPrefix(l, "inodes:") {
				return l
			}
		}
		return ""
	}
	for _, c := range []struct {
		in   replicate.InodeStatus
		want []string
	}{
		{replicate.InodeStatus{Live: 1234, Max: 4096, Pruned: 77, PruneSupported: true}, []string{"1234 held", "bound 4096", "77 asked"}},
		{replicate.InodeStatus{Live: 9000, Max: 4096}, []string{"9000 held", "bound 4096 not applied", "Linux 6.18"}},
		{replicate.InodeStatus{Live: 5, PruneSupported: true}, []string{"5 held", "no bound"}},
	} {
		line := inodeLine(&replicate.Status{Inodes: &c.in})
		for _, w := range c.want {
			if !strings.Contains(line, w) {
				t.Errorf("%+v: inode line %q lacks %q", c.in, line, w)
			}
		}
	}
	if line := inodeLine(&replicate.Status{}); line != "" {
		t.Errorf("a status without inode figures (an older mount) shows %q", line)
	}
}
