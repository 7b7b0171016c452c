// Package api is the scheduler's gRPC edge: SchedulerService for cluster
// nodes and AdminService for the CLI and dashboard. It maps the
// coordinator's errors to gRPC status codes; all decisions live in the
// coordinator.
package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/styx-inference/styx/pkg/grpcauth"
	"github.com/styx-inference/styx/pkg/keyspace"
	"github.com/styx-inference/styx/pkg/logging"
	"github.com/styx-inference/styx/pkg/pki"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
	"github.com/styx-inference/styx/scheduler/internal/coordinator"
	"github.com/styx-inference/styx/scheduler/internal/ledger"
	"github.com/styx-inference/styx/scheduler/internal/pool"
)

// Leadership tells the handlers who leads.
type Leadership interface {
	// Current returns the coordinator when this scheduler leads, else nil.
	Current() *coordinator.Coordinator
	// Leader returns the known leader (possibly another scheduler).
	Leader() (keyspace.LeaderInfo, bool)
	// ID is this scheduler's id.
	ID() string
}

// Server implements SchedulerService and AdminService.
type Server struct {
	styxv1.UnimplementedSchedulerServiceServer
	styxv1.UnimplementedAdminServiceServer
	lead Leadership
	log  zerolog.Logger
	fwd  forwarder // a standby's connection to the leader (admin calls)
	// guard, over mutual TLS, refuses a node acting as another node's id.
	guard *grpcauth.Guard
}

// Secure makes the handlers check node ids against the callers'
// certificates (refusals counted by guard) and forward admin calls to the
// leader over dial.
func (s *Server) Secure(guard *grpcauth.Guard, dial grpc.DialOption) {
	s.guard = guard
	s.fwd.dial = dial
}

// checkNode refuses a call that names a node other than the caller's own
// certificate id. Over plaintext (no guard) every id is taken as given.
func (s *Server) checkNode(ctx context.Context, nodeID string) error {
	if s.guard == nil {
		return nil
	}
	id, ok := grpcauth.Identity(ctx)
	if ok && id.Role == pki.Node && id.ID == nodeID {
		return nil
	}
	err := fmt.Errorf("%s may act only as node %q, not %q", id, id.ID, nodeID)
	s.guard.Refuse(grpcauth.ReasonIdentity, id.String(), "node id "+nodeID, err)
	return status.Error(codes.PermissionDenied, err.Error())
}

// New returns the gRPC handlers.
func New(lead Leadership, log zerolog.Logger) *Server {
	return &Server{lead: lead, log: logging.For(log, "api")}
}

func (s *Server) notLeader() error {
	if li, ok := s.lead.Leader(); ok && li.ID != s.lead.ID() {
		return status.Errorf(codes.FailedPrecondition, "not the leader; leader is %s at %s", li.ID, li.GRPCAddr)
	}
	return status.Error(codes.Unavailable, "no leader elected yet")
}

