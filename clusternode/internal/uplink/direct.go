package uplink

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/styx-inference/styx/pkg/columns"
	"github.com/styx-inference/styx/pkg/logging"
	"github.com/styx-inference/styx/pkg/retry"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

// DirectTerm is the term a node in direct mode opens its worker session
// with. A worker refuses it once it has seen a scheduler's newer term, so a
// worker in a real fleet keeps serving its leader.
const DirectTerm = 1

// runDirect speaks WorkerService to one worker instead of following the
// leader (Config.DirectWorker): the node's sightings go to the worker as
// batches and the verdicts come back as outcomes, through the same pending
// table and store as with STYX. There is no attack forwarding, and the node
// follows no verdict log.
func (u *Uplink) runDirect(ctx context.Context) error {
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64 << 20)),
	}, u.cfg.DialOptions...)
	conn, err := grpc.NewClient(u.cfg.DirectWorker, opts...)
	if err != nil {
		return fmt.Errorf("uplink: direct worker %q: %w", u.cfg.DirectWorker, err)
	}
	defer conn.Close()
	client := styxv1.NewWorkerServiceClient(conn)
	log := u.log.With().Str("worker_addr", u.cfg.DirectWorker).Logger()
	bo := retry.NewBackoff(u.cfg.BackoffMin, u.cfg.BackoffMax)
	for {
		opened, err := u.directSession(ctx, client)
		if ctx.Err() != nil {
			log.Info().Int("pending", u.Stats().Pending).Msg("uplink stopped")
			return nil
		}
		if opened {
			bo.Reset()
		}
		log.Warn().Err(err).Msg("worker stream ended, reconnecting")
		if !retry.Sleep(ctx, bo.NextBackOff()) {
			log.Info().Int("pending", u.Stats().Pending).Msg("uplink stopped")
			return nil
		}
	}
}

// directState is what one direct session shares between its sender and
// its receiver.
type directState struct {
	mu       sync.Mutex
	credits  int
	inFlight map[uint64][]uint64 // batch id -> sighting ids, in address order
	wake     chan struct{}       // cap 1: credits arrived
}

func (d *directState) addCredit(n uint32) {
	if n == 0 {
		return
	}
	d.mu.Lock()
	d.credits += int(n)
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// take removes a batch from the in-flight table.
func (d *directState) take(id uint64) ([]uint64, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	ids, ok := d.inFlight[id]
	delete(d.inFlight, id)
	return ids, ok
}

// directSession runs one Work stream; opened reports whether the worker
// answered the Open.
func (u *Uplink) directSession(ctx context.Context, client styxv1.WorkerServiceClient) (opened bool, err error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.Work(sctx)
	if err != nil {
		return false, fmt.Errorf("open work stream: %w", err)
	}
	open := &styxv1.WorkAssign{Msg: &styxv1.WorkAssign_Open{Open: &styxv1.Open{SchedulerId: "node-" + u.cfg.NodeID, Term: DirectTerm}}}
	if err := stream.Send(open); err != nil {
		return false, fmt.Errorf("send open: %w", err)
	}
	first, err := stream.Recv()
	if err != nil {
		return false, fmt.Errorf("receive ready: %w", err)
	}
	ready := first.GetReady()
	if ready == nil {
		return false, fmt.Errorf("first answer is %T, not ready", first.GetMsg())
	}
	d := &directState{inFlight: map[uint64][]uint64{}, wake: make(chan struct{}, 1)}
	d.addCredit(first.GetCredit())
	u.sessions.Add(1)
	u.connected.Store(true)
	defer u.connected.Store(false)
	queued := u.restartQueue()
	u.log.Info().Str(logging.WorkerID, ready.GetWorkerId()).Int("pending", queued).Msg("connected to worker directly")

	recvErr := make(chan error, 1)
	go func() { recvErr <- u.directRecv(stream, d) }()
	err = u.directSend(sctx, stream, d, recvErr)
	cancel()
	if !errors.Is(err, errRecvDone) {
		<-recvErr
	}
	return true, err
}

var errRecvDone = errors.New("worker stream receive ended")

// directSend sends batches while the worker grants credits.
func (u *Uplink) directSend(ctx context.Context, stream styxv1.WorkerService_WorkClient, d *directState, recvErr <-chan error) error {
	tick := time.NewTicker(u.cfg.BatchInterval)
	defer tick.Stop()
	var nextBatch uint64
	maxBatch := u.cfg.BatchSize
	send := func(onlyFull bool) error {
		for {
			d.mu.Lock()
			has := d.credits > 0
			d.mu.Unlock()
			if !has {
				return nil
			}
			sightings := u.takeBatch(maxBatch, onlyFull)
			if sightings == nil {
				return nil
			}
			nextBatch++
			b := &styxv1.Batch{BatchId: nextBatch, Term: DirectTerm, Attempt: 1, Addresses: sightings.Addresses}
			d.mu.Lock()
			d.credits--
			d.inFlight[b.BatchId] = sightings.Ids
			d.mu.Unlock()
			if err := stream.Send(&styxv1.WorkAssign{Msg: &styxv1.WorkAssign_Batch{Batch: b}}); err != nil {
				// The sightings stay pending and go again on the next stream.
				return fmt.Errorf("send batch %d: %w", b.BatchId, err)
			}
			u.batches.Add(1)
		}
	}
	for {
		var err error
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-recvErr:
			return fmt.Errorf("%w: %w", errRecvDone, err)
		case <-u.notify:
			err = send(true)
		case <-u.committed:
			err = send(false) // they have waited for their commit already
		case <-d.wake:
			err = send(true)
		case <-tick.C:
			err = send(false)
		}
		if err != nil {
			return err
		}
	}
}

// directRecv turns results into outcomes and refusals back into queued
// sightings.
func (u *Uplink) directRecv(stream styxv1.WorkerService_WorkClient, d *directState) error {
	for {
		r, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return errors.New("worker closed the stream")
			}
			return fmt.Errorf("receive: %w", err)
		}
		switch m := r.GetMsg().(type) {
		case *styxv1.WorkReport_Result:
			ids, ok := d.take(m.Result.GetBatchId())
			if !ok {
				u.log.Warn().Uint64(logging.BatchID, m.Result.GetBatchId()).Msg("result for an unknown batch ignored")
				break
			}
			vs, err := columns.DecodeVerdicts(m.Result.GetVerdicts(), len(ids))
			if err != nil {
				// The sightings stay pending and go again on the next stream.
				return fmt.Errorf("result for batch %d: %w", m.Result.GetBatchId(), err)
			}
			outs := make([]columns.Outcome, len(ids))
			for i, id := range ids {
				outs[i] = columns.Outcome{SightingID: id, Kind: styxv1.OutcomeKind_OUTCOME_KIND_VERDICT, Verdict: &vs[i]}
			}
			u.resolve(outs)
		case *styxv1.WorkReport_Refusal:
			ids, _ := d.take(m.Refusal.GetBatchId())
			u.requeue(ids)
			u.log.Warn().Uint64(logging.BatchID, m.Refusal.GetBatchId()).Str(logging.Reason, m.Refusal.GetReason()).Msg("worker refused a batch; its sightings are queued again")
		}
		// Credit last: the sender may take the freed room at once.
		d.addCredit(r.GetCredit())
	}
}

// requeue queues pending sightings again (a refused batch).
func (u *Uplink) requeue(ids []uint64) {
	if len(ids) == 0 {
		return
	}
	u.mu.Lock()
	u.queue = append(u.queue, ids...)
	u.mu.Unlock()
}
