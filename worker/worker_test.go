package worker

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/styx-inference/styx/pkg/columns"
	"github.com/styx-inference/styx/pkg/embedetcd"
	"github.com/styx-inference/styx/pkg/embedetcd/etcdtest"
	"github.com/styx-inference/styx/pkg/keyspace"
	"github.com/styx-inference/styx/pkg/verdict"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// gatedEngine blocks every Examine until release; entered receives once
// per address examined.
type gatedEngine struct {
	entered chan struct{}
	gate    chan struct{}
	once    sync.Once
}

func newGatedEngine() *gatedEngine {
	return &gatedEngine{entered: make(chan struct{}, 64), gate: make(chan struct{})}
}

func (e *gatedEngine) release() { e.once.Do(func() { close(e.gate) }) }

func (e *gatedEngine) Examine(netip.Addr) verdict.Verdict {
	select {
	case e.entered <- struct{}{}:
	default:
	}
	<-e.gate
	return verdict.Verdict{Proxy: true, Type: "Gated", Risk: 50}
}

func (e *gatedEngine) ModelVersion() string { return "gated-v1" }

// startEtcd starts an embedded etcd and returns a client for it.
func startEtcd(t *testing.T) (*embedetcd.Server, *clientv3.Client) {
	t.Helper()
	return etcdtest.Start(t)
}

// testConfig is a worker configuration for in-process tests.
func testConfig(cli *clientv3.Client) Config {
	cfg := DefaultConfig()
	cfg.Etcd = cli
	cfg.Host = "testhost"
	cfg.EngineName = EngineNop
	cfg.LeaseTTL = 2 * time.Second
	cfg.Capacity = 2
	cfg.DrainTimeout = 5 * time.Second
	// No NATS server listens there: the attack feed keeps trying in the
	// background, as it does while the verdict log is down.
	cfg.NATSURL = "nats://127.0.0.1:1"
	return cfg
}

type running struct {
	w      *Worker
	cancel context.CancelFunc
	done   chan error
}

// startWorker runs a worker until the test ends and waits until it serves.
func startWorker(t *testing.T, cfg Config) *running {
	t.Helper()
	w, err := New(cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{w: w, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- w.Run(ctx) }()
	t.Cleanup(func() {
		if e, ok := cfg.Engine.(*gatedEngine); ok {
			e.release()
		}
		cancel()
		<-r.done
	})
	select {
	case <-w.Ready():
	case err := <-r.done:
		t.Fatalf("Run: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("worker not ready after 10s")
	}
	return r
}

// stop cancels the worker and waits for Run, returning how long it took.
func (r *running) stop(t *testing.T) time.Duration {
	t.Helper()
	start := time.Now()
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err // for the cleanup
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return")
	}
	return time.Since(start)
}

// readRegistration reads the worker's key; ok is false when it is absent.
func readRegistration(t *testing.T, cli *clientv3.Client, id string) (reg keyspace.WorkerRegistration, lease clientv3.LeaseID, ok bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, keyspace.WorkerKey(id))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return reg, 0, false
	}
	if err := keyspace.Decode(resp.Kvs[0].Value, &reg); err != nil {
		t.Fatal(err)
	}
	return reg, clientv3.LeaseID(resp.Kvs[0].Lease), true
}

