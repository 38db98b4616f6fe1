package replicate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/fincrypt/fincrypt/chunkstore"
	"github.com/fincrypt/fincrypt/internal/fault"
	"github.com/fincrypt/fincrypt/meta"
	fnet "github.com/fincrypt/fincrypt/net"
)

// Packing takes a chunk that ends exactly at the limit and a chunk of no
// bytes; padding takes content of exactly the class, pads in content's own
// array when its capacity is exactly the class, and refuses a class of 0.
func TestPackSegmentEdges(t *testing.T) {
	id := func(i byte) meta.ChunkID { return meta.ChunkID{i} }
	store := map[meta.ChunkID][]byte{
		id(1): bytes.Repeat([]byte{1}, 10),
		id(2): {},
		id(3): bytes.Repeat([]byte{3}, 20),
	}
	plan := []pendingChunk{{id: id(1), size: 10}, {id: id(2), size: 0}, {id: id(3), size: 20}}
	p, skipped, err := packSegment(fakeGet(store, nil), plan, 30)
	if err != nil || len(skipped) != 0 || len(p.ids) != 3 || len(p.content) != 30 {
		t.Fatalf("limit 30 for 30 bytes: %d ids, %d bytes, skipped %v, err %v", len(p.ids), len(p.content), skipped, err)
	}
	if p.locs[1] != (meta.Location{Offset: 10, Length: 0}) || p.locs[2] != (meta.Location{Offset: 10, Length: 20}) {
		t.Fatalf("locations %v", p.locs)
	}

	full := bytes.Repeat([]byte{7}, 64)
	d, err := padToClass(full, 64)
	if err != nil || !bytes.Equal(d, full) {
		t.Fatalf("content of exactly the class: %v, %v", d, err)
	}
	c := make([]byte, 5, 64)
	copy(c, "hello")
	d, err = padToClass(c, 64)
	if err != nil || len(d) != 64 || string(d[:5]) != "hello" || &d[0] != &c[0] {
		t.Fatalf("capacity exactly the class: %d bytes, own array %v, err %v", len(d), len(d) > 0 && &d[0] == &c[0], err)
	}
	if d, err := padToClass(nil, 0); err == nil {
		t.Fatalf("class 0 accepted: %d bytes", len(d))
	}
}

// The payments block: a debt shown positive, a runway of zero runs out
// now, a runway of a century or more has no date.
func TestPaymentStatusEdges(t *testing.T) {
	at := time.Date(2026, 12, 7, 1, 0, 0, 0, time.UTC)
	p := paymentStatus(&fnet.BalanceReply{Metered: true, Debt: -7, Runway: 0, Period: time.Hour}, at, 2)
	if p.DebtSat != 7 {
		t.Fatalf("debt %d sat, want 7", p.DebtSat)
	}
	if p.RunwaySeconds != 0 || p.RunsOutAt == nil || !p.RunsOutAt.Equal(at) {
		t.Fatalf("runway 0: %d s, runs out %v", p.RunwaySeconds, p.RunsOutAt)
	}
	century := 100 * 365 * 24 * time.Hour
	p = paymentStatus(&fnet.BalanceReply{Metered: true, Runway: century, Period: time.Hour}, at, 2)
	if p.RunsOutAt != nil || p.RunwaySeconds != int64(century.Seconds()) {
		t.Fatalf("runway of a century: %d s, runs out %v", p.RunwaySeconds, p.RunsOutAt)
	}
	p = paymentStatus(&fnet.BalanceReply{Metered: true, Runway: century - time.Second, Period: time.Hour}, at, 2)
	if p.RunsOutAt == nil {
		t.Fatal("a runway just under a century has no date")
	}
}

