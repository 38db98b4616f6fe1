package replicate

import (
	"errors"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/chunkstore"
	"github.com/fincrypt/fincrypt/internal/readwin"
	"github.com/fincrypt/fincrypt/meta"
	fnet "github.com/fincrypt/fincrypt/net"
	"github.com/fincrypt/fincrypt/vault"
)

// TestCheckHealthRecordsTheMediatorsAnswer: a health check records what
// the mediator says of each segment: durable only with all N pieces
// healthy, degraded below; a record changes (and its check time with it)
// only when the health or the state does. A segment the mediator does not
// know is never durable again (degraded, none healthy: its local chunks are
// then kept) and noted as an error; one already at none healthy is left as
// it is. An index without segments asks nothing; a refused call is the
// network's error and changes nothing; an engine that is stopping reports
// no error.
func TestCheckHealthRecordsTheMediatorsAnswer(t *testing.T) {
	e, f := peerEngine(t, 4, nil)
	r := e.r
	if err := r.checkHealth(); err != nil {
		t.Fatalf("a check of no segments: %v", err)
	}
	if n := f.healthAsked(); n != 0 {
		t.Fatalf("%d health requests for an index without segments", n)
	}
	const checked = 12345
	D, G := meta.SegmentDurable, meta.SegmentDegraded
	cases := []struct {
		id          byte
		state       meta.SegmentState
		healthy     uint8
		answer      fnet.SegmentHealth
		wantState   meta.SegmentState
		wantHealthy uint8
		rewritten   bool
	}{
		{1, D, 4, fnet.SegmentHealth{Known: true, Healthy: 4, N: 4}, D, 4, false},
		{2, D, 4, fnet.SegmentHealth{Known: true, Healthy: 3, N: 4}, G, 3, true},
		{3, G, 3, fnet.SegmentHealth{Known: true, Healthy: 4, N: 4}, D, 4, true}, // exactly N: durable
		{4, G, 2, fnet.SegmentHealth{Known: true, Healthy: 2, N: 4}, G, 2, false},
		{5, D, 3, fnet.SegmentHealth{Known: true, Healthy: 3, N: 4}, G, 3, true}, // same count, other state
		{6, D, 4, fnet.SegmentHealth{}, G, 0, true},                              // unknown
		{7, G, 2, fnet.SegmentHealth{}, G, 0, true},
		{8, G, 0, fnet.SegmentHealth{}, G, 0, false},
	}
	commit(t, r.idx, func(b *meta.Batch) {
		for _, c := range cases {
			b.PutSegment(&meta.Segment{ID: meta.SegmentID{c.id}, Kind: meta.KindData, State: c.state, K: 2, N: 4,
				Healthy: c.healthy, Class: 4096, Used: 1000, Checked: checked})
		}
	})
	for _, c := range cases {
		f.setHealth(fnet.SegmentID{c.id}, c.answer)
	}
	before := time.Now()
	if err := r.checkHealth(); err != nil {
		t.Fatalf("check: %v", err)
	}
	for _, c := range cases {
		s, err := r.idx.GetSegment(meta.SegmentID{c.id})
		if err != nil {
			t.Fatal(err)
		}
		if s.State != c.wantState || s.Healthy != c.wantHealthy {
			t.Errorf("segment %d: state %v, %d healthy; want %v, %d", c.id, s.State, s.Healthy, c.wantState, c.wantHealthy)
		}
		if rewritten := s.Checked != checked; rewritten != c.rewritten {
			t.Errorf("segment %d: record rewritten %v, want %v", c.id, rewritten, c.rewritten)
		} else if rewritten && s.Checked < before.UnixNano() {
			t.Errorf("segment %d: checked at %d, before the check", c.id, s.Checked)
		}
		if ev := evictable(s); ev != (c.wantState == D || c.wantHealthy > 2) {
			t.Errorf("segment %d: evictable %v", c.id, ev)
		}
	}
	unknown := 0
	for _, te := range r.errs {
		if strings.Contains(te.msg, "does not know it") {
			unknown++
		}
	}
	if unknown != 3 || len(r.errs) != 3 {
		t.Errorf("errors noted %v, want the 3 unknown segments", r.errs)
	}
	if !r.st.Online {
		t.Error("not online after the mediator answered")
	}

	// Refused: the network's error, nothing recorded, not online.
	r.st.Online = false
	f.refuseHealthWith(fnet.CodeInternal)
	if err := r.checkHealth(); err == nil {
		t.Fatal("a refused health check returned no error")
	}
	if r.st.Online {
		t.Error("online after a refused check")
	}
	// Stopping: no error.
	r.cancel()
	if err := r.checkHealth(); err != nil {
		t.Fatalf("a check while the engine stops: %v, want none", err)
	}
}

