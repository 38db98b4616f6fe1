package mediator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/quic-go/quic-go"

	fnet "github.com/fincrypt/fincrypt/net"
)

// requestTimeout bounds reading a request and handling it.
const requestTimeout = 30 * time.Second

// endpoint serves the mediator's QUIC streams: storage nodes register,
// heartbeat, ask which pieces are live and report damaged pieces; clients register accounts,
// place, commit, release and look up segments. One request per stream.
type endpoint struct {
	c *core
}

func asRemote(err error, re **fnet.RemoteError) bool { return errors.As(err, re) }

// mediatorRequests are the only types the mediator reads where a request
// belongs (those handle serves); replies and node-only messages are refused
// before their bodies are read, so that a header cannot make the mediator
// read a body of a reply's larger limit.
var mediatorRequests = fnet.OneOf(fnet.TypeRegisterRequest, fnet.TypeHeartbeat, fnet.TypeLiveRequest,
	fnet.TypeDamageReport, fnet.TypeAccountRequest, fnet.TypePlacementRequest, fnet.TypeCommitRequest,
	fnet.TypeReleaseRequest, fnet.TypeSegmentRequest, fnet.TypeHealthRequest, fnet.TypeDepositAddressRequest,
	fnet.TypeBalanceRequest, fnet.TypeSnapshotPutRequest, fnet.TypeSnapshotGetRequest)

// HandleStream implements fnet.Handler.
func (e *endpoint) HandleStream(ctx context.Context, peer fnet.NodeID, s *quic.Stream) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	s.SetDeadline(time.Now().Add(requestTimeout))
	req, err := fnet.ReadMessageOf(s, mediatorRequests)
	if err != nil {
		e.c.log.Debug("bad request", "peer", peer, "err", err)
		if errors.Is(err, fnet.ErrUnsupported) {
			fnet.WriteAnyMessage(s, &fnet.ErrorReply{Code: fnet.CodeUnsupported, Message: err.Error()})
			return
		}
		fnet.WriteAnyMessage(s, fnet.NewErrorReply(fmt.Errorf("%w: %v", fnet.ErrBadRequest, err)))
		return
	}
	rep, err := e.handle(ctx, peer, req)
	if err != nil {
		if errors.Is(err, fnet.ErrInternal) || fnet.CodeOf(err) == fnet.CodeInternal {
			e.c.log.Error("request failed", "peer", peer, "request", fnet.TypeName(req.Type()), "err", err)
		} else {
			e.c.log.Debug("request refused", "peer", peer, "request", fnet.TypeName(req.Type()), "err", err)
		}
		rep = fnet.NewErrorReply(err)
	}
	if err := fnet.WriteAnyMessage(s, rep); err != nil {
		e.c.log.Debug("reply not sent", "peer", peer, "err", err)
	}
}

func (e *endpoint) handle(ctx context.Context, peer fnet.NodeID, req fnet.Message) (fnet.Message, error) {
	acct := fnet.AccountID(peer)
	switch m := req.(type) {
	case *fnet.RegisterRequest:
		p, err := e.c.Register(ctx, peer, m)
		return &fnet.RegisterReply{Policy: p}, err
	case *fnet.Heartbeat:
		p, err := e.c.Heartbeat(ctx, peer, m)
		return &fnet.HeartbeatReply{Policy: p}, err
	case *fnet.LiveRequest:
		return e.c.Live(ctx, peer, m)
	case *fnet.DamageReport:
		return e.c.ReportDamage(ctx, peer, m)
	case *fnet.AccountRequest:
		created, err := e.c.RegisterAccount(ctx, acct)
		return &fnet.AccountReply{Created: created}, err
	case *fnet.PlacementRequest:
		return e.c.Place(ctx, acct, m)
	case *fnet.CommitRequest:
		return &fnet.CommitReply{}, e.c.Commit(ctx, acct, m)
	case *fnet.ReleaseRequest:
		return &fnet.ReleaseReply{}, e.c.Release(ctx, acct, SegmentID(m.Segment))
	case *fnet.SegmentRequest:
		return e.c.SegmentInfo(ctx, acct, SegmentID(m.Segment))
	case *fnet.HealthRequest:
		return e.c.SegmentHealth(ctx, acct, m.Segments)
	case *fnet.DepositAddressRequest:
		return e.c.depositAddress(ctx, acct)
	case *fnet.BalanceRequest:
		return e.c.balance(ctx, acct)
	case *fnet.SnapshotPutRequest:
		return &fnet.SnapshotPutReply{}, e.c.PutSnapshot(ctx, acct, m)
	case *fnet.SnapshotGetRequest:
		return e.c.GetSnapshot(ctx, m.Account)
	}
	return nil, fmt.Errorf("%w: a mediator does not serve %s", fnet.ErrUnsupported, fnet.TypeName(req.Type()))
}