// Status counts the data segments (durable, degraded, dead, the bytes
// stored, the fewest healthy pieces), again after one changes; the
// pending figures come from the index and the open files, not the
// engine's last count; payments use the scheme's N/K; a refused
// placement is shown and the vault is then not protected.
func TestStatusCountsSegments(t *testing.T) {
	r := offlineReplicator(t, nil)
	put := func(segs ...meta.Segment) {
		t.Helper()
		b := r.idx.NewBatch()
		for i := range segs {
			b.PutSegment(&segs[i])
		}
		if err := b.Commit(false); err != nil {
			t.Fatal(err)
		}
	}
	k, n := uint8(r.cfg.Scheme.K), uint8(r.cfg.Scheme.N)
	seg := func(i byte, state meta.SegmentState, healthy uint8, class uint32, dead int64) meta.Segment {
		return meta.Segment{ID: meta.SegmentID{i}, Kind: meta.KindData, State: state, K: k, N: n, Healthy: healthy,
			Used: class / 2, Class: class, Created: 1, DeadSince: dead}
	}
	put(seg(1, meta.SegmentDurable, n, 1000, 0), seg(2, meta.SegmentDegraded, n-1, 2000, 0),
		seg(3, meta.SegmentDurable, n, 4000, time.Now().UnixNano()),
		meta.Segment{ID: meta.SegmentID{4}, Kind: meta.KindSnapshot, State: meta.SegmentDegraded, K: k, N: n, Healthy: 1, Class: 8000, Created: 1})

	r.mu.Lock()
	r.st.PendingChunks, r.st.PendingFiles, r.st.PendingBytes = 9, 5, 99 // a stale count
	r.unsaved = func() ([]uint64, int, uint64) { return []uint64{42}, 2, 300 }
	r.mu.Unlock()

	st := r.Status(context.Background())
	if st.SegmentsDurable != 1 || st.SegmentsDegraded != 1 || st.SegmentsDead != 1 || st.StoredBytes != 7000 || st.MinHealthy != int(n-1) {
		t.Fatalf("segments: durable %d degraded %d dead %d stored %d min healthy %d", st.SegmentsDurable, st.SegmentsDegraded,
			st.SegmentsDead, st.StoredBytes, st.MinHealthy)
	}
	if st.PendingChunks != 2 || st.PendingBytes != 300 || st.PendingFiles != 1 || st.UnsavedOpenFiles != 1 {
		t.Fatalf("pending: %d chunks %d bytes %d files, %d unsaved", st.PendingChunks, st.PendingBytes, st.PendingFiles, st.UnsavedOpenFiles)
	}
	if st.Errors == nil || len(st.Errors) != 0 {
		t.Fatalf("errors %#v, want an empty list", st.Errors)
	}
	if !st.Protected || st.Refusal != nil || st.Payments != nil {
		t.Fatalf("protected %v, refusal %+v, payments %+v", st.Protected, st.Refusal, st.Payments)
	}

	// A segment changes: counted again.
	put(seg(2, meta.SegmentDurable, n, 2000, 0))
	st = r.Status(context.Background())
	if st.SegmentsDurable != 2 || st.SegmentsDegraded != 0 || st.MinHealthy != int(n) {
		t.Fatalf("after a change: durable %d degraded %d min healthy %d", st.SegmentsDurable, st.SegmentsDegraded, st.MinHealthy)
	}
	// A segment with no healthy piece, listed first: the fewest stays 0.
	put(seg(0, meta.SegmentDegraded, 0, 500, 0))
	if st = r.Status(context.Background()); st.MinHealthy != 0 || st.SegmentsDegraded != 1 {
		t.Fatalf("a segment of no healthy piece first: min healthy %d, degraded %d", st.MinHealthy, st.SegmentsDegraded)
	}

	r.mu.Lock()
	r.balance = &fnet.BalanceReply{Metered: true, CanPlace: true, Escrow: 1000, Price: 100, Period: time.Hour, Runway: time.Hour}
	r.refused = &Refusal{Reason: "the mediator refuses placements: full"}
	r.mu.Unlock()
	st = r.Status(context.Background())
	want := 100 * float64(n) / float64(k)
	if st.Payments == nil || st.Payments.PricePerGiBMonth != want {
		t.Fatalf("payments %+v, want a price of %v", st.Payments, want)
	}
	if st.Protected || st.Refusal == nil || st.Refusal.Reason != r.refused.Reason || st.Refusal.WaitingBytes != 300 {
		t.Fatalf("protected %v, refusal %+v", st.Protected, st.Refusal)
	}
}

