package storagenode

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/challenge"
	fnet "github.com/fincrypt/fincrypt/net"
)

// FuzzNodeRequests feeds arbitrary bytes to a storage node as a request:
// the node reads them as it reads a stream (only its own request types,
// each under its limit) and handles what decodes, against a real piece
// store holding one piece. Nothing panics, nothing outside the request
// types is accepted, and without a ticket signed by the node's mediator
// the stored piece is never deleted.
func FuzzNodeRequests(f *testing.F) {
	med, _ := fnet.GenerateIdentity()
	self, _ := fnet.GenerateIdentity()
	acct, _ := fnet.GenerateIdentity()
	store, err := OpenDiskStore(f.TempDir(), DiskStoreOptions{Capacity: 1 << 30, NoSync: true,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { store.Close() })
	data := bytes.Repeat([]byte{3}, 3*challenge.LeafSize+7)
	id, _ := challenge.ComputeID(data)
	if err := store.Put(f.Context(), id, int64(len(data)), fnet.AccountID(acct.ID()), bytes.NewReader(data)); err != nil {
		f.Fatal(err)
	}
	e := NewEndpoint(slog.New(slog.NewTextHandler(io.Discard, nil)), self.ID(), med.ID(), store, time.Second, time.Second)
	tk := func(op fnet.Op) fnet.SignedTicket {
		return fnet.SignTicket(med, fnet.Ticket{Node: self.ID(), Piece: id, Op: op, Account: fnet.AccountID(acct.ID()),
			Size: int64(len(data)), Expires: time.Now().Add(time.Hour)})
	}
	other, _ := fnet.GenerateIdentity()
	forged := fnet.SignTicket(other, fnet.Ticket{Node: self.ID(), Piece: id, Op: fnet.OpDelete,
		Account: fnet.AccountID(acct.ID()), Size: int64(len(data)), Expires: time.Now().Add(time.Hour)})
	for _, m := range []fnet.Message{
		&fnet.GetRequest{Piece: id, Ticket: tk(fnet.OpGet)}, &fnet.StatRequest{Piece: id, Ticket: tk(fnet.OpStat)},
		&fnet.DeleteRequest{Piece: id, Ticket: forged}, &fnet.PutRequest{Piece: id, Ticket: tk(fnet.OpPut)},
		&fnet.ChallengeRequest{Openings: 2, Pieces: []challenge.PieceID{id}}, &fnet.GetReply{Length: 1 << 40},
		&fnet.Heartbeat{},
	} {
		b, _ := fnet.EncodeAnyFrame(m)
		f.Add(b, uint8(0))
		f.Add(b, uint8(1))
	}
	f.Fuzz(func(t *testing.T, b []byte, who uint8) {
		m, err := fnet.ReadMessageOf(bytes.NewReader(b), nodeRequests)
		if err != nil {
			if !errors.Is(err, fnet.ErrMalformed) && !errors.Is(err, io.EOF) {
				t.Fatalf("read: %v", err)
			}
			return
		}
		if !nodeRequests(m.Type()) {
			t.Fatalf("accepted a %s", fnet.TypeName(m.Type()))
		}
		peer := []fnet.NodeID{acct.ID(), med.ID(), other.ID()}[int(who)%3]
		switch m := m.(type) {
		case *fnet.PutRequest:
			if err := e.checkTicket(peer, m.Piece, &m.Ticket, fnet.OpPut); err == nil {
				e.checkReleased(m)
			}
		case *fnet.GetRequest:
			if p, err := e.openChecked(peer, m.Piece, &m.Ticket, fnet.OpGet); err == nil {
				p.Close()
			}
		case *fnet.StatRequest:
			e.stat(peer, m)
		case *fnet.DeleteRequest:
			signed := m.Ticket.Verify(med.ID(), self.ID(), m.Piece, fnet.OpDelete, time.Now()) == nil
			err := e.delete(peer, m)
			if !signed && err == nil && m.Piece == id {
				if _, serr := store.Stat(id); serr != nil {
					t.Fatal("a delete without a valid ticket removed the piece")
				}
			}
		case *fnet.ChallengeRequest:
			rep, err := e.challenge(peer, m)
			if err == nil && len(rep.(*fnet.ChallengeResponse).Proofs) != len(m.Pieces) {
				t.Fatal("challenge answered with another number of proofs")
			}
			if err == nil && peer != med.ID() {
				t.Fatal("a challenge from another peer than the mediator was answered")
			}
		}
	})
}