// waitRegistration polls until cond holds for the worker's key.
func waitRegistration(t *testing.T, cli *clientv3.Client, id, what string, cond func(keyspace.WorkerRegistration, clientv3.LeaseID, bool) bool) (keyspace.WorkerRegistration, clientv3.LeaseID) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		reg, lease, ok := readRegistration(t, cli, id)
		if cond(reg, lease, ok) {
			return reg, lease
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s (last: %+v, lease %x, present %v)", what, reg, lease, ok)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func present(_ keyspace.WorkerRegistration, _ clientv3.LeaseID, ok bool) bool { return ok }

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// session is a scheduler's Work stream.
type session struct {
	t *testing.T
	s styxv1.WorkerService_WorkClient
}

func openSession(t *testing.T, conn *grpc.ClientConn, term int64) (*session, *styxv1.WorkReport) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	s, err := styxv1.NewWorkerServiceClient(conn).Work(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(&styxv1.WorkAssign{Msg: &styxv1.WorkAssign_Open{Open: &styxv1.Open{SchedulerId: "sched", Term: term}}}); err != nil {
		t.Fatal(err)
	}
	r, err := s.Recv()
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return &session{t: t, s: s}, r
}

func (s *session) batch(id uint64, term int64) {
	s.t.Helper()
	if err := s.s.Send(&styxv1.WorkAssign{Msg: &styxv1.WorkAssign_Batch{Batch: &styxv1.Batch{
		BatchId: id, Term: term, Attempt: 1, Addresses: columns.AppendAddr(nil, netip.MustParseAddr("192.0.2.1")),
	}}}); err != nil {
		s.t.Fatal(err)
	}
}

// verdictsOf decodes a result's verdicts.
func verdictsOf(t *testing.T, res *styxv1.Result) []*styxv1.Verdict {
	t.Helper()
	vs, err := columns.Verdicts(res.GetVerdicts(), int(res.GetVerdicts().GetCount()))
	if err != nil {
		t.Fatal(err)
	}
	return vs
}

func (s *session) recv() *styxv1.WorkReport {
	s.t.Helper()
	r, err := s.s.Recv()
	if err != nil {
		s.t.Fatalf("recv: %v", err)
	}
	return r
}

// end reads until the stream ends and returns its status code.
func (s *session) end() codes.Code {
	s.t.Helper()
	for {
		r, err := s.s.Recv()
		if errors.Is(err, io.EOF) {
			return codes.OK
		}
		if err != nil {
			return status.Code(err)
		}
		s.t.Logf("report before the end: %v", r)
	}
}

func healthStatus(t *testing.T, conn *grpc.ClientConn) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: styxv1.WorkerService_ServiceDesc.ServiceName})
	if err != nil {
		t.Fatalf("health check: %v", err)
	}
	return resp.GetStatus()
}

func TestRegisterServeAndLeave(t *testing.T) {
	etcd, cli := startEtcd(t)
	cfg := testConfig(nil)
	cfg.EtcdEndpoints = []string{etcd.Endpoint()} // the worker dials its own client
	cfg.MetricsAddr = "127.0.0.1:0"
	cfg.Build = "test-build"
	r := startWorker(t, cfg)

	addr := r.w.Addr()
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || !ap.Addr().IsLoopback() || ap.Port() == 0 {
		t.Fatalf("Addr() = %q, want a bound loopback address", addr)
	}
	wantID := "testhost-" + addr[strings.LastIndexByte(addr, ':')+1:]
	if r.w.ID() != wantID {
		t.Errorf("ID() = %q, want %q", r.w.ID(), wantID)
	}
	reg, _ := waitRegistration(t, cli, wantID, "registration", present)
	want := keyspace.WorkerRegistration{
		ID: wantID, Addr: addr, Host: "testhost", NUMANode: -1, CPUs: reg.CPUs,
		Capacity: 2, ModelVersion: "nop", Build: "test-build",
	}
	if reg != want {
		t.Errorf("registration = %+v, want %+v", reg, want)
	}
	if reg.CPUs == "" {
		t.Error("registration has no cpus")
	}

	conn := dial(t, addr)
	if st := healthStatus(t, conn); st != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health %s, want SERVING", st)
	}
	s, ready := openSession(t, conn, 1)
	if ready.GetReady().GetWorkerId() != wantID || ready.GetCredit() != 2 {
		t.Errorf("Ready = %v, want worker %s and credit 2", ready, wantID)
	}
	s.batch(1, 1)
	if res := s.recv().GetResult(); res.GetBatchId() != 1 || len(verdictsOf(t, res)) != 1 || verdictsOf(t, res)[0].GetModelVersion() != "nop" {
		t.Errorf("result %v, want one nop verdict for batch 1", res)
	}

	resp, err := http.Get("http://" + r.w.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, m := range []string{`styx_worker_batches_total{outcome="answered"} 1`, "styx_worker_addresses_total 1", "go_goroutines"} {
		if !strings.Contains(string(body), m) {
			t.Errorf("/metrics lacks %q", m)
		}
	}

	took := r.stop(t)
	if _, _, ok := readRegistration(t, cli, wantID); ok {
		t.Error("key still present after Run returned: the lease was not revoked")
	}
	if took > 3*time.Second {
		t.Errorf("stopping an idle worker took %s", took)
	}
	if code := s.end(); code != codes.Unavailable {
		t.Errorf("session ended with %s, want Unavailable", code)
	}
}

