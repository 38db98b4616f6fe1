package replicate

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/fincrypt/fincrypt/mediator"
	"github.com/fincrypt/fincrypt/meta"
	fnet "github.com/fincrypt/fincrypt/net"
	"github.com/fincrypt/fincrypt/vault"
)

// Snapshot formats (docs/FORMAT.md, "Index snapshots").
const (
	snapshotMagic = "fincrypt index snapshot v1\x00"
	listMagic     = "fincrypt snapshot list v1\x00"
	// maxSnapshotSegments bounds a snapshot's segment list (about 300 MiB
	// of index at the largest segment size).
	maxSnapshotSegments = 1024
)

// Errors callers test for.
var (
	// ErrHomeNotEmpty means Restore was pointed at a home that holds a vault.
	ErrHomeNotEmpty = errors.New("the home directory already holds a vault or an index")
	// ErrSnapshot means a snapshot or its list does not decode.
	ErrSnapshot = errors.New("index snapshot is unreadable")
	// ErrWrongAccount means the password opened a key file whose account is
	// not the one asked for.
	ErrWrongAccount = errors.New("the key file belongs to another account")
)

func snapshotAD(kind string, acct fnet.AccountID, seq uint64) []byte {
	ad := append([]byte(kind), acct[:]...)
	return binary.BigEndian.AppendUint64(ad, seq)
}

// snapSegment is one entry of a snapshot's segment list.
type snapSegment struct {
	id    meta.SegmentID
	class uint32
	used  uint32
}

func encodeList(blobLen uint64, segs []snapSegment) []byte {
	b := []byte(listMagic)
	b = binary.BigEndian.AppendUint64(b, blobLen)
	b = binary.BigEndian.AppendUint32(b, uint32(len(segs)))
	for _, s := range segs {
		b = append(b, s.id[:]...)
		b = binary.BigEndian.AppendUint32(b, s.class)
		b = binary.BigEndian.AppendUint32(b, s.used)
	}
	return b
}

func decodeList(b []byte) (uint64, []snapSegment, error) {
	if !bytes.HasPrefix(b, []byte(listMagic)) || len(b) < len(listMagic)+12 {
		return 0, nil, fmt.Errorf("%w: segment list header", ErrSnapshot)
	}
	b = b[len(listMagic):]
	blobLen := binary.BigEndian.Uint64(b)
	n := binary.BigEndian.Uint32(b[8:])
	b = b[12:]
	if n > maxSnapshotSegments || len(b) != int(n)*24 {
		return 0, nil, fmt.Errorf("%w: segment list of %d entries in %d bytes", ErrSnapshot, n, len(b))
	}
	segs := make([]snapSegment, n)
	var total uint64
	for i := range segs {
		copy(segs[i].id[:], b[24*i:])
		segs[i].class = binary.BigEndian.Uint32(b[24*i+16:])
		segs[i].used = binary.BigEndian.Uint32(b[24*i+20:])
		if segs[i].used > segs[i].class {
			return 0, nil, fmt.Errorf("%w: segment %d uses %d of %d bytes", ErrSnapshot, i, segs[i].used, segs[i].class)
		}
		total += uint64(segs[i].used)
	}
	if total != blobLen {
		return 0, nil, fmt.Errorf("%w: segments hold %d bytes, list says %d", ErrSnapshot, total, blobLen)
	}
	return blobLen, segs, nil
}

// record is one index record as stored (key and sealed value).
type record struct{ key, sealed []byte }

// A serialised index is built framed: vault.NonceSize bytes of room before
// it and vault.TagSize bytes of spare capacity after it, so that the
// snapshot is sealed where it lies (vault.Sealer.SealInPlace) and a mount
// holds its index once, not twice, while it stores a snapshot (a million
// files make about 500 MiB of records).

