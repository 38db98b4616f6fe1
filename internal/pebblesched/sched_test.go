package pebblesched

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// fakeDB is a database with an allowance and a queue of waiting
// compactions; Schedule starts one (counted in started).
type fakeDB struct {
	mu      sync.Mutex
	allowed int
	waiting int
	started chan struct{}
}

func (d *fakeDB) GetAllowedWithoutPermission() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.allowed
}

func (d *fakeDB) GetWaitingCompaction() (bool, pebble.WaitingCompaction) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.waiting > 0, pebble.WaitingCompaction{}
}

func (d *fakeDB) Schedule(pebble.CompactionGrantHandle) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.waiting == 0 {
		return false
	}
	d.waiting--
	d.started <- struct{}{}
	return true
}

func (d *fakeDB) set(allowed, waiting int) {
	d.mu.Lock()
	d.allowed, d.waiting = allowed, waiting
	d.mu.Unlock()
}

// expectStarts waits for n compactions started by grants, then checks that
// no more start.
func expectStarts(t *testing.T, d *fakeDB, n int, why string) {
	t.Helper()
	for i := range n {
		select {
		case <-d.started:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: %d of %d compactions started", why, i, n)
		}
	}
	select {
	case <-d.started:
		t.Fatalf("%s: more than %d compactions started", why, n)
	case <-time.After(50 * time.Millisecond):
	}
}

func TestSchedulerGrantsOnEvents(t *testing.T) {
	d := &fakeDB{allowed: 1, started: make(chan struct{}, 16)}
	s := New()
	s.Register(1, d)

	// Asked for, within the allowance.
	if ok, h := s.TrySchedule(); !ok || h == nil {
		t.Fatal("the first compaction was refused with an allowance of 1")
	}
	if ok, _ := s.TrySchedule(); ok {
		t.Fatal("a second compaction was granted with an allowance of 1")
	}

	// A flush raises the allowance to 3 with two compactions waiting: both
	// start without anything else happening (no Done, no poll).
	d.set(3, 2)
	s.UpdateGetAllowedWithoutPermission()
	expectStarts(t, d, 2, "allowance raised to 3")

	// An update that does not raise the allowance grants nothing.
	d.set(3, 1)
	s.UpdateGetAllowedWithoutPermission()
	expectStarts(t, d, 0, "allowance unchanged, all 3 running")

	// A compaction ends: the waiting one takes its place.
	s.Done()
	expectStarts(t, d, 1, "one of 3 done")

	// The allowance fell to 1 while 3 run: ends free no room until fewer
	// than 1 run.
	d.set(1, 5)
	s.Done()
	s.Done()
	expectStarts(t, d, 0, "2 of 3 done with an allowance of 1")
	s.Done()
	expectStarts(t, d, 1, "all done with an allowance of 1")

	// Unregistered: nothing is granted any more.
	s.Unregister()
	d.set(4, 5)
	s.UpdateGetAllowedWithoutPermission()
	s.Done()
	if ok, _ := s.TrySchedule(); ok {
		t.Fatal("granted after Unregister")
	}
	expectStarts(t, d, 0, "unregistered")
}

// TestNoPollingGoroutine opens a real database with Quiet: no goroutine
// of Pebble's polling scheduler or of its disk-health checks runs, and
// compactions still happen (sixty flushes' tables do not stay in L0).
func TestNoPollingGoroutine(t *testing.T) {
	po := &pebble.Options{Logger: quiet{}}
	Quiet(po)
	db, err := pebble.Open(t.TempDir(), po)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if p := Polling(); p != "" {
		t.Fatalf("a goroutine wakes the idle database:\n%s", p)
	}
	for i := range 60 {
		for j := range 50 {
			if err := db.Set(fmt.Appendf(nil, "key %06d", j*1000+i), make([]byte, 100), pebble.NoSync); err != nil {
				t.Fatal(err)
			}
		}
		if err := db.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		m := db.Metrics()
		if m.Compact.Count > 0 && m.Levels[0].TablesCount < 20 {
			t.Logf("%d compactions, %d tables left in L0", m.Compact.Count, m.Levels[0].TablesCount)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 60 flushes: %d compactions, %d tables in L0", m.Compact.Count, m.Levels[0].TablesCount)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type quiet struct{}

func (quiet) Infof(string, ...any)  {}
func (quiet) Errorf(string, ...any) {}
func (quiet) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}