// TestCheckHealthGivesEachBatchItsTimeout: a check of more segments than
// one health request carries gets one call timeout a request: two
// requests, each answered after more than half a timeout, complete.
func TestCheckHealthGivesEachBatchItsTimeout(t *testing.T) {
	e, f := peerEngine(t, 4, func(c *Config) { c.CallTimeout = 5 * time.Second })
	n := fnet.MaxHealthBatch + 1
	commit(t, e.idx, func(b *meta.Batch) {
		for i := range n {
			id := meta.SegmentID{0x40, byte(i >> 8), byte(i)}
			b.PutSegment(&meta.Segment{ID: id, Kind: meta.KindData, State: meta.SegmentDurable, K: 2, N: 4, Healthy: 4, Class: 4096, Used: 1})
			f.setHealth(fnet.SegmentID(id), fnet.SegmentHealth{Known: true, Healthy: 4, N: 4})
		}
	})
	f.healthDelay.Store(int64(3 * time.Second))
	if err := e.r.checkHealth(); err != nil {
		t.Fatalf("a check of %d segments, 3 s a request and a 5 s call timeout: %v", n, err)
	}
	if a := f.healthAsked(); a != 2 {
		t.Fatalf("%d health requests for %d segments, want 2", a, n)
	}
}

// TestMaintainSkipsWhatDidNotChange: maintenance walks the index the first
// time; then, while nothing changed (index, snapshot, the next release
// due), it does nothing at all; after a change it follows the live-bytes
// feed without a walk while nothing is due, and walks again once
// something is (a segment left without a live chunk, marked dead).
func TestMaintainSkipsWhatDidNotChange(t *testing.T) {
	r := offlineReplicator(t, nil)
	r.idx.TrackLive(maxLiveChanges)
	const ino = 60
	seg := meta.SegmentID{0x51}
	ids := []meta.ChunkID{chunkstore.NewID(), chunkstore.NewID()}
	commit(t, r.idx, func(b *meta.Batch) {
		b.PutSegment(&meta.Segment{ID: seg, Kind: meta.KindData, State: meta.SegmentDurable, K: 2, N: 4, Healthy: 4, Class: 4096, Used: 1000})
		for i, id := range ids {
			b.PutChunk(ino, uint64(i), &meta.ChunkRef{ID: id, Version: 1, Len: 500})
			b.PutLocation(id, &meta.Location{Segment: seg, Offset: uint32(500 * i), Length: 500})
		}
	})
	walks := func() int64 { return r.passes.maintain.Load() }
	counted := func() time.Time {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.st.LiveCounted == nil {
			return time.Time{}
		}
		return *r.st.LiveCounted
	}
	step := func(name string, wantWalks int64, wantCounted bool) {
		t.Helper()
		c0 := counted()
		time.Sleep(2 * time.Millisecond) // a new count has a later time
		if err := r.maintain(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if w := walks(); w != wantWalks {
			t.Fatalf("%s: %d walks, want %d", name, w, wantWalks)
		}
		if got := !counted().Equal(c0); got != wantCounted {
			t.Fatalf("%s: live bytes counted again %v, want %v", name, got, wantCounted)
		}
	}
	step("the first pass", 1, true)
	if r.st.LiveBytes != 1000 {
		t.Fatalf("live bytes %d, want 1000", r.st.LiveBytes)
	}
	step("nothing changed", 1, false)
	step("nothing changed, again", 1, false)
	r.mu.Lock()
	r.snapCovers = time.Now()
	r.mu.Unlock()
	step("a new snapshot", 1, true)
	step("nothing changed since the snapshot", 1, false)
	commit(t, r.idx, func(b *meta.Batch) { b.PutInode(&meta.Inode{Ino: 9, Mode: 0o100644}) })
	step("an index change with nothing due", 1, true)
	commit(t, r.idx, func(b *meta.Batch) { b.DeleteChunk(ino, 0) })
	step("half the segment dropped (above RepackBelow)", 1, true)
	if r.st.LiveBytes != 500 {
		t.Fatalf("live bytes %d, want 500 from the feed", r.st.LiveBytes)
	}
	step("nothing changed since", 1, false)
	commit(t, r.idx, func(b *meta.Batch) { b.DeleteChunk(ino, 1) })
	step("the segment's last live chunk dropped", 2, true)
	s, err := r.idx.GetSegment(seg)
	if err != nil || s.DeadSince == 0 {
		t.Fatalf("segment without live chunks not marked dead by the walk: %+v, %v", s, err)
	}
	// The walk changed something: the next pass walks again (to count).
	step("after a walk that changed the index", 3, true)
	step("nothing changed since", 3, false)
}

// TestReleaseAtTheMediator: a dead segment due for release is released at
// the mediator and forgotten with its chunks' locations, also when the
// mediator no longer knows it; a release the mediator refuses otherwise
// stops the pass with its error and keeps the segment and its locations.
func TestReleaseAtTheMediator(t *testing.T) {
	e, f := peerEngine(t, 4, func(c *Config) { c.ReleaseDelay = time.Hour })
	r := e.r
	long := time.Now().Add(-3 * time.Hour)
	add := func(id byte) meta.ChunkID {
		c := chunkstore.NewID()
		commit(t, r.idx, func(b *meta.Batch) {
			b.PutSegment(&meta.Segment{ID: meta.SegmentID{id}, Kind: meta.KindData, State: meta.SegmentDurable, K: 2, N: 4, Healthy: 4,
				Class: 4096, Used: 100, DeadSince: long.UnixNano()})
			b.PutLocation(c, &meta.Location{Segment: meta.SegmentID{id}, Length: 100})
		})
		return c
	}
	gone := func(id byte, c meta.ChunkID) bool {
		_, errS := r.idx.GetSegment(meta.SegmentID{id})
		_, errL := r.idx.GetLocation(c)
		return errS != nil && errL != nil
	}
	c1 := add(1)
	if err := r.maintainWalk(r.idx.Generation(), time.Now()); err != nil {
		t.Fatalf("release: %v", err)
	}
	if !gone(1, c1) || !slices.Contains(f.released(), fnet.SegmentID{1}) {
		t.Fatalf("segment 1: released %v, forgotten %v", f.released(), gone(1, c1))
	}
	f.refuse(fnet.CodeNotFound, 0)
	c2 := add(2)
	if err := r.maintainWalk(r.idx.Generation(), time.Now()); err != nil {
		t.Fatalf("release of a segment the mediator does not know: %v", err)
	}
	if !gone(2, c2) {
		t.Fatal("segment 2, unknown to the mediator, not forgotten")
	}
	f.refuse(fnet.CodeInternal, 0)
	c3 := add(3)
	if err := r.maintainWalk(r.idx.Generation(), time.Now()); err == nil {
		t.Fatal("a refused release stopped no pass")
	}
	if _, err := r.idx.GetSegment(meta.SegmentID{3}); err != nil {
		t.Fatalf("segment 3 forgotten though its release was refused: %v", err)
	}
	if _, err := r.idx.GetLocation(c3); err != nil {
		t.Fatalf("segment 3's chunk lost its location though the release was refused: %v", err)
	}
}

// TestEvictOnlyCountsWithoutACacheSize: with no cache size the store is
// only counted (nothing evicted, however much it holds); with one, the
// chunks of a durable segment are evicted down to it.
func TestEvictOnlyCountsWithoutACacheSize(t *testing.T) {
	r := offlineReplicator(t, nil)
	seg := meta.SegmentID{0x61}
	ids := []meta.ChunkID{chunkstore.NewID(), chunkstore.NewID()}
	commit(t, r.idx, func(b *meta.Batch) {
		b.PutSegment(&meta.Segment{ID: seg, Kind: meta.KindData, State: meta.SegmentDurable, K: 2, N: 4, Healthy: 4, Class: 4096, Used: 2000})
		for i, id := range ids {
			b.PutLocation(id, &meta.Location{Segment: seg, Offset: uint32(1000 * i), Length: 1000})
		}
	})
	for _, id := range ids {
		if err := r.store.Put(id, make([]byte, 1000)); err != nil {
			t.Fatal(err)
		}
	}
	r.cfg.CacheSize = 0
	if err := r.evict(); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if _, ok := r.store.Has(id); !ok {
			t.Fatalf("chunk %s evicted without a cache size", id)
		}
	}
	if r.st.CacheBytes < 2000 {
		t.Fatalf("cache bytes %d, want the store's 2000 or more", r.st.CacheBytes)
	}
	r.cfg.CacheSize = 1
	if err := r.evict(); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if _, ok := r.store.Has(id); ok {
			t.Fatalf("chunk %s of a durable segment kept over a cache size of 1 byte", id)
		}
	}
}

