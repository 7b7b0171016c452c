package verdictlog

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"github.com/styx-inference/styx/pkg/retry"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

// PublisherConfig configures a Publisher.
type PublisherConfig struct {
	// Queue bounds the batches waiting to be published (default 4,096).
	// A batch that finds the queue full is dropped, counted and logged:
	// its verdicts still reached the nodes that asked for them.
	Queue int
	// InFlight bounds the publishes awaiting their acknowledgement
	// (default 32).
	InFlight int
	// AckWait bounds the wait for one round of acknowledgements (default
	// 5 s); a batch not acknowledged in time is published again with the
	// same message id.
	AckWait time.Duration
}

func (c *PublisherConfig) defaults() {
	if c.Queue <= 0 {
		c.Queue = 4096
	}
	if c.InFlight <= 0 {
		c.InFlight = 32
	}
	if c.AckWait <= 0 {
		c.AckWait = 5 * time.Second
	}
}

// PublisherStats are a publisher's counters since it started.
type PublisherStats struct {
	Messages uint64 // batches stored in the log
	Verdicts uint64 // verdicts in them
	Attacks  uint64 // attack reports in them
	Retries  uint64 // publishes tried again (no acknowledgement, or an error)
	Dropped  uint64 // batches dropped because the queue was full
	Queued   int    // batches waiting now
	// Failing is true from a failed publish until the next one succeeds.
	Failing bool
}

type pending struct {
	subject  string
	id       string
	data     []byte
	verdicts int
	attacks  int
	waiter   *waiter // nil for attack reports
}

// waiter calls fn once every batch of one Verdicts call is stored (or
// dropped).
type waiter struct {
	left atomic.Int32
	fn   func()
}

func (w *waiter) one() {
	if w != nil && w.left.Add(-1) == 0 && w.fn != nil {
		w.fn()
	}
}

// Publisher publishes verdicts and attack reports to the log in batches.
// Verdicts and Attacks never block: they encode the batch and queue it.
// Run publishes the queue in order, each batch until the log has it.
type Publisher struct {
	js  jetstream.JetStream
	cfg PublisherConfig
	log zerolog.Logger

	mu    sync.Mutex
	queue []pending
	seq   uint64
	wake  chan struct{}

	messages, verdicts, attacks, retries, dropped atomic.Uint64
	failing                                       atomic.Bool
	lastDropLog                                   atomic.Int64
}

// NewPublisher returns a Publisher; Run publishes.
func NewPublisher(js jetstream.JetStream, cfg PublisherConfig, log zerolog.Logger) *Publisher {
	cfg.defaults()
	return &Publisher{js: js, cfg: cfg, log: log, wake: make(chan struct{}, 1)}
}

// Verdicts queues the verdicts of one result made in term: proxies go to
// the proxy stream, the others to the clean stream. Verdicts with an error
// are not published. done (when not nil) is called once the log has
// stored them, or once they were dropped (the queue was full, or the
// publisher stopped with them): always exactly once, from another
// goroutine, never under a lock of the caller's. The leader delivers a
// result's outcomes from done, so that a verdict a node holds is in the
// log too, also when the leader dies right after the result.
func (p *Publisher) Verdicts(term int64, vs []*styxv1.Verdict, done func()) {
	var clean, proxies []*styxv1.Verdict
	for _, v := range vs {
		switch {
		case v.GetError() != "":
		case v.GetProxy():
			proxies = append(proxies, v)
		default:
			clean = append(clean, v)
		}
	}
	var w *waiter
	if done != nil {
		w = &waiter{fn: done}
		n := int32(0)
		if len(proxies) > 0 {
			n++
		}
		if len(clean) > 0 {
			n++
		}
		if n == 0 {
			go done()
			return
		}
		w.left.Store(n)
	}
	if len(proxies) > 0 {
		p.enqueue(SubjectProxy, term, &styxv1.LogBatch{Verdicts: proxies}, w)
	}
	if len(clean) > 0 {
		p.enqueue(SubjectClean, term, &styxv1.LogBatch{Verdicts: clean}, w)
	}
}

// Attacks queues attack reports accepted in term.
func (p *Publisher) Attacks(term int64, rs []*styxv1.AttackReport) {
	if len(rs) > 0 {
		p.enqueue(SubjectAttacks, term, &styxv1.LogBatch{Attacks: rs}, nil)
	}
}

