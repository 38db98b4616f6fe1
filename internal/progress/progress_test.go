package progress

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newClock() *clock { return &clock{t: time.Unix(1_700_000_000, 0)} }

func lines(t *testing.T, b *bytes.Buffer) []State {
	t.Helper()
	var out []State
	sc := bufio.NewScanner(b)
	for sc.Scan() {
		var s State
		dec := json.NewDecoder(strings.NewReader(sc.Text()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&s); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		out = append(out, s)
	}
	return out
}

func TestETAMath(t *testing.T) {
	c := newClock()
	r := New(&bytes.Buffer{}, Options{Now: c.now})
	r.SetTotal(10, 1000)
	if s := r.State(); s.Rate != 0 || s.ETA != 0 {
		t.Fatalf("rate/ETA before any work: %+v", s)
	}
	c.advance(2 * time.Second)
	r.Add(2, 250)
	s := r.State()
	if s.Rate != 125 || s.ETA != 6 || s.Elapsed != 2 {
		t.Fatalf("250 of 1000 bytes in 2s: rate %v ETA %v elapsed %v, want 125, 6, 2", s.Rate, s.ETA, s.Elapsed)
	}
	// Without byte counts, files drive rate and ETA.
	r2 := New(&bytes.Buffer{}, Options{Now: c.now})
	r2.SetTotal(8, 0)
	c.advance(4 * time.Second)
	r2.Add(2, 0)
	if s := r2.State(); s.Rate != 0.5 || s.ETA != 12 {
		t.Fatalf("2 of 8 files in 4s: rate %v ETA %v, want 0.5, 12", s.Rate, s.ETA)
	}
	// Done (or over the total): no ETA.
	r.Set(10, 1000)
	if s := r.State(); s.ETA != 0 {
		t.Fatalf("ETA when done: %v", s.ETA)
	}
}

func TestJSONRateLimitedAndSummary(t *testing.T) {
	c := newClock()
	var b bytes.Buffer
	r := New(&b, Options{Label: "restore", JSON: true, Now: c.now})
	r.SetTotal(100, 100*512)
	for i := 0; i < 100; i++ {
		c.advance(100 * time.Millisecond) // 10 s in all, 1 s interval: about 10 lines, not 100
		r.Add(1, 512)
	}
	r.Finish(nil)
	r.Finish(errors.New("twice")) // ignored
	r.Add(1, 1)                   // after Finish: ignored
	got := lines(t, &b)
	if len(got) < 9 || len(got) > 13 {
		t.Fatalf("%d lines for 10 s at a 1 s interval", len(got))
	}
	for i, s := range got[:len(got)-1] {
		if s.Type != "progress" || s.Label != "restore" || s.TotalFiles != 100 {
			t.Fatalf("line %d: %+v", i, s)
		}
		if i > 0 && s.Files <= got[i-1].Files {
			t.Fatalf("counts not increasing: %+v after %+v", s, got[i-1])
		}
	}
	last := got[len(got)-1]
	want := State{Type: "summary", Label: "restore", Files: 100, TotalFiles: 100, Bytes: 51200, TotalBytes: 51200, Elapsed: 10, Rate: 5120}
	if last != want {
		t.Fatalf("summary %+v, want %+v", last, want)
	}
}

func TestJSONSummaryCarriesError(t *testing.T) {
	var b bytes.Buffer
	r := New(&b, Options{JSON: true})
	r.Finish(errors.New("network down"))
	got := lines(t, &b)
	if len(got) != 1 || got[0].Type != "summary" || got[0].Error != "network down" {
		t.Fatalf("%+v", got)
	}
}

func TestTerminalRedrawsOneLine(t *testing.T) {
	c := newClock()
	var b bytes.Buffer
	yes := true
	r := New(&b, Options{Label: "check", TTY: &yes, Now: c.now})
	r.SetTotal(4, 4<<20)
	for i := 0; i < 4; i++ {
		c.advance(time.Second)
		r.Add(1, 1<<20)
		r.Add(0, 0) // same instant: rate-limited
	}
	r.Finish(nil)
	out := b.String()
	if strings.Count(out, "\n") != 1 || !strings.HasSuffix(out, "\n") {
		t.Fatalf("a terminal gets one line ended once: %q", out)
	}
	draws := strings.Split(strings.TrimSuffix(out, "\n"), "\r")[1:]
	if len(draws) != 6 { // SetTotal, 4 Adds a second apart, Finish
		t.Fatalf("%d redraws, want 6: %q", len(draws), out)
	}
	if !strings.Contains(draws[2], "2/4 files, 2.0 MiB/4.0 MiB (50%), 1.0 MiB/s, ETA 2s") {
		t.Fatalf("redraw %q", draws[2])
	}
	if !strings.Contains(draws[5], "check: 4/4 files") || !strings.Contains(draws[5], "done in 4s") {
		t.Fatalf("last line %q", draws[5])
	}
}

func TestQuietWhenNotATerminal(t *testing.T) {
	f, err := os.Create(t.TempDir() + "/out")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := New(f, Options{})
	if r.Active() {
		t.Fatal("a regular file counted as a terminal")
	}
	r.SetTotal(1, 1)
	r.Add(1, 1)
	r.Finish(nil)
	var b bytes.Buffer
	New(&b, Options{}).Finish(nil)
	if fi, _ := f.Stat(); fi.Size() != 0 || b.Len() != 0 {
		t.Fatalf("wrote %d bytes to a file and %q to a buffer", fi.Size(), b.String())
	}
}

func TestConcurrentAdds(t *testing.T) {
	var b bytes.Buffer
	var mu sync.Mutex
	w := writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return b.Write(p) })
	r := New(w, Options{JSON: true, Interval: time.Nanosecond})
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				r.Add(1, 3)
			}
		}()
	}
	wg.Wait()
	r.Finish(nil)
	got := lines(t, &b)
	if s := got[len(got)-1]; s.Files != 800 || s.Bytes != 2400 {
		t.Fatalf("summary %+v", s)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
