package uplink

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/styx-inference/styx/pkg/columns"
	"github.com/styx-inference/styx/pkg/keyspace"
	"github.com/styx-inference/styx/pkg/logging"
	"github.com/styx-inference/styx/pkg/retry"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

// Run follows the leader and keeps a Submit stream to it, and forwards the
// attack outbox, until ctx ends. Then it sends what is queued (bounded by
// FlushTimeout), closes the stream and returns nil. The verdicts of
// sightings still pending at the end, if STYX produces them, come back
// through the verdict log (ApplyLog). With Config.DirectWorker it talks to
// that worker instead (runDirect).
//
// With Config.Outbox, Run also runs the group commits, and its last one
// before it returns: every sighting accepted until then is persisted, and
// the next run sends it again.
func (u *Uplink) Run(ctx context.Context) error {
	if u.cfg.Outbox != nil {
		cctx, stop := context.WithCancel(context.WithoutCancel(ctx))
		done := make(chan struct{})
		go func() {
			defer close(done)
			u.runCommits(cctx)
		}()
		defer func() {
			stop()
			<-done
			u.commit()
		}()
	}
	if u.cfg.DirectWorker != "" {
		return u.runDirect(ctx)
	}
	leaders := u.cfg.Leaders(ctx)
	var li keyspace.LeaderInfo
	for {
		// Each leader gets an epoch whose context outlives ctx just long
		// enough to flush.
		ectx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		done := make(chan struct{})
		go func(li keyspace.LeaderInfo) {
			defer close(done)
			if li.GRPCAddr != "" {
				u.runLeader(ectx, ctx, li)
			}
		}(li)

		select {
		case nli, ok := <-leaders:
			if ok {
				cancel()
				<-done
				li = nli
				u.log.Info().Str(logging.Leader, li.ID).Str("grpc_addr", li.GRPCAddr).Msg("leader changed")
				continue
			}
			<-ctx.Done() // the leader watch closes only when ctx ends
		case <-ctx.Done():
		}
		timer := time.NewTimer(u.cfg.FlushTimeout)
		select {
		case <-done:
		case <-timer.C:
			u.log.Warn().Msg("uplink flush timed out")
		}
		timer.Stop()
		cancel()
		<-done
		u.log.Info().Int("pending", u.Stats().Pending).Msg("uplink stopped")
		return nil
	}
}

// runLeader talks to one leader until ectx ends, or until root ends and the
// queue has been flushed.
func (u *Uplink) runLeader(ectx, root context.Context, li keyspace.LeaderInfo) {
	opts := append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, u.cfg.DialOptions...)
	conn, err := grpc.NewClient(li.GRPCAddr, opts...)
	if err != nil {
		u.log.Error().Err(err).Str(logging.Leader, li.ID).Str("grpc_addr", li.GRPCAddr).Msg("bad leader address")
		return
	}
	defer conn.Close()
	client := styxv1.NewSchedulerServiceClient(conn)
	var wg sync.WaitGroup
	wg.Go(func() { u.submitLoop(ectx, root, client, li) })
	wg.Go(func() {
		// The outbox is durable: nothing to flush, it stops with root.
		actx, cancel := context.WithCancel(ectx)
		defer cancel()
		stop := context.AfterFunc(root, cancel)
		defer stop()
		u.attackLoop(actx, client, li)
	})
	wg.Wait()
}

func (u *Uplink) submitLoop(ectx, root context.Context, client styxv1.SchedulerServiceClient, li keyspace.LeaderInfo) {
	bo := retry.NewBackoff(u.cfg.BackoffMin, u.cfg.BackoffMax)
	log := u.log.With().Str(logging.Leader, li.ID).Logger()
	// The wait between streams ends with either context.
	wctx, cancel := context.WithCancel(ectx)
	defer cancel()
	defer context.AfterFunc(root, cancel)()
	for {
		welcomed, err := u.submitSession(ectx, root, client)
		if ectx.Err() != nil || root.Err() != nil {
			return
		}
		if welcomed {
			bo.Reset()
		}
		if status.Code(err) == codes.FailedPrecondition {
			log.Info().Err(err).Msg("scheduler is not the leader, waiting")
		} else {
			log.Warn().Err(err).Msg("submit stream ended, reconnecting")
		}
		if !retry.Sleep(wctx, bo.NextBackOff()) {
			return
		}
	}
}