func (p *Publisher) enqueue(subject string, term int64, b *styxv1.LogBatch, w *waiter) {
	p.mu.Lock()
	if len(p.queue) >= p.cfg.Queue {
		p.mu.Unlock()
		p.dropped.Add(1)
		if w != nil {
			go w.one() // not under the caller's locks
		}
		// At most one line a second: the count is in the metrics.
		now := time.Now().UnixNano()
		if last := p.lastDropLog.Load(); now-last >= int64(time.Second) && p.lastDropLog.CompareAndSwap(last, now) {
			p.log.Error().Uint64("dropped_total", p.dropped.Load()).Int("queue", p.cfg.Queue).
				Msg("verdict log: publish queue full, batch dropped (is NATS reachable?)")
		}
		return
	}
	p.seq++
	b.Term, b.Seq = term, p.seq
	data, err := proto.Marshal(b)
	if err != nil { // cannot happen for a valid message; keep it loud
		p.mu.Unlock()
		p.dropped.Add(1)
		p.log.Error().Err(err).Msg("verdict log: batch did not encode, dropped")
		if w != nil {
			go w.one()
		}
		return
	}
	p.queue = append(p.queue, pending{
		subject: subject, id: strconv.FormatInt(term, 10) + "." + strconv.FormatUint(b.Seq, 10), data: data,
		verdicts: len(b.Verdicts), attacks: len(b.Attacks), waiter: w,
	})
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Stats returns the counters.
func (p *Publisher) Stats() PublisherStats {
	p.mu.Lock()
	q := len(p.queue)
	p.mu.Unlock()
	return PublisherStats{
		Messages: p.messages.Load(), Verdicts: p.verdicts.Load(), Attacks: p.attacks.Load(),
		Retries: p.retries.Load(), Dropped: p.dropped.Load(), Queued: q, Failing: p.failing.Load(),
	}
}

// Run publishes until ctx ends. Then it keeps publishing what is queued
// for up to one AckWait more (a clean stop loses nothing while the log is
// reachable) and returns nil.
func (p *Publisher) Run(ctx context.Context) error {
	bo := retry.NewBackoff(50*time.Millisecond, 2*time.Second)
	for {
		if ctx.Err() != nil {
			p.drain()
			return nil
		}
		if !p.round(ctx) {
			if !retry.Sleep(ctx, bo.NextBackOff()) {
				p.drain()
				return nil
			}
			continue
		}
		bo.Reset()
		p.mu.Lock()
		empty := len(p.queue) == 0
		p.mu.Unlock()
		if empty {
			select {
			case <-p.wake:
			case <-ctx.Done():
			}
		}
	}
}

// drain publishes what is queued, bounded by one AckWait.
func (p *Publisher) drain() {
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.AckWait)
	defer cancel()
	for ctx.Err() == nil {
		p.mu.Lock()
		empty := len(p.queue) == 0
		p.mu.Unlock()
		if empty {
			return
		}
		if !p.round(ctx) {
			retry.Sleep(ctx, 100*time.Millisecond)
		}
	}
	p.mu.Lock()
	left := p.queue
	p.queue = nil
	p.mu.Unlock()
	if len(left) > 0 {
		p.dropped.Add(uint64(len(left)))
		p.log.Error().Int("batches", len(left)).Msg("verdict log: stopped with batches not published")
		for _, b := range left {
			b.waiter.one()
		}
	}
}

// round publishes up to InFlight batches from the head of the queue and
// removes those the log acknowledged, in order: the first failure keeps it
// and everything after it queued. It reports whether all went.
func (p *Publisher) round(ctx context.Context) bool {
	p.mu.Lock()
	n := min(len(p.queue), p.cfg.InFlight)
	batch := append([]pending(nil), p.queue[:n]...)
	p.mu.Unlock()
	if n == 0 {
		return true
	}
	futures := make([]jetstream.PubAckFuture, 0, n)
	var err error
	for _, b := range batch {
		var f jetstream.PubAckFuture
		// The expected stream makes each stream refuse a message meant for
		// the other: a reader's push consumer cannot copy one stream's
		// messages into the other (subject permissions cannot stop it).
		f, err = p.js.PublishMsgAsync(&nats.Msg{Subject: b.subject, Data: b.data}, jetstream.WithMsgID(b.id), jetstream.WithExpectStream(streamOf(b.subject)))
		if err != nil {
			break
		}
		futures = append(futures, f)
	}
	done := 0
	timer := time.NewTimer(p.cfg.AckWait)
	defer timer.Stop()
wait:
	for _, f := range futures {
		select {
		case <-f.Ok():
			done++
		case e := <-f.Err():
			err = e
			break wait
		case <-timer.C:
			err = errors.New("no acknowledgement in time")
			break wait
		case <-ctx.Done():
			err = ctx.Err()
			break wait
		}
	}
	var nv, na int
	for _, b := range batch[:done] {
		nv += b.verdicts
		na += b.attacks
	}
	p.mu.Lock()
	p.queue = p.queue[done:]
	if len(p.queue) == 0 {
		p.queue = nil // let the backing array go
	}
	p.mu.Unlock()
	for _, b := range batch[:done] {
		b.waiter.one()
	}
	p.messages.Add(uint64(done))
	p.verdicts.Add(uint64(nv))
	p.attacks.Add(uint64(na))
	if done < n {
		p.retries.Add(1)
		if !p.failing.Swap(true) {
			p.log.Error().Err(err).Int("queued", p.Stats().Queued).Msg("verdict log: publish failed, retrying with the same message ids")
		}
		return false
	}
	if p.failing.Swap(false) {
		p.log.Info().Msg("verdict log: publishing again")
	}
	return true
}

// streamOf is the stream that stores subject.
func streamOf(subject string) string {
	if subject == SubjectClean {
		return StreamClean
	}
	return StreamProxy // SubjectProxy, SubjectAttacks
}
