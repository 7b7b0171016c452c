package grpcauth_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/styx-inference/styx/pkg/grpcauth"
	"github.com/styx-inference/styx/pkg/pki"
	"github.com/styx-inference/styx/pkg/pki/pkitest"
	"github.com/styx-inference/styx/pkg/testwait"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const healthService = "grpc.health.v1.Health"

// logBuf collects the guard's log lines.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// lines are the log lines that contain s.
func (l *logBuf) lines(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range strings.Split(l.b.String(), "\n") {
		if line != "" && strings.Contains(line, s) {
			n++
		}
	}
	return n
}

// healthSvc is the health service, recording who called Check.
type healthSvc struct {
	*health.Server
	mu      sync.Mutex
	callers []pki.Identity
	plain   int // calls with no identity
}

func (h *healthSvc) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	id, ok := grpcauth.Identity(ctx)
	h.mu.Lock()
	if ok {
		h.callers = append(h.callers, id)
	} else {
		h.plain++
	}
	h.mu.Unlock()
	return h.Server.Check(ctx, req)
}

func (h *healthSvc) seen() ([]pki.Identity, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]pki.Identity(nil), h.callers...), h.plain
}

type server struct {
	addr  string
	guard *grpcauth.Guard
	log   *logBuf
	svc   *healthSvc
}

// serveMTLS runs a gRPC server on loopback with the health service,
// mutual TLS as src and the guard's rules.
func serveMTLS(t *testing.T, src *pki.Source, rules grpcauth.Rules) *server {
	t.Helper()
	log := &logBuf{}
	s := &server{log: log, guard: grpcauth.NewGuard(rules, zerolog.New(log)), svc: &healthSvc{Server: health.NewServer()}}
	return s.start(t, grpcauth.ServerOptions(src, s.guard))
}

func (s *server) start(t *testing.T, opts []grpc.ServerOption) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(opts...)
	healthpb.RegisterHealthServer(srv, s.svc)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	s.addr = ln.Addr().String()
	return s
}

func (s *server) client(t *testing.T, opt grpc.DialOption) healthpb.HealthClient {
	t.Helper()
	cc, err := grpc.NewClient(s.addr, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return healthpb.NewHealthClient(cc)
}

func check(c healthpb.HealthClient) error {
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout)
	defer cancel()
	_, err := c.Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

// watch opens the Watch stream and reads its first message.
func watch(c healthpb.HealthClient) error {
	ctx, cancel := context.WithTimeout(context.Background(), testwait.Timeout)
	defer cancel()
	st, err := c.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return err
	}
	resp, err := st.Recv()
	if err != nil {
		return err
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("status %s", resp.GetStatus())
	}
	return nil
}

func wantCode(t *testing.T, err error, code codes.Code, what string) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("%s: %v, want %s", what, err, code)
	}
}

func TestAllowedRole(t *testing.T) {
	p := pkitest.New(t)
	s := serveMTLS(t, p.Source(t, pki.Worker, "w1"), grpcauth.Rules{healthService: {pki.Scheduler, pki.Admin}})
	admin := s.client(t, grpcauth.DialOption(p.Source(t, pki.Admin, "alice"), pki.AnyOf(pki.Worker)))
	if err := check(admin); err != nil {
		t.Fatalf("an admin's Check: %v", err)
	}
	if err := watch(admin); err != nil {
		t.Fatalf("an admin's Watch: %v", err)
	}
	sched := s.client(t, grpcauth.DialOption(p.Source(t, pki.Scheduler, "s1"), pki.Exactly(pki.Identity{Role: pki.Worker, ID: "w1"})))
	if err := check(sched); err != nil {
		t.Fatalf("a scheduler's Check: %v", err)
	}
	// The handler sees the verified identity of each caller.
	ids, plain := s.svc.seen()
	want := []pki.Identity{{Role: pki.Admin, ID: "alice"}, {Role: pki.Scheduler, ID: "s1"}}
	if len(ids) != 2 || ids[0] != want[0] || ids[1] != want[1] || plain != 0 {
		t.Errorf("handler saw %v and %d plain calls, want %v", ids, plain, want)
	}
	if n := s.guard.Total(); n != 0 {
		t.Errorf("%d refusals: %v", n, s.guard.Refused())
	}
}