// A trim evicts durable chunks, oldest first, until the store is down to
// trimLow of the limit and no further (a store exactly at the low mark
// keeps the rest), and returns how many it evicted.
func TestEvictToStopsAtLow(t *testing.T) {
	const chunk = 1024
	_, idx, store := localVault(t)
	r := &Replicator{idx: idx, store: store, log: slog.New(slog.DiscardHandler)}
	const limit = 8 * chunk // low: 7 chunks
	seg := &meta.Segment{ID: meta.SegmentID{1}, Kind: meta.KindData, State: meta.SegmentDurable, K: 2, N: 4, Healthy: 4, Class: 1 << 20}
	b := idx.NewBatch()
	b.PutSegment(seg)
	for i := range 10 {
		id := chunkstore.NewID()
		if err := store.Put(id, make([]byte, chunk)); err != nil {
			t.Fatal(err)
		}
		b.PutLocation(id, &meta.Location{Segment: seg.ID, Offset: uint32(i * chunk), Length: chunk})
	}
	if err := b.Commit(false); err != nil {
		t.Fatal(err)
	}
	n, err := r.evictTo(limit, false)
	if err != nil {
		t.Fatal(err)
	}
	left, _ := store.Bytes()
	if n != 3 || uint64(left) != trimLow(limit) {
		t.Fatalf("evicted %d chunks, %d bytes left; want 3 and %d", n, left, trimLow(limit))
	}
}

// A second refused placement keeps the time of the first: the refusal
// dates from when placements stopped, not from the latest attempt.
func TestPlaceRefusedKeepsItsStart(t *testing.T) {
	r := &Replicator{}
	refuse := &fnet.RemoteError{Code: fnet.CodeFull, Message: "full"}
	r.notePlaceRefused(refuse)
	if r.refused == nil || r.refused.Since == nil {
		t.Fatalf("refusal %+v", r.refused)
	}
	first := *r.refused.Since
	time.Sleep(2 * time.Millisecond)
	r.notePlaceRefused(refuse)
	if r.refused == nil || r.refused.Since == nil || !r.refused.Since.Equal(first) {
		t.Fatalf("second refusal since %v, want the first's %v", r.refused.Since, first)
	}
}

// setDefaults fills what is zero and keeps what was given (a logger and a
// fault board included); Validate refuses a repack threshold of 1 and a
// retry maximum below the minimum, and takes them equal; the size class
// of exactly a class's bytes is that class; the admission window of a
// cache is its limit, with a head of an eighth of it at most.
func TestConfigDefaultsAndBounds(t *testing.T) {
	var c Config
	c.setDefaults()
	if c.ScanInterval != 2*time.Second || c.ReleaseDelay != 24*time.Hour || c.HedgeAfter != 2*time.Second || c.Parallel != 2 ||
		c.RepackBelow != 0.25 || c.Logger == nil || c.Faults == nil || c.Scheme != DefaultScheme {
		t.Fatalf("defaults of a zero config: %+v", c)
	}
	log := slog.New(slog.DiscardHandler)
	given := Config{ScanInterval: time.Millisecond, Parallel: 1, RepackBelow: 0.5, Logger: log, RetryMin: time.Second, RetryMax: time.Second}
	board := fault.New(log)
	given.Faults = board
	given.setDefaults()
	if given.ScanInterval != time.Millisecond || given.Parallel != 1 || given.RepackBelow != 0.5 || given.Logger != log || given.Faults != board {
		t.Fatalf("given settings not kept: %+v", given)
	}
	if err := given.Validate(); err != nil {
		t.Fatalf("retry max equal to min refused: %v", err)
	}
	for _, bad := range []Config{{RepackBelow: 1, RetryMin: time.Second, RetryMax: time.Second},
		{RepackBelow: 0.5, RetryMin: 2 * time.Second, RetryMax: time.Second}} {
		bad.setDefaults()
		if err := bad.Validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("%v/%v/%v: %v, want ErrConfig", bad.RepackBelow, bad.RetryMin, bad.RetryMax, err)
		}
	}
	for i, c := range SizeClasses {
		if got := classFor(c); got != c {
			t.Errorf("classFor(%d) = %d, want the class itself", c, got)
		}
		if i+1 < len(SizeClasses) && classFor(c+1) != SizeClasses[i+1] {
			t.Errorf("classFor(%d) = %d, want %d", c+1, classFor(c+1), SizeClasses[i+1])
		}
	}
	if classFor(MaxSegment+1) != 0 {
		t.Error("a class for more than MaxSegment")
	}
	if a := admission(64 << 20); a.Window != 64<<20 || a.Head != 8<<20 {
		t.Errorf("admission of 64 MiB: %+v", a)
	}
	if a := admission(0); a.Window != unlimitedWindow || a.Head != streamHead {
		t.Errorf("admission without a limit: %+v", a)
	}
}

