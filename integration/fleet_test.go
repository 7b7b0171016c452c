//go:build linux

package integration

// The operator CLI (styx-scheduler fleet) and the /metrics of every process,
// on the built binaries: two schedulers, three workers, an in-process node
// with sightings flowing while one worker is drained through the standby.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/styx-inference/styx/pkg/grpcauth"
	"github.com/styx-inference/styx/pkg/keyspace"
	"github.com/styx-inference/styx/pkg/testwait"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

// TestFleetDrainUnderLoad drains one of three workers with
// `styx-scheduler fleet drain --worker X --wait`, sent to the standby
// scheduler, while a node keeps submitting sightings. The command waits
// until the worker has left and exits 0; the worker reported NOT_SERVING
// on gRPC health while draining, exited 0 and its key is gone from etcd;
// the other workers took the work, and every sighting got exactly one
// outcome. Around it: the fleet commands' errors, exit statuses and JSON,
// and the /metrics of the scheduler, a worker and the node after traffic.
func TestFleetDrainUnderLoad(t *testing.T) {
	c := newProcCluster(t)
	lead := c.startScheduler("fleet-a")
	c.waitLeading(lead)
	standby := c.startScheduler("fleet-b")
	ids := []string{"fleet-w1", "fleet-w2", "fleet-w3"}
	workers := map[string]*procChild{}
	for _, id := range ids {
		// 256-address batches held 50 ms each: the victim always holds some.
		workers[id] = c.startWorker(id, 50*time.Millisecond, "--metrics-addr=127.0.0.1:0")
	}
	c.waitWorkersReady(lead, ids...)
	n := c.startNode("fleet-node")

	t.Run("errors", func(t *testing.T) {
		r := c.fleet(t, "drain", "--addr", standby.grpcAddr, "--worker", "no-such-worker")
		if r.code != 4 || !strings.Contains(r.stderr, "no such worker: no-such-worker") {
			t.Errorf("drain of an unknown worker: exit %d, stderr %q; want 4 and \"no such worker\"", r.code, r.stderr)
		}
		r = c.fleet(t, "drain", "--addr", lead.grpcAddr, "--host", "no-such-host")
		if r.code != 4 || !strings.Contains(r.stderr, `no worker on host "no-such-host"`) {
			t.Errorf("drain of an unknown host: exit %d, stderr %q", r.code, r.stderr)
		}
		r = c.fleet(t, "drain", "--addr", lead.grpcAddr)
		if r.code != 2 {
			t.Errorf("drain without a worker: exit %d, want 2 (usage); stderr %q", r.code, r.stderr)
		}
		r = c.fleet(t, "workers", "--addr", "127.0.0.1:1")
		if r.code != 1 || !strings.Contains(r.stderr, "cannot connect to the scheduler at 127.0.0.1:1") {
			t.Errorf("workers against a closed port: exit %d, stderr %q", r.code, r.stderr)
		}
		// Health: AdminService serves on every scheduler, SchedulerService
		// only on the leader.
		for _, hc := range []struct {
			s       *procScheduler
			service string
			want    healthpb.HealthCheckResponse_ServingStatus
		}{
			{lead, "", healthpb.HealthCheckResponse_SERVING},
			{lead, styxv1.SchedulerService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING},
			{lead, styxv1.AdminService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING},
			{standby, "", healthpb.HealthCheckResponse_SERVING},
			{standby, styxv1.SchedulerService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_NOT_SERVING},
			{standby, styxv1.AdminService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING},
		} {
			if got := c.checkHealth(t, hc.s.grpcAddr, hc.service); got != hc.want {
				t.Errorf("health of %q on %s: %s, want %s", hc.service, hc.s.id, got, hc.want)
			}
		}
		// Nothing was drained by the failed requests.
		for _, id := range ids {
			if w := c.workerStatus(lead, id); w == nil || w.State != "ready" || w.DrainRequested {
				t.Errorf("after failed drains, %s is %v", id, w)
			}
		}
	})

	// Sightings flow all along: 100 new addresses every 20 ms.
	feed := startFeeder(t, n)

	victim := ids[0]
	testwait.For(t, 30*time.Second, victim+" holding batches", func() bool {
		w := c.workerStatus(lead, victim)
		return w != nil && w.InFlight > 0 && n.tally.count() > 1000
	})

	t.Run("workers-json", func(t *testing.T) {
		r := c.fleet(t, "workers", "--addr", standby.grpcAddr, "--json")
		var v struct {
			SchedulerID string `json:"scheduler_id"`
			Term        int64  `json:"term"`
			Workers     []struct {
				WorkerID           string  `json:"worker_id"`
				Capacity           int     `json:"capacity"`
				State              string  `json:"state"`
				AddressesPerSecond float64 `json:"addresses_per_second"`
			} `json:"workers"`
		}
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &v) != nil {
			t.Fatalf("fleet workers --json: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
		if v.SchedulerID != lead.id || v.Term <= 0 || len(v.Workers) != len(ids) {
			t.Errorf("fleet workers --json through the standby: %+v", v)
		}
		for _, w := range v.Workers {
			if w.Capacity != 4 || w.State != "ready" {
				t.Errorf("worker %+v", w)
			}
		}
		r = c.fleet(t, "pool", "--addr", lead.grpcAddr, "--json")
		var p struct {
			Pool struct {
				Received string  `json:"received"` // uint64 is a JSON string in protojson
				Coverage float64 `json:"coverage"`
			} `json:"pool"`
			Workers      int      `json:"workers"`
			WorkersReady int      `json:"workers_ready"`
			Nodes        []string `json:"nodes"`
		}
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &p) != nil {
			t.Fatalf("fleet pool --json: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
		if got, _ := strconv.Atoi(p.Pool.Received); got == 0 || p.Pool.Coverage != 1 || p.Workers != 3 || p.WorkersReady != 3 || len(p.Nodes) != 1 {
			t.Errorf("fleet pool --json: %+v", p)
		}
		r = c.fleet(t, "workers", "--addr", lead.grpcAddr)
		if r.code != 0 || !strings.Contains(r.stdout, "ADDR/S") || !strings.Contains(r.stdout, victim) {
			t.Errorf("fleet workers: exit %d, stdout:\n%s", r.code, r.stdout)
		}
		t.Logf("fleet workers:\n%s", r.stdout)
	})

	// Watch the victim's health: it must turn NOT_SERVING while draining.
	health := c.watchHealth(t, victim)
	doneBefore := map[string]uint64{}
	for _, id := range ids[1:] {
		doneBefore[id] = c.workerStatus(lead, id).AddressesDone
	}

	r := c.fleet(t, "drain", "--addr", standby.grpcAddr, "--worker", victim, "--wait", "--timeout", "30s", "--json")
	if r.code != 0 {
		t.Fatalf("fleet drain --wait: exit %d\nstdout %s\nstderr %s", r.code, r.stdout, r.stderr)
	}
	var dr struct {
		SchedulerID string `json:"scheduler_id"`
		Workers     []struct {
			WorkerID       string `json:"worker_id"`
			State          string `json:"state"`
			DrainRequested bool   `json:"drain_requested"`
			InFlight       int    `json:"in_flight"`
		} `json:"workers"`
		Waited bool `json:"waited"`
		Left   []struct {
			WorkerID     string  `json:"worker_id"`
			AfterSeconds float64 `json:"after_seconds"`
		} `json:"left"`
		Remaining []json.RawMessage `json:"remaining"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &dr); err != nil {
		t.Fatalf("drain --json output does not parse: %v\n%s", err, r.stdout)
	}
	if dr.SchedulerID != lead.id || len(dr.Workers) != 1 || dr.Workers[0].WorkerID != victim ||
		dr.Workers[0].State != "draining" || !dr.Workers[0].DrainRequested || !dr.Waited ||
		len(dr.Left) != 1 || dr.Left[0].WorkerID != victim || len(dr.Remaining) != 0 {
		t.Errorf("drain result: %s", r.stdout)
	}
	t.Logf("fleet drain --worker %s --wait (through the standby): it held %d batches, left after %.2fs", victim, dr.Workers[0].InFlight, dr.Left[0].AfterSeconds)

	// The worker left: key gone, process exited 0, health said NOT_SERVING.
	if c.keyExists(keyspace.WorkerKey(victim)) {
		t.Errorf("%s still registered after drain --wait returned", victim)
	}
	vp := workers[victim]
	select {
	case <-vp.done:
		if vp.waitErr != nil {
			t.Errorf("%s exited with %v after the drain, want status 0", victim, vp.waitErr)
		}
	case <-time.After(20 * time.Second):
		t.Errorf("%s still running 20s after it left", victim)
	}
	if !health.sawNotServing() {
		t.Errorf("%s never reported NOT_SERVING on gRPC health while draining (statuses %v)", victim, health.seen())
	}
	vp.waitLog(t, time.Second, "drain requested by the scheduler")

	// Sightings keep flowing on the two remaining workers until the leader
	// has measured their throughput (sampled every second).
	testwait.For(t, 30*time.Second, "the remaining workers' throughput measured", func() bool {
		for _, id := range ids[1:] {
			if w := c.workerStatus(lead, id); w == nil || w.AddressesPerSecond <= 0 {
				return false
			}
		}
		return true
	})
	addrs := feed.stop()
	n.waitResolved(t, 60*time.Second, len(addrs))
	time.Sleep(300 * time.Millisecond) // let a late duplicate, if any, arrive
	n.checkExactlyOnce(t, addrs)
	for _, id := range ids[1:] {
		if w := c.workerStatus(lead, id); w == nil || w.AddressesDone <= doneBefore[id] {
			t.Errorf("%s took no work after the drain: %v (before: %d addresses)", id, w, doneBefore[id])
		}
	}
	ev := c.scrape(t, "http://"+lead.httpAddr+"/metrics")
	drained, losses := ev.value(t, eventSeries("workers_drained")), ev.value(t, eventSeries("lease_losses"))
	if drained != 1 || losses != 0 {
		t.Errorf("scheduler counted %v drained workers and %v lease losses, want 1 and 0", drained, losses)
	}
	t.Logf("%d sightings in all; batches reassigned %.0f, refused %.0f", len(addrs), ev.value(t, eventSeries("reassigned")), ev.value(t, eventSeries("refusals")))

	t.Run("metrics", func(t *testing.T) {
		// Queries to the node, so that its latency histogram has samples.
		for range 5 {
			if _, err := c.get("http://" + n.node.HTTPAddr() + "/v2/8.8.8.8?asn=1"); err != nil {
				t.Fatal(err)
			}
		}
		resp, err := c.http.Post("http://"+n.node.HTTPAddr()+"/v2/", "application/x-www-form-urlencoded", strings.NewReader("ips=1.1.1.1,8.8.4.4"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()

		sched := c.scrape(t, "http://"+lead.httpAddr+"/metrics")
		total := float64(len(addrs))
		sched.atLeast(t, `styx_scheduler_leader`, 1)
		sched.atLeast(t, `styx_scheduler_events_total{kind="sightings"}`, total)
		sched.atLeast(t, `styx_scheduler_events_total{kind="verdicts"}`, total)
		sched.atLeast(t, `styx_scheduler_events_total{kind="batches"}`, 1)
		sched.atLeast(t, `styx_scheduler_events_total{kind="workers_drained"}`, 1)
		sched.atLeast(t, `styx_scheduler_events_total{kind="drain_requests"}`, 1)
		sched.has(t, `styx_scheduler_events_total{kind="shed"}`, `styx_scheduler_events_total{kind="expired"}`,
			`styx_scheduler_events_total{kind="reassigned"}`, `styx_scheduler_events_total{kind="lease_losses"}`,
			`styx_pool_pending`, `styx_pool_oldest_age_seconds`, `styx_pool_coverage_ratio`,
			`styx_scheduler_worker_credits{worker_id="fleet-w2"}`, `styx_scheduler_worker_capacity{worker_id="fleet-w2"} 4`)
		sched.atLeast(t, `styx_scheduler_worker_addresses_total{worker_id="fleet-w2"}`, 1)
		sched.atLeast(t, `styx_scheduler_worker_batches_total{worker_id="fleet-w2"}`, 1)
		sched.atLeast(t, `styx_scheduler_workers{state="ready"}`, 2)
		if rate := sched.value(t, `styx_scheduler_worker_addresses_per_second{worker_id="fleet-w2"}`); rate <= 0 || rate > 1e6 {
			t.Errorf("fleet-w2 throughput %v addresses/s, want a plausible positive rate", rate)
		}
		if sched.hasSeries(`worker_id="fleet-w1"`) {
			t.Errorf("the leader still exports series of the drained worker")
		}
		standbyM := c.scrape(t, "http://"+standby.httpAddr+"/metrics")
		if v := standbyM.value(t, "styx_scheduler_leader"); v != 0 {
			t.Errorf("standby exports styx_scheduler_leader %v", v)
		}

		w2 := c.scrape(t, "http://"+workerMetricsAddr(t, workers["fleet-w2"])+"/metrics")
		w2.atLeast(t, `styx_worker_batches_total{outcome="answered"}`, 1)
		w2.atLeast(t, `styx_worker_addresses_total`, 1)
		w2.atLeast(t, `styx_worker_credits_granted_total`, 4)
		w2.has(t, `styx_worker_draining 0`, `styx_worker_lease_losses_total 0`, `styx_worker_in_flight_batches`)

		node := c.scrape(t, "http://"+n.node.HTTPAddr()+"/metrics")
		node.atLeast(t, `styx_node_sightings_submitted_total`, total)
		node.atLeast(t, `styx_node_outcomes_total{kind="verdict"}`, total)
		node.atLeast(t, `styx_node_request_duration_seconds_count{route="query"}`, 5)
		node.atLeast(t, `styx_node_request_duration_seconds_count{route="query_many"}`, 1)
		node.has(t, `styx_node_request_duration_seconds_bucket{route="query",le="0.0001"}`, `styx_node_lease_losses_total 0`)
	})
}

// fleetRun is one run of styx-scheduler fleet.
type fleetRun struct {
	code           int
	stdout, stderr string
}

// fleet runs `styx-scheduler fleet args...` and returns its exit status and
// output.
func (c *procCluster) fleet(t *testing.T, args ...string) fleetRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, "styx-scheduler"), append([]string{"fleet"}, args...)...)
	cmd.Env = append(procEnv(), "STYX_PKI_DIR="+c.pki.Dir(t, procAdmin.Role, procAdmin.ID))
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := fleetRun{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("run fleet %v: %v", args, err)
	}
	t.Logf("styx-scheduler fleet %s: exit %d", strings.Join(args, " "), r.code)
	return r
}

// feeder submits new sightings to a node until stopped.
type feeder struct {
	stopc chan struct{}
	done  chan struct{}
	mu    sync.Mutex
	addrs []netip.Addr
}

func startFeeder(t *testing.T, n *procNode) *feeder {
	f := &feeder{stopc: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(f.done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		next := 0
		for {
			select {
			case <-f.stopc:
				return
			case <-tick.C:
			}
			batch := procAddrs(next, 100)
			next += len(batch)
			if got := n.node.Submit(batch...); got != len(batch) {
				t.Errorf("Submit made %d sightings of %d addresses", got, len(batch))
				return
			}
			f.mu.Lock()
			f.addrs = append(f.addrs, batch...)
			f.mu.Unlock()
		}
	}()
	t.Cleanup(func() { f.stop() })
	return f
}

// stop stops feeding and returns every address submitted.
func (f *feeder) stop() []netip.Addr {
	select {
	case <-f.stopc:
	default:
		close(f.stopc)
	}
	<-f.done
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.addrs
}

// healthWatch follows a worker's gRPC health (styx.v1.WorkerService).
type healthWatch struct {
	mu       sync.Mutex
	statuses []healthpb.HealthCheckResponse_ServingStatus
}

func (h *healthWatch) sawNotServing() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, s := range h.statuses {
		if s == healthpb.HealthCheckResponse_NOT_SERVING {
			return true
		}
	}
	return false
}

func (h *healthWatch) seen() []healthpb.HealthCheckResponse_ServingStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]healthpb.HealthCheckResponse_ServingStatus(nil), h.statuses...)
}

// watchHealth watches the health of worker id (at the address it
// registered) until it reports NOT_SERVING, the stream ends or the test
// does; it returns once the first status (SERVING) has arrived.
func (c *procCluster) watchHealth(t *testing.T, id string) *healthWatch {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	resp, err := c.cli.Get(ctx, keyspace.WorkerKey(id))
	cancel()
	if err != nil || len(resp.Kvs) == 0 {
		t.Fatalf("registration of %s: %v", id, err)
	}
	var reg keyspace.WorkerRegistration
	if err := keyspace.Decode(resp.Kvs[0].Value, &reg); err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(reg.Addr, c.adminDial(t))
	if err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(context.Background())
	stream, err := healthpb.NewHealthClient(conn).Watch(wctx, &healthpb.HealthCheckRequest{Service: styxv1.WorkerService_ServiceDesc.ServiceName})
	if err != nil {
		stop()
		conn.Close()
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil || first.Status != healthpb.HealthCheckResponse_SERVING {
		stop()
		conn.Close()
		t.Fatalf("health of %s: %v, %v", id, first, err)
	}
	h := &healthWatch{statuses: []healthpb.HealthCheckResponse_ServingStatus{first.Status}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			m, err := stream.Recv()
			if err != nil {
				return
			}
			h.mu.Lock()
			h.statuses = append(h.statuses, m.Status)
			h.mu.Unlock()
			if m.Status == healthpb.HealthCheckResponse_NOT_SERVING {
				// End the watch: an open stream would hold up the
				// worker's graceful stop.
				stop()
				return
			}
		}
	}()
	t.Cleanup(func() {
		stop()
		<-done
		conn.Close()
	})
	return h
}

// checkHealth asks the gRPC health service at addr about service.
func (c *procCluster) checkHealth(t *testing.T, addr, service string) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	conn, err := grpc.NewClient(addr, c.adminDial(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		t.Fatalf("health check of %q at %s: %v", service, addr, err)
	}
	return resp.Status
}

// workerMetricsAddr is the /metrics address a worker logged.
func workerMetricsAddr(t *testing.T, w *procChild) string {
	t.Helper()
	line := w.waitLog(t, 10*time.Second, "worker serving")
	addr, _ := line["metrics_addr"].(string)
	if addr == "" {
		t.Fatalf("%s logged no metrics_addr: %v", w.name, line)
	}
	return addr
}

// metricsText is one scrape of a /metrics endpoint.
type metricsText struct {
	url  string
	body string
}

func (c *procCluster) scrape(t *testing.T, url string) metricsText {
	t.Helper()
	b, err := c.get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	return metricsText{url: url, body: string(b)}
}

// value returns the sample of the series named exactly by series.
func (m metricsText) value(t *testing.T, series string) float64 {
	t.Helper()
	v, err := sample(m.body, series)
	if err != nil {
		t.Errorf("%s: %v", m.url, err)
	}
	return v
}

func (m metricsText) atLeast(t *testing.T, series string, min float64) {
	t.Helper()
	if v := m.value(t, series); v < min {
		t.Errorf("%s: %s = %v, want at least %v", m.url, series, v, min)
	}
}

// has checks that every line prefix occurs at the start of a line.
func (m metricsText) has(t *testing.T, prefixes ...string) {
	t.Helper()
	for _, p := range prefixes {
		if !strings.Contains("\n"+m.body, "\n"+p) {
			t.Errorf("%s lacks %s", m.url, p)
		}
	}
}

func (m metricsText) hasSeries(substr string) bool {
	for line := range strings.SplitSeq(m.body, "\n") {
		if !strings.HasPrefix(line, "#") && strings.Contains(line, substr) {
			return true
		}
	}
	return false
}

// adminDial is the transport of the tests' own gRPC calls: mutual TLS with
// the admin identity, accepting any server of the cluster's CA.
func (c *procCluster) adminDial(t *testing.T) grpc.DialOption {
	t.Helper()
	return grpcauth.DialOption(c.pki.Source(t, procAdmin.Role, procAdmin.ID), nil)
}
