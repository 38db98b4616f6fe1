package replicate

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/challenge"
	"github.com/fincrypt/fincrypt/meta"
	fnet "github.com/fincrypt/fincrypt/net"
)

// peerEngine is an offline engine (offlineReplicator) whose client talks
// to a fakeNet of n nodes instead.
func peerEngine(t testing.TB, n int, tune func(*Config)) (*engine, *fakeNet) {
	t.Helper()
	// Calls to the mediator get a timeout a loaded machine keeps within
	// (the offline engine's 300 ms is for a mediator that never answers).
	r := offlineReplicator(t, func(c *Config) {
		c.CallTimeout = 20 * time.Second
		if tune != nil {
			tune(c)
		}
	})
	id, err := AccountIdentity(r.v)
	if err != nil {
		t.Fatal(err)
	}
	f := newFakeNet(t, n, id)
	r.client = f.client
	return &engine{v: r.v, idx: r.idx, store: r.store, r: r, ino: 100}, f
}

// putDataSegment stores content (padded to class) on the fake network as
// segment id and records it in the index as a durable data segment whose
// chunks lie at locs; the chunks get ids, which it returns.
func putDataSegment(t *testing.T, e *engine, f *fakeNet, id meta.SegmentID, content []byte, used int, locs []meta.Location) []meta.ChunkID {
	t.Helper()
	s := e.r.cfg.Scheme
	f.addSegment(fnet.SegmentID(id), s.K, s.N, content, nil)
	ids := make([]meta.ChunkID, len(locs))
	commit(t, e.idx, func(b *meta.Batch) {
		b.PutSegment(&meta.Segment{ID: id, Kind: meta.KindData, State: meta.SegmentDurable, K: uint8(s.K), N: uint8(s.N),
			Healthy: uint8(s.N), Class: uint32(len(content)), Used: uint32(used), Created: time.Now().UnixNano()})
		for i := range locs {
			ids[i] = meta.ChunkID{id[0], byte(i + 1)}
			l := locs[i]
			l.Segment = id
			b.PutLocation(ids[i], &l)
		}
	})
	return ids
}

// TestEngineFetchFromLyingPeers: the engine reads evicted chunks from a
// segment whose first data piece's node lies: it rebuilds the segment,
// hands out each chunk's bytes (the last one ending at the segment's last
// byte), downloads the segment once for both, learns the pace of piece
// downloads, and refuses a location beyond the segment's bytes as
// corrupt. A fetch that fails is noted as the engine's error; a fetch
// that succeeds notes none.
func TestEngineFetchFromLyingPeers(t *testing.T) {
	e, f := peerEngine(t, 4, func(c *Config) { c.PieceTimeout, c.HedgeAfter = time.Minute, time.Minute })
	class := SizeClasses[0]
	content := segmentData(10, class)
	id := meta.SegmentID{0x10}
	ids := putDataSegment(t, e, f, id, content, class, []meta.Location{
		{Offset: 0, Length: 1000}, {Offset: 1000, Length: uint32(class - 1000)}, {Offset: uint32(class - 10), Length: 11}})
	f.peers[0].set(peerJunk)
	e.r.segBudget = 4 * class
	got, err := e.r.fetchChunk(ids[1], []byte("x"), true)
	if err != nil || !bytes.Equal(got, append([]byte("x"), content[1000:]...)) {
		t.Fatalf("the chunk that ends the segment: %v", err)
	}
	if got, err = e.r.fetchChunk(ids[0], nil, true); err != nil || !bytes.Equal(got, content[:1000]) {
		t.Fatalf("the first chunk: %v", err)
	}
	if n := e.r.segFetches.Load(); n != 1 {
		t.Fatalf("%d segment downloads for two chunks of one segment", n)
	}
	if g := f.gets(); g[0] != 1 || g[2]+g[3] != 1 {
		t.Fatalf("gets per node %v: the lying node once, one parity node once", g)
	}
	if e.r.piecePace.avg.Load() <= 0 {
		t.Fatal("no piece download noted in the pace")
	}
	e.r.fetchMu.Lock()
	whole := len(e.r.segCache) == 1 && e.r.segCache[0].whole && slices.Contains(e.r.segDone, id)
	e.r.fetchMu.Unlock()
	if !whole {
		t.Fatal("the segment is not taken whole once both its chunks were")
	}
	if _, err := e.r.fetchChunk(ids[2], nil, true); !errors.Is(err, meta.ErrCorrupt) {
		t.Fatalf("a location one byte beyond the segment: %v, want ErrCorrupt", err)
	}
	if n := len(e.r.errs); n != 0 {
		t.Fatalf("%d errors noted (%v) while every fetch from the network succeeded", n, e.r.errs)
	}
	// A segment no node can give.
	id2 := meta.SegmentID{0x11}
	bad := putDataSegment(t, e, f, id2, content, class, []meta.Location{{Offset: 0, Length: 1000}})
	for _, p := range f.peers {
		p.set(peerRefuse)
	}
	if _, err := e.r.fetchChunk(bad[0], nil, true); err == nil || !strings.Contains(err.Error(), "0 of 2 pieces readable") {
		t.Fatalf("a segment every node refuses: %v", err)
	}
	if len(e.r.errs) != 1 || !strings.Contains(e.r.errs[0].msg, "pieces readable") {
		t.Fatalf("errors noted %v, want the failed fetch", e.r.errs)
	}
}