func TestRoleRefused(t *testing.T) {
	p := pkitest.New(t)
	s := serveMTLS(t, p.Source(t, pki.Worker, "w1"), grpcauth.Rules{healthService: {pki.Admin}})
	node := s.client(t, grpcauth.DialOption(p.Source(t, pki.Node, "n1"), nil))
	err := check(node)
	wantCode(t, err, codes.PermissionDenied, "a node's Check of an admin-only service")
	if !strings.Contains(err.Error(), "spiffe://styx/node/n1") || !strings.Contains(err.Error(), healthService) {
		t.Errorf("the refusal %q names neither the caller nor the service", err)
	}
	wantCode(t, watch(node), codes.PermissionDenied, "a node's Watch of an admin-only service")
	if got := s.guard.Refused(); got[grpcauth.ReasonRole] != 2 || got[grpcauth.ReasonHandshake] != 0 {
		t.Errorf("refused %v, want 2 by role", got)
	}
	if ids, plain := s.svc.seen(); len(ids) != 0 || plain != 0 {
		t.Errorf("the handler ran for a refused call: %v, %d", ids, plain)
	}
	if s.log.lines(`"reason":"role"`) != 1 || s.log.lines(`"peer":"spiffe://styx/node/n1@127.0.0.1"`) != 1 {
		t.Errorf("refusal not logged once with the reason and identity: %s", s.log.String())
	}
	// The same connection, another role: a worker is refused, an admin is not.
	wantCode(t, check(s.client(t, grpcauth.DialOption(p.Source(t, pki.Worker, "w2"), nil))), codes.PermissionDenied, "a worker's Check")
	if err := check(s.client(t, grpcauth.DialOption(p.Source(t, pki.Admin, "a"), nil))); err != nil {
		t.Errorf("an admin's Check: %v", err)
	}
}

func TestUnlistedServiceRefused(t *testing.T) {
	p := pkitest.New(t)
	s := serveMTLS(t, p.Source(t, pki.Worker, "w1"), grpcauth.Rules{"styx.v1.AdminService": {pki.Admin}})
	for _, role := range pki.Roles {
		c := s.client(t, grpcauth.DialOption(p.Source(t, role, "x"), nil))
		err := check(c)
		wantCode(t, err, codes.PermissionDenied, string(role)+" calling an unlisted service")
		if !strings.Contains(err.Error(), "not open to any role") {
			t.Errorf("the refusal %q does not say the service is closed", err)
		}
	}
	if got := s.guard.Refused()[grpcauth.ReasonRole]; got != uint64(len(pki.Roles)) {
		t.Errorf("refused %d by role, want %d", got, len(pki.Roles))
	}
	// A service listed with no roles is closed as well.
	s = serveMTLS(t, p.Source(t, pki.Worker, "w1"), grpcauth.Rules{healthService: nil})
	wantCode(t, check(s.client(t, grpcauth.DialOption(p.Source(t, pki.Admin, "a"), nil))), codes.PermissionDenied, "a service with no roles")
}

// handshakeRefused waits for the guard to count a refused handshake and
// checks that the refusal was logged.
func handshakeRefused(t *testing.T, s *server, says string) {
	t.Helper()
	testwait.For(t, testwait.Timeout, "a refused handshake counted", func() bool {
		return s.guard.Refused()[grpcauth.ReasonHandshake] > 0
	})
	if got := s.guard.Refused()[grpcauth.ReasonRole]; got != 0 {
		t.Errorf("%d refused by role, want none", got)
	}
	testwait.For(t, testwait.Timeout, "the refused handshake logged", func() bool {
		return s.log.lines(`"reason":"handshake"`) > 0 && s.log.lines(says) > 0
	})
	// The source is the client's host: its port changes with every
	// connection, and the log limit is per source.
	if n := s.log.lines(`"peer":"127.0.0.1"`); n != s.log.lines(`"reason":"handshake"`) {
		t.Errorf("%d of the handshake refusals name the host: %s", n, s.log.String())
	}
	if ids, plain := s.svc.seen(); len(ids) != 0 || plain != 0 {
		t.Errorf("the handler ran: %v, %d", ids, plain)
	}
}

