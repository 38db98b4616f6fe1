package net

// Tests written against the mutants that lived in gremlins runs over this
// package (docs/TESTING.md, "Scores"): each bound of the wire format holds
// exactly at its edge, and a malformed frame is refused with an error that
// says what is wrong.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/challenge"
)

// roundTrip encodes m and decodes it with DecodeFrame and ReadMessageOf;
// it fails the test unless both give m back.
func roundTrip(t *testing.T, name string, m Message) {
	t.Helper()
	b, err := EncodeFrame(m)
	if err != nil {
		t.Fatalf("%s: encode: %v", name, err)
	}
	got, err := DecodeFrame(b)
	if err != nil {
		t.Fatalf("%s: decode: %v", name, err)
	}
	if !reflect.DeepEqual(normalize(got), normalize(m)) {
		t.Fatalf("%s: round trip changed the message", name)
	}
	if _, err := ReadMessageOf(bytes.NewReader(b), knownType); err != nil {
		t.Fatalf("%s: ReadMessageOf: %v", name, err)
	}
}

// refused encodes m (which must encode) and checks that decoding refuses
// it as malformed, with an error that contains each of want.
func refused(t *testing.T, name string, m Message, want ...string) {
	t.Helper()
	b, err := EncodeFrame(m)
	if err != nil {
		t.Fatalf("%s: encode: %v", name, err)
	}
	_, err = DecodeFrame(b)
	if !errors.Is(err, ErrMalformed) {
		t.Fatalf("%s: decoded (%v), want it refused as malformed", name, err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Fatalf("%s: error %q does not say %q", name, err, w)
		}
	}
	if _, err := ReadMessageOf(bytes.NewReader(b), knownType); !errors.Is(err, ErrMalformed) {
		t.Fatalf("%s: ReadMessageOf: %v, want malformed", name, err)
	}
}

// TestStringFieldsAtTheirLimit: a text field of exactly its limit decodes,
// one byte more is refused and the error names both lengths.
func TestStringFieldsAtTheirLimit(t *testing.T) {
	id := mustIdentity(t).ID()
	reg := func(addr, payout, network string) *RegisterRequest {
		return &RegisterRequest{Node: id, Address: addr, Capacity: 1, Price: 1, PayoutAddress: payout, Network: network}
	}
	for _, c := range []struct {
		name  string
		limit int
		make  func(string) Message
	}{
		{"error text", MaxErrorText, func(s string) Message { return &ErrorReply{Code: CodeBusy, Message: s} }},
		{"address", MaxAddressText, func(s string) Message { return reg(s, "p", "n") }},
		{"payout address", MaxPayoutAddress, func(s string) Message { return reg("a", s, "n") }},
		{"network", MaxNetworkName, func(s string) Message { return reg("a", "p", s) }},
	} {
		roundTrip(t, c.name+" at its limit", c.make(strings.Repeat("x", c.limit)))
		roundTrip(t, c.name+" empty", c.make(""))
		refused(t, c.name+" one byte over", c.make(strings.Repeat("x", c.limit+1)),
			fmt.Sprintf("string of %d bytes exceeds %d", c.limit+1, c.limit))
	}
	// NewErrorReply cuts a long text to exactly the limit, which decodes.
	long := errors.New(strings.Repeat("y", 3*MaxErrorText))
	r := NewErrorReply(long)
	if len(r.Message) != MaxErrorText {
		t.Fatalf("NewErrorReply kept %d bytes, want %d", len(r.Message), MaxErrorText)
	}
	roundTrip(t, "NewErrorReply of a long error", r)
}

func pieces(n int) []challenge.PieceID {
	p := make([]challenge.PieceID, n)
	for i := range p {
		binary.BigEndian.PutUint32(p[i][:], uint32(i+1))
	}
	return p
}