// TestEngineSegmentCacheBound: decoded segments stay in memory up to the
// engine's bound (exactly it included); past it a segment taken whole
// leaves first, then the least recently used, and the one just fetched
// stays even alone over the bound.
func TestEngineSegmentCacheBound(t *testing.T) {
	e, f := peerEngine(t, 4, nil)
	small, large := SizeClasses[0], SizeClasses[1]
	classes := []int{small, small, small, large}
	segs := []meta.SegmentID{{0x21}, {0x22}, {0x23}, {0x24}}
	chunks := make([][]meta.ChunkID, len(segs))
	// Stored last first: reading them in turn is no sequential reader's
	// (no read-ahead).
	for i := len(segs) - 1; i >= 0; i-- {
		c := classes[i]
		half := uint32(c / 2)
		chunks[i] = putDataSegment(t, e, f, segs[i], segmentData(byte(0x21+i), c), c,
			[]meta.Location{{Offset: 0, Length: half}, {Offset: half, Length: uint32(c) - half}})
	}
	cached := func() []meta.SegmentID {
		e.r.fetchMu.Lock()
		defer e.r.fetchMu.Unlock()
		var out []meta.SegmentID
		for _, c := range e.r.segCache {
			out = append(out, c.id)
		}
		return out
	}
	read := func(seg, chunk int, want ...int) {
		t.Helper()
		if _, err := e.r.fetchChunk(chunks[seg][chunk], nil, true); err != nil {
			t.Fatal(err)
		}
		var w []meta.SegmentID
		for _, i := range want {
			w = append(w, segs[i])
		}
		if c := cached(); !slices.Equal(c, w) {
			t.Fatalf("after reading chunk %d of segment %d: cached %v, want %v", chunk, seg, c, w)
		}
	}
	e.r.segBudget = 2 * small
	read(0, 0, 0)
	read(1, 0, 0, 1) // exactly the bound
	read(2, 0, 1, 2) // over it: the least recently used leaves
	read(2, 1, 1, 2) // segment 2 taken whole
	// The large segment: segment 2 (whole) leaves before 1 (older).
	e.r.segBudget = small + large
	read(3, 0, 1, 3)
	// A bound below one segment: the others leave, the new one stays.
	e.r.segBudget = small / 2
	read(0, 1, 0)
	if n := e.r.segFetches.Load(); n != 5 {
		t.Fatalf("%d segment downloads, want 5", n)
	}
	if e.r.piecePace.avg.Load() <= 0 {
		t.Fatal("no piece download noted in the pace after five fetches")
	}
	// Segment 2, taken whole and gone, is read again: it is no longer
	// taken whole (the read-ahead may fetch it again once it leaves).
	e.r.fetchMu.Lock()
	done := slices.Contains(e.r.segDone, segs[2])
	e.r.fetchMu.Unlock()
	if !done {
		t.Fatal("segment 2 not remembered as taken whole")
	}
	read(2, 0, 2)
	e.r.fetchMu.Lock()
	done = slices.Contains(e.r.segDone, segs[2])
	e.r.fetchMu.Unlock()
	if done {
		t.Fatal("segment 2, downloaded again and half taken, still remembered as taken whole")
	}
}

