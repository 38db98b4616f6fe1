package storagenode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/fincrypt/fincrypt/challenge"
	"github.com/fincrypt/fincrypt/internal/units"
	fnet "github.com/fincrypt/fincrypt/net"
)

// Scrubbing defaults.
const (
	// DefaultScrubRate is the bytes per second the scrubber reads: a 2 TB
	// disk is re-read in about a day and a half, and a disk is never busy
	// with it for more than a small share of its bandwidth.
	DefaultScrubRate = 16 << 20
	// DefaultScrubInterval is the least time between the starts of two
	// passes.
	DefaultScrubInterval = 24 * time.Hour
	// scrubBurst is the most bytes read at once (and so the limiter's burst).
	scrubBurst = 256 << 10
	// scrubBatch is the number of index entries listed at once.
	scrubBatch = 256
	// scrubRetry is the pause after a pass failed for a reason other than
	// damage (the index could not be read or written).
	scrubRetry = time.Minute
)

// limiter grants n bytes of reading, blocking until the rate allows it.
// n is never more than the limiter's burst.
type limiter interface {
	WaitN(ctx context.Context, n int) error
}

// caller sends a request to the mediator (Contact).
type caller interface {
	Call(ctx context.Context, req fnet.Message) (fnet.Message, error)
}

// Scrubber finds damage on the node's own disk before a challenge does: it
// re-reads every piece file at a bounded rate and checks it as start-up
// reconciliation does (header and its CRC, file size, the Merkle root of
// the bytes against the piece id, every stored tree node). A damaged piece
// is moved to quarantine/, dropped from the index and the capacity, and
// reported to the mediator (DamageReport), which marks it lost so that
// repair rebuilds it elsewhere. Damage not yet reported is kept in the
// index and reported again, with backoff, until the mediator acknowledges
// it.
//
// A pass checks every piece in id order; the next pass starts no sooner
// than the interval after the previous one started. The cursor (pass start,
// last piece checked) is in the index, so a restarted node resumes its pass.
type Scrubber struct {
	log      *slog.Logger
	store    *DiskStore
	mediator caller
	limit    limiter // nil: scrubbing disabled
	burst    int
	interval time.Duration
	retryMin time.Duration
	retryMax time.Duration
	now      func() time.Time
	wake     chan struct{}

	// afterPiece, if set, is called after each piece's cursor is saved
	// (tests stop a pass half-way with it).
	afterPiece func(challenge.PieceID)

	stats *nodeStats // pieces checked (metrics.go); nil: not counted
}

// ScrubResult summarises one pass (or the part of it run now).
type ScrubResult struct {
	Start   time.Time // when the pass started (maybe before a restart)
	Checked int       // pieces checked
	Damaged int       // pieces found damaged and dropped
	Bytes   int64     // bytes read
}

// newScrubber builds a scrubber reading rate bytes per second (<= 0:
// disabled; the reporter still reports damage found earlier).
func newScrubber(log *slog.Logger, store *DiskStore, mediator caller, rate int64, interval, retryMin, retryMax time.Duration) *Scrubber {
	s := &Scrubber{log: log, store: store, mediator: mediator, interval: interval,
		retryMin: retryMin, retryMax: retryMax, now: time.Now, wake: make(chan struct{}, 1)}
	if rate > 0 {
		s.burst = int(min(rate, scrubBurst))
		s.limit = newTokenBucket(float64(rate), s.burst)
	}
	return s
}

// Run scrubs pass after pass and reports damage until ctx is done. A pass
// that fails for a reason other than damage (the index) is retried after
// a minute; Run itself never fails.
func (s *Scrubber) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.reportLoop(ctx)
	}()
	if s.limit == nil {
		s.log.Info("scrubbing disabled")
		<-ctx.Done()
		return nil
	}
	for {
		cur, err := s.store.loadScrubCursor()
		if err != nil {
			s.log.Error("scrub cursor unreadable, retrying", "in", scrubRetry, "err", err)
			if sleepCtx(ctx, scrubRetry) != nil {
				return nil
			}
			continue
		}
		if cur.Done {
			next := cur.Start.Add(s.interval)
			if wait := next.Sub(s.now()); wait > 0 && sleepCtx(ctx, wait) != nil {
				return nil
			}
		}
		res, err := s.Pass(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			s.log.Error("scrub pass failed, retrying", "in", scrubRetry, "err", err)
			if sleepCtx(ctx, scrubRetry) != nil {
				return nil
			}
			continue
		}
		level := slog.LevelInfo
		if res.Damaged > 0 {
			level = slog.LevelWarn
		}
		s.log.Log(ctx, level, "scrub pass done", "started", res.Start, "checked", res.Checked,
			"damaged", res.Damaged, "bytes", res.Bytes, "next", res.Start.Add(s.interval))
	}
}

