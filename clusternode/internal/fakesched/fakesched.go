// Package fakesched is a small, scriptable SchedulerService for the cluster
// node's tests: real gRPC on 127.0.0.1:0, registered as the STYX leader by
// putting its LeaderInfo under the election prefix. It records what it
// receives, answers Hello with a Welcome and every SightingBatch with an
// Ack, accepts attack reports (ReportAttacks), and sends outcomes when the
// test says so (or, with Config.Answer, answers every sighting at once).
// It publishes nothing to the verdict log: a test that needs verdicts on
// the log publishes them itself (verdictlog.Publisher on an embedded NATS
// server). Not for production use.
package fakesched

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/styx-inference/styx/pkg/columns"
	"github.com/styx-inference/styx/pkg/keyspace"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

// Config scripts a fake scheduler.
type Config struct {
	ID       string
	Term     int64
	MaxBatch uint32
	// Follower makes Submit answer FAILED_PRECONDITION.
	Follower bool
	// Answer, when set, is called for every sighting received; a non-nil
	// Outcome is sent back at once (after the Ack).
	Answer func(columns.Sighting) *columns.Outcome
}

// Server is a running fake scheduler.
type Server struct {
	styxv1.UnimplementedSchedulerServiceServer

	cfg  Config
	srv  *grpc.Server
	lis  net.Listener
	done chan struct{}

	mu        sync.Mutex
	sess      *session
	sessions  int
	refused   int // Submit streams refused as a follower
	hellos    []string
	received  map[uint64]int // sighting id -> times received
	sightings map[uint64]columns.Sighting
	batches   []int

	attacks     []*styxv1.AttackReport
	attackCalls int
	attacksDown bool

	statuses []*styxv1.NodeStatus // log status reports, in order
}

// Statuses returns the log status reports received so far.
func (s *Server) Statuses() []*styxv1.NodeStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*styxv1.NodeStatus(nil), s.statuses...)
}

type session struct {
	out  chan *styxv1.SubmitResponse
	kill chan struct{}
}

// Start serves a fake scheduler on 127.0.0.1:0.
func Start(cfg Config) (*Server, error) {
	if cfg.ID == "" {
		cfg.ID = "fake"
	}
	if cfg.Term == 0 {
		cfg.Term = 1
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("fakesched: listen: %w", err)
	}
	s := &Server{
		cfg:       cfg,
		srv:       grpc.NewServer(),
		lis:       lis,
		done:      make(chan struct{}),
		received:  map[uint64]int{},
		sightings: map[uint64]columns.Sighting{},
	}
	styxv1.RegisterSchedulerServiceServer(s.srv, s)
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(lis)
	}()
	return s, nil
}

// Addr is the gRPC address.
func (s *Server) Addr() string { return s.lis.Addr().String() }

// Info is the LeaderInfo the fake registers.
func (s *Server) Info() keyspace.LeaderInfo {
	return keyspace.LeaderInfo{ID: s.cfg.ID, GRPCAddr: s.Addr()}
}

// Register puts the fake's LeaderInfo under keyspace.LeaderPrefix+suffix.
func (s *Server) Register(ctx context.Context, cli *clientv3.Client, suffix string) error {
	v, err := keyspace.Encode(s.Info())
	if err != nil {
		return err
	}
	if _, err := cli.Put(ctx, keyspace.LeaderPrefix+suffix, v); err != nil {
		return fmt.Errorf("fakesched: register: %w", err)
	}
	return nil
}

// Stop stops serving at once.
func (s *Server) Stop() {
	s.srv.Stop()
	<-s.done
}