// TestEngineConcurrentReadersShareADownload: readers of chunks of one
// segment that ask while its download runs (slow nodes) wait for that
// download instead of starting their own; each gets its chunk's bytes,
// and once they are done only the cache holds the segment's buffer.
func TestEngineConcurrentReadersShareADownload(t *testing.T) {
	e, f := peerEngine(t, 4, nil)
	f.setDelay(500 * time.Millisecond)
	for _, p := range f.peers {
		p.set(peerSlow)
	}
	class := SizeClasses[0]
	content := segmentData(40, class)
	id := meta.SegmentID{0x40}
	var locs []meta.Location
	for i := range 4 {
		locs = append(locs, meta.Location{Offset: uint32(i * class / 4), Length: uint32(class / 4)})
	}
	ids := putDataSegment(t, e, f, id, content, class, locs)
	e.r.segBudget = 4 * class
	errs := make(chan error, len(ids))
	for i, cid := range ids {
		go func() {
			got, err := e.r.fetchChunk(cid, nil, true)
			if err == nil && !bytes.Equal(got, content[locs[i].Offset:locs[i].Offset+locs[i].Length]) {
				err = errors.New("other bytes")
			}
			errs <- err
		}()
	}
	for range ids {
		if err := <-errs; err != nil {
			t.Fatalf("a concurrent reader: %v", err)
		}
	}
	if n := e.r.segFetches.Load(); n != 1 {
		t.Fatalf("%d downloads for four concurrent readers of one segment", n)
	}
	e.r.fetchMu.Lock()
	defer e.r.fetchMu.Unlock()
	if len(e.r.segCache) != 1 || e.r.segCache[0].buf.refs != 1 || !e.r.segCache[0].whole {
		t.Fatalf("after the readers: %d cached, the buffer held %d times, want once (the cache's)", len(e.r.segCache), e.r.segCache[0].buf.refs)
	}
}

