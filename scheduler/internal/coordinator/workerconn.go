package coordinator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/styx-inference/styx/pkg/etcdwatch"
	"github.com/styx-inference/styx/pkg/keyspace"
	"github.com/styx-inference/styx/pkg/logging"
	"github.com/styx-inference/styx/pkg/retry"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

// Dialer opens a client connection to the worker registered as id at its
// gRPC address. Over mutual TLS the connection succeeds only when the
// worker proves that id with its certificate.
type Dialer func(id, addr string) (*grpc.ClientConn, error)

// workerConn is the leader's connection to one worker. It owns a goroutine
// that keeps a Work stream open (reconnecting while the worker stays
// registered) and a sender goroutine per stream session.
type workerConn struct {
	id     string
	cancel context.CancelFunc

	mu      sync.Mutex
	reg     keyspace.WorkerRegistration // updated when the worker rewrites its key
	session uint64
	// out carries the session's batches to its sender: room for the
	// worker's capacity plus its first grant, and a margin; the ledger
	// never assigns more than the worker granted, and a full queue ends
	// the session (see applyLocked).
	out      chan *styxv1.Batch
	sessStop context.CancelFunc
	drain    *styxv1.Drain // set once a drain was requested
	kick     chan struct{} // wakes the session's sender to send drain
}

// registration returns the worker's latest registration.
func (wc *workerConn) registration() keyspace.WorkerRegistration {
	wc.mu.Lock()
	defer wc.mu.Unlock()
	return wc.reg
}

// enqueue hands a batch to the current session without blocking.
func (wc *workerConn) enqueue(session uint64, b *styxv1.Batch) bool {
	wc.mu.Lock()
	defer wc.mu.Unlock()
	if wc.session != session || wc.out == nil {
		return false
	}
	select {
	case wc.out <- b:
		return true
	default:
		return false
	}
}

func (wc *workerConn) cancelSession() {
	wc.mu.Lock()
	defer wc.mu.Unlock()
	if wc.sessStop != nil {
		wc.sessStop()
	}
}

// watchWorkers lists /styx/workers/ and follows changes (pkg/etcdwatch:
// resumes from the last seen revision, lists again after a compaction);
// a listing drops the workers it no longer holds. It returns nil when ctx
// ends.
func (c *Coordinator) watchWorkers(ctx context.Context, cli *clientv3.Client) error {
	workerID := func(kv *mvccpb.KeyValue) (string, bool) {
		return keyspace.IDFromKey(keyspace.WorkersPrefix, string(kv.Key))
	}
	return etcdwatch.Prefix(ctx, cli, keyspace.WorkersPrefix, etcdwatch.Handler{
		Reset: func(kvs []*mvccpb.KeyValue, _ int64) {
			seen := map[string]bool{}
			for _, kv := range kvs {
				if id, ok := workerID(kv); ok {
					seen[id] = true
					c.workerPut(ctx, id, kv.Value)
				}
			}
			c.mu.Lock()
			var gone []string
			for id := range c.conns {
				if !seen[id] {
					gone = append(gone, id)
				}
			}
			c.mu.Unlock()
			for _, id := range gone {
				c.workerDeleted(id)
			}
		},
		Put: func(kv *mvccpb.KeyValue) {
			if id, ok := workerID(kv); ok {
				c.workerPut(ctx, id, kv.Value)
			}
		},
		Delete: func(kv *mvccpb.KeyValue) {
			if id, ok := workerID(kv); ok {
				c.workerDeleted(id)
			}
		},
	}, c.log)
}

func (c *Coordinator) workerPut(ctx context.Context, id string, val []byte) {
	var reg keyspace.WorkerRegistration
	if err := keyspace.Decode(val, &reg); err != nil {
		c.log.Warn().Err(err).Str(logging.WorkerID, id).Msg("bad worker registration ignored")
		return
	}
	reg.ID = id // the key names the worker
	c.mu.Lock()
	defer c.mu.Unlock()
	wc := c.conns[id]
	restart := c.ledger.Register(c.now(), reg)
	if wc != nil && !restart {
		wc.mu.Lock()
		wc.reg = reg
		wc.mu.Unlock()
		return
	}
	if wc != nil { // moved to a new address: start over
		wc.cancel()
	}
	wctx, cancel := context.WithCancel(ctx)
	wc = &workerConn{id: id, reg: reg, cancel: cancel}
	c.conns[id] = wc
	c.log.Info().Str(logging.WorkerID, id).Str(logging.Addr, reg.Addr).Int("capacity", reg.Capacity).Msg("worker joined")
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.runWorkerConn(wctx, wc)
	}()
}

