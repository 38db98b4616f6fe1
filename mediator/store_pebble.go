package mediator

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/fincrypt/fincrypt/challenge"
	"github.com/fincrypt/fincrypt/internal/pebblesched"
	fnet "github.com/fincrypt/fincrypt/net"
)

// Key layout of the Pebble store (docs/PROTOCOL.md, "mediator state"):
//
//	n/<node 32>                     node, JSON
//	nc/<node 32>                    contracted bytes, u64
//	a/<account 32>                  account, JSON
//	q/<segment 16>                  pending placement, JSON
//	qp/<node 32><piece 32>          pending piece -> segment 16
//	s/<segment 16>                  segment, binary (encodeSegment)
//	p/<node 32><piece 32>           contracted piece -> segment 16, index u8
//	r/<period i64><node 32><acct 32> period record, JSON
//	m/<name>                        counter, i64
const (
	pfxNode       = "n/"
	pfxContracted = "nc/"
	pfxAccount    = "a/"
	pfxPending    = "q/"
	pfxPendPiece  = "qp/"
	pfxSegment    = "s/"
	pfxPiece      = "p/"
	pfxPeriod     = "r/"
	pfxCounter    = "m/"
)

func key(prefix string, parts ...[]byte) []byte {
	k := []byte(prefix)
	for _, p := range parts {
		k = append(k, p...)
	}
	return k
}

// prefixEnd is the smallest key after every key with prefix p.
func prefixEnd(p []byte) []byte {
	end := bytes.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		end[i]++
		if end[i] != 0 {
			return end[:i+1]
		}
	}
	return nil
}

// PebbleOptions tunes OpenPebbleStore.
type PebbleOptions struct {
	// NoSync skips fsync on commit (bulk loads and benchmarks only).
	NoSync bool
	// FS holds the database instead of the operating system's file system
	// (power-loss tests pass a crashable in-memory one).
	FS vfs.FS
}

// PebbleStore is the default Store: Pebble in one directory.
type PebbleStore struct {
	closeOnce sync.Once
	db        *pebble.DB
	wo        *pebble.WriteOptions
	mu        sync.Mutex // serialises read-modify-write transactions
	openAs    string     // its key in openStores ("": not there)
}

var _ Store = (*PebbleStore)(nil)

// openStores holds the directories (absolute, symbolic links resolved)
// of the stores this process has open on the operating system's file
// system. Pebble's lock stops a second open in another process with
// EAGAIN, but a second one in this process with an error of its own
// ("lock held by current process"); both say ErrLocked.
var openStores struct {
	sync.Mutex
	dirs map[string]bool
}

// storeKey is dir, absolute and with symbolic links resolved as far as
// it exists.
func storeKey(dir string) string {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return filepath.Clean(dir)
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		return real
	}
	return abs
}

// OpenPebbleStore opens or creates the store in dir. ErrLocked if it is
// open already, in this process or another.
func OpenPebbleStore(dir string, opt PebbleOptions) (*PebbleStore, error) {
	key := ""
	if opt.FS == nil {
		key = storeKey(dir)
		openStores.Lock()
		defer openStores.Unlock()
		if openStores.dirs[key] {
			return nil, fmt.Errorf("mediator store %s: %w: open already in this process", dir, ErrLocked)
		}
	}
	po := &pebble.Options{Logger: quietLogger{}, FS: opt.FS}
	pebblesched.Quiet(po) // nothing wakes the process while the database idles
	db, err := pebble.Open(dir, po)
	if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EWOULDBLOCK) {
		return nil, fmt.Errorf("mediator store %s: %w: in use by another process (is a mediator running there?)", dir, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("mediator store %s: %w", dir, err)
	}
	wo := pebble.Sync
	if opt.NoSync {
		wo = pebble.NoSync
	}
	if key != "" {
		if openStores.dirs == nil {
			openStores.dirs = map[string]bool{}
		}
		openStores.dirs[key] = true
	}
	return &PebbleStore{db: db, wo: wo, openAs: key}, nil
}