// TestElementCountsAtTheirLimit: each list of a message holds exactly its
// limit of elements; one more is refused, at encoding when the body limit
// already forbids it, else at decoding with an error naming the count.
func TestElementCountsAtTheirLimit(t *testing.T) {
	// The largest LiveReply and LiveRequest are exactly their type's body
	// limit: they encode, and the frame's length passes the header check.
	live := make([]bool, MaxLivePieces)
	for i := range live {
		live[i] = i%3 == 0
	}
	for _, m := range []Message{&LiveReply{Live: live}, &LiveRequest{Pieces: pieces(MaxLivePieces)}, &DamageReport{Pieces: pieces(MaxDamagePieces)}} {
		b, err := EncodeFrame(m)
		if err != nil {
			t.Fatalf("%s at its limit: %v", m.Type(), err)
		}
		if n := len(b) - HeaderSize; n != BodyLimit(m.Type()) {
			t.Fatalf("%s at its limit: body %d, want exactly the limit %d", m.Type(), n, BodyLimit(m.Type()))
		}
		roundTrip(t, m.Type().String()+" at its limit", m)
	}
	for _, m := range []Message{&LiveReply{Live: append(live, true)}, &LiveRequest{Pieces: pieces(MaxLivePieces + 1)},
		&DamageReport{Pieces: pieces(MaxDamagePieces + 1)}} {
		if _, err := EncodeFrame(m); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("%s one over its limit: %v, want too large", m.Type(), err)
		}
	}

	roundTrip(t, "challenge of the most pieces", &ChallengeRequest{Nonce: challenge.Nonce{1}, Openings: 1, Pieces: pieces(MaxChallengePieces)})
	refused(t, "challenge of one piece too many", &ChallengeRequest{Nonce: challenge.Nonce{1}, Openings: 1, Pieces: pieces(MaxChallengePieces + 1)},
		fmt.Sprintf("%d elements exceed %d", MaxChallengePieces+1, MaxChallengePieces))

	proofs := func(n, openings, path, leaf int) *ChallengeResponse {
		r := &ChallengeResponse{Nonce: challenge.Nonce{2}}
		for i := range n {
			p := PieceProof{Status: ProofStatus(i % 3), Proof: challenge.Proof{Piece: challenge.PieceID{byte(i)}, Digest: challenge.Hash{byte(i)}}}
			for j := range openings {
				o := challenge.Opening{Index: uint32(j), Leaf: bytes.Repeat([]byte{byte(j)}, leaf)}
				if path > 0 {
					o.Path = make([]challenge.Hash, path)
				}
				p.Proof.Openings = append(p.Proof.Openings, o)
			}
			r.Proofs = append(r.Proofs, p)
		}
		return r
	}
	roundTrip(t, "response of the most proofs", proofs(MaxChallengePieces, 0, 0, 0))
	refused(t, "response of one proof too many", proofs(MaxChallengePieces+1, 0, 0, 0),
		fmt.Sprintf("%d elements exceed %d", MaxChallengePieces+1, MaxChallengePieces))
	roundTrip(t, "proof of the most openings", proofs(1, challenge.MaxOpenings, 1, 1))
	refused(t, "proof of one opening too many", proofs(1, challenge.MaxOpenings+1, 1, 1),
		fmt.Sprintf("%d elements exceed %d", challenge.MaxOpenings+1, challenge.MaxOpenings))
	roundTrip(t, "opening of the longest path", proofs(1, 1, maxPathLen, 1))
	refused(t, "opening of a path one too long", proofs(1, 1, maxPathLen+1, 1),
		fmt.Sprintf("%d elements exceed %d", maxPathLen+1, maxPathLen))
	roundTrip(t, "opening of a whole leaf", proofs(1, 1, 1, challenge.LeafSize))
	refused(t, "opening of a leaf one byte too long", proofs(1, 1, 1, challenge.LeafSize+1),
		fmt.Sprintf("field of %d bytes exceeds %d", challenge.LeafSize+1, challenge.LeafSize))
	roundTrip(t, "opening of an empty leaf", proofs(1, 1, 0, 0))
}

// TestForgedCountAllocatesNothing: a count that promises more elements
// than the body has bytes for is refused before the decoder allocates for
// it, with an error saying how many bytes it would need.
func TestForgedCountAllocatesNothing(t *testing.T) {
	// A LiveRequest announcing the most pieces (8192, 256 KiB of them)
	// with only 300 bytes after the count.
	body := binary.BigEndian.AppendUint32(nil, MaxLivePieces)
	body = append(body, make([]byte, 300)...)
	frame := append(header(TypeLiveRequest, uint32(len(body))), body...)
	_, err := DecodeFrame(frame)
	want := fmt.Sprintf("%d elements need at least %d bytes, have 300", MaxLivePieces, MaxLivePieces*challenge.HashSize)
	if !errors.Is(err, ErrTruncated) || !strings.Contains(err.Error(), want) {
		t.Fatalf("forged count: %v, want truncated: %s", err, want)
	}
	const runs = 64
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range runs {
		DecodeFrame(frame)
	}
	runtime.ReadMemStats(&after)
	// Allocating for the count would be 256 KiB a decode, 16 MiB in all.
	if got := after.TotalAlloc - before.TotalAlloc; got > runs*16<<10 {
		t.Fatalf("%d decodes of a forged count allocated %d bytes", runs, got)
	}
}

