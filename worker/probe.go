package worker

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/styx-inference/styx/pkg/dialguard"
	"github.com/styx-inference/styx/pkg/evidence"
	"github.com/styx-inference/styx/pkg/evidence/proxyprobe"
	"github.com/styx-inference/styx/pkg/logging"
	"github.com/styx-inference/styx/pkg/raven"
)

const (
	// probeMaxWait is how long an examining goroutine waits for a probe
	// to start (a rate token, a slot) before it skips the probe: the
	// address is answered without it (skipped, reason busy).
	probeMaxWait = 50 * time.Millisecond
	// probeChunkSize is the service's chunk size while probing: small, so
	// that one batch's probes spread over the examining goroutines instead
	// of adding up in one.
	probeChunkSize = 16
)

// Reasons a probe was skipped (styx_worker_probes_skipped_total).
const (
	skipBusy    = "busy"    // the limits were reached: the probe could not start within probeMaxWait
	skipDenied  = "denied"  // the dial guard refused the address; nothing was dialed
	skipStopped = "stopped" // the worker is draining or stopping
)

// Kinds of probe errors (styx_worker_probe_errors_total).
const (
	errTimeout = "timeout" // the probe ran out of --probe-timeout (what it found still counts)
	errFailed  = "failed"
)

// probing is the open-proxy probe as a worker runs it: the probe behind
// its dial guard, an evidence.Runner bounding it, and the raven stage
// that wraps every engine the worker installs.
type probing struct {
	runner  *evidence.Runner
	stage   *raven.EvidenceStage
	metrics *probeMetrics
}

// newProbing builds the probe from cfg (Probe must be on) and registers
// its metrics on reg.
func newProbing(cfg Config, reg prometheus.Registerer, log zerolog.Logger) (*probing, error) {
	banner, err := decodeBanner(cfg.ProbeBanner)
	if err != nil {
		return nil, err
	}
	guard, err := dialguard.New(dialguard.Config{Allow: cfg.ProbeAllow})
	if err != nil {
		return nil, err
	}
	dialTimeout := min(proxyprobe.DefaultDialTimeout, cfg.ProbeTimeout)
	dialer, err := dialguard.NewDialer(dialguard.DialerConfig{Guard: guard, Timeout: dialTimeout})
	if err != nil {
		return nil, err
	}
	probe, err := proxyprobe.New(proxyprobe.Config{
		Enabled:          true,
		Dialer:           dialer,
		Target:           cfg.ProbeTarget,
		Banner:           banner,
		Ports:            cfg.ProbePorts,
		DialTimeout:      dialTimeout,
		HandshakeTimeout: min(proxyprobe.DefaultHandshakeTimeout, cfg.ProbeTimeout),
	}, log)
	if err != nil {
		return nil, err
	}
	runner, err := evidence.NewRunner(evidence.Config{
		Plugin:      probe,
		Concurrency: evidence.CommanderConfig{Min: cfg.ProbeConcurrencyMin, Max: cfg.ProbeConcurrencyMax},
		Rate:        cfg.ProbeRate,
		Burst:       max(1, int(math.Ceil(cfg.ProbeRate))), // a second's worth
		CallTimeout: cfg.ProbeTimeout,
		MaxWait:     probeMaxWait,
	}, log)
	if err != nil {
		return nil, err
	}
	m := newProbeMetrics(runner)
	if err := m.register(reg); err != nil {
		return nil, fmt.Errorf("probe metrics: %w", err)
	}
	stage, err := raven.NewEvidenceStage(raven.EvidenceConfig{
		Plugin: runner,
		// The Runner's CallTimeout is the bound that counts; this one only
		// leaves room for the waits before it.
		Timeout: cfg.ProbeTimeout + 2*probeMaxWait,
		Observe: m.observe,
	})
	if err != nil {
		return nil, err
	}
	plog := logging.For(log, "probe")
	plog.Info().Str("target", cfg.ProbeTarget.String()).
		Str("ports", (*portsValue)(&cfg.ProbePorts).String()).
		Str("allow", (*prefixesValue)(&cfg.ProbeAllow).String()).
		Float64("rate", cfg.ProbeRate).Int("concurrency_max", cfg.ProbeConcurrencyMax).
		Dur("timeout", cfg.ProbeTimeout).Msg("open-proxy probe on")
	return &probing{runner: runner, stage: stage, metrics: m}, nil
}

