// Package replicate is the client's replication engine: it makes the data of
// a mounted vault durable on the network and serves it back.
//
// Write path: chunks the file system committed to the index but that no
// segment holds yet are "pending". The engine finds them in the index's
// pending feed (so the queue survives kill -9 with no record of its own),
// every ScanInterval and as soon as a segment's worth is written, packs
// their sealed bytes into segments padded with random bytes to a size class,
// erasure-codes each segment (K data + N-K parity pieces), asks the mediator
// where to put the pieces, uploads them in parallel over QUIC and commits.
// One index batch then records the segment (pieces, nodes, state) and, for
// every chunk in it, a location (segment, offset, length). Writes never wait
// for any of this; with the network down the engine retries with backoff.
//
// Read path: the local chunk store becomes a cache. A chunk whose segment is
// durable may be evicted; reading it fetches any K pieces (verified against
// their piece ids, slow or failing nodes skipped), decodes and caches it.
//
// Also here: health checks (durable/degraded), release of dead segments
// after a safety delay and repacking of mostly-dead ones, index snapshots
// with a signed pointer at the mediator, Restore, and the status socket.
package replicate

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/fincrypt/fincrypt/chunkstore"
	"github.com/fincrypt/fincrypt/erasure"
	"github.com/fincrypt/fincrypt/internal/fault"
)

// DefaultScheme suits a five-node network: any 2 of 4 pieces rebuild a
// segment (expansion 2), and a fifth node is left for repair.
var DefaultScheme = erasure.Scheme{K: 2, N: 4}

// Config tunes a Replicator; zero fields take the defaults.
type Config struct {
	// Scheme is the erasure coding (default DefaultScheme); N/K must be >= 2.
	Scheme erasure.Scheme
	// CacheSize bounds the local store once chunks are durable; 0: no limit.
	CacheSize uint64
	// ScanInterval is how often the index is scanned for pending chunks
	// (default 2s); a full segment's worth written wakes the engine at
	// once (meta.Index.OnPending).
	ScanInterval time.Duration
	// FlushAfter is how long a chunk may wait for others to fill its segment
	// before a partly filled segment is uploaded (default 10s).
	FlushAfter time.Duration
	// Parallel is how many segments upload at once (default 2).
	Parallel int
	// RetryMin and RetryMax bound the exponential backoff while the network
	// fails (defaults 1s and 2m).
	RetryMin, RetryMax time.Duration
	// CheckInterval is how often segments' health is asked from the mediator
	// (default 10m).
	CheckInterval time.Duration
	// MaintainInterval is how often dead data is released, segments repacked
	// and the cache trimmed (default 1m).
	MaintainInterval time.Duration
	// CountInterval is how often, at most, the local store is listed to
	// count its bytes (status's cache_bytes) when there is no CacheSize:
	// the listing costs a stat of every chunk, so it does not follow each
	// upload or write (default 10m).
	CountInterval time.Duration
	// SnapshotInterval bounds how long a change may go without being in a
	// stored index snapshot while writes go on (default 10m): a snapshot is
	// taken once the oldest unprotected change is half this old.
	SnapshotInterval time.Duration
	// SnapshotDelay is how long the index must be quiet (no write, no
	// upload) before a snapshot is taken of what changed (default 30s).
	SnapshotDelay time.Duration
	// SyncTimeout bounds Finish: the uploads and the final snapshot of an
	// unmount (default 3m).
	SyncTimeout time.Duration
	// ReleaseDelay is how long a segment holding no live chunk is kept before
	// it is released (default 24h), so that an older snapshot stays readable.
	ReleaseDelay time.Duration
	// RepackBelow: a durable segment whose live bytes fall below this share
	// of its content is repacked (default 0.25).
	RepackBelow float64
	// CallTimeout bounds one request to the mediator (default 20s).
	CallTimeout time.Duration
	// PieceTimeout bounds one piece download or upload, plus one second per
	// MiB for uploads (default 30s); HedgeAfter starts
	// another node's piece when one is this slow (default 2s), and twice
	// as slow as piece downloads typically are at the time (at most 4x
	// HedgeAfter): on a loaded machine or link, where every piece is slow,
	// a backup only adds its bytes to the load.
	PieceTimeout, HedgeAfter time.Duration
	// Logger receives the engine's messages; nil discards them.
	Logger *slog.Logger
	// Faults records the background work that fails (shown by Status);
	// nil: a board of the engine's own. The mount shares one with the
	// file system (fs.Options.Faults).
	Faults *fault.Board
	// noWake leaves out the wake of a segment's worth written
	// (meta.Index.OnPending): for tests that drive the engine's rounds by
	// hand, with ScanInterval out of the way, as the scan is.
	noWake bool
}

