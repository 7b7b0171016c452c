package scheduler

import (
	"context"
	"fmt"
	"html/template"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/protobuf/encoding/protojson"

	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
	"github.com/styx-inference/styx/scheduler/internal/api"
	"github.com/styx-inference/styx/scheduler/internal/state"
	"github.com/styx-inference/styx/scheduler/internal/visual"
)

func (s *Scheduler) httpHandler(h *api.Server) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), &collector{s: s})
	reg.MustRegister(s.guard.Collector("styx_scheduler"))
	if s.cfg.PKI != nil {
		_ = s.cfg.PKI.Register(reg, "styx_scheduler")
	}
	auth := tokenGuard{Token: s.cfg.HTTPToken}
	if auth.Token != "" {
		auth.Limiter = newHTTPLimiter(s.log, nil)
		reg.MustRegister(auth.Limiter.Collector(httpAuthMetrics))
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		// The process serves: 200. A log that cannot be published to is
		// named (and in the metrics), but restarting the scheduler would
		// not fix it, so it does not fail the check.
		fmt.Fprintln(w, "ok")
		if st, ok := s.LogStats(); ok && (st.Failing || st.Dropped > 0) {
			state := "publishing"
			if st.Failing {
				state = "publishing failing"
			}
			fmt.Fprintf(w, "verdict log: %s, %d batches queued, %d dropped\n", state, st.Queued, st.Dropped)
		}
		// Trust refusals this term: a registration no certificate proves,
		// a worker sending future-dated verdicts. Named, not failed: a
		// restart would not fix them.
		if co := s.current.Load(); co != nil {
			if _, ctr, _, _ := co.Stats(); ctr.UnprovenWorkers > 0 || ctr.FutureVerdicts > 0 {
				fmt.Fprintf(w, "refused: %d worker connections whose certificate does not prove the registration, %d results with future-dated verdicts\n",
					ctr.UnprovenWorkers, ctr.FutureVerdicts)
			}
		}
	})
	mux.HandleFunc("GET /api/status", func(w http.ResponseWriter, r *http.Request) {
		st, err := h.Status(r.Context(), &styxv1.StatusRequest{})
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		b, _ := protojson.MarshalOptions{EmitUnpopulated: true, Indent: "  "}.Marshal(st)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(b)
	})
	mux.HandleFunc("GET /{$}", visual.Page)
	mux.Handle("GET /assets/", visual.Assets())
	mux.HandleFunc("GET /events", s.visual.ServeEvents)
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		st, err := h.Status(ctx, &styxv1.StatusRequest{})
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = statusPage.Execute(w, st)
	})
	return requireTokenWith(auth, mux)
}

var statusPage = template.Must(template.New("status").Funcs(template.FuncMap{
	"pct": func(f float64) string { return fmt.Sprintf("%.1f%%", 100*f) },
}).Parse(`<!doctype html>
<html><head><meta charset="utf-8"><meta http-equiv="refresh" content="2"><title>STYX</title>
<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}</style>
</head><body>
<h1>STYX scheduler {{.SchedulerId}}</h1>
<p>{{if .Leader}}Leading, term {{.Term}}.{{else}}Following; leader: {{.LeaderId}}.{{end}} Refreshes every 2 s. Live picture: <a href="/">the visualiser</a>. Machine-readable: <a href="/api/status">/api/status</a>, <a href="/metrics">/metrics</a>.</p>
{{with .Pool}}<h2>Pool</h2>
<table><tr><th>pending</th><th>in flight</th><th>oldest</th><th>received</th><th>examined</th><th>deduplicated</th><th>shed</th><th>expired</th><th>reassigned</th><th>coverage</th><th>policy</th></tr>
<tr><td>{{.Pending}}</td><td>{{.InFlight}}</td><td>{{.OldestAgeMillis}} ms</td><td>{{.Received}}</td><td>{{.Examined}}</td><td>{{.Deduplicated}}</td><td>{{.Shed}}</td><td>{{.Expired}}</td><td>{{.Reassigned}}</td><td>{{pct .Coverage}}</td><td>{{.ShedPolicy}}</td></tr></table>{{end}}
<h2>Workers</h2>
<table><tr><th>id</th><th>host</th><th>NUMA</th><th>CPUs</th><th>state</th><th>capacity</th><th>credits</th><th>in flight</th><th>batches</th><th>addresses</th><th>model</th></tr>
{{range .Workers}}<tr><td>{{.WorkerId}}</td><td>{{.Host}}</td><td>{{.NumaNode}}</td><td>{{.Cpus}}</td><td>{{.State}}</td><td>{{.Capacity}}</td><td>{{.Credits}}</td><td>{{.InFlight}}</td><td>{{.BatchesDone}}</td><td>{{.AddressesDone}}</td><td>{{.ModelVersion}}</td></tr>{{end}}
</table>
<h2>Cluster nodes</h2><ul>{{range .Nodes}}<li>{{.}}</li>{{end}}</ul>
</body></html>`))