// wrap returns e with the probe after it.
func (p *probing) wrap(e raven.Engine) raven.Engine { return p.stage.Wrap(e) }

// run steers the probe's concurrency until ctx ends.
func (p *probing) run(ctx context.Context) { _ = p.runner.Run(ctx) }

// stop ends the probes in progress and turns probing off for good.
func (p *probing) stop() { p.stage.Stop() }

// poolSize is the examining pool's size while probing: a goroutine for
// every probe that may be in flight, beside one per CPU for the rest.
func poolSize(cfg Config) int { return runtime.GOMAXPROCS(0) + cfg.ProbeConcurrencyMax }

// probeMetrics are the probe's Prometheus metrics.
type probeMetrics struct {
	runs    prometheus.Counter
	found   *prometheus.CounterVec
	skipped *prometheus.CounterVec
	errs    *prometheus.CounterVec
	limit   prometheus.GaugeFunc
	flight  prometheus.GaugeFunc

	// The children counted on every address, resolved once.
	busy, denied, stopped, timeouts, failures prometheus.Counter
}

func newProbeMetrics(r *evidence.Runner) *probeMetrics {
	m := &probeMetrics{
		runs: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "styx", Subsystem: "worker", Name: "probes_total",
			Help: "Addresses the open-proxy probe ran on (with or without a finding, errors included).",
		}),
		found: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "styx", Subsystem: "worker", Name: "probe_proxies_total",
			Help: "Open proxies the probe confirmed, by type (HTTP, SOCKS4, SOCKS5).",
		}, []string{"type"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "styx", Subsystem: "worker", Name: "probes_skipped_total",
			Help: "Addresses answered without a probe, by reason (busy: the probe's limits were reached; denied: the dial guard refused the address; stopped: draining or stopping).",
		}, []string{"reason"}),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "styx", Subsystem: "worker", Name: "probe_errors_total",
			Help: "Probes that ended with an error, by kind (timeout: out of --probe-timeout; failed).",
		}, []string{"kind"}),
		limit: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "styx", Subsystem: "worker", Name: "probe_concurrency_limit",
			Help: "The probe's current concurrency limit.",
		}, func() float64 { return float64(r.Stats().Limit) }),
		flight: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "styx", Subsystem: "worker", Name: "probes_in_flight",
			Help: "Probes running.",
		}, func() float64 { return float64(r.Stats().InFlight) }),
	}
	for _, t := range []proxyprobe.Protocol{proxyprobe.HTTP, proxyprobe.SOCKS4, proxyprobe.SOCKS5} {
		m.found.WithLabelValues(t.String())
	}
	m.busy = m.skipped.WithLabelValues(skipBusy)
	m.denied = m.skipped.WithLabelValues(skipDenied)
	m.stopped = m.skipped.WithLabelValues(skipStopped)
	m.timeouts = m.errs.WithLabelValues(errTimeout)
	m.failures = m.errs.WithLabelValues(errFailed)
	return m
}

func (m *probeMetrics) register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.runs, m.found, m.skipped, m.errs, m.limit, m.flight} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// observe counts one examination (raven.EvidenceConfig.Observe).
func (m *probeMetrics) observe(r raven.EvidenceReport) {
	switch err := r.Err; {
	case err == nil:
		m.runs.Inc()
	case errors.Is(err, raven.ErrEvidenceStopped):
		m.stopped.Inc()
	case errors.Is(err, evidence.ErrBusy):
		m.busy.Inc()
	case errors.Is(err, dialguard.ErrDenied):
		m.denied.Inc()
	case errors.Is(err, evidence.ErrCallTimeout):
		m.runs.Inc()
		m.timeouts.Inc()
	default:
		m.runs.Inc()
		m.failures.Inc()
	}
	for _, f := range r.Found {
		if f.Type != "" {
			m.found.WithLabelValues(f.Type).Inc()
		}
	}
}