func TestSeveralWorkersInOneProcess(t *testing.T) {
	_, cli := startEtcd(t)
	ids := map[string]bool{}
	for range 3 {
		r := startWorker(t, testConfig(cli))
		ids[r.w.ID()] = true
		waitRegistration(t, cli, r.w.ID(), "registration of "+r.w.ID(), present)
	}
	if len(ids) != 3 {
		t.Errorf("ids %v, want 3 distinct", ids)
	}
}

func TestLeaseLossRegistersAgain(t *testing.T) {
	_, cli := startEtcd(t)
	r := startWorker(t, testConfig(cli))
	id := r.w.ID()
	_, lease := waitRegistration(t, cli, id, "registration", present)
	s, _ := openSession(t, dial(t, r.w.Addr()), 1)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cli.Revoke(ctx, lease); err != nil {
		t.Fatal(err)
	}
	// Sessions tied to the lost lease end; the scheduler requeues.
	if code := s.end(); code != codes.Unavailable {
		t.Errorf("session ended with %s, want Unavailable", code)
	}
	_, lease2 := waitRegistration(t, cli, id, "registration under a new lease",
		func(_ keyspace.WorkerRegistration, l clientv3.LeaseID, ok bool) bool { return ok && l != lease })
	if lease2 == 0 {
		t.Error("key registered without a lease")
	}
}

// busyWorker is a registered worker whose gated engine holds batch 1 of
// a session opened at term.
type busyWorker struct {
	cli  *clientv3.Client
	eng  *gatedEngine
	r    *running
	id   string
	conn *grpc.ClientConn
	s    *session
}

func startBusyWorker(t *testing.T, term int64, mod func(*Config)) busyWorker {
	t.Helper()
	_, cli := startEtcd(t)
	eng := newGatedEngine()
	cfg := testConfig(cli)
	cfg.Engine = eng
	if mod != nil {
		mod(&cfg)
	}
	r := startWorker(t, cfg)
	id := r.w.ID()
	waitRegistration(t, cli, id, "registration", present)
	conn := dial(t, r.w.Addr())
	s, _ := openSession(t, conn, term)
	s.batch(1, term)
	<-eng.entered
	return busyWorker{cli: cli, eng: eng, r: r, id: id, conn: conn, s: s}
}

func TestStopDrainsResultInFlight(t *testing.T) {
	b := startBusyWorker(t, 4, nil)
	cli, eng, r, id, conn, s := b.cli, b.eng, b.r, b.id, b.conn, b.s

	r.cancel() // SIGTERM
	waitRegistration(t, cli, id, "draining registration",
		func(reg keyspace.WorkerRegistration, _ clientv3.LeaseID, ok bool) bool { return ok && reg.Draining })
	if st := healthStatus(t, conn); st != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("health while draining %s, want NOT_SERVING", st)
	}
	s.batch(2, 4)
	if rep := s.recv(); rep.GetRefusal().GetReason() != "draining" || rep.GetCredit() != 0 {
		t.Errorf("report %v, want a draining refusal without credit", rep)
	}
	select {
	case err := <-r.done:
		t.Fatalf("Run returned (%v) with a batch in flight", err)
	default:
	}

	eng.release()
	rep := s.recv()
	if rep.GetResult().GetBatchId() != 1 || rep.GetCredit() != 0 || rep.GetResult().GetVerdicts().GetCount() != 1 {
		t.Errorf("report %v, want the result of batch 1 without credit", rep)
	}
	if code := s.end(); code != codes.Unavailable {
		t.Errorf("session ended with %s, want Unavailable", code)
	}
	r.stop(t)
	if _, _, ok := readRegistration(t, cli, id); ok {
		t.Error("key still present after Run returned")
	}
}