// collector exports the leader's figures at scrape time.
type collector struct{ s *Scheduler }

var (
	descLeader   = prometheus.NewDesc("styx_scheduler_leader", "1 when this scheduler leads.", nil, nil)
	descTerm     = prometheus.NewDesc("styx_scheduler_term", "The leader's fencing term.", nil, nil)
	descPending  = prometheus.NewDesc("styx_pool_pending", "Addresses waiting for a worker.", nil, nil)
	descInFlight = prometheus.NewDesc("styx_pool_in_flight", "Addresses out on workers.", nil, nil)
	descOldest   = prometheus.NewDesc("styx_pool_oldest_age_seconds", "Age of the oldest pending address.", nil, nil)
	descCoverage = prometheus.NewDesc("styx_pool_coverage_ratio", "Examined / (examined + shed + expired).", nil, nil)
	descRecent   = prometheus.NewDesc("styx_pool_recent", "Verdicts in the recent-verdict (dedup) window (at most --recent-max).", nil, nil)
	descCounter  = prometheus.NewDesc("styx_scheduler_events_total", "Events this term, by kind.", []string{"kind"}, nil)
	descCap      = prometheus.NewDesc("styx_scheduler_worker_capacity", "Credits a worker grants in all (batches it may hold at once).", []string{"worker_id"}, nil)
	descCredits  = prometheus.NewDesc("styx_scheduler_worker_credits", "Credits a worker still grants the leader (batches it may still receive).", []string{"worker_id"}, nil)
	descWInFl    = prometheus.NewDesc("styx_scheduler_worker_in_flight_batches", "Batches outstanding on a worker.", []string{"worker_id"}, nil)
	descWAddrs   = prometheus.NewDesc("styx_scheduler_worker_addresses_total", "Addresses a worker answered this term.", []string{"worker_id"}, nil)
	descWBatches = prometheus.NewDesc("styx_scheduler_worker_batches_total", "Batches a worker answered this term.", []string{"worker_id"}, nil)
	descWRate    = prometheus.NewDesc("styx_scheduler_worker_addresses_per_second", "A worker's throughput as the leader measures it (answered addresses, averaged over about 10 s).", []string{"worker_id"}, nil)
	descWorkers  = prometheus.NewDesc("styx_scheduler_workers", "Workers the leader knows, by state (connecting, ready, draining, down).", []string{"state"}, nil)

	descNodeLag     = prometheus.NewDesc("styx_scheduler_node_log_lag_messages", "Messages a connected node said it is behind the verdict log.", []string{"node_id"}, nil)
	descNodeLagSec  = prometheus.NewDesc("styx_scheduler_node_log_lag_seconds", "Seconds a connected node said it is behind the verdict log.", []string{"node_id"}, nil)
	descNodeStalled = prometheus.NewDesc("styx_scheduler_node_log_stalled", "1 when a connected node said its log follower is stalled.", []string{"node_id"}, nil)

	descLogMsgs    = prometheus.NewDesc("styx_scheduler_log_messages_total", "Batches stored in the verdict log by this scheduler.", nil, nil)
	descLogItems   = prometheus.NewDesc("styx_scheduler_log_published_total", "Verdicts and attack reports stored in the verdict log, by kind.", []string{"kind"}, nil)
	descLogRetries = prometheus.NewDesc("styx_scheduler_log_publish_retries_total", "Rounds of publishes tried again (no acknowledgement, or an error).", nil, nil)
	descLogDropped = prometheus.NewDesc("styx_scheduler_log_publish_dropped_total", "Batches dropped because the publish queue was full (alert on it).", nil, nil)
	descLogQueued  = prometheus.NewDesc("styx_scheduler_log_publish_queue", "Batches waiting to be published.", nil, nil)
	descLogFailing = prometheus.NewDesc("styx_scheduler_log_publish_failing", "1 from a failed publish until the next one succeeds.", nil, nil)
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRecent, descLeader, descTerm, descPending, descInFlight, descOldest, descCoverage, descCounter, descCredits, descWInFl, descWAddrs, descWBatches, descWRate, descWorkers, descCap,
		descLogMsgs, descLogItems, descLogRetries, descLogDropped, descLogQueued, descLogFailing, descNodeLag, descNodeLagSec, descNodeStalled} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	if st, ok := c.s.LogStats(); ok {
		failing := 0.0
		if st.Failing {
			failing = 1
		}
		ch <- prometheus.MustNewConstMetric(descLogMsgs, prometheus.CounterValue, float64(st.Messages))
		ch <- prometheus.MustNewConstMetric(descLogItems, prometheus.CounterValue, float64(st.Verdicts), "verdicts")
		ch <- prometheus.MustNewConstMetric(descLogItems, prometheus.CounterValue, float64(st.Attacks), "attack_reports")
		ch <- prometheus.MustNewConstMetric(descLogRetries, prometheus.CounterValue, float64(st.Retries))
		ch <- prometheus.MustNewConstMetric(descLogDropped, prometheus.CounterValue, float64(st.Dropped))
		ch <- prometheus.MustNewConstMetric(descLogQueued, prometheus.GaugeValue, float64(st.Queued))
		ch <- prometheus.MustNewConstMetric(descLogFailing, prometheus.GaugeValue, failing)
	}
	co := c.s.Current()
	if co == nil {
		ch <- prometheus.MustNewConstMetric(descLeader, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(descLeader, prometheus.GaugeValue, 1)
	ch <- prometheus.MustNewConstMetric(descTerm, prometheus.GaugeValue, float64(co.Term()))
	ps, ctr, _, age := co.Stats()
	ch <- prometheus.MustNewConstMetric(descPending, prometheus.GaugeValue, float64(ps.Pending))
	ch <- prometheus.MustNewConstMetric(descInFlight, prometheus.GaugeValue, float64(ps.InFlight))
	ch <- prometheus.MustNewConstMetric(descOldest, prometheus.GaugeValue, age.Seconds())
	ch <- prometheus.MustNewConstMetric(descCoverage, prometheus.GaugeValue, api.Coverage(ps))
	ch <- prometheus.MustNewConstMetric(descRecent, prometheus.GaugeValue, float64(ps.Recent))
	for k, v := range map[string]uint64{
		"sightings": ps.Received, "unique": ps.Unique, "deduplicated": ps.Deduplicated, "examined": ps.Examined,
		"shed": ps.Shed, "expired": ps.Expired, "batches": ctr.Batches, "results": ctr.Results,
		"stale_results": ctr.StaleResults, "malformed_results": ctr.Malformed, "refusals": ctr.Refusals, "reassigned": ctr.Reassigned,
		"splits": ctr.Splits, "poisoned": ctr.Poisoned, "rejected": ctr.Rejected, "verdicts": ctr.Verdicts,
		"node_overflows": ctr.NodeOverflows, "lease_losses": ctr.LeaseLosses, "stream_failures": ctr.StreamFailures,
		"drain_requests": ctr.DrainRequests, "workers_drained": ctr.WorkersDrained,
		"outcomes_dropped": ctr.OutcomesDropped, "attack_reports": ctr.AttackReports,
		"attack_duplicates": ctr.AttackDuplicates, "attack_rejected": ctr.AttackRejected,
		"recent_evicted_age": ps.RecentEvictedAge, "recent_evicted_count": ps.RecentEvictedCount,
		"future_verdicts": ctr.FutureVerdicts, "unproven_workers": ctr.UnprovenWorkers,
	} {
		ch <- prometheus.MustNewConstMetric(descCounter, prometheus.CounterValue, float64(v), k)
	}
	snap := co.State().Snapshot()
	if subs, err := snap.Submitters(nil); err == nil {
		for _, n := range subs {
			if !n.Connected || n.Log.At.IsZero() {
				continue
			}
			stalled := 0.0
			if n.Log.Stalled {
				stalled = 1
			}
			ch <- prometheus.MustNewConstMetric(descNodeLag, prometheus.GaugeValue, float64(n.Log.Lag), n.NodeID)
			ch <- prometheus.MustNewConstMetric(descNodeLagSec, prometheus.GaugeValue, n.Log.LagSeconds, n.NodeID)
			ch <- prometheus.MustNewConstMetric(descNodeStalled, prometheus.GaugeValue, stalled, n.NodeID)
		}
	}
	ws, err := snap.Workers(nil)
	if err != nil {
		return
	}
	rates := co.WorkerRates()
	states := map[string]int{state.WorkerConnecting: 0, state.WorkerReady: 0, state.WorkerDraining: 0, state.WorkerDown: 0}
	for _, w := range ws {
		states[w.State]++
		ch <- prometheus.MustNewConstMetric(descCap, prometheus.GaugeValue, float64(w.Capacity), w.ID)
		ch <- prometheus.MustNewConstMetric(descCredits, prometheus.GaugeValue, float64(max(w.Credits, 0)), w.ID)
		ch <- prometheus.MustNewConstMetric(descWInFl, prometheus.GaugeValue, float64(max(w.InFlight, 0)), w.ID)
		ch <- prometheus.MustNewConstMetric(descWAddrs, prometheus.CounterValue, float64(w.AddrsDone), w.ID)
		ch <- prometheus.MustNewConstMetric(descWBatches, prometheus.CounterValue, float64(w.BatchesDone), w.ID)
		ch <- prometheus.MustNewConstMetric(descWRate, prometheus.GaugeValue, rates[w.ID], w.ID)
	}
	for st, n := range states {
		ch <- prometheus.MustNewConstMetric(descWorkers, prometheus.GaugeValue, float64(n), st)
	}
}
