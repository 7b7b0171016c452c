package ledger

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/rs/zerolog"

	"github.com/styx-inference/styx/pkg/keyspace"
	"github.com/styx-inference/styx/pkg/logging"
	"github.com/styx-inference/styx/pkg/verdict"
	"github.com/styx-inference/styx/scheduler/internal/dispatch"
	"github.com/styx-inference/styx/scheduler/internal/pool"
	"github.com/styx-inference/styx/scheduler/internal/state"
)

// Config configures the rules of one term.
type Config struct {
	// Term is the leader's fencing term: every batch carries it, and a
	// result of another term is stale.
	Term int64
	// BatchSize is the most addresses in one batch; BatchInterval the
	// longest a partial batch waits for more.
	BatchSize     int
	BatchInterval time.Duration
	// MaxFailures is how often a batch may fail before it is split.
	MaxFailures uint32
	Pool        pool.Config
}

// Validate reports a configuration error.
//
// Plain ifs rather than a switch: mutation testing sees conditions inside
// if statements only.
func (c Config) Validate() error {
	if c.Term <= 0 {
		return errors.New("ledger: term must be positive")
	}
	if c.BatchSize < 1 {
		return errors.New("ledger: batch size < 1")
	}
	if c.BatchInterval <= 0 {
		return errors.New("ledger: batch interval <= 0")
	}
	if c.MaxFailures < 1 {
		return errors.New("ledger: max failures < 1")
	}
	return c.Pool.Validate()
}

// Sighting is one address a node asks about, under the node's id for it.
type Sighting struct {
	ID   uint64
	Addr netip.Addr
	Seen int64 // Unix nanoseconds; 0 or in the future: now
}

// Outcome is one outcome for one sighting: a verdict, or an expiry or
// shed notice with its reason.
type Outcome = pool.Delivery[*verdict.Verdict]

// Rejection is a sighting refused as invalid, with the reason.
type Rejection struct {
	Node   string
	ID     uint64
	Reason string
}

// Send is a batch to hand to one worker session.
type Send struct {
	Worker  string
	Session uint64
	Batch   uint64
	Term    int64
	Attempt uint32
	Addrs   []netip.Addr
}

// Published is a verdict from inference, for the verdict log.
type Published struct {
	Addr    netip.Addr
	Verdict *verdict.Verdict
}

// Effects is what an event asks the shell to do, each list in order.
type Effects struct {
	Sends    []Send
	Outcomes []Outcome
	Rejected []Rejection
	Publish  []Published
	// Drains names the workers to send a Drain on their stream (now, or
	// once a stream is open).
	Drains []string
}

// Result is a worker's answer for one batch, as the shell decoded it.
type Result struct {
	Batch   uint64
	Term    int64
	Attempt uint32
	// Verdicts answer the batch's addresses in order; Malformed, when not
	// nil, says why the answer could not be decoded (the batch fails).
	Verdicts  []verdict.Verdict
	Malformed error
}

// Counters are cumulative figures of this term beyond the pool's own.
type Counters struct {
	Batches        uint64 // batches sent to workers
	Results        uint64 // results accepted
	StaleResults   uint64 // results ignored (reassigned batch, old session, attempt or term)
	Malformed      uint64 // results that could not be decoded (their batch failed)
	Refusals       uint64
	Reassigned     uint64 // batches requeued after a worker failure
	Splits         uint64
	Poisoned       uint64 // addresses answered with an error verdict
	Rejected       uint64 // sightings refused as invalid
	Verdicts       uint64 // outcomes of kind verdict
	LeaseLosses    uint64 // workers whose registration disappeared while not draining
	WorkersDrained uint64 // workers whose registration disappeared after draining
	DrainRequests  uint64 // workers selected by Drain
	Proxies        uint64 // verdicts from inference that name a proxy
}

// maxCredits caps the credits a worker may hold, whatever it grants.
const maxCredits = 1 << 16

// Ledger is the rules of one term. See the package comment.
type Ledger struct {
	cfg       Config
	log       zerolog.Logger
	st        *state.Store
	pool      *pool.Pool[*verdict.Verdict]
	nextBatch uint64
	counters  Counters
}

