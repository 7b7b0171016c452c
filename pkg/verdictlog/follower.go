package verdictlog

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"github.com/styx-inference/styx/pkg/retry"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

// Message is one log message handed to a follower's Apply.
type Message struct {
	Stream string
	Seq    uint64    // the stream sequence
	Time   time.Time // when the log stored it
	// Batch is the decoded message; a message that did not decode is
	// handed over empty (counted as invalid), so that the cursor still
	// moves past it.
	Batch *styxv1.LogBatch
}

// FollowerConfig configures a Follower.
type FollowerConfig struct {
	JS jetstream.JetStream
	// Streams to follow (default both, Streams).
	Streams []string
	// Cursor returns the sequence of the last message applied from a
	// stream (0: none, follow from the start of retention). It is called
	// once per stream, when Run starts; afterwards the follower counts on
	// its own.
	Cursor func(stream string) (uint64, error)
	// Apply applies a burst of consecutive messages of one stream, oldest
	// first. A follower that persists must store msgs[len(msgs)-1].Seq as
	// the stream's cursor in the same transaction as the data, so that
	// apply is exactly-once across a crash. An error leaves the cursor
	// where it was; the burst is offered again after a backoff. Apply is
	// called from one goroutine per stream.
	Apply func(stream string, msgs []Message) error
	// MaxBurst bounds the messages per Apply (default 64).
	MaxBurst int
	// CheckEvery is how often the stream heads are read for the lag
	// (default 2 s).
	CheckEvery time.Duration
	// StallAfter: a follower that is connected and behind, but applied
	// nothing for this long, is stalled (default 30 s: a JetStream stream
	// leader failover can hold an ordered consumer 10 to 20 s).
	StallAfter time.Duration
}

// StreamStatus is one stream's position.
type StreamStatus struct {
	Stream     string
	Applied    uint64  // the last sequence applied
	Head       uint64  // the stream's last sequence, at the last check
	Lag        uint64  // messages behind the head (retention aside)
	LagSeconds float64 // how old the newest applied message was while behind; 0 when caught up
	Messages   uint64  // messages applied since start
	Skipped    uint64  // messages the cursor named that retention had dropped
}

// Status is a follower's state.
type Status struct {
	Connected bool // the NATS connection is up
	// Stalled: connected and behind, and nothing applied for StallAfter.
	Stalled bool
	Stalls  uint64 // times it became stalled
	Invalid uint64 // messages that did not decode
	Streams []StreamStatus
}

// Lag sums the streams' lags: messages, and the largest in seconds.
func (s Status) Lag() (messages uint64, seconds float64) {
	for _, st := range s.Streams {
		messages += st.Lag
		seconds = max(seconds, st.LagSeconds)
	}
	return messages, seconds
}

type streamState struct {
	name string

	mu         sync.Mutex
	applied    uint64
	appliedAt  time.Time // the log's time of the last message applied
	head       uint64
	first      uint64
	firstTime  time.Time
	headTime   time.Time
	lastMoved  time.Time // our clock when applied last moved (or the follower started)
	messages   uint64
	skipped    uint64
	headKnown  bool
	applyError bool
}

// minPull is the fewest messages one pull asks for. Small pulls behind a
// blocked handler were seen to stall a consumer until its heartbeat check
// re-created it (about 10 s); 256 never did.
const minPull = 256

// Follower follows the log's streams into Apply.
type Follower struct {
	cfg FollowerConfig
	log zerolog.Logger

	streams []*streamState
	stalled atomic.Bool
	stalls  atomic.Uint64
	invalid atomic.Uint64
}

// NewFollower returns a Follower; Run follows.
func NewFollower(cfg FollowerConfig, log zerolog.Logger) (*Follower, error) {
	switch {
	case cfg.JS == nil:
		return nil, errors.New("verdictlog: nil JetStream")
	case cfg.Cursor == nil:
		return nil, errors.New("verdictlog: nil Cursor")
	case cfg.Apply == nil:
		return nil, errors.New("verdictlog: nil Apply")
	}
	if len(cfg.Streams) == 0 {
		cfg.Streams = Streams
	}
	if cfg.MaxBurst <= 0 {
		cfg.MaxBurst = 64
	}
	if cfg.CheckEvery <= 0 {
		cfg.CheckEvery = 2 * time.Second
	}
	if cfg.StallAfter <= 0 {
		cfg.StallAfter = 30 * time.Second
	}
	f := &Follower{cfg: cfg, log: log}
	now := time.Now()
	for _, s := range cfg.Streams {
		f.streams = append(f.streams, &streamState{name: s, lastMoved: now})
	}
	return f, nil
}

// Status returns the follower's state.
func (f *Follower) Status() Status {
	st := Status{Connected: f.connected(), Stalled: f.stalled.Load(), Stalls: f.stalls.Load(), Invalid: f.invalid.Load()}
	for _, s := range f.streams {
		st.Streams = append(st.Streams, s.status())
	}
	return st
}

func (f *Follower) connected() bool {
	return f.cfg.JS.Conn().Status() == nats.CONNECTED
}