// TestCheckEscrowAsksTheMediator: the escrow check keeps the mediator's
// balance and warns only when the balance does; a mediator that cannot
// answer leaves no warning and the balance last read.
func TestCheckEscrowAsksTheMediator(t *testing.T) {
	e, f := peerEngine(t, 4, nil)
	r := e.r
	ok := &fnet.BalanceReply{Metered: true, CanPlace: true, Escrow: 1e6, PeriodsLeft: 100, Runway: 100 * 24 * time.Hour}
	f.setBalance(ok)
	r.escrowStale = true
	r.checkEscrow()
	if r.escrow != "" || r.balance == nil || r.balance.Escrow != 1e6 || r.balanceAt.IsZero() || r.escrowStale {
		t.Fatalf("a sound escrow: warning %q, balance %+v at %v, stale %v", r.escrow, r.balance, r.balanceAt, r.escrowStale)
	}
	low := *ok
	low.Low, low.Runway, low.Escrow = true, 2*24*time.Hour, 1000
	f.setBalance(&low)
	r.checkEscrow()
	if !strings.HasPrefix(r.escrow, "WARNING:") || r.balance.Escrow != 1000 {
		t.Fatalf("a low escrow: warning %q, balance %+v", r.escrow, r.balance)
	}
	at := r.balanceAt
	f.setBalance(nil)
	r.escrowStale = true
	r.checkEscrow()
	if r.escrow != "" || r.balance.Escrow != 1000 || !r.balanceAt.Equal(at) || r.escrowStale {
		t.Fatalf("no answer: warning %q, balance %+v at %v (was %v), stale %v", r.escrow, r.balance, r.balanceAt, at, r.escrowStale)
	}
}