// New returns the ledger of one term, with an empty pool and state.
func New(cfg Config, log zerolog.Logger) (*Ledger, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p, err := pool.NewVerdicts(cfg.Pool)
	if err != nil {
		return nil, err
	}
	st, err := state.New()
	if err != nil {
		return nil, err
	}
	return &Ledger{cfg: cfg, log: log, st: st, pool: p}, nil
}

// State returns the live state, for snapshots.
func (l *Ledger) State() *state.Store { return l.st }

// Counters returns this term's counters.
func (l *Ledger) Counters() Counters { return l.counters }

// PoolStats returns the pool's figures, its policy, and how long the
// oldest pending address has waited at now.
func (l *Ledger) PoolStats(now time.Time) (pool.Stats, pool.Policy, time.Duration) {
	var age time.Duration
	if t, ok := l.pool.OldestEnqueued(); ok {
		age = time.Duration(now.UnixNano() - t)
	}
	return l.pool.Stats(), l.pool.Policy(), age
}

// SetPolicy changes the shedding policy.
func (l *Ledger) SetPolicy(p pool.Policy) error { return l.pool.SetPolicy(p) }

// FullBatch reports whether a full batch is waiting (worth assigning now
// rather than at the next tick).
func (l *Ledger) FullBatch() bool { return l.pool.Pending() >= l.cfg.BatchSize }

// update runs fn in one state transaction. The ledger's own transactions
// fail only on a bug (a row that breaks the schema): it is logged, and the
// transaction's state changes are dropped.
func (l *Ledger) update(what string, fn func(*state.Txn) error) {
	if err := l.st.Update(fn); err != nil {
		l.log.Error().Err(err).Msg(what)
	}
}

// outcomes appends ds to fx, counting verdicts.
func (l *Ledger) outcomes(fx *Effects, ds []Outcome) {
	for _, d := range ds {
		l.outcome(fx, d)
	}
}

// outcome appends d to fx, counting a verdict.
func (l *Ledger) outcome(fx *Effects, d Outcome) {
	if d.Kind == pool.KindVerdict {
		l.counters.Verdicts++
	}
	fx.Outcomes = append(fx.Outcomes, d)
}

// Attach records a node's new session; the row keeps its totals.
func (l *Ledger) Attach(now time.Time, node string, session uint64) {
	l.update("attach node", func(t *state.Txn) error {
		row := &state.Submitter{NodeID: node, Session: session, Connected: true, Since: now}
		if old, err := t.Submitter(node); err == nil {
			row.Received, row.Outcomes = old.Received, old.Outcomes
		}
		return t.UpsertSubmitterTxn(row)
	})
}

// Detach records that a node's session ended (unless a newer one took
// its place).
func (l *Ledger) Detach(node string, session uint64) {
	l.updateSession("detach node", node, session, func(row *state.Submitter) { row.Connected = false })
}

// NodeLog records a node's report of its verdict log position, from its
// current session only; it changes no rule.
func (l *Ledger) NodeLog(node string, session uint64, st state.NodeLog) {
	l.updateSession("node log status", node, session, func(row *state.Submitter) { row.Log = st })
}

// updateSession changes a node's row while session is its current one;
// a row that is gone or belongs to a newer session is left as it is.
func (l *Ledger) updateSession(what, node string, session uint64, change func(*state.Submitter)) {
	l.update(what, func(t *state.Txn) error {
		old, err := t.Submitter(node)
		if errors.Is(err, state.ErrNotFound) || (err == nil && old.Session != session) {
			return nil
		}
		if err != nil {
			return err
		}
		row := *old
		change(&row)
		return t.UpsertSubmitterTxn(&row)
	})
}

