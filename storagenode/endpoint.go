package storagenode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/fincrypt/fincrypt/challenge"
	fnet "github.com/fincrypt/fincrypt/net"
)

// Endpoint serves the storage protocol: put, get, stat and delete under
// tickets, and challenges from the mediator.
type Endpoint struct {
	log      *slog.Logger
	self     fnet.NodeID
	mediator fnet.NodeID
	store    PieceStore
	// RequestTimeout bounds reading a request frame.
	requestTimeout time.Duration
	// idleTimeout bounds a transfer's pause between two reads or writes.
	idleTimeout time.Duration
	now         func() time.Time

	// MinUploadRate and UploadGrace bound a whole upload: a put must be
	// done within UploadGrace plus its size at MinUploadRate bytes a
	// second, or it is dropped with its temporary file and reservation
	// (defaults DefaultMinUploadRate, DefaultUploadGrace).
	MinUploadRate int64
	UploadGrace   time.Duration
	// TicketTTL is the longest lifetime of the mediator's tickets: a put
	// ticket for a piece this node released is refused if it could have
	// been issued before the release (DefaultTicketTTL).
	TicketTTL time.Duration

	stats *nodeStats // challenges answered (metrics.go); nil: not counted
}

// Defaults of the endpoint's limits.
const (
	DefaultMinUploadRate = 64 << 10
	DefaultUploadGrace   = 30 * time.Second
	DefaultTicketTTL     = time.Hour
)

// NewEndpoint serves store for node self, trusting tickets of mediator.
func NewEndpoint(log *slog.Logger, self, mediator fnet.NodeID, store PieceStore, requestTimeout, idleTimeout time.Duration) *Endpoint {
	return &Endpoint{log: log, self: self, mediator: mediator, store: store,
		requestTimeout: requestTimeout, idleTimeout: idleTimeout, now: time.Now,
		MinUploadRate: DefaultMinUploadRate, UploadGrace: DefaultUploadGrace, TicketTTL: DefaultTicketTTL}
}

// nodeRequests are the only types a storage node reads where a request
// belongs; anything else is refused before its body is read.
var nodeRequests = fnet.OneOf(fnet.TypePutRequest, fnet.TypeGetRequest, fnet.TypeStatRequest,
	fnet.TypeDeleteRequest, fnet.TypeChallengeRequest)

// idleStream extends the stream's deadlines before every read and write,
// so that a stalled peer is dropped but a long transfer is not; a non-zero
// end is a total deadline no extension passes.
type idleStream struct {
	s    *quic.Stream
	idle time.Duration
	end  time.Time
}

func (i idleStream) Read(p []byte) (int, error) {
	d := time.Now().Add(i.idle)
	if !i.end.IsZero() && i.end.Before(d) {
		d = i.end
	}
	i.s.SetReadDeadline(d)
	return i.s.Read(p)
}

func (i idleStream) Write(p []byte) (int, error) {
	i.s.SetWriteDeadline(time.Now().Add(i.idle))
	return i.s.Write(p)
}

// HandleStream implements fnet.Handler.
func (e *Endpoint) HandleStream(ctx context.Context, peer fnet.NodeID, s *quic.Stream) {
	s.SetReadDeadline(time.Now().Add(e.requestTimeout))
	m, err := fnet.ReadMessageOf(s, nodeRequests)
	if err != nil {
		e.log.Debug("bad request", "peer", peer, "err", err)
		e.reply(s, fnet.NewErrorReply(fmt.Errorf("%w: %w", fnet.ErrBadRequest, err)))
		return
	}
	var rep fnet.Message
	switch m := m.(type) {
	case *fnet.PutRequest:
		err = e.put(ctx, peer, s, m)
		if err == nil {
			rep = &fnet.PutReply{}
		}
	case *fnet.GetRequest:
		err = e.get(peer, s, m) // writes its own reply on success
	case *fnet.StatRequest:
		rep, err = e.stat(peer, m)
	case *fnet.DeleteRequest:
		err = e.delete(peer, m)
		if err == nil {
			rep = &fnet.DeleteReply{}
		}
	case *fnet.ChallengeRequest:
		rep, err = e.challenge(peer, m)
	default:
		err = fmt.Errorf("%w: a storage node does not serve %s", fnet.ErrBadRequest, m.Type())
	}
	if err != nil {
		lvl := slog.LevelInfo
		if fnet.CodeOf(err) == fnet.CodeInternal {
			lvl = slog.LevelError
		}
		e.log.Log(ctx, lvl, "request failed", "peer", peer, "type", m.Type(), "err", err)
		rep = fnet.NewErrorReply(err)
	}
	if rep != nil {
		e.reply(s, rep)
	}
}

