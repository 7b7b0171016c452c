package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/styx-inference/styx/pkg/columns"
	"github.com/styx-inference/styx/pkg/logging"
	"github.com/styx-inference/styx/pkg/raven"
	"github.com/styx-inference/styx/pkg/verdict"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

// DefaultMaxBatch is the largest batch accepted unless configured otherwise.
const DefaultMaxBatch = 65536

// DefaultChunkSize is how many addresses one pool goroutine examines per
// work item unless configured otherwise, so that one large batch still
// spreads over every CPU.
const DefaultChunkSize = 512

// Refusal reasons; a Refusal's reason starts with one of them, optionally
// followed by ": " and details.
const (
	ReasonDraining     = "draining"
	ReasonNoCredit     = "no credit"
	ReasonStaleTerm    = "stale term"
	ReasonTermMismatch = "term mismatch"
	ReasonMalformed    = "malformed address"
	ReasonEmpty        = "empty batch"
	ReasonTooLarge     = "batch too large"
)

// Config configures a Service.
type Config struct {
	// WorkerID is reported in Ready.
	WorkerID string
	// Capacity is the number of credits granted to a session: the most
	// batches it may have outstanding at once.
	Capacity int
	// Engine examines addresses; SetEngine swaps it later.
	Engine raven.Engine
	// Workers is the number of goroutines examining addresses; 0 means
	// GOMAXPROCS.
	Workers int
	// MaxBatch is the largest number of addresses accepted in one batch; 0
	// means DefaultMaxBatch.
	MaxBatch int
	// ChunkSize is how many addresses one pool goroutine examines per work
	// item; 0 means DefaultChunkSize. An engine that waits on the network
	// per address (the open-proxy probe) wants small chunks, so that one
	// batch's waits spread over the pool instead of adding up in one
	// goroutine.
	ChunkSize int
	// BatchDelay is an artificial delay added to every batch (tests of slow
	// workers). It occupies a pool goroutine and counts as busy time, like
	// a slow engine would.
	BatchDelay time.Duration
	// Metrics may be nil.
	Metrics *Metrics
	// OnDrain, when set, is called (on the stream's receive goroutine, so
	// it must not block) when a scheduler sends a Drain: the worker is asked
	// to leave the fleet, as on SIGTERM. The service itself only marks
	// itself draining; leaving is the caller's job.
	OnDrain func(reason string)
}

// Validate reports a configuration error.
func (c Config) Validate() error {
	switch {
	case c.WorkerID == "":
		return errors.New("service: empty worker id")
	case c.Capacity <= 0:
		return fmt.Errorf("service: capacity %d, want > 0", c.Capacity)
	case c.Engine == nil:
		return errors.New("service: nil engine")
	case c.Workers < 0:
		return fmt.Errorf("service: workers %d, want >= 0", c.Workers)
	case c.MaxBatch < 0:
		return fmt.Errorf("service: max batch %d, want >= 0", c.MaxBatch)
	case c.ChunkSize < 0:
		return fmt.Errorf("service: chunk size %d, want >= 0", c.ChunkSize)
	case c.BatchDelay < 0:
		return fmt.Errorf("service: batch delay %s, want >= 0", c.BatchDelay)
	}
	return nil
}

var (
	// errHalfClosed ends a session whose scheduler closed its send side and
	// whose outstanding batches have all been answered: the stream ends OK.
	errHalfClosed = errors.New("scheduler closed its side and every batch was answered")
	// errSessionDone is the cause when the handler returns for any other
	// reason (the stream's own error is then already the cause).
	errSessionDone = errors.New("session done")
)

