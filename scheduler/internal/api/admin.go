package api

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/styx-inference/styx/pkg/keyspace"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
	"github.com/styx-inference/styx/scheduler/internal/coordinator"
	"github.com/styx-inference/styx/scheduler/internal/state"
)

// ForwardedBy is the metadata key a standby sets on an admin call it
// forwards to the leader; a scheduler that receives such a call and does
// not lead answers instead of forwarding it again.
const ForwardedBy = "styx-forwarded-by"

// forwarder holds the standby's connection to the leader, redialled when
// the leader's address changes.
type forwarder struct {
	mu   sync.Mutex
	addr string
	conn *grpc.ClientConn
	dial grpc.DialOption // transport credentials; nil: plaintext
}

func (f *forwarder) client(addr string) (styxv1.AdminServiceClient, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.conn != nil && f.addr == addr {
		return styxv1.NewAdminServiceClient(f.conn), nil
	}
	if f.conn != nil {
		f.conn.Close()
		f.conn = nil
	}
	dial := f.dial
	if dial == nil {
		dial = grpc.WithTransportCredentials(insecure.NewCredentials())
	}
	conn, err := grpc.NewClient(addr, dial)
	if err != nil {
		return nil, fmt.Errorf("dial leader at %s: %w", addr, err)
	}
	f.addr, f.conn = addr, conn
	return styxv1.NewAdminServiceClient(conn), nil
}

func (f *forwarder) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.conn != nil {
		f.conn.Close()
		f.conn = nil
	}
}

// Close releases the connection a standby keeps to the leader.
func (s *Server) Close() { s.fwd.close() }

// leaderClient returns a client of the leader for a call this standby
// should forward, and the context to call it with; an error when the call
// was already forwarded once or no other leader is known.
func (s *Server) leaderClient(ctx context.Context) (styxv1.AdminServiceClient, context.Context, error) {
	if md, ok := metadata.FromIncomingContext(ctx); ok && len(md.Get(ForwardedBy)) > 0 {
		return nil, nil, status.Errorf(codes.Unavailable, "not the leader (forwarded by %s); the leader changed, retry", md.Get(ForwardedBy)[0])
	}
	li, ok := s.lead.Leader()
	if !ok || li.ID == s.lead.ID() || li.GRPCAddr == "" {
		return nil, nil, status.Error(codes.Unavailable, "no leader elected yet")
	}
	c, err := s.fwd.client(li.GRPCAddr)
	if err != nil {
		return nil, nil, status.Error(codes.Unavailable, err.Error())
	}
	return c, metadata.AppendToOutgoingContext(ctx, ForwardedBy, s.lead.ID()), nil
}

// Drain implements AdminService. A standby forwards it to the leader.
func (s *Server) Drain(ctx context.Context, req *styxv1.DrainRequest) (*styxv1.DrainResponse, error) {
	for _, id := range req.GetWorkerIds() {
		if err := keyspace.ValidID(id); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "worker id %q: %v", id, err)
		}
	}
	if len(req.GetWorkerIds()) == 0 && req.GetHost() == "" {
		return nil, status.Error(codes.InvalidArgument, coordinator.ErrNothingSelected.Error())
	}
	co := s.lead.Current()
	if co == nil {
		c, fctx, err := s.leaderClient(ctx)
		if err != nil {
			return nil, err
		}
		return c.Drain(fctx, req)
	}
	reason := req.GetReason()
	if reason == "" {
		reason = "operator request"
	}
	ws, err := co.Drain(req.GetWorkerIds(), req.GetHost(), reason)
	var nf *coordinator.NotFoundError
	switch {
	case errors.As(err, &nf):
		return nil, status.Error(codes.NotFound, nf.Error())
	case err != nil:
		return nil, status.Errorf(codes.Internal, "drain: %v", err)
	}
	rates := co.WorkerRates()
	resp := &styxv1.DrainResponse{SchedulerId: s.lead.ID(), Term: co.Term()}
	for i := range ws {
		resp.Workers = append(resp.Workers, workerStatus(&ws[i], rates[ws[i].ID]))
	}
	return resp, nil
}

// workerStatus converts a worker row to the wire form.
func workerStatus(w *state.Worker, rate float64) *styxv1.WorkerStatus {
	return &styxv1.WorkerStatus{
		WorkerId: w.ID, Address: w.Addr, Host: w.Host, NumaNode: int32(w.NUMANode), Cpus: w.CPUs,
		Capacity: uint32(w.Capacity), ModelVersion: w.ModelVersion, State: w.State,
		Credits: uint32(max(w.Credits, 0)), InFlight: uint32(max(w.InFlight, 0)),
		BatchesDone: w.BatchesDone, AddressesDone: w.AddrsDone,
		AddressesPerSecond: rate, DrainRequested: w.DrainRequested,
	}
}