// submitSession runs one Submit stream. welcomed reports whether the leader
// answered the Hello.
func (u *Uplink) submitSession(ectx, root context.Context, client styxv1.SchedulerServiceClient) (welcomed bool, err error) {
	sctx, cancel := context.WithCancel(ectx)
	defer cancel()
	stream, err := client.Submit(sctx)
	if err != nil {
		return false, fmt.Errorf("open submit stream: %w", err)
	}
	hello := &styxv1.SubmitRequest{Msg: &styxv1.SubmitRequest_Hello{Hello: &styxv1.Hello{NodeId: u.cfg.NodeID}}}
	if err := stream.Send(hello); err != nil {
		return false, fmt.Errorf("send hello: %w", recvStatus(stream, err))
	}
	resp, err := stream.Recv()
	if err != nil {
		return false, fmt.Errorf("receive welcome: %w", err)
	}
	w := resp.GetWelcome()
	if w == nil {
		return false, fmt.Errorf("first answer is %T, not a welcome", resp.GetMsg())
	}
	maxBatch := u.cfg.BatchSize
	if mb := int(w.GetMaxBatch()); mb > 0 && mb < maxBatch {
		maxBatch = mb
	}
	u.fullBatch.Store(int64(maxBatch))
	u.sessions.Add(1)
	u.connected.Store(true)
	defer u.connected.Store(false)
	queued := u.restartQueue()
	u.log.Info().Str("scheduler_id", w.GetSchedulerId()).Int64(logging.Term, w.GetTerm()).
		Int("max_batch", maxBatch).Int("pending", queued).Msg("connected to leader")

	recvErr := make(chan error, 1)
	go func() { recvErr <- u.recvLoop(stream) }()
	recvDone, err := u.sendLoop(sctx, root, stream, maxBatch, recvErr)
	cancel()
	if !recvDone {
		<-recvErr
	}
	return true, err
}

// recvStatus returns the stream's real status when Send failed with io.EOF
// (the server ended the stream; Recv tells why). Only while no other
// goroutine receives: once recvLoop runs, use sendFailed.
func recvStatus(stream styxv1.SchedulerService_SubmitClient, err error) error {
	if !errors.Is(err, io.EOF) {
		return err
	}
	if _, rerr := stream.Recv(); rerr != nil {
		return rerr
	}
	return err
}

func (u *Uplink) sendLoop(ctx, root context.Context, stream styxv1.SchedulerService_SubmitClient, maxBatch int, recvErr <-chan error) (recvDone bool, err error) {
	tick := time.NewTicker(u.cfg.BatchInterval)
	defer tick.Stop()
	var statusC <-chan time.Time
	if u.cfg.LogStatus != nil {
		every := u.cfg.StatusEvery
		if every <= 0 {
			every = 2 * time.Second
		}
		st := time.NewTicker(every)
		defer st.Stop()
		statusC = st.C
	}
	sendStatus := func() error {
		if u.cfg.LogStatus == nil {
			return nil
		}
		req := &styxv1.SubmitRequest{Msg: &styxv1.SubmitRequest_Status{Status: u.cfg.LogStatus()}}
		if err := stream.Send(req); err != nil {
			return fmt.Errorf("send log status: %w", err)
		}
		return nil
	}
	if err := sendStatus(); err != nil {
		return sendFailed(ctx, err, recvErr)
	}
	var seq uint64
	send := func(onlyFull bool) error {
		for {
			batch := u.takeBatch(maxBatch, onlyFull)
			if batch == nil {
				return nil
			}
			seq++
			batch.Seq = seq
			req := &styxv1.SubmitRequest{Msg: &styxv1.SubmitRequest_Sightings{Sightings: batch}}
			if err := stream.Send(req); err != nil {
				// The sightings stay pending and go again on the next stream.
				return fmt.Errorf("send batch %d: %w", seq, err)
			}
			u.batches.Add(1)
		}
	}
	for {
		select {
		case <-root.Done():
			// Commit what was accepted last, flush, half-close, and let
			// the leader end the stream (its last outcomes still count);
			// Run bounds the wait.
			u.commit()
			if err := send(false); err != nil {
				return sendFailed(ctx, err, recvErr)
			}
			if err := stream.CloseSend(); err != nil {
				return false, fmt.Errorf("close submit stream: %w", err)
			}
			select {
			case <-recvErr:
				return true, nil
			case <-ctx.Done():
				return false, nil
			}
		case <-ctx.Done():
			return false, ctx.Err()
		case err := <-recvErr:
			return true, err
		case <-u.notify:
			err = send(true)
		case <-u.committed:
			err = send(false) // they have waited for their commit already
		case <-tick.C:
			err = send(false)
		case <-statusC:
			err = sendStatus()
		}
		if err != nil {
			return sendFailed(ctx, err, recvErr)
		}
	}
}