func (s *streamState) status() StreamStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := StreamStatus{Stream: s.name, Applied: s.applied, Head: s.head, Messages: s.messages, Skipped: s.skipped}
	out.Lag, out.LagSeconds = s.lagLocked(time.Now())
	return out
}

func (s *streamState) lagLocked(now time.Time) (uint64, float64) {
	if !s.headKnown {
		return 0, 0
	}
	from := s.applied
	if s.first > 0 && from < s.first-1 {
		from = s.first - 1 // dropped by retention: not a lag
	}
	if s.head <= from {
		return 0, 0
	}
	since := s.appliedAt
	if since.IsZero() || s.applied < from {
		since = s.firstTime // nothing retained applied yet: the oldest message waits
	}
	return s.head - from, max(0, now.Sub(since).Seconds())
}

// Run follows every stream until ctx ends; it returns nil then, or the
// error of a Cursor.
func (f *Follower) Run(ctx context.Context) error {
	for _, s := range f.streams {
		seq, err := f.cfg.Cursor(s.name)
		if err != nil {
			return fmt.Errorf("verdictlog: cursor of %s: %w", s.name, err)
		}
		s.mu.Lock()
		s.applied = seq
		s.mu.Unlock()
	}
	var wg sync.WaitGroup
	for _, s := range f.streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.follow(ctx, s)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		f.watch(ctx)
	}()
	wg.Wait()
	return nil
}

// follow keeps one stream's ordered consumer going until ctx ends.
func (f *Follower) follow(ctx context.Context, s *streamState) {
	log := f.log.With().Str("stream", s.name).Logger()
	bo := retry.NewBackoff(100*time.Millisecond, 5*time.Second)
	for ctx.Err() == nil {
		err := f.consume(ctx, s, log)
		if ctx.Err() != nil {
			return
		}
		log.Warn().Err(err).Msg("verdict log: following stopped, starting again")
		if !retry.Sleep(ctx, bo.NextBackOff()) {
			return
		}
	}
}

// consume runs one ordered consumer from the stream's applied sequence.
// The ordered consumer itself survives reconnections and server restarts
// (it is created again after the last message it delivered); consume
// returns on an Apply failure, or when the consumer cannot be created.
func (f *Follower) consume(ctx context.Context, s *streamState, log zerolog.Logger) error {
	s.mu.Lock()
	start := s.applied
	s.mu.Unlock()
	occ := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	if start > 0 {
		occ = jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: start + 1}
	}
	cons, err := f.cfg.JS.OrderedConsumer(ctx, s.name, occ)
	if err != nil {
		return fmt.Errorf("ordered consumer: %w", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := make(chan jetstream.Msg, f.cfg.MaxBurst)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		select {
		case ch <- m:
		case <-cctx.Done():
		}
	}, jetstream.PullMaxMessages(max(2*f.cfg.MaxBurst, minPull)), jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		log.Debug().Err(err).Msg("verdict log: consumer")
	}))
	if err != nil {
		return fmt.Errorf("consume: %w", err)
	}
	defer cc.Stop()
	burst := make([]Message, 0, f.cfg.MaxBurst)
	next := start + 1
	for {
		burst = burst[:0]
		select {
		case <-ctx.Done():
			return ctx.Err()
		case m := <-ch:
			burst = append(burst, f.message(s.name, m))
		}
	fill:
		for len(burst) < f.cfg.MaxBurst {
			select {
			case m := <-ch:
				burst = append(burst, f.message(s.name, m))
			default:
				break fill
			}
		}
		if first := burst[0].Seq; first > next && start > 0 {
			s.mu.Lock()
			s.skipped += first - next
			s.mu.Unlock()
			log.Warn().Uint64("from", next).Uint64("to", first-1).
				Msg("verdict log: messages past retention were dropped before this follower read them")
		}
		if err := f.apply(ctx, s, burst, log); err != nil {
			return err
		}
		next = burst[len(burst)-1].Seq + 1
		start = next - 1
	}
}

func (f *Follower) message(stream string, m jetstream.Msg) Message {
	out := Message{Stream: stream, Batch: &styxv1.LogBatch{}}
	if md, err := m.Metadata(); err == nil {
		out.Seq, out.Time = md.Sequence.Stream, md.Timestamp
	}
	if err := proto.Unmarshal(m.Data(), out.Batch); err != nil {
		f.invalid.Add(1)
		f.log.Error().Err(err).Str("stream", stream).Uint64("seq", out.Seq).Msg("verdict log: message did not decode, skipped")
		out.Batch = &styxv1.LogBatch{}
	}
	return out
}