// TestDecodeFrameSaysWhatIsWrong: a frame whose length disagrees with its
// header is refused, and the error gives the lengths.
func TestDecodeFrameSaysWhatIsWrong(t *testing.T) {
	b, err := EncodeFrame(&GetReply{Length: 7})
	if err != nil {
		t.Fatal(err)
	}
	_, err = DecodeFrame(append(bytes.Clone(b), 1, 2, 3))
	if !errors.Is(err, ErrMalformed) || errors.Is(err, ErrTruncated) || !strings.Contains(err.Error(), "3 bytes after the body") {
		t.Fatalf("3 bytes too many: %v", err)
	}
	_, err = DecodeFrame(b[:len(b)-3])
	if !errors.Is(err, ErrTruncated) || !strings.Contains(err.Error(), "body 5 bytes, header says 8") {
		t.Fatalf("3 bytes short: %v", err)
	}
	_, err = DecodeFrame(b[:HeaderSize-1])
	if !errors.Is(err, ErrTruncated) || !strings.Contains(err.Error(), "frame of 5 bytes") {
		t.Fatalf("a cut header: %v", err)
	}
	// A frame of exactly a header is a whole message of an empty body.
	for _, m := range []Message{&PutReply{}, &DeleteReply{}} {
		b, err := EncodeFrame(m)
		if err != nil || len(b) != HeaderSize {
			t.Fatalf("%s: %d bytes, %v", m.Type(), len(b), err)
		}
		if got, err := DecodeFrame(b); err != nil || got.Type() != m.Type() {
			t.Fatalf("%s: %v", m.Type(), err)
		}
	}
	// A body byte left over after the fields is named.
	b, _ = EncodeFrame(&GetReply{Length: 7})
	b = append(b, 0, 0)
	binary.BigEndian.PutUint32(b[2:], 10)
	if _, err := DecodeFrame(b); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "2 trailing bytes") {
		t.Fatalf("trailing body bytes: %v", err)
	}
	// A bool is 0 or 1.
	lr := append(header(TypeLiveReply, 6), 0, 0, 0, 2, 1, 2)
	if _, err := DecodeFrame(lr); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "bool 2") {
		t.Fatalf("a bool of 2: %v", err)
	}
}

// TestTicketFieldBounds: a ticket's op is one of the four, its size is not
// negative (0 is a valid size) and its version is the one this build
// speaks.
func TestTicketFieldBounds(t *testing.T) {
	med := mustIdentity(t)
	node := mustIdentity(t).ID()
	req := func(op Op, size int64) *StatRequest {
		tk := SignTicket(med, Ticket{Node: node, Piece: challenge.PieceID{1}, Op: op, Size: size, Expires: time.Now().Add(time.Hour)})
		return &StatRequest{Piece: challenge.PieceID{1}, Ticket: tk}
	}
	for _, op := range []Op{OpPut, OpGet, OpStat, OpDelete} {
		roundTrip(t, "op "+op.String(), req(op, 1))
	}
	refused(t, "op 0", req(OpPut-1, 1), "ticket op 0")
	refused(t, "op 5", req(OpDelete+1, 1), "ticket op 5")
	roundTrip(t, "size 0", req(OpStat, 0))
	refused(t, "size -1", req(OpStat, -1), "ticket size -1")
	b, err := EncodeFrame(req(OpGet, 1))
	if err != nil {
		t.Fatal(err)
	}
	b[HeaderSize+challenge.HashSize] = TicketVersion + 1
	if _, err := DecodeFrame(b); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "ticket version 2, want 1") {
		t.Fatalf("ticket version 2: %v", err)
	}
}

// TestPolicyDurationBound: a policy duration may be up to 100 years to the
// millisecond, not one millisecond more.
func TestPolicyDurationBound(t *testing.T) {
	const most = 100 * 365 * 24 * time.Hour
	roundTrip(t, "100 years", &RegisterReply{Policy: NodePolicy{HeartbeatInterval: most, GracePeriod: most, GCInterval: most}})
	refused(t, "100 years and a millisecond", &HeartbeatReply{Policy: NodePolicy{GCInterval: most + time.Millisecond}},
		fmt.Sprintf("duration %d ms", (most+time.Millisecond).Milliseconds()))
}