// workerDeleted handles a registration that left etcd: the lease expired
// (or was revoked). Its batches go back to the pool with the attempt
// counted.
func (c *Coordinator) workerDeleted(id string) {
	c.mu.Lock()
	wc := c.conns[id]
	delete(c.conns, id)
	// A worker that was draining left on purpose: not a lease loss.
	fx, known, drained := c.ledger.Deregister(c.now(), id, wc != nil && wc.registration().Draining)
	c.applyLocked(fx)
	c.mu.Unlock()
	if wc != nil {
		wc.cancel()
	}
	if !known {
		return
	}
	if drained {
		c.log.Info().Str(logging.WorkerID, id).Msg("worker left after draining")
	} else {
		c.log.Info().Str(logging.WorkerID, id).Msg("worker left (lease gone)")
	}
	c.poke()
}

func (c *Coordinator) runWorkerConn(ctx context.Context, wc *workerConn) {
	log := c.log.With().Str(logging.WorkerID, wc.id).Logger()
	conn, err := c.cfg.Dialer(wc.id, wc.registration().Addr)
	if err != nil {
		log.Error().Err(err).Msg("dial worker")
		return
	}
	defer conn.Close()
	client := styxv1.NewWorkerServiceClient(conn)
	bo := retry.NewBackoff(100*time.Millisecond, 2*time.Second)
	for ctx.Err() == nil {
		c.mu.Lock()
		c.nextSession++
		session := c.nextSession
		c.mu.Unlock()
		start := time.Now()
		err := c.workSession(ctx, client, wc, session)
		c.mu.Lock()
		c.counters.StreamFailures++
		c.mu.Unlock()
		c.sessionLost(wc.id, session, "stream ended")
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > 5*time.Second {
			bo.Reset()
		}
		d := bo.NextBackOff()
		if authFailure(err) {
			// A registration this worker's certificate does not prove (a
			// rogue entry, a foreign CA, an expired certificate): it gets
			// no work. Logged at every retry, which backs off.
			c.mu.Lock()
			c.counters.UnprovenWorkers++
			c.mu.Unlock()
			log.Error().Err(err).Dur("retry_in", d).Msg("worker refused: its TLS identity does not prove its registration; it gets no work")
		} else {
			log.Warn().Err(err).Dur("retry_in", d).Msg("worker stream ended")
		}
		if !retry.Sleep(ctx, d) {
			return
		}
	}
}

func (c *Coordinator) workSession(ctx context.Context, client styxv1.WorkerServiceClient, wc *workerConn, session uint64) error {
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	stream, err := client.Work(sctx)
	if err != nil {
		return fmt.Errorf("open work stream: %w", err)
	}
	if err := stream.Send(&styxv1.WorkAssign{Msg: &styxv1.WorkAssign_Open{Open: &styxv1.Open{SchedulerId: c.cfg.SchedulerID, Term: c.cfg.Term}}}); err != nil {
		return fmt.Errorf("send open: %w", err)
	}
	first, err := stream.Recv()
	if err != nil {
		return fmt.Errorf("await ready: %w", err)
	}
	ready := first.GetReady()
	if ready == nil {
		return errors.New("worker did not answer open with ready")
	}
	out := make(chan *styxv1.Batch, wc.registration().Capacity+int(first.Credit)+16)
	kick := make(chan struct{}, 1)
	wc.mu.Lock()
	wc.session, wc.out, wc.sessStop, wc.kick = session, out, stop, kick
	draining := wc.drain != nil
	if draining {
		kick <- struct{}{}
	}
	wc.mu.Unlock()
	defer func() {
		wc.mu.Lock()
		if wc.session == session {
			wc.out, wc.sessStop, wc.kick = nil, nil, nil
		}
		wc.mu.Unlock()
	}()
	c.mu.Lock()
	c.ledger.SessionOpened(wc.id, session, ready.Draining || wc.registration().Draining || draining)
	c.mu.Unlock()
	c.onReport(wc.id, session, first)

	sendErr := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-sctx.Done():
				return
			case b := <-out:
				if err := stream.Send(&styxv1.WorkAssign{Msg: &styxv1.WorkAssign_Batch{Batch: b}}); err != nil {
					sendErr <- fmt.Errorf("send batch: %w", err)
					stop()
					return
				}
			case <-kick:
				if err := stream.Send(&styxv1.WorkAssign{Msg: &styxv1.WorkAssign_Drain{Drain: wc.drainRequest()}}); err != nil {
					sendErr <- fmt.Errorf("send drain: %w", err)
					stop()
					return
				}
			}
		}
	}()
	defer wg.Wait()
	defer stop()
	for {
		r, err := stream.Recv()
		if err != nil {
			select {
			case e := <-sendErr:
				return e
			default:
			}
			if errors.Is(err, io.EOF) {
				return errors.New("worker closed the stream")
			}
			return fmt.Errorf("receive: %w", err)
		}
		c.onReport(wc.id, session, r)
	}
}

// authFailure reports a stream that failed in the TLS handshake: the peer
// did not prove the identity the scheduler expects of it.
func authFailure(err error) bool {
	return err != nil && status.Code(err) == codes.Unavailable && strings.Contains(err.Error(), "authentication handshake failed")
}