// Submit implements SchedulerService.
func (s *Server) Submit(stream styxv1.SchedulerService_SubmitServer) error {
	if s.cfg.Follower {
		s.mu.Lock()
		s.refused++
		s.mu.Unlock()
		return status.Error(codes.FailedPrecondition, "not the leader")
	}
	req, err := stream.Recv()
	if err != nil {
		return err
	}
	if req.GetHello() == nil {
		return status.Error(codes.InvalidArgument, "first message must be a hello")
	}
	welcome := &styxv1.SubmitResponse{Msg: &styxv1.SubmitResponse_Welcome{Welcome: &styxv1.Welcome{
		SchedulerId: s.cfg.ID, Term: s.cfg.Term, MaxBatch: s.cfg.MaxBatch,
	}}}
	if err := stream.Send(welcome); err != nil {
		return err
	}
	sess := &session{out: make(chan *styxv1.SubmitResponse, 64), kill: make(chan struct{})}
	s.mu.Lock()
	s.sess = sess
	s.sessions++
	s.hellos = append(s.hellos, req.GetHello().GetNodeId())
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		if s.sess == sess {
			s.sess = nil
		}
		s.mu.Unlock()
	}()

	ctx := stream.Context()
	in := make(chan *styxv1.SubmitRequest)
	errc := make(chan error, 1)
	go func() {
		for {
			r, err := stream.Recv()
			if err != nil {
				errc <- err
				return
			}
			select {
			case in <- r:
			case <-ctx.Done():
				errc <- ctx.Err()
				return
			}
		}
	}()
	for {
		select {
		case r := <-in:
			if st := r.GetStatus(); st != nil {
				s.mu.Lock()
				s.statuses = append(s.statuses, st)
				s.mu.Unlock()
				continue
			}
			b := r.GetSightings()
			if b == nil {
				return status.Error(codes.InvalidArgument, "expected a sighting batch or a status")
			}
			sgs, err := columns.Sightings(b)
			if err != nil {
				return status.Error(codes.InvalidArgument, err.Error())
			}
			var outs []columns.Outcome
			s.mu.Lock()
			s.batches = append(s.batches, len(sgs))
			for _, sg := range sgs {
				s.received[sg.ID]++
				if _, ok := s.sightings[sg.ID]; !ok {
					s.sightings[sg.ID] = sg
				}
			}
			s.mu.Unlock()
			ack := &styxv1.SubmitResponse{Msg: &styxv1.SubmitResponse_Ack{Ack: &styxv1.Ack{
				Seq: b.GetSeq(), Accepted: uint32(len(sgs)),
			}}}
			if err := stream.Send(ack); err != nil {
				return err
			}
			if s.cfg.Answer != nil {
				for _, sg := range sgs {
					if o := s.cfg.Answer(sg); o != nil {
						outs = append(outs, *o)
					}
				}
			}
			if len(outs) > 0 {
				if err := stream.Send(&styxv1.SubmitResponse{Msg: &styxv1.SubmitResponse_Outcomes{
					Outcomes: columns.EncodeOutcomes(outs...),
				}}); err != nil {
					return err
				}
			}
		case m := <-sess.out:
			if err := stream.Send(m); err != nil {
				return err
			}
		case <-sess.kill:
			return status.Error(codes.Unavailable, "disconnected by the test")
		case err := <-errc:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// ReportAttacks implements SchedulerService: it records the reports and
// accepts them all, or answers UNAVAILABLE while SetAttacksDown(true).
func (s *Server) ReportAttacks(_ context.Context, req *styxv1.ReportAttacksRequest) (*styxv1.ReportAttacksResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.attackCalls++
	if s.attacksDown {
		return nil, status.Error(codes.Unavailable, "attack reports down by the test")
	}
	s.attacks = append(s.attacks, req.GetReports()...)
	return &styxv1.ReportAttacksResponse{Accepted: uint32(len(req.GetReports()))}, nil
}

// SetAttacksDown makes ReportAttacks fail (true) or succeed again.
func (s *Server) SetAttacksDown(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.attacksDown = down
}

// Attacks returns every attack report received, in order, and how many
// ReportAttacks calls were made.
func (s *Server) Attacks() ([]*styxv1.AttackReport, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*styxv1.AttackReport(nil), s.attacks...), s.attackCalls
}

// SendOutcomes sends outcomes on the current Submit stream.
func (s *Server) SendOutcomes(outs ...*columns.Outcome) error {
	rows := make([]columns.Outcome, len(outs))
	for i, o := range outs {
		rows[i] = *o
	}
	s.mu.Lock()
	sess := s.sess
	s.mu.Unlock()
	if sess == nil {
		return errors.New("fakesched: no submit stream")
	}
	m := &styxv1.SubmitResponse{Msg: &styxv1.SubmitResponse_Outcomes{Outcomes: columns.EncodeOutcomes(rows...)}}
	select {
	case sess.out <- m:
		return nil
	case <-sess.kill:
		return errors.New("fakesched: submit stream disconnected")
	case <-time.After(5 * time.Second):
		return errors.New("fakesched: send outcomes timed out")
	}
}

// Disconnect ends the current Submit stream with UNAVAILABLE.
func (s *Server) Disconnect() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sess != nil {
		close(s.sess.kill)
		s.sess = nil
	}
}

// Connected reports whether a Submit stream is up.
func (s *Server) Connected() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sess != nil
}

// Sessions counts Submit streams welcomed so far.
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions
}

// Refused counts Submit streams refused with FAILED_PRECONDITION
// (Config.Follower).
func (s *Server) Refused() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refused
}

// Hellos lists the node ids of every Hello received.
func (s *Server) Hellos() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.hellos...)
}

// Received returns how many times each sighting id arrived.
func (s *Server) Received() map[uint64]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := make(map[uint64]int, len(s.received))
	for k, v := range s.received {
		m[k] = v
	}
	return m
}

// Sightings returns the first copy of every sighting received, by id.
func (s *Server) Sightings() map[uint64]columns.Sighting {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := make(map[uint64]columns.Sighting, len(s.sightings))
	for k, v := range s.sightings {
		m[k] = v
	}
	return m
}

// Batches returns the size of every batch received, in order.
func (s *Server) Batches() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int(nil), s.batches...)
}

// VerdictFor returns a VERDICT outcome for sg (proxy, type "VPN", risk 80,
// inferred at now).
func VerdictFor(sg columns.Sighting) *columns.Outcome {
	return &columns.Outcome{
		SightingID: sg.ID,
		Kind:       styxv1.OutcomeKind_OUTCOME_KIND_VERDICT,
		Verdict: &styxv1.Verdict{
			Proxy: true, Type: "VPN", Risk: 80,
			ModelVersion: "fake-v1", Evidence: []string{"fake:test"},
			InferredUnixNano: time.Now().UnixNano(),
		},
	}
}