func TestHandshakeRefused(t *testing.T) {
	p := pkitest.New(t)
	foreign := pkitest.New(t)
	rules := grpcauth.Rules{healthService: pki.Roles}
	tlsFrom := func(t *testing.T, dir string) grpc.DialOption {
		cfg := &tls.Config{InsecureSkipVerify: true}
		if dir != "" {
			pair, err := tls.LoadX509KeyPair(filepath.Join(dir, pki.CertFile), filepath.Join(dir, pki.KeyFile))
			if err != nil {
				t.Fatal(err)
			}
			cfg.Certificates = []tls.Certificate{pair}
		}
		return grpc.WithTransportCredentials(credentials.NewTLS(cfg))
	}
	for _, tc := range []struct {
		name string
		opt  func(t *testing.T) grpc.DialOption
		says string // in the log line
	}{
		{name: "plaintext", says: "does not look like a TLS handshake", opt: func(t *testing.T) grpc.DialOption {
			return grpc.WithTransportCredentials(insecure.NewCredentials())
		}},
		{name: "no client certificate", says: "certificate", opt: func(t *testing.T) grpc.DialOption { return tlsFrom(t, "") }},
		{name: "another CA", says: "unknown authority", opt: func(t *testing.T) grpc.DialOption {
			return tlsFrom(t, foreign.Dir(t, pki.Admin, "a"))
		}},
		{name: "expired", says: "expired", opt: func(t *testing.T) grpc.DialOption {
			return tlsFrom(t, p.Issue(t, pki.Admin, "a", pki.IssueOptions{Lifetime: time.Hour, Now: time.Now().Add(-2 * time.Hour)}))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := serveMTLS(t, p.Source(t, pki.Worker, "w1"), rules)
			wantCode(t, check(s.client(t, tc.opt(t))), codes.Unavailable, tc.name)
			handshakeRefused(t, s, tc.says)
		})
	}
}

func TestClientRefusesTheServer(t *testing.T) {
	p := pkitest.New(t)
	s := serveMTLS(t, p.Source(t, pki.Worker, "w1"), grpcauth.Rules{healthService: pki.Roles})
	admin := p.Source(t, pki.Admin, "a")
	for name, expect := range map[string]pki.Policy{
		"a scheduler":        pki.AnyOf(pki.Scheduler),
		"worker w2":          pki.WorkerPolicy("w2"),
		"exactly w1 as node": pki.Exactly(pki.Identity{Role: pki.Node, ID: "w1"}),
	} {
		wantCode(t, check(s.client(t, grpcauth.DialOption(admin, expect))), codes.Unavailable, "a client expecting "+name)
	}
	if err := check(s.client(t, grpcauth.DialOption(admin, pki.WorkerPolicy("w1-numa0")))); err != nil {
		t.Errorf("a client expecting w1-numa0: %v", err)
	}
	// A server of another CA is refused by the client.
	other := serveMTLS(t, pkitest.New(t).Source(t, pki.Worker, "w1"), grpcauth.Rules{healthService: pki.Roles})
	wantCode(t, check(other.client(t, grpcauth.DialOption(admin, nil))), codes.Unavailable, "a server of another CA")
}

func TestGuardWithoutTLS(t *testing.T) {
	// The guard behind a plaintext transport: no identity, refused as a
	// handshake failure with Unauthenticated.
	s := &server{log: &logBuf{}, svc: &healthSvc{Server: health.NewServer()}}
	s.guard = grpcauth.NewGuard(grpcauth.Rules{healthService: pki.Roles}, zerolog.New(s.log))
	s.start(t, []grpc.ServerOption{grpc.ChainUnaryInterceptor(s.guard.Unary()), grpc.ChainStreamInterceptor(s.guard.Stream())})
	c := s.client(t, grpc.WithTransportCredentials(insecure.NewCredentials()))
	wantCode(t, check(c), codes.Unauthenticated, "a plaintext Check")
	wantCode(t, watch(c), codes.Unauthenticated, "a plaintext Watch")
	if got := s.guard.Refused(); got[grpcauth.ReasonHandshake] != 2 || got[grpcauth.ReasonRole] != 0 {
		t.Errorf("refused %v, want 2 handshake", got)
	}
	if ids, plain := s.svc.seen(); len(ids) != 0 || plain != 0 {
		t.Errorf("the handler ran: %v, %d", ids, plain)
	}
}

func TestIdentity(t *testing.T) {
	p := pkitest.New(t)
	leaf := func(dir string) *x509.Certificate {
		pair, err := tls.LoadX509KeyPair(filepath.Join(dir, pki.CertFile), filepath.Join(dir, pki.KeyFile))
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(pair.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	admin := leaf(p.Dir(t, pki.Admin, "alice"))
	noURI := &x509.Certificate{URIs: []*url.URL{{Scheme: "https", Host: "example.com"}}}
	withTLS := func(certs ...*x509.Certificate) context.Context {
		return peer.NewContext(context.Background(), &peer.Peer{
			Addr:     &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1},
			AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{PeerCertificates: certs}},
		})
	}
	for _, tc := range []struct {
		name string
		ctx  context.Context
		want pki.Identity // zero: none
	}{
		{"no peer", context.Background(), pki.Identity{}},
		{"plaintext peer", peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{}}), pki.Identity{}},
		{"TLS without a certificate", withTLS(), pki.Identity{}},
		{"a certificate without identity", withTLS(noURI), pki.Identity{}},
		{"an identity", withTLS(admin), pki.Identity{Role: pki.Admin, ID: "alice"}},
		{"the leaf counts, not the chain", withTLS(admin, noURI), pki.Identity{Role: pki.Admin, ID: "alice"}},
		{"the leaf without identity", withTLS(noURI, admin), pki.Identity{}},
	} {
		id, ok := grpcauth.Identity(tc.ctx)
		if ok != !tc.want.IsZero() || id != tc.want {
			t.Errorf("%s: Identity = %v, %v; want %v", tc.name, id, ok, tc.want)
		}
	}
}