// TestPrefetchFollowsASequentialReader: a reader that comes to a data
// segment from the one stored before it (at most two back) has the next
// two fetched ahead; a first read, a read backwards, a jump of more than
// two, a read of the same segment again or of a snapshot segment fetch
// nothing ahead, nor is a segment fetched ahead that is cached already.
// Segments stored later are in the order once the index changed and the
// order is older than segOrderTTL.
func TestPrefetchFollowsASequentialReader(t *testing.T) {
	e, f := peerEngine(t, 4, nil)
	class := SizeClasses[0]
	const n = 12 // the last two stored later
	segs := make([]meta.SegmentID, n)
	chunks := make([]meta.ChunkID, n)
	put := func(i int) {
		segs[i] = meta.SegmentID{0x70 + byte(i)} // putDataSegment names chunks after the first byte
		chunks[i] = putDataSegment(t, e, f, segs[i], segmentData(byte(i), class), class, []meta.Location{{Length: 100}})[0]
		time.Sleep(time.Millisecond) // stored one after the other
	}
	for i := range n - 2 {
		put(i)
	}
	snapSeg := meta.SegmentID{0x7f}
	snapChunk := putDataSegment(t, e, f, snapSeg, segmentData(0x7f, class), class, []meta.Location{{Length: 100}})[0]
	s, err := e.idx.GetSegment(snapSeg)
	if err != nil {
		t.Fatal(err)
	}
	s.Kind, s.Created = meta.KindSnapshot, 1
	commit(t, e.idx, func(b *meta.Batch) { b.PutSegment(&s) })
	e.r.segBudget = 64 * class
	cached := map[int]bool{}
	reads := uint64(0)
	read := func(i int, ahead ...int) {
		t.Helper()
		reads++
		c, name := snapChunk, "the snapshot segment"
		if i >= 0 {
			c, name = chunks[i], "segment "+string(rune('0'+i))
		}
		if _, err := e.r.fetchChunk(c, nil, true); err != nil {
			t.Fatal(err)
		}
		e.r.prefetches.Wait()
		if i >= 0 {
			cached[i] = true
		}
		for _, a := range ahead {
			cached[a] = true
		}
		e.r.fetchMu.Lock()
		var got []int
		for j, id := range segs {
			if slices.ContainsFunc(e.r.segCache, func(c cachedSegment) bool { return c.id == id }) {
				got = append(got, j)
			}
		}
		e.r.fetchMu.Unlock()
		var want []int
		for j := range n {
			if cached[j] {
				want = append(want, j)
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("after reading %s: segments %v held, want %v", name, got, want)
		}
	}
	read(9)       // a first read
	read(7)       // backwards
	read(0)       // backwards
	read(2, 3, 4) // two on: sequential
	read(6)       // a jump of four
	read(-1)      // a snapshot segment: not the last read
	read(7, 8)    // from 6 (9 cached): only 8 ahead
	read(7)       // the same again
	if got := e.r.prefetched.Load(); got != 3 {
		t.Fatalf("%d segments fetched ahead, want 3", got)
	}
	// Two segments stored since; the order read is older than its TTL.
	put(10)
	put(11)
	e.r.fetchMu.Lock()
	e.r.segOrder.at = time.Now().Add(-2 * segOrderTTL)
	e.r.fetchMu.Unlock()
	read(8, 10) // from 7: 9 cached, 10 ahead
	// Each chunk read from the network counts as one a trim can evict.
	if got := e.r.fetched.Load(); got != reads {
		t.Fatalf("%d chunks noted fetched after %d reads", got, reads)
	}
	if _, err := e.r.fetchChunk(meta.ChunkID{0x01}, nil, true); err == nil {
		t.Fatal("a chunk without a location read")
	}
	if got := e.r.fetched.Load(); got != reads {
		t.Fatalf("%d chunks noted fetched after a failed read, want %d", got, reads)
	}
}

// TestUploadForgetsARequeuedVanishedChunk: a chunk a repack queued again
// (a mark without its file) that is gone from the store and superseded in
// its file by the time its segment is packed leaves the pending feed with
// the upload; a chunk it did not pack because another segment may take it
// stays.
func TestUploadForgetsARequeuedVanishedChunk(t *testing.T) {
	e, _ := peerEngine(t, 4, nil)
	rng := rand.New(rand.NewPCG(11, 12))
	ids, _ := e.addChunks(t, rng, 4000, 5000)
	p := e.planFor(t, ids)
	if err := e.store.Delete(ids[1]); err != nil {
		t.Fatal(err)
	}
	commit(t, e.idx, func(b *meta.Batch) {
		b.PutChunk(e.ino, 1, &meta.ChunkRef{ID: meta.ChunkID{0xfd}, Version: 2, Len: 10})
	})
	// The repack's mark outlives the file's change.
	commit(t, e.idx, func(b *meta.Batch) { b.MarkPending(ids[1], 0, 0, 5000) })
	if !pendingIDs(t, e.idx)[ids[1]] {
		t.Fatal("the requeued chunk is not pending before the upload")
	}
	if err := e.r.uploadSegment(p); err != nil {
		t.Fatal(err)
	}
	if _, err := e.idx.GetLocation(ids[0]); err != nil {
		t.Fatalf("the chunk packed: %v", err)
	}
	if pendingIDs(t, e.idx)[ids[1]] {
		t.Fatal("a requeued chunk gone from the store and superseded is still pending after the upload")
	}
	for _, te := range e.r.errs {
		if strings.Contains(te.msg, "pending feed") {
			t.Fatalf("the pending feed's commit noted as failed: %v", e.r.errs)
		}
	}
}

// snapshotWith starts a snapshot and waits for it up to a bound; past it
// the engine is stopped (which ends any retry) and the test fails.
func snapshotWith(t *testing.T, r *Replicator, what string) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- r.Snapshot() }()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		r.cancel()
		<-done
		t.Fatalf("%s: the snapshot still retried after 30 s", what)
		return nil
	}
}