// received adds n to a node's count of sightings received.
func (l *Ledger) received(node string, n int) {
	l.update("count sightings", func(t *state.Txn) error {
		old, err := t.Submitter(node)
		if errors.Is(err, state.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		row := *old
		row.Received += uint64(n)
		return t.UpsertSubmitterTxn(&row)
	})
}

// Offer takes a node's sightings. Outcomes known at once (a recent
// verdict, shedding, expiry on arrival, an invalid address) come back in
// the effects; the rest follow as workers answer. Each sighting ends in
// exactly one outcome; a sighting offered again (same node and id) while
// it waits is not counted twice.
func (l *Ledger) Offer(now time.Time, node string, ss []Sighting) Effects {
	var fx Effects
	nowN := now.UnixNano()
	for _, s := range ss {
		if !s.Addr.IsValid() || s.Addr.IsUnspecified() {
			l.reject(&fx, node, s.ID, "unspecified address")
			continue
		}
		d, done, evicted := l.pool.Offer(nowN, pool.Waiter{Node: node, ID: s.ID}, s.Addr.Unmap().WithZone(""), s.Seen)
		if done {
			l.outcome(&fx, d)
		}
		l.outcomes(&fx, evicted)
	}
	l.received(node, len(ss))
	return fx
}

// Reject refuses sightings that could not be decoded: each id gets a
// rejection with reason.
func (l *Ledger) Reject(node string, ids []uint64, reason string) Effects {
	var fx Effects
	for _, id := range ids {
		l.reject(&fx, node, id, reason)
	}
	l.received(node, len(ids))
	return fx
}

func (l *Ledger) reject(fx *Effects, node string, id uint64, reason string) {
	l.counters.Rejected++
	fx.Rejected = append(fx.Rejected, Rejection{Node: node, ID: id, Reason: reason})
}

// Register takes a worker's registration (a put under /styx/workers/). A
// new worker, or one that moved to another address, starts over as
// connecting: restart says the shell must (re)open its connection. A
// known worker at the same address gets its row's details updated.
func (l *Ledger) Register(now time.Time, reg keyspace.WorkerRegistration) (restart bool) {
	reg.Capacity = max(reg.Capacity, 1)
	l.update("register worker", func(t *state.Txn) error {
		w, err := t.Worker(reg.ID)
		if err != nil && !errors.Is(err, state.ErrNotFound) {
			return err
		}
		if err == nil && w.Addr == reg.Addr {
			nw := *w
			nw.Capacity, nw.ModelVersion, nw.Host, nw.NUMANode, nw.CPUs = reg.Capacity, reg.ModelVersion, reg.Host, reg.NUMANode, reg.CPUs
			if reg.Draining && nw.State == state.WorkerReady {
				nw.State = state.WorkerDraining
			}
			return t.UpsertWorkerTxn(&nw)
		}
		restart = true
		return t.UpsertWorkerTxn(&state.Worker{
			ID: reg.ID, Addr: reg.Addr, Host: reg.Host, NUMANode: reg.NUMANode, CPUs: reg.CPUs,
			Capacity: reg.Capacity, ModelVersion: reg.ModelVersion, State: state.WorkerConnecting, Since: now,
		})
	})
	return restart
}

// Deregister handles a registration that left etcd: its lease expired or
// was revoked. Every batch the worker held goes back with a failure
// counted, and its row goes. drained says it left after a drain (its
// registration said draining, or an operator asked): not a lease loss.
// known is false for a worker the ledger never saw.
func (l *Ledger) Deregister(now time.Time, id string, regDraining bool) (fx Effects, known, drained bool) {
	l.update("deregister worker", func(t *state.Txn) error {
		w, err := t.Worker(id)
		if errors.Is(err, state.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		known = true
		drained = regDraining || w.State == state.WorkerDraining || w.DrainRequested
		if err := l.failSessionTxn(t, &fx, now, id, 0, "lease gone"); err != nil {
			return err
		}
		return t.DeleteWorkerTxn(id)
	})
	switch {
	case !known:
	case drained:
		l.counters.WorkersDrained++
	default:
		l.counters.LeaseLosses++
	}
	return fx, known, drained
}

// SessionOpened records that a worker's Work stream opened as session;
// the worker starts with no credits (its reports grant them). A worker
// that is draining (it said so, its registration did, or an operator
// asked) takes no batches.
func (l *Ledger) SessionOpened(id string, session uint64, draining bool) {
	l.update("open session", func(t *state.Txn) error {
		w, err := t.Worker(id)
		if errors.Is(err, state.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		nw := *w
		nw.Session, nw.Credits, nw.InFlight = session, 0, 0
		nw.State = state.WorkerReady
		if draining || w.DrainRequested {
			nw.State = state.WorkerDraining
		}
		return t.UpsertWorkerTxn(&nw)
	})
}

// report applies a worker report's credit grant and then fn, when the
// report comes from the worker's current session. It returns false for a
// report of another session (or an unknown worker), which changes
// nothing.
func (l *Ledger) report(id string, session uint64, credit uint32, fn func(*state.Txn, *state.Worker) error) bool {
	current := false
	l.update("worker report", func(t *state.Txn) error {
		w, err := t.Worker(id)
		if errors.Is(err, state.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if w.Session != session {
			return nil
		}
		current = true
		nw := *w
		nw.Credits = min(nw.Credits+int(credit), maxCredits)
		if fn != nil {
			if err := fn(t, &nw); err != nil {
				return err
			}
		}
		return t.UpsertWorkerTxn(&nw)
	})
	return current
}

// OnReady takes a worker's Ready: its credits, the model it runs, and
// whether it is draining.
func (l *Ledger) OnReady(id string, session uint64, credit uint32, modelVersion string, draining bool) {
	l.report(id, session, credit, func(_ *state.Txn, w *state.Worker) error {
		w.ModelVersion = modelVersion
		if draining {
			w.State = state.WorkerDraining
		}
		return nil
	})
}

// OnCredit takes a report that only grants credits.
func (l *Ledger) OnCredit(id string, session uint64, credit uint32) {
	l.report(id, session, credit, nil)
}

// OnResult takes a worker's result. It counts only when it answers the
// batch as assigned now: same term, worker, session and attempt; anything
// else (a result after the batch was reassigned, a duplicate, one from an
// old session or term) is stale, counted and ignored. A malformed result
// fails its batch like a lost worker does.
func (l *Ledger) OnResult(now time.Time, id string, session uint64, credit uint32, r Result) Effects {
	var fx Effects
	current := l.report(id, session, credit, func(t *state.Txn, w *state.Worker) error {
		b, err := t.Batch(r.Batch)
		if err != nil && !errors.Is(err, state.ErrNotFound) {
			return err
		}
		if err != nil || b.State != state.BatchAssigned || b.WorkerID != w.ID || b.Session != w.Session || b.Attempt != r.Attempt || r.Term != l.cfg.Term {
			l.stale(id, r.Batch, "stale result ignored")
			return nil
		}
		if r.Malformed == nil && len(r.Verdicts) != len(b.Entries) {
			r.Malformed = fmt.Errorf("%d verdicts for a batch of %d", len(r.Verdicts), len(b.Entries))
		}
		if r.Malformed != nil {
			l.counters.Malformed++
			l.log.Warn().Err(r.Malformed).Str(logging.WorkerID, id).Uint64(logging.BatchID, b.ID).Msg("malformed result, batch failed")
			w.InFlight--
			return l.failBatchTxn(t, &fx, b, now)
		}
		l.completeTxn(&fx, b, r.Verdicts, now)
		l.counters.Results++
		w.InFlight--
		w.BatchesDone++
		w.AddrsDone += uint64(len(b.Entries))
		w.LastResult = now
		return t.DeleteBatchTxn(b.ID)
	})
	if !current {
		l.stale(id, r.Batch, "result from an old session ignored")
	}
	return fx
}

func (l *Ledger) stale(id string, batch uint64, msg string) {
	l.counters.StaleResults++
	l.log.Debug().Str(logging.WorkerID, id).Uint64(logging.BatchID, batch).Msg(msg)
}

// completeTxn answers every live entry of b with its verdict and puts
// the verdicts on the log.
func (l *Ledger) completeTxn(fx *Effects, b *state.Batch, vs []verdict.Verdict, now time.Time) {
	nowN := now.UnixNano()
	fx.Outcomes = slices.Grow(fx.Outcomes, len(b.Entries))
	fx.Publish = slices.Grow(fx.Publish, len(b.Entries))
	for i, e := range b.Entries {
		if !l.pool.Live(e) {
			continue
		}
		v := &vs[i]
		n := len(fx.Outcomes)
		fx.Outcomes = l.pool.AppendComplete(fx.Outcomes, nowN, e, v, true)
		l.counters.Verdicts += uint64(len(fx.Outcomes) - n)
		fx.Publish = append(fx.Publish, Published{Addr: e.Addr, Verdict: v})
		if v.Proxy {
			l.counters.Proxies++
		}
	}
}

// OnRefusal takes a worker's refusal of a batch (busy, draining, an old
// term): the batch, if still assigned to that session and attempt, goes
// back to the queue without a failure counted. A refusal from an old
// session changes and counts nothing.
func (l *Ledger) OnRefusal(id string, session uint64, credit uint32, batch uint64, attempt uint32, reason string) {
	l.report(id, session, credit, func(t *state.Txn, w *state.Worker) error {
		l.counters.Refusals++ // of the current session only
		b, err := t.Batch(batch)
		if errors.Is(err, state.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if b.State != state.BatchAssigned || b.WorkerID != id || b.Session != session || b.Attempt != attempt {
			return nil
		}
		nb := *b
		nb.State, nb.WorkerID, nb.Session = state.BatchQueued, "", 0
		w.InFlight--
		return t.UpsertBatchTxn(&nb)
	})
	l.log.Debug().Str(logging.WorkerID, id).Uint64(logging.BatchID, batch).Str(logging.Reason, reason).Msg("batch refused")
}

// OnSessionLost handles a worker's Work stream that ended: every batch
// the session held fails (requeued, split or poisoned), and the worker is
// down until its next session.
func (l *Ledger) OnSessionLost(now time.Time, id string, session uint64, why string) Effects {
	var fx Effects
	l.update("session lost", func(t *state.Txn) error {
		if err := l.failSessionTxn(t, &fx, now, id, session, why); err != nil {
			return err
		}
		w, err := t.Worker(id)
		if errors.Is(err, state.ErrNotFound) || (err == nil && w.Session != session) {
			return nil
		}
		if err != nil {
			return err
		}
		nw := *w
		nw.State, nw.Session, nw.Credits, nw.InFlight = state.WorkerDown, 0, 0, 0
		nw.Failures++
		return t.UpsertWorkerTxn(&nw)
	})
	return fx
}

// failSessionTxn fails every batch assigned to worker id in session (0:
// any session).
func (l *Ledger) failSessionTxn(t *state.Txn, fx *Effects, now time.Time, id string, session uint64, why string) error {
	bs, err := t.BatchesOfWorker(id)
	if err != nil {
		return err
	}
	n := 0
	for _, b := range bs {
		if b.State != state.BatchAssigned || (session != 0 && b.Session != session) {
			continue
		}
		n++
		if err := l.failBatchTxn(t, fx, b, now); err != nil {
			return err
		}
	}
	if n > 0 {
		l.log.Warn().Str(logging.WorkerID, id).Int(logging.Count, n).Str(logging.Reason, why).Msg("worker lost its batches; requeued")
	}
	return nil
}

// failBatchTxn handles a batch whose worker failed while holding it: it
// is requeued; after MaxFailures it is split in halves, and a single
// address that still fails is poison, answered with an error verdict.
func (l *Ledger) failBatchTxn(t *state.Txn, fx *Effects, b *state.Batch, now time.Time) error {
	nb := *b
	nb.Failures++
	nb.State, nb.WorkerID, nb.Session = state.BatchQueued, "", 0
	es := nb.Entries
	switch dispatch.OnFailure(len(es), nb.Failures, l.cfg.MaxFailures) {
	case dispatch.Requeue:
		l.counters.Reassigned++
		return t.UpsertBatchTxn(&nb)
	case dispatch.Split:
		l.counters.Splits++
		if err := t.DeleteBatchTxn(b.ID); err != nil {
			return err
		}
		h := dispatch.Halves(len(es))
		for _, part := range [][]*pool.Entry{es[:h:h], es[h:]} {
			l.nextBatch++
			p := nb
			// One more failure of a half splits it again.
			p.ID, p.Entries, p.Size, p.Failures, p.Created = l.nextBatch, part, len(part), l.cfg.MaxFailures-1, now
			if err := t.UpsertBatchTxn(&p); err != nil {
				return err
			}
		}
		l.log.Warn().Uint64(logging.BatchID, b.ID).Int(logging.Count, len(es)).Msg("batch failed repeatedly, split to isolate a poison address")
		return nil
	default: // GiveUp
		l.counters.Poisoned++
		e := es[0]
		v := &verdict.Verdict{Error: fmt.Sprintf("examination failed on %d workers: poison address", nb.Failures)}
		l.outcomes(fx, l.pool.Fail(now.UnixNano(), e, v))
		l.log.Warn().Str(logging.Addr, e.Addr.String()).Msg("poison address answered with an error verdict")
		return t.DeleteBatchTxn(b.ID)
	}
}

// Assign hands out batches while some ready worker has a credit: retried
// batches first, then new ones from the pool when a full batch is waiting
// or the oldest address has waited a batch interval.
func (l *Ledger) Assign(now time.Time) Effects {
	var fx Effects
	for {
		sent := false
		l.update("assign", func(t *state.Txn) error {
			var err error
			sent, err = l.assignOneTxn(t, &fx, now)
			return err
		})
		if !sent {
			return fx
		}
	}
}

func (l *Ledger) assignOneTxn(t *state.Txn, fx *Effects, now time.Time) (bool, error) {
	ws, err := t.Workers()
	if err != nil {
		return false, err
	}
	cands := make([]dispatch.Candidate, 0, len(ws))
	idx := make([]*state.Worker, 0, len(ws))
	for _, w := range ws {
		if w.State != state.WorkerReady {
			continue
		}
		cands = append(cands, dispatch.Candidate{ID: w.ID, Capacity: w.Capacity, Credits: w.Credits, InFlight: w.InFlight, Done: w.BatchesDone})
		idx = append(idx, w)
	}
	i := dispatch.Pick(cands)
	if i < 0 {
		return false, nil
	}
	b, err := l.nextBatchTxn(t, fx, now)
	if err != nil || b == nil {
		return false, err
	}
	w := *idx[i]
	nb := *b
	nb.State, nb.WorkerID, nb.Session = state.BatchAssigned, w.ID, w.Session
	nb.Attempt++
	nb.AssignedAt = now
	addrs := make([]netip.Addr, len(nb.Entries))
	for j, e := range nb.Entries {
		addrs[j] = e.Addr
	}
	w.Credits--
	w.InFlight++
	if err := t.UpsertBatchTxn(&nb); err != nil {
		return false, err
	}
	if err := t.UpsertWorkerTxn(&w); err != nil {
		return false, err
	}
	fx.Sends = append(fx.Sends, Send{Worker: w.ID, Session: w.Session, Batch: nb.ID, Term: l.cfg.Term, Attempt: nb.Attempt, Addrs: addrs})
	l.counters.Batches++
	return true, nil
}

// nextBatchTxn returns a queued (retried) batch, or forms a new one from
// the pool when a full batch is waiting or the oldest address waited a
// batch interval; nil when there is nothing to send.
func (l *Ledger) nextBatchTxn(t *state.Txn, fx *Effects, now time.Time) (*state.Batch, error) {
	nowN := now.UnixNano()
	for {
		q, err := t.FirstQueuedBatch()
		if err != nil {
			return nil, err
		}
		if q == nil {
			break
		}
		// Drop the entries that expired while the batch waited, and those
		// already answered.
		live := make([]*pool.Entry, 0, len(q.Entries))
		for _, e := range q.Entries {
			if ds, expired := l.pool.ExpireInFlight(nowN, e); expired {
				l.outcomes(fx, ds)
				continue
			}
			if l.pool.Live(e) {
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
	if l.pool.Pending() == 0 {
		return nil, nil
	}
	if l.pool.Pending() < l.cfg.BatchSize {
		if t0, ok := l.pool.OldestEnqueued(); ok && nowN-t0 < int64(l.cfg.BatchInterval) {
			return nil, nil
		}
	}
	es, dead := l.pool.Take(nowN, l.cfg.BatchSize)
	l.outcomes(fx, dead)
	if len(es) == 0 {
		return nil, nil
	}
	l.nextBatch++
	return &state.Batch{ID: l.nextBatch, State: state.BatchQueued, Size: len(es), Created: now, Entries: es}, nil
}

// Sweep expires pending sightings past their maximum age and forgets
// recent verdicts past the dedup window.
func (l *Ledger) Sweep(now time.Time) Effects {
	var fx Effects
	l.outcomes(&fx, l.pool.Sweep(now.UnixNano()))
	return fx
}
