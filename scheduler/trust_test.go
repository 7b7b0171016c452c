package scheduler_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/styx-inference/styx/pkg/grpcauth"
	"github.com/styx-inference/styx/pkg/pki"
	"github.com/styx-inference/styx/pkg/pki/pkitest"
	"github.com/styx-inference/styx/pkg/testwait"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
	"github.com/styx-inference/styx/scheduler"
	"github.com/styx-inference/styx/worker"
)

// logBuffer collects a scheduler's log lines for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) has(s string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Contains(b.buf.String(), s)
}

// startSecureScheduler runs a scheduler over mutual TLS with the identity
// scheduler/<id> of p. etcd is the test's plaintext client (its own
// authentication is tested in pkg/etcdauth).
func startSecureScheduler(t *testing.T, p *pkitest.PKI, cli *clientv3.Client, id string, mod func(*scheduler.Config)) (*runningScheduler, *logBuffer) {
	t.Helper()
	cfg := scheduler.DefaultConfig()
	cfg.ID = id
	cfg.Etcd = cli
	cfg.PKI = p.Source(t, pki.Scheduler, id)
	cfg.GRPCAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.LeaseTTL = 2 * time.Second
	cfg.BatchSize = 64
	cfg.BatchInterval = 5 * time.Millisecond
	cfg.NATSURL = ""
	if mod != nil {
		mod(&cfg)
	}
	logs := &logBuffer{}
	s, err := scheduler.New(cfg, zerolog.New(logs).Level(zerolog.WarnLevel))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &runningScheduler{Scheduler: s, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- s.Run(ctx) }()
	<-s.Ready()
	t.Cleanup(r.stop)
	testwait.For(t, 10*time.Second, "leadership", s.IsLeader)
	return r, logs
}

// workerTLS is a worker's gRPC server transport with identity src, which
// accepts only the scheduler (as a real worker does).
func workerTLS(src *pki.Source) []grpc.ServerOption {
	return grpcauth.ServerOptions(src, grpcauth.NewGuard(worker.Rules, zerolog.Nop()))
}

func conn(t *testing.T, addr string, dial grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	c, err := grpc.NewClient(addr, dial)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func leaderCounters(s *scheduler.Scheduler) (future, unproven uint64) {
	co := s.Current()
	if co == nil {
		return 0, 0
	}
	_, ctr, _, _ := co.Stats()
	return ctr.FutureVerdicts, ctr.UnprovenWorkers
}

// TestRogueWorkersGetNoWork: an etcd registration earns work only when the
// worker on the stream proves that id with a certificate of the cluster's
// CA. Rogues without TLS, with a node's certificate, with a foreign CA's,
// with an expired one, or with another worker's, receive no batch, and the
// scheduler says so.
func TestRogueWorkersGetNoWork(t *testing.T) {
	_, cli := startEtcd(t)
	p := pkitest.New(t)
	foreign := pkitest.New(t)
	s, logs := startSecureScheduler(t, p, cli, "s1", nil)

	honest := startFakeWorkerWith(t, cli, "w1", 4, time.Millisecond, workerTLS(p.Source(t, pki.Worker, "w1")), nil)
	expiredDir := p.Issue(t, pki.Worker, "rogue-expired", pki.IssueOptions{Now: time.Now().Add(-72 * time.Hour), Lifetime: time.Hour})
	rogues := []*fakeWorker{
		startFakeWorkerWith(t, cli, "rogue-plain", 64, 0, nil, nil),
		startFakeWorkerWith(t, cli, "rogue-node", 64, 0, workerTLS(p.Source(t, pki.Node, "rogue-node")), nil),
		startFakeWorkerWith(t, cli, "rogue-foreign", 64, 0, workerTLS(foreign.Source(t, pki.Worker, "rogue-foreign")), nil),
		startFakeWorkerWith(t, cli, "rogue-expired", 64, 0, []grpc.ServerOption{rawTLS(t, expiredDir)}, nil),
		// A real worker certificate, but of another id than the registration's.
		startFakeWorkerWith(t, cli, "rogue-other", 64, 0, workerTLS(p.Source(t, pki.Worker, "w2")), nil),
	}

	n := newFakeNode("n1", cli)
	n.dial = grpcauth.DialOption(p.Source(t, pki.Node, "n1"), pki.AnyOf(pki.Scheduler))
	runNodes(t, n)
	const total = 3000
	for i := range total {
		n.add(ipv4(i))
	}
	testwait.For(t, 30*time.Second, "every sighting answered", func() bool { got, _ := n.resolved(); return got == total })
	checkExactlyOnce(t, n, total)
	for _, r := range rogues {
		if b := r.batches.Load(); b != 0 {
			t.Errorf("rogue %s answered %d batches", r.id, b)
		}
	}
	if honest.addrs.Load() != total {
		t.Errorf("the honest worker examined %d addresses, want %d", honest.addrs.Load(), total)
	}
	testwait.For(t, 10*time.Second, "the rogue connections counted", func() bool { _, u := leaderCounters(s.Scheduler); return u >= uint64(len(rogues)) })
	if !logs.has("its TLS identity does not prove its registration") {
		t.Error("no error log names the refused workers")
	}
	if body := healthz(t, s.HTTPAddr()); !strings.Contains(body, "worker connections whose certificate does not prove") {
		t.Errorf("/healthz does not name the refused workers: %q", body)
	}
}

// rawTLS is a server transport that presents the certificate in dir as
// is (a rogue's: our own processes refuse to start with an expired one).
func rawTLS(t *testing.T, dir string) grpc.ServerOption {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, pki.CertFile), filepath.Join(dir, pki.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	return grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{pair}, ClientAuth: tls.RequireAnyClientCert}))
}