// TestChallengeOpeningsBounds: a challenge asks for 1 to MaxOpenings
// openings, and a proof's status is one of the three.
func TestChallengeOpeningsBounds(t *testing.T) {
	for _, n := range []uint8{1, challenge.MaxOpenings} {
		roundTrip(t, fmt.Sprintf("%d openings", n), &ChallengeRequest{Openings: n, Pieces: pieces(1)})
	}
	for _, n := range []uint8{0, challenge.MaxOpenings + 1} {
		refused(t, fmt.Sprintf("%d openings", n), &ChallengeRequest{Openings: n, Pieces: pieces(1)},
			fmt.Sprintf("%d openings (want 1..%d)", n, challenge.MaxOpenings))
	}
	roundTrip(t, "status failed", &ChallengeResponse{Proofs: []PieceProof{{Status: ProofFailed}}})
	refused(t, "status 3", &ChallengeResponse{Proofs: []PieceProof{{Status: ProofFailed + 1}}}, "proof status 3")
}

// TestErrorCodes: an error travels as the code of its sentinel and comes
// back as a RemoteError that unwraps to the same sentinel; a code this
// build does not know unwraps to ErrInternal.
func TestErrorCodes(t *testing.T) {
	for code, sentinel := range codeErrors {
		err := fmt.Errorf("context: %w", sentinel)
		if got := CodeOf(err); got != code {
			t.Errorf("%v: code %d, want %d", sentinel, got, code)
		}
		r := NewErrorReply(err)
		re := &RemoteError{Code: r.Code, Message: r.Message}
		if !errors.Is(re, sentinel) || re.Error() != "remote: context: "+sentinel.Error() {
			t.Errorf("code %d: %v does not unwrap to %v", code, re, sentinel)
		}
		if bare := (&RemoteError{Code: code}); bare.Error() != "remote: "+sentinel.Error() {
			t.Errorf("code %d without text: %q", code, bare.Error())
		}
		// A RemoteError passed on keeps its code.
		if got := CodeOf(fmt.Errorf("relay: %w", re)); got != code {
			t.Errorf("relayed code %d: %d", code, got)
		}
	}
	for _, c := range []struct {
		err  error
		want ErrorCode
	}{
		{ErrTicketExpired, CodeUnauthorized},
		{fmt.Errorf("x: %w", ErrTicketHolder), CodeUnauthorized},
		{ErrTruncated, CodeBadRequest},
		{fmt.Errorf("x: %w", ErrTooLarge), CodeBadRequest},
		{errors.New("disk on fire"), CodeInternal},
		{&RemoteError{Code: 99}, 99},
	} {
		if got := CodeOf(c.err); got != c.want {
			t.Errorf("CodeOf(%v) = %d, want %d", c.err, got, c.want)
		}
	}
	unknown := &RemoteError{Code: 99}
	if !errors.Is(unknown, ErrInternal) || unknown.Error() != "remote: "+ErrInternal.Error() {
		t.Errorf("unknown code: %v", unknown)
	}
	if s := MsgType(0xee).String(); s != "type(0xee)" {
		t.Errorf("unknown type's name: %q", s)
	}
	if s := Op(9).String(); s != "op(9)" {
		t.Errorf("unknown op's name: %q", s)
	}
}

