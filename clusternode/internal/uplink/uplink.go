package uplink

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"

	"github.com/styx-inference/styx/clusternode/internal/store"
	"github.com/styx-inference/styx/pkg/attacks"
	"github.com/styx-inference/styx/pkg/columns"
	"github.com/styx-inference/styx/pkg/keyspace"
	"github.com/styx-inference/styx/pkg/logging"
	"github.com/styx-inference/styx/pkg/recent"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

// IDBlock is how many sighting ids one store reservation covers.
const IDBlock = 1 << 20

// Store is the part of the node's store the uplink writes to.
type Store interface {
	ReserveIDs(n uint64, now time.Time) (first uint64, err error)
	Put(items []store.Item) (changed int, err error)
	ApplyLog(stream string, seq uint64, items []store.Item, reports []attacks.Report) (changed int, ar store.AttackResult, err error)
	AttackOutbox(limit int) ([]store.OutboxEntry, error)
	AckAttacks(seqs []uint64) error
}

// Config configures an Uplink.
type Config struct {
	NodeID string
	// Leaders sends the current leader each time it changes (the zero
	// LeaderInfo when there is none) and is closed when ctx ends:
	// leader.Observe bound to an etcd client. Unused with DirectWorker.
	Leaders func(ctx context.Context) <-chan keyspace.LeaderInfo
	// DirectWorker, when set, is a worker's gRPC address: the uplink
	// speaks WorkerService to that one worker instead of following the
	// leader, as a scheduler would (term DirectTerm, honouring its
	// credits). There is no attack forwarding (and the node follows no
	// verdict log). It measures the node's path without the scheduler hop
	// (benchmarks, tests).
	DirectWorker string
	Store        Store
	// Outbox, when set, persists the pending table (see outbox.go): an
	// accepted sighting is written in a group commit (at most every
	// BatchInterval) before it is sent, resolved ones are deleted the
	// same way, and New loads what a previous run left. Nil keeps the
	// pending table in memory only and sends sightings at once.
	Outbox Outbox
	// DedupWindow: an address offered again within it is not submitted
	// again. 0 disables dedup.
	DedupWindow time.Duration
	// DedupMax bounds the addresses the dedup window remembers; beyond
	// it, the address offered longest ago is forgotten first.
	DedupMax int
	// MaxPending bounds the sightings submitted but without outcome.
	MaxPending int
	// BatchSize is the largest SightingBatch sent (lowered to the leader's
	// max_batch); a full batch goes at once, a partial one after
	// BatchInterval.
	BatchSize     int
	BatchInterval time.Duration
	// BackoffMin and BackoffMax bound the reconnect delay (defaults 100 ms
	// and 5 s).
	BackoffMin, BackoffMax time.Duration
	// FlushTimeout bounds the final send of queued sightings when Run's
	// context ends (default 2 s).
	FlushTimeout time.Duration
	// AttackBatch is the most attack reports forwarded in one
	// ReportAttacks call (default 1024); AttackRetry is how often the
	// outbox is looked at when nothing kicks it (default 1 s).
	AttackBatch int
	AttackRetry time.Duration
	// DialOptions are added to the defaults (insecure transport).
	DialOptions []grpc.DialOption
	// LogStatus, when set, reports the node's position in the verdict
	// log; the uplink sends it to the leader on its Submit stream every
	// StatusEvery (default 2 s), for the visualiser and the leader's
	// metrics.
	LogStatus   func() *styxv1.NodeStatus
	StatusEvery time.Duration
	// OnOutcome, when set, is called exactly once per resolved sighting,
	// after a verdict has been stored. It must not block.
	OnOutcome func(sightingID uint64, addr netip.Addr, kind styxv1.OutcomeKind)
}

// Validate reports a configuration error.
func (c Config) Validate() error {
	switch {
	case c.NodeID == "":
		return errors.New("uplink: empty node id")
	case c.Leaders == nil && c.DirectWorker == "":
		return errors.New("uplink: nil Leaders")
	case c.Store == nil:
		return errors.New("uplink: nil Store")
	case c.DedupWindow < 0:
		return fmt.Errorf("uplink: negative dedup window %s", c.DedupWindow)
	case c.DedupWindow > 0 && c.DedupMax < 2:
		return fmt.Errorf("uplink: dedup max %d below 2", c.DedupMax)
	case c.MaxPending < 1:
		return fmt.Errorf("uplink: max pending %d below 1", c.MaxPending)
	case c.BatchSize < 1:
		return fmt.Errorf("uplink: batch size %d below 1", c.BatchSize)
	case c.BatchInterval <= 0:
		return fmt.Errorf("uplink: batch interval %s not positive", c.BatchInterval)
	case c.BackoffMin < 0 || c.BackoffMax < c.BackoffMin:
		return fmt.Errorf("uplink: backoff bounds %s..%s", c.BackoffMin, c.BackoffMax)
	case c.AttackBatch < 0 || c.AttackBatch > 4096:
		return fmt.Errorf("uplink: attack batch %d outside 0..4096", c.AttackBatch)
	case c.AttackRetry < 0:
		return fmt.Errorf("uplink: negative attack retry %s", c.AttackRetry)
	}
	return nil
}

