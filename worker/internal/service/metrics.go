package service

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Batch outcomes counted by Metrics.
const (
	outcomeAnswered = "answered" // result sent
	outcomeRefused  = "refused"
	outcomeDropped  = "dropped" // session ended before the result was sent
)

// Metrics are the service's Prometheus metrics. A nil *Metrics records
// nothing.
type Metrics struct {
	batches   *prometheus.CounterVec
	refusals  *prometheus.CounterVec
	addresses prometheus.Counter
	busy      prometheus.Counter
	inFlight  prometheus.Gauge
	sessions  prometheus.Gauge
	credits   prometheus.Counter
	draining  prometheus.Gauge
}

// NewMetrics creates the metrics and registers them on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "styx", Subsystem: "worker", Name: "batches_total",
			Help: "Batches received, by outcome (answered, refused, dropped).",
		}, []string{"outcome"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "styx", Subsystem: "worker", Name: "refusals_total",
			Help: "Batches refused, by reason.",
		}, []string{"reason"}),
		addresses: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "styx", Subsystem: "worker", Name: "addresses_total",
			Help: "Addresses examined in answered batches.",
		}),
		busy: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "styx", Subsystem: "worker", Name: "busy_seconds_total",
			Help: "Engine time spent on answered batches (including any artificial batch delay).",
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "styx", Subsystem: "worker", Name: "in_flight_batches",
			Help: "Batches accepted and not yet answered.",
		}),
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "styx", Subsystem: "worker", Name: "sessions",
			Help: "Open scheduler sessions (including superseded ones not yet closed).",
		}),
		credits: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "styx", Subsystem: "worker", Name: "credits_granted_total",
			Help: "Credits granted to schedulers (each lets a scheduler send one more batch).",
		}),
		draining: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "styx", Subsystem: "worker", Name: "draining",
			Help: "1 once the worker drains (SIGTERM or a scheduler's Drain): no credits, new batches refused.",
		}),
	}
	reg.MustRegister(m.batches, m.refusals, m.addresses, m.busy, m.inFlight, m.sessions, m.credits, m.draining)
	for _, o := range []string{outcomeAnswered, outcomeRefused, outcomeDropped} {
		m.batches.WithLabelValues(o)
	}
	return m
}

func (m *Metrics) answered(addresses int, busy time.Duration) {
	if m == nil {
		return
	}
	m.batches.WithLabelValues(outcomeAnswered).Inc()
	m.addresses.Add(float64(addresses))
	m.busy.Add(busy.Seconds())
}

func (m *Metrics) refused(reason string) {
	if m == nil {
		return
	}
	m.batches.WithLabelValues(outcomeRefused).Inc()
	m.refusals.WithLabelValues(reason).Inc()
}

func (m *Metrics) dropped(n int) {
	if m == nil || n == 0 {
		return
	}
	m.batches.WithLabelValues(outcomeDropped).Add(float64(n))
}

func (m *Metrics) setInFlight(n int) {
	if m == nil {
		return
	}
	m.inFlight.Set(float64(n))
}

func (m *Metrics) addSessions(d int) {
	if m == nil {
		return
	}
	m.sessions.Add(float64(d))
}

func (m *Metrics) granted(n int) {
	if m == nil || n <= 0 {
		return
	}
	m.credits.Add(float64(n))
}

func (m *Metrics) setDraining() {
	if m == nil {
		return
	}
	m.draining.Set(1)
}