// newFramed returns an empty framed serialisation with room for n bytes
// of records.
func newFramed(n int) []byte {
	b := make([]byte, vault.NonceSize, vault.NonceSize+max(n, len(snapshotMagic))+vault.TagSize)
	return append(b, snapshotMagic...)
}

// recordsOf returns the serialised records of a framed serialisation.
func recordsOf(framed []byte) []byte { return framed[vault.NonceSize:] }

// appendRecord appends the serialised record key, sealed to b.
func appendRecord(b, key, sealed []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(key)))
	b = append(b, key...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(sealed)))
	return append(b, sealed...)
}

// encodeRecords serialises index records, framed.
func encodeRecords(recs []record) []byte {
	n := len(snapshotMagic)
	for _, rc := range recs {
		n += 8 + len(rc.key) + len(rc.sealed)
	}
	b := newFramed(n)
	for _, rc := range recs {
		b = appendRecord(b, rc.key, rc.sealed)
	}
	return b
}

// exportBlob serialises the index (meta.Index.ExportState) as
// encodeRecords does, writing each record into the blob as the export
// reads it: the records are held once, not copied one by one first. hint
// is the size expected (the last export's, and some): a blob that fits
// is never copied to grow. The blob is framed (recordsOf).
func exportBlob(idx *meta.Index, hint int) (blob []byte, missing []meta.ChunkID, err error) {
	blob = newFramed(hint)
	missing, err = idx.ExportState(func(k, v []byte) error {
		blob = appendRecord(blob, k, v)
		return nil
	})
	return blob, missing, err
}

// mergeRecords returns the serialised records of blob and extra, in key
// order (the export's order, which the state hash follows), written once
// into a buffer of their size; both blobs are framed.
func mergeRecords(blob []byte, extra []record) ([]byte, error) {
	slices.SortFunc(extra, func(a, b record) int { return bytes.Compare(a.key, b.key) })
	n := len(recordsOf(blob))
	for _, rc := range extra {
		n += 8 + len(rc.key) + len(rc.sealed)
	}
	out := newFramed(n)
	i := 0
	if err := importRecords(recordsOf(blob))(func(k, v []byte) error {
		for ; i < len(extra) && bytes.Compare(extra[i].key, k) < 0; i++ {
			out = appendRecord(out, extra[i].key, extra[i].sealed)
		}
		out = appendRecord(out, k, v)
		return nil
	}); err != nil {
		return nil, err
	}
	for _, rc := range extra[i:] {
		out = appendRecord(out, rc.key, rc.sealed)
	}
	return out, nil
}

// importRecords walks a serialised index.
func importRecords(b []byte) func(fn func(key, sealed []byte) error) error {
	return func(fn func(key, sealed []byte) error) error {
		if !bytes.HasPrefix(b, []byte(snapshotMagic)) {
			return fmt.Errorf("%w: bad header", ErrSnapshot)
		}
		rest := b[len(snapshotMagic):]
		field := func() ([]byte, error) {
			if len(rest) < 4 || uint64(binary.BigEndian.Uint32(rest)) > uint64(len(rest)-4) {
				return nil, fmt.Errorf("%w: truncated record", ErrSnapshot)
			}
			n := binary.BigEndian.Uint32(rest)
			f := rest[4 : 4+n]
			rest = rest[4+n:]
			return f, nil
		}
		for len(rest) > 0 {
			k, err := field()
			if err != nil {
				return err
			}
			v, err := field()
			if err != nil {
				return err
			}
			if err := fn(k, v); err != nil {
				return err
			}
		}
		return nil
	}
}

// Snapshot backs the index up now, whatever is pending (tests).
func (r *Replicator) Snapshot() error {
	r.mu.Lock()
	r.syncWanted = time.Now()
	r.mu.Unlock()
	return r.takeSnapshot()
}