func TestRefusalLogIsLimited(t *testing.T) {
	p := pkitest.New(t)
	s := serveMTLS(t, p.Source(t, pki.Worker, "w1"), grpcauth.Rules{healthService: {pki.Admin}})
	node := p.Source(t, pki.Node, "n1")
	const calls = 50

	// One connection, many refused calls.
	c := s.client(t, grpcauth.DialOption(node, nil))
	start := time.Now()
	for range calls {
		wantCode(t, check(c), codes.PermissionDenied, "a node's Check")
	}
	limit := 1 + int(time.Since(start)/time.Second)
	if got := s.guard.Refused()[grpcauth.ReasonRole]; got != calls {
		t.Errorf("counted %d refusals, want every one of %d", got, calls)
	}
	if n := s.log.lines(`"reason":"role"`); n < 1 || n > limit {
		t.Errorf("%d log lines for %d refusals in %d second(s)", n, calls, limit)
	}

	// A connection per call: the source is the host, not the port.
	s = serveMTLS(t, p.Source(t, pki.Worker, "w1"), grpcauth.Rules{healthService: {pki.Admin}})
	start = time.Now()
	for range calls / 5 {
		cc, err := grpc.NewClient(s.addr, grpcauth.DialOption(node, nil))
		if err != nil {
			t.Fatal(err)
		}
		wantCode(t, check(healthpb.NewHealthClient(cc)), codes.PermissionDenied, "a node's Check")
		cc.Close()
	}
	limit = 1 + int(time.Since(start)/time.Second)
	if n := s.log.lines(`"reason":"role"`); n < 1 || n > limit {
		t.Errorf("%d log lines for %d refusals on new connections in %d second(s)", n, calls/5, limit)
	}

	// Plaintext connections: refused handshakes from one host.
	s = serveMTLS(t, p.Source(t, pki.Worker, "w1"), grpcauth.Rules{healthService: {pki.Admin}})
	start = time.Now()
	for range calls / 5 {
		cc, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		wantCode(t, check(healthpb.NewHealthClient(cc)), codes.Unavailable, "a plaintext Check")
		cc.Close()
	}
	// The server counts a refused handshake, then logs it, after its side
	// of the handshake ends: wait for both.
	testwait.For(t, testwait.Timeout, "every plaintext handshake counted and one logged", func() bool {
		return s.guard.Refused()[grpcauth.ReasonHandshake] >= calls/5 && s.log.lines(`"reason":"handshake"`) >= 1
	})
	limit = 1 + int(time.Since(start)/time.Second)
	if n := s.log.lines(`"reason":"handshake"`); n < 1 || n > limit {
		t.Errorf("%d log lines for %d plaintext handshakes in %d second(s)", n, calls/5, limit)
	}
}

func TestRefuseLimitsPerReasonAndSource(t *testing.T) {
	log := &logBuf{}
	g := grpcauth.NewGuard(nil, zerolog.New(log))
	errX := errors.New("x")
	start := time.Now()
	for range 100 {
		g.Refuse(grpcauth.ReasonRole, "peer-a", "call", errX)
	}
	// Another source in between does not make the first one heard again.
	for range 100 {
		g.Refuse(grpcauth.ReasonRole, "peer-b", "call", errX)
		g.Refuse(grpcauth.ReasonRole, "peer-a", "call", errX)
	}
	g.Refuse(grpcauth.ReasonHandshake, "peer-a", "call", errX)
	g.Refuse(grpcauth.ReasonIdentity, "peer-a", "call", errX)
	limit := 1 + int(time.Since(start)/time.Second)
	if n := log.lines(`"peer":"peer-a"`); n < 3 || n > 2+limit {
		t.Errorf("%d lines for peer-a (200 role, 1 handshake, 1 identity refusals)", n)
	}
	if n := log.lines(`"peer":"peer-b"`); n < 1 || n > limit {
		t.Errorf("%d lines for peer-b (100 role refusals)", n)
	}
	if n := log.lines(`"level":"warn"`); n != log.lines("refused") {
		t.Error("refusals not logged as warnings")
	}
	want := map[string]uint64{grpcauth.ReasonRole: 300, grpcauth.ReasonHandshake: 1, grpcauth.ReasonIdentity: 1}
	got := g.Refused()
	if len(got) != len(want) {
		t.Errorf("Refused %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("Refused %v, want %v", got, want)
		}
	}
	if g.Total() != 302 {
		t.Errorf("Total %d", g.Total())
	}
	// Refused returns a copy.
	got[grpcauth.ReasonRole] = 0
	if g.Refused()[grpcauth.ReasonRole] != 300 {
		t.Error("Refused returned the guard's own map")
	}
}

