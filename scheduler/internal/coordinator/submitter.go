package coordinator

import (
	"errors"
	"sync"
	"time"

	"github.com/styx-inference/styx/pkg/columns"
	"github.com/styx-inference/styx/pkg/logging"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
	"github.com/styx-inference/styx/scheduler/internal/pool"
	"github.com/styx-inference/styx/scheduler/internal/state"
)

var (
	errLeadershipEnded = errors.New("leadership ended: reconnect to the new leader and re-send pending sightings")
	errReplaced        = errors.New("a newer session of this node replaced this one")
	errTooSlow         = errors.New("node fell behind its outcome queue: reconnect and re-send pending sightings")
)

// Submitter is one node's session with the leader.
type Submitter struct {
	NodeID  string
	session uint64
	out     chan *styxv1.SubmitResponse
	done    chan struct{}

	once sync.Once
	err  error
}

// Out carries the messages for the node (outcome batches).
func (s *Submitter) Out() <-chan *styxv1.SubmitResponse { return s.out }

// Done is closed when the session must end; Err says why.
func (s *Submitter) Done() <-chan struct{} { return s.done }

// Err is the reason the session ended.
func (s *Submitter) Err() error {
	select {
	case <-s.done:
		return s.err
	default:
		return nil
	}
}

func (s *Submitter) close(err error) {
	s.once.Do(func() {
		s.err = err
		close(s.done)
	})
}

// send queues a message without blocking; false when the queue is full.
func (s *Submitter) send(m *styxv1.SubmitResponse) bool {
	select {
	case <-s.done:
		return false
	default:
	}
	select {
	case s.out <- m:
		return true
	default:
		return false
	}
}

// Attach starts a node's session; an older session of the same node ends.
func (c *Coordinator) Attach(nodeID string) (*Submitter, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ctx != nil && c.ctx.Err() != nil {
		return nil, errLeadershipEnded
	}
	c.nextSession++
	s := &Submitter{NodeID: nodeID, session: c.nextSession, out: make(chan *styxv1.SubmitResponse, c.cfg.OutQueue), done: make(chan struct{})}
	if old := c.subs[nodeID]; old != nil {
		old.close(errReplaced)
	}
	c.subs[nodeID] = s
	err := c.st.Update(func(t *state.Txn) error {
		row := &state.Submitter{NodeID: nodeID, Session: s.session, Connected: true, Since: c.now()}
		if old, err := t.Submitter(nodeID); err == nil {
			row.Received, row.Outcomes = old.Received, old.Outcomes
		}
		return t.UpsertSubmitterTxn(row)
	})
	if err != nil {
		return nil, err
	}
	c.log.Info().Str(logging.NodeID, nodeID).Msg("node attached")
	return s, nil
}

// Detach ends a node's session (its stream closed).
func (c *Coordinator) Detach(s *Submitter) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s.close(errors.New("detached"))
	if c.subs[s.NodeID] != s {
		return
	}
	delete(c.subs, s.NodeID)
	_ = c.st.Update(func(t *state.Txn) error {
		old, err := t.Submitter(s.NodeID)
		if err != nil {
			return err
		}
		row := *old
		row.Connected = false
		return t.UpsertSubmitterTxn(&row)
	})
	c.log.Info().Str(logging.NodeID, s.NodeID).Msg("node detached")
}

