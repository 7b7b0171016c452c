package coordinator

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/styx-inference/styx/pkg/columns"
	"github.com/styx-inference/styx/pkg/logging"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
	"github.com/styx-inference/styx/scheduler/internal/dispatch"
	"github.com/styx-inference/styx/scheduler/internal/feed"
	"github.com/styx-inference/styx/scheduler/internal/pool"
	"github.com/styx-inference/styx/scheduler/internal/state"
)

// Config configures one term of leadership.
type Config struct {
	SchedulerID string
	Term        int64
	// BatchSize is the most addresses in one batch; BatchInterval the
	// longest a partial batch waits for more.
	BatchSize     int
	BatchInterval time.Duration
	Pool          pool.Config
	// MaxFailures is how often a batch may fail before it is split.
	MaxFailures uint32
	// MaxSubmitBatch bounds one SightingBatch from a node.
	MaxSubmitBatch int
	// FeedSize is the number of events (verdicts and attack reports) the
	// feed ring keeps; the leader also remembers as many attack report keys
	// to drop re-sent reports.
	FeedSize int
	// OutQueue bounds the messages queued to one node; a node that falls
	// further behind is disconnected and re-sends what it misses.
	OutQueue int
	// Dialer opens the connection to a worker.
	Dialer Dialer
	// Now returns the time; time.Now when nil.
	Now func() time.Time
}

// Validate reports a configuration error.
func (c Config) Validate() error {
	switch {
	case c.SchedulerID == "":
		return errors.New("coordinator: empty scheduler id")
	case c.Term <= 0:
		return errors.New("coordinator: term must be positive")
	case c.BatchSize < 1:
		return errors.New("coordinator: batch size < 1")
	case c.BatchInterval <= 0:
		return errors.New("coordinator: batch interval <= 0")
	case c.MaxFailures < 1:
		return errors.New("coordinator: max failures < 1")
	case c.MaxSubmitBatch < 1:
		return errors.New("coordinator: max submit batch < 1")
	case c.OutQueue < 1:
		return errors.New("coordinator: out queue < 1")
	case c.Dialer == nil:
		return errors.New("coordinator: nil dialer")
	}
	return c.Pool.Validate()
}

// Counters are cumulative figures of this term beyond the pool's own.
type Counters struct {
	Batches         uint64 // batches sent to workers
	Results         uint64 // results accepted
	StaleResults    uint64 // results ignored (reassigned batch, old session or term)
	Refusals        uint64
	Reassigned      uint64 // batches requeued after a worker failure
	Splits          uint64
	Poisoned        uint64 // addresses answered with an error verdict
	Rejected        uint64 // sightings refused as invalid
	Verdicts        uint64 // outcomes of kind verdict delivered
	NodeOverflows   uint64 // node sessions ended because they fell behind
	LeaseLosses     uint64 // workers whose registration disappeared while not draining
	WorkersDrained  uint64 // workers whose registration disappeared after draining
	DrainRequests   uint64 // workers selected by Drain
	StreamFailures  uint64 // worker streams that broke
	OutcomesDropped uint64 // outcomes for nodes not connected (they re-send)
	Proxies         uint64 // verdicts from inference that name a proxy (the visualiser's proxies/h)

	AttackReports    uint64 // attack reports put on the feed
	AttackDuplicates uint64 // attack reports seen recently, not put on the feed again
	AttackRejected   uint64 // invalid attack reports
}

// Coordinator runs one term. See the package comment.
type Coordinator struct {
	cfg Config
	log zerolog.Logger
	now func() time.Time

	st   *state.Store
	feed *feed.Feed

	mu          sync.Mutex
	pool        *pool.Pool
	nextBatch   uint64
	nextSession uint64
	conns       map[string]*workerConn
	subs        map[string]*Submitter
	counters    Counters
	attacks     recentAttacks // keys of the attack reports recently fed
	rates       map[string]workerRate

	wake chan struct{}
	wg   sync.WaitGroup // worker connections
	ctx  context.Context
}

