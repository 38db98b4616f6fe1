package replicate

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"github.com/fincrypt/fincrypt/mediator"
	"github.com/fincrypt/fincrypt/meta"
	fnet "github.com/fincrypt/fincrypt/net"
	"github.com/fincrypt/fincrypt/vault"
)

// Delta snapshots (docs/FORMAT.md, "Index snapshots"): a pointer names a
// chain, a base (a whole export) and the deltas taken after it in order,
// each the keys the index's change feed named (meta.ChangeView) with their
// values, or that they are gone.
const (
	listMagic2 = "fincrypt snapshot list v2\x00" // a chain of state hash v1 (stateHash)
	listMagic3 = "fincrypt snapshot list v3\x00" // the same, of state hash v2 (stateHashV2)
	deltaMagic = "fincrypt index delta v1\x00"
	// maxChainParts bounds a chain: a base and at most this many less one
	// deltas. A new base is taken once the chain would be longer.
	maxChainParts = 32
	// rebaseShare: a new base once the deltas' sealed bytes pass this
	// share of the base's.
	rebaseShare = 4
)

// snapPart is one part of a chain: a base or a delta.
type snapPart struct {
	seq    uint64 // its seal's sequence number (AD)
	delta  bool
	sealed uint64 // sealed length
	segs   []snapSegment
}

// snapChain is what a v2 pointer names: the parts, base first, and the
// state hash of the index they restore.
type snapChain struct {
	hash  []byte
	v1    bool // hash is stateHash (a list of magic v2), not stateHashV2 (v3)
	parts []snapPart
}

// deltaBytes returns the sealed bytes of the chain's deltas.
func (c *snapChain) deltaBytes() uint64 {
	var n uint64
	for _, p := range c.parts[1:] {
		n += p.sealed
	}
	return n
}

// segments returns every segment the chain names.
func (c *snapChain) segments() []snapSegment {
	var out []snapSegment
	for _, p := range c.parts {
		out = append(out, p.segs...)
	}
	return out
}

func encodeChain(c *snapChain) []byte {
	b := []byte(listMagic3)
	if c.v1 {
		b = []byte(listMagic2)
	}
	b = append(b, c.hash...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(c.parts)))
	for _, p := range c.parts {
		b = binary.BigEndian.AppendUint64(b, p.seq)
		b = append(b, boolByte(p.delta))
		b = append(b, encodeList(p.sealed, p.segs)[len(listMagic):]...)
	}
	return b
}

// decodeChain reads a pointer's segment list: v2 (a chain), or v1 (a lone
// base sealed with the pointer's seq; no state hash).
func decodeChain(b []byte, pointerSeq uint64) (*snapChain, error) {
	if bytes.HasPrefix(b, []byte(listMagic)) {
		n, segs, err := decodeList(b)
		if err != nil {
			return nil, err
		}
		return &snapChain{parts: []snapPart{{seq: pointerSeq, sealed: n, segs: segs}}}, nil
	}
	v1 := bytes.HasPrefix(b, []byte(listMagic2))
	if !v1 && !bytes.HasPrefix(b, []byte(listMagic3)) || len(b) < len(listMagic2)+sha256.Size+4 {
		return nil, fmt.Errorf("%w: segment list header", ErrSnapshot)
	}
	b = b[len(listMagic2):] // (as long as listMagic3)
	c := &snapChain{hash: bytes.Clone(b[:sha256.Size]), v1: v1}
	n := binary.BigEndian.Uint32(b[sha256.Size:])
	b = b[sha256.Size+4:]
	if n == 0 || n > maxChainParts {
		return nil, fmt.Errorf("%w: a chain of %d parts", ErrSnapshot, n)
	}
	total := 0
	for i := range n {
		if len(b) < 8+1+12 {
			return nil, fmt.Errorf("%w: part %d truncated", ErrSnapshot, i)
		}
		p := snapPart{seq: binary.BigEndian.Uint64(b), delta: b[8] == 1}
		if b[8] > 1 || p.delta != (i > 0) {
			return nil, fmt.Errorf("%w: part %d of kind %d", ErrSnapshot, i, b[8])
		}
		count := int(binary.BigEndian.Uint32(b[17:]))
		end := 9 + 12 + 24*count
		if count > maxSnapshotSegments || len(b) < end {
			return nil, fmt.Errorf("%w: part %d truncated", ErrSnapshot, i)
		}
		var err error
		if p.sealed, p.segs, err = decodeList(append([]byte(listMagic), b[9:end]...)); err != nil {
			return nil, fmt.Errorf("part %d: %w", i, err)
		}
		if total += count; total > maxChainParts*maxSnapshotSegments {
			return nil, fmt.Errorf("%w: too many segments", ErrSnapshot)
		}
		if i > 0 && p.seq <= c.parts[i-1].seq {
			return nil, fmt.Errorf("%w: part %d is not newer than the one before", ErrSnapshot, i)
		}
		c.parts = append(c.parts, p)
		b = b[end:]
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the last part", ErrSnapshot, len(b))
	}
	return c, nil
}

