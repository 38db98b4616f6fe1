package backup

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/meta"
)

func TestPolicyRules(t *testing.T) {
	base := time.Date(2025, 1, 1, 0, 30, 0, 0, time.Local)
	var snaps []Snapshot
	// Every 6 hours for 70 days: 4 a day.
	for i := 0; i < 70*4; i++ {
		snaps = append(snaps, Snapshot{ID: [8]byte{byte(i >> 8), byte(i)}, Time: base.Add(time.Duration(i) * 6 * time.Hour)})
	}
	newest := snaps[len(snaps)-1].Time
	kept := func(p Policy) []time.Time {
		keep, forget := p.Apply(snaps)
		if len(keep)+len(forget) != len(snaps) {
			t.Fatalf("%+v: %d kept + %d forgotten of %d", p, len(keep), len(forget), len(snaps))
		}
		var out []time.Time
		for _, s := range keep {
			out = append(out, s.Time)
		}
		return out
	}
	for _, tc := range []struct {
		p    Policy
		want int
		each func(time.Time) string
	}{
		{Policy{Last: 5}, 5, func(t time.Time) string { return t.String() }},
		{Policy{Hourly: 3}, 3, func(t time.Time) string { return t.Format("2006-01-02 15") }},
		{Policy{Daily: 7}, 7, func(t time.Time) string { return t.Format("2006-01-02") }},
		{Policy{Weekly: 4}, 4, func(t time.Time) string { y, w := t.ISOWeek(); return fmt.Sprint(y, w) }},
		{Policy{Monthly: 2}, 2, func(t time.Time) string { return t.Format("2006-01") }},
	} {
		got := kept(tc.p)
		if len(got) != tc.want {
			t.Errorf("%+v kept %d, want %d", tc.p, len(got), tc.want)
			continue
		}
		// The newest of each period, the newest periods.
		if got[len(got)-1] != newest {
			t.Errorf("%+v did not keep the newest snapshot", tc.p)
		}
		seen := map[string]bool{}
		for _, g := range got {
			if seen[tc.each(g)] {
				t.Errorf("%+v kept two snapshots of one period %s", tc.p, tc.each(g))
			}
			seen[tc.each(g)] = true
			for _, s := range snaps { // nothing newer in its period was dropped
				if tc.each(s.Time) == tc.each(g) && s.Time.After(g) {
					t.Errorf("%+v kept %v, not the newest of its period (%v)", tc.p, g, s.Time)
				}
			}
		}
	}
	// Rules add up.
	if n := len(kept(Policy{Last: 2, Monthly: 3})); n != 4 {
		t.Errorf("last 2 + monthly 3 kept %d, want 4 (the newest counts for both)", n)
	}
	if _, err := Forget(Repo{}, Policy{}, true); err != ErrNoPolicy {
		t.Errorf("forget without a rule: %v", err)
	}
}

// TestForgetSweepsOnlyWhatNoKeptSnapshotNeeds runs passes over a changing
// folder with injected times, forgets, and restores every kept snapshot.
func TestForgetSweepsOnlyWhatNoKeptSnapshotNeeds(t *testing.T) {
	repo := newRepo(t)
	src := t.TempDir()
	base := time.Date(2025, 3, 1, 12, 0, 0, 0, time.Local)
	contents := map[string]map[string][]byte{} // snapshot id -> file -> bytes
	for day := 0; day < 6; day++ {
		// Each day one file changes and one is new; "stable" never changes.
		writeFile(t, filepath.Join(src, "stable"), seeded(1000, 200<<10), 0o644)
		writeFile(t, filepath.Join(src, "daily"), seeded(uint64(2000+day), 150<<10), 0o644)
		writeFile(t, filepath.Join(src, fmt.Sprintf("new-%d", day)), seeded(uint64(3000+day), 50<<10), 0o644)
		rep, err := Run(context.Background(), repo, Options{Paths: []string{src}, Time: base.Add(time.Duration(day) * 24 * time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		files := map[string][]byte{}
		ents, _ := os.ReadDir(src)
		for _, e := range ents {
			b, _ := os.ReadFile(filepath.Join(src, e.Name()))
			files[e.Name()] = b
		}
		contents[rep.Snapshot] = files
	}
	countStore := func() (n int) {
		repo.Store.List(func(meta.ChunkID) error { n++; return nil }, nil)
		return n
	}
	before, beforeStore := mustSnapshots(t, repo), countStore()
	dry, err := Forget(repo, Policy{Last: 2}, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(dry.Forget) != 4 || len(mustSnapshots(t, repo)) != 6 || countStore() != beforeStore {
		t.Fatalf("dry run: forget %d, and it changed something", len(dry.Forget))
	}
	res, err := Forget(repo, Policy{Last: 2, Daily: 1}, false)
	if err != nil {
		t.Fatal(err)
	}
	after := mustSnapshots(t, repo)
	if len(after) != 2 || after[1].ID != before[5].ID || after[0].ID != before[4].ID {
		t.Fatalf("kept %v", after)
	}
	// Days 0-3's "daily" versions (150 KiB each, 4 of them) are gone.
	if res.Sweep.Blobs == 0 || res.Sweep.Bytes < 4*150<<10 || countStore() >= beforeStore {
		t.Fatalf("sweep %+v, store %d -> %d chunks", res.Sweep, beforeStore, countStore())
	}
	for _, s := range after {
		target := t.TempDir()
		if _, err := Restore(context.Background(), repo, s, RestoreOptions{Target: target}); err != nil {
			t.Fatal(err)
		}
		for name, want := range contents[s.ID.String()] {
			got, err := os.ReadFile(filepath.Join(target, src, name))
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("snapshot %s: %s does not restore byte-identical: %v", s.ID, name, err)
			}
		}
	}
	// A second sweep finds nothing more; a pass after forget still works.
	if sw, err := Sweep(repo); err != nil || sw.Blobs != 0 || sw.Trees != 0 {
		t.Fatalf("second sweep: %+v %v", sw, err)
	}
	ids := func(s []Snapshot) (out []string) {
		for _, x := range s {
			out = append(out, x.ID.String())
		}
		return out
	}
	if !slices.Equal(ids(after), ids(mustSnapshots(t, repo))) {
		t.Fatal("a sweep changed the snapshots")
	}
}

func mustSnapshots(t *testing.T, repo Repo) []Snapshot {
	t.Helper()
	s, err := Snapshots(repo.Index)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