// Service implements styxv1.WorkerServiceServer. Run must be running for
// batches to be examined.
type Service struct {
	styxv1.UnimplementedWorkerServiceServer

	cfg    Config
	log    zerolog.Logger
	engine *raven.Swap // the engine new batches use
	work   chan chunk
	// stopping is closed when Run is told to stop; nothing new is queued
	// after that.
	stopping chan struct{}
	// receivers counts receive goroutines; Run waits for them.
	receivers sync.WaitGroup

	mu       sync.Mutex
	newest   int64 // highest term seen in an Open
	current  *session
	sessions map[*session]struct{}
	draining bool
	stopped  bool
	inFlight int           // accepted batches not yet answered, all sessions
	idle     chan struct{} // closed when inFlight drops to 0; nil when nobody waits
}

// New returns a Service.
func New(cfg Config, log zerolog.Logger) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Workers == 0 {
		cfg.Workers = runtime.GOMAXPROCS(0)
	}
	if cfg.MaxBatch == 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	if cfg.ChunkSize == 0 {
		cfg.ChunkSize = DefaultChunkSize
	}
	s := &Service{
		cfg:      cfg,
		log:      logging.For(log, "service"),
		work:     make(chan chunk, cfg.Capacity),
		stopping: make(chan struct{}),
		sessions: map[*session]struct{}{},
	}
	s.engine = raven.NewSwap(cfg.Engine)
	return s, nil
}

// Run examines queued work on Workers goroutines until ctx ends, then ends
// every session (UNAVAILABLE), and returns once every goroutine it or the
// sessions started has finished. Streams end when their handlers return,
// which ending the sessions causes, so Run does not depend on the gRPC
// server stopping first.
func (s *Service) Run(ctx context.Context) error {
	var pool sync.WaitGroup
	for range s.cfg.Workers {
		pool.Go(func() { s.examineLoop(ctx) })
	}
	<-ctx.Done()

	s.Stop(status.Error(codes.Unavailable, "worker stopping"))
	close(s.stopping)
	pool.Wait()
	s.receivers.Wait()
	return nil
}

// SetEngine swaps the engine; batches accepted from now on use it, batches
// already accepted finish with the engine they started with.
func (s *Service) SetEngine(e raven.Engine) { s.engine.Set(e) }

// ModelVersion is the current engine's model version.
func (s *Service) ModelVersion() string { return s.engine.ModelVersion() }

// Drain stops granting credits and refuses new batches with ReasonDraining.
// Batches already accepted are still answered (with credit 0).
func (s *Service) Drain() {
	s.mu.Lock()
	s.draining = true
	s.mu.Unlock()
	s.cfg.Metrics.setDraining()
}

// Draining reports whether Drain was called.
func (s *Service) Draining() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.draining
}

// InFlight is the number of accepted batches not yet answered.
func (s *Service) InFlight() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inFlight
}

// NewestTerm is the highest term seen in an Open.
func (s *Service) NewestTerm() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.newest
}

// WaitIdle blocks until no accepted batch is waiting for its answer (each
// has been sent, or dropped with its session), or ctx ends.
func (s *Service) WaitIdle(ctx context.Context) error {
	s.mu.Lock()
	if s.inFlight == 0 {
		s.mu.Unlock()
		return nil
	}
	if s.idle == nil {
		s.idle = make(chan struct{})
	}
	idle := s.idle
	s.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for %d batches in flight: %w", s.InFlight(), context.Cause(ctx))
	}
}

// Stop refuses every new session from now on (UNAVAILABLE) and ends the
// current ones with err, so that the gRPC server can stop gracefully.
func (s *Service) Stop(err error) {
	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()
	s.EndSessions(err)
}

// EndSessions ends every session with err (a gRPC status error): their
// in-flight batches are dropped and the streams end with err.
func (s *Service) EndSessions(err error) {
	s.mu.Lock()
	all := make([]*session, 0, len(s.sessions))
	for sess := range s.sessions {
		all = append(all, sess)
	}
	s.mu.Unlock()
	for _, sess := range all {
		sess.end(err)
	}
}

func (s *Service) addInFlight(d int) {
	if d == 0 {
		return
	}
	s.mu.Lock()
	s.inFlight += d
	n := s.inFlight
	if n == 0 && s.idle != nil {
		close(s.idle)
		s.idle = nil
	}
	s.mu.Unlock()
	s.cfg.Metrics.setInFlight(n)
}