// Stats are the uplink's counters since start.
type Stats struct {
	Submitted    uint64 // sightings created (each has a new id)
	NotSubmitted uint64 // addresses not submitted: pending table full or no id
	Deduplicated uint64 // addresses skipped because seen within the window
	Pending      int    // sightings without outcome
	Resent       uint64 // sightings sent again after a reconnect or leader change

	Verdicts    uint64
	Expired     uint64
	Shed        uint64
	Rejected    uint64
	Unspecified uint64 // outcomes of unknown kind (resolved all the same)
	// DuplicateOutcomes counts outcomes for ids already resolved (ignored).
	DuplicateOutcomes uint64
	// VerdictErrors counts verdicts not stored: the address could not be
	// examined, the verdict was missing, or the store write failed.
	VerdictErrors uint64

	BatchesSent uint64
	Acked       uint64 // sightings the leader acknowledged
	Sessions    uint64 // Submit streams that got a Welcome
	Connected   bool   // a Submit stream is up now

	// LogMessages counts the verdict log messages applied (ApplyLog);
	// LogVerdicts the verdicts in them with an address and no error,
	// LogVerdictsKnown those of them just written here from an outcome
	// (not written again), LogVerdictsSkipped the others.
	LogMessages, LogVerdicts, LogVerdictsKnown, LogVerdictsSkipped uint64

	// Attack reports: forwarded to the leader (by its answer: put on the
	// log, seen before, rejected as invalid), and applied from the log
	// (new here, already known, too old for a full history).
	AttacksForwarded, AttacksLeaderDuplicates, AttacksLeaderRejected uint64
	LogAttacksNew, LogAttacksDuplicate, LogAttacksTooOld             uint64
	LogAttacksInvalid                                                uint64 // did not decode
}

type pendingEntry struct {
	addr  netip.Addr
	seen  int64 // Unix nanoseconds
	sends uint32
	// unsaved: waiting for its group commit, so not queued to be sent
	// (only with Config.Outbox).
	unsaved bool
}

// Uplink submits sightings to the leader and applies what comes back.
type Uplink struct {
	cfg Config
	log zerolog.Logger

	mu      sync.Mutex
	pending map[uint64]pendingEntry
	queue   []uint64 // ids to send, FIFO from head; may hold resolved ids (skipped)
	head    int
	full    bool // the pending table was found full (for logging the transition)
	nextID  uint64
	idLimit uint64
	dedup   *recent.Set[netip.Addr, struct{}] // nil: no dedup window

	notify    chan struct{} // cap 1: a full batch is queued
	fullBatch atomic.Int64  // batch size of the current stream
	// npending is len(pending), but lowered only once an outcome has been
	// fully applied (stored, counted, reported): a reader that sees it drop
	// sees the rest too.
	npending atomic.Int64

	// With Config.Outbox, ids accepted since the last group commit
	// (unsaved) and resolved since (resolvedIDs, guarded by mu too) wait
	// for the next one; the spares are their buffers between commits.
	// commitMu makes commits one at a time (mu is taken inside it).
	// committed (cap 1) wakes the sender after a commit queued sightings;
	// commitKick (cap 1) wakes the committer when a full batch waits.
	unsaved, resolvedIDs, spareIDs, spareRemoved []uint64
	commitFailing                                bool
	commitMu                                     sync.Mutex
	committed, commitKick                        chan struct{}
	restored, commits, commitErrors              atomic.Uint64
	commitSeconds                                prometheus.Histogram

	// stored remembers the verdicts written recently, from outcomes or
	// from the log: a verdict this node asked for arrives both ways, and
	// the second copy is not written again. storedMu is a leaf, never held
	// with mu.
	storedMu sync.Mutex
	stored   *recent.Set[netip.Addr, int64] // address -> inference time

	submitted, notSubmitted, deduplicated, resent       atomic.Uint64
	verdicts, expired, shed, rejected, unspecified      atomic.Uint64
	duplicates, verdictErrors, batches, acked, sessions atomic.Uint64
	logMessages, logVerdicts, logKnown, logSkipped      atomic.Uint64
	logAttInvalid                                       atomic.Uint64
	connected                                           atomic.Bool

	attackKick                                chan struct{} // cap 1: the outbox has new reports
	attForwarded, attLeaderDups, attLeaderRej atomic.Uint64
	logAttNew, logAttDup, logAttOld           atomic.Uint64

	// cursorMu guards cursorSaved: per stream, when its cursor was last
	// committed (see ApplyLog). A leaf.
	cursorMu    sync.Mutex
	cursorSaved map[string]time.Time
	cursorEvery time.Duration // cursorEvery; tests change it
}

