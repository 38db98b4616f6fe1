// Package fault contains the failures of a mount's background work. Work
// such as uploading a segment, fetching an evicted chunk, trimming the cache
// or storing a snapshot runs in units; Board.Run runs one unit so that a
// panic in it fails that unit only (logged with its stack) instead of
// taking the process, and with it the mount, down. The board keeps, per kind
// of work, what is failing, since when and why, until the next success, so
// that `fincrypt status` can show it.
package fault

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sort"
	"sync"
	"time"
)

// ErrPanic marks the error of a unit of work that panicked.
var ErrPanic = errors.New("internal error (panic)")

// Fault is one kind of work that has been failing since Since. Status
// output (`fincrypt status --json`, "faults") relies on these fields.
type Fault struct {
	Work     string    `json:"work"`     // e.g. "upload", "fetch", "evict", "snapshot"
	Since    time.Time `json:"since"`    // first failure since the last success
	Last     time.Time `json:"last"`     // latest failure
	Failures int       `json:"failures"` // failures since the last success
	Panics   int       `json:"panics"`   // of which panics
	Err      string    `json:"error"`    // the latest failure
}

// Board records faults by kind of work. The zero value is not usable; a
// nil *Board records nothing but still contains panics.
type Board struct {
	log *slog.Logger
	mu  sync.Mutex
	m   map[string]*Fault
	// hook, if set, runs at the start of every unit (tests inject faults).
	hook func(work string)
	// fatal, if set, is called for a panic that must not be contained.
	fatal func(work string, v any, stack []byte)
}

// SetFatal sets what to do with a panic raised inside the index's database
// (Pebble): it may hold the database's own locks, so that containing it
// would leave every later access to the index hanging. The file system
// stops the process for such a panic, as for a panic in a FUSE handler.
// Without a fatal handler every panic is contained.
func (b *Board) SetFatal(fn func(work string, v any, stack []byte)) {
	b.mu.Lock()
	b.fatal = fn
	b.mu.Unlock()
}

// unsafeToContain reports whether a panic's stack runs through code whose
// locks a recover would leave held.
func unsafeToContain(stack []byte) bool {
	return bytes.Contains(stack, []byte("github.com/cockroachdb/pebble"))
}

// New returns an empty board that logs to log (nil: discard).
func New(log *slog.Logger) *Board {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Board{log: log, m: map[string]*Fault{}}
}

// SetHook makes fn run at the start of every unit of work, inside its
// protection: a test makes it panic or sleep to inject a fault.
func (b *Board) SetHook(fn func(work string)) {
	b.mu.Lock()
	b.hook = fn
	b.mu.Unlock()
}

// Hook runs the test hook (SetHook) for work, if any. Run calls it; work
// protected by Protect alone calls it inside fn.
func (b *Board) Hook(work string) {
	if b == nil {
		return
	}
	b.mu.Lock()
	hook := b.hook
	b.mu.Unlock()
	if hook != nil {
		hook(work)
	}
}

// Run runs fn as one unit of work. A panic in fn is recovered, logged with
// its stack and returned as an error wrapping ErrPanic; the unit's error,
// if any, is recorded as a fault of work, and a success clears that fault.
func (b *Board) Run(work string, fn func() error) (err error) {
	err = b.Protect(work, func() error {
		b.Hook(work)
		return fn()
	})
	if err != nil {
		b.Fail(work, err)
	} else {
		b.OK(work)
	}
	return err
}

// Protect runs fn, turning a panic into an error wrapping ErrPanic, logged
// with its stack, unless the board's fatal handler (SetFatal) takes a panic
// that cannot be contained. It records nothing.
func (b *Board) Protect(work string, fn func() error) (err error) {
	var fatal func(string, any, []byte)
	if b != nil {
		b.mu.Lock()
		fatal = b.fatal
		b.mu.Unlock()
	}
	return protect(b.logger(), work, fatal, fn)
}

// Protect is Board.Protect without a board, for goroutines that never touch
// the index (a nil log logs to slog's default).
func Protect(log *slog.Logger, work string, fn func() error) error {
	return protect(log, work, nil, fn)
}

func protect(log *slog.Logger, work string, fatal func(string, any, []byte), fn func() error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			buf := make([]byte, 64<<10)
			buf = buf[:runtime.Stack(buf, false)]
			if fatal != nil && unsafeToContain(buf) {
				fatal(work, v, buf)
			}
			if log == nil {
				log = slog.Default()
			}
			log.Error("background work failed with an internal error; it is retried, the mount keeps serving",
				"work", work, "panic", fmt.Sprint(v), "stack", string(buf))
			err = fmt.Errorf("%s: %w: %v", work, ErrPanic, v)
		}
	}()
	return fn()
}

func (b *Board) logger() *slog.Logger {
	if b == nil {
		return slog.Default()
	}
	return b.log
}

// Fail records a failure of work.
func (b *Board) Fail(work string, err error) {
	if b == nil || err == nil {
		return
	}
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	f := b.m[work]
	if f == nil {
		f = &Fault{Work: work, Since: now}
		b.m[work] = f
	}
	f.Last = now
	f.Failures++
	if errors.Is(err, ErrPanic) {
		f.Panics++
	}
	f.Err = err.Error()
}

// OK records a success of work, which clears its fault.
func (b *Board) OK(work string) {
	if b == nil {
		return
	}
	b.mu.Lock()
	if f := b.m[work]; f != nil {
		b.log.Info("background work recovered", "work", work, "failures", f.Failures, "since", f.Since)
		delete(b.m, work)
	}
	b.mu.Unlock()
}

// List returns the current faults, oldest first.
func (b *Board) List() []Fault {
	out := []Fault{}
	if b == nil {
		return out
	}
	b.mu.Lock()
	for _, f := range b.m {
		out = append(out, *f)
	}
	b.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Since.Equal(out[j].Since) {
			return out[i].Since.Before(out[j].Since)
		}
		return out[i].Work < out[j].Work
	})
	return out
}