// grant returns the credit an answer carries: 1, or 0 while draining (the
// window shrinks as batches are answered).
func (s *Service) grant(sess *session) uint32 {
	if s.Draining() {
		return 0
	}
	sess.mu.Lock()
	sess.available++
	sess.mu.Unlock()
	s.cfg.Metrics.granted(1)
	return 1
}

// Work implements styxv1.WorkerServiceServer.
func (s *Service) Work(stream styxv1.WorkerService_WorkServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	open := first.GetOpen()
	if open == nil {
		return status.Error(codes.InvalidArgument, "first message must be an Open")
	}
	sess, err := s.open(stream.Context(), open)
	if err != nil {
		return err
	}
	defer s.closeSession(sess)
	go func() {
		defer s.receivers.Done() // added by open
		s.receive(sess, stream)
	}()
	return s.sendLoop(sess, stream)
}

// open registers a session for o, ending the previous one, and queues its
// Ready. It adds one to s.receivers for the session's receive goroutine.
func (s *Service) open(ctx context.Context, o *styxv1.Open) (*session, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil, status.Error(codes.Unavailable, "worker stopping")
	}
	if o.GetTerm() < s.newest {
		s.log.Info().Str(logging.SchedulerID, o.GetSchedulerId()).Int64(logging.Term, o.GetTerm()).
			Int64("newest_term", s.newest).Msg("open from a stale term refused")
		return nil, status.Errorf(codes.FailedPrecondition, "term %d is older than term %d", o.GetTerm(), s.newest)
	}
	s.newest = o.GetTerm()
	if old := s.current; old != nil {
		old.end(status.Errorf(codes.FailedPrecondition, "session of term %d superseded by term %d", old.term, o.GetTerm()))
	}
	credit := s.cfg.Capacity
	if s.draining {
		credit = 0
	}
	sctx, cancel := context.WithCancelCause(ctx)
	sess := &session{
		ctx:       sctx,
		cancel:    cancel,
		term:      o.GetTerm(),
		scheduler: o.GetSchedulerId(),
		log: s.log.With().Str(logging.SchedulerID, o.GetSchedulerId()).
			Int64(logging.Term, o.GetTerm()).Logger(),
		// Bounded: at most Capacity results are pending, and the receive
		// loop blocks on a full channel before queueing more refusals.
		out:       make(chan report, s.cfg.Capacity+8),
		available: credit,
	}
	sess.out <- report{msg: &styxv1.WorkReport{
		Credit: uint32(credit),
		Msg: &styxv1.WorkReport_Ready{Ready: &styxv1.Ready{
			WorkerId:     s.cfg.WorkerID,
			ModelVersion: s.engine.ModelVersion(),
			Draining:     s.draining,
		}},
	}}
	s.current = sess
	s.sessions[sess] = struct{}{}
	s.receivers.Add(1)
	s.cfg.Metrics.addSessions(1)
	s.cfg.Metrics.granted(credit)
	sess.log.Info().Int("credit", credit).Msg("session opened")
	return sess, nil
}

// closeSession runs when the handler returns: whatever is still in flight
// on the session is dropped (the scheduler requeues it).
func (s *Service) closeSession(sess *session) {
	sess.end(errSessionDone)
	sess.mu.Lock()
	dropped := sess.outstanding
	sess.outstanding = 0
	sess.mu.Unlock()
	s.addInFlight(-dropped)
	s.cfg.Metrics.dropped(dropped)
	s.cfg.Metrics.addSessions(-1)

	s.mu.Lock()
	delete(s.sessions, sess)
	if s.current == sess {
		s.current = nil
	}
	s.mu.Unlock()

	ev := sess.log.Info()
	if dropped > 0 {
		ev = sess.log.Warn().Int("dropped_batches", dropped)
	}
	ev.AnErr("cause", context.Cause(sess.ctx)).Msg("session closed")
}