// New returns an Uplink; Offer works at once, Run connects.
func New(cfg Config, log zerolog.Logger) (*Uplink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.BackoffMin == 0 {
		cfg.BackoffMin = 100 * time.Millisecond
	}
	if cfg.BackoffMax == 0 {
		cfg.BackoffMax = 5 * time.Second
	}
	if cfg.FlushTimeout == 0 {
		cfg.FlushTimeout = 2 * time.Second
	}
	if cfg.AttackBatch == 0 {
		cfg.AttackBatch = 1024
	}
	if cfg.AttackRetry == 0 {
		cfg.AttackRetry = time.Second
	}
	stored, err := recent.New[netip.Addr, int64](recent.Limits{MaxLen: storedVerdictsMax})
	if err != nil {
		return nil, err
	}
	u := &Uplink{
		cfg:     cfg,
		log:     logging.For(log, "uplink"),
		pending: make(map[uint64]pendingEntry),
		stored:  stored,
		notify:  make(chan struct{}, 1),

		cursorSaved: make(map[string]time.Time),
		cursorEvery: cursorEvery,

		committed:     make(chan struct{}, 1),
		commitKick:    make(chan struct{}, 1),
		commitSeconds: newCommitSeconds(),

		attackKick: make(chan struct{}, 1),
	}
	if cfg.DedupWindow > 0 {
		// An address offered at t is deduplicated until t+DedupWindow
		// inclusive.
		u.dedup, err = recent.New[netip.Addr, struct{}](recent.Limits{MaxLen: cfg.DedupMax, MaxAge: cfg.DedupWindow})
		if err != nil {
			return nil, fmt.Errorf("uplink: dedup window: %w", err)
		}
	}
	u.fullBatch.Store(int64(cfg.BatchSize))
	if cfg.Outbox != nil {
		if err := u.restore(); err != nil {
			return nil, fmt.Errorf("uplink: restore pending sightings: %w", err)
		}
	}
	return u, nil
}

