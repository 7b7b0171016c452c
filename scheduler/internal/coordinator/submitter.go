package coordinator

import (
	"errors"
	"slices"
	"sync"

	"github.com/styx-inference/styx/pkg/columns"
	"github.com/styx-inference/styx/pkg/logging"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
	"github.com/styx-inference/styx/scheduler/internal/ledger"
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
	c.ledger.Attach(c.now(), nodeID, s.session)
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
	c.ledger.Detach(s.NodeID, s.session)
	c.log.Info().Str(logging.NodeID, s.NodeID).Msg("node detached")
}

// NodeStatus records what a node reports about its verdict log position.
func (c *Coordinator) NodeStatus(s *Submitter, st *styxv1.NodeStatus) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ledger.NodeLog(s.NodeID, s.session, state.NodeLog{
		At: c.now(), Lag: st.GetLogLagMessages(), LagSeconds: st.GetLogLagSeconds(),
		Connected: st.GetLogConnected(), Stalled: st.GetLogStalled(),
	})
}

// Sightings converts a node's sighting batch at the edge, into buf's
// backing array when it has room (a stream reuses one: Offer keeps none of
// it). When the columns do not line up, nothing in the batch can be
// trusted but the ids: the error says why, and the caller rejects every id
// (Reject).
func Sightings(b *styxv1.SightingBatch, buf []ledger.Sighting) ([]ledger.Sighting, error) {
	n, err := columns.SightingCount(b)
	if err != nil {
		return nil, err
	}
	out := slices.Grow(buf[:0], n)[:n]
	for i := range out {
		out[i] = ledger.Sighting{ID: b.Ids[i], Addr: columns.Addr(b.Addresses, i), Seen: b.SeenUnixNano[i]}
	}
	return out, nil
}

// Offer takes a batch of sightings from a node. Outcomes known at once
// (recent verdicts, shedding, expiry, invalid addresses) are queued to the
// node before Offer returns; the rest follow as workers answer. It returns
// how many sightings it took responsibility for (all of them) or an error
// when the session is no longer current.
func (c *Coordinator) Offer(s *Submitter, ss []ledger.Sighting) (uint32, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.subs[s.NodeID] != s {
		return 0, errReplaced
	}
	c.applyLocked(c.ledger.Offer(c.now(), s.NodeID, ss))
	if c.ledger.FullBatch() {
		c.poke()
	}
	return uint32(len(ss)), nil
}

// Reject answers every id of a batch that could not be decoded with a
// rejection saying why.
func (c *Coordinator) Reject(s *Submitter, ids []uint64, reason string) (uint32, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.subs[s.NodeID] != s {
		return 0, errReplaced
	}
	c.applyLocked(c.ledger.Reject(s.NodeID, ids, reason))
	return uint32(len(ids)), nil
}

func (c *Coordinator) overflowLocked(s *Submitter) {
	c.counters.NodeOverflows++
	s.close(errTooSlow)
	if c.subs[s.NodeID] == s {
		delete(c.subs, s.NodeID)
	}
	c.log.Warn().Str(logging.NodeID, s.NodeID).Msg("node fell behind; session ended")
}

// deliverLocked routes outcomes to the nodes that asked, one outcome batch
// per node (rejections first). Nodes not connected miss them; they re-send
// their pending sightings when they reconnect, and the recent-verdict
// window answers.
func (c *Coordinator) deliverLocked(os []ledger.Outcome, rs []ledger.Rejection) {
	if len(os) == 0 && len(rs) == 0 {
		return
	}
	byNode := make(map[string]*columns.OutcomeBuilder, 2)
	builder := func(node string) *columns.OutcomeBuilder {
		b, ok := byNode[node]
		if !ok {
			b = &columns.OutcomeBuilder{}
			if len(byNode) == 0 {
				b.Reset(len(os) + len(rs)) // usually every outcome goes to one node
			}
			byNode[node] = b
		}
		return b
	}
	for _, r := range rs {
		builder(r.Node).AddVerdict(r.ID, styxv1.OutcomeKind_OUTCOME_KIND_REJECTED, nil, r.Reason)
	}
	for _, d := range os {
		var kind styxv1.OutcomeKind
		switch d.Kind {
		case pool.KindVerdict:
			kind = styxv1.OutcomeKind_OUTCOME_KIND_VERDICT
		case pool.KindExpired:
			kind = styxv1.OutcomeKind_OUTCOME_KIND_EXPIRED
		case pool.KindShed:
			kind = styxv1.OutcomeKind_OUTCOME_KIND_SHED
		}
		builder(d.Waiter.Node).AddVerdict(d.Waiter.ID, kind, d.Verdict, d.Reason)
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
	snap := c.State().Snapshot()
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