// takeSnapshot exports the index, uploads the chunks the export references
// that no segment holds yet, adds their locations and stores the result as
// a snapshot, unless the newest stored snapshot holds the same state. It
// returns an error only for a failure of the network.
//
// The export is a delta (the keys the change feed names since the stored
// chain's last part) while the chain is known and its deltas stay small;
// otherwise a base (every record), from the same view.
func (r *Replicator) takeSnapshot() error {
	r.snapMu.Lock() // Snapshot may run beside the engine's own
	defer r.snapMu.Unlock()
	keyFile, err := r.readKeyFile()
	if err != nil {
		r.noteErr(fmt.Errorf("snapshot: %w", err))
		return nil
	}
	if started, err := r.idx.StartChanges(); err != nil {
		r.noteErr(fmt.Errorf("snapshot: %w", err))
		return nil
	} else if started {
		r.chain = nil // nothing followed the changes until now: a base
	}
	exportAt := time.Now()
	// Read before the export: the snapshot covers at least this state.
	sg := r.idx.StateGeneration()
	view, err := r.idx.ChangeView()
	if err != nil {
		r.noteErr(fmt.Errorf("snapshot: %w", err))
		return nil
	}
	defer view.Close()
	chain := r.chain
	var blob []byte
	var missing []meta.ChunkID
	if chain != nil {
		if blob, err = exportDelta(view); err == nil {
			missing, err = view.PendingIDs()
		}
		if err != nil {
			r.noteErr(fmt.Errorf("snapshot: %w", err))
			return nil
		}
		if len(chain.parts) >= maxChainParts ||
			chain.deltaBytes()+uint64(len(blob)+vault.Overhead) > chain.parts[0].sealed/rebaseShare {
			chain = nil // a new base
		}
	}
	if chain == nil {
		if blob, missing, err = exportBlob(view.Index, r.snapBlob+r.snapBlob/8); err != nil {
			r.noteErr(fmt.Errorf("snapshot: %w", err))
			return nil
		}
		r.snapBlob = len(blob)
	}
	var extra []record
	if len(missing) > 0 {
		r.mu.Lock()
		r.flushing = true
		r.mu.Unlock()
		defer func() {
			r.mu.Lock()
			r.flushing = false
			r.mu.Unlock()
		}()
		for attempt := 1; ; attempt++ {
			if err := r.uploadPending(); err != nil {
				return err
			}
			extra = extra[:0]
			still, err := r.idx.LocatedRecords(missing, func(k, v []byte) error {
				extra = append(extra, record{bytes.Clone(k), bytes.Clone(v)})
				return nil
			})
			if err != nil {
				r.noteErr(fmt.Errorf("snapshot: %w", err))
				return nil
			}
			if len(still) == 0 {
				if chain == nil {
					blob, err = mergeRecords(blob, extra)
				} else {
					blob, err = mergeDelta(blob, extra)
				}
				if err != nil {
					r.noteErr(fmt.Errorf("snapshot: %w", err))
					return nil
				}
				break
			}
			if attempt == 3 || r.ctx.Err() != nil {
				// Superseded (and deleted) since the export: the next
				// round exports again.
				r.log.Info("snapshot postponed: chunks of its export are not uploaded", "chunks", len(still))
				return nil
			}
		}
	}
	// The state the snapshot restores: the view, with the uploads' records
	// set in it.
	withUploads := func(s meta.StateSum) (meta.StateSum, error) {
		return view.StateSumWith(s, func(fn func(key, sealed []byte) error) error {
			for _, rc := range extra {
				if err := fn(rc.key, rc.sealed); err != nil {
					return err
				}
			}
			return nil
		})
	}
	var state meta.StateSum
	if chain != nil {
		// The view's sum, folded from the last folded view's by the keys
		// changed since (a walk only for the first of the process).
		if state, err = r.idx.Fold(view); err == nil {
			state, err = withUploads(state)
		}
	} else if state, err = r.idx.SumRecords(importRecords(recordsOf(blob))); err == nil {
		// A base walks its records anyway (it holds them all): the view's
		// sum (theirs less the uploads') seeds the fold, after checking the
		// one the fold kept, if any.
		var up meta.StateSum
		if up, err = withUploads(meta.StateSum{}); err == nil {
			walked := state
			walked.Add(meta.StateElem(up), -1)
			if kept, ok, ferr := r.idx.FoldKept(view); ferr != nil {
				r.log.Warn("snapshot: folding the state sum", "err", ferr)
			} else if ok && kept != walked {
				r.sumResets.Add(1)
				r.log.Warn("snapshot: the state sum folded from the changes differed from the records; reset to theirs",
					"kept", fmt.Sprintf("%x", kept[:8]), "walked", fmt.Sprintf("%x", walked[:8]))
			}
			r.idx.SeedFold(view, walked)
		}
	}
	if err != nil {
		r.noteErr(fmt.Errorf("snapshot: %w", err))
		return nil
	}
	sum := stateHashV2(keyFile, state)
	r.mu.Lock()
	same := bytes.Equal(sum, r.snapHash)
	if same {
		r.snapCovers = exportAt // the stored snapshot holds this very state
		if len(missing) == 0 && bytes.Equal(keyFile, r.protKey) {
			r.snapGen = sg + 1
		}
	}
	r.mu.Unlock()
	if same {
		return nil
	}
	return r.snapshot(keyFile, blob, sum, exportAt, sg, len(missing) == 0, chain, view.Epoch)
}