// TestSnapshotRetriesChunksItCouldNotUpload: a snapshot whose export
// references a chunk that stays pending after its uploads (gone from the
// store while its file still references it) tries three rounds and is
// postponed: no pointer stored, no error, no endless retry. A chunk that
// another upload held during the first round and left pending is
// uploaded by the second, and the snapshot is stored.
func TestSnapshotRetriesChunksItCouldNotUpload(t *testing.T) {
	e, f := peerEngine(t, 4, nil)
	r := e.r
	rng := rand.New(rand.NewPCG(13, 14))
	ids, _ := e.addChunks(t, rng, 4000, 5000)
	if err := e.store.Delete(ids[1]); err != nil {
		t.Fatal(err)
	}
	rounds := 0
	r.faults.SetHook(func(work string) {
		if work == "upload segment" {
			rounds++
		}
	})
	if err := snapshotWith(t, r, "a chunk that cannot be uploaded"); err != nil {
		t.Fatalf("a snapshot postponed: %v, want no error", err)
	}
	if f.snapshotPointer() != nil {
		t.Fatal("a snapshot stored though a chunk it references has no location")
	}
	if _, err := e.idx.GetLocation(ids[0]); err != nil {
		t.Fatalf("the chunk that could be uploaded: %v", err)
	}
	if !pendingIDs(t, e.idx)[ids[1]] {
		t.Fatal("the referenced chunk gone from the store left the pending feed")
	}
	if rounds != 3 {
		t.Fatalf("%d segment uploads, want 3 (the first round's and one try each of two more)", rounds)
	}

	// A fresh file: its second chunk held by another upload during the
	// snapshot's first round, left pending when that one ends.
	commit(t, e.idx, func(b *meta.Batch) { b.DeleteChunk(e.ino, 1) })
	ids2, _ := e.addChunks(t, rng, 3000, 3500)
	r.mu.Lock()
	r.inflight[ids2[1]] = struct{}{}
	r.mu.Unlock()
	r.faults.SetHook(func(work string) {
		if work == "upload segment" {
			r.mu.Lock()
			delete(r.inflight, ids2[1])
			r.mu.Unlock()
		}
	})
	if err := snapshotWith(t, r, "a chunk held by another upload"); err != nil {
		t.Fatal(err)
	}
	if f.snapshotPointer() == nil {
		t.Fatal("no snapshot stored though its second round uploaded the chunk held in the first")
	}
	for _, id := range ids2 {
		if _, err := e.idx.GetLocation(id); err != nil {
			t.Fatalf("chunk %s: %v", id, err)
		}
	}
}