// Pass runs the current pass to its end, starting a new one if the last
// one ended (whatever the interval: Run keeps the schedule). It returns
// early with ctx's error; the cursor keeps the progress.
func (s *Scrubber) Pass(ctx context.Context) (ScrubResult, error) {
	if s.limit == nil {
		return ScrubResult{}, errors.New("scrubbing is disabled")
	}
	cur, err := s.store.loadScrubCursor()
	if err != nil {
		return ScrubResult{}, err
	}
	if cur.Done || cur.Start.IsZero() {
		cur = scrubCursor{Start: s.now()}
		if err := s.store.saveScrubCursor(cur, true); err != nil {
			return ScrubResult{}, err
		}
	} else {
		s.log.Info("resuming the scrub pass", "started", cur.Start, "after", cur.Last)
	}
	res := ScrubResult{Start: cur.Start}
	for {
		var after *challenge.PieceID
		if cur.HasLast {
			after = &cur.Last
		}
		batch, err := s.store.List(after, scrubBatch)
		if err != nil {
			return res, fmt.Errorf("scrub: list pieces: %w", err)
		}
		if len(batch) == 0 {
			break
		}
		for _, p := range batch {
			if err := ctx.Err(); err != nil {
				return res, err
			}
			n, damaged, err := s.check(ctx, p)
			res.Bytes += n
			if err != nil {
				if ctx.Err() != nil {
					return res, ctx.Err() // this piece is checked again on resume
				}
				// Not damage (e.g. too many open files): the next pass
				// checks it again.
				s.log.Warn("could not scrub a piece", "piece", p.ID, "err", err)
			}
			res.Checked++
			if damaged {
				res.Damaged++
			}
			s.stats.scrubbedPiece(n, damaged)
			cur.Last, cur.HasLast = p.ID, true
			if err := s.store.saveScrubCursor(cur, false); err != nil {
				return res, err
			}
			if s.afterPiece != nil {
				s.afterPiece(p.ID)
			}
		}
	}
	cur.Done = true
	return res, s.store.saveScrubCursor(cur, true)
}

// check reads one piece at the limited rate; a damaged one is dropped and
// queued for the mediator. It returns the bytes read.
func (s *Scrubber) check(ctx context.Context, p PieceInfo) (int64, bool, error) {
	rr := &rateReader{ctx: ctx, limit: s.limit, burst: s.burst}
	info, err := checkPieceFile(s.store.fs, s.store.piecePath(p.ID), p.ID, func(r io.Reader, size int64) io.Reader {
		rr.r, rr.left = r, size
		return rr
	})
	if ctx.Err() != nil {
		return rr.read, false, ctx.Err()
	}
	switch {
	case err == nil && info.Size != p.Size:
		err = fmt.Errorf("%w: header says %d bytes, index %d", ErrCorrupt, info.Size, p.Size)
	case errors.Is(err, os.ErrNotExist):
		err = fmt.Errorf("%w: file missing", ErrCorrupt)
	case err != nil && !errors.Is(err, ErrCorrupt):
		return rr.read, false, err
	}
	if err == nil {
		return rr.read, false, nil
	}
	dropped, derr := s.store.dropDamaged(p, err)
	if derr != nil {
		return rr.read, false, fmt.Errorf("drop damaged piece: %w", derr)
	}
	if !dropped {
		return rr.read, false, nil // deleted meanwhile
	}
	s.log.Warn("scrub found a damaged piece: quarantined, dropped, to be reported", "piece", p.ID, "size", p.Size, "err", err)
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return rr.read, true, nil
}