// Offer takes a batch of sightings from a node. Outcomes known at once
// (recent verdicts, shedding, expiry, invalid addresses) are queued to the
// node before Offer returns; the rest follow as workers answer. It returns
// how many sightings it took responsibility for (all of them) or an error
// when the session is no longer current.
func (c *Coordinator) Offer(s *Submitter, b *styxv1.SightingBatch) (uint32, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.subs[s.NodeID] != s {
		return 0, errReplaced
	}
	now := c.now().UnixNano()
	n, err := columns.SightingCount(b)
	var ds []pool.Delivery
	var rejected columns.OutcomeBuilder
	reject := func(id uint64, reason string) {
		c.counters.Rejected++
		rejected.Add(id, styxv1.OutcomeKind_OUTCOME_KIND_REJECTED, nil, reason)
	}
	if err != nil {
		// The columns do not line up: nothing in the batch can be trusted
		// but the ids, and each of them gets its outcome.
		for _, id := range b.GetIds() {
			reject(id, err.Error())
		}
		n = 0
	}
	for i := range n {
		id := b.Ids[i]
		a := columns.Addr(b.Addresses, i)
		if a.IsUnspecified() {
			reject(id, "unspecified address")
			continue
		}
		d, done, evicted := c.pool.Offer(now, pool.Waiter{Node: s.NodeID, ID: id}, a, b.SeenUnixNano[i])
		if done {
			ds = append(ds, d)
		}
		ds = append(ds, evicted...)
	}
	if rejected.Len() > 0 {
		if !s.send(&styxv1.SubmitResponse{Msg: &styxv1.SubmitResponse_Outcomes{Outcomes: rejected.Batch()}}) {
			c.overflowLocked(s)
		}
	}
	c.deliverLocked(ds)
	_ = c.st.Update(func(t *state.Txn) error {
		old, err := t.Submitter(s.NodeID)
		if err != nil {
			return err
		}
		row := *old
		row.Received += uint64(len(b.GetIds()))
		return t.UpsertSubmitterTxn(&row)
	})
	if c.pool.Pending() >= c.cfg.BatchSize {
		c.poke()
	}
	return uint32(len(b.GetIds())), nil
}

func (c *Coordinator) overflowLocked(s *Submitter) {
	c.counters.NodeOverflows++
	s.close(errTooSlow)
	if c.subs[s.NodeID] == s {
		delete(c.subs, s.NodeID)
	}
	c.log.Warn().Str(logging.NodeID, s.NodeID).Msg("node fell behind; session ended")
}

// deliverLocked routes deliveries to the nodes that asked, one outcome
// batch per node. Nodes not connected miss them; they re-send their pending
// sightings when they reconnect, and the recent-verdict window answers.
func (c *Coordinator) deliverLocked(ds []pool.Delivery) {
	if len(ds) == 0 {
		return
	}
	byNode := make(map[string]*columns.OutcomeBuilder, 2)
	for _, d := range ds {
		var kind styxv1.OutcomeKind
		var v *styxv1.Verdict
		switch d.Kind {
		case pool.KindVerdict:
			kind = styxv1.OutcomeKind_OUTCOME_KIND_VERDICT
			v, _ = d.Verdict.(*styxv1.Verdict)
			c.counters.Verdicts++
		case pool.KindExpired:
			kind = styxv1.OutcomeKind_OUTCOME_KIND_EXPIRED
		case pool.KindShed:
			kind = styxv1.OutcomeKind_OUTCOME_KIND_SHED
		}
		b, ok := byNode[d.Waiter.Node]
		if !ok {
			b = &columns.OutcomeBuilder{}
			if len(byNode) == 0 {
				b.Reset(len(ds)) // usually every delivery goes to one node
			}
			byNode[d.Waiter.Node] = b
		}
		b.Add(d.Waiter.ID, kind, v, d.Reason)
	}
	for node, b := range byNode {
		n := uint64(b.Len())
		s := c.subs[node]
		if s == nil {
			c.counters.OutcomesDropped += n
			continue
		}
		if !s.send(&styxv1.SubmitResponse{Msg: &styxv1.SubmitResponse_Outcomes{Outcomes: b.Batch()}}) {
			c.counters.OutcomesDropped += n
			c.overflowLocked(s)
		}
	}
}

// Nodes lists the connected node ids.
func (c *Coordinator) Nodes() []string {
	snap := c.st.Snapshot()
	subs, err := snap.Submitters(nil)
	if err != nil {
		return nil
	}
	var out []string
	for _, s := range subs {
		if s.Connected {
			out = append(out, s.NodeID)
		}
	}
	return out
}

var _ = time.Second