func TestStopGivesUpAfterDrainTimeout(t *testing.T) {
	const drainTimeout = 200 * time.Millisecond
	b := startBusyWorker(t, 1, func(c *Config) { c.DrainTimeout = drainTimeout })
	cli, eng, r, s := b.cli, b.eng, b.r, b.s

	start := time.Now()
	r.cancel()
	// After the drain timeout the worker leaves with the batch unanswered.
	if code := s.end(); code != codes.Unavailable {
		t.Errorf("session ended with %s, want Unavailable", code)
	}
	if took := time.Since(start); took < drainTimeout {
		t.Errorf("session ended after %s, before the %s drain timeout", took, drainTimeout)
	}
	if _, _, ok := readRegistration(t, cli, r.w.ID()); ok {
		t.Error("key still present after the drain timeout")
	}
	// Run still waits for the engine call it cannot interrupt.
	eng.release()
	r.stop(t)
}

func TestDrainKeepsServing(t *testing.T) {
	_, cli := startEtcd(t)
	r := startWorker(t, testConfig(cli))
	conn := dial(t, r.w.Addr())
	r.w.Drain()
	r.w.Drain() // idempotent
	waitRegistration(t, cli, r.w.ID(), "draining registration",
		func(reg keyspace.WorkerRegistration, _ clientv3.LeaseID, ok bool) bool { return ok && reg.Draining })
	if st := healthStatus(t, conn); st != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("health %s, want NOT_SERVING", st)
	}
	_, ready := openSession(t, conn, 1)
	if !ready.GetReady().GetDraining() || ready.GetCredit() != 0 {
		t.Errorf("Ready %v, want draining without credit", ready)
	}
}

func TestRunFailures(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		errHas string
	}{
		{"missing database", func(c *Config) { c.EngineName = EngineRule; c.DBPath = t.TempDir() + "/none.db" }, "location database"},
		{"busy address", nil, "listen"},
		{"no such numa node", func(c *Config) { c.NUMANode = "4096" }, "numa node 4096"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(nil)
			cfg.EtcdEndpoints = []string{"127.0.0.1:1"} // never dialed: Run fails first
			if tt.mutate != nil {
				tt.mutate(&cfg)
			} else {
				other := startWorker(t, func() Config { c := testConfig(nil); c.EtcdEndpoints = []string{"127.0.0.1:1"}; return c }())
				cfg.ListenAddr = other.w.Addr()
			}
			w, err := New(cfg, zerolog.Nop())
			if err != nil {
				t.Fatal(err)
			}
			err = w.Run(context.Background())
			if err == nil || !strings.Contains(err.Error(), tt.errHas) {
				t.Errorf("Run = %v, want an error about %q", err, tt.errHas)
			}
		})
	}
}

// A scheduler's Drain makes the worker do what SIGTERM does: health
// NOT_SERVING, registration draining, the batch in flight answered, the
// lease revoked; then Run returns nil without its context ending.
func TestDrainMessageLeaves(t *testing.T) {
	b := startBusyWorker(t, 5, nil)
	cli, eng, r, id, conn, s := b.cli, b.eng, b.r, b.id, b.conn, b.s

	if err := s.s.Send(&styxv1.WorkAssign{Msg: &styxv1.WorkAssign_Drain{Drain: &styxv1.Drain{Reason: "test"}}}); err != nil {
		t.Fatal(err)
	}
	waitRegistration(t, cli, id, "draining registration",
		func(reg keyspace.WorkerRegistration, _ clientv3.LeaseID, ok bool) bool { return ok && reg.Draining })
	if st := healthStatus(t, conn); st != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("health while draining %s, want NOT_SERVING", st)
	}
	eng.release()
	if rep := s.recv(); rep.GetResult().GetBatchId() != 1 || rep.GetCredit() != 0 {
		t.Errorf("report %v, want the result of batch 1 without credit", rep)
	}
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("Run after a Drain: %v, want nil", err)
		}
		r.done <- err // for the cleanup
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after a Drain")
	}
	if _, _, ok := readRegistration(t, cli, id); ok {
		t.Error("key still present after Run returned")
	}
}
