package mediator

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	"github.com/fincrypt/fincrypt/challenge"
	fnet "github.com/fincrypt/fincrypt/net"
)

// FuzzMediatorRequests feeds arbitrary bytes to the mediator as a request
// from an account, a registered node or a stranger: it reads them as it
// reads a stream (only its own request types, each under its limit) and
// handles what decodes against a real store. Nothing panics, every reply
// encodes within its limit, and no one but the owning account ends its
// contract.
func FuzzMediatorRequests(f *testing.F) {
	w := newWorld(f, 5)
	owner := w.account()
	seg, _ := w.storeSegment(owner, 4096)
	stranger, _ := fnet.GenerateIdentity()
	e := &endpoint{c: w.c}
	for _, m := range []fnet.Message{
		&fnet.ReleaseRequest{Segment: fnet.SegmentID(seg)}, &fnet.SegmentRequest{Segment: fnet.SegmentID(seg)},
		&fnet.HealthRequest{Segments: []fnet.SegmentID{fnet.SegmentID(seg)}}, &fnet.AccountRequest{},
		&fnet.PlacementRequest{K: 2, N: 5, PieceSize: 100, Pieces: make([]challenge.PieceID, 5)},
		&fnet.CommitRequest{Segment: fnet.SegmentID(seg)}, &fnet.Heartbeat{Capacity: 1},
		&fnet.LiveRequest{Pieces: []challenge.PieceID{{1}}}, &fnet.DamageReport{Pieces: []challenge.PieceID{{1}}},
		&fnet.SnapshotGetRequest{}, &fnet.BalanceRequest{}, &fnet.ChallengeResponse{},
	} {
		b, _ := fnet.EncodeAnyFrame(m)
		for who := range uint8(3) {
			f.Add(b, who)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte, who uint8) {
		req, err := fnet.ReadMessageOf(bytes.NewReader(b), mediatorRequests)
		if err != nil {
			if !errors.Is(err, fnet.ErrMalformed) && !errors.Is(err, io.EOF) {
				t.Fatalf("read: %v", err)
			}
			return
		}
		if !fnet.IsRequest(req.Type()) {
			t.Fatalf("accepted a %s where a request belongs", fnet.TypeName(req.Type()))
		}
		peer := []fnet.NodeID{fnet.NodeID(owner), w.ids[0].ID(), stranger.ID()}[int(who)%3]
		_, gone := w.store.GetSegment(context.Background(), seg)
		rep, err := e.handle(context.Background(), peer, req)
		if err == nil {
			if rep == nil {
				t.Fatalf("%s: no reply and no error", fnet.TypeName(req.Type()))
			}
			if _, err := fnet.EncodeAnyFrame(rep); err != nil {
				t.Fatalf("%s: reply does not encode: %v", fnet.TypeName(req.Type()), err)
			}
		}
		if peer != fnet.NodeID(owner) && gone == nil {
			if _, err := w.store.GetSegment(context.Background(), seg); err != nil {
				t.Fatalf("%s from %s ended another account's contract: %v", fnet.TypeName(req.Type()), peer, err)
			}
		}
	})
}
