package replicate

import (
	"sync/atomic"
	"time"
)

// stageTimes sums the time the engine spends in each stage of moving a
// segment, over all segments and slots (so with Parallel slots the sum may
// exceed the wall-clock time). BenchmarkDurable and BenchmarkRestore report
// them per GB, to say where the time of an upload or a restore goes.
type stageTimes struct {
	// Upload: reading the planned chunks from the local store into the
	// segment (pack); padding and erasure coding (encode); the pieces'
	// Merkle roots (hash); the mediator's placement and the upload intent
	// (place); the pieces to every node until each signed receipt (send);
	// the mediator's commit and the index batch recording the segment
	// (commit).
	pack, encode, hash, place, send, commit atomic.Int64
	// Fetch: the segment's record from the mediator and its pieces from
	// the nodes, checked against their ids as they arrive (pieces);
	// rebuilding missing data pieces (decode).
	pieces, decode atomic.Int64
	// pieceGets counts the piece downloads fetches started (K a segment
	// when no node is slow or lying; more when hedged or backed up).
	pieceGets atomic.Int64
}

// since adds the time since t0 to c and returns now, the next stage's t0.
func since(c *atomic.Int64, t0 time.Time) time.Time {
	now := time.Now()
	if c != nil {
		c.Add(int64(now.Sub(t0)))
	}
	return now
}

// stage is one counter and its name, for reports.
type stage struct {
	name string
	d    time.Duration
}

// uploadStages lists the upload stages in order.
func (s *stageTimes) uploadStages() []stage {
	return []stage{{"pack", dur(&s.pack)}, {"encode", dur(&s.encode)}, {"hash", dur(&s.hash)},
		{"place", dur(&s.place)}, {"send", dur(&s.send)}, {"commit", dur(&s.commit)}}
}

// fetchStages lists the fetch stages in order.
func (s *stageTimes) fetchStages() []stage {
	return []stage{{"pieces", dur(&s.pieces)}, {"decode", dur(&s.decode)}}
}

func dur(c *atomic.Int64) time.Duration { return time.Duration(c.Load()) }