// Submit implements SchedulerService.
func (s *Server) Submit(stream styxv1.SchedulerService_SubmitServer) error {
	co := s.lead.Current()
	if co == nil {
		return s.notLeader()
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	hello := first.GetHello()
	if hello == nil {
		return status.Error(codes.InvalidArgument, "first message must be hello")
	}
	if err := keyspace.ValidID(hello.NodeId); err != nil {
		return status.Errorf(codes.InvalidArgument, "hello: node id: %v", err)
	}
	if err := s.checkNode(stream.Context(), hello.NodeId); err != nil {
		return err
	}
	sub, err := co.Attach(hello.NodeId)
	if err != nil {
		return status.Error(codes.Unavailable, err.Error())
	}
	defer co.Detach(sub)
	if err := stream.Send(&styxv1.SubmitResponse{Msg: &styxv1.SubmitResponse_Welcome{Welcome: &styxv1.Welcome{
		SchedulerId: s.lead.ID(), Term: co.Term(), MaxBatch: uint32(co.MaxSubmitBatch()),
	}}}); err != nil {
		return err
	}
	// Acks are sent by the writer too, so that one goroutine owns Send.
	acks := make(chan *styxv1.SubmitResponse, 64)
	recvErr := make(chan error, 1)
	// The reader cannot be joined before returning: it may sit in Recv. It
	// ends right after this handler, when gRPC cancels stream.Context(),
	// which unblocks both Recv and its send on acks.
	go func() {
		recvErr <- s.recvSightings(stream, co, sub, acks)
	}()
	for {
		select {
		case m := <-sub.Out():
			if err := stream.Send(m); err != nil {
				return err
			}
		case m := <-acks:
			if err := stream.Send(m); err != nil {
				return err
			}
		case err := <-recvErr:
			// Flush what is queued before ending.
			for {
				select {
				case m := <-acks:
					_ = stream.Send(m)
				default:
					if errors.Is(err, io.EOF) {
						return nil
					}
					return err
				}
			}
		case <-sub.Done():
			return status.Error(codes.Unavailable, sub.Err().Error())
		}
	}
}

func (s *Server) recvSightings(stream styxv1.SchedulerService_SubmitServer, co *coordinator.Coordinator, sub *coordinator.Submitter, acks chan<- *styxv1.SubmitResponse) error {
	var buf []ledger.Sighting // one stream's: reused batch to batch
	for {
		m, err := stream.Recv()
		if err != nil {
			return err
		}
		if st := m.GetStatus(); st != nil {
			co.NodeStatus(sub, st)
			continue
		}
		b := m.GetSightings()
		if b == nil {
			return status.Error(codes.InvalidArgument, "expected a sighting batch or a status")
		}
		if len(b.GetIds()) > co.MaxSubmitBatch() {
			return status.Errorf(codes.InvalidArgument, "sighting batch of %d exceeds the maximum %d", len(b.GetIds()), co.MaxSubmitBatch())
		}
		var n uint32
		ss, bad := coordinator.Sightings(b, buf)
		buf = ss
		if bad != nil {
			n, err = co.Reject(sub, b.GetIds(), bad.Error())
		} else {
			n, err = co.Offer(sub, ss)
		}
		if err != nil {
			return status.Error(codes.Unavailable, err.Error())
		}
		select {
		case acks <- &styxv1.SubmitResponse{Msg: &styxv1.SubmitResponse_Ack{Ack: &styxv1.Ack{Seq: b.Seq, Accepted: n}}}:
		case <-sub.Done():
			return status.Error(codes.Unavailable, sub.Err().Error())
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
	}
}

// ReportAttacks implements SchedulerService.
func (s *Server) ReportAttacks(ctx context.Context, req *styxv1.ReportAttacksRequest) (*styxv1.ReportAttacksResponse, error) {
	co := s.lead.Current()
	if co == nil {
		return nil, s.notLeader()
	}
	if err := keyspace.ValidID(req.GetNodeId()); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "node id: %v", err)
	}
	if err := s.checkNode(ctx, req.GetNodeId()); err != nil {
		return nil, err
	}
	if n := len(req.GetReports()); n > coordinator.MaxAttackBatch {
		return nil, status.Errorf(codes.InvalidArgument, "%d attack reports exceed the maximum %d per request", n, coordinator.MaxAttackBatch)
	}
	res := co.ReportAttacks(req.GetNodeId(), req.GetReports())
	return &styxv1.ReportAttacksResponse{
		Accepted: res.Accepted, Duplicates: res.Duplicates, Rejected: res.Rejected, Errors: res.Errors,
	}, nil
}

// Status implements AdminService. A standby answers with its own view, or
// forwards the call to the leader when req.ViaLeader is set.
func (s *Server) Status(ctx context.Context, req *styxv1.StatusRequest) (*styxv1.StatusResponse, error) {
	resp := &styxv1.StatusResponse{SchedulerId: s.lead.ID()}
	if li, ok := s.lead.Leader(); ok {
		resp.LeaderId = li.ID
	}
	co := s.lead.Current()
	if co == nil {
		if !req.GetViaLeader() {
			return resp, nil
		}
		c, fctx, err := s.leaderClient(ctx)
		if err != nil {
			return nil, err
		}
		return c.Status(fctx, req)
	}
	resp.Leader, resp.Term = true, co.Term()
	snap := co.State().Snapshot()
	ws, err := snap.Workers(nil)
	if err != nil {
		return nil, status.Error(codes.Internal, fmt.Sprintf("list workers: %v", err))
	}
	rates := co.WorkerRates()
	for _, w := range ws {
		resp.Workers = append(resp.Workers, workerStatus(w, rates[w.ID]))
	}
	ps, ctr, policy, age := co.Stats()
	resp.Pool = PoolStatus(ps, ctr, policy, age)
	resp.Nodes = co.Nodes()
	sort.Strings(resp.Nodes)
	return resp, nil
}

// Coverage is the share of resolved sightings that were examined:
// examined / (examined + shed + expired); 1 when nothing was resolved yet.
func Coverage(ps pool.Stats) float64 {
	d := ps.Examined + ps.Shed + ps.Expired
	if d == 0 {
		return 1
	}
	return float64(ps.Examined) / float64(d)
}

// PoolStatus converts the coordinator's figures to the wire form.
func PoolStatus(ps pool.Stats, ctr coordinator.Counters, policy string, age time.Duration) *styxv1.PoolStatus {
	return &styxv1.PoolStatus{
		Pending: uint64(ps.Pending), InFlight: uint64(ps.InFlight), OldestAgeMillis: age.Milliseconds(),
		Received: ps.Received, Examined: ps.Examined, Deduplicated: ps.Deduplicated, Shed: ps.Shed,
		Expired: ps.Expired, Reassigned: ctr.Reassigned, Verdicts: ctr.Verdicts, Coverage: Coverage(ps), ShedPolicy: policy,
	}
}