// reportLoop reports damage whenever the scrubber finds some, and retries
// with exponential backoff while the mediator is unreachable.
func (s *Scrubber) reportLoop(ctx context.Context) {
	backoff := s.retryMin
	for {
		n, err := s.Report(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.log.Warn("damage not reported yet, retrying", "in", backoff, "err", err)
			if sleepCtx(ctx, backoff) != nil {
				return
			}
			backoff = min(2*backoff, s.retryMax)
			continue
		}
		backoff = s.retryMin
		if n > 0 {
			s.log.Info("reported damaged pieces to the mediator", "pieces", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		}
	}
}

// Report sends every unreported damage to the mediator, in messages of up
// to fnet.MaxDamagePieces, and forgets what the mediator acknowledged. It
// returns the pieces reported.
func (s *Scrubber) Report(ctx context.Context) (int, error) {
	sent := 0
	for {
		ds, err := s.store.Damaged(fnet.MaxDamagePieces)
		if err != nil || len(ds) == 0 {
			return sent, err
		}
		req := &fnet.DamageReport{Pieces: make([]challenge.PieceID, len(ds))}
		for i, d := range ds {
			req.Pieces[i] = d.ID
		}
		m, err := s.mediator.Call(ctx, req)
		if err != nil {
			return sent, fmt.Errorf("damage report: %w", err)
		}
		rep, ok := m.(*fnet.DamageReply)
		if !ok {
			return sent, fmt.Errorf("damage report: %w: answered with %s", fnet.ErrMalformed, fnet.TypeName(m.Type()))
		}
		if rep.Ignored > 0 {
			s.log.Info("the mediator had no contract for some damaged pieces", "accepted", rep.Accepted, "ignored", rep.Ignored)
		}
		if err := s.store.clearDamaged(req.Pieces); err != nil {
			return sent, err
		}
		sent += len(ds)
	}
}

// rateReader takes tokens from limit for every byte before reading it, and
// never asks the file for more than is left of it.
type rateReader struct {
	ctx   context.Context
	limit limiter
	burst int
	r     io.Reader
	left  int64 // bytes of the file not yet read
	read  int64
}

func (r *rateReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), int64(r.burst), r.left))
	if n == 0 {
		return 0, nil
	}
	if err := r.limit.WaitN(r.ctx, n); err != nil {
		return 0, err
	}
	m, err := r.r.Read(p[:n])
	r.left -= int64(m)
	r.read += int64(m)
	return m, err
}

// tokenBucket is a limiter of rate tokens per second holding at most burst.
// WaitN takes the tokens at once (going into debt) and sleeps off the debt,
// so that concurrent callers queue fairly.
type tokenBucket struct {
	rate  float64
	burst float64
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error

	mu     sync.Mutex
	tokens float64
	last   time.Time
}

func newTokenBucket(rate float64, burst int) *tokenBucket {
	return &tokenBucket{rate: rate, burst: float64(burst), tokens: float64(burst), now: time.Now, sleep: sleepCtx}
}

func (b *tokenBucket) WaitN(ctx context.Context, n int) error {
	if float64(n) > b.burst {
		return fmt.Errorf("scrub limiter: %d bytes at once exceed the burst of %.0f", n, b.burst)
	}
	b.mu.Lock()
	now := b.now()
	if !b.last.IsZero() {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	b.tokens -= float64(n)
	var wait time.Duration
	if b.tokens < 0 {
		wait = time.Duration(-b.tokens / b.rate * float64(time.Second))
	}
	b.mu.Unlock()
	if wait == 0 {
		return ctx.Err()
	}
	return b.sleep(ctx, wait)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// ParseScrubRate parses a scrub rate as written on the command line: a
// size per second ("16MiB/s"; "/s" may be left out) in any form
// units.ParseSize takes. "0" disables scrubbing and returns -1, which
// Config.ScrubRate reads as disabled.
func ParseScrubRate(s string) (int64, error) {
	t := strings.TrimSpace(s)
	if i := strings.LastIndex(t, "/"); i >= 0 {
		if per := strings.ToLower(strings.TrimSpace(t[i+1:])); per != "s" && per != "sec" {
			return 0, fmt.Errorf("scrub rate %q: want a size per second, e.g. 16MiB/s", s)
		}
		t = t[:i]
	}
	n, err := units.ParseSize(t)
	if err != nil {
		return 0, fmt.Errorf("scrub rate %q: %w", s, err)
	}
	if n > 1<<40 {
		return 0, fmt.Errorf("scrub rate %q: more than 1TiB/s", s)
	}
	if n == 0 {
		return -1, nil
	}
	return int64(n), nil
}