// ErrConfig wraps invalid settings.
var ErrConfig = errors.New("invalid replication settings")

func (c *Config) setDefaults() {
	if c.Scheme == (erasure.Scheme{}) {
		c.Scheme = DefaultScheme
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.ScanInterval, 2*time.Second)
	def(&c.FlushAfter, 10*time.Second)
	def(&c.RetryMin, time.Second)
	def(&c.RetryMax, 2*time.Minute)
	def(&c.CheckInterval, 10*time.Minute)
	def(&c.MaintainInterval, time.Minute)
	def(&c.CountInterval, 10*time.Minute)
	def(&c.SnapshotInterval, 10*time.Minute)
	def(&c.SnapshotDelay, 30*time.Second)
	def(&c.SyncTimeout, 3*time.Minute)
	def(&c.ReleaseDelay, 24*time.Hour)
	def(&c.PieceTimeout, 30*time.Second)
	def(&c.CallTimeout, 20*time.Second)
	def(&c.HedgeAfter, 2*time.Second)
	if c.Parallel <= 0 {
		c.Parallel = 2
	}
	if c.RepackBelow <= 0 {
		c.RepackBelow = 0.25
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Faults == nil {
		c.Faults = fault.New(c.Logger)
	}
}

// Validate checks the settings (after defaults).
func (c *Config) Validate() error {
	if err := c.Scheme.CheckExpansion(); err != nil {
		return fmt.Errorf("%w: %v", ErrConfig, err)
	}
	if c.RepackBelow >= 1 {
		return fmt.Errorf("%w: repack threshold %.2f must be below 1", ErrConfig, c.RepackBelow)
	}
	if c.RetryMax < c.RetryMin {
		return fmt.Errorf("%w: retry max %s below min %s", ErrConfig, c.RetryMax, c.RetryMin)
	}
	return nil
}

// streamHead is how much of a sequential run through a file the local
// store keeps at once when it fetches it (at most an eighth of the cache):
// files up to this size are kept whole on their first read, a larger one's
// start is at hand when it is opened again.
const streamHead = 16 << 20

// unlimitedWindow is the admission window without a cache limit (the ids
// remembered are bounded besides, chunkstore.maxPassed).
const unlimitedWindow = 1 << 40

// admission is the local store's rule for keeping chunks fetched from the
// network, for a cache of limit bytes (0: no limit): a streaming reader's
// chunks past the head are kept on their second read within the last
// limit bytes streamed, so that a file streamed once, or one larger than
// the cache however often, does not push the rest of the cache out.
func admission(limit uint64) chunkstore.Admission {
	if limit == 0 {
		return chunkstore.Admission{Head: streamHead, Window: unlimitedWindow}
	}
	return chunkstore.Admission{Head: min(streamHead, limit/8), Window: limit}
}

// Size classes: every segment is padded to one of these sizes, so a node
// learns only which class a segment fell in. Each is a power of four times
// 64 KiB plus 1/16 headroom, so that a sealed chunk of a power-of-two size
// (plus 28 bytes of sealing) fits the class of its size. The largest,
// which full segments fill, has 16 KiB of headroom instead, room for the
// sealing of 512 chunks: sixteen sealed 1 MiB chunks fill it but for
// 15,936 bytes of padding (with 1/16 they left a whole MiB of it, 6% of
// every full segment's bytes coded, hashed, sent and stored for nothing).
var SizeClasses = []int{
	64 << 10 * 17 / 16,
	256 << 10 * 17 / 16,
	1 << 20 * 17 / 16,
	4 << 20 * 17 / 16,
	16<<20 + 16<<10,
}

// MaxSegment is the largest segment content.
var MaxSegment = SizeClasses[len(SizeClasses)-1]

// classFor returns the smallest size class that holds n bytes, or 0.
func classFor(n int) int {
	for _, c := range SizeClasses {
		if n <= c {
			return c
		}
	}
	return 0
}
