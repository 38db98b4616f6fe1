package main

import (
	"encoding/json"
	"strings"
	"testing"

	progressbar "github.com/fincrypt/fincrypt/internal/progress"
)

// jsonProgress parses a command's --json progress output: every line a JSON object with the
// expected label, progress lines with counts that never go back, and a final summary
// without error. It returns the first and the summary line.
func jsonProgress(t *testing.T, label, stdout string) (first, summary progressbar.State) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	var prev progressbar.State
	for i, l := range lines {
		var s progressbar.State
		dec := json.NewDecoder(strings.NewReader(l))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&s); err != nil {
			t.Fatalf("%s --json line %d is not a progress object: %v\n%s", label, i, err, stdout)
		}
		if s.Label != label {
			t.Fatalf("%s --json line %d: label %q", label, i, s.Label)
		}
		want := "progress"
		if i == len(lines)-1 {
			want = "summary"
		}
		if s.Type != want {
			t.Fatalf("%s --json line %d: type %q, want %q\n%s", label, i, s.Type, want, stdout)
		}
		if i > 0 && (s.Files < prev.Files || s.Bytes < prev.Bytes) {
			t.Fatalf("%s --json: counts went back from %+v to %+v", label, prev, s)
		}
		prev = s
	}
	var f progressbar.State
	json.Unmarshal([]byte(lines[0]), &f)
	if prev.Error != "" {
		t.Fatalf("%s --json summary has an error: %+v", label, prev)
	}
	return f, prev
}
