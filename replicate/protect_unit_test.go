package replicate

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/chunkstore"
	"github.com/fincrypt/fincrypt/erasure"
	"github.com/fincrypt/fincrypt/mediator"
	"github.com/fincrypt/fincrypt/meta"
	fnet "github.com/fincrypt/fincrypt/net"
	"github.com/fincrypt/fincrypt/vault"
)

// offlineReplicator is an engine over a real vault, index and chunk store
// whose mediator never answers: its address is a UDP socket nobody reads,
// so every network call fails at CallTimeout. Nothing runs in the
// background; the test calls the engine's steps itself.
func offlineReplicator(t testing.TB, tune func(*Config)) *Replicator {
	t.Helper()
	v, idx, store := localVault(t)
	return offlineReplicatorOver(t, v, idx, store, tune)
}

// offlineReplicatorOver is offlineReplicator over the given vault, index
// and chunk store.
func offlineReplicatorOver(t testing.TB, v *vault.Vault, idx *meta.Index, store *chunkstore.Store, tune func(*Config)) *Replicator {
	t.Helper()
	cfg := fastConfig()
	cfg.CallTimeout = 300 * time.Millisecond
	cfg.Logger = slog.New(slog.DiscardHandler)
	if tune != nil {
		tune(&cfg)
	}
	cfg.setDefaults()
	coder, err := erasure.New(cfg.Scheme)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := vault.NewSealer(v.Keys.Segment[:], "fincrypt snapshot v1")
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	id, err := AccountIdentity(v)
	if err != nil {
		t.Fatal(err)
	}
	mc, err := mediator.NewClient(id, fnet.Address{ID: id.ID(), HostPort: pc.LocalAddr().String()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mc.Close() })
	r := &Replicator{cfg: cfg, log: cfg.Logger, faults: cfg.Faults, v: v, idx: idx, store: store, client: mc, coder: coder, snap: snap,
		done: make(chan struct{}), kick: make(chan struct{}, 1),
		inflight: map[meta.ChunkID]struct{}{}, firstSeen: map[meta.ChunkID]time.Time{},
		fetching: map[meta.SegmentID]*fetchCall{}, evictEvery: evictEvery, streamFor: streamFor}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	t.Cleanup(r.cancel)
	return r
}