// New returns a coordinator for one term.
func New(cfg Config, log zerolog.Logger) (*Coordinator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p, err := pool.New(cfg.Pool)
	if err != nil {
		return nil, err
	}
	st, err := state.New()
	if err != nil {
		return nil, err
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	if cfg.FeedSize <= 0 {
		cfg.FeedSize = 1 << 16
	}
	return &Coordinator{
		cfg:   cfg,
		log:   logging.For(log, "coordinator").With().Int64(logging.Term, cfg.Term).Logger(),
		now:   now,
		st:    st,
		feed:  feed.New(cfg.Term, cfg.FeedSize),
		pool:  p,
		conns: make(map[string]*workerConn),
		subs:  make(map[string]*Submitter),
		rates: make(map[string]workerRate),
		wake:  make(chan struct{}, 1),
		// As many keys as the feed holds events: a re-sent report is
		// dropped at least while its first copy could still be read.
		attacks: recentAttacks{max: cfg.FeedSize},
	}, nil
}

// Term returns the fencing term.
func (c *Coordinator) Term() int64 { return c.cfg.Term }

// State returns the live state for read-only use (snapshots).
func (c *Coordinator) State() *state.Store { return c.st }

// Feed returns the verdict feed.
func (c *Coordinator) Feed() *feed.Feed { return c.feed }

// MaxSubmitBatch is the largest SightingBatch accepted.
func (c *Coordinator) MaxSubmitBatch() int { return c.cfg.MaxSubmitBatch }

// Stats returns the pool's figures and this term's counters.
func (c *Coordinator) Stats() (pool.Stats, Counters, string, time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var age time.Duration
	if t, ok := c.pool.OldestEnqueued(); ok {
		age = time.Duration(c.now().UnixNano() - t)
	}
	return c.pool.Stats(), c.counters, c.pool.Policy().String(), age
}

// SetPolicy changes the shedding policy live.
func (c *Coordinator) SetPolicy(p pool.Policy) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pool.SetPolicy(p)
}

func (c *Coordinator) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Run serves the term until ctx ends: it watches the fleet, dispatches
// batches and expires old sightings. On return every node session has been
// closed (nodes re-send to the next leader) and every worker stream is gone.
func (c *Coordinator) Run(ctx context.Context, cli *clientv3.Client) error {
	c.mu.Lock() // Attach reads ctx under mu: node streams can arrive before Run starts
	c.ctx = ctx
	c.mu.Unlock()
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	wg.Add(3)
	go func() {
		defer wg.Done()
		if err := c.watchWorkers(ctx, cli); err != nil && ctx.Err() == nil {
			select {
			case errc <- err:
			default:
			}
		}
	}()
	go func() { defer wg.Done(); c.dispatchLoop(ctx) }()
	go func() { defer wg.Done(); c.sweepLoop(ctx) }()
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	wg.Wait()
	c.mu.Lock()
	for _, wc := range c.conns {
		wc.cancel()
	}
	for _, s := range c.subs {
		s.close(errLeadershipEnded)
	}
	c.mu.Unlock()
	c.wg.Wait()
	return err
}

func (c *Coordinator) dispatchLoop(ctx context.Context) {
	t := time.NewTicker(c.cfg.BatchInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.wake:
		case <-t.C:
		}
		c.dispatch()
	}
}

func (c *Coordinator) sweepLoop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c.mu.Lock()
		now := c.now()
		c.deliverLocked(c.pool.Sweep(now.UnixNano()))
		c.sampleRatesLocked(now)
		c.mu.Unlock()
	}
}

// dispatch hands out batches while some worker has a credit.
func (c *Coordinator) dispatch() {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	for {
		var sent bool
		err := c.st.Update(func(t *state.Txn) error {
			var err error
			sent, err = c.dispatchOneTxn(t, now)
			return err
		})
		if err != nil {
			c.log.Error().Err(err).Msg("dispatch")
			return
		}
		if !sent {
			return
		}
	}
}

func (c *Coordinator) dispatchOneTxn(t *state.Txn, now time.Time) (bool, error) {
	ws, err := t.Workers()
	if err != nil {
		return false, err
	}
	cands := make([]dispatch.Candidate, 0, len(ws))
	idx := make([]*state.Worker, 0, len(ws))
	for _, w := range ws {
		if w.State != state.WorkerReady || c.conns[w.ID] == nil {
			continue
		}
		cands = append(cands, dispatch.Candidate{ID: w.ID, Capacity: w.Capacity, Credits: w.Credits, InFlight: w.InFlight, Done: w.BatchesDone})
		idx = append(idx, w)
	}
	i := dispatch.Pick(cands)
	if i < 0 {
		return false, nil
	}
	b, err := c.nextBatchTxn(t, now)
	if err != nil || b == nil {
		return false, err
	}
	w := *idx[i]
	wc := c.conns[w.ID]
	nb := *b
	nb.State, nb.WorkerID, nb.Session = state.BatchAssigned, w.ID, w.Session
	nb.Attempt++
	nb.AssignedAt = now
	msg := &styxv1.Batch{BatchId: nb.ID, Term: c.cfg.Term, Attempt: nb.Attempt, Addresses: make([]byte, 0, nb.Size*columns.AddrSize)}
	for _, e := range nb.Entries.([]*pool.Entry) {
		msg.Addresses = columns.AppendAddr(msg.Addresses, e.Addr)
	}
	w.Credits--
	w.InFlight++
	if err := t.UpsertBatchTxn(&nb); err != nil {
		return false, err
	}
	if err := t.UpsertWorkerTxn(&w); err != nil {
		return false, err
	}
	if !wc.enqueue(w.Session, msg) {
		// The connection cannot take it: the session is breaking. The
		// batch stays assigned to that session and is requeued when the
		// session's loss is handled.
		wc.cancelSession()
	}
	c.counters.Batches++
	return true, nil
}