// The status page leads with the refusal, the escrow warning and a
// payments warning that differs from it; it shows the cache limit, the
// last sync and the failing work; the gauges give the last sync in
// seconds and the escrow only with payments on; a transfer counts its
// bytes only when it succeeded.
func TestStatusPageAndGauges(t *testing.T) {
	r := offlineReplicator(t, nil)
	gauges := func() map[string]float64 {
		t.Helper()
		reg := prometheus.NewRegistry()
		reg.MustRegister(mountCollector{r})
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]float64{}
		for _, mf := range mfs {
			for _, x := range mf.GetMetric() {
				m[mf.GetName()] = x.GetGauge().GetValue()
			}
		}
		return m
	}
	g := gauges()
	if v, ok := g["fincrypt_mount_last_sync_timestamp_seconds"]; !ok || v != 0 {
		t.Fatalf("last sync gauge before any: %v, %v", v, ok)
	}
	if _, ok := g["fincrypt_mount_escrow_sats"]; ok {
		t.Fatal("an escrow gauge without payments")
	}
	page, err := r.StatusPage(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if text := fmt.Sprintf("%+v", page); len(page.Warnings) != 0 || !strings.Contains(text, "no limit") || !strings.Contains(text, "Name:Last sync Value:never") {
		t.Fatalf("a quiet page: warnings %q, page %s", page.Warnings, text)
	}

	r.mu.Lock()
	r.lastSync = time.Unix(1_700_000_000, 500_000_000)
	r.st.CacheLimit = 3 << 20
	r.escrow = "escrow low: the mediator says so"
	r.balance = &fnet.BalanceReply{Metered: true, Escrow: 1234, Bytes: 2 << 30, Price: 150, Period: time.Hour,
		Runway: 100 * time.Hour, WarnRunway: 7 * 24 * time.Hour, Low: true, CanPlace: true}
	r.refused = &Refusal{Reason: "the mediator refuses placements: full"}
	r.mu.Unlock()
	r.faults.Fail("upload", errors.New("boom"))
	g = gauges()
	if g["fincrypt_mount_last_sync_timestamp_seconds"] != 1_700_000_000.5 || g["fincrypt_mount_escrow_sats"] != 1234 {
		t.Fatalf("gauges: last sync %v, escrow %v", g["fincrypt_mount_last_sync_timestamp_seconds"], g["fincrypt_mount_escrow_sats"])
	}
	page, err = r.StatusPage(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Warnings) != 3 || !strings.Contains(page.Warnings[0], "not protected") || page.Warnings[1] != r.escrow ||
		!strings.Contains(page.Warnings[2], "4d 4h") {
		t.Fatalf("warnings %q", page.Warnings)
	}
	text := fmt.Sprintf("%+v", page)
	for _, want := range []string{"Name:Limit Value:3.0 MiB", "Name:Last sync Value:2023-11-14 22:13:20 UTC", "Name:Escrow Value:1234 sat"} {
		if !strings.Contains(text, want) {
			t.Errorf("page lacks %q: %s", want, text)
		}
	}
	if last := page.Sections[len(page.Sections)-1]; last.Table == nil || len(last.Table.Rows) != 1 || last.Table.Rows[0][0] != "upload" {
		t.Errorf("failing work: %+v", last.Table)
	}
	// The same warning from the escrow check and the payments: shown once.
	r.mu.Lock()
	r.escrow = r.balance.Verdict()
	r.mu.Unlock()
	if page, _ = r.StatusPage(context.Background()); len(page.Warnings) != 2 {
		t.Fatalf("warnings %q, want the escrow warning once", page.Warnings)
	}

	ts := newTransferStats("upload", "uploads", "uploaded")
	ts.done(time.Now(), 100, errors.New("failed"))
	ts.done(time.Now(), 40, nil)
	value := func(c prometheus.Counter) float64 {
		var m dto.Metric
		if err := c.Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetCounter().GetValue()
	}
	if got := value(ts.bytes); got != 40 {
		t.Fatalf("transfer bytes %v, want 40 (the failed one not counted)", got)
	}
	if got := value(ts.errors); got != 1 {
		t.Fatalf("transfer errors %v, want 1", got)
	}
}