// TestCountsAreCheckedAgainstTheSmallestElement: every list is decoded
// only once its count fits the bytes left at the smallest size one element
// can have: a body of k smallest elements decodes (also k = 0), the same body claiming k+1 is refused before anything
// is allocated, with the bytes it would need. The offsets and sizes are
// those of docs/PROTOCOL.md. (The lists inside a proof are bounded by
// TestElementCountsAtTheirLimit.)
func TestCountsAreCheckedAgainstTheSmallestElement(t *testing.T) {
	const k = 2
	hash := challenge.HashSize
	for _, c := range []struct {
		name   string
		make   func(n int) Message
		offset int // of the count in the body
		min    int // bytes of the smallest element
	}{
		{"ChallengeRequest pieces", func(n int) Message { return &ChallengeRequest{Openings: 1, Pieces: pieces(n)} }, challenge.NonceSize + 1, hash},
		{"ChallengeResponse proofs", func(n int) Message {
			return &ChallengeResponse{Proofs: make([]PieceProof, n)}
		}, challenge.NonceSize, 1 + 2*hash + 4},
		{"LiveRequest", func(n int) Message { return &LiveRequest{Pieces: pieces(n)} }, 0, hash},
		{"LiveReply", func(n int) Message { return &LiveReply{Live: make([]bool, n)} }, 0, 1},
		{"DamageReport", func(n int) Message { return &DamageReport{Pieces: pieces(n)} }, 0, hash},
		{"PlacementRequest", func(n int) Message { return &PlacementRequest{K: 1, N: 2, Pieces: pieces(n)} }, 1 + 1 + 8, hash},
		{"PlacementReply", func(n int) Message {
			r := &PlacementReply{Expires: time.Unix(1, 0), Targets: make([]Target, n)}
			for i := range r.Targets {
				r.Targets[i].Ticket.Op = OpPut
				r.Targets[i].Ticket.Expires = time.Unix(1, 0)
			}
			return r
		}, len(SegmentID{}) + 8, 2 + TicketBodySize + 64},
		{"CommitRequest", func(n int) Message { return &CommitRequest{Pieces: make([]StoredPiece, n)} }, len(SegmentID{}), 1 + NodeIDSize + hash + 8},
		{"HealthRequest", func(n int) Message { return &HealthRequest{Segments: make([]SegmentID, n)} }, 0, len(SegmentID{})},
		{"HealthReply", func(n int) Message { return &HealthReply{Segments: make([]SegmentHealth, n)} }, 0, 3},
		{"SegmentReply", func(n int) Message { return &SegmentReply{K: 1, N: 2, Pieces: make([]SegmentPiece, n)} }, 1 + 1 + 8 + 4, hash + 1},
	} {
		for _, n := range []int{0, k} {
			m := c.make(n)
			b, err := EncodeAnyFrame(m)
			if err != nil {
				t.Fatalf("%s of %d: %v", c.name, n, err)
			}
			got, err := DecodeAnyFrame(b)
			if err != nil {
				t.Fatalf("%s of %d smallest elements: %v", c.name, n, err)
			}
			if n == 0 {
				// Empty (a nil or an empty slice: nothing tells them
				// apart), and encoded the same again.
				if b2, err := EncodeAnyFrame(got); err != nil || !bytes.Equal(b2, b) {
					t.Fatalf("%s of none: re-encoded differently (%v)", c.name, err)
				}
				continue
			}
			if !reflect.DeepEqual(normalizeAny(got), normalizeAny(c.make(n))) {
				t.Fatalf("%s of %d: decoded %#v", c.name, n, got)
			}
			body := b[HeaderSize:]
			if cnt := binary.BigEndian.Uint32(body[c.offset:]); cnt != k {
				t.Fatalf("%s: count %d at offset %d, want %d (the test's offset is wrong)", c.name, cnt, c.offset, k)
			}
			if left := len(body) - c.offset - 4; left < k*c.min || c.offset+4+k*c.min > len(body) {
				t.Fatalf("%s: %d bytes after the count, fewer than %d elements of %d", c.name, left, k, c.min)
			}
			// Claim one element more than the bytes hold (for a list
			// followed by other fields, cut the frame after its elements).
			left := k * c.min
			forged := append(header(m.Type(), uint32(c.offset+4+left)), body[:c.offset+4+left]...)
			binary.BigEndian.PutUint32(forged[HeaderSize+c.offset:], k+1)
			_, err = DecodeAnyFrame(forged)
			want := fmt.Sprintf("%d elements need at least %d bytes, have %d", k+1, (k+1)*c.min, left)
			if !errors.Is(err, ErrTruncated) || !strings.Contains(err.Error(), want) {
				t.Fatalf("%s claiming %d elements in %d bytes: %v, want %q", c.name, k+1, left, err, want)
			}
		}
	}
}

// normalizeAny is normalize for the mediator messages too.
func normalizeAny(m Message) Message {
	if r, ok := m.(*PlacementReply); ok {
		c := *r
		c.Expires = time.Unix(r.Expires.Unix(), 0)
		if r.Targets != nil {
			c.Targets = append([]Target{}, r.Targets...)
		}
		for i := range c.Targets {
			c.Targets[i].Ticket.Expires = time.Unix(c.Targets[i].Ticket.Expires.Unix(), 0)
		}
		return &c
	}
	return normalize(m)
}