// TestUploadCommitsWhatWasStored: a segment uploaded while one node
// refuses its piece is committed with exactly the three pieces stored
// (index, node, piece id, size), recorded degraded with them, its chunks
// located in it, and the upload's progress counts the three pieces'
// share of the content. With two nodes refusing (K pieces stored) nothing
// is committed and the placement is released.
func TestUploadCommitsWhatWasStored(t *testing.T) {
	e, f := peerEngine(t, 4, nil)
	rng := rand.New(rand.NewPCG(3, 4))
	ids, _ := e.addChunks(t, rng, 9000, 7000)
	f.peers[2].set(peerRefuse)
	if err := e.r.uploadSegment(e.planFor(t, ids)); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	commits := slices.Clone(f.commits)
	f.mu.Unlock()
	if len(commits) != 1 {
		t.Fatalf("%d commits", len(commits))
	}
	cm := commits[0]
	loc, err := e.idx.GetLocation(ids[1])
	if err != nil {
		t.Fatal(err)
	}
	seg, err := e.idx.GetSegment(loc.Segment)
	if err != nil {
		t.Fatal(err)
	}
	if fnet.SegmentID(seg.ID) != cm.Segment || seg.State != meta.SegmentDegraded || seg.Healthy != 3 || seg.Kind != meta.KindData || seg.Used != 16000 {
		t.Fatalf("segment %s recorded %v, %d healthy, kind %v, %d used; committed %x", seg.ID, seg.State, seg.Healthy, seg.Kind, seg.Used, cm.Segment)
	}
	psize := uint64(e.r.coder.PieceSize(int(seg.Class)))
	var idx []int
	for _, sp := range cm.Pieces {
		idx = append(idx, int(sp.Index))
		node := f.peers[sp.Index].tr.Identity().ID()
		f.peers[sp.Index].mu.Lock()
		held, ok := f.peers[sp.Index].pieces[sp.Piece]
		f.peers[sp.Index].mu.Unlock()
		if sp.Node != node || !ok || uint64(len(held)) != sp.Size || sp.Size != psize {
			t.Fatalf("committed piece %d: node %s (want %s), held %v, %d bytes (piece %d)", sp.Index, sp.Node, node, ok, sp.Size, psize)
		}
		if id, _ := challenge.ComputeID(held); id != sp.Piece {
			t.Fatalf("committed piece %d: id %s, the node holds %s", sp.Index, sp.Piece, id)
		}
		if seg.Pieces[sp.Index].Node != node || seg.Pieces[sp.Index].Piece != sp.Piece {
			t.Fatalf("piece %d recorded on %s, committed on %s", sp.Index, seg.Pieces[sp.Index].Node, node)
		}
	}
	slices.Sort(idx)
	if !slices.Equal(idx, []int{0, 1, 3}) || seg.Pieces[2] != (meta.SegmentPiece{}) {
		t.Fatalf("committed pieces %v, want 0, 1, 3 (node 2 refused); recorded piece 2 %v", idx, seg.Pieces[2])
	}
	f.mu.Lock()
	nrel := len(f.releases)
	f.mu.Unlock()
	if nrel != 0 {
		t.Fatalf("%d releases after a committed upload: a committed segment released", nrel)
	}
	if want := 3 * psize * uint64(seg.K) / uint64(seg.N); e.r.st.UploadDone != want {
		t.Fatalf("upload progress %d, want three pieces' share %d", e.r.st.UploadDone, want)
	}
	for _, id := range ids {
		l, err := e.idx.GetLocation(id)
		if err != nil || l.Segment != seg.ID {
			t.Fatalf("chunk %s: %v, in %s", id, err, l.Segment)
		}
	}

	// K stored: refused, released, nothing committed or located.
	ids2, _ := e.addChunks(t, rng, 5000)
	f.peers[1].set(peerRefuse)
	err = e.r.uploadSegment(e.planFor(t, ids2))
	if err == nil || !strings.Contains(err.Error(), "2 of 4 pieces stored") {
		t.Fatalf("upload with two nodes refusing: %v", err)
	}
	f.mu.Lock()
	nc, rel := len(f.commits), slices.Clone(f.releases)
	f.mu.Unlock()
	if nc != 1 || len(rel) != 1 || rel[0][0] != 0xee {
		t.Fatalf("%d commits, releases %x: want no new commit and the placement released", nc, rel)
	}
	if _, err := e.idx.GetLocation(ids2[0]); err == nil {
		t.Fatal("a chunk of the refused upload got a location")
	}
	if n := intents(t, e); n != 0 || e.r.intentsLeft {
		t.Fatalf("%d upload intents left (retry asked %v) after the placement was released", n, e.r.intentsLeft)
	}
	// The mediator knows the placement no more: released all the same.
	f.refuse(fnet.CodeNotFound, 0)
	if err := e.r.uploadSegment(e.planFor(t, ids2)); err == nil {
		t.Fatal("upload with two nodes refusing succeeded")
	}
	if n := intents(t, e); n != 0 || e.r.intentsLeft {
		t.Fatalf("%d upload intents left (retry asked %v) after a release the mediator did not need", n, e.r.intentsLeft)
	}
	// The mediator fails the release: the intent stays, for a retry.
	f.refuse(fnet.CodeBadRequest, 0)
	if err := e.r.uploadSegment(e.planFor(t, ids2)); err == nil {
		t.Fatal("upload with two nodes refusing succeeded")
	}
	if n := intents(t, e); n != 1 || !e.r.intentsLeft {
		t.Fatalf("%d upload intents left (retry asked %v) after a failed release, want 1 and a retry", n, e.r.intentsLeft)
	}
}