// apply hands a burst to Apply, retrying while it fails (the burst is not
// lost: the cursor did not move). It gives up only when ctx ends.
func (f *Follower) apply(ctx context.Context, s *streamState, burst []Message, log zerolog.Logger) error {
	bo := retry.NewBackoff(100*time.Millisecond, 5*time.Second)
	for {
		err := f.cfg.Apply(s.name, burst)
		if err == nil {
			break
		}
		s.mu.Lock()
		s.applyError = true
		s.mu.Unlock()
		log.Error().Err(err).Uint64("seq", burst[0].Seq).Msg("verdict log: apply failed, retrying")
		if !retry.Sleep(ctx, bo.NextBackOff()) {
			return ctx.Err()
		}
	}
	last := burst[len(burst)-1]
	s.mu.Lock()
	s.applied, s.appliedAt, s.lastMoved = last.Seq, last.Time, time.Now()
	s.messages += uint64(len(burst))
	s.applyError = false
	if last.Seq > s.head {
		s.head, s.headTime = last.Seq, last.Time
	}
	s.mu.Unlock()
	return nil
}

// watch reads the stream heads every CheckEvery and decides stalls.
func (f *Follower) watch(ctx context.Context) {
	t := time.NewTicker(f.cfg.CheckEvery)
	defer t.Stop()
	for {
		f.check(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (f *Follower) check(ctx context.Context) {
	now := time.Now()
	stalled := false
	connected := f.connected()
	for _, s := range f.streams {
		if connected {
			ictx, cancel := context.WithTimeout(ctx, max(f.cfg.CheckEvery, 2*time.Second))
			st, err := f.cfg.JS.Stream(ictx, s.name)
			var info *jetstream.StreamInfo
			if err == nil {
				info, err = st.Info(ictx)
			}
			cancel()
			if err == nil {
				s.mu.Lock()
				s.head, s.first, s.headTime, s.headKnown = info.State.LastSeq, info.State.FirstSeq, info.State.LastTime, true
				s.firstTime = info.State.FirstTime
				s.mu.Unlock()
			} else if ctx.Err() == nil {
				f.log.Debug().Err(err).Str("stream", s.name).Msg("verdict log: stream head not read")
			}
		}
		s.mu.Lock()
		lag, _ := s.lagLocked(now)
		if lag == 0 {
			s.lastMoved = now // caught up: the stall clock starts when it falls behind
		} else if connected && now.Sub(s.lastMoved) >= f.cfg.StallAfter {
			stalled = true
		}
		s.mu.Unlock()
	}
	if stalled && !f.stalled.Swap(true) {
		f.stalls.Add(1)
		m, sec := f.Status().Lag()
		f.log.Error().Uint64("lag_messages", m).Float64("lag_seconds", sec).Dur("no_progress_for", f.cfg.StallAfter).
			Msg("verdict log: follower stalled: connected and behind, but applying nothing")
	} else if !stalled && f.stalled.Swap(false) {
		f.log.Info().Msg("verdict log: follower moving again")
	}
}

// Register adds the follower's metrics to reg, as <prefix>_log_*.
func (f *Follower) Register(reg prometheus.Registerer, prefix string) error {
	return reg.Register(&collector{f: f, prefix: prefix})
}

type collector struct {
	f      *Follower
	prefix string
}

func (c *collector) desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(c.prefix+"_log_"+name, help, labels, nil)
}

func (c *collector) descs() []*prometheus.Desc {
	return []*prometheus.Desc{
		c.desc("connected", "1 while the connection to the verdict log (NATS) is up."),
		c.desc("stalled", "1 while the follower is connected and behind but applies nothing (alert on it)."),
		c.desc("stalls_total", "Times the follower became stalled."),
		c.desc("invalid_total", "Log messages that did not decode (skipped)."),
		c.desc("lag_messages", "Messages between the last one applied and the stream's head.", "stream"),
		c.desc("lag_seconds", "While behind: age of the newest message applied.", "stream"),
		c.desc("applied_sequence", "Stream sequence of the last message applied.", "stream"),
		c.desc("messages_total", "Log messages applied.", "stream"),
		c.desc("skipped_total", "Messages dropped by retention before this follower read them.", "stream"),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs() {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	d := c.descs()
	st := c.f.Status()
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	ch <- prometheus.MustNewConstMetric(d[0], prometheus.GaugeValue, b(st.Connected))
	ch <- prometheus.MustNewConstMetric(d[1], prometheus.GaugeValue, b(st.Stalled))
	ch <- prometheus.MustNewConstMetric(d[2], prometheus.CounterValue, float64(st.Stalls))
	ch <- prometheus.MustNewConstMetric(d[3], prometheus.CounterValue, float64(st.Invalid))
	for _, s := range st.Streams {
		ch <- prometheus.MustNewConstMetric(d[4], prometheus.GaugeValue, float64(s.Lag), s.Stream)
		ch <- prometheus.MustNewConstMetric(d[5], prometheus.GaugeValue, s.LagSeconds, s.Stream)
		ch <- prometheus.MustNewConstMetric(d[6], prometheus.GaugeValue, float64(s.Applied), s.Stream)
		ch <- prometheus.MustNewConstMetric(d[7], prometheus.CounterValue, float64(s.Messages), s.Stream)
		ch <- prometheus.MustNewConstMetric(d[8], prometheus.CounterValue, float64(s.Skipped), s.Stream)
	}
}
