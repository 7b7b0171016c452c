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

	"github.com/styx-inference/styx/pkg/attacks"
	"github.com/styx-inference/styx/pkg/columns"
	"github.com/styx-inference/styx/pkg/logging"
	"github.com/styx-inference/styx/pkg/recent"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
	"github.com/styx-inference/styx/scheduler/internal/ledger"
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
	// Log receives the verdicts and the attack reports of this term, to
	// publish to the verdict log (a verdictlog.Publisher). Its methods
	// must not block: they are called with the coordinator's mutex held.
	// A result's outcomes go to the nodes once the log holds its verdicts.
	// nil: no log, and outcomes go at once.
	Log Log
	// AttackKeys is how many recent attack report keys the leader
	// remembers, to drop reports a node sends again (default 65,536).
	AttackKeys int
	// OutQueue bounds the messages queued to one node; a node that falls
	// further behind is disconnected and re-sends what it misses.
	OutQueue int
	// Dialer opens the connection to a worker.
	Dialer Dialer
	// MaxClockSkew is how far ahead of this scheduler's clock a verdict's
	// inference time may be; a result with a later one is refused.
	MaxClockSkew time.Duration
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
	case c.MaxClockSkew < 0:
		return errors.New("coordinator: max clock skew < 0")
	}
	return c.Pool.Validate()
}

// Log is where a term's verdicts and attack reports go: the verdict log.
type Log interface {
	// Verdicts queues verdicts and calls done, exactly once and from
	// another goroutine, when the log holds them (or they were dropped).
	Verdicts(term int64, vs []*styxv1.Verdict, done func())
	Attacks(term int64, rs []*styxv1.AttackReport)
}

// Counters are cumulative figures of this term beyond the pool's own: the
// ledger's, and the shell's own I/O figures.
type Counters struct {
	ledger.Counters

	NodeOverflows   uint64 // node sessions ended because they fell behind
	StreamFailures  uint64 // worker streams that broke
	OutcomesDropped uint64 // outcomes for nodes not connected (they re-send)

	AttackReports    uint64 // attack reports published to the log
	AttackDuplicates uint64 // attack reports seen recently, not published again
	AttackRejected   uint64 // invalid attack reports

	FutureVerdicts  uint64 // results refused for a verdict dated beyond MaxClockSkew
	UnprovenWorkers uint64 // worker connections refused: the TLS identity did not prove the registration
}

// Coordinator runs one term. See the package comment.
type Coordinator struct {
	cfg Config
	log zerolog.Logger
	now func() time.Time

	mu          sync.Mutex
	ledger      *ledger.Ledger
	nextSession uint64
	conns       map[string]*workerConn
	subs        map[string]*Submitter
	counters    Counters // the shell's; the ledger keeps its own
	// attacks holds the keys of the last AttackKeys attack reports
	// published, so that a batch a node sends again (its answer was lost)
	// is not published twice.
	attacks *recent.Set[attacks.Key, struct{}]
	rates   map[string]workerRate

	wake chan struct{}
	wg   sync.WaitGroup // worker connections
	ctx  context.Context
}

// New returns a coordinator for one term.
func New(cfg Config, log zerolog.Logger) (*Coordinator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log = logging.For(log, "coordinator").With().Int64(logging.Term, cfg.Term).Logger()
	l, err := ledger.New(ledger.Config{
		Term: cfg.Term, BatchSize: cfg.BatchSize, BatchInterval: cfg.BatchInterval,
		MaxFailures: cfg.MaxFailures, Pool: cfg.Pool,
	}, log)
	if err != nil {
		return nil, fmt.Errorf("coordinator: %w", err)
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	if cfg.AttackKeys <= 0 {
		cfg.AttackKeys = 1 << 16
	}
	// A report sent again is dropped while its key is remembered; one that
	// slips through is harmless: every follower applies a report once.
	seen, err := recent.New[attacks.Key, struct{}](recent.Limits{MaxLen: cfg.AttackKeys})
	if err != nil {
		return nil, fmt.Errorf("coordinator: %w", err)
	}
	return &Coordinator{
		cfg:     cfg,
		log:     log,
		now:     now,
		ledger:  l,
		conns:   make(map[string]*workerConn),
		subs:    make(map[string]*Submitter),
		rates:   make(map[string]workerRate),
		wake:    make(chan struct{}, 1),
		attacks: seen,
	}, nil
}

// Term returns the fencing term.
func (c *Coordinator) Term() int64 { return c.cfg.Term }

// State returns the live state for read-only use (snapshots).
func (c *Coordinator) State() *state.Store { return c.ledger.State() }

// MaxSubmitBatch is the largest SightingBatch accepted.
func (c *Coordinator) MaxSubmitBatch() int { return c.cfg.MaxSubmitBatch }

// Stats returns the pool's figures and this term's counters.
func (c *Coordinator) Stats() (pool.Stats, Counters, string, time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ps, policy, age := c.ledger.PoolStats(c.now())
	ctr := c.counters
	ctr.Counters = c.ledger.Counters()
	return ps, ctr, policy.String(), age
}

// SetPolicy changes the shedding policy live.
func (c *Coordinator) SetPolicy(p pool.Policy) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ledger.SetPolicy(p)
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
		c.applyLocked(c.ledger.Sweep(now))
		c.sampleRatesLocked(now)
		c.mu.Unlock()
	}
}

// dispatch hands out batches while some worker has a credit.
func (c *Coordinator) dispatch() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.applyLocked(c.ledger.Assign(c.now()))
}