// TestSnapshotMovesTheUnprotectedTime: the time since which changes are
// unprotected (shown by status) becomes the stored snapshot's export
// time once a snapshot is stored (changes made since may be missing from
// it); a snapshot stored while nothing was unprotected leaves that so, and
// the next change starts it anew.
func TestSnapshotMovesTheUnprotectedTime(t *testing.T) {
	e, _ := peerEngine(t, 4, nil)
	r := e.r
	since := func() time.Time {
		t.Helper()
		_, s, err := r.protection()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	// Nothing was asked yet: a snapshot leaves the time unset, and the
	// next change sets it to when it is seen.
	if err := r.Snapshot(); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	u := r.unprotectedSince
	r.mu.Unlock()
	if !u.IsZero() {
		t.Fatalf("unprotected since %v after a snapshot with nothing unprotected", u)
	}
	time.Sleep(5 * time.Millisecond)
	changed := time.Now()
	commit(t, e.idx, func(b *meta.Batch) { b.PutInode(&meta.Inode{Ino: 70, Mode: 0o100644, Size: 1}) })
	first := since()
	if first.Before(changed) {
		t.Fatalf("unprotected since %v, before the change at %v", first, changed)
	}
	// Unprotected since first: the next snapshot moves it to its export.
	time.Sleep(5 * time.Millisecond)
	export := time.Now()
	if err := r.Snapshot(); err != nil {
		t.Fatal(err)
	}
	commit(t, e.idx, func(b *meta.Batch) { b.PutInode(&meta.Inode{Ino: 71, Mode: 0o100644, Size: 1}) })
	if s := since(); s.Before(export) {
		t.Fatalf("unprotected since %v after a snapshot exported at %v or later (before it: %v)", s, export, first)
	}
}

// TestNoteErrKeepsTheLastTen: the engine remembers its last ten errors
// (status shows them), the newest last.
func TestNoteErrKeepsTheLastTen(t *testing.T) {
	r := offlineReplicator(t, nil)
	for i := range 12 {
		r.noteErr(errors.New("error " + strconv.Itoa(i)))
	}
	if len(r.errs) != 10 || r.errs[0].msg != "error 2" || r.errs[9].msg != "error 11" {
		t.Fatalf("errors kept: %v, want errors 2 to 11", r.errs)
	}
}

// TestScanPendingSizes: a walk of the index for pending chunks (at start,
// or when the pending feed overflowed) gives each chunk of a file without
// a location with its sealed size, and leaves located ones out.
func TestScanPendingSizes(t *testing.T) {
	r := offlineReplicator(t, nil)
	ids := []meta.ChunkID{chunkstore.NewID(), chunkstore.NewID()}
	commit(t, r.idx, func(b *meta.Batch) {
		b.PutChunk(80, 0, &meta.ChunkRef{ID: ids[0], Version: 1, Len: 100})
		b.PutChunk(80, 1, &meta.ChunkRef{ID: ids[1], Version: 1, Len: 200})
		b.PutSegment(&meta.Segment{ID: meta.SegmentID{0x81}, Kind: meta.KindData, State: meta.SegmentDurable, K: 2, N: 4, Healthy: 4, Class: 4096, Used: 200})
		b.PutLocation(ids[1], &meta.Location{Segment: meta.SegmentID{0x81}, Length: 200 + vault.Overhead})
	})
	got, err := r.scanPending()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].id != ids[0] || got[0].size != 100+vault.Overhead || got[0].ino != 80 || got[0].index != 0 {
		t.Fatalf("pending by a walk: %+v, want chunk %s of file 80 at 0, %d bytes", got, ids[0], 100+vault.Overhead)
	}
}

