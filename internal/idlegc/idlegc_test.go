package idlegc

import (
	"math"
	"runtime"
	"runtime/metrics"
	"testing"
	"time"
)

// fakeRuntime is a runtime whose counters the test moves.
type fakeRuntime struct {
	s        sample
	gc       int
	limit    int64
	collects int
	afterGC  []func()
}

func (f *fakeRuntime) read() sample {
	s := f.s
	s.gogc = int64(f.gc)
	return s
}
func (f *fakeRuntime) collect()              { f.collects++ }
func (f *fakeRuntime) afterNextGC(fn func()) { f.afterGC = append(f.afterGC, fn) }
func (f *fakeRuntime) setGCPercent(p int) int {
	old := f.gc
	f.gc = p
	return old
}
func (f *fakeRuntime) setMemoryLimit(l int64) int64 {
	old := f.limit
	if l >= 0 {
		f.limit = l
	}
	return old
}

func TestPausesAfterQuietLooks(t *testing.T) {
	f := &fakeRuntime{s: sample{allocs: 1000, used: 200 << 20, live: 50 << 20}, gc: 100, limit: math.MaxInt64}
	k := newKeeper(Config{Quiet: 3, Bytes: 1 << 20}, f)
	busy := func() { f.s.allocs += 2 << 20; k.look() }
	idle := func() { f.s.allocs += 4 << 10; k.look() }

	idle()
	idle()
	busy() // the quiet count starts again
	idle()
	idle()
	if f.gc != 100 || f.collects != 0 {
		t.Fatalf("after 2 quiet looks (Quiet 3): GOGC %d, %d collections; want 100 and none", f.gc, f.collects)
	}
	idle()
	if f.gc != -1 {
		t.Fatalf("after 3 quiet looks: GOGC %d, want the collector off (-1)", f.gc)
	}
	if f.collects != 1 {
		t.Fatalf("%d collections as the collector went off, want 1 (what the activity left)", f.collects)
	}
	if want := int64(250 << 20); f.limit != want {
		t.Fatalf("memory limit %d while paused, want %d (in use + live heap)", f.limit, want)
	}
	if len(f.afterGC) != 1 {
		t.Fatalf("%d calls for the next collection, want 1: what ends the pause", len(f.afterGC))
	}
	// The next collection ends the pause.
	f.afterGC[0]()
	select {
	case <-k.gcRan:
	default:
		t.Fatal("the collection that ends the pause was not passed on")
	}
	k.resume()
	if f.gc != 100 || f.limit != math.MaxInt64 {
		t.Fatalf("after the collection: GOGC %d, limit %d; want 100 and no limit back", f.gc, f.limit)
	}
	idle()
	idle()
	if f.gc != 100 {
		t.Fatalf("2 quiet looks after a pause (Quiet 3): GOGC %d, want 100", f.gc)
	}
	idle()
	if f.gc != -1 || f.collects != 2 {
		t.Fatalf("3 quiet looks after a pause: GOGC %d, %d collections; want -1 and 2", f.gc, f.collects)
	}
}

func TestLeastHeadroom(t *testing.T) {
	f := &fakeRuntime{s: sample{used: 100 << 20, live: 1 << 20}, gc: 80, limit: math.MaxInt64}
	k := newKeeper(Config{Quiet: 1, Bytes: 1 << 20}, f)
	k.look()
	if f.gc != -1 {
		t.Fatalf("GOGC %d after a quiet look, want -1", f.gc)
	}
	if want := int64(100<<20 + minHeadroom); f.limit != want {
		t.Fatalf("limit %d, want %d: a small live heap still gets the runtime's least headroom", f.limit, want)
	}
	k.resume()
	if f.gc != 80 || f.limit != math.MaxInt64 {
		t.Fatalf("resumed: GOGC %d, limit %d; want 80 and none", f.gc, f.limit)
	}
}