type quietLogger struct{}

func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Errorf(string, ...any) {}
func (quietLogger) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf("pebble: "+format, args...))
}

// Close closes the database; the directory can then be opened again.
func (s *PebbleStore) Close() error {
	err := ErrClosed
	s.closeOnce.Do(func() {
		err = s.db.Close()
		if s.openAs != "" {
			openStores.Lock()
			delete(openStores.dirs, s.openAs)
			openStores.Unlock()
		}
	})
	return err
}

// ErrLocked means the store is open already (in this process or
// another).
var ErrLocked = errors.New("mediator store is locked")

// ErrClosed is returned by Close on a closed store.
var ErrClosed = errors.New("mediator store closed")

// Disk returns the bytes the database occupies (live files).
func (s *PebbleStore) Disk() uint64 { return s.db.Metrics().DiskSpaceUsage() }

// Flush writes memtables to disk (benchmarks).
func (s *PebbleStore) Flush() error { return s.db.Flush() }

type getter interface {
	Get(key []byte) ([]byte, io.Closer, error)
}

func get(g getter, k []byte) ([]byte, error) {
	v, c, err := g.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	out := bytes.Clone(v)
	c.Close()
	return out, nil
}

func getJSON(g getter, k []byte, v any) error {
	b, err := get(g, k)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: %q: %v", ErrCorrupt, k[:2], err)
	}
	return nil
}

func (s *PebbleStore) iterate(prefix []byte, fn func(k, v []byte) error) error {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return err
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			return err
		}
		if err := fn(it.Key(), v); err != nil {
			return err
		}
	}
	return it.Error()
}

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// PutNode implements Store.
func (s *PebbleStore) PutNode(_ context.Context, n *Node) error {
	c := *n
	c.Contracted = 0
	b, err := json.Marshal(&c)
	if err != nil {
		return err
	}
	return s.db.Set(key(pfxNode, n.ID[:]), b, s.wo)
}