// snapshot stores blob (framed, sealed where it lies: the records are
// gone once it returns) as the account's newest snapshot; sum is its state
// hash and covers the time its export was read.
//
// asOf is the index state generation read before the export; exact says
// the export is that state (no chunk was uploaded to complete it). With a
// chain, blob is a delta that follows it; without, a base. epoch is the
// change feed's epoch the export's view ended: its records are dropped
// once the pointer is stored and recorded.
func (r *Replicator) snapshot(keyFile, blob, sum []byte, covers time.Time, asOf uint64, exact bool, chain *snapChain, epoch uint64) error {
	acct := r.client.Account()
	// The mediator keeps only a newer pointer than it holds: after a
	// clock set back (or a restore from a machine whose clock was ahead)
	// the next one is numbered past the last one stored (R last_snapshot
	// is later than its number) or seen held.
	seq := max(uint64(time.Now().UnixNano()), r.seqFloor+1)
	sealed := r.snap.SealInPlace(blob, snapshotAD("index", acct, seq))
	var list []snapSegment
	var recs []*meta.Segment
	for off := 0; off < len(sealed); off += MaxSegment {
		part := sealed[off:min(off+MaxSegment, len(sealed))]
		class := classFor(len(part))
		buf := make([]byte, len(part), class)
		copy(buf, part)
		seg, _, err := r.put(buf, class)
		if err != nil {
			r.recordDeadSnapshot(recs)
			return fmt.Errorf("snapshot: %w", err)
		}
		seg.Kind = meta.KindSnapshot
		seg.Used = uint32(len(part))
		recs = append(recs, seg)
		list = append(list, snapSegment{id: seg.ID, class: uint32(class), used: uint32(len(part))})
	}
	next := &snapChain{hash: sum}
	if chain != nil {
		next.parts = slices.Clone(chain.parts)
	}
	next.parts = append(next.parts, snapPart{seq: seq, delta: chain != nil, sealed: uint64(len(sealed)), segs: list})
	listBytes := encodeChain(next)
	p := &fnet.SnapshotPointer{Seq: seq, KeyFile: keyFile,
		Sealed: r.snap.Seal(nil, listBytes, snapshotAD("list", acct, seq))}
	// The segments are recorded (alive, their upload intents gone) before
	// the pointer names them: a power cut after the mediator stored the
	// pointer would otherwise leave only the intents, and the next start
	// would release the segments of the account's only restorable
	// snapshot. A cut before the pointer is stored leaves them alive and
	// named by no pointer until the next snapshot supersedes them.
	ob := r.idx.NewBatch()
	for _, s := range recs {
		ob.PutSegment(s)
		ob.DeleteRepl(intentName(s.ID))
	}
	if err := ob.Commit(true); err != nil {
		r.recordDeadSnapshot(recs)
		return fmt.Errorf("snapshot: recording its segments: %w", err)
	}
	ctx, cancel := context.WithTimeout(r.ctx, r.cfg.CallTimeout)
	err := r.client.PutSnapshot(ctx, p)
	cancel()
	if err != nil {
		// The mediator may have stored the pointer and its reply been
		// lost (a timeout, a dropped connection: the client's second
		// try then hears "not newer"). Its segments would then be the
		// account's only restorable snapshot: ask which pointer it holds.
		switch r.pointerOutcome(p) {
		case pointerStored:
			r.log.Info("snapshot pointer stored, its reply lost", "err", err)
		case pointerUnknown:
			// Left alive, as after a power cut at this point: named by
			// no pointer (or by the stored one) until a snapshot whose
			// storing is known supersedes them.
			return fmt.Errorf("snapshot: storing the pointer (outcome unknown): %w", err)
		default:
			r.recordDeadSnapshot(recs)
			return fmt.Errorf("snapshot: storing the pointer: %w", err)
		}
	}
	r.seqFloor = max(r.seqFloor, seq)
	now := time.Now()
	own := map[meta.SegmentID]bool{} // the chain's: the base's and every delta's
	for _, s := range next.segments() {
		own[s.id] = true
	}
	b := r.idx.NewBatch()
	err = r.idx.Segments(func(s meta.Segment) error {
		if s.Kind == meta.KindSnapshot && s.DeadSince == 0 && !own[s.ID] {
			s.DeadSince = now.UnixNano() // superseded by this snapshot's chain
			b.PutSegment(&s)
		}
		return nil
	})
	if err != nil {
		b.Discard()
		r.noteErr(fmt.Errorf("snapshot: %w", err))
		return nil
	}
	b.PutRepl("last_snapshot", putUint64(uint64(now.UnixNano())))
	b.PutRepl("snapshot_hash", sum)
	b.PutRepl("snapshot_covers", putUint64(uint64(covers.UnixNano())))
	b.PutRepl("snapshot_size", putUint64(next.parts[0].sealed))
	b.PutRepl("snapshot_chain", listBytes)
	// The pointer is stored and its segments recorded: what it covers is
	// restorable even if this record is lost (the superseded snapshots
	// then stay alive until the next snapshot, which is taken anew).
	r.mu.Lock()
	r.lastSnapshot, r.snapHash, r.snapCovers = now, sum, covers
	r.snapGen, r.protMiss, r.snapStoring = 0, nil, true
	if exact && bytes.Equal(keyFile, r.protKey) {
		r.snapGen = asOf + 1
	}
	if !r.unprotectedSince.IsZero() {
		r.unprotectedSince = covers // changes since the export may be missing
	}
	r.mu.Unlock()
	err = b.Commit(true)
	r.mu.Lock()
	r.snapStoring = false
	r.mu.Unlock()
	if err != nil {
		r.chain = nil // not recorded: the next snapshot is a base
		r.noteErr(fmt.Errorf("snapshot: %w", err))
		return nil
	}
	// The chain is recorded: the changes its last part holds are dropped
	// from the feed (a crash before leaves them, and the next delta
	// carries them again).
	r.chain = next
	if _, err := r.idx.DropChanges(epoch); err != nil {
		r.noteErr(fmt.Errorf("snapshot: %w", err))
	}
	r.log.Info("index snapshot stored", "delta", chain != nil, "parts", len(next.parts), "segments", len(list), "bytes", len(sealed))
	return nil
}

