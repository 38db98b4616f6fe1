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