// The control socket, served in process: status, sync and sync-timeout
// (a duration of 0 refused), an unknown command, a streamed command's
// lines then its reply, a handler that panics answers an error; the
// socket is the owner's only and gone after Close.
func TestControlSocketInProcess(t *testing.T) {
	r := offlineReplicator(t, nil)
	home := t.TempDir()
	c, err := ServeControl(home, r)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fi, err := os.Stat(filepath.Join(home, ControlSocketName))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket %v, %v", fi, err)
	}
	r.mu.Lock()
	r.st.CacheLimit = 777
	r.mu.Unlock()
	st, err := QueryStatus(home)
	if err != nil || st.CacheLimit != 777 || st.Errors == nil {
		t.Fatalf("status %+v, %v", st, err)
	}
	if mark, err := RequestSync(home); err != nil || mark.IsZero() {
		t.Fatalf("sync: %v, %v", mark, err)
	}
	if err := SetSyncTimeout(home, 3*time.Second); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	got := r.syncTimeout
	r.mu.Unlock()
	if got != 3*time.Second {
		t.Fatalf("sync timeout %v", got)
	}
	if err := SetSyncTimeout(home, 0); err == nil || !strings.Contains(err.Error(), "positive duration") {
		t.Fatalf("sync-timeout 0: %v", err)
	}
	var rep map[string]string
	if err := Call(home, "nonsense", &rep, time.Minute); err != nil || rep["error"] != "unknown command" {
		t.Fatalf("unknown command: %v, %v", rep, err)
	}
	rep = nil // a timeout of 0: as long as it takes
	if err := Call(home, "nonsense", &rep, 0); err != nil || rep["error"] != "unknown command" {
		t.Fatalf("unknown command, no timeout: %v, %v", rep, err)
	}
	c.HandleStream("count", func(ctx context.Context, arg string, send func(any) error) any {
		for i := range 3 {
			send(map[string]int{"line": i})
		}
		return map[string]string{"done": arg}
	})
	var lines []string
	if err := CallLines(home, "count to three", time.Minute, func(line json.RawMessage) (bool, error) {
		lines = append(lines, string(line))
		return strings.Contains(string(line), "done"), nil
	}); err != nil || len(lines) != 4 || lines[3] != `{"done":"to three"}` {
		t.Fatalf("streamed: %q, %v", lines, err)
	}
	c.Handle("boom", func(ctx context.Context, arg string) any { panic("handler broke") })
	rep = nil
	if err := Call(home, "boom", &rep, time.Minute); err != nil || !strings.Contains(rep["error"], "handler broke") {
		t.Fatalf("a panicking handler: %v, %v", rep, err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(home, ControlSocketName)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket left after Close: %v", err)
	}
	if _, err := QueryStatus(home); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("status after Close: %v, want ErrNotRunning", err)
	}
}