// What the mediator holds after a pointer's put failed.
const (
	pointerNotStored = iota // another pointer, or none
	pointerStored           // this very pointer
	pointerUnknown          // it did not say
)

// pointerOutcome asks the mediator whether it holds p (under snapMu).
func (r *Replicator) pointerOutcome(p *fnet.SnapshotPointer) int {
	ctx, cancel := context.WithTimeout(r.ctx, r.cfg.CallTimeout)
	held, err := r.client.GetSnapshot(ctx, p.Account)
	cancel()
	switch {
	case errors.Is(err, fnet.ErrNotFound):
		return pointerNotStored
	case err != nil:
		return pointerUnknown
	case held.Seq == p.Seq && bytes.Equal(held.Sealed, p.Sealed) && bytes.Equal(held.KeyFile, p.KeyFile):
		return pointerStored
	}
	if held.Seq >= p.Seq {
		r.seqFloor = held.Seq // refused as not newer: the next one goes past it
	}
	return pointerNotStored
}

// heldSegments returns the snapshot segments that the pointer the
// mediator holds for the account names (none if it holds none).
func (r *Replicator) heldSegments() (map[meta.SegmentID]bool, error) {
	acct := r.client.Account()
	ctx, cancel := context.WithTimeout(r.ctx, r.cfg.CallTimeout)
	p, err := r.client.GetSnapshot(ctx, acct)
	cancel()
	if errors.Is(err, fnet.ErrNotFound) {
		return map[meta.SegmentID]bool{}, nil
	}
	if err != nil {
		return nil, err
	}
	b, err := r.snap.Open(nil, p.Sealed, snapshotAD("list", acct, p.Seq))
	if err != nil {
		return nil, fmt.Errorf("%w: the stored pointer's segment list: %w", ErrSnapshot, err)
	}
	chain, err := decodeChain(b, p.Seq)
	if err != nil {
		return nil, err
	}
	named := map[meta.SegmentID]bool{} // the base's and every delta's
	for _, s := range chain.segments() {
		named[s.id] = true
	}
	return named, nil
}

