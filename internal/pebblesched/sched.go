// Package pebblesched is a Pebble compaction scheduler that acts on
// events only.
//
// Pebble's default scheduler (pebble.ConcurrencyLimitScheduler) grants
// compactions when one is asked for, when one ends, and from a goroutine
// that wakes every 100 ms to see whether the database now allows more at
// once. That goroutine wakes an idle process ten times a second for its
// whole life: in an idle mount it made 88 % of the process's context
// switches (about 3,000 a minute against about 400 without it) and nearly
// all of its CPU. Every event that raises the allowance is known to the
// scheduler: a flush calls UpdateGetAllowedWithoutPermission, a compaction
// that ends calls Done, and a refused compaction implies a running one,
// whose Done grants again. So this scheduler grants on those events, the
// same way the default one does, and never polls. Quiet sets it, and
// turns off the other thing that wakes an idle database (Pebble's
// disk-health ticker).
package pebblesched

import (
	"runtime"
	"strings"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Scheduler limits concurrent compactions to what the database allows
// without permission (pebble.DBForCompaction.GetAllowedWithoutPermission),
// as the default scheduler does. One Scheduler serves one database: give
// each pebble.Open a New one (Options.Experimental.CompactionScheduler).
type Scheduler struct {
	db pebble.DBForCompaction

	mu           sync.Mutex
	granted      *sync.Cond // signalled when granting ends
	running      int        // compactions granted and not yet done
	allowed      int        // the allowance last read
	granting     bool       // a grant loop runs (one at a time)
	unregistered bool
}

var _ pebble.CompactionScheduler = (*Scheduler)(nil)

// New returns a scheduler for one database.
func New() *Scheduler {
	s := &Scheduler{}
	s.granted = sync.NewCond(&s.mu)
	return s
}

// Register implements pebble.CompactionScheduler.
func (s *Scheduler) Register(_ int, db pebble.DBForCompaction) { s.db = db }

// Unregister implements pebble.CompactionScheduler: no grant starts after
// it returns, and none is running.
func (s *Scheduler) Unregister() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unregistered = true
	for s.granting {
		s.granted.Wait()
	}
}

// TrySchedule implements pebble.CompactionScheduler. The database calls it
// holding its own lock, so it only counts.
func (s *Scheduler) TrySchedule() (bool, pebble.CompactionGrantHandle) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.unregistered {
		return false, nil
	}
	s.allowed = s.db.GetAllowedWithoutPermission()
	if s.allowed > s.running {
		s.running++
		return true, s
	}
	return false, nil
}

// UpdateGetAllowedWithoutPermission implements pebble.CompactionScheduler.
// The database calls it holding its lock after a flush; a grant asks the
// database for its waiting compaction, which takes that lock, so a raised
// allowance is granted from a goroutine of its own (the default scheduler
// pokes its polling goroutine instead).
func (s *Scheduler) UpdateGetAllowedWithoutPermission() {
	s.mu.Lock()
	allowed := s.db.GetAllowedWithoutPermission()
	raised := allowed > s.allowed
	s.allowed = allowed
	s.mu.Unlock()
	if raised {
		go func() {
			s.mu.Lock()
			s.grantLockedAndUnlock()
		}()
	}
}

// Started, MeasureCPU and CumulativeStats implement
// pebble.CompactionGrantHandle: nothing is paced.
func (s *Scheduler) Started()                                          {}
func (s *Scheduler) MeasureCPU(pebble.CompactionGoroutineKind)         {}
func (s *Scheduler) CumulativeStats(pebble.CompactionGrantHandleStats) {}

// Done implements pebble.CompactionGrantHandle: a compaction ended, so the
// waiting one (if any) may start.
func (s *Scheduler) Done() {
	s.mu.Lock()
	s.running--
	s.grantLockedAndUnlock()
}

// grantLockedAndUnlock starts waiting compactions while the allowance has
// room. Called with s.mu held; returns with it released.
func (s *Scheduler) grantLockedAndUnlock() {
	defer s.mu.Unlock()
	for s.granting && !s.unregistered {
		s.granted.Wait()
	}
	if s.unregistered {
		return
	}
	s.allowed = s.db.GetAllowedWithoutPermission()
	room := s.allowed - s.running
	if room <= 0 {
		return
	}
	s.granting = true
	s.mu.Unlock()
	// Ask for the waiting compaction only with room for it, so that none
	// is picked and thrown away.
	for ; room > 0; room-- {
		if waiting, _ := s.db.GetWaitingCompaction(); !waiting {
			break
		}
		if !s.db.Schedule(s) {
			break
		}
		s.mu.Lock()
		s.running++
		s.mu.Unlock()
	}
	s.mu.Lock()
	s.granting = false
	s.granted.Broadcast()
}

// Quiet sets the options that keep an idle database from waking its
// process: a Scheduler of its own, and, where no file system is given,
// the plain one. (Pebble otherwise wraps the operating system's in its
// disk-health checks, whose tickers wake the process every 2 s for the
// database's whole life to look for a write that takes over 5 s; they
// report one only to an EventListener.DiskSlow, and Fincrypt sets none.)
func Quiet(po *pebble.Options) {
	po.Experimental.CompactionScheduler = New()
	if po.FS == nil {
		po.FS = vfs.Default
	}
}

// Polling returns the stack of a goroutine in this process that wakes an
// idle Pebble database (the polling compaction scheduler's, or a
// disk-health check's ticker), or "" when none runs: how a package's test
// shows that its databases are opened with Quiet.
func Polling() string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "periodicGranter") || strings.Contains(g, "vfs.(*diskHealthChecking") {
			return g
		}
	}
	return ""
}