// intents is how many upload intents the index holds.
func intents(t *testing.T, e *engine) int {
	t.Helper()
	n := 0
	if err := e.idx.ReplRecords("up/", func(string, []byte) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestUploadWaitsLongerForLargePieces: a piece upload may take its
// PieceTimeout and a second more per MiB of the piece. Nodes that answer a
// piece of 8 MiB only once PieceTimeout and half its allowance have passed
// since it came (peerLate: never sooner, whatever the transfer took) still
// store it; without the allowance, or with less than half of it, every
// piece would time out before its node answers. The transfer itself has
// the whole bound, PieceTimeout and 8 s: it took up to 7 s for the four
// pieces under -race at a load of 26. (The nodes used to sleep 1.3 s
// before they read the pieces, with a PieceTimeout of 1 s: the pieces then
// ended within half a second of their 9 s.) Should one still miss it, the
// upload commits with more than K of them.
func TestUploadWaitsLongerForLargePieces(t *testing.T) {
	e, f := peerEngine(t, 4, func(c *Config) { c.PieceTimeout = 4 * time.Second })
	pt := e.r.cfg.PieceTimeout
	for _, c := range []struct {
		size int
		want time.Duration
	}{{0, pt}, {1<<20 - 1, pt}, {1 << 20, pt + time.Second}, {8<<20 + 8<<10, pt + 8*time.Second}} {
		if got := e.r.pieceUploadTimeout(c.size); got != c.want {
			t.Fatalf("a piece of %d bytes may upload for %v, want %v", c.size, got, c.want)
		}
	}
	class := SizeClasses[4] // pieces of 8 MiB and more
	psize := e.r.coder.PieceSize(class)
	f.setDelay(pt + (e.r.pieceUploadTimeout(psize)-pt)/2)
	for _, p := range f.peers {
		p.set(peerLate)
	}
	content := segmentData(30, class)
	_, n, err := e.r.put(content[:class-100], class)
	if err != nil {
		t.Fatalf("upload to nodes slower than PieceTimeout, within its allowance for the piece size: %v", err)
	}
	if n <= e.r.cfg.Scheme.K {
		t.Fatalf("%d pieces stored", n)
	}
}

// TestUploadAllRound: a round uploads its plan and, while the uploads run,
// looks again for full segments written meanwhile (not a partly filled
// one) and takes them on; while it runs, the status counts the bytes
// being uploaded and the planned chunks are in flight (no second plan
// takes them); after it, nothing is in flight and the counts are back to
// zero. A round ends with its last upload. A round whose uploads fail
// returns the failure, commits nothing and leaves the chunks pending.
func TestUploadAllRound(t *testing.T) {
	old := MaxSegment
	MaxSegment = SizeClasses[1]
	t.Cleanup(func() { MaxSegment = old })
	// Four slots for three segments: the round looks for more at once,
	// finds nothing, and looks again while the three upload.
	e, f := peerEngine(t, 4, func(c *Config) { c.Parallel, c.PieceTimeout = 4, time.Minute })
	e.r.streamFor = 5 * time.Minute // a loaded machine must not end the round first
	// Held nodes: the round's uploads last until the test lets them go,
	// once it has written the chunks the round is to take on. (Nodes that
	// answered after two seconds let a loaded machine end the round, or
	// time its pieces out, before the test wrote them.)
	for _, p := range f.peers {
		p.set(peerHeld)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	half := MaxSegment / 2
	var plan []*plannedSegment
	var all []meta.ChunkID
	total := 0
	for range 3 {
		ids, _ := e.addChunks(t, rng, half, half)
		p := e.planFor(t, ids)
		plan = append(plan, p)
		all = append(all, ids...)
		total += p.used
	}
	done := make(chan error, 1)
	go func() { done <- e.r.uploadAll(plan) }()
	// Every piece of the three segments reached its node: the round has
	// started its three uploads, and its fourth slot has looked for more
	// by now as a rule (found nothing); whenever it looks, the chunks
	// written below are there before any upload can end.
	arrived := func() (n int64) {
		for _, p := range f.peers {
			n += p.arrived.Load()
		}
		return n
	}
	want := int64(len(plan) * len(f.peers))
	for deadline := time.Now().Add(time.Minute); arrived() < want; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			f.letGo()
			t.Fatalf("%d piece uploads reached the nodes within a minute, want %d", arrived(), want)
		}
	}
	e.r.mu.Lock()
	upTotal, inflight := e.r.st.UploadTotal, len(e.r.inflight)
	e.r.mu.Unlock()
	if upTotal != uint64(total) || inflight != len(all) {
		f.letGo()
		t.Fatalf("while uploading: %d bytes counted, %d chunks in flight; want %d and %d", upTotal, inflight, total, len(all))
	}
	// A full segment, and a third chunk that follows it (the last segment
	// of the pending feed waits for more, even when it is exactly full).
	late, _ := e.addChunks(t, rng, half, half, half)
	f.letGo() // held nodes answer from now on
	if err := <-done; err != nil {
		t.Fatalf("round: %v", err)
	}
	f.mu.Lock()
	nc := len(f.commits)
	f.mu.Unlock()
	if nc != 4 || e.r.refills.Load() != 1 {
		t.Fatalf("%d segments committed, %d plans taken on: want the 3 planned and the one written meanwhile", nc, e.r.refills.Load())
	}
	for _, id := range append(all, late[:2]...) {
		if _, err := e.idx.GetLocation(id); err != nil {
			t.Fatalf("chunk %s not located after the round: %v", id, err)
		}
	}
	if _, err := e.idx.GetLocation(late[2]); err == nil {
		t.Fatal("the last chunk, a partly filled segment, went in the round")
	}
	e.r.mu.Lock()
	upTotal, upDone := e.r.st.UploadTotal, e.r.st.UploadDone
	inflight = len(e.r.inflight)
	e.r.mu.Unlock()
	if upTotal != 0 || upDone != 0 || inflight != 0 {
		t.Fatalf("after the round: %d of %d bytes counted, %d chunks in flight", upDone, upTotal, inflight)
	}
	f.setDelay(200 * time.Millisecond)
	for _, p := range f.peers {
		p.set(peerSlow)
	}

	// A round with nothing more to take on ends with its last upload
	// (the test's bound: streamFor is five minutes).
	one, _ := e.addChunks(t, rng, half, half, 100)
	ended := make(chan error, 1)
	go func() { ended <- e.r.uploadAll([]*plannedSegment{e.planFor(t, one[:2])}) }()
	select {
	case err := <-ended:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("a round whose uploads are done did not end")
	}

	// Two nodes refuse: every upload fails, the round says so.
	f.peers[0].set(peerRefuse)
	f.peers[1].set(peerRefuse)
	ids, _ := e.addChunks(t, rng, half, half)
	ids2, _ := e.addChunks(t, rng, half, half)
	err := e.r.uploadAll([]*plannedSegment{e.planFor(t, ids), e.planFor(t, ids2)})
	if err == nil || !strings.Contains(err.Error(), "2 of 4 pieces stored") {
		t.Fatalf("round with two nodes of four refusing: %v", err)
	}
	f.mu.Lock()
	nc = len(f.commits)
	f.mu.Unlock()
	if nc != 5 || len(e.r.inflight) != 0 {
		t.Fatalf("%d commits, %d chunks in flight after the failed round", nc, len(e.r.inflight))
	}
	pend := pendingIDs(t, e.idx)
	for _, id := range append(ids, ids2...) {
		if !pend[id] {
			t.Fatalf("chunk %s of a failed upload left the pending feed", id)
		}
	}
}

// TestUploadForgetsVanishedChunks: a chunk planned for a segment that is
// gone from the store by the time it is packed, and that its file no
// longer references (superseded), leaves the pending feed with the upload;
// the chunks packed are located.
func TestUploadForgetsVanishedChunks(t *testing.T) {
	e, _ := peerEngine(t, 4, nil)
	rng := rand.New(rand.NewPCG(9, 10))
	ids, _ := e.addChunks(t, rng, 4000, 5000)
	p := e.planFor(t, ids)
	if err := e.store.Delete(ids[1]); err != nil {
		t.Fatal(err)
	}
	commit(t, e.idx, func(b *meta.Batch) {
		b.PutChunk(e.ino, 1, &meta.ChunkRef{ID: meta.ChunkID{0xfe}, Version: 2, Len: 10})
	})
	if err := e.r.uploadSegment(p); err != nil {
		t.Fatal(err)
	}
	if _, err := e.idx.GetLocation(ids[0]); err != nil {
		t.Fatalf("the chunk packed: %v", err)
	}
	if pendingIDs(t, e.idx)[ids[1]] {
		t.Fatal("a superseded chunk gone from the store is still pending after the upload")
	}
}