// nextBatchTxn returns a queued (retried) batch, or forms a new one from the
// pool when a full batch is waiting or the oldest address waited a batch
// interval; nil when there is nothing to send.
func (c *Coordinator) nextBatchTxn(t *state.Txn, now time.Time) (*state.Batch, error) {
	nowN := now.UnixNano()
	for {
		q, err := t.FirstQueuedBatch()
		if err != nil {
			return nil, err
		}
		if q == nil {
			break
		}
		// Drop the entries that expired while the batch waited.
		es := q.Entries.([]*pool.Entry)
		live := make([]*pool.Entry, 0, len(es))
		for _, e := range es {
			if ds, expired := c.pool.ExpireInFlight(nowN, e); expired {
				c.deliverLocked(ds)
				continue
			}
			if c.pool.Live(e) {
				live = append(live, e)
			}
		}
		if len(live) == 0 {
			if err := t.DeleteBatchTxn(q.ID); err != nil {
				return nil, err
			}
			continue
		}
		nq := *q
		nq.Entries, nq.Size = live, len(live)
		return &nq, nil
	}
	if c.pool.Pending() == 0 {
		return nil, nil
	}
	if c.pool.Pending() < c.cfg.BatchSize {
		if t0, ok := c.pool.OldestEnqueued(); ok && nowN-t0 < int64(c.cfg.BatchInterval) {
			return nil, nil
		}
	}
	es, dead := c.pool.Take(nowN, c.cfg.BatchSize)
	c.deliverLocked(dead)
	if len(es) == 0 {
		return nil, nil
	}
	c.nextBatch++
	return &state.Batch{ID: c.nextBatch, State: state.BatchQueued, Size: len(es), Created: now, Entries: es}, nil
}

// onReport handles one message from a worker session.
func (c *Coordinator) onReport(workerID string, session uint64, r *styxv1.WorkReport) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	err := c.st.Update(func(t *state.Txn) error {
		w, err := t.Worker(workerID)
		if errors.Is(err, state.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if w.Session != session {
			if res := r.GetResult(); res != nil {
				c.counters.StaleResults++
				c.log.Debug().Str(logging.WorkerID, workerID).Uint64(logging.BatchID, res.BatchId).Msg("result from an old session ignored")
			}
			return nil
		}
		nw := *w
		nw.Credits = min(nw.Credits+int(r.Credit), 1<<16)
		switch m := r.Msg.(type) {
		case *styxv1.WorkReport_Ready:
			nw.ModelVersion = m.Ready.ModelVersion
			if m.Ready.Draining {
				nw.State = state.WorkerDraining
			}
		case *styxv1.WorkReport_Result:
			if err := c.resultTxn(t, &nw, m.Result, now); err != nil {
				return err
			}
		case *styxv1.WorkReport_Refusal:
			c.counters.Refusals++
			b, err := t.Batch(m.Refusal.BatchId)
			if err == nil && b.State == state.BatchAssigned && b.WorkerID == workerID && b.Session == session && b.Attempt == m.Refusal.Attempt {
				nb := *b
				nb.State, nb.WorkerID, nb.Session = state.BatchQueued, "", 0
				if err := t.UpsertBatchTxn(&nb); err != nil {
					return err
				}
				nw.InFlight--
			}
			c.log.Debug().Str(logging.WorkerID, workerID).Uint64(logging.BatchID, m.Refusal.BatchId).Str(logging.Reason, m.Refusal.Reason).Msg("batch refused")
		}
		return t.UpsertWorkerTxn(&nw)
	})
	if err != nil {
		c.log.Error().Err(err).Msg("worker report")
	}
	c.poke()
}

