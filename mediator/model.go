package mediator

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"time"

	"github.com/fincrypt/fincrypt/challenge"
	"github.com/fincrypt/fincrypt/erasure"
	fnet "github.com/fincrypt/fincrypt/net"
)

// SegmentID names a contracted segment; the mediator assigns it at
// placement. Its text form is 32 lowercase hex digits.
type SegmentID [16]byte

func (s SegmentID) String() string { return hex.EncodeToString(s[:]) }

// ParseSegmentID parses 32 hex digits.
func ParseSegmentID(v string) (SegmentID, error) {
	var s SegmentID
	b, err := hex.DecodeString(v)
	if err != nil || len(b) != len(s) {
		return s, fmt.Errorf("segment id %q: want %d hex digits", v, 2*len(s))
	}
	copy(s[:], b)
	return s, nil
}

func newSegmentID() SegmentID {
	var s SegmentID
	if _, err := rand.Read(s[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	return s
}

// PieceState is the mediator's view of one piece.
type PieceState uint8

// Piece states.
const (
	// PieceHealthy: stored on its node, which has not failed it.
	PieceHealthy PieceState = 0
	// PieceLost: failed a challenge or a fetch, or was never uploaded;
	// the repair worker rebuilds it.
	PieceLost PieceState = 1
	// PieceOffline: lost because its node stayed silent past the offline
	// limit. It counts as lost and is rebuilt like PieceLost, but while it
	// is still contracted on that node it becomes healthy again as soon as
	// the node is back and passes a challenge on it (Round, RepairScan).
	PieceOffline PieceState = 2
)

func (s PieceState) String() string {
	switch s {
	case PieceHealthy:
		return "healthy"
	case PieceOffline:
		return "offline"
	}
	return "lost"
}

// Piece is one erasure-coded piece of a contracted segment.
type Piece struct {
	Index       int
	ID          challenge.PieceID
	Node        fnet.NodeID // zero when the piece has no node
	State       PieceState
	Passed      uint32 // challenges passed on this node
	Failed      uint32 // challenges failed on this node
	LastChecked time.Time
	// Price is the contract price of the piece on its node, satoshis per
	// GiB per month: the node's price when the piece was placed there,
	// changed only as docs/WALLET.md "Contract prices" says (a rise after
	// the node's notice period, a cut at once).
	Price uint64
}

// Segment is a client's contract: K-of-N pieces of PieceSize bytes each.
type Segment struct {
	ID        SegmentID
	Account   fnet.AccountID
	Scheme    erasure.Scheme
	PieceSize int64
	Created   time.Time
	Repaired  uint32 // pieces rebuilt so far
	Pieces    []Piece
	// unpriced: decoded from a record older than version 3, whose pieces
	// carry no price yet (priceLegacyContracts gives them their node's).
	unpriced bool
}

// Healthy counts the pieces in state healthy.
func (s *Segment) Healthy() int {
	n := 0
	for _, p := range s.Pieces {
		if p.State == PieceHealthy {
			n++
		}
	}
	return n
}

// Node is a registered storage node.
type Node struct {
	ID            fnet.NodeID
	Address       string // NODEID@host:port
	Capacity      uint64 // bytes offered (reported)
	Used          uint64 // bytes held (reported)
	Pieces        uint64 // pieces held (reported)
	Price         uint64 // satoshis per GiB per month
	PayoutAddress string
	Network       string
	Registered    time.Time
	LastSeen      time.Time
	Passed        uint64 // challenged pieces that verified
	Failed        uint64 // challenged pieces that did not
	// Unanswered counts rounds in a row whose challenge got no answer.
	Unanswered uint32
	// Contracted is the sum of the sizes of the pieces contracted on the
	// node; the store maintains it and ignores it in PutNode.
	Contracted uint64
	// IP is the address the mediator verified at registration (the
	// advertised name resolves to it, the registration came from it and
	// the node answered there with its key); zero until then. Placement
	// diversity is by its /24 (IPv4) or /48 (IPv6) (reputation.go).
	IP netip.Addr `json:",omitzero"`
	// RepPass and RepFail are the decayed weights of passed and failed
	// challenges and reads (reputation.go).
	RepPass float64 `json:",omitempty"`
	RepFail float64 `json:",omitempty"`
	// Disqualified is when the node's reputation fell below the
	// threshold: it gets no pieces and its pieces are rebuilt elsewhere.
	Disqualified time.Time `json:",omitzero"`
	// RepriceAt, when set, is the end of the notice of a price rise: from
	// then on the pieces the node held before the rise are charged at
	// Price too (until then at their contract price). Zero: no rise pending.
	RepriceAt time.Time `json:",omitzero"`
}

// Account is a client account: its ed25519 public key.
type Account struct {
	ID      fnet.AccountID
	Created time.Time
}

// Pending is a placement answered but not yet committed.
type Pending struct {
	Segment   SegmentID
	Account   fnet.AccountID
	Scheme    erasure.Scheme
	PieceSize int64
	Pieces    []challenge.PieceID
	Nodes     []fnet.NodeID
	// Prices[i] is the price Nodes[i] asked when the placement was made:
	// the contract price of piece i (older pending records have none; the
	// node's price at commit is taken then).
	Prices  []uint64 `json:",omitempty"`
	Expires time.Time
}

// PeriodRecord is what settlement reads: in one challenge period, a node
// held Bytes in Pieces pieces for an account, and passed or failed the
// challenges on them. Records are keyed by (period, node, account) and
// written once per period, so writing them again is idempotent.
type PeriodRecord struct {
	Period  time.Time // start of the period (the round's start)
	Node    fnet.NodeID
	Account fnet.AccountID
	Bytes   uint64
	Pieces  uint32
	Passed  uint32
	Failed  uint32
	// Price is the contract price of these bytes (sat per GiB per month):
	// the mean of the pieces' contract prices weighted by size, rounded
	// to the nearest satoshi.
	Price uint64
}

// PieceRef locates a piece contracted on a node.
type PieceRef struct {
	Segment SegmentID
	Index   int
	ID      challenge.PieceID
	Size    int64
	Account fnet.AccountID
	State   PieceState
	Price   uint64 // the piece's contract price
}

// segmentVersion is the first byte of an encoded segment record. Version
// 2 added the piece state PieceOffline, version 3 the contract price of
// each piece (8 bytes after LastChecked); version 1 and 2 records still
// load (unpriced until priceLegacyContracts prices them).
const segmentVersion = 3

// pieceRecordSize is the encoded size of one piece in a segment record
// (version 3); legacyPieceRecordSize that of versions 1 and 2.
const (
	legacyPieceRecordSize = 32 + 32 + 1 + 4 + 4 + 8
	pieceRecordSize       = legacyPieceRecordSize + 8
)

const segmentHeaderSize = 1 + 16 + 32 + 1 + 1 + 8 + 8 + 4 + 1

// encodeSegment is the compact binary record kept in the store (see
// docs/PROTOCOL.md, "mediator state").
func encodeSegment(s *Segment) []byte {
	b := make([]byte, 0, segmentHeaderSize+len(s.Pieces)*pieceRecordSize)
	b = append(b, segmentVersion)
	b = append(b, s.ID[:]...)
	b = append(b, s.Account[:]...)
	b = append(b, byte(s.Scheme.K), byte(s.Scheme.N))
	b = binary.BigEndian.AppendUint64(b, uint64(s.PieceSize))
	b = binary.BigEndian.AppendUint64(b, uint64(s.Created.UnixNano()))
	b = binary.BigEndian.AppendUint32(b, s.Repaired)
	b = append(b, byte(len(s.Pieces)))
	for _, p := range s.Pieces {
		b = append(b, p.ID[:]...)
		b = append(b, p.Node[:]...)
		b = append(b, byte(p.State))
		b = binary.BigEndian.AppendUint32(b, p.Passed)
		b = binary.BigEndian.AppendUint32(b, p.Failed)
		var t int64
		if !p.LastChecked.IsZero() {
			t = p.LastChecked.UnixNano()
		}
		b = binary.BigEndian.AppendUint64(b, uint64(t))
		b = binary.BigEndian.AppendUint64(b, p.Price)
	}
	return b
}

func decodeSegment(b []byte) (*Segment, error) {
	if len(b) < segmentHeaderSize {
		return nil, fmt.Errorf("%w: segment record of %d bytes", ErrCorrupt, len(b))
	}
	version := b[0]
	if version < 1 || version > segmentVersion {
		return nil, fmt.Errorf("%w: segment record version %d, want 1..%d", ErrCorrupt, version, segmentVersion)
	}
	maxState := PieceOffline
	if version == 1 {
		maxState = PieceLost
	}
	recSize := pieceRecordSize
	if version < 3 {
		recSize = legacyPieceRecordSize
	}
	s := &Segment{unpriced: version < 3}
	copy(s.ID[:], b[1:17])
	copy(s.Account[:], b[17:49])
	s.Scheme = erasure.Scheme{K: int(b[49]), N: int(b[50])}
	s.PieceSize = int64(binary.BigEndian.Uint64(b[51:59]))
	s.Created = time.Unix(0, int64(binary.BigEndian.Uint64(b[59:67])))
	s.Repaired = binary.BigEndian.Uint32(b[67:71])
	n := int(b[71])
	b = b[segmentHeaderSize:]
	if len(b) != n*recSize || n != s.Scheme.N {
		return nil, fmt.Errorf("%w: segment %s: %d piece bytes for %d pieces of scheme %s", ErrCorrupt, s.ID, len(b), n, s.Scheme)
	}
	s.Pieces = make([]Piece, n)
	for i := range s.Pieces {
		p := &s.Pieces[i]
		r := b[i*recSize:]
		p.Index = i
		copy(p.ID[:], r[0:32])
		copy(p.Node[:], r[32:64])
		p.State = PieceState(r[64])
		p.Passed = binary.BigEndian.Uint32(r[65:69])
		p.Failed = binary.BigEndian.Uint32(r[69:73])
		if t := int64(binary.BigEndian.Uint64(r[73:81])); t != 0 {
			p.LastChecked = time.Unix(0, t)
		}
		if recSize == pieceRecordSize {
			p.Price = binary.BigEndian.Uint64(r[81:89])
		}
		if p.State > maxState {
			return nil, fmt.Errorf("%w: segment %s piece %d: state %d", ErrCorrupt, s.ID, i, p.State)
		}
	}
	return s, nil
}