// applyLocked carries out the ledger's effects (c.mu held): batches to
// worker sessions, verdicts to the log, outcomes to the nodes, drains to
// worker connections. Nothing here blocks: every send is a non-blocking
// write to a bounded queue.
func (c *Coordinator) applyLocked(fx ledger.Effects) {
	for _, s := range fx.Sends {
		msg := &styxv1.Batch{BatchId: s.Batch, Term: s.Term, Attempt: s.Attempt, Addresses: make([]byte, 0, len(s.Addrs)*columns.AddrSize)}
		for _, a := range s.Addrs {
			msg.Addresses = columns.AppendAddr(msg.Addresses, a)
		}
		wc := c.conns[s.Worker]
		if wc != nil && !wc.enqueue(s.Session, msg) {
			// The connection cannot take it: the session is breaking. The
			// batch stays assigned to that session and fails when the
			// session's loss is handled.
			wc.cancelSession()
		}
	}
	if len(fx.Publish) > 0 && c.cfg.Log != nil {
		// The outcomes wait until the log holds the verdicts: a verdict a
		// node holds is then in the log too, even if this leader dies
		// now (the node re-sends what it has no outcome for).
		outs, rej := fx.Outcomes, fx.Rejected
		c.cfg.Log.Verdicts(c.cfg.Term, logVerdicts(fx.Publish), func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.deliverLocked(outs, rej)
		})
		return
	}
	c.deliverLocked(fx.Outcomes, fx.Rejected)
}

// logVerdicts converts verdicts for the log, which carries each one's
// address: one allocation for the rows and one for the addresses, however
// many verdicts.
func logVerdicts(ps []ledger.Published) []*styxv1.Verdict {
	rows := make([]styxv1.Verdict, len(ps))
	out := make([]*styxv1.Verdict, len(ps))
	addrs := make([]byte, 0, len(ps)*columns.AddrSize)
	for i, p := range ps {
		columns.FillVerdictProto(&rows[i], p.Verdict)
		k := len(addrs)
		addrs = appendAddrBytes(addrs, p.Addr.Unmap())
		rows[i].Address = addrs[k:len(addrs):len(addrs)]
		out[i] = &rows[i]
	}
	return out
}

// appendAddrBytes appends a as 4 bytes (IPv4) or 16 (IPv6), as a
// verdict's address field holds it.
func appendAddrBytes(dst []byte, a netip.Addr) []byte {
	if a.Is4() {
		b := a.As4()
		return append(dst, b[:]...)
	}
	b := a.As16()
	return append(dst, b[:]...)
}

// onReport handles one message from a worker session.
func (c *Coordinator) onReport(workerID string, session uint64, r *styxv1.WorkReport) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch m := r.Msg.(type) {
	case *styxv1.WorkReport_Ready:
		c.ledger.OnReady(workerID, session, r.Credit, m.Ready.ModelVersion, m.Ready.Draining)
	case *styxv1.WorkReport_Result:
		now := c.now()
		c.applyLocked(c.ledger.OnResult(now, workerID, session, r.Credit, c.decodeResult(m.Result, now, workerID)))
	case *styxv1.WorkReport_Refusal:
		c.ledger.OnRefusal(workerID, session, r.Credit, m.Refusal.BatchId, m.Refusal.Attempt, m.Refusal.Reason)
	default:
		c.ledger.OnCredit(workerID, session, r.Credit)
	}
	c.poke()
}

// decodeResult converts a worker's result at the edge. A result that
// claims more verdicts than any batch holds is malformed before anything
// is allocated for it. A result holding a verdict inferred later than now
// plus MaxClockSkew is refused whole (its batch fails and goes to another
// worker) and counted: a forged future time would otherwise win over
// every later, honest examination of the address.
func (c *Coordinator) decodeResult(res *styxv1.Result, now time.Time, workerID string) ledger.Result {
	r := ledger.Result{Batch: res.GetBatchId(), Term: res.GetTerm(), Attempt: res.GetAttempt()}
	n := int(res.GetVerdicts().GetCount())
	if n > c.cfg.BatchSize {
		r.Malformed = fmt.Errorf("%d verdicts, more than a batch holds (%d)", n, c.cfg.BatchSize)
		return r
	}
	r.Verdicts, r.Malformed = columns.DomainVerdicts(res.GetVerdicts(), n)
	if r.Malformed != nil {
		return r
	}
	limit := now.Add(c.cfg.MaxClockSkew)
	for i := range r.Verdicts {
		if t := r.Verdicts[i].Inferred; t.After(limit) {
			c.counters.FutureVerdicts++
			c.log.Error().Str(logging.WorkerID, workerID).Uint64(logging.BatchID, r.Batch).Time("inferred", t).
				Dur("ahead", t.Sub(now)).Msg("result refused: a verdict is dated in the future beyond the allowed clock skew")
			r.Verdicts = nil
			r.Malformed = fmt.Errorf("verdict %d inferred at %s, %s ahead of this scheduler's clock (allowed skew %s)",
				i, t.UTC().Format(time.RFC3339Nano), t.Sub(now).Round(time.Millisecond), c.cfg.MaxClockSkew)
			return r
		}
	}
	return r
}

// sessionLost fails every batch a worker session held.
func (c *Coordinator) sessionLost(workerID string, session uint64, why string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.applyLocked(c.ledger.OnSessionLost(c.now(), workerID, session, why))
	c.poke()
}