// TestEncodeAnyFrameKeepsEachTypesLimit: EncodeAnyFrame frames a storage
// message under its own type's limit (a LiveRequest up to 256 KiB) and a
// mediator message under the mediator limit of 64 KiB, to its last byte.
func TestEncodeAnyFrameKeepsEachTypesLimit(t *testing.T) {
	for _, m := range []Message{
		&LiveRequest{Pieces: pieces(MaxLivePieces)},
		&HealthRequest{Segments: make([]SegmentID, MaxHealthBatch)}, // 32 KiB: over the 16 KiB of control messages
	} {
		b, err := EncodeAnyFrame(m)
		if err != nil {
			t.Fatalf("%s of %d bytes: %v", TypeName(m.Type()), BodyLimit(m.Type()), err)
		}
		if _, err := DecodeAnyFrame(b); err != nil {
			t.Fatalf("%s: %v", TypeName(m.Type()), err)
		}
	}
	// A HealthReply entry is 3 bytes: 21844 of them and the count are
	// exactly 64 KiB.
	most := (MaxMediatorBody - 4) / 3
	if _, err := EncodeAnyFrame(&HealthReply{Segments: make([]SegmentHealth, most)}); err != nil {
		t.Fatalf("a mediator body of exactly %d bytes: %v", MaxMediatorBody, err)
	}
	if _, err := EncodeAnyFrame(&HealthReply{Segments: make([]SegmentHealth, most+1)}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("a mediator body over %d bytes: %v", MaxMediatorBody, err)
	}
	// A mediator frame whose length disagrees with its header is refused
	// with both lengths.
	b, err := EncodeAnyFrame(&HealthRequest{Segments: make([]SegmentID, 2)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeAnyFrame(append(b, 1, 2, 3)); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "body 39 bytes, header says 36") {
		t.Fatalf("3 bytes after a mediator frame: %v", err)
	}
}

// TestEmptyListsDecodeAsEncoded: a message decodes to exactly the value
// that was encoded (the round-trip contract of TestMessagesRoundTrip and
// FuzzDecodeFrame), lists left empty (nil) included.
func TestEmptyListsDecodeAsEncoded(t *testing.T) {
	noPath := &ChallengeResponse{Proofs: []PieceProof{{Proof: challenge.Proof{Openings: []challenge.Opening{{Leaf: []byte{}}}}}}}
	for _, m := range []Message{
		&ChallengeRequest{Openings: 1}, &ChallengeResponse{}, &ChallengeResponse{Proofs: []PieceProof{{}}}, noPath,
		&LiveRequest{}, &LiveReply{}, &DamageReport{},
		&PlacementRequest{}, &PlacementReply{Expires: time.Unix(0, 0)}, &CommitRequest{}, &HealthRequest{}, &HealthReply{}, &SegmentReply{},
	} {
		b, err := EncodeAnyFrame(m)
		if err != nil {
			t.Fatalf("%s: %v", TypeName(m.Type()), err)
		}
		got, err := DecodeAnyFrame(b)
		if err != nil {
			t.Fatalf("%s: %v", TypeName(m.Type()), err)
		}
		if !reflect.DeepEqual(normalizeAny(got), normalizeAny(m)) {
			t.Errorf("%s: decoded %+v, encoded %+v", TypeName(m.Type()), got, m)
		}
	}
}

// TestSnapshotPointerFieldBounds: a signed pointer verifies with its key
// file and sealed record at their limits; one byte more in either is
// refused as malformed.
func TestSnapshotPointerFieldBounds(t *testing.T) {
	id := mustIdentity(t)
	for _, c := range []struct {
		keyFile, sealed int
		ok              bool
	}{
		{MaxPointerKeyFile, MaxPointerSealed, true},
		{MaxPointerKeyFile + 1, 1, false},
		{1, MaxPointerSealed + 1, false},
	} {
		p := &SnapshotPointer{Seq: 1, KeyFile: make([]byte, c.keyFile), Sealed: make([]byte, c.sealed)}
		p.Sign(id)
		err := p.Verify()
		if c.ok != (err == nil) || (!c.ok && !errors.Is(err, ErrMalformed)) {
			t.Errorf("key file %d, sealed %d: %v", c.keyFile, c.sealed, err)
		}
	}
}