func (e *Endpoint) reply(s *quic.Stream, m fnet.Message) {
	s.SetWriteDeadline(time.Now().Add(e.requestTimeout))
	if err := fnet.WriteMessage(s, m); err != nil {
		e.log.Debug("reply not sent", "err", err)
	}
}

// checkTicket checks the ticket and that peer, the node id the connection
// authenticated, is the ticket's account or the mediator that issued it.
func (e *Endpoint) checkTicket(peer fnet.NodeID, piece challenge.PieceID, t *fnet.SignedTicket, op fnet.Op) error {
	if err := t.VerifyFrom(e.mediator, e.self, peer, piece, op, e.now()); err != nil {
		return fmt.Errorf("%s %s: %w", op, piece, err)
	}
	return nil
}

func (e *Endpoint) put(ctx context.Context, peer fnet.NodeID, s *quic.Stream, m *fnet.PutRequest) error {
	if err := e.checkTicket(peer, m.Piece, &m.Ticket, fnet.OpPut); err != nil {
		return err
	}
	if err := challenge.CheckSize(m.Ticket.Size); err != nil {
		return fmt.Errorf("put %s: %w: %w", m.Piece, fnet.ErrPieceTooLarge, err)
	}
	if err := e.checkReleased(m); err != nil {
		return err
	}
	s.SetReadDeadline(time.Time{})
	start := time.Now()
	limit := e.uploadLimit(m.Ticket.Size)
	ctx, cancel := context.WithDeadline(ctx, start.Add(limit))
	defer cancel()
	if err := e.store.Put(ctx, m.Piece, m.Ticket.Size, m.Ticket.Account, idleStream{s: s, idle: e.idleTimeout, end: start.Add(limit)}); err != nil {
		if time.Since(start) >= limit {
			return fmt.Errorf("put %s: %w: upload of %d bytes not done within %s (%d bytes/s at least): %w",
				m.Piece, fnet.ErrBadRequest, m.Ticket.Size, limit, e.MinUploadRate, err)
		}
		return err
	}
	e.log.Debug("stored piece", "piece", m.Piece, "size", m.Ticket.Size, "peer", peer, "took", time.Since(start))
	return nil
}

// uploadLimit is the time a put of size bytes may take in all.
func (e *Endpoint) uploadLimit(size int64) time.Duration {
	rate := max(e.MinUploadRate, 1)
	return e.UploadGrace + time.Duration(float64(size)/float64(rate)*float64(time.Second))
}

// Releases is what a store that remembers released pieces offers (the
// DiskStore does): when each piece was last deleted, for as long as a
// ticket issued before then may still be valid.
type Releases interface {
	ReleasedAt(id challenge.PieceID) (time.Time, bool)
}

// checkReleased makes put tickets single-use: a ticket for a piece this
// node has released since is refused while it may still be valid.
func (e *Endpoint) checkReleased(m *fnet.PutRequest) error {
	r, ok := e.store.(Releases)
	if !ok {
		return nil
	}
	at, ok := r.ReleasedAt(m.Piece)
	if !ok {
		return nil
	}
	// The ticket was issued at Expires - TTL at the latest: before the
	// release unless Expires is later than release + TTL.
	if !m.Ticket.Expires.After(at.Add(e.TicketTTL)) {
		return fmt.Errorf("put %s: %w: the piece was released at %s, after this ticket was issued (tickets are single-use)",
			m.Piece, fnet.ErrUnauthorized, at.UTC().Format(time.RFC3339))
	}
	return nil
}

func (e *Endpoint) openChecked(peer fnet.NodeID, piece challenge.PieceID, t *fnet.SignedTicket, op fnet.Op) (Piece, error) {
	if err := e.checkTicket(peer, piece, t, op); err != nil {
		return nil, err
	}
	p, err := e.store.Open(piece)
	if err != nil {
		return nil, err
	}
	if p.Size() != t.Size {
		p.Close()
		return nil, fmt.Errorf("%s %s: %w: ticket is for %d bytes, piece has %d", op, piece, fnet.ErrTicketScope, t.Size, p.Size())
	}
	return p, nil
}