// newFramedDelta is newFramed for a delta.
func newFramedDelta(n int) []byte {
	b := make([]byte, vault.NonceSize, vault.NonceSize+max(n, len(deltaMagic))+vault.TagSize)
	return append(b, deltaMagic...)
}

// exportDelta serialises the view's changes (framed): each changed key
// with its sealed value, or with an empty value if it is gone (a sealed
// value is never empty).
func exportDelta(v *meta.ChangeView) ([]byte, error) {
	blob := newFramedDelta(4096)
	err := v.Changes(func(k, sealed []byte, deleted bool) error {
		if deleted {
			sealed = nil
		}
		blob = appendRecord(blob, k, sealed)
		return nil
	})
	return blob, err
}

// mergeDelta returns the delta (framed) with extra records set in it (they
// are newer than the delta's own: a location the delta says is gone, or a
// segment record, is overwritten), in key order.
func mergeDelta(blob []byte, extra []record) ([]byte, error) {
	slices.SortFunc(extra, func(a, b record) int { return bytes.Compare(a.key, b.key) })
	n := len(recordsOf(blob))
	for _, rc := range extra {
		n += 8 + len(rc.key) + len(rc.sealed)
	}
	out := newFramedDelta(n)
	i := 0
	if err := walkDelta(recordsOf(blob), func(k, v []byte) error {
		for ; i < len(extra) && bytes.Compare(extra[i].key, k) < 0; i++ {
			out = appendRecord(out, extra[i].key, extra[i].sealed)
		}
		if i < len(extra) && bytes.Equal(extra[i].key, k) {
			return nil // the extra record, newer, comes next
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

// walkDelta walks a serialised delta: each record's key and sealed value
// (empty: the key is gone), keys strictly increasing.
func walkDelta(b []byte, fn func(key, sealed []byte) error) error {
	if !bytes.HasPrefix(b, []byte(deltaMagic)) {
		return fmt.Errorf("%w: bad delta header", ErrSnapshot)
	}
	var last []byte
	first := true
	return importRecords(append([]byte(snapshotMagic), b[len(deltaMagic):]...))(func(k, v []byte) error {
		if !first && bytes.Compare(last, k) >= 0 {
			return fmt.Errorf("%w: delta keys out of order", ErrSnapshot)
		}
		first, last = false, k
		return fn(k, v)
	})
}

// applyDelta returns overlay (records in key order, an empty value for a
// key that is gone) with a delta's records set in it: the deltas of a
// chain, applied in order, as one overlay of the base.
func applyDelta(overlay []record, delta []byte) ([]record, error) {
	out := make([]record, 0, len(overlay))
	i := 0
	err := walkDelta(delta, func(k, v []byte) error {
		for ; i < len(overlay) && bytes.Compare(overlay[i].key, k) < 0; i++ {
			out = append(out, overlay[i])
		}
		if i < len(overlay) && bytes.Equal(overlay[i].key, k) {
			i++
		}
		out = append(out, record{k, v})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return append(out, overlay[i:]...), nil
}

// restored is the index a chain brings back: its base's export (keys
// checked ascending, values not yet opened) with the deltas' overlay set in
// it, so that only the deltas are held as records (a restore of a large
// vault holds its export once, as before deltas); the state hash the chain
// says they make (nil for a v1 pointer).
type restored struct {
	base     []byte   // the base's export (framed records)
	overlay  []record // the deltas applied in order (applyDelta)
	count    int      // the records walk passes
	hash     []byte
	v1       bool // hash is stateHash, not stateHashV2
	sealed   int  // sealed bytes read
	segments int
}

// walk passes the records, in key order: the base's, each replaced or
// taken out by the overlay, and the overlay's new keys.
func (rs *restored) walk(fn func(key, sealed []byte) error) error {
	ov := rs.overlay
	i := 0
	next := func() error { // the overlay's record at i, unless it is a key gone
		r := ov[i]
		i++
		if len(r.sealed) == 0 {
			return nil
		}
		return fn(r.key, r.sealed)
	}
	err := importRecords(rs.base)(func(k, v []byte) error {
		for i < len(ov) && bytes.Compare(ov[i].key, k) < 0 {
			if err := next(); err != nil {
				return err
			}
		}
		if i < len(ov) && bytes.Equal(ov[i].key, k) {
			return next()
		}
		return fn(k, v)
	})
	for err == nil && i < len(ov) {
		err = next()
	}
	return err
}

// fetchSnapshot reads and opens the index that pointer p names: its
// segment list (a chain: base, then deltas), each part's segments from the
// storage nodes, and applies the deltas to the base in memory. Nothing is
// written.
func fetchSnapshot(ctx context.Context, client *mediator.Client, v *vault.Vault, acct fnet.AccountID, p *fnet.SnapshotPointer,
	pieceTimeout, hedge time.Duration, progress func(int, int, int64, int64)) (*restored, error) {
	if progress == nil {
		progress = func(int, int, int64, int64) {}
	}
	sealer, err := vault.NewSealer(v.Keys.Segment[:], "fincrypt snapshot v1")
	if err != nil {
		return nil, err
	}
	listBytes, err := sealer.Open(nil, p.Sealed, snapshotAD("list", acct, p.Seq))
	if err != nil {
		return nil, fmt.Errorf("%w: segment list: %w", ErrSnapshot, err)
	}
	chain, err := decodeChain(listBytes, p.Seq)
	if err != nil {
		return nil, err
	}
	if last := chain.parts[len(chain.parts)-1].seq; last != p.Seq {
		return nil, fmt.Errorf("%w: the chain's last part is of %d, the pointer of %d", ErrSnapshot, last, p.Seq)
	}
	segs := chain.segments()
	var total, done int64
	for _, part := range chain.parts {
		total += int64(part.sealed)
	}
	progress(0, len(segs), 0, total)
	rs := &restored{hash: chain.hash, v1: chain.v1, segments: len(segs)}
	nseg := 0
	for pi, part := range chain.parts {
		sealed := make([]byte, 0, part.sealed)
		for _, s := range part.segs {
			data, err := FetchSegment(ctx, client, fnet.SegmentID(s.id), int(s.class), pieceTimeout, hedge)
			if err != nil {
				return nil, fmt.Errorf("snapshot segment %d of %d: %w", nseg+1, len(segs), err)
			}
			if len(data) < int(s.used) {
				return nil, fmt.Errorf("%w: segment %d holds %d bytes, list says %d", ErrSnapshot, nseg, len(data), s.used)
			}
			sealed = append(sealed, data[:s.used]...)
			nseg++
			done += int64(s.used)
			progress(nseg, len(segs), done, total)
		}
		blob, err := sealer.OpenInPlace(sealed, snapshotAD("index", acct, part.seq))
		if err != nil {
			return nil, fmt.Errorf("%w: part %d of %d: %w", ErrSnapshot, pi+1, len(chain.parts), err)
		}
		rs.sealed += len(sealed)
		if !part.delta {
			var last []byte
			first := true
			err = importRecords(blob)(func(k, _ []byte) error {
				if !first && bytes.Compare(last, k) >= 0 {
					return fmt.Errorf("%w: keys out of order", ErrSnapshot)
				}
				first, last = false, k
				return nil
			})
			rs.base = blob
		} else {
			rs.overlay, err = applyDelta(rs.overlay, blob)
		}
		if err != nil {
			return nil, fmt.Errorf("part %d of %d: %w", pi+1, len(chain.parts), err)
		}
	}
	if err := rs.walk(func(_, _ []byte) error { rs.count++; return nil }); err != nil {
		return nil, err
	}
	return rs, nil
}

// ErrStateMismatch means a chain's records, each one authentic (sealed with
// the vault's keys), do not make the state hash the chain recorded: a change
// the client's change feed missed. What they make is the vault as the
// snapshots hold it, short of that change; RestoreOptions.AcceptMismatch
// restores it anyway.
var ErrStateMismatch = fmt.Errorf("%w: the restored records do not make the state its snapshot recorded", ErrSnapshot)

// importRestored checks that rs makes the state hash its chain says (with
// keyFile, the pointer's), then imports it into idx (which checks that
// every value opens before it writes anything). It returns the state hash
// the records make. With accept, a state hash other than the chain's is
// imported too, and reported as mismatch.
func importRestored(idx *meta.Index, keyFile []byte, rs *restored, accept bool) (sum []byte, mismatch bool, err error) {
	if rs.v1 || rs.hash == nil {
		sum, err = stateHash(idx, keyFile, rs.walk)
	} else {
		var s meta.StateSum
		s, err = idx.SumRecords(rs.walk)
		sum = stateHashV2(keyFile, s)
	}
	if err != nil {
		return nil, false, err
	}
	if rs.hash != nil && !bytes.Equal(sum, rs.hash) {
		if !accept {
			return nil, false, fmt.Errorf("%w (its state hash is %x, the snapshot says %x)", ErrStateMismatch, sum[:8], rs.hash[:8])
		}
		mismatch = true
	}
	if err := idx.Import(rs.walk); err != nil {
		return nil, false, err
	}
	return sum, mismatch, nil
}
