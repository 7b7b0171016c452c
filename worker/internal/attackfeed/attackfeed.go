package attackfeed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/styx-inference/styx/pkg/attacks"
	"github.com/styx-inference/styx/pkg/history"
	"github.com/styx-inference/styx/pkg/keyspace"
	"github.com/styx-inference/styx/pkg/logging"
	"github.com/styx-inference/styx/pkg/retry"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

// Config configures a Follower.
type Config struct {
	// Leaders sends the current leader each time it changes (the zero
	// LeaderInfo when there is none) and is closed when ctx ends:
	// leader.Observe bound to an etcd client.
	Leaders func(ctx context.Context) <-chan keyspace.LeaderInfo
	// Table receives the reports.
	Table *attacks.Table
	// History, when set, folds the whole feed, verdicts too: the follower
	// asks for every event (not attacks_only) and hands each one to
	// History.Apply, which adds the attack reports to Table itself (its
	// Config.Attacks must be Table).
	History *history.Table
	// BackoffMin and BackoffMax bound the reconnect delay (defaults
	// 100 ms and 5 s).
	BackoffMin, BackoffMax time.Duration
	// DialOptions are added to the defaults (insecure transport).
	DialOptions []grpc.DialOption
}

// Validate reports a configuration error.
func (c Config) Validate() error {
	switch {
	case c.Leaders == nil:
		return errors.New("attackfeed: nil Leaders")
	case c.Table == nil:
		return errors.New("attackfeed: nil Table")
	case c.BackoffMin < 0 || (c.BackoffMax != 0 && c.BackoffMax < c.BackoffMin):
		return fmt.Errorf("attackfeed: backoff bounds %s..%s", c.BackoffMin, c.BackoffMax)
	}
	return nil
}

// Stats are the follower's counters since start.
type Stats struct {
	Reports   uint64 // attack reports added to the table
	Verdicts  uint64 // verdicts folded into the history (with History)
	Invalid   uint64 // attack reports that did not decode (skipped)
	Gaps      uint64 // restarts from "now" (revision too old or from another term)
	Connected bool   // a feed stream is up
	Revision  uint64 // the last revision seen
}

// Follower follows the leader's feed into the table. Its only goroutines
// are Run's and, per leader, one feed stream's; Run waits for them.
type Follower struct {
	cfg Config
	log zerolog.Logger

	rev       atomic.Uint64 // owned by the single feed session; read by Stats
	reports   atomic.Uint64
	verdicts  atomic.Uint64
	invalid   atomic.Uint64
	gaps      atomic.Uint64
	connected atomic.Bool
}

// New returns a Follower; Run follows.
func New(cfg Config, log zerolog.Logger) (*Follower, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.BackoffMin == 0 {
		cfg.BackoffMin = 100 * time.Millisecond
	}
	if cfg.BackoffMax == 0 {
		cfg.BackoffMax = 5 * time.Second
	}
	return &Follower{cfg: cfg, log: logging.For(log, "attackfeed")}, nil
}

// Stats returns the counters.
func (f *Follower) Stats() Stats {
	return Stats{
		Reports: f.reports.Load(), Verdicts: f.verdicts.Load(), Invalid: f.invalid.Load(), Gaps: f.gaps.Load(),
		Connected: f.connected.Load(), Revision: f.rev.Load(),
	}
}

// Run follows the leader's feed until ctx ends; it returns nil then.
func (f *Follower) Run(ctx context.Context) error {
	type running struct {
		cancel context.CancelFunc
		done   chan struct{}
	}
	var cur *running
	stop := func() {
		if cur != nil {
			cur.cancel()
			<-cur.done
			cur = nil
		}
	}
	leaders := f.cfg.Leaders(ctx)
	for {
		select {
		case li, ok := <-leaders:
			stop()
			if !ok {
				return nil // the watch closes only when ctx ends
			}
			if li.GRPCAddr == "" {
				continue
			}
			lctx, cancel := context.WithCancel(ctx)
			cur = &running{cancel: cancel, done: make(chan struct{})}
			go func(done chan struct{}) {
				defer close(done)
				f.follow(lctx, li)
			}(cur.done)
		case <-ctx.Done():
			stop()
			return nil
		}
	}
}