func (c *Coordinator) resultTxn(t *state.Txn, w *state.Worker, res *styxv1.Result, now time.Time) error {
	b, err := t.Batch(res.BatchId)
	if errors.Is(err, state.ErrNotFound) || (err == nil && (b.State != state.BatchAssigned || b.WorkerID != w.ID || b.Session != w.Session || b.Attempt != res.Attempt)) || res.Term != c.cfg.Term {
		c.counters.StaleResults++
		c.log.Debug().Str(logging.WorkerID, w.ID).Uint64(logging.BatchID, res.BatchId).Msg("stale result ignored")
		return nil
	}
	if err != nil {
		return err
	}
	es := b.Entries.([]*pool.Entry)
	vs, err := columns.DecodeVerdicts(res.GetVerdicts(), len(es))
	if err != nil {
		c.log.Warn().Err(err).Str(logging.WorkerID, w.ID).Uint64(logging.BatchID, b.ID).Msg("malformed result, batch failed")
		w.InFlight--
		return c.failBatchTxn(t, b, now)
	}
	nowN := now.UnixNano()
	ds := make([]pool.Delivery, 0, len(es))
	feedVs := make([]*styxv1.Verdict, 0, len(es))
	addrs := make([]byte, 0, len(es)*columns.AddrSize) // one allocation for every verdict's address
	for i, e := range es {
		if !c.pool.Live(e) {
			continue
		}
		v := &vs[i]
		// The verdict speaks for the batch's address (the feed carries it).
		k := len(addrs)
		addrs = appendAddrBytes(addrs, e.Addr)
		v.Address = addrs[k:len(addrs):len(addrs)]
		ds = c.pool.AppendComplete(ds, nowN, e, v, true)
		feedVs = append(feedVs, v)
		if v.Proxy {
			c.counters.Proxies++
		}
	}
	c.feed.Append(feedVs...)
	c.deliverLocked(ds)
	c.counters.Results++
	w.InFlight--
	w.BatchesDone++
	w.AddrsDone += uint64(len(es))
	w.LastResult = now
	return t.DeleteBatchTxn(b.ID)
}

// failBatchTxn handles a batch whose worker failed while holding it.
func (c *Coordinator) failBatchTxn(t *state.Txn, b *state.Batch, now time.Time) error {
	nb := *b
	nb.Failures++
	nb.State, nb.WorkerID, nb.Session = state.BatchQueued, "", 0
	es := nb.Entries.([]*pool.Entry)
	switch dispatch.OnFailure(len(es), nb.Failures, c.cfg.MaxFailures) {
	case dispatch.Requeue:
		c.counters.Reassigned++
		return t.UpsertBatchTxn(&nb)
	case dispatch.Split:
		c.counters.Splits++
		if err := t.DeleteBatchTxn(b.ID); err != nil {
			return err
		}
		h := dispatch.Halves(len(es))
		for _, part := range [][]*pool.Entry{es[:h:h], es[h:]} {
			c.nextBatch++
			p := nb
			p.ID, p.Entries, p.Size, p.Failures, p.Created = c.nextBatch, part, len(part), c.cfg.MaxFailures-1, now
			if err := t.UpsertBatchTxn(&p); err != nil {
				return err
			}
		}
		c.log.Warn().Uint64(logging.BatchID, b.ID).Int(logging.Count, len(es)).Msg("batch failed repeatedly, split to isolate a poison address")
		return nil
	default: // GiveUp
		c.counters.Poisoned++
		e := es[0]
		v := &styxv1.Verdict{Address: e.Addr.AsSlice(), Error: fmt.Sprintf("examination failed on %d workers: poison address", nb.Failures)}
		c.deliverLocked(c.pool.Fail(now.UnixNano(), e, v))
		c.log.Warn().Str(logging.Addr, e.Addr.String()).Msg("poison address answered with an error verdict")
		return t.DeleteBatchTxn(b.ID)
	}
}

// sessionLost requeues every batch a worker session held.
func (c *Coordinator) sessionLost(workerID string, session uint64, remove bool, why string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	err := c.st.Update(func(t *state.Txn) error {
		bs, err := t.BatchesOfWorker(workerID)
		if err != nil {
			return err
		}
		n := 0
		for _, b := range bs {
			if b.State != state.BatchAssigned || (session != 0 && b.Session != session) {
				continue
			}
			n++
			if err := c.failBatchTxn(t, b, now); err != nil {
				return err
			}
		}
		w, err := t.Worker(workerID)
		if errors.Is(err, state.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if n > 0 {
			c.log.Warn().Str(logging.WorkerID, workerID).Int(logging.Count, n).Str(logging.Reason, why).Msg("worker lost its batches; requeued")
		}
		if remove {
			return t.DeleteWorkerTxn(workerID)
		}
		if session != 0 && w.Session != session {
			return nil
		}
		nw := *w
		nw.State, nw.Session, nw.Credits, nw.InFlight = state.WorkerDown, 0, 0, 0
		nw.Failures++
		return t.UpsertWorkerTxn(&nw)
	})
	if err != nil {
		c.log.Error().Err(err).Msg("session lost")
	}
	c.poke()
}

// appendAddrBytes appends a as 4 bytes (IPv4) or 16 (IPv6).
func appendAddrBytes(dst []byte, a netip.Addr) []byte {
	if a.Is4() {
		b := a.As4()
		return append(dst, b[:]...)
	}
	b := a.As16()
	return append(dst, b[:]...)
}