func (s *PebbleStore) contracted(id fnet.NodeID) (uint64, error) {
	b, err := get(s.db, key(pfxContracted, id[:]))
	if errors.Is(err, ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if len(b) != 8 {
		return 0, fmt.Errorf("%w: contracted bytes of %s", ErrCorrupt, id)
	}
	return binary.BigEndian.Uint64(b), nil
}

// GetNode implements Store.
func (s *PebbleStore) GetNode(_ context.Context, id fnet.NodeID) (*Node, error) {
	n := &Node{}
	if err := getJSON(s.db, key(pfxNode, id[:]), n); err != nil {
		return nil, fmt.Errorf("node %s: %w", id, err)
	}
	var err error
	n.Contracted, err = s.contracted(id)
	return n, err
}

// ListNodes implements Store.
func (s *PebbleStore) ListNodes(context.Context) ([]*Node, error) {
	var out []*Node
	err := s.iterate([]byte(pfxNode), func(k, v []byte) error {
		n := &Node{}
		if err := json.Unmarshal(v, n); err != nil {
			return fmt.Errorf("%w: node record: %v", ErrCorrupt, err)
		}
		out = append(out, n)
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, n := range out {
		if n.Contracted, err = s.contracted(n.ID); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// CreateAccount implements Store.
func (s *PebbleStore) CreateAccount(_ context.Context, a *Account) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := key(pfxAccount, a.ID[:])
	if _, err := get(s.db, k); err == nil {
		return ErrExists
	} else if !errors.Is(err, ErrNotFound) {
		return err
	}
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	return s.db.Set(k, b, s.wo)
}

// GetAccount implements Store.
func (s *PebbleStore) GetAccount(_ context.Context, id fnet.AccountID) (*Account, error) {
	a := &Account{}
	if err := getJSON(s.db, key(pfxAccount, id[:]), a); err != nil {
		return nil, err
	}
	return a, nil
}

// PutPending implements Store.
func (s *PebbleStore) PutPending(_ context.Context, p *Pending) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	batch := s.db.NewBatch()
	defer batch.Close()
	batch.Set(key(pfxPending, p.Segment[:]), b, nil)
	for i, n := range p.Nodes {
		batch.Set(key(pfxPendPiece, n[:], p.Pieces[i][:]), p.Segment[:], nil)
	}
	return batch.Commit(s.wo)
}

// GetPending implements Store.
func (s *PebbleStore) GetPending(_ context.Context, id SegmentID) (*Pending, error) {
	p := &Pending{}
	if err := getJSON(s.db, key(pfxPending, id[:]), p); err != nil {
		return nil, err
	}
	return p, nil
}

func deletePending(b *pebble.Batch, p *Pending) {
	b.Delete(key(pfxPending, p.Segment[:]), nil)
	for i, n := range p.Nodes {
		b.Delete(key(pfxPendPiece, n[:], p.Pieces[i][:]), nil)
	}
}

// PendingPlacements implements Store.
func (s *PebbleStore) PendingPlacements(context.Context) ([]*Pending, error) {
	var out []*Pending
	err := s.iterate([]byte(pfxPending), func(_, v []byte) error {
		p := &Pending{}
		if err := json.Unmarshal(v, p); err != nil {
			return fmt.Errorf("%w: pending record: %v", ErrCorrupt, err)
		}
		out = append(out, p)
		return nil
	})
	return out, err
}

// DeletePendingBefore implements Store.
func (s *PebbleStore) DeletePendingBefore(ctx context.Context, t time.Time) (int, error) {
	all, err := s.PendingPlacements(ctx)
	if err != nil {
		return 0, err
	}
	var old []*Pending
	for _, p := range all {
		if p.Expires.Before(t) {
			old = append(old, p)
		}
	}
	if len(old) == 0 {
		return 0, nil
	}
	b := s.db.NewBatch()
	defer b.Close()
	for _, p := range old {
		deletePending(b, p)
	}
	return len(old), b.Commit(s.wo)
}

// DeletePending implements Store.
func (s *PebbleStore) DeletePending(ctx context.Context, id SegmentID) error {
	p, err := s.GetPending(ctx, id)
	if err != nil {
		return err
	}
	b := s.db.NewBatch()
	defer b.Close()
	deletePending(b, p)
	return b.Commit(s.wo)
}

// PendingPiece implements Store.
func (s *PebbleStore) PendingPiece(_ context.Context, node fnet.NodeID, piece challenge.PieceID) (bool, error) {
	_, err := get(s.db, key(pfxPendPiece, node[:], piece[:]))
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// pieceIndexValue is segment id (16) || index (1).
func pieceIndexValue(id SegmentID, index int) []byte {
	return append(bytes.Clone(id[:]), byte(index))
}

// ErrPieceShared: a node holds one copy of a piece id, so a second
// segment cannot contract the same piece id on the same node.
var ErrPieceShared = errors.New("piece id already contracted on that node for another segment")

// indexOwner returns the segment and index that the node -> piece index
// names, if any.
func (s *PebbleStore) indexOwner(node fnet.NodeID, piece challenge.PieceID) (SegmentID, int, bool, error) {
	v, err := get(s.db, key(pfxPiece, node[:], piece[:]))
	if errors.Is(err, ErrNotFound) {
		return SegmentID{}, 0, false, nil
	}
	if err != nil {
		return SegmentID{}, 0, false, err
	}
	if len(v) != 17 {
		return SegmentID{}, 0, false, fmt.Errorf("%w: piece index entry", ErrCorrupt)
	}
	var id SegmentID
	copy(id[:], v[:16])
	return id, int(v[16]), true, nil
}

// claimPiece sets the index entry of piece on node to (seg, index) in
// batch b; ErrPieceShared if another segment still holds that piece id on
// that node (under s.mu).
func (s *PebbleStore) claimPiece(b *pebble.Batch, seg SegmentID, index int, node fnet.NodeID, piece challenge.PieceID) error {
	owner, oi, ok, err := s.indexOwner(node, piece)
	if err != nil {
		return err
	}
	if ok && owner != seg {
		o, err := s.GetSegment(context.Background(), owner)
		switch {
		case errors.Is(err, ErrNotFound):
		case err != nil:
			return err
		case oi < len(o.Pieces) && o.Pieces[oi].ID == piece && o.Pieces[oi].Node == node:
			return fmt.Errorf("segment %s piece %d: %w: node %s holds piece %s for segment %s", seg, index, ErrPieceShared, node, piece, owner)
		}
	}
	b.Set(key(pfxPiece, node[:], piece[:]), pieceIndexValue(seg, index), nil)
	return nil
}

// releasePiece deletes the index entry of piece on node in batch b if it
// names seg (under s.mu): an entry of another segment stays.
func (s *PebbleStore) releasePiece(b *pebble.Batch, seg SegmentID, node fnet.NodeID, piece challenge.PieceID) error {
	owner, _, ok, err := s.indexOwner(node, piece)
	if err != nil || !ok || owner != seg {
		return err
	}
	b.Delete(key(pfxPiece, node[:], piece[:]), nil)
	return nil
}

// addContracted adjusts per-node contracted bytes inside batch b; deltas
// are accumulated by the caller so that each node is read once.
func (s *PebbleStore) addContracted(b *pebble.Batch, deltas map[fnet.NodeID]int64) error {
	for id, d := range deltas {
		if d == 0 {
			continue
		}
		cur, err := s.contracted(id)
		if err != nil {
			return err
		}
		v := int64(cur) + d
		if v < 0 {
			v = 0
		}
		b.Set(key(pfxContracted, id[:]), u64(uint64(v)), nil)
	}
	return nil
}

// addCounters adds deltas to counters inside batch b (under s.mu).
func (s *PebbleStore) addCounters(ctx context.Context, b *pebble.Batch, deltas map[string]int64) error {
	for name, d := range deltas {
		if d == 0 {
			continue
		}
		v, err := s.Counter(ctx, name)
		if err != nil {
			return err
		}
		b.Set(key(pfxCounter, []byte(name)), u64(uint64(v+d)), nil)
	}
	return nil
}

func pieceNodes(seg *Segment) map[fnet.NodeID]int64 {
	m := map[fnet.NodeID]int64{}
	for _, p := range seg.Pieces {
		if !p.Node.IsZero() {
			m[p.Node] += seg.PieceSize
		}
	}
	return m
}

// CommitSegment implements Store.
func (s *PebbleStore) CommitSegment(ctx context.Context, seg *Segment) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	sk := key(pfxSegment, seg.ID[:])
	if _, err := get(s.db, sk); err == nil {
		return fmt.Errorf("segment %s: %w", seg.ID, ErrExists)
	} else if !errors.Is(err, ErrNotFound) {
		return err
	}
	b := s.db.NewBatch()
	defer b.Close()
	if p := (&Pending{}); getJSON(s.db, key(pfxPending, seg.ID[:]), p) == nil {
		deletePending(b, p)
	}
	b.Set(sk, encodeSegment(seg), nil)
	for _, p := range seg.Pieces {
		if !p.Node.IsZero() {
			if err := s.claimPiece(b, seg.ID, p.Index, p.Node, p.ID); err != nil {
				return err
			}
		}
	}
	if err := s.addContracted(b, pieceNodes(seg)); err != nil {
		return err
	}
	err := s.addCounters(ctx, b, map[string]int64{
		CounterSegments: 1, CounterPieces: int64(len(seg.Pieces)), CounterHealthy: int64(seg.Healthy()),
	})
	if err != nil {
		return err
	}
	return b.Commit(s.wo)
}

// GetSegment implements Store.
func (s *PebbleStore) GetSegment(_ context.Context, id SegmentID) (*Segment, error) {
	b, err := get(s.db, key(pfxSegment, id[:]))
	if err != nil {
		return nil, fmt.Errorf("segment %s: %w", id, err)
	}
	return decodeSegment(b)
}

// UpdateSegment implements Store.
func (s *PebbleStore) UpdateSegment(ctx context.Context, seg *Segment) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, err := s.GetSegment(ctx, seg.ID)
	if err != nil {
		return err
	}
	if len(old.Pieces) != len(seg.Pieces) {
		return fmt.Errorf("segment %s: update changes the piece count from %d to %d", seg.ID, len(old.Pieces), len(seg.Pieces))
	}
	b := s.db.NewBatch()
	defer b.Close()
	deltas := map[fnet.NodeID]int64{}
	for i, p := range seg.Pieces {
		o := old.Pieces[i]
		if o.Node == p.Node && o.ID == p.ID {
			continue
		}
		if !o.Node.IsZero() {
			if err := s.releasePiece(b, seg.ID, o.Node, o.ID); err != nil {
				return err
			}
			deltas[o.Node] -= old.PieceSize
		}
		if !p.Node.IsZero() {
			if err := s.claimPiece(b, seg.ID, i, p.Node, p.ID); err != nil {
				return err
			}
			deltas[p.Node] += seg.PieceSize
		}
	}
	b.Set(key(pfxSegment, seg.ID[:]), encodeSegment(seg), nil)
	if err := s.addContracted(b, deltas); err != nil {
		return err
	}
	if err := s.addCounters(ctx, b, map[string]int64{CounterHealthy: int64(seg.Healthy() - old.Healthy())}); err != nil {
		return err
	}
	return b.Commit(s.wo)
}

// DeleteSegment implements Store.
func (s *PebbleStore) DeleteSegment(ctx context.Context, id SegmentID) (*Segment, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	seg, err := s.GetSegment(ctx, id)
	if err != nil {
		return nil, err
	}
	b := s.db.NewBatch()
	defer b.Close()
	b.Delete(key(pfxSegment, id[:]), nil)
	deltas := pieceNodes(seg)
	for _, p := range seg.Pieces {
		if !p.Node.IsZero() {
			if err := s.releasePiece(b, seg.ID, p.Node, p.ID); err != nil {
				return nil, err
			}
		}
	}
	for n := range deltas {
		deltas[n] = -deltas[n]
	}
	if err := s.addContracted(b, deltas); err != nil {
		return nil, err
	}
	err = s.addCounters(ctx, b, map[string]int64{
		CounterSegments: -1, CounterPieces: -int64(len(seg.Pieces)), CounterHealthy: -int64(seg.Healthy()),
	})
	if err != nil {
		return nil, err
	}
	return seg, b.Commit(s.wo)
}

// Segments implements Store.
func (s *PebbleStore) Segments(ctx context.Context, after SegmentID, limit int, fn func(*Segment) error) error {
	lower := key(pfxSegment, after[:])
	if after != (SegmentID{}) {
		lower = append(lower, 0)
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: prefixEnd([]byte(pfxSegment))})
	if err != nil {
		return err
	}
	defer it.Close()
	n := 0
	for ok := it.First(); ok && (limit <= 0 || n < limit); ok = it.Next() {
		if err := ctx.Err(); err != nil {
			return err
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return err
		}
		seg, err := decodeSegment(v)
		if err != nil {
			return err
		}
		if err := fn(seg); err != nil {
			return err
		}
		n++
	}
	return it.Error()
}

// NodePieces implements Store.
func (s *PebbleStore) NodePieces(ctx context.Context, node fnet.NodeID, fn func(PieceRef) error) error {
	type ref struct {
		piece challenge.PieceID
		seg   SegmentID
		index int
	}
	var refs []ref
	err := s.iterate(key(pfxPiece, node[:]), func(k, v []byte) error {
		if len(v) != 17 || len(k) != len(pfxPiece)+64 {
			return fmt.Errorf("%w: piece index entry", ErrCorrupt)
		}
		var r ref
		copy(r.piece[:], k[len(pfxPiece)+32:])
		copy(r.seg[:], v[:16])
		r.index = int(v[16])
		refs = append(refs, r)
		return nil
	})
	if err != nil {
		return err
	}
	for _, r := range refs {
		if err := ctx.Err(); err != nil {
			return err
		}
		seg, err := s.GetSegment(ctx, r.seg)
		if errors.Is(err, ErrNotFound) {
			continue // released meanwhile
		}
		if err != nil {
			return err
		}
		if r.index >= len(seg.Pieces) || seg.Pieces[r.index].ID != r.piece || seg.Pieces[r.index].Node != node {
			continue // moved meanwhile
		}
		ref := PieceRef{Segment: r.seg, Index: r.index, ID: r.piece, Size: seg.PieceSize, Account: seg.Account,
			State: seg.Pieces[r.index].State, Price: seg.Pieces[r.index].Price}
		if err := fn(ref); err != nil {
			return err
		}
	}
	return nil
}

// LookupPiece implements Store.
func (s *PebbleStore) LookupPiece(ctx context.Context, node fnet.NodeID, piece challenge.PieceID) (PieceRef, bool, error) {
	v, err := get(s.db, key(pfxPiece, node[:], piece[:]))
	if errors.Is(err, ErrNotFound) {
		return PieceRef{}, false, nil
	}
	if err != nil {
		return PieceRef{}, false, err
	}
	if len(v) != 17 {
		return PieceRef{}, false, fmt.Errorf("%w: piece index entry", ErrCorrupt)
	}
	r := PieceRef{ID: piece, Index: int(v[16])}
	copy(r.Segment[:], v[:16])
	seg, err := s.GetSegment(ctx, r.Segment)
	if errors.Is(err, ErrNotFound) {
		return PieceRef{}, false, nil
	}
	if err != nil {
		return PieceRef{}, false, err
	}
	if r.Index >= len(seg.Pieces) || seg.Pieces[r.Index].ID != piece || seg.Pieces[r.Index].Node != node {
		return PieceRef{}, false, nil
	}
	r.Size, r.Account, r.State, r.Price = seg.PieceSize, seg.Account, seg.Pieces[r.Index].State, seg.Pieces[r.Index].Price
	return r, true, nil
}

func periodKey(r *PeriodRecord) []byte {
	return key(pfxPeriod, u64(uint64(r.Period.UnixNano())), r.Node[:], r.Account[:])
}

// PutPeriodRecords implements Store.
func (s *PebbleStore) PutPeriodRecords(_ context.Context, recs []PeriodRecord) error {
	b := s.db.NewBatch()
	defer b.Close()
	for i := range recs {
		v, err := json.Marshal(&recs[i])
		if err != nil {
			return err
		}
		b.Set(periodKey(&recs[i]), v, nil)
	}
	return b.Commit(s.wo)
}

// PeriodRecords implements Store.
func (s *PebbleStore) PeriodRecords(_ context.Context, from, to time.Time) ([]PeriodRecord, error) {
	it, err := s.db.NewIter(&pebble.IterOptions{
		LowerBound: key(pfxPeriod, u64(uint64(from.UnixNano()))),
		UpperBound: key(pfxPeriod, u64(uint64(to.UnixNano()))),
	})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []PeriodRecord
	for ok := it.First(); ok; ok = it.Next() {
		var r PeriodRecord
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, err
		}
		if err := json.Unmarshal(v, &r); err != nil {
			return nil, fmt.Errorf("%w: period record: %v", ErrCorrupt, err)
		}
		out = append(out, r)
	}
	return out, it.Error()
}

// AddCounter implements Store.
func (s *PebbleStore) AddCounter(ctx context.Context, name string, delta int64) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.Counter(ctx, name)
	if err != nil {
		return 0, err
	}
	v += delta
	return v, s.db.Set(key(pfxCounter, []byte(name)), u64(uint64(v)), s.wo)
}

// Counter implements Store.
func (s *PebbleStore) Counter(_ context.Context, name string) (int64, error) {
	b, err := get(s.db, key(pfxCounter, []byte(name)))
	if errors.Is(err, ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if len(b) != 8 {
		return 0, fmt.Errorf("%w: counter %s", ErrCorrupt, name)
	}
	return int64(binary.BigEndian.Uint64(b)), nil
}