// TestRoundRunsWhatIsDue: a round of the engine cleans the upload intents
// left at a start (once), uploads what is pending,
// asks the mediator for the segments' health, maintains and asks for the escrow when each is due
// (and only then), and trims the cache; a failure of the network is noted
// and backs the engine off (RetryMin, doubling up to RetryMax, RetryMin
// again while closing), no duty runs before the retry time, and health
// checks and maintenance wait for the network; a round that succeeds ends
// the backoff.
func TestRoundRunsWhatIsDue(t *testing.T) {
	e, f := peerEngine(t, 4, func(c *Config) {
		c.CheckInterval, c.MaintainInterval = time.Hour, time.Hour
		c.RetryMin, c.RetryMax = time.Minute, 3*time.Minute
	})
	r := e.r
	seg := meta.SegmentID{0x91}
	commit(t, r.idx, func(b *meta.Batch) {
		b.PutSegment(&meta.Segment{ID: seg, Kind: meta.KindData, State: meta.SegmentDurable, K: 2, N: 4, Healthy: 4, Class: 4096, Used: 100})
	})
	f.setHealth(fnet.SegmentID(seg), fnet.SegmentHealth{Known: true, Healthy: 3, N: 4})
	f.setBalance(&fnet.BalanceReply{Metered: true, CanPlace: true, Low: true, Escrow: 10, Runway: time.Hour})
	// A chunk of no file (a snapshot does not upload it) waits for its
	// upload, which a sync hurries.
	ids := []meta.ChunkID{chunkstore.NewID()}
	if err := r.store.Put(ids[0], segmentData(0x90, 3000)); err != nil {
		t.Fatal(err)
	}
	commit(t, r.idx, func(b *meta.Batch) { b.MarkPending(ids[0], 0, 0, 3000) })
	r.mu.Lock()
	r.syncWanted = time.Now()
	r.intentsLeft = true // as at a start: upload intents left to clean
	r.mu.Unlock()
	var lastCheck, lastMaintain, lastEscrow time.Time
	round := func() { t.Helper(); r.round(&lastCheck, &lastMaintain, &lastEscrow) }
	state := func() (time.Duration, int, bool, time.Time) {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.backoff, r.netFails, r.st.Online, r.retryAt
	}

	round()
	if _, err := r.idx.GetLocation(ids[0]); err != nil {
		t.Fatalf("the first round did not upload the pending chunk: %v", err)
	}
	r.mu.Lock()
	left := r.intentsLeft
	r.mu.Unlock()
	if left {
		t.Fatal("upload intents still to clean after a round that cleaned them")
	}
	s, err := r.idx.GetSegment(seg)
	if err != nil || s.State != meta.SegmentDegraded || s.Healthy != 3 || f.healthAsked() != 1 || lastCheck.IsZero() {
		t.Fatalf("the first round: segment %+v (%v), %d health requests, checked at %v", s, err, f.healthAsked(), lastCheck)
	}
	if lastMaintain.IsZero() || r.passes.maintain.Load() != 1 {
		t.Fatalf("the first round did not maintain: %v, %d walks", lastMaintain, r.passes.maintain.Load())
	}
	if !strings.HasPrefix(r.escrow, "WARNING:") || lastEscrow.IsZero() {
		t.Fatalf("the first round: escrow %q asked at %v", r.escrow, lastEscrow)
	}
	if r.lastEvict.IsZero() || r.evictGen != r.idx.Generation()+1 {
		t.Fatalf("the first round did not trim: last at %v, generation %d of %d", r.lastEvict, r.evictGen, r.idx.Generation())
	}
	if b, n, online, _ := state(); b != 0 || n != 0 || !online {
		t.Fatalf("after a round that succeeded: backoff %v, %d failures, online %v", b, n, online)
	}

	// Nothing due: nothing asked.
	c0, m0, e0 := lastCheck, lastMaintain, lastEscrow
	round()
	if f.healthAsked() != 1 || !lastCheck.Equal(c0) || !lastMaintain.Equal(m0) || !lastEscrow.Equal(e0) {
		t.Fatalf("a round with nothing due: %d health requests, check %v, maintenance %v, escrow %v", f.healthAsked(), lastCheck, lastMaintain, lastEscrow)
	}
	// The health check due again.
	lastCheck = lastCheck.Add(-time.Hour)
	round()
	if f.healthAsked() != 2 || !lastCheck.After(c0) {
		t.Fatalf("a round with the check due: %d health requests, checked at %v", f.healthAsked(), lastCheck)
	}

	// The network fails: noted, backed off, no maintenance.
	f.refuseHealthWith(fnet.CodeInternal)
	lastCheck, lastMaintain = time.Time{}, time.Time{}
	before := time.Now()
	round()
	b, n, online, at := state()
	if b != time.Minute || n != 1 || online || at.Before(before.Add(time.Minute)) || !lastCheck.IsZero() || !lastMaintain.IsZero() {
		t.Fatalf("a failed check: backoff %v, %d failures, online %v, retry at %v, checked %v, maintained %v", b, n, online, at, lastCheck, lastMaintain)
	}
	if len(r.errs) == 0 || !strings.Contains(r.errs[len(r.errs)-1].msg, "segment health") {
		t.Fatalf("the failed check not noted: %v", r.errs)
	}
	asked := f.healthAsked()
	round()
	if f.healthAsked() != asked {
		t.Fatal("a round before the retry time asked the mediator")
	}
	for _, want := range []time.Duration{2 * time.Minute, 3 * time.Minute, 3 * time.Minute} {
		r.mu.Lock()
		r.retryAt = time.Time{}
		r.mu.Unlock()
		round()
		if b, _, _, _ := state(); b != want {
			t.Fatalf("backoff %v after another failure, want %v", b, want)
		}
	}
	r.mu.Lock()
	r.retryAt, r.closing = time.Time{}, true
	r.mu.Unlock()
	round()
	if b, n, _, _ := state(); b != time.Minute || n != 5 {
		t.Fatalf("closing: backoff %v, %d failures; want 1m, 5", b, n)
	}
	r.mu.Lock()
	r.retryAt, r.closing = time.Time{}, false
	r.mu.Unlock()

	// It answers again.
	f.refuseHealthWith(0)
	round()
	if b, n, online, _ := state(); b != 0 || n != 0 || !online || lastCheck.IsZero() || lastMaintain.IsZero() {
		t.Fatalf("a round that succeeded after failures: backoff %v, %d failures, online %v, checked %v, maintained %v", b, n, online, lastCheck, lastMaintain)
	}
	// Stopping: a failure is not noted and backs nothing off.
	f.refuseHealthWith(fnet.CodeInternal)
	lastCheck = time.Time{}
	errs := len(r.errs)
	r.cancel()
	round()
	if b, n, _, _ := state(); b != 0 || n != 0 || len(r.errs) != errs {
		t.Fatalf("a round while stopping: backoff %v, %d failures, errors %v", b, n, r.errs[errs:])
	}
}

