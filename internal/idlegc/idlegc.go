// Package idlegc keeps the Go runtime's periodic collection from waking an
// idle daemon.
//
// The runtime forces a garbage collection whenever two minutes pass without
// one, whether or not anything was allocated. In an idle mount that is most
// of the work left (the kernel's inodes, which go-fuse keeps in the heap,
// make the live heap grow with the vault): at 100,000 files each forced
// collection marked about 50 MB for 0.2-0.3 s of CPU, every two minutes,
// with nothing to free. The runtime skips its periodic collection while the
// collector is off (GOGC=off) and still collects at a memory limit. So a
// Keeper looks at the allocation counter now and then; once a few looks in
// a row found (almost) nothing allocated, it collects once, turns the
// collector off and sets a memory limit where the next collection would
// have come anyway (what is in use now plus the live heap: GOGC=100's
// goal). The first look that finds allocation again, or that finds a
// collection ran (the limit was reached), puts both settings back.
//
// What it costs: one read of runtime/metrics a look (a few microseconds,
// every Every), and, after activity, one collection when the quiet begins.
// While the collector is off, memory stays within the limit: a burst that
// comes between two looks is collected at the limit, as it would have been
// at GOGC=100's goal, and the next look (a collection ran) turns the
// collector back on, so a heap that outgrows the limit is collected at the
// limit for one look at most.
package idlegc

import (
	"math"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"time"
)

// Config says how a Keeper looks. The zero value gives the defaults.
type Config struct {
	// Every is how often the Keeper looks at the allocation counter
	// (default 10 s).
	Every time.Duration
	// Quiet is how many looks in a row must find less than Bytes allocated
	// before the collector is turned off (default 3: 30 s of quiet).
	Quiet int
	// Bytes is the allocation between two looks that still counts as idle
	// (default 1 MiB): timers and tickers of an idle process allocate a
	// little.
	Bytes uint64
	// Changed, if set, is called when the collector goes off (paused, with
	// the memory limit set) and back on, from the Keeper's goroutine.
	Changed func(paused bool, limit int64)
}

func (c Config) withDefaults() Config {
	if c.Every <= 0 {
		c.Every = 10 * time.Second
	}
	if c.Quiet <= 0 {
		c.Quiet = 3
	}
	if c.Bytes == 0 {
		c.Bytes = 1 << 20
	}
	return c
}

// minHeadroom is the least the limit leaves above what is in use when the
// collector is turned off: the runtime's own smallest heap goal.
const minHeadroom = 4 << 20

// sample is what one look reads.
type sample struct {
	allocs uint64 // bytes allocated since the process started
	cycles uint64 // collections completed
	used   uint64 // memory the runtime holds from the OS (what a limit counts)
	live   uint64 // heap marked live by the last collection
}

// runtimeIface is the runtime as the Keeper uses it; tests give a fake.
type runtimeIface interface {
	read() sample
	collect()
	setGCPercent(int) int
	setMemoryLimit(int64) int64
}

// Keeper turns the collector off while the process is idle.
type Keeper struct {
	cfg Config
	rt  runtimeIface

	quiet    int    // looks in a row that found the process idle
	last     sample // the previous look
	paused   bool
	oldGC    int   // the collector's setting before the pause
	oldLimit int64 // the memory limit before the pause
	pauseGCs uint64
	pauses   int  // times the collector was turned off
	gcOff    bool // the process runs with GOGC=off: never pause

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// Start starts a Keeper for this process. Stop puts the collector back as
// it found it. A process that runs with GOGC=off is left alone.
func Start(cfg Config) *Keeper {
	k := newKeeper(cfg, newGoRuntime())
	go k.run()
	return k
}

func newKeeper(cfg Config, rt runtimeIface) *Keeper {
	k := &Keeper{cfg: cfg.withDefaults(), rt: rt, stop: make(chan struct{}), done: make(chan struct{})}
	k.last = rt.read()
	return k
}

func (k *Keeper) run() {
	defer close(k.done)
	t := time.NewTicker(k.cfg.Every)
	defer t.Stop()
	for {
		select {
		case <-k.stop:
			k.resume()
			return
		case <-t.C:
			k.look()
		}
	}
}

// Stop ends the Keeper and puts the collector's settings back.
func (k *Keeper) Stop() {
	k.once.Do(func() { close(k.stop) })
	<-k.done
}

// look is one look at the counters: it pauses the collector after Quiet
// idle looks, and resumes it on allocation or on a collection at the limit.
func (k *Keeper) look() {
	s := k.rt.read()
	allocated := s.allocs - k.last.allocs
	k.last = s
	if k.paused {
		if allocated >= k.cfg.Bytes || s.cycles != k.pauseGCs {
			k.resume()
		}
		return
	}
	if allocated >= k.cfg.Bytes {
		k.quiet = 0
		return
	}
	k.quiet++
	if k.quiet >= k.cfg.Quiet && !k.gcOff {
		k.pause()
	}
}

// pause collects once and turns the collector off, under a memory limit
// at the next collection's goal.
func (k *Keeper) pause() {
	k.rt.collect()
	s := k.rt.read()
	limit := s.used + max(s.live, minHeadroom)
	oldLimit := k.rt.setMemoryLimit(-1)
	if limit > math.MaxInt64 || int64(limit) > oldLimit {
		limit = uint64(oldLimit) // a lower limit the user set stays
	}
	// The limit first: the collector is never off without it.
	k.rt.setMemoryLimit(int64(limit))
	old := k.rt.setGCPercent(-1)
	if old < 0 { // the process runs without a collector: leave it so
		k.rt.setGCPercent(old)
		k.rt.setMemoryLimit(oldLimit)
		k.gcOff = true
		return
	}
	k.oldGC, k.oldLimit = old, oldLimit
	k.last, k.pauseGCs = s, s.cycles
	k.paused = true
	if k.cfg.Changed != nil {
		k.cfg.Changed(true, int64(limit))
	}
}

// resume puts back the settings pause found.
func (k *Keeper) resume() {
	if !k.paused {
		return
	}
	k.rt.setGCPercent(k.oldGC)
	k.rt.setMemoryLimit(k.oldLimit)
	k.paused, k.quiet = false, 0
	if k.cfg.Changed != nil {
		k.cfg.Changed(false, k.oldLimit)
	}
}

// goRuntime is the real runtime. Only the Keeper's goroutine uses it.
type goRuntime struct{ m []metrics.Sample }

func newGoRuntime() *goRuntime {
	names := []string{
		"/gc/heap/allocs:bytes",
		"/gc/cycles/total:gc-cycles",
		"/memory/classes/total:bytes",
		"/memory/classes/heap/released:bytes",
		"/gc/heap/live:bytes",
	}
	g := &goRuntime{m: make([]metrics.Sample, len(names))}
	for i, n := range names {
		g.m[i].Name = n
	}
	return g
}

func (g *goRuntime) read() sample {
	m := g.m
	metrics.Read(m)
	u := func(i int) uint64 {
		if m[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return m[i].Value.Uint64()
	}
	return sample{allocs: u(0), cycles: u(1), used: u(2) - min(u(3), u(2)), live: u(4)}
}

func (*goRuntime) collect()                     { runtime.GC() }
func (*goRuntime) setGCPercent(p int) int       { return debug.SetGCPercent(p) }
func (*goRuntime) setMemoryLimit(l int64) int64 { return debug.SetMemoryLimit(l) }