// A clean stop's idle record brings back, at the next start, what the
// engine knew settled: maintenance idle until its next due time, the
// cache's byte count (not when the cache was dirty), the snapshot tie to
// the key file, and maintenance's live count; it is read once and
// deleted, and a record of a wrong length or with no bit set brings back
// nothing.
func TestIdleRecordRoundTrip(t *testing.T) {
	r := offlineReplicator(t, nil)
	r.idx.TrackLive(maxLiveChanges) // as New does, and the mount's RefSum tracking
	sum, err := r.idx.WalkRefSum()
	if err != nil {
		t.Fatal(err)
	}
	r.idx.TrackRefs(sum)
	key, err := r.readKeyFile()
	if err != nil {
		t.Fatal(err)
	}
	settle := func(dirty bool) {
		gen, sg := r.idx.Generation(), r.idx.StateGeneration()
		r.maintGen, r.maintNext = gen+1, time.Unix(0, 1_234_567_890)
		r.evictGen, r.cacheDirty, r.st.CacheBytes = gen+1, dirty, 999
		r.snapHash, r.snapGen, r.protKey = []byte("hash"), sg+1, key
		r.liveCount = map[meta.SegmentID]uint64{{1}: 10, {2}: 20}
	}
	forget := func() {
		r.maintGen, r.maintNext, r.evictGen, r.st.CacheBytes = 0, time.Time{}, 0, 0
		r.protKey, r.protGen, r.snapGen, r.liveCount = nil, 0, 0, nil
	}
	settle(false)
	r.saveIdle()
	forget()
	r.loadIdle()
	gen, sg := r.idx.Generation(), r.idx.StateGeneration()
	if r.maintGen != gen+1 || !r.maintNext.Equal(time.Unix(0, 1_234_567_890)) {
		t.Errorf("maintenance: gen %d (index %d), next %v", r.maintGen, gen, r.maintNext)
	}
	if r.evictGen != gen+1 || r.st.CacheBytes != 999 {
		t.Errorf("cache: gen %d (index %d), %d bytes", r.evictGen, gen, r.st.CacheBytes)
	}
	if !bytes.Equal(r.protKey, key) || r.protGen != sg+1 || r.snapGen != sg+1 {
		t.Errorf("snapshot tie: key %v, prot gen %d, snap gen %d (state %d)", r.protKey != nil, r.protGen, r.snapGen, sg)
	}
	if len(r.liveCount) != 2 || r.liveCount[meta.SegmentID{1}] != 10 || r.liveCount[meta.SegmentID{2}] != 20 {
		t.Errorf("live count %v", r.liveCount)
	}
	if _, err := r.idx.GetRepl(idleCloseName); err == nil {
		t.Error("idle record left after it was read")
	}
	if _, err := r.idx.GetRepl(liveCountName); err == nil {
		t.Error("live count record left after it was read")
	}

	// A dirty cache is counted again; the rest comes back.
	settle(true)
	r.saveIdle()
	forget()
	r.loadIdle()
	if r.evictGen != 0 || r.st.CacheBytes != 0 || r.maintGen == 0 {
		t.Errorf("after a dirty cache: evict gen %d, %d bytes, maint gen %d", r.evictGen, r.st.CacheBytes, r.maintGen)
	}

	// A record of the wrong length, or with nothing set: nothing trusted.
	for _, rec := range [][]byte{make([]byte, idleCloseLen-1), make([]byte, idleCloseLen)} {
		rec[0] = idleMaint | idleCache
		if len(rec) == idleCloseLen {
			rec[0] = 0
		}
		b := r.idx.NewBatch()
		b.PutRepl(idleCloseName, rec)
		if err := b.Commit(false); err != nil {
			t.Fatal(err)
		}
		forget()
		r.loadIdle()
		if r.maintGen != 0 || r.evictGen != 0 || r.protKey != nil {
			t.Errorf("record of %d bytes, flags %d: maint gen %d, evict gen %d", len(rec), rec[0], r.maintGen, r.evictGen)
		}
	}
	// Nothing to save: no record.
	forget()
	r.saveIdle()
	if _, err := r.idx.GetRepl(idleCloseName); err == nil {
		t.Error("an idle record with nothing in it")
	}
}

// The escrow is asked again every CheckInterval, or every period of a
// metered mediator when shorter (a second at least), and at once after a
// refusal.
func TestEscrowDue(t *testing.T) {
	r := &Replicator{cfg: Config{CheckInterval: 10 * time.Minute}}
	last := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	due := func(after time.Duration) bool { return r.escrowDue(last.Add(after), last) }
	if due(10*time.Minute-time.Nanosecond) || !due(10*time.Minute) {
		t.Fatal("no balance: not due exactly at CheckInterval")
	}
	r.balance = &fnet.BalanceReply{Metered: true, Period: time.Minute}
	if due(time.Minute-time.Nanosecond) || !due(time.Minute) {
		t.Fatal("a period of a minute: not due exactly at the period")
	}
	r.balance = &fnet.BalanceReply{Metered: true}
	if due(2 * time.Second) {
		t.Fatal("no period: due after two seconds")
	}
	r.balance = &fnet.BalanceReply{Metered: true, Period: time.Millisecond}
	if due(time.Second-time.Nanosecond) || !due(time.Second) {
		t.Fatal("a period under a second: not every second")
	}
	r.balance = &fnet.BalanceReply{Metered: false, Period: time.Minute}
	if due(time.Minute) {
		t.Fatal("unmetered: due at its period")
	}
	r.escrowStale = true
	if !due(0) {
		t.Fatal("a stale escrow not due at once")
	}
}