// sendFailed returns the error a failed Send ends the session with. After
// io.EOF (the server ended the stream) the real status is what recvLoop's
// Recv returns: it is awaited here rather than read with a second,
// concurrent Recv. recvDone reports whether recvErr was consumed.
func sendFailed(ctx context.Context, err error, recvErr <-chan error) (recvDone bool, _ error) {
	if !errors.Is(err, io.EOF) {
		return false, err
	}
	select {
	case rerr := <-recvErr:
		if rerr == nil {
			return true, err
		}
		return true, fmt.Errorf("%v: %w", err, rerr)
	case <-ctx.Done():
		return false, err
	}
}

func (u *Uplink) recvLoop(stream styxv1.SchedulerService_SubmitClient) error {
	for {
		resp, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return errors.New("leader closed the submit stream")
			}
			return fmt.Errorf("receive: %w", err)
		}
		switch m := resp.GetMsg().(type) {
		case *styxv1.SubmitResponse_Ack:
			u.acked.Add(uint64(m.Ack.GetAccepted()))
			u.log.Debug().Uint64("seq", m.Ack.GetSeq()).Uint32("accepted", m.Ack.GetAccepted()).Msg("batch acknowledged")
		case *styxv1.SubmitResponse_Outcomes:
			outs, err := columns.Outcomes(m.Outcomes)
			if err != nil {
				// Its sightings stay pending and go again on the next stream.
				return fmt.Errorf("receive: %w", err)
			}
			u.resolve(outs)
		default:
			u.log.Warn().Str("type", fmt.Sprintf("%T", m)).Msg("unexpected submit answer ignored")
		}
	}
}

// attackRPCTimeout bounds one ReportAttacks call.
const attackRPCTimeout = 10 * time.Second

// attackLoop forwards the store's attack outbox to the leader until ctx
// ends: at once when kicked, else every AttackRetry. A batch leaves the
// outbox only once the leader has answered for it; the leader drops the
// ones it has already put on the log, so a re-sent batch is harmless.
func (u *Uplink) attackLoop(ctx context.Context, client styxv1.SchedulerServiceClient, li keyspace.LeaderInfo) {
	bo := retry.NewBackoff(u.cfg.BackoffMin, u.cfg.BackoffMax)
	log := u.log.With().Str(logging.Leader, li.ID).Logger()
	tick := time.NewTicker(u.cfg.AttackRetry)
	defer tick.Stop()
	for {
		err := u.forwardAttacks(ctx, client, log)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			if status.Code(err) == codes.FailedPrecondition {
				log.Info().Err(err).Msg("scheduler is not the leader, attack reports wait")
			} else {
				log.Warn().Err(err).Msg("forward attack reports, retrying")
			}
			if !retry.Sleep(ctx, bo.NextBackOff()) {
				return
			}
			continue
		}
		bo.Reset()
		select {
		case <-ctx.Done():
			return
		case <-u.attackKick:
		case <-tick.C:
		}
	}
}

// forwardAttacks sends the outbox in batches until it is empty.
func (u *Uplink) forwardAttacks(ctx context.Context, client styxv1.SchedulerServiceClient, log zerolog.Logger) error {
	for {
		batch, err := u.cfg.Store.AttackOutbox(u.cfg.AttackBatch)
		if err != nil || len(batch) == 0 {
			return err
		}
		req := &styxv1.ReportAttacksRequest{NodeId: u.cfg.NodeID, Reports: make([]*styxv1.AttackReport, len(batch))}
		seqs := make([]uint64, len(batch))
		for i, e := range batch {
			req.Reports[i], seqs[i] = e.Report, e.Seq
		}
		cctx, cancel := context.WithTimeout(ctx, attackRPCTimeout)
		resp, err := client.ReportAttacks(cctx, req)
		cancel()
		if err != nil {
			return fmt.Errorf("report %d attacks: %w", len(batch), err)
		}
		if err := u.cfg.Store.AckAttacks(seqs); err != nil {
			return err
		}
		u.attForwarded.Add(uint64(resp.GetAccepted()))
		u.attLeaderDups.Add(uint64(resp.GetDuplicates()))
		u.attLeaderRej.Add(uint64(resp.GetRejected()))
		if resp.GetRejected() > 0 {
			log.Warn().Uint32("rejected", resp.GetRejected()).Strs("errors", resp.GetErrors()).
				Msg("the leader rejected attack reports")
		}
		log.Debug().Int(logging.Count, len(batch)).Uint32("accepted", resp.GetAccepted()).Msg("attack reports forwarded")
	}
}