// sendLoop is the only goroutine that sends on the stream.
func (s *Service) sendLoop(sess *session, stream styxv1.WorkerService_WorkServer) error {
	for {
		select {
		case <-sess.ctx.Done():
			return s.finalStatus(sess, stream)
		case r := <-sess.out:
			if err := s.sendOne(sess, stream, r); err != nil {
				return err
			}
		}
	}
}

func (s *Service) sendOne(sess *session, stream styxv1.WorkerService_WorkServer, r report) error {
	if err := stream.Send(r.msg); err != nil {
		sess.end(err)
		return err
	}
	if r.result {
		s.answered(sess)
	}
	return nil
}

// finalStatus is the status the stream ends with once the session's
// context is done. After a half-close every answer is flushed first.
func (s *Service) finalStatus(sess *session, stream styxv1.WorkerService_WorkServer) error {
	cause := context.Cause(sess.ctx)
	if errors.Is(cause, errHalfClosed) {
		for {
			select {
			case r := <-sess.out:
				if err := s.sendOne(sess, stream, r); err != nil {
					return err
				}
			default:
				return nil
			}
		}
	}
	if _, ok := status.FromError(cause); ok {
		return cause
	}
	return status.FromContextError(cause).Err()
}

// answered runs after a result was sent.
func (s *Service) answered(sess *session) {
	sess.mu.Lock()
	sess.outstanding--
	done := sess.halfClosed && sess.outstanding == 0
	sess.mu.Unlock()
	s.addInFlight(-1)
	if done {
		sess.end(errHalfClosed)
	}
}

// receive reads the stream until it breaks or the session ends.
func (s *Service) receive(sess *session, stream styxv1.WorkerService_WorkServer) {
	for {
		m, err := stream.Recv()
		if err != nil {
			if sess.ctx.Err() == nil && errors.Is(err, io.EOF) {
				sess.mu.Lock()
				sess.halfClosed = true
				done := sess.outstanding == 0
				sess.mu.Unlock()
				if done {
					sess.end(errHalfClosed)
				}
				return
			}
			sess.end(err)
			return
		}
		switch msg := m.GetMsg().(type) {
		case *styxv1.WorkAssign_Batch:
			s.batch(sess, msg.Batch)
		case *styxv1.WorkAssign_Drain:
			sess.log.Info().Str(logging.Reason, msg.Drain.GetReason()).Msg("drain requested by the scheduler")
			s.Drain()
			if s.cfg.OnDrain != nil {
				s.cfg.OnDrain(msg.Drain.GetReason())
			}
		case *styxv1.WorkAssign_Open:
			sess.end(status.Error(codes.InvalidArgument, "second Open on one stream"))
			return
		default:
			sess.end(status.Error(codes.InvalidArgument, "empty WorkAssign"))
			return
		}
		if sess.ctx.Err() != nil {
			return
		}
	}
}

// batch admits or refuses one batch.
func (s *Service) batch(sess *session, b *styxv1.Batch) {
	sess.mu.Lock()
	if sess.available <= 0 {
		sess.mu.Unlock()
		s.refuse(sess, b, ReasonNoCredit, fmt.Sprintf("%d batches outstanding", s.cfg.Capacity), 0)
		return
	}
	sess.available--
	sess.mu.Unlock()

	if reason, detail := s.check(sess, b); reason != "" {
		s.refuse(sess, b, reason, detail, s.grant(sess))
		return
	}

	sess.mu.Lock()
	sess.outstanding++
	sess.mu.Unlock()
	s.addInFlight(1)

	n := len(b.GetAddresses()) / columns.AddrSize
	j := &job{
		sess:     sess,
		batch:    b,
		engine:   s.engine.Current(), // a batch keeps the engine it started with
		verdicts: make([]verdict.Verdict, n),
	}
	j.model = j.engine.ModelVersion()
	size := s.cfg.ChunkSize
	j.remaining.Store(int32((n + size - 1) / size))
	for lo := 0; lo < n; lo += size {
		c := chunk{job: j, lo: lo, hi: min(lo+size, n)}
		select {
		case s.work <- c:
		case <-sess.ctx.Done():
			return // the session is over; closeSession drops the batch
		case <-s.stopping:
			return
		}
	}
}

