package attackfeed

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/styx-inference/styx/pkg/attacks"
	"github.com/styx-inference/styx/pkg/history"
	"github.com/styx-inference/styx/pkg/logging"
	"github.com/styx-inference/styx/pkg/verdictlog"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

// Config configures a Follower.
type Config struct {
	// JS is the verdict log's JetStream handle. Its connection belongs to
	// the caller, who closes it after Run has returned.
	JS jetstream.JetStream
	// Table receives the attack reports.
	Table *attacks.Table
	// History, when set, folds the verdicts too: the follower reads both
	// streams and hands every message to History.ApplyBatch, which adds
	// the attack reports to Table itself (its Config.Attacks must be
	// Table). Nil: only the proxy stream is read, and only its attack
	// reports are kept.
	History *history.Table
	// MaxBurst, CheckEvery and StallAfter tune the log follower (zero:
	// verdictlog's defaults, 64 messages, 2 s and 30 s).
	MaxBurst   int
	CheckEvery time.Duration
	StallAfter time.Duration
}

// Validate reports a configuration error.
func (c Config) Validate() error {
	switch {
	case c.JS == nil:
		return errors.New("attackfeed: nil JetStream")
	case c.Table == nil:
		return errors.New("attackfeed: nil Table")
	case c.MaxBurst < 0 || c.CheckEvery < 0 || c.StallAfter < 0:
		return fmt.Errorf("attackfeed: negative follower setting (burst %d, check every %s, stall after %s)", c.MaxBurst, c.CheckEvery, c.StallAfter)
	}
	return nil
}

// Streams returns the streams a follower of cfg reads: both with a
// history table, the proxy stream (attack reports) alone without.
func (c Config) Streams() []string {
	if c.History != nil {
		return verdictlog.Streams
	}
	return []string{verdictlog.StreamProxy}
}

// Stats are the follower's counters since start.
type Stats struct {
	Reports  uint64 // attack reports added to the attack table
	Verdicts uint64 // verdicts that changed the history table (with History)
	Stale    uint64 // verdicts not newer than the one the history held (with History)
	Invalid  uint64 // verdicts and attack reports that did not decode (skipped)
}

// Follower follows the verdict log into the tables. Its goroutines are
// the log follower's, which Run waits for.
type Follower struct {
	cfg Config
	log zerolog.Logger
	f   *verdictlog.Follower

	reports  atomic.Uint64
	verdicts atomic.Uint64
	stale    atomic.Uint64
	invalid  atomic.Uint64
}

// New returns a Follower; Run follows.
func New(cfg Config, log zerolog.Logger) (*Follower, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	fl := &Follower{cfg: cfg, log: logging.For(log, "attackfeed")}
	f, err := verdictlog.NewFollower(verdictlog.FollowerConfig{
		JS:      cfg.JS,
		Streams: cfg.Streams(),
		// The tables live in memory: every start replays what the
		// streams' retention holds.
		Cursor:     func(string) (uint64, error) { return 0, nil },
		Apply:      fl.apply,
		MaxBurst:   cfg.MaxBurst,
		CheckEvery: cfg.CheckEvery,
		StallAfter: cfg.StallAfter,
	}, fl.log)
	if err != nil {
		return nil, fmt.Errorf("attackfeed: %w", err)
	}
	fl.f = f
	return fl, nil
}

// Stats returns the counters.
func (f *Follower) Stats() Stats {
	return Stats{Reports: f.reports.Load(), Verdicts: f.verdicts.Load(), Stale: f.stale.Load(), Invalid: f.invalid.Load()}
}

// Status returns the log follower's state: connection, lag per stream,
// stalls.
func (f *Follower) Status() verdictlog.Status { return f.f.Status() }

// Run follows the log from the start of retention until ctx ends; it
// returns nil then.
func (f *Follower) Run(ctx context.Context) error { return f.f.Run(ctx) }

// apply folds a burst of one stream's messages. It never fails: nothing is
// persisted, and an item that does not decode is counted and skipped (a
// retry could not fix it).
func (f *Follower) apply(_ string, msgs []verdictlog.Message) error {
	for _, m := range msgs {
		if h := f.cfg.History; h != nil {
			f.fold(h, m)
		} else {
			f.addAttacks(m.Batch)
		}
	}
	return nil
}

// fold hands one message to the history, which adds its attack reports
// to the attack table first.
func (f *Follower) fold(h *history.Table, m verdictlog.Message) {
	got, err := h.ApplyBatch(m.Batch)
	f.verdicts.Add(uint64(got.Verdicts))
	f.stale.Add(uint64(got.Stale))
	f.reports.Add(uint64(got.Attacks))
	if got.Invalid > 0 {
		f.invalid.Add(uint64(got.Invalid))
		f.log.Debug().Err(err).Str("stream", m.Stream).Uint64("seq", m.Seq).Msg("invalid log items skipped")
	}
}

// addAttacks adds a message's attack reports to the attack table; its
// verdicts (proxy verdicts share the stream) are not wanted.
func (f *Follower) addAttacks(b *styxv1.LogBatch) {
	for _, p := range b.GetAttacks() {
		r, err := attacks.FromProto(p)
		if err != nil {
			f.invalid.Add(1)
			f.log.Debug().Err(err).Msg("invalid attack report skipped")
			continue
		}
		if f.cfg.Table.Add(r) {
			f.reports.Add(1)
		}
	}
}

// Register adds the follower's metrics to reg: the tables' (styx_worker_
// attack_*, styx_worker_history_*) and the log follower's
// (styx_worker_log_*: connection, lag, stalls).
func (f *Follower) Register(reg prometheus.Registerer) error {
	counter := func(name, help string, v func() uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "styx", Subsystem: "worker", Name: name, Help: help},
			func() float64 { return float64(v()) })
	}
	t := f.cfg.Table
	for _, c := range []prometheus.Collector{
		counter("attack_reports_total", "Attack reports from the verdict log added to the attack table.", f.reports.Load),
		counter("attack_reports_duplicate_total", "Attack reports not counted again (seen before).", t.Duplicates),
		counter("attack_table_evicted_total", "Addresses dropped from the full attack table.", t.Evicted),
		counter("invalid_log_items_total", "Verdicts and attack reports in log messages that did not decode (skipped).", f.invalid.Load),
		counter("history_verdicts_total", "Verdicts from the verdict log that changed the history (0 with --history=false).", f.verdicts.Load),
		counter("history_verdicts_stale_total", "Verdicts from the verdict log not newer than the one the history held (no change).", f.stale.Load),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "styx", Subsystem: "worker", Name: "attack_table_addresses",
			Help: "Addresses in the attack table."}, func() float64 { return float64(t.Len()) }),
	} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	if err := f.f.Register(reg, "styx_worker"); err != nil {
		return err
	}
	if h := f.cfg.History; h != nil {
		return reg.Register(history.NewCollector(h, "styx_worker"))
	}
	return nil
}