// recordDeadSnapshot records the segments of a snapshot that was not
// completed as dead, so that they are released.
func (r *Replicator) recordDeadSnapshot(recs []*meta.Segment) {
	if len(recs) == 0 {
		return
	}
	b := r.idx.NewBatch()
	for _, s := range recs {
		s.Kind = meta.KindSnapshot
		s.DeadSince = time.Now().UnixNano()
		b.PutSegment(s)
		b.DeleteRepl(intentName(s.ID))
	}
	if err := b.Commit(true); err != nil {
		r.noteErr(err)
	}
}

// RestoreOptions say what to restore where.
type RestoreOptions struct {
	// Home is the new vault's home: missing or without a vault.
	Home string
	// Mediator is the mediator that keeps the account's snapshot pointer.
	Mediator fnet.Address
	// Account is the account to restore.
	Account fnet.AccountID
	// Password unwraps the key file the pointer carries.
	Password []byte
	// PieceTimeout and HedgeAfter as in Config (zero: defaults).
	PieceTimeout, HedgeAfter time.Duration
	Logger                   *slog.Logger
	// Progress, if set, is called before the first and after each snapshot segment is
	// fetched: segments and sealed bytes done, and their totals.
	Progress func(segments, totalSegments int, bytes, totalBytes int64)
	// AcceptMismatch restores even a chain whose records do not make the
	// state it recorded (ErrStateMismatch): the vault as its snapshots
	// hold it, short of a change its change feed missed. Such a vault is
	// not taken as covered: its first mount stores a new snapshot.
	AcceptMismatch bool
}

// RestoreResult describes a finished restore.
type RestoreResult struct {
	Taken    time.Time // when the snapshot was taken
	Segments int       // snapshot segments read
	Records  int       // index records restored
	// Mismatch: the records did not make the state the snapshot recorded,
	// and were restored anyway (AcceptMismatch).
	Mismatch bool
}