func TestRefuseLimitSurvivesAFlood(t *testing.T) {
	// Many sources at once: the guard forgets old ones, but the source it
	// just logged stays quiet for its second.
	log := &logBuf{}
	g := grpcauth.NewGuard(nil, zerolog.New(log))
	errX := errors.New("x")
	start := time.Now()
	const sources = 5000
	for i := range sources {
		g.Refuse(grpcauth.ReasonHandshake, fmt.Sprintf("10.0.%d.%d", i/256, i%256), "tls handshake", errX)
		g.Refuse(grpcauth.ReasonHandshake, fmt.Sprintf("10.0.%d.%d", i/256, i%256), "tls handshake", errX)
	}
	if time.Since(start) >= time.Second {
		t.Skip("the machine took a second for the flood; the limit cannot be seen")
	}
	if n := log.lines(`"reason":"handshake"`); n != sources {
		t.Errorf("%d lines for %d sources refused twice each, want one per source", n, sources)
	}
	if g.Total() != 2*sources {
		t.Errorf("Total %d", g.Total())
	}
}

func TestCollector(t *testing.T) {
	g := grpcauth.NewGuard(nil, zerolog.Nop())
	errX := errors.New("x")
	for range 2 {
		g.Refuse(grpcauth.ReasonHandshake, "h", "c", errX)
	}
	for range 3 {
		g.Refuse(grpcauth.ReasonRole, "r", "c", errX)
	}
	g.Refuse(grpcauth.ReasonIdentity, "i", "c", errX)
	const want = `
# HELP styx_scheduler_auth_refused_total gRPC peers refused: handshake (no or bad certificate, plaintext), role (identity not allowed on the service), identity (acting as another id).
# TYPE styx_scheduler_auth_refused_total counter
styx_scheduler_auth_refused_total{reason="handshake"} 2
styx_scheduler_auth_refused_total{reason="identity"} 1
styx_scheduler_auth_refused_total{reason="role"} 3
`
	if err := testutil.CollectAndCompare(g.Collector("styx_scheduler"), strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	if err := g.Register(reg, "styx_scheduler"); err != nil {
		t.Fatal(err)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
	if err := g.Register(reg, "styx_scheduler"); err == nil {
		t.Error("registered twice")
	}
	// Zero counts are exported too.
	const zero = `
# HELP x_auth_refused_total gRPC peers refused: handshake (no or bad certificate, plaintext), role (identity not allowed on the service), identity (acting as another id).
# TYPE x_auth_refused_total counter
x_auth_refused_total{reason="handshake"} 0
x_auth_refused_total{reason="identity"} 0
x_auth_refused_total{reason="role"} 0
`
	if err := testutil.CollectAndCompare(grpcauth.NewGuard(nil, zerolog.Nop()).Collector("x"), strings.NewReader(zero)); err != nil {
		t.Fatal(err)
	}
}

func TestCollectorCountsRealRefusals(t *testing.T) {
	p := pkitest.New(t)
	s := serveMTLS(t, p.Source(t, pki.Worker, "w1"), grpcauth.Rules{healthService: {pki.Admin}})
	wantCode(t, check(s.client(t, grpcauth.DialOption(p.Source(t, pki.Node, "n1"), nil))), codes.PermissionDenied, "a node")
	wantCode(t, check(s.client(t, grpc.WithTransportCredentials(insecure.NewCredentials()))), codes.Unavailable, "plaintext")
	testwait.For(t, testwait.Timeout, "the plaintext handshake counted", func() bool {
		return s.guard.Refused()[grpcauth.ReasonHandshake] > 0
	})
	reg := prometheus.NewPedanticRegistry()
	if err := s.guard.Register(reg, "styx_worker"); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, m := range mfs[0].GetMetric() {
		got[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
	}
	if got["role"] != 1 || got["handshake"] < 1 || got["identity"] != 0 {
		t.Errorf("exported %v", got)
	}
}