// TestNewTakesOverFromTheIndex: New refuses a configuration that does not
// validate; a started engine takes the last snapshot's and the last sync's
// times from the index (records of 8 bytes only) and stops on Close.
func TestNewTakesOverFromTheIndex(t *testing.T) {
	e, f := peerEngine(t, 4, nil)
	cfg := fastConfig()
	cfg.CallTimeout = 20 * time.Second
	cfg.Logger = e.r.log
	bad := cfg
	bad.RetryMin, bad.RetryMax = time.Minute, time.Second
	if r, err := New(e.v, e.idx, e.store, f.client, bad); err == nil || r != nil {
		t.Fatalf("New with retry max below min: %v, %v", r, err)
	}
	snap, sync := time.Unix(0, 1_700_000_000_123_456_789), time.Unix(0, 1_700_000_100_000_000_001)
	commit(t, e.idx, func(b *meta.Batch) {
		b.PutRepl("last_snapshot", putUint64(uint64(snap.UnixNano())))
		b.PutRepl("last_sync", putUint64(uint64(sync.UnixNano())))
	})
	start := func() *Replicator {
		t.Helper()
		r, err := New(e.v, e.idx, e.store, f.client, cfg)
		if err != nil || r == nil {
			t.Fatalf("New: %v", err)
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		return r
	}
	r := start()
	if !r.lastSnapshot.Equal(snap) || !r.lastSync.Equal(sync) {
		t.Fatalf("taken over: last snapshot %v, last sync %v; want %v, %v", r.lastSnapshot, r.lastSync, snap, sync)
	}
	commit(t, e.idx, func(b *meta.Batch) {
		b.PutRepl("last_snapshot", []byte{1, 2, 3})
		b.PutRepl("last_sync", []byte{1, 2, 3, 4, 5, 6, 7, 8, 9})
	})
	r = start()
	if !r.lastSnapshot.IsZero() || !r.lastSync.IsZero() {
		t.Fatalf("records not of 8 bytes taken: last snapshot %v, last sync %v", r.lastSnapshot, r.lastSync)
	}
}

// TestMergeRecordsAllBefore: records merged into a snapshot's export that
// all sort before its later records (every one placed before the export
// ends) keep key order.
func TestMergeRecordsAllBefore(t *testing.T) {
	blob := encodeRecords([]record{{[]byte("m"), []byte("1")}, {[]byte("x"), []byte("2")}, {[]byte("z"), []byte("3")}})
	merged, err := mergeRecords(blob, []record{{[]byte("n"), []byte("n1")}, {[]byte("a"), []byte("a1")}})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	if err := importRecords(recordsOf(merged))(func(k, v []byte) error { keys = append(keys, string(k)+"="+string(v)); return nil }); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(keys, " "), "a=a1 m=1 n=n1 x=2 z=3"; got != want {
		t.Fatalf("merged %q, want %q", got, want)
	}
}

// TestSegmentCacheHoldsTheReadAhead: the decoded-segment cache holds a
// read window's bytes and, beyond them, the segments fetched ahead and two
// more of the largest class (else a segment fetched ahead could leave
// before it is read), and no more than a bounded amount of memory.
func TestSegmentCacheHoldsTheReadAhead(t *testing.T) {
	largest := uint64(SizeClasses[len(SizeClasses)-1])
	for _, cs := range []uint64{4 << 10, 64 << 10, 1 << 20, 4 << 20} {
		got := segCacheBytes(cs)
		need := readwin.Bytes(cs) + (prefetchAhead+2)*largest
		if got < 0 || uint64(got) < need || uint64(got) < segCacheMin || uint64(got) > max(need, segCacheMin) {
			t.Errorf("chunk size %d: a segment cache of %d bytes, want max(%d, %d)", cs, got, need, segCacheMin)
		}
	}
}