// Restore rebuilds a vault in an empty home from the account's newest
// snapshot: the key file from the signed pointer (the password must open
// it), then the index from the snapshot's segments. File data stays on the
// network and is fetched when read; the mediator is written to the config.
func Restore(ctx context.Context, o RestoreOptions) (*RestoreResult, error) {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if o.PieceTimeout <= 0 {
		o.PieceTimeout = 30 * time.Second
	}
	if o.HedgeAfter <= 0 {
		o.HedgeAfter = 2 * time.Second
	}
	for _, name := range []string{vault.KeyFileName, vault.IndexDirName} {
		if _, err := os.Stat(filepath.Join(o.Home, name)); err == nil {
			return nil, fmt.Errorf("%s: %w", o.Home, ErrHomeNotEmpty)
		}
	}
	eph, err := fnet.GenerateIdentity()
	if err != nil {
		return nil, err
	}
	anon, err := mediator.NewClient(eph, o.Mediator, nil)
	if err != nil {
		return nil, err
	}
	p, err := anon.GetSnapshot(ctx, o.Account)
	anon.Close()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.Home, 0o700); err != nil {
		return nil, err
	}
	kfPath := filepath.Join(o.Home, vault.KeyFileName)
	cfgPath := filepath.Join(o.Home, vault.ConfigFileName)
	created := []string{kfPath, cfgPath}
	undo := func() {
		for _, p := range created {
			os.RemoveAll(p)
		}
	}
	if err := os.WriteFile(kfPath, p.KeyFile, 0o600); err != nil {
		undo()
		return nil, err
	}
	cfg := vault.DefaultConfig()
	cfg.Mediator = o.Mediator.String()
	if err := vault.SaveConfig(o.Home, cfg); err != nil {
		undo()
		return nil, err
	}
	v, err := vault.Open(o.Home, o.Password, vault.OpenOptions{Lock: true})
	if err != nil {
		undo()
		return nil, err
	}
	defer v.Close()
	created = append(created, filepath.Join(o.Home, vault.LockFileName)) // a refused restore leaves nothing
	id, err := AccountIdentity(v)
	if err != nil {
		undo()
		return nil, err
	}
	if fnet.AccountID(id.ID()) != o.Account {
		undo()
		return nil, ErrWrongAccount
	}
	client, err := mediator.NewClient(id, o.Mediator, nil)
	if err != nil {
		undo()
		return nil, err
	}
	defer client.Close()
	rs, err := fetchSnapshot(ctx, client, v, o.Account, p, o.PieceTimeout, o.HedgeAfter, o.Progress)
	if err != nil {
		undo()
		return nil, err
	}
	created = append(created, v.IndexDir())
	idx, err := meta.Open(v.IndexDir(), v.Keys, meta.Options{Logger: log})
	if err != nil {
		undo()
		return nil, err
	}
	n := rs.count
	sum, mismatch, err := importRestored(idx, p.KeyFile, rs, o.AcceptMismatch)
	if err == nil {
		// The restored vault starts out covered by the snapshot it came
		// from: `fincrypt status` says restorable, and the mount takes no
		// snapshot until something changes (then a base: its index kept
		// no change feed). Not so after a mismatch: a restore from that
		// snapshot needs AcceptMismatch again, so the first mount stores
		// a new one.
		b := idx.NewBatch()
		if !mismatch {
			b.PutRepl("snapshot_hash", sum)
			b.PutRepl("snapshot_covers", putUint64(p.Seq))
		}
		b.PutRepl("snapshot_size", putUint64(uint64(rs.sealed)))
		b.PutRepl("last_snapshot", putUint64(p.Seq))
		err = b.Commit(true)
	}
	if cerr := idx.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		undo()
		return nil, fmt.Errorf("restoring the index: %w", err)
	}
	log.Info("restored", "records", n, "segments", rs.segments, "mismatch", mismatch)
	return &RestoreResult{Taken: time.Unix(0, int64(p.Seq)), Segments: rs.segments, Records: n, Mismatch: mismatch}, nil
}
