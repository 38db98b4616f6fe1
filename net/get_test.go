package net

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/fincrypt/fincrypt/challenge"
)

// Get's modes of a misbehaving node, chosen by the piece id's first byte.
const (
	getHonest    = iota // the bytes asked for, then more the client must not read
	getShort            // announces the length, sends one byte less
	getWrongSize        // announces one byte more than asked
	getNotFound         // an ErrorReply
	getExact            // exactly the bytes asked for, then the end of the stream
)

// TestGetReadsExactlyWhatWasAsked: Get returns the range asked for, byte
// for byte and then io.EOF, never what a node sends past it; a node that
// stops short gives io.ErrUnexpectedEOF, one that announces another length
// is refused before any byte, and a node's error comes back as its
// sentinel. A range beyond the ticket fails before anything is sent.
func TestGetReadsExactlyWhatWasAsked(t *testing.T) {
	piece := make([]byte, 200<<10+3)
	for i := range piece {
		piece[i] = byte(i*7 + i>>11)
	}
	requests := make(chan struct{}, 16)
	srv := startServer(t, HandlerFunc(func(ctx context.Context, _ NodeID, s *quic.Stream) {
		m, err := ReadMessageOf(s, OneOf(TypeGetRequest))
		if err != nil {
			t.Errorf("request: %v", err)
			return
		}
		requests <- struct{}{}
		req := m.(*GetRequest)
		want, err := req.WantLength()
		if err != nil {
			WriteMessage(s, NewErrorReply(err))
			return
		}
		data := piece[req.Offset : req.Offset+want]
		switch req.Piece[0] {
		case getHonest:
			WriteMessage(s, &GetReply{Length: want})
			s.Write(data)
			s.Write([]byte("bytes past the range"))
		case getShort:
			WriteMessage(s, &GetReply{Length: want})
			s.Write(data[:len(data)-1])
		case getWrongSize:
			WriteMessage(s, &GetReply{Length: want + 1})
			s.Write(data)
			s.Write([]byte{0})
		case getNotFound:
			WriteMessage(s, &ErrorReply{Code: CodeNotFound, Message: "no such piece"})
		case getExact:
			WriteMessage(s, &GetReply{Length: want})
			s.Write(data)
		}
	}))
	ctx, c := dialServer(t, srv, 60*time.Second)
	get := func(mode byte, offset, length uint64) *GetRequest {
		return &GetRequest{Piece: challenge.PieceID{mode}, Offset: offset, Length: length,
			Ticket: SignedTicket{Ticket: Ticket{Op: OpGet, Size: int64(len(piece))}}}
	}
	size := uint64(len(piece))
	for _, r := range []struct {
		name           string
		offset, length uint64
	}{
		{"whole piece", 0, 0},
		{"range", 1000, 70000},
		{"to the end", 5, 0},
		{"last byte", size - 1, 1},
		{"empty range at the end", size, 0},
	} {
		rc, n, err := c.Get(ctx, get(getHonest, r.offset, r.length))
		if err != nil {
			t.Fatalf("%s: %v", r.name, err)
		}
		want := piece[r.offset:]
		if r.length > 0 {
			want = want[:r.length]
		}
		if n != int64(len(want)) {
			t.Fatalf("%s: Get announces %d bytes, want %d", r.name, n, len(want))
		}
		got, err := io.ReadAll(rc)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s: read %d bytes (%v), want the %d asked for", r.name, len(got), err, len(want))
		}
		// Past the range: io.EOF again, not the node's extra bytes.
		if k, err := rc.Read(make([]byte, 10)); k != 0 || err != io.EOF {
			t.Fatalf("%s: read past the range: %d bytes, %v", r.name, k, err)
		}
		rc.Close()
	}
	// A buffer of exactly the range's size: the bytes come with io.EOF
	// or before it, never more.
	rc, _, err := c.Get(ctx, get(getHonest, 0, 10))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	var got []byte
	for {
		k, err := rc.Read(buf)
		got = append(got, buf[:k]...)
		if err == io.EOF {
			break
		}
		if err != nil || len(got) > 10 {
			t.Fatalf("ten bytes: %d read, %v", len(got), err)
		}
	}
	if !bytes.Equal(got, piece[:10]) {
		t.Fatalf("ten bytes: got %d", len(got))
	}
	rc.Close()

	// A node that ends its stream with the last byte: the end of the
	// stream that comes with it is no error.
	for _, length := range []uint64{10, 70000} {
		rc, _, err = c.Get(ctx, get(getExact, 3, length))
		if err != nil {
			t.Fatal(err)
		}
		if got, err := io.ReadAll(rc); err != nil || !bytes.Equal(got, piece[3:3+length]) {
			t.Fatalf("%d bytes, then the stream's end: %d read, %v", length, len(got), err)
		}
		rc.Close()
	}

	rc, _, err = c.Get(ctx, get(getShort, 0, 0))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(rc); !errors.Is(err, io.ErrUnexpectedEOF) || len(got) != len(piece)-1 {
		t.Fatalf("a node that stops one byte short: %d bytes, %v; want io.ErrUnexpectedEOF", len(got), err)
	}
	rc.Close()
	if _, _, err := c.Get(ctx, get(getWrongSize, 0, 100)); !errors.Is(err, ErrReplyLength) {
		t.Fatalf("a node announcing 101 of 100 bytes: %v", err)
	}
	if _, _, err := c.Get(ctx, get(getNotFound, 0, 0)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a node without the piece: %v", err)
	}
	served := len(requests)
	if _, _, err := c.Get(ctx, get(getHonest, size+1, 0)); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("an offset past the piece: %v", err)
	}
	if _, _, err := c.Get(ctx, get(getHonest, 10, size)); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("a range past the piece: %v", err)
	}
	if len(requests) != served {
		t.Fatal("a range beyond the ticket was sent to the node")
	}
}