func (e *Endpoint) get(peer fnet.NodeID, s *quic.Stream, m *fnet.GetRequest) error {
	p, err := e.openChecked(peer, m.Piece, &m.Ticket, fnet.OpGet)
	if err != nil {
		return err
	}
	defer p.Close()
	size := uint64(p.Size())
	length := m.Length
	if m.Offset > size || (length == 0 && m.Offset == size) {
		return fmt.Errorf("get %s: %w: offset %d outside %d bytes", m.Piece, fnet.ErrBadRequest, m.Offset, size)
	}
	if length == 0 {
		length = size - m.Offset
	}
	if length > size-m.Offset {
		return fmt.Errorf("get %s: %w: range %d+%d outside %d bytes", m.Piece, fnet.ErrBadRequest, m.Offset, length, size)
	}
	w := idleStream{s: s, idle: e.idleTimeout}
	if err := fnet.WriteMessage(w, &fnet.GetReply{Length: length}); err != nil {
		e.log.Debug("get: reply not sent", "err", err)
		return nil
	}
	buf := make([]byte, 256<<10)
	if _, err := io.CopyBuffer(w, io.NewSectionReader(p, int64(m.Offset), int64(length)), buf); err != nil {
		// The header is out: the only way to signal failure is to reset.
		s.CancelWrite(fnet.StreamCancelled)
		e.log.Warn("get: transfer failed", "piece", m.Piece, "err", err)
	}
	return nil
}

func (e *Endpoint) stat(peer fnet.NodeID, m *fnet.StatRequest) (fnet.Message, error) {
	if err := e.checkTicket(peer, m.Piece, &m.Ticket, fnet.OpStat); err != nil {
		return nil, err
	}
	info, err := e.store.Stat(m.Piece)
	if err != nil {
		return nil, err
	}
	return &fnet.StatReply{Size: uint64(info.Size), StoredAt: info.StoredAt}, nil
}

// delete removes a piece for the account that stored it, or for the
// mediator. A piece whose account is unknown (re-indexed after its index
// entry was lost) is deleted only by the mediator or by the collector.
func (e *Endpoint) delete(peer fnet.NodeID, m *fnet.DeleteRequest) error {
	if err := e.checkTicket(peer, m.Piece, &m.Ticket, fnet.OpDelete); err != nil {
		return err
	}
	if !m.Ticket.FromIssuer(peer) {
		info, err := e.store.Stat(m.Piece)
		if errors.Is(err, ErrNotFound) {
			return nil // deleting a missing piece succeeds
		}
		if err != nil {
			return err
		}
		if info.Account != m.Ticket.Account {
			return fmt.Errorf("delete %s: %w: the piece was stored by another account", m.Piece, fnet.ErrUnauthorized)
		}
	}
	if err := e.store.Delete(m.Piece); err != nil {
		return err
	}
	e.log.Debug("deleted piece", "piece", m.Piece, "peer", peer)
	return nil
}

func (e *Endpoint) challenge(peer fnet.NodeID, m *fnet.ChallengeRequest) (fnet.Message, error) {
	if peer != e.mediator {
		return nil, fmt.Errorf("%w: challenges are accepted only from the mediator", fnet.ErrUnauthorized)
	}
	start := e.now()
	rep := Answer(e.store, m)
	e.stats.challenged(rep, e.now().Sub(start), start)
	return rep, nil
}

// Answer proves possession of each challenged piece, reading only the
// sampled leaves and the tree nodes on their paths.
func Answer(store PieceStore, m *fnet.ChallengeRequest) *fnet.ChallengeResponse {
	rep := &fnet.ChallengeResponse{Nonce: m.Nonce, Proofs: make([]fnet.PieceProof, len(m.Pieces))}
	for i, id := range m.Pieces {
		rep.Proofs[i] = prove(store, id, m.Nonce, int(m.Openings))
	}
	return rep
}

func prove(store PieceStore, id challenge.PieceID, nonce challenge.Nonce, k int) fnet.PieceProof {
	p, err := store.Open(id)
	if errors.Is(err, ErrNotFound) {
		return fnet.PieceProof{Status: fnet.ProofMissing, Proof: challenge.Proof{Piece: id}}
	}
	if err != nil {
		return fnet.PieceProof{Status: fnet.ProofFailed, Proof: challenge.Proof{Piece: id}}
	}
	defer p.Close()
	proof, err := challenge.Prove(p, id, p.Size(), nonce, k)
	if err != nil {
		return fnet.PieceProof{Status: fnet.ProofFailed, Proof: challenge.Proof{Piece: id}}
	}
	return fnet.PieceProof{Status: fnet.ProofOK, Proof: proof}
}