// TestAdminServiceNeedsAnAdmin: Drain is refused without a certificate, with
// a node's or a worker's, and with a foreign CA's admin certificate; the
// refusals are counted and logged; an admin's call goes through.
func TestAdminServiceNeedsAnAdmin(t *testing.T) {
	_, cli := startEtcd(t)
	p := pkitest.New(t)
	foreign := pkitest.New(t)
	s, logs := startSecureScheduler(t, p, cli, "s1", nil)
	startFakeWorkerWith(t, cli, "w1", 4, 0, workerTLS(p.Source(t, pki.Worker, "w1")), nil)
	expect := pki.AnyOf(pki.Scheduler)
	drain := func(dial grpc.DialOption) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := styxv1.NewAdminServiceClient(conn(t, s.GRPCAddr(), dial)).Drain(ctx, &styxv1.DrainRequest{WorkerIds: []string{"w1"}})
		return err
	}
	cases := []struct {
		name string
		dial grpc.DialOption
		want codes.Code
	}{
		{"plaintext", grpc.WithTransportCredentials(insecure.NewCredentials()), codes.Unavailable},
		{"node certificate", grpcauth.DialOption(p.Source(t, pki.Node, "n1"), expect), codes.PermissionDenied},
		{"worker certificate", grpcauth.DialOption(p.Source(t, pki.Worker, "w1"), expect), codes.PermissionDenied},
		{"foreign admin", grpcauth.DialOption(foreign.Source(t, pki.Admin, "ops"), nil), codes.Unavailable},
	}
	for _, tc := range cases {
		if err := drain(tc.dial); status.Code(err) != tc.want {
			t.Errorf("%s: drain answered %v, want %s", tc.name, err, tc.want)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := styxv1.NewAdminServiceClient(conn(t, s.GRPCAddr(), grpcauth.DialOption(p.Source(t, pki.Admin, "ops"), expect))).Status(ctx, &styxv1.StatusRequest{})
	if err != nil || !st.Leader {
		t.Fatalf("admin status: %v %v", st, err)
	}
	for _, ws := range st.Workers {
		if ws.State == "draining" {
			t.Errorf("worker %s is draining after refused drains", ws.WorkerId)
		}
	}
	// The server counts a failed handshake when its side of it ends, which
	// may be after the client has its error.
	testwait.For(t, 10*time.Second, "the refusals counted: role and handshake at least 2 each", func() bool {
		r := s.Guard().Refused()
		return r[grpcauth.ReasonRole] >= 2 && r[grpcauth.ReasonHandshake] >= 2
	})
	if !logs.has("refused an unauthenticated or unauthorised peer") {
		t.Error("the refusals were not logged")
	}
}

// TestNodeActsOnlyAsItself: node a's certificate cannot open node b's
// session (which would end b's real one) nor report attacks as b.
func TestNodeActsOnlyAsItself(t *testing.T) {
	_, cli := startEtcd(t)
	p := pkitest.New(t)
	s, _ := startSecureScheduler(t, p, cli, "s1", nil)
	c := styxv1.NewSchedulerServiceClient(conn(t, s.GRPCAddr(), grpcauth.DialOption(p.Source(t, pki.Node, "a"), pki.AnyOf(pki.Scheduler))))
	hello := func(id string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := c.Submit(ctx)
		if err != nil {
			return err
		}
		// A refused stream may end before the send: io.EOF there, and the
		// status comes with the receive.
		if err := st.Send(&styxv1.SubmitRequest{Msg: &styxv1.SubmitRequest_Hello{Hello: &styxv1.Hello{NodeId: id}}}); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		m, err := st.Recv()
		if err != nil {
			return err
		}
		if m.GetWelcome() == nil {
			t.Errorf("hello as %s: answered %v, want a welcome", id, m)
		}
		return st.CloseSend()
	}
	if err := hello("b"); status.Code(err) != codes.PermissionDenied {
		t.Errorf("node a's hello as b: %v, want PermissionDenied", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.ReportAttacks(ctx, &styxv1.ReportAttacksRequest{NodeId: "b"}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("node a reporting attacks as b: %v, want PermissionDenied", err)
	}
	if err := hello("a"); err != nil {
		t.Errorf("node a's hello as itself: %v", err)
	}
	if got := s.Guard().Refused()[grpcauth.ReasonIdentity]; got != 2 {
		t.Errorf("identity refusals %d, want 2", got)
	}
}

// TestFutureDatedVerdictsRefused: a worker whose verdicts claim an
// inference time a year ahead (which would win over every honest later
// examination) has its results refused and counted; nodes get only the
// honest worker's verdicts.
func TestFutureDatedVerdictsRefused(t *testing.T) {
	_, cli := startEtcd(t)
	p := pkitest.New(t)
	s, logs := startSecureScheduler(t, p, cli, "s1", nil)
	startFakeWorkerWith(t, cli, "w1", 4, time.Millisecond, workerTLS(p.Source(t, pki.Worker, "w1")), func(w *fakeWorker) { w.model = "honest" })
	forger := startFakeWorkerWith(t, cli, "w2", 4, time.Millisecond, workerTLS(p.Source(t, pki.Worker, "w2")), func(w *fakeWorker) {
		w.model, w.inferAhead = "forged", 365*24*time.Hour
	})
	n := newFakeNode("n1", cli)
	n.dial = grpcauth.DialOption(p.Source(t, pki.Node, "n1"), pki.AnyOf(pki.Scheduler))
	runNodes(t, n)
	const total = 2000
	for i := range total {
		n.add(ipv4(i))
	}
	testwait.For(t, 30*time.Second, "every sighting answered", func() bool { got, _ := n.resolved(); return got == total })
	n.mu.Lock()
	forged := n.models["forged"]
	n.mu.Unlock()
	if forged != 0 {
		t.Errorf("%d forged verdicts reached the node", forged)
	}
	if forger.batches.Load() == 0 {
		t.Fatal("the forger got no batch: the test proves nothing")
	}
	if f, _ := leaderCounters(s.Scheduler); f == 0 {
		t.Error("future-dated results not counted")
	}
	if !logs.has("dated in the future") {
		t.Error("no error log for the refused results")
	}
	if body := healthz(t, s.HTTPAddr()); !strings.Contains(body, "results with future-dated verdicts") {
		t.Errorf("/healthz does not name the refused results: %q", body)
	}
}

// TestVisualiserOverHTTPS: with --https-addr the scheduler serves its HTTP
// routes over TLS with its certificate too.
func TestVisualiserOverHTTPS(t *testing.T) {
	_, cli := startEtcd(t)
	p := pkitest.New(t)
	s, _ := startSecureScheduler(t, p, cli, "s1", func(c *scheduler.Config) { c.HTTPSAddr = "127.0.0.1:0" })
	roots := x509.NewCertPool()
	roots.AddCert(p.CA.Cert)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "localhost"}}}
	defer client.CloseIdleConnections()
	resp, err := client.Get("https://" + s.HTTPSAddr() + "/api/status")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("https /api/status: %d", resp.StatusCode)
	}
}

// healthz returns the scheduler's /healthz body.
func healthz(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