// followLive applies the live-bytes feed to maintenance's count and
// records the pass done only while no segment is due: a dead segment
// past ReleaseDelay with a newer snapshot, a data segment the count has at
// zero, a durable one below RepackBelow of its use (exactly at it is
// kept). Done, it forgets released segments, sums the data segments'
// live bytes and sleeps until the first dead segment falls due.
func TestFollowLiveDecides(t *testing.T) {
	r := offlineReplicator(t, func(c *Config) { c.ReleaseDelay = time.Hour; c.RepackBelow = 0.25 })
	id := func(i byte) meta.SegmentID { return meta.SegmentID{i} }
	data := func(i byte, used uint32) meta.Segment {
		return meta.Segment{ID: id(i), Kind: meta.KindData, State: meta.SegmentDurable, K: 2, N: 4, Healthy: 4, Used: used}
	}
	died := time.Now().Add(-10 * time.Minute)
	dead := data(4, 1000)
	dead.DeadSince = died.UnixNano()
	snap := meta.Segment{ID: id(3), Kind: meta.KindSnapshot, State: meta.SegmentDurable, Used: 1000}
	r.liveCount = map[meta.SegmentID]uint64{id(1): 500, id(2): 300, id(3): 0, id(4): 0, id(9): 5}
	changes := []meta.LiveChange{{Segment: id(1), Bytes: 50, Live: true}, {Segment: id(1), Bytes: 30},
		{Segment: id(2), Bytes: 1000}}
	gen, lastSnap := r.idx.Generation(), time.Now()
	if r.followLive(changes, []meta.Segment{data(1, 1000), snap, dead, data(5, 1000)}, gen, lastSnap) {
		t.Fatal("a data segment the count has not seen: not due")
	}
	r.liveCount = map[meta.SegmentID]uint64{id(1): 500, id(2): 300, id(3): 0, id(4): 0, id(7): 250, id(9): 5}
	if !r.followLive(changes, []meta.Segment{data(1, 1000), snap, dead, data(7, 1000)}, gen, lastSnap) {
		t.Fatal("nothing due, but the pass not done")
	}
	if n := r.liveCount[id(1)]; n != 520 {
		t.Errorf("segment 1 counts %d live bytes, want 520", n)
	}
	if _, ok := r.liveCount[id(2)]; ok {
		t.Error("released segment 2 still counted")
	}
	if _, ok := r.liveCount[id(9)]; ok {
		t.Error("released segment 9 still counted")
	}
	if r.st.LiveBytes != 520+250 || r.st.LiveCounted == nil {
		t.Errorf("live bytes %d, want %d", r.st.LiveBytes, 520+250)
	}
	if r.maintGen != gen+1 || !r.maintSnap.Equal(lastSnap) || !r.maintNext.Equal(died.Add(time.Hour)) {
		t.Errorf("maint gen %d (index %d), next %v, want %v", r.maintGen, gen, r.maintNext, died.Add(time.Hour))
	}
	for name, segs := range map[string][]meta.Segment{
		"below RepackBelow": {data(1, 2081)},
		"a dead segment past ReleaseDelay with a newer snapshot": {func() meta.Segment {
			s := data(1, 1000)
			s.DeadSince = time.Now().Add(-2 * time.Hour).UnixNano()
			return s
		}()},
	} {
		r.liveCount = map[meta.SegmentID]uint64{id(1): 520}
		if r.followLive(nil, segs, gen, time.Now()) {
			t.Errorf("%s: not due", name)
		}
	}
	// A dead segment past the delay but no snapshot since: not due.
	s := data(1, 1000)
	s.DeadSince = time.Now().Add(-2 * time.Hour).UnixNano()
	r.liveCount = map[meta.SegmentID]uint64{id(1): 520}
	if !r.followLive(nil, []meta.Segment{s}, gen, time.Now().Add(-3*time.Hour)) {
		t.Error("a dead segment with no snapshot since its death: due")
	}
}