// check returns why b cannot be accepted, or "".
func (s *Service) check(sess *session, b *styxv1.Batch) (reason, detail string) {
	s.mu.Lock()
	draining, newest := s.draining, s.newest
	s.mu.Unlock()
	n, whole := columns.AddrCount(b.GetAddresses())
	switch {
	case draining:
		return ReasonDraining, ""
	case b.GetTerm() < newest:
		return ReasonStaleTerm, fmt.Sprintf("batch term %d, newest term %d", b.GetTerm(), newest)
	case b.GetTerm() != sess.term:
		return ReasonTermMismatch, fmt.Sprintf("batch term %d, session term %d", b.GetTerm(), sess.term)
	case !whole:
		return ReasonMalformed, fmt.Sprintf("addresses of %d bytes, not a multiple of %d", len(b.GetAddresses()), columns.AddrSize)
	case n == 0:
		return ReasonEmpty, ""
	case n > s.cfg.MaxBatch:
		return ReasonTooLarge, fmt.Sprintf("%d addresses, at most %d", n, s.cfg.MaxBatch)
	}
	return "", ""
}

func (s *Service) refuse(sess *session, b *styxv1.Batch, reason, detail string, credit uint32) {
	s.cfg.Metrics.refused(reason)
	text := reason
	if detail != "" {
		text += ": " + detail
	}
	sess.log.Debug().Uint64(logging.BatchID, b.GetBatchId()).Uint32(logging.Attempt, b.GetAttempt()).
		Str(logging.Reason, text).Msg("batch refused")
	sess.send(report{msg: &styxv1.WorkReport{
		Credit: credit,
		Msg: &styxv1.WorkReport_Refusal{Refusal: &styxv1.Refusal{
			BatchId: b.GetBatchId(),
			Attempt: b.GetAttempt(),
			Reason:  text,
		}},
	}})
}

// finish sends the result of a job whose every chunk is done.
func (s *Service) finish(j *job) {
	busy := time.Duration(j.busy.Load())
	var b columns.VerdictBuilder
	b.Reset(len(j.verdicts))
	for i := range j.verdicts {
		b.AddVerdict(&j.verdicts[i])
	}
	verdicts := b.Columns()
	s.cfg.Metrics.answered(len(j.verdicts), busy)
	j.sess.send(report{result: true, msg: &styxv1.WorkReport{
		Credit: s.grant(j.sess),
		Msg: &styxv1.WorkReport_Result{Result: &styxv1.Result{
			BatchId:   j.batch.GetBatchId(),
			Term:      j.batch.GetTerm(),
			Attempt:   j.batch.GetAttempt(),
			Verdicts:  verdicts,
			BusyNanos: int64(busy),
		}},
	}})
}

// session is one scheduler stream.
type session struct {
	ctx       context.Context
	cancel    context.CancelCauseFunc
	term      int64
	scheduler string
	log       zerolog.Logger
	out       chan report

	mu          sync.Mutex
	available   int  // credits the scheduler may still use
	outstanding int  // accepted batches whose result has not been sent
	halfClosed  bool // the scheduler closed its send side
}

// report is one message for the sender; result marks a Result, whose
// sending answers an outstanding batch.
type report struct {
	msg    *styxv1.WorkReport
	result bool
}

// end ends the session with cause (the first cause wins).
func (sess *session) end(cause error) { sess.cancel(cause) }

// send queues r for the sender, or drops it when the session is over.
func (sess *session) send(r report) {
	select {
	case sess.out <- r:
	case <-sess.ctx.Done():
	}
}