// follow keeps a feed stream to one leader until ctx ends.
func (f *Follower) follow(ctx context.Context, li keyspace.LeaderInfo) {
	log := f.log.With().Str(logging.Leader, li.ID).Logger()
	opts := append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, f.cfg.DialOptions...)
	conn, err := grpc.NewClient(li.GRPCAddr, opts...)
	if err != nil {
		log.Error().Err(err).Str("grpc_addr", li.GRPCAddr).Msg("bad leader address")
		return
	}
	defer conn.Close()
	client := styxv1.NewSchedulerServiceClient(conn)
	bo := retry.NewBackoff(f.cfg.BackoffMin, f.cfg.BackoffMax)
	for {
		got, err := f.session(ctx, client)
		if ctx.Err() != nil {
			return
		}
		if got {
			bo.Reset()
		}
		switch status.Code(err) {
		case codes.OutOfRange:
			f.gaps.Add(1)
			f.rev.Store(0)
			log.Info().Err(err).Msg("feed revision not in the leader's ring, following from now")
			continue // at once: from "now" cannot be out of range
		case codes.FailedPrecondition:
			log.Debug().Err(err).Msg("scheduler is not the leader, waiting")
		default:
			log.Warn().Err(err).Msg("attack feed ended, reconnecting")
		}
		if !retry.Sleep(ctx, bo.NextBackOff()) {
			return
		}
	}
}

// session follows one Feed stream; got reports whether any event came.
func (f *Follower) session(ctx context.Context, client styxv1.SchedulerServiceClient) (got bool, err error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	hist := f.cfg.History
	stream, err := client.Feed(sctx, &styxv1.FeedRequest{FromRevision: f.rev.Load(), AttacksOnly: hist == nil})
	if err != nil {
		return false, err
	}
	f.connected.Store(true)
	defer f.connected.Store(false)
	for {
		ev, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("leader ended the feed")
			}
			return got, err
		}
		got = true
		if hist != nil {
			f.fold(hist, ev)
		} else if p := ev.GetAttack(); p != nil {
			if r, err := attacks.FromProto(p); err != nil {
				f.invalid.Add(1)
				f.log.Debug().Err(err).Msg("invalid attack report skipped")
			} else if f.cfg.Table.Add(r) {
				f.reports.Add(1)
			}
		}
		f.rev.Store(ev.GetRevision())
	}
}

// fold hands one event to the history, which checks its revision and
// adds an attack report to the attack table first.
func (f *Follower) fold(hist *history.Table, ev *styxv1.FeedEvent) {
	changed, err := hist.Apply(ev)
	switch {
	case err != nil:
		f.invalid.Add(1)
		f.log.Debug().Err(err).Msg("invalid feed event skipped")
	case !changed:
	case ev.GetAttack() != nil:
		f.reports.Add(1)
	case ev.GetVerdict() != nil:
		f.verdicts.Add(1)
	}
}

// Register adds the follower's and the table's metrics to reg.
func (f *Follower) Register(reg prometheus.Registerer) error {
	counter := func(name, help string, v func() uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "styx", Subsystem: "worker", Name: name, Help: help},
			func() float64 { return float64(v()) })
	}
	t := f.cfg.Table
	for _, c := range []prometheus.Collector{
		counter("attack_reports_total", "Attack reports from the feed added to the attack table.", f.reports.Load),
		counter("attack_reports_duplicate_total", "Attack reports not counted again (seen before).", t.Duplicates),
		counter("attack_feed_gaps_total", "Attack feed restarts from now (revision not in the leader's ring).", f.gaps.Load),
		counter("attack_table_evicted_total", "Addresses dropped from the full attack table.", t.Evicted),
		counter("history_verdicts_total", "Verdicts from the feed folded into the history (0 without --history).", f.verdicts.Load),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "styx", Subsystem: "worker", Name: "attack_table_addresses",
			Help: "Addresses in the attack table."}, func() float64 { return float64(t.Len()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "styx", Subsystem: "worker", Name: "attack_feed_connected",
			Help: "1 while the attack feed stream is up."}, func() float64 {
			if f.connected.Load() {
				return 1
			}
			return 0
		}),
	} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	if h := f.cfg.History; h != nil {
		return reg.Register(history.NewCollector(h, "styx_worker"))
	}
	return nil
}