func TestKeepsTheUsersSettings(t *testing.T) {
	f := &fakeRuntime{s: sample{used: 500 << 20, live: 300 << 20}, gc: -1, limit: math.MaxInt64}
	k := newKeeper(Config{Quiet: 1}, f)
	for range 5 {
		k.look()
	}
	if f.gc != -1 || f.limit != math.MaxInt64 || f.collects != 0 {
		t.Fatalf("with GOGC=off: GOGC %d, limit %d, %d collections; want it left alone", f.gc, f.limit, f.collects)
	}

	// A user's GOGC=50: the limit is at its goal, half the live heap on.
	f = &fakeRuntime{s: sample{used: 500 << 20, live: 300 << 20}, gc: 50, limit: math.MaxInt64}
	k = newKeeper(Config{Quiet: 1}, f)
	k.look()
	if want := int64(650 << 20); f.gc != -1 || f.limit != want {
		t.Fatalf("with GOGC=50: GOGC %d, limit %d; want -1 and %d (in use + half the live heap)", f.gc, f.limit, want)
	}
	k.resume()
	if f.gc != 50 || f.limit != math.MaxInt64 {
		t.Fatalf("resumed: GOGC %d, limit %d; want 50 and none", f.gc, f.limit)
	}

	// A user's memory limit below the computed one stays.
	f = &fakeRuntime{s: sample{used: 500 << 20, live: 300 << 20}, gc: 100, limit: 600 << 20}
	k = newKeeper(Config{Quiet: 1}, f)
	k.look()
	if f.gc != -1 || f.limit != 600<<20 {
		t.Fatalf("with GOMEMLIMIT=600MiB: GOGC %d, limit %d; want -1 and the user's limit", f.gc, f.limit)
	}
	k.resume()
	if f.gc != 100 || f.limit != 600<<20 {
		t.Fatalf("resumed: GOGC %d, limit %d; want 100 and the user's limit", f.gc, f.limit)
	}
}

func gcSettings() (gogc int64, limit uint64) {
	m := []metrics.Sample{{Name: "/gc/gogc:percent"}, {Name: "/gc/gomemlimit:bytes"}}
	metrics.Read(m)
	return int64(m[0].Value.Uint64()), m[1].Value.Uint64()
}

func waitGOGC(t *testing.T, want int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, _ := gcSettings()
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GOGC is %d after 10 s, want %d", got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var sink [][]byte

// TestRealRuntime runs a Keeper on this process's own collector: an idle
// process has it off, under a limit, and stops collecting; allocation up
// to the limit starts the one collection that turns it back on; Stop
// leaves the settings as they were.
func TestRealRuntime(t *testing.T) {
	gogc0, limit0 := gcSettings()
	if gogc0 < 0 {
		t.Skip("the test process runs with GOGC=off")
	}
	// Garbage from work before the quiet: 64 MiB.
	for range 1024 {
		sink = append(sink, make([]byte, 64<<10))
	}
	sink = nil
	var changes []bool
	changed := make(chan bool, 16)
	k := Start(Config{Every: 20 * time.Millisecond, Quiet: 2, Bytes: 1 << 20,
		Changed: func(paused bool, _ int64) { changed <- paused }})
	defer k.Stop()
	waitGOGC(t, -1)
	_, limit := gcSettings()
	if limit == 0 || limit >= limit0 {
		t.Fatalf("paused with memory limit %d (before: %d): want a limit", limit, limit0)
	}
	// What the collection before the pause freed went back to the system:
	// the runtime's scavenger, paced by GOGC's goal, would keep it while
	// the collector is off.
	free := []metrics.Sample{{Name: "/memory/classes/heap/free:bytes"}}
	metrics.Read(free)
	if f := free[0].Value.Uint64(); f > 16<<20 {
		t.Fatalf("paused with %d MiB of free heap kept from the system, want it given back", f>>20)
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	gcs := ms.NumGC
	time.Sleep(200 * time.Millisecond) // ten looks' time, idle
	runtime.ReadMemStats(&ms)
	if ms.NumGC != gcs {
		t.Fatalf("%d collections while paused and idle", ms.NumGC-gcs)
	}
	if g, _ := gcSettings(); g != -1 {
		t.Fatalf("GOGC %d after 200 ms idle, want still off", g)
	}

	// Allocate garbage, several times the limit's headroom: the limit
	// collects it, and that collection turns the collector back on.
	for i := range 4096 {
		sink = append(sink, make([]byte, 64<<10))
		if len(sink) > 64 {
			sink = sink[:0]
		}
		if i%256 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	sink = nil
	deadline := time.After(10 * time.Second)
	for len(changes) < 2 {
		select {
		case p := <-changed:
			changes = append(changes, p)
		case <-deadline:
			t.Fatalf("changes %v after 256 MiB allocated: want off, then on", changes)
		}
	}
	if !changes[0] || changes[1] {
		t.Fatalf("changes %v: want off, then on", changes)
	}
	k.Stop()
	if g, l := gcSettings(); g != gogc0 || l != limit0 {
		t.Fatalf("after Stop: GOGC %d, limit %d; want %d and %d as before", g, l, gogc0, limit0)
	}
}