// exportRecords returns a copy of every record Export gives.
func exportRecords(t *testing.T, idx *meta.Index) []record {
	t.Helper()
	var recs []record
	if err := idx.Export(func(k, v []byte) error {
		recs = append(recs, record{bytes.Clone(k), bytes.Clone(v)})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return recs
}

func feed(recs []record) func(fn func(key, sealed []byte) error) error {
	return func(fn func(key, sealed []byte) error) error {
		for _, rc := range recs {
			if err := fn(rc.key, rc.sealed); err != nil {
				return err
			}
		}
		return nil
	}
}

func commit(t testing.TB, idx *meta.Index, fill func(b *meta.Batch)) {
	t.Helper()
	b := idx.NewBatch()
	fill(b)
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
}

// TestStateHashCoversWhatASnapshotRestores: the state hash, which decides
// whether the stored snapshot still covers the index, changes with
// everything a restore brings back (the key file, every file record, which
// data segments exist and which are dead) and with nothing else (health
// checks, snapshot segments, the format record): a change it missed would
// be reported restorable and lost by a restore.
func TestStateHashCoversWhatASnapshotRestores(t *testing.T) {
	_, idx, _ := localVault(t)
	kf := []byte("key file v1")
	data := meta.Segment{ID: meta.SegmentID{1}, Kind: meta.KindData, State: meta.SegmentDurable, K: 2, N: 4, Healthy: 4, Class: 4096}
	snapSeg := meta.Segment{ID: meta.SegmentID{2}, Kind: meta.KindSnapshot, State: meta.SegmentDurable, K: 2, N: 4, Healthy: 4, Class: 4096}
	commit(t, idx, func(b *meta.Batch) {
		b.PutInode(&meta.Inode{Ino: 7, Mode: 0o100644, Size: 10})
		b.PutSegment(&data)
	})
	base := exportRecords(t, idx)
	hash := func(kf []byte, recs []record) []byte {
		t.Helper()
		h, err := stateHash(idx, kf, feed(recs))
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	want := hash(kf, base)
	if again := hash(kf, base); !bytes.Equal(want, again) {
		t.Fatal("the state hash of one state differs between two calls")
	}
	segKey := func(id meta.SegmentID) int {
		for i, rc := range base {
			if s, ok, _ := idx.OpenSegmentRecord(rc.key, rc.sealed); ok && s.ID == id {
				return i
			}
		}
		t.Fatalf("segment %s not exported", id)
		return -1
	}
	fileRec := -1
	for i, rc := range base {
		if _, ok, _ := idx.OpenSegmentRecord(rc.key, rc.sealed); !ok && rc.key[0] != 'F' {
			fileRec = i
			break
		}
	}
	if fileRec < 0 {
		t.Fatal("no file record exported")
	}
	with := func(edit func(recs []record) []record) []record {
		recs := make([]record, len(base))
		for i, rc := range base {
			recs[i] = record{bytes.Clone(rc.key), bytes.Clone(rc.sealed)}
		}
		return edit(recs)
	}
	// The segment records as the index seals them after a change.
	resealed := func(s meta.Segment) record {
		t.Helper()
		commit(t, idx, func(b *meta.Batch) { b.PutSegment(&s) })
		defer commit(t, idx, func(b *meta.Batch) { b.PutSegment(&data) })
		for _, rc := range exportRecords(t, idx) {
			if got, ok, _ := idx.OpenSegmentRecord(rc.key, rc.sealed); ok && got.ID == s.ID {
				return rc
			}
		}
		t.Fatalf("segment %s not exported", s.ID)
		return record{}
	}
	checked := data
	checked.Healthy, checked.State, checked.Checked = 3, meta.SegmentDegraded, 12345
	dead := data
	dead.DeadSince = 999
	other := data
	other.ID = meta.SegmentID{3}
	snapRec := resealed(snapSeg)
	snapDead := snapSeg
	snapDead.DeadSince = 999
	snapDeadRec := resealed(snapDead)
	checkedRec, deadRec, otherRec := resealed(checked), resealed(dead), resealed(other)

	for _, c := range []struct {
		name string
		kf   []byte
		recs []record
		same bool
	}{
		{"another key file", []byte("key file v2"), base, false},
		{"a file record's bytes changed", kf, with(func(r []record) []record { r[fileRec].sealed[0] ^= 1; return r }), false},
		{"a byte moved from a record's value to its key", kf, with(func(r []record) []record {
			rc := &r[fileRec]
			rc.key, rc.sealed = append(rc.key, rc.sealed[0]), rc.sealed[1:]
			return r
		}), false},
		{"a file record added", kf, with(func(r []record) []record {
			return append(r, record{append([]byte{r[fileRec].key[0]}, 0xff, 0xff), []byte("sealed")})
		}), false},
		{"a data segment released", kf, with(func(r []record) []record { i := segKey(data.ID); return append(r[:i], r[i+1:]...) }), false},
		{"another data segment", kf, with(func(r []record) []record { r[segKey(data.ID)] = otherRec; return r }), false},
		{"a data segment dead", kf, with(func(r []record) []record { r[segKey(data.ID)] = deadRec; return r }), false},
		{"a data segment's health checked", kf, with(func(r []record) []record { r[segKey(data.ID)] = checkedRec; return r }), true},
		{"a snapshot segment added", kf, with(func(r []record) []record { return append(r, snapRec) }), true},
		{"a snapshot segment dead", kf, with(func(r []record) []record { return append(r, snapDeadRec) }), true},
		{"a format record added", kf, with(func(r []record) []record { return append(r, record{[]byte("Fformat"), []byte("v9")}) }), true},
		{"an empty key", kf, with(func(r []record) []record { return append(r, record{nil, []byte("x")}) }), true},
	} {
		got := hash(c.kf, c.recs)
		if same := bytes.Equal(got, want); same != c.same {
			if c.same {
				t.Errorf("%s: the state hash changed (a snapshot would be taken for nothing)", c.name)
			} else {
				t.Errorf("%s: the state hash did not change (the old snapshot would count as covering it)", c.name)
			}
		}
	}
	// A segment record that does not open is an error, as is the walk's.
	bad := with(func(r []record) []record { r[segKey(data.ID)].sealed[0] ^= 1; return r })
	if _, err := stateHash(idx, kf, feed(bad)); err == nil {
		t.Error("a damaged segment record hashed without an error")
	}
	walkErr := errors.New("walk failed")
	if _, err := stateHash(idx, kf, func(func(k, v []byte) error) error { return walkErr }); !errors.Is(err, walkErr) {
		t.Errorf("the walk's error: got %v", err)
	}
}

// TestProtectionTiesTheSnapshotToTheIndex: protection says covered exactly
// while the live index is in the state the stored snapshot holds. It hashes
// the index once to tie the two, then follows the index's generation; any
// change, or a new key file, uncovers it, from the time first seen.
func TestProtectionTiesTheSnapshotToTheIndex(t *testing.T) {
	r := offlineReplicator(t, nil)
	commit(t, r.idx, func(b *meta.Batch) { b.PutInode(&meta.Inode{Ino: 7, Mode: 0o100644}) })

	// No snapshot stored: nothing is covered, and the index is not hashed.
	before := time.Now()
	covered, since, err := r.protection()
	if err != nil || covered {
		t.Fatalf("no snapshot: covered=%v err=%v", covered, err)
	}
	if since.Before(before) || since.After(time.Now()) {
		t.Fatalf("unprotected since %v, want the first call (%v)", since, before)
	}
	if n := r.hashes.Load(); n != 0 {
		t.Fatalf("the index was hashed %d times with no snapshot to compare it with", n)
	}
	if _, again, _ := r.protection(); !again.Equal(since) {
		t.Fatalf("unprotected since moved from %v to %v without a snapshot", since, again)
	}

	// The stored snapshot holds this state: covered after one hash, and
	// no more hashes while nothing changes.
	markStored(t, r)
	for i := range 3 {
		covered, since, err = r.protection()
		if err != nil || !covered || !since.IsZero() {
			t.Fatalf("call %d with the snapshot of this very state: covered=%v since=%v err=%v", i, covered, since, err)
		}
	}
	if n := r.hashes.Load(); n != 1 {
		t.Fatalf("the index was hashed %d times, want once", n)
	}
	if !r.syncWanted.IsZero() {
		t.Fatal("a covered index still wants a sync")
	}

	// A change uncovers it, and stays uncovered from then on.
	before = time.Now()
	commit(t, r.idx, func(b *meta.Batch) { b.PutInode(&meta.Inode{Ino: 8, Mode: 0o100644}) })
	covered, since, err = r.protection()
	if err != nil || covered {
		t.Fatalf("after a change: covered=%v err=%v", covered, err)
	}
	if since.Before(before) {
		t.Fatalf("unprotected since %v, before the change (%v)", since, before)
	}
	if r.lastChange.Before(before) {
		t.Fatalf("the last change is %v, before the change (%v)", r.lastChange, before)
	}
	if _, again, _ := r.protection(); !again.Equal(since) {
		t.Fatalf("unprotected since moved from %v to %v", since, again)
	}
	if n := r.hashes.Load(); n != 1 {
		t.Fatalf("the index was hashed again (%d) though the snapshot was tied to its generation", n)
	}
}

// TestProtectionFollowsTheKeyFile: a new key file (a password change) is
// not in the stored snapshot, which holds the old one: not covered until a
// snapshot holds it; the old key file back, the snapshot covers again.
func TestProtectionFollowsTheKeyFile(t *testing.T) {
	r := offlineReplicator(t, nil)
	kfPath := filepath.Join(r.v.Home, vault.KeyFileName)
	kf, err := os.ReadFile(kfPath)
	if err != nil {
		t.Fatal(err)
	}
	if r.snapHash, err = r.liveHash(kf); err != nil {
		t.Fatal(err)
	}
	if covered, _, err := r.protection(); err != nil || !covered {
		t.Fatalf("the snapshot of this state: covered=%v err=%v", covered, err)
	}
	changed := append(bytes.Clone(kf), '\n')
	if err := os.WriteFile(kfPath, changed, 0o600); err != nil {
		t.Fatal(err)
	}
	if covered, since, err := r.protection(); err != nil || covered || since.IsZero() {
		t.Fatalf("a new key file: covered=%v since=%v err=%v", covered, since, err)
	}
	if err := os.WriteFile(kfPath, kf, 0o600); err != nil {
		t.Fatal(err)
	}
	if covered, _, err := r.protection(); err != nil || !covered {
		t.Fatalf("the old key file back: covered=%v err=%v", covered, err)
	}
	// No key file: an error, never covered.
	if err := os.Remove(kfPath); err != nil {
		t.Fatal(err)
	}
	if covered, _, err := r.protection(); err == nil || covered {
		t.Fatalf("no key file: covered=%v err=%v", covered, err)
	}
	st := &Status{}
	r.restorability(st)
	if st.Restorable || len(st.Errors) == 0 || st.UnprotectedSince == nil {
		t.Fatalf("no key file: restorable=%v errors=%q unprotected since %v", st.Restorable, st.Errors, st.UnprotectedSince)
	}
}

// TestRestorability: restorable only with nothing pending, no open file
// holding unsaved writes, and the stored snapshot covering the index.
func TestRestorability(t *testing.T) {
	r := offlineReplicator(t, nil)
	markStored(t, r)
	covers := time.Unix(1_700_000_000, 0)
	r.snapCovers = covers
	for _, c := range []struct {
		name            string
		pending, unsave int
		want            bool
	}{
		{"nothing pending", 0, 0, true},
		{"a chunk pending", 1, 0, false},
		{"an open file unsaved", 0, 1, false},
	} {
		st := &Status{PendingChunks: c.pending, UnsavedOpenFiles: c.unsave}
		r.restorability(st)
		if st.Restorable != c.want {
			t.Errorf("%s: restorable=%v, want %v", c.name, st.Restorable, c.want)
		}
		if (st.UnprotectedSince == nil) != c.want {
			t.Errorf("%s: unprotected since %v", c.name, st.UnprotectedSince)
		}
		if st.SnapshotCovers == nil || !st.SnapshotCovers.Equal(covers) {
			t.Errorf("%s: snapshot covers %v, want %v", c.name, st.SnapshotCovers, covers)
		}
	}
	r.snapCovers = time.Time{}
	commit(t, r.idx, func(b *meta.Batch) { b.PutInode(&meta.Inode{Ino: 9, Mode: 0o100644}) })
	st := &Status{}
	r.restorability(st)
	if st.Restorable || st.UnprotectedSince == nil || st.SnapshotCovers != nil {
		t.Fatalf("after a change, no snapshot time known: restorable=%v unprotected since %v covers %v", st.Restorable, st.UnprotectedSince, st.SnapshotCovers)
	}
}

// TestMaybeSnapshotWhenDue: an uncovered index is snapshotted when
// something waits for it (a sync, an unmount, pending data flushed), once
// it has been quiet for SnapshotDelay, or once its oldest unprotected
// change is SnapshotInterval/2 old; not otherwise, and never while covered
// or stopping. (The offline mediator makes a snapshot that was started
// fail on the network: that error is how the test sees it.)
func TestMaybeSnapshotWhenDue(t *testing.T) {
	for _, c := range []struct {
		name string
		set  func(r *Replicator)
		take bool
	}{
		{"nothing due", func(r *Replicator) {}, false},
		{"a sync waits", func(r *Replicator) { r.syncWanted = time.Now() }, true},
		{"a sync the stored snapshot already covers", func(r *Replicator) {
			r.syncWanted = time.Now().Add(-time.Minute)
			r.snapCovers = time.Now()
		}, false},
		{"flushing", func(r *Replicator) { r.flushing = true }, true},
		{"closing", func(r *Replicator) { r.closing = true }, true},
		{"quiet", func(r *Replicator) { r.lastChange = time.Now().Add(-2 * time.Hour) }, true},
		{"steady writes", func(r *Replicator) { r.unprotectedSince = time.Now().Add(-2 * time.Hour) }, true},
		{"stopping", func(r *Replicator) { r.syncWanted = time.Now(); r.cancel() }, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := offlineReplicator(t, func(cfg *Config) {
				cfg.SnapshotDelay, cfg.SnapshotInterval = time.Hour, 3*time.Hour
			})
			commit(t, r.idx, func(b *meta.Batch) { b.PutInode(&meta.Inode{Ino: 7, Mode: 0o100644}) })
			// Note the index as changed now (protection's first look).
			if covered, _, err := r.protection(); err != nil || covered {
				t.Fatalf("covered=%v err=%v", covered, err)
			}
			c.set(r)
			err := r.maybeSnapshot()
			took := r.snapBlob > 0 // the export was read
			if took != c.take {
				t.Fatalf("snapshot taken: %v, want %v (err %v)", took, c.take, err)
			}
			if c.take && (err == nil || !strings.Contains(err.Error(), "snapshot")) {
				t.Fatalf("a snapshot on an offline network: %v, want its network error", err)
			}
			if !c.take && err != nil {
				t.Fatalf("no snapshot due: %v", err)
			}
		})
	}
	t.Run("covered", func(t *testing.T) {
		r := offlineReplicator(t, nil)
		markStored(t, r)
		r.syncWanted = time.Now()
		r.closing = true
		if err := r.maybeSnapshot(); err != nil || r.snapBlob != 0 {
			t.Fatalf("covered: a snapshot taken (export %d bytes, err %v)", r.snapBlob, err)
		}
	})
}

// TestUrgentAndTick: pending data must go out now while a snapshot, a sync
// or an unmount waits for it (and not for a sync the stored snapshot
// already covers); the engine looks for work often enough for the
// snapshot bound, never more than every 100 ms.
func TestUrgentAndTick(t *testing.T) {
	now := time.Now()
	for _, c := range []struct {
		name                string
		flushing, closing   bool
		syncWanted, covered time.Time
		want                bool
	}{
		{name: "idle"},
		{name: "flushing", flushing: true, want: true},
		{name: "closing", closing: true, want: true},
		{name: "a sync not covered", syncWanted: now, covered: now.Add(-time.Second), want: true},
		{name: "a sync covered since", syncWanted: now, covered: now.Add(time.Second)},
		{name: "a sync covered at its mark", syncWanted: now, covered: now},
	} {
		r := &Replicator{flushing: c.flushing, closing: c.closing, syncWanted: c.syncWanted, snapCovers: c.covered}
		if got := r.urgent(); got != c.want {
			t.Errorf("%s: urgent=%v, want %v", c.name, got, c.want)
		}
	}
	for _, c := range []struct{ scan, snap, want time.Duration }{
		{time.Second, 16 * time.Second, time.Second},
		{time.Minute, 16 * time.Second, 2 * time.Second},
		{10 * time.Millisecond, time.Minute, 100 * time.Millisecond},
		{time.Minute, 80 * time.Millisecond, 100 * time.Millisecond},
	} {
		r := &Replicator{cfg: Config{ScanInterval: c.scan, SnapshotInterval: c.snap}}
		if got := r.tick(); got != c.want {
			t.Errorf("tick with scan %v, snapshot interval %v: %v, want %v", c.scan, c.snap, got, c.want)
		}
	}
	mark := now
	for _, c := range []struct {
		name string
		st   Status
		want bool
	}{
		{"restorable", Status{Restorable: true}, true},
		{"nothing known", Status{}, false},
		{"covers after the mark", Status{SnapshotCovers: ptr(mark.Add(time.Second))}, true},
		{"covers the mark", Status{SnapshotCovers: ptr(mark)}, true},
		{"covers before the mark", Status{SnapshotCovers: ptr(mark.Add(-time.Second))}, false},
	} {
		if got := c.st.Covered(mark); got != c.want {
			t.Errorf("Covered, %s: %v, want %v", c.name, got, c.want)
		}
	}
}

func ptr[T any](v T) *T { return &v }

// TestLoadProtection: a new engine takes over what the newest stored
// snapshot covers from the index, and wants a snapshot at once (a previous
// run may have stopped before its last one).
func TestLoadProtection(t *testing.T) {
	r := offlineReplicator(t, nil)
	r.loadProtection()
	if r.snapHash != nil || !r.snapCovers.IsZero() || r.snapBlob != 0 {
		t.Fatalf("an empty index: hash %x, covers %v, size %d", r.snapHash, r.snapCovers, r.snapBlob)
	}
	if r.syncWanted.IsZero() {
		t.Fatal("a start does not ask for a snapshot")
	}
	covers := time.Unix(1_700_000_000, 5)
	commit(t, r.idx, func(b *meta.Batch) {
		b.PutRepl("snapshot_hash", []byte("the hash"))
		b.PutRepl("snapshot_covers", putUint64(uint64(covers.UnixNano())))
		b.PutRepl("snapshot_size", putUint64(12345))
	})
	r.loadProtection()
	if string(r.snapHash) != "the hash" || !r.snapCovers.Equal(covers) || r.snapBlob != 12345 {
		t.Fatalf("loaded hash %q, covers %v, size %d", r.snapHash, r.snapCovers, r.snapBlob)
	}
	// Records of the wrong size are ignored; a size is bounded.
	commit(t, r.idx, func(b *meta.Batch) {
		b.PutRepl("snapshot_covers", []byte{1, 2, 3})
		b.PutRepl("snapshot_size", []byte{1, 2, 3, 4, 5, 6, 7})
	})
	r2 := offlineReplicator(t, nil)
	r2.idx = r.idx
	r2.loadProtection()
	if !r2.snapCovers.IsZero() || r2.snapBlob != 0 {
		t.Fatalf("short records: covers %v, size %d", r2.snapCovers, r2.snapBlob)
	}
	commit(t, r.idx, func(b *meta.Batch) { b.PutRepl("snapshot_size", putUint64(1<<62)) })
	if n := storedSnapshotSize(r.idx); n != 1<<40 {
		t.Fatalf("a size of 2^62: %d, want the bound 2^40", n)
	}
	commit(t, r.idx, func(b *meta.Batch) { b.PutRepl("snapshot_size", putUint64(1<<40)) })
	if n := storedSnapshotSize(r.idx); n != 1<<40 {
		t.Fatalf("a size of 2^40: %d", n)
	}
}

// TestRequestSyncCommitsAndMarks: RequestSync commits what open files hold
// first, asks for a snapshot as of its mark (never moving a later mark
// back), lets the network be tried at once, and wakes the engine.
func TestRequestSyncCommitsAndMarks(t *testing.T) {
	r := offlineReplicator(t, nil)
	var committedAt time.Time
	r.CommitBeforeSync(func() error { committedAt = time.Now(); return errors.New("disk full") })
	r.retryAt = time.Now().Add(time.Hour)
	before := time.Now()
	mark := r.RequestSync()
	if committedAt.IsZero() || committedAt.After(mark) {
		t.Fatalf("open files committed at %v, mark %v: not before the mark", committedAt, mark)
	}
	if mark.Before(before) || !r.syncWanted.Equal(mark) {
		t.Fatalf("mark %v, sync wanted %v (asked at %v)", mark, r.syncWanted, before)
	}
	if !r.retryAt.IsZero() {
		t.Fatal("the network's backoff was kept while the user waits")
	}
	select {
	case <-r.kick:
	default:
		t.Fatal("the engine was not woken")
	}
	if len(r.errs) != 1 || !strings.Contains(r.errs[0].msg, "disk full") {
		t.Fatalf("the commit's failure: errors %v", r.errs)
	}
	later := time.Now().Add(time.Hour)
	r.syncWanted = later
	r.RequestSync()
	if !r.syncWanted.Equal(later) {
		t.Fatalf("a later sync mark moved back to %v", r.syncWanted)
	}
	r.SetSyncTimeout(5 * time.Second)
	if r.syncTimeout != 5*time.Second {
		t.Fatal("SetSyncTimeout")
	}
}

// TestFinishEndsWhenCoveredOrHopeless: an unmount's Finish returns at once
// with true when a stored snapshot covers everything; otherwise it keeps
// the engine urgent (closing, a sync wanted as of its start) and waits,
// reporting progress, until the sync timeout (SetSyncTimeout over the
// configuration's), three failed network rounds in a row, or the engine's
// end, and then says false.
func TestFinishEndsWhenCoveredOrHopeless(t *testing.T) {
	finish := func(t *testing.T, r *Replicator, progress func(Status)) (Status, bool) {
		t.Helper()
		type res struct {
			st Status
			ok bool
		}
		done := make(chan res, 1)
		go func() { st, ok := r.Finish(progress); done <- res{st, ok} }()
		select {
		case x := <-done:
			return x.st, x.ok
		case <-time.After(60 * time.Second):
			t.Fatal("Finish did not return within 60s")
			return Status{}, false
		}
	}
	t.Run("covered", func(t *testing.T) {
		r := offlineReplicator(t, func(c *Config) { c.SyncTimeout = time.Hour })
		markStored(t, r)
		r.netFails, r.retryAt = 2, time.Now().Add(time.Hour)
		st, ok := finish(t, r, func(Status) { t.Error("progress reported though covered") })
		if !ok || !st.Restorable {
			t.Fatalf("covered: ok=%v restorable=%v", ok, st.Restorable)
		}
		if !r.closing || r.netFails != 0 || !r.retryAt.IsZero() {
			t.Fatalf("Finish left closing=%v, %d network failures, retry at %v", r.closing, r.netFails, r.retryAt)
		}
		select {
		case <-r.kick:
		default:
			t.Fatal("Finish did not wake the engine")
		}
	})
	t.Run("sync timeout", func(t *testing.T) {
		r := offlineReplicator(t, func(c *Config) { c.SyncTimeout = time.Hour })
		r.SetSyncTimeout(300 * time.Millisecond)
		commit(t, r.idx, func(b *meta.Batch) { b.PutInode(&meta.Inode{Ino: 7, Mode: 0o100644}) })
		start := time.Now()
		progress := 0
		_, ok := finish(t, r, func(Status) { progress++ })
		if ok {
			t.Fatal("not covered, yet Finish said restorable")
		}
		if time.Since(start) < 300*time.Millisecond {
			t.Fatalf("returned after %v, before the sync timeout", time.Since(start))
		}
		if progress == 0 {
			t.Fatal("no progress reported while waiting")
		}
		if r.syncWanted.Before(start) || !r.urgent() {
			t.Fatalf("while finishing: sync wanted %v (started %v), urgent %v", r.syncWanted, start, r.urgent())
		}
	})
	t.Run("three network failures", func(t *testing.T) {
		r := offlineReplicator(t, func(c *Config) { c.SyncTimeout = time.Hour })
		commit(t, r.idx, func(b *meta.Batch) { b.PutInode(&meta.Inode{Ino: 7, Mode: 0o100644}) })
		var fails int
		_, ok := finish(t, r, func(Status) {
			// The engine's rounds, failing on the network.
			r.mu.Lock()
			fails++
			r.netFails = min(fails, 3)
			r.mu.Unlock()
		})
		if ok || fails != 3 {
			t.Fatalf("ok=%v after %d progress reports, want false after the third failed round", ok, fails)
		}
	})
	t.Run("engine stopped", func(t *testing.T) {
		r := offlineReplicator(t, func(c *Config) { c.SyncTimeout = time.Hour })
		commit(t, r.idx, func(b *meta.Batch) { b.PutInode(&meta.Inode{Ino: 7, Mode: 0o100644}) })
		close(r.done)
		if _, ok := finish(t, r, nil); ok {
			t.Fatal("the engine stopped, yet Finish said restorable")
		}
	})
}

// markStored makes r's stored snapshot hold the index's current state (as
// a snapshot stored just now would).
func markStored(t *testing.T, r *Replicator) {
	t.Helper()
	kf, err := r.readKeyFile()
	if err != nil {
		t.Fatal(err)
	}
	// The hash protection makes, not counted as one of its hashes.
	if r.snapHash, err = stateHashWalk(r.idx, kf, r.idx.Export); err != nil {
		t.Fatal(err)
	}
}

// TestProtectionHashesOnceForAMissedSnapshot: a stored snapshot not tied to
// a generation (after start, or after a snapshot that uploaded chunks to
// complete its export) is compared with the live index by one hash; once
// that misses, the index has moved on, and changes and status calls after
// it hash nothing more (each hashed the whole index while writes went on).
// A new stored snapshot is compared again.
func TestProtectionHashesOnceForAMissedSnapshot(t *testing.T) {
	r := offlineReplicator(t, nil)
	commit(t, r.idx, func(b *meta.Batch) { b.PutInode(&meta.Inode{Ino: 7, Mode: 0o100644}) })
	markStored(t, r)
	commit(t, r.idx, func(b *meta.Batch) { b.PutInode(&meta.Inode{Ino: 8, Mode: 0o100644}) })
	for i := range 5 {
		commit(t, r.idx, func(b *meta.Batch) { b.PutInode(&meta.Inode{Ino: uint64(9 + i), Mode: 0o100644}) })
		if covered, _, err := r.protection(); err != nil || covered {
			t.Fatalf("change %d after the snapshot: covered=%v err=%v", i, covered, err)
		}
		r.Status(context.Background())
	}
	if n := r.hashes.Load(); n != 1 {
		t.Fatalf("the index was hashed %d times over 5 changes after a snapshot it did not match, want once", n)
	}

	// A snapshot of the state now is compared (once) and covers it.
	markStored(t, r)
	for i := range 3 {
		if covered, _, err := r.protection(); err != nil || !covered {
			t.Fatalf("call %d with a snapshot of this very state: covered=%v err=%v", i, covered, err)
		}
	}
	if n := r.hashes.Load(); n != 2 {
		t.Fatalf("the index was hashed %d times in all, want twice (once a snapshot)", n)
	}

	// A hash taken while a snapshot's records are being committed is no
	// miss: the next call compares again.
	commit(t, r.idx, func(b *meta.Batch) { b.PutInode(&meta.Inode{Ino: 20, Mode: 0o100644}) })
	kf, err := r.readKeyFile()
	if err != nil {
		t.Fatal(err)
	}
	stored, err := r.liveHash(kf) // the state once the commit lands
	if err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	r.snapHash, r.snapGen, r.snapStoring = stored, 0, true
	r.mu.Unlock()
	commit(t, r.idx, func(b *meta.Batch) { b.PutInode(&meta.Inode{Ino: 21, Mode: 0o100644}) })
	if covered, _, _ := r.protection(); covered {
		t.Fatal("covered by a snapshot of another state")
	}
	commit(t, r.idx, func(b *meta.Batch) { b.DeleteInode(21) })
	r.mu.Lock()
	r.snapStoring = false
	r.mu.Unlock()
	if covered, _, err := r.protection(); err != nil || !covered {
		t.Fatalf("the state the snapshot holds, once its commit landed: covered=%v err=%v", covered, err)
	}
}