// Offer submits addr, seen at now, unless it was offered within the dedup
// window. It reports whether a new sighting was created. It never blocks on
// the network.
func (u *Uplink) Offer(addr netip.Addr, now time.Time) bool {
	addr = store.Normalize(addr)
	if !addr.IsValid() {
		return false
	}
	ns := now.UnixNano()
	u.mu.Lock()
	if u.seenLocked(addr, ns) {
		u.mu.Unlock()
		u.deduplicated.Add(1)
		return false
	}
	if len(u.pending) >= u.cfg.MaxPending {
		first := !u.full
		u.full = true
		u.mu.Unlock()
		u.notSubmitted.Add(1)
		if first {
			u.log.Warn().Int("max_pending", u.cfg.MaxPending).Msg("pending table full, new sightings are not submitted")
		}
		return false
	}
	id, err := u.newIDLocked(now)
	if err != nil {
		u.mu.Unlock()
		u.notSubmitted.Add(1)
		u.log.Error().Err(err).Msg("no sighting id, address not submitted")
		return false
	}
	u.npending.Add(1)
	// Without an outbox the sighting is queued to be sent at once; with
	// one, it waits for its group commit (see commit).
	wake, waiting := u.notify, 0
	if u.cfg.Outbox != nil {
		u.pending[id] = pendingEntry{addr: addr, seen: ns, unsaved: true}
		u.unsaved = append(u.unsaved, id)
		wake, waiting = u.commitKick, len(u.unsaved)
	} else {
		u.pending[id] = pendingEntry{addr: addr, seen: ns}
		u.queue = append(u.queue, id)
		waiting = len(u.queue) - u.head
	}
	if u.dedup != nil {
		u.dedup.Put(ns, addr, struct{}{})
	}
	u.mu.Unlock()
	u.submitted.Add(1)
	if int64(waiting) >= u.fullBatch.Load() {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	return true
}

func (u *Uplink) newIDLocked(now time.Time) (uint64, error) {
	if u.nextID == u.idLimit {
		first, err := u.cfg.Store.ReserveIDs(IDBlock, now)
		if err != nil {
			return 0, err
		}
		u.nextID, u.idLimit = first, first+IDBlock
	}
	id := u.nextID
	u.nextID++
	return id, nil
}

// restartQueue queues every pending sighting again, oldest id first, for a
// new stream (not the ones waiting for their group commit: the commit
// queues them). It returns how many are queued.
func (u *Uplink) restartQueue() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	ids := make([]uint64, 0, len(u.pending))
	for id, e := range u.pending {
		if !e.unsaved {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	u.queue, u.head = ids, 0
	return len(ids)
}

// takeBatch pops up to n queued sightings that are still pending into a
// SightingBatch's columns (nil when there are none). With onlyFull it
// takes nothing unless n are queued.
func (u *Uplink) takeBatch(n int, onlyFull bool) *styxv1.SightingBatch {
	u.mu.Lock()
	defer u.mu.Unlock()
	q := len(u.queue) - u.head
	if q == 0 || (onlyFull && q < n) {
		return nil
	}
	k := min(n, q)
	b := &styxv1.SightingBatch{
		Ids:          make([]uint64, 0, k),
		Addresses:    make([]byte, 0, k*columns.AddrSize),
		SeenUnixNano: make([]int64, 0, k),
	}
	for len(b.Ids) < n && u.head < len(u.queue) {
		id := u.queue[u.head]
		u.head++
		e, ok := u.pending[id]
		if !ok {
			continue // resolved while queued
		}
		if e.sends > 0 {
			u.resent.Add(1)
		}
		e.sends++
		u.pending[id] = e
		columns.AppendSighting(b, columns.Sighting{ID: id, Addr: e.addr, Seen: e.seen})
	}
	switch {
	case u.head == len(u.queue):
		u.queue, u.head = u.queue[:0], 0
	case u.head > 4096 && u.head > len(u.queue)/2:
		n := copy(u.queue, u.queue[u.head:])
		u.queue, u.head = u.queue[:n], 0
	}
	if len(b.Ids) == 0 {
		return nil
	}
	return b
}

type resolved struct {
	id     uint64
	addr   netip.Addr
	kind   styxv1.OutcomeKind
	reason string
}

// resolve applies a batch of outcomes: each pending sighting is resolved
// exactly once; outcomes for unknown ids are counted and ignored.
func (u *Uplink) resolve(outs []columns.Outcome) {
	res := make([]resolved, 0, len(outs))
	var items []store.Item
	u.mu.Lock()
	for _, o := range outs {
		e, ok := u.pending[o.SightingID]
		if !ok {
			u.duplicates.Add(1)
			continue
		}
		delete(u.pending, o.SightingID)
		if u.cfg.Outbox != nil {
			u.resolvedIDs = append(u.resolvedIDs, o.SightingID) // deleted by the next group commit
		}
		res = append(res, resolved{id: o.SightingID, addr: e.addr, kind: o.Kind, reason: o.Reason})
		if o.Kind != styxv1.OutcomeKind_OUTCOME_KIND_VERDICT {
			continue
		}
		if it, ok := u.verdictItem(e.addr, o.Verdict); ok {
			items = append(items, it)
		} else {
			u.verdictErrors.Add(1)
		}
	}
	roomAgain := u.full && len(u.pending) < u.cfg.MaxPending
	if roomAgain {
		u.full = false
	}
	u.mu.Unlock()
	if roomAgain {
		u.log.Info().Msg("pending table has room again")
	}

	if items = u.dropStored(items); len(items) > 0 {
		if _, err := u.cfg.Store.Put(items); err != nil {
			u.verdictErrors.Add(uint64(len(items)))
			u.log.Error().Err(err).Int(logging.Count, len(items)).Msg("store verdicts")
		} else {
			u.addStored(items)
		}
	}
	for _, r := range res {
		switch r.kind {
		case styxv1.OutcomeKind_OUTCOME_KIND_VERDICT:
			u.verdicts.Add(1)
		case styxv1.OutcomeKind_OUTCOME_KIND_EXPIRED:
			u.expired.Add(1)
		case styxv1.OutcomeKind_OUTCOME_KIND_SHED:
			u.shed.Add(1)
		case styxv1.OutcomeKind_OUTCOME_KIND_REJECTED:
			u.rejected.Add(1)
		default:
			u.unspecified.Add(1)
		}
		if r.kind != styxv1.OutcomeKind_OUTCOME_KIND_VERDICT {
			u.log.Debug().Uint64("sighting_id", r.id).Str(logging.Addr, r.addr.String()).
				Str("kind", r.kind.String()).Str(logging.Reason, r.reason).Msg("sighting resolved without verdict")
		}
		if u.cfg.OnOutcome != nil {
			u.cfg.OnOutcome(r.id, r.addr, r.kind)
		}
	}
	u.npending.Add(-int64(len(res)))
}

// verdictItem returns the store item for a verdict about a sighting of
// addr; ok is false when there is nothing to store.
func (u *Uplink) verdictItem(addr netip.Addr, v *styxv1.Verdict) (store.Item, bool) {
	if v == nil || v.GetError() != "" {
		return store.Item{}, false
	}
	if va, ok := netip.AddrFromSlice(v.GetAddress()); ok && store.Normalize(va) != addr {
		u.log.Warn().Str(logging.Addr, addr.String()).Str("verdict_addr", va.String()).
			Msg("verdict names another address than its sighting, stored under the sighting's")
	}
	return store.Item{Addr: addr, Verdict: v}, true
}

// KickAttacks says that the store's outbox has new reports: they are
// forwarded at once when a leader is connected. It never blocks.
func (u *Uplink) KickAttacks() {
	select {
	case u.attackKick <- struct{}{}:
	default:
	}
}

// Stats returns the counters.
func (u *Uplink) Stats() Stats {
	pending := int(u.npending.Load())
	return Stats{
		Submitted:         u.submitted.Load(),
		NotSubmitted:      u.notSubmitted.Load(),
		Deduplicated:      u.deduplicated.Load(),
		Pending:           pending,
		Resent:            u.resent.Load(),
		Verdicts:          u.verdicts.Load(),
		Expired:           u.expired.Load(),
		Shed:              u.shed.Load(),
		Rejected:          u.rejected.Load(),
		Unspecified:       u.unspecified.Load(),
		DuplicateOutcomes: u.duplicates.Load(),
		VerdictErrors:     u.verdictErrors.Load(),
		BatchesSent:       u.batches.Load(),
		Acked:             u.acked.Load(),
		Sessions:          u.sessions.Load(),
		Connected:         u.connected.Load(),

		LogMessages:        u.logMessages.Load(),
		LogVerdicts:        u.logVerdicts.Load(),
		LogVerdictsKnown:   u.logKnown.Load(),
		LogVerdictsSkipped: u.logSkipped.Load(),

		AttacksForwarded:        u.attForwarded.Load(),
		AttacksLeaderDuplicates: u.attLeaderDups.Load(),
		AttacksLeaderRejected:   u.attLeaderRej.Load(),
		LogAttacksNew:           u.logAttNew.Load(),
		LogAttacksDuplicate:     u.logAttDup.Load(),
		LogAttacksTooOld:        u.logAttOld.Load(),
		LogAttacksInvalid:       u.logAttInvalid.Load(),
	}
}

// seenLocked reports whether addr was offered within the dedup window.
func (u *Uplink) seenLocked(addr netip.Addr, now int64) bool {
	if u.dedup == nil {
		return false
	}
	_, ok := u.dedup.Get(now, addr)
	return ok
}

// storedVerdictsMax bounds the verdicts remembered as written recently.
// The log's copy of a verdict follows its outcome within the log's lag: at
// 5,000 verdicts a second, 65,536 cover 13 s of it. A copy that comes later
// is written again, which changes nothing (the store keeps what it has).
const storedVerdictsMax = 1 << 16

// dropStored removes from items the verdicts written recently: the same
// address and inference time is the same verdict, and the store would
// keep what it has.
func (u *Uplink) dropStored(items []store.Item) []store.Item {
	u.storedMu.Lock()
	defer u.storedMu.Unlock()
	if u.stored.Len() == 0 {
		return items
	}
	keep := items[:0]
	for _, it := range items {
		if t, ok := u.stored.Get(0, it.Addr); !ok || t != it.Verdict.GetInferredUnixNano() {
			keep = append(keep, it)
		}
	}
	return keep
}

// addStored remembers items as written.
func (u *Uplink) addStored(items []store.Item) {
	u.storedMu.Lock()
	defer u.storedMu.Unlock()
	for _, it := range items {
		u.stored.Put(0, it.Addr, it.Verdict.GetInferredUnixNano()) // no MaxAge: time unused
	}
}
