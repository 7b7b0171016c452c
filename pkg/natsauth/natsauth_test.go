package natsauth_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/styx-inference/styx/pkg/embednats/natstest"
	"github.com/styx-inference/styx/pkg/natsauth"
	"github.com/styx-inference/styx/pkg/pki"
	"github.com/styx-inference/styx/pkg/pki/pkitest"
	"github.com/styx-inference/styx/pkg/testwait"
	"github.com/styx-inference/styx/pkg/verdictlog"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// dial connects once, without retries, and fails the test on an error.
func dial(t *testing.T, url string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := tryDial(url, opts...)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func tryDial(url string, opts ...nats.Option) (*nats.Conn, error) {
	opts = append([]nats.Option{nats.NoReconnect(), nats.Timeout(5 * time.Second), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {})}, opts...)
	return nats.Connect(url, opts...)
}

func jsOf(t *testing.T, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// logServer starts a TLS server and creates the streams as a scheduler.
func logServer(t *testing.T) (*pkitest.PKI, *natstest.Server, jetstream.JetStream) {
	t.Helper()
	p := pkitest.New(t)
	s := natstest.StartTLS(t, p)
	nc, err := verdictlog.Connect(s.URL(), "scheduler s1", zerolog.Nop(), natstest.ClientTLS(t, p, pki.Scheduler, "s1"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js := jsOf(t, nc)
	if err := verdictlog.Ensure(ctxT(t, 10*time.Second), js, verdictlog.DefaultPolicy()); err != nil {
		t.Fatalf("a scheduler creates the streams: %v", err)
	}
	return p, s, js
}

func msgs(t *testing.T, js jetstream.JetStream, stream string) uint64 {
	t.Helper()
	ctx := ctxT(t, 5*time.Second)
	st, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// TestSchedulerPublishesReadersFollow: over mutual TLS, a scheduler
// creates the streams and publishes with the real publisher, and a node
// and a worker follow both streams with the real follower, using nothing
// their permissions refuse.
func TestSchedulerPublishesReadersFollow(t *testing.T) {
	p, s, js := logServer(t)
	pub := verdictlog.NewPublisher(js, verdictlog.PublisherConfig{AckWait: 2 * time.Second}, zerolog.Nop())
	run(t, pub.Run)
	const n = 50
	for i := range n {
		pub.Verdicts(1, []*styxv1.Verdict{
			{Address: []byte{198, 51, 100, byte(i)}, Proxy: true, InferredUnixNano: int64(i + 1)},
			{Address: []byte{203, 0, 113, byte(i)}, InferredUnixNano: int64(i + 1)},
		}, nil)
	}
	testwait.For(t, testwait.Timeout, "every batch stored", func() bool { return pub.Stats().Messages == 2*n })

	for _, role := range []pki.Role{pki.Node, pki.Worker} {
		t.Run(string(role), func(t *testing.T) {
			nc, err := verdictlog.Connect(s.URL(), string(role), zerolog.Nop(), natstest.ClientTLS(t, p, role, "r1"))
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			var mu sync.Mutex
			got := map[string]int{}
			f, err := verdictlog.NewFollower(verdictlog.FollowerConfig{
				JS:         jsOf(t, nc),
				Cursor:     func(string) (uint64, error) { return 0, nil },
				CheckEvery: 50 * time.Millisecond,
				Apply: func(stream string, ms []verdictlog.Message) error {
					mu.Lock()
					defer mu.Unlock()
					for _, m := range ms {
						got[stream] += len(m.Batch.GetVerdicts())
					}
					return nil
				},
			}, zerolog.Nop())
			if err != nil {
				t.Fatal(err)
			}
			stop := run(t, f.Run)
			testwait.For(t, testwait.Timeout, "every verdict followed, and the stream heads read", func() bool {
				mu.Lock()
				done := got[verdictlog.StreamClean] == n && got[verdictlog.StreamProxy] == n
				mu.Unlock()
				st := f.Status()
				for _, ss := range st.Streams {
					if ss.Head != n {
						done = false
					}
				}
				return done
			})
			stop()
		})
	}
	if r := s.Auth().Refused(); s.Auth().Total() != 0 {
		t.Errorf("refusals %v, want none: the roles' own work must stay inside their permissions", r)
	}
}

// TestReadersCannotWrite: a node or a worker cannot publish to the log,
// nor change, delete or purge a stream or its messages. Each attempt is
// refused, counted, and leaves the stream as it was.
func TestReadersCannotWrite(t *testing.T) {
	p, s, sched := logServer(t)
	ctx := ctxT(t, 30*time.Second)
	if _, err := sched.Publish(ctx, verdictlog.SubjectClean, []byte("by the scheduler")); err != nil {
		t.Fatalf("scheduler publish: %v", err)
	}
	auth := s.Auth()
	for _, role := range []pki.Role{pki.Node, pki.Worker} {
		nc := dial(t, s.URL(), natstest.ClientTLS(t, p, role, "r1"))
		js := jsOf(t, nc)
		// A refused request gets no answer: its time-out is the error.
		// The counted refusal, and the streams unchanged at the end, are
		// what the test asserts.
		short := func() context.Context { return ctxT(t, 500*time.Millisecond) }
		for _, tc := range []struct {
			name string
			try  func() error
		}{
			{"publish to the log with JetStream", func() error {
				_, err := js.Publish(short(), verdictlog.SubjectClean, []byte("forged"))
				return err
			}},
			{"publish to the log", func() error {
				if err := nc.Publish(verdictlog.SubjectProxy, []byte("forged")); err != nil {
					return err
				}
				return errors.New("no error on publish (refused at the server)")
			}},
			{"update a stream", func() error {
				cfg := verdictlog.DefaultPolicy().StreamConfigs()[1]
				cfg.MaxAge = time.Minute
				_, err := js.UpdateStream(short(), cfg)
				return err
			}},
			{"create a stream", func() error {
				_, err := js.CreateStream(short(), jetstream.StreamConfig{Name: "ROGUE", Subjects: []string{"rogue.>"}})
				return err
			}},
			{"delete a stream", func() error { return js.DeleteStream(short(), verdictlog.StreamClean) }},
			{"purge a stream", func() error {
				return jsAPI(nc, "STREAM.PURGE."+verdictlog.StreamClean, "{}", 500*time.Millisecond)
			}},
			{"delete a message", func() error {
				return jsAPI(nc, "STREAM.MSG.DELETE."+verdictlog.StreamClean, `{"seq":1}`, 500*time.Millisecond)
			}},
		} {
			t.Run(string(role)+"/"+tc.name, func(t *testing.T) {
				before := auth.Refused()[natsauth.ReasonPermission]
				err := tc.try()
				if err == nil {
					t.Fatal("the operation succeeded")
				}
				testwait.For(t, testwait.Timeout, "the refusal counted", func() bool {
					return auth.Refused()[natsauth.ReasonPermission] > before
				})
				if err := nc.Flush(); err != nil {
					t.Fatalf("the connection itself stays up: %v", err)
				}
			})
		}
	}
	// The scheduler's next message lands right after its first one:
	// nothing a reader sent was stored, and nothing was removed.
	ack, err := sched.Publish(ctx, verdictlog.SubjectClean, []byte("by the scheduler, again"))
	if err != nil {
		t.Fatal(err)
	}
	if ack.Sequence != 2 {
		t.Errorf("the scheduler's second message has sequence %d, want 2", ack.Sequence)
	}
	if got := msgs(t, sched, verdictlog.StreamClean); got != 2 {
		t.Errorf("clean stream holds %d messages, want 2", got)
	}
	if got := msgs(t, sched, verdictlog.StreamProxy); got != 0 {
		t.Errorf("proxy stream holds %d messages, want 0", got)
	}
	st, err := sched.Stream(ctx, verdictlog.StreamClean)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.CachedInfo().Config.MaxAge; got != verdictlog.DefaultCleanRetention {
		t.Errorf("clean stream MaxAge %s, want %s", got, verdictlog.DefaultCleanRetention)
	}
	if _, err := sched.Stream(ctx, "ROGUE"); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("stream ROGUE: %v, want not found", err)
	}
}

// TestReadersCannotMoveMessagesBetweenStreams: a reader may create
// consumers, and a push consumer delivers to any subject it names, also a
// subject of the other log stream: a node could copy the clean stream into
// the proxy stream (and back, without end). The log's messages carry the
// stream they belong to (Nats-Expected-Stream), so the other stream refuses
// the copies. The scheduler's publisher must set that header on every
// batch (jetstream.WithExpectStream), as this test's scheduler does.
func TestReadersCannotMoveMessagesBetweenStreams(t *testing.T) {
	p, s, sched := logServer(t)
	ctx := ctxT(t, 30*time.Second)
	if _, err := sched.Publish(ctx, verdictlog.SubjectClean, []byte("clean batch"), jetstream.WithExpectStream(verdictlog.StreamClean)); err != nil {
		t.Fatal(err)
	}
	watch := dial(t, s.URL(), natstest.ClientTLS(t, p, pki.Admin, "ops"))
	copies, err := watch.SubscribeSync(verdictlog.SubjectProxy)
	if err != nil {
		t.Fatal(err)
	}
	if err := watch.Flush(); err != nil {
		t.Fatal(err)
	}
	node := dial(t, s.URL(), natstest.ClientTLS(t, p, pki.Node, "n1"))
	req := `{"stream_name":"` + verdictlog.StreamClean + `","config":{"name":"copy","deliver_subject":"` + verdictlog.SubjectProxy + `","ack_policy":"none","deliver_policy":"all"}}`
	if err := jsAPI(node, "CONSUMER.CREATE."+verdictlog.StreamClean+".copy", req, 10*time.Second); err != nil {
		t.Fatalf("the node's push consumer: %v (if refused, this test no longer shows the attack)", err)
	}
	// The copy reached the proxy subject (and so the proxy stream's
	// intake, before the next message the scheduler sends there).
	if _, err := copies.NextMsg(10 * time.Second); err != nil {
		t.Fatalf("no copy delivered: %v", err)
	}
	ack, err := sched.Publish(ctx, verdictlog.SubjectProxy, []byte("proxy batch"), jetstream.WithExpectStream(verdictlog.StreamProxy))
	if err != nil {
		t.Fatal(err)
	}
	if ack.Sequence != 1 {
		t.Errorf("the scheduler's first proxy batch has sequence %d, want 1: the copy was stored", ack.Sequence)
	}
	if got := msgs(t, sched, verdictlog.StreamProxy); got != 1 {
		t.Errorf("proxy stream holds %d messages, want 1", got)
	}
}

// jsAPI sends a raw JetStream API request and returns the answer's error
// (a refused request gets none: its time-out is the error).
func jsAPI(nc *nats.Conn, op, body string, timeout time.Duration) error {
	m, err := nc.Request(natsauth.JSAPI+op, []byte(body), timeout)
	if err != nil {
		return err
	}
	if strings.Contains(string(m.Data), `"error"`) {
		return errors.New(string(m.Data))
	}
	return nil
}

// TestRefused: peers without a certificate of this CA, with an expired
// one, or of a role that may not use the log cannot connect; each refusal
// is counted once under its reason.
func TestRefused(t *testing.T) {
	p := pkitest.New(t)
	var logs syncBuffer
	s := natstest.StartTLSLog(t, p, zerolog.New(&logs))
	auth := s.Auth()
	foreign := pkitest.New(t)
	expiredDir := p.Issue(t, pki.Node, "old", pki.IssueOptions{Lifetime: time.Hour, Now: time.Now().Add(-48 * time.Hour)})
	expired, err := tls.LoadX509KeyPair(filepath.Join(expiredDir, pki.CertFile), filepath.Join(expiredDir, pki.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	// skipVerify presents cert (if any) and does not check the server: the
	// refusal must come from the server.
	skipVerify := func(cert *tls.Certificate) nats.Option {
		cfg := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		return nats.Secure(cfg)
	}
	foreignCert := func() *tls.Certificate {
		dir := foreign.Dir(t, pki.Node, "n1")
		c, err := tls.LoadX509KeyPair(filepath.Join(dir, pki.CertFile), filepath.Join(dir, pki.KeyFile))
		if err != nil {
			t.Fatal(err)
		}
		return &c
	}()
	for _, tc := range []struct {
		name   string
		reason string
		try    func() error
	}{
		{"no certificate", natsauth.ReasonHandshake, func() error { return connectErr(s.URL(), skipVerify(nil)) }},
		{"plaintext", natsauth.ReasonHandshake, func() error { return plaintext(s.Addr()) }},
		{"foreign CA", natsauth.ReasonHandshake, func() error { return connectErr(s.URL(), skipVerify(foreignCert)) }},
		{"expired certificate", natsauth.ReasonHandshake, func() error { return connectErr(s.URL(), skipVerify(&expired)) }},
		{"trainer", natsauth.ReasonRole, func() error { return connectErr(s.URL(), natstest.ClientTLS(t, p, pki.Trainer, "t1")) }},
		{"etcd", natsauth.ReasonRole, func() error { return connectErr(s.URL(), natstest.ClientTLS(t, p, pki.Etcd, "e1")) }},
		{"nats server as a client", natsauth.ReasonRole, func() error {
			return connectErr(s.URL(), natstest.ClientTLS(t, p, pki.NATS, "other"))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := auth.Refused()
			err := tc.try()
			if err == nil {
				t.Fatal("connected")
			}
			t.Logf("refused: %v", err)
			testwait.For(t, testwait.Timeout, "the refusal counted", func() bool {
				return auth.Refused()[tc.reason] > before[tc.reason]
			})
			after := auth.Refused()
			for _, r := range []string{natsauth.ReasonHandshake, natsauth.ReasonRole, natsauth.ReasonPermission} {
				want := before[r]
				if r == tc.reason {
					want++
				}
				if after[r] != want {
					t.Errorf("refused[%s] went from %d to %d, want %d", r, before[r], after[r], want)
				}
			}
		})
	}
	// Logs are limited to one per reason and peer host per second: the
	// first refusal of each reason from 127.0.0.1 is logged.
	for _, want := range []string{`"reason":"handshake","peer":"127.0.0.1","what":"tls handshake","error":"client certificate (none sent)`,
		`"reason":"role","peer":"spiffe://styx/trainer/t1@127.0.0.1"`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("no refusal logged with %s in:\n%s", want, logs.String())
		}
	}
	// The same server still takes an allowed identity.
	dial(t, s.URL(), natstest.ClientTLS(t, p, pki.Node, "n1"))

	reg := prometheus.NewRegistry()
	if err := auth.Register(reg, "styx_test"); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(`# HELP styx_test_nats_refused_total NATS peers and operations refused: handshake (no or bad certificate, not TLS), role (identity not allowed to connect), permission (publish or subscribe outside the role's permissions).
# TYPE styx_test_nats_refused_total counter
styx_test_nats_refused_total{reason="handshake"} %d
styx_test_nats_refused_total{reason="permission"} 0
styx_test_nats_refused_total{reason="role"} 3
`, 4)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}

func connectErr(url string, opts ...nats.Option) error {
	nc, err := tryDial(url, opts...)
	if err != nil {
		return err
	}
	// TLS 1.3: the client may finish its handshake before the server
	// checks the certificate; the refusal then arrives on the first
	// round trip.
	defer nc.Close()
	if err := nc.Flush(); err != nil {
		return err
	}
	return nil
}

// plaintext speaks NATS without TLS: it reads the INFO line and sends
// CONNECT and PING. A server that requires TLS closes the connection
// without answering PONG.
func plaintext(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	info, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.Contains(info, `"tls_required":true`) {
		return fmt.Errorf("INFO without tls_required: %s", info)
	}
	if _, err := io.WriteString(c, "CONNECT {\"verbose\":false}\r\nPING\r\n"); err != nil {
		return fmt.Errorf("refused: %w", err)
	}
	line, err := r.ReadString('\n')
	if strings.HasPrefix(line, "PONG") {
		return nil
	}
	return fmt.Errorf("refused: %q, %v", line, err)
}

// TestRoutes: servers with nats identities of the CA form a cluster over
// TLS; a server presenting a node's certificate, or one of another CA, is
// refused on both ends.
func TestRoutes(t *testing.T) {
	p := pkitest.New(t)
	a := routeServer(t, p.Source(t, pki.NATS, "a"), nil)
	b := routeServer(t, p.Source(t, pki.NATS, "b"), a)
	testwait.For(t, testwait.Timeout, "a route between a and b", func() bool {
		return a.NumRoutes() > 0 && b.NumRoutes() > 0
	})
	aAuth := a.auth

	// A rogue route: a nats-server that presents a node certificate.
	before := aAuth.Refused()[natsauth.ReasonRole]
	node := p.Source(t, pki.Node, "n1")
	rogue := rogueRoute(t, node.ClientConfig(nil).GetClientCertificate, a)
	testwait.For(t, testwait.Timeout, "the node's route refused", func() bool {
		return aAuth.Refused()[natsauth.ReasonRole] > before
	})
	if rogue.NumRoutes() != 0 {
		t.Errorf("rogue server has %d routes", rogue.NumRoutes())
	}

	// Another CA's nats identity.
	beforeH := aAuth.Refused()[natsauth.ReasonHandshake]
	other := pkitest.New(t).Source(t, pki.NATS, "a")
	rogue2 := rogueRoute(t, other.ClientConfig(nil).GetClientCertificate, a)
	testwait.For(t, testwait.Timeout, "the foreign route refused", func() bool {
		return aAuth.Refused()[natsauth.ReasonHandshake] > beforeH
	})
	if rogue2.NumRoutes() != 0 {
		t.Errorf("foreign server has %d routes", rogue2.NumRoutes())
	}
	if a.NumRoutes() == 0 {
		t.Error("a lost its route to b")
	}
}

type testServer struct {
	*server.Server
	auth *natsauth.Auth
}

func routeServer(t *testing.T, src *pki.Source, seed *testServer) *testServer {
	t.Helper()
	auth, err := natsauth.New(src, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	o := &server.Options{
		ServerName: src.Identity().ID, Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		Cluster: server.ClusterOpts{Name: "t", Host: "127.0.0.1", Port: -1},
	}
	if seed != nil {
		o.Routes = []*url.URL{clusterURL(t, seed.Server)}
	}
	auth.Configure(o)
	s := startServer(t, o)
	auth.SetLogger(s, nil, false, false, false)
	return &testServer{Server: s, auth: auth}
}

// rogueRoute starts a server outside the cluster's trust that dials a
// route to seed, presenting the certificate getCert returns.
func rogueRoute(t *testing.T, getCert func(*tls.CertificateRequestInfo) (*tls.Certificate, error), seed *testServer) *server.Server {
	t.Helper()
	o := &server.Options{
		ServerName: "rogue", Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		Cluster: server.ClusterOpts{Name: "t", Host: "127.0.0.1", Port: -1,
			TLSConfig: &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true, GetClientCertificate: getCert,
				GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
					return getCert(nil)
				}}},
		Routes: []*url.URL{clusterURL(t, seed.Server)},
	}
	return startServer(t, o)
}

func clusterURL(t *testing.T, s *server.Server) *url.URL {
	t.Helper()
	a := s.ClusterAddr()
	if a == nil {
		t.Fatal("no cluster listener")
	}
	return &url.URL{Scheme: "nats", Host: a.String()}
}

func startServer(t *testing.T, o *server.Options) *server.Server {
	t.Helper()
	s, err := server.NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	return s
}

// TestMonitoringHTTPS: the monitoring port serves HTTPS with the server's
// certificate, to clients with or without one, and counts no refusal.
func TestMonitoringHTTPS(t *testing.T) {
	p := pkitest.New(t)
	src := p.Source(t, pki.NATS, "m")
	auth, err := natsauth.New(src, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	o := &server.Options{ServerName: "m", Host: "127.0.0.1", Port: -1, HTTPHost: "127.0.0.1", HTTPSPort: -1, NoLog: true, NoSigs: true}
	auth.Configure(o)
	s := startServer(t, o)
	auth.SetLogger(s, nil, false, false, false)
	for _, name := range []string{"with the node's certificate", "without a certificate"} {
		cfg := p.Source(t, pki.Node, "n1").ClientConfig(pki.AnyOf(pki.NATS))
		if name == "without a certificate" {
			cfg.GetClientCertificate = nil
		}
		var serverID pki.Identity
		verify := cfg.VerifyConnection
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			serverID, _ = pki.FromCert(cs.PeerCertificates[0])
			return verify(cs)
		}
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 5 * time.Second}
		resp, err := hc.Get("https://" + s.MonitorAddr().String() + "/healthz")
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		resp.Body.Close()
		hc.CloseIdleConnections()
		if resp.StatusCode != http.StatusOK || serverID != src.Identity() {
			t.Errorf("%s: %s from %s, want 200 OK from %s", name, resp.Status, serverID, src.Identity())
		}
	}
	if n := auth.Total(); n != 0 {
		t.Errorf("%d refusals, want none", n)
	}
}

// TestRotation: a renewed server certificate is served, and a renewed
// client certificate accepted, without a restart.
func TestRotation(t *testing.T) {
	p := pkitest.New(t)
	s := natstest.StartTLS(t, p)
	serial := func() *big.Int {
		var got *big.Int
		cfg := p.Source(t, pki.Node, "n1").ClientConfig(pki.AnyOf(pki.NATS))
		verify := cfg.VerifyConnection
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			got = cs.PeerCertificates[0].SerialNumber
			return verify(cs)
		}
		cfg.ClientSessionCache = nil
		nc := dial(t, s.URL(), nats.Secure(cfg))
		nc.Close()
		return got
	}
	first := serial()
	p.Renew(t, pki.NATS, natstest.ServerID, pkitest.Opts())
	testwait.For(t, testwait.Timeout, "the renewed server certificate served", func() bool {
		return serial().Cmp(first) != 0
	})

	client := p.Source(t, pki.Node, "n2")
	dial(t, s.URL(), nats.Secure(client.ClientConfig(pki.AnyOf(pki.NATS)))).Close()
	p.Renew(t, pki.Node, "n2", pkitest.Opts())
	testwait.For(t, testwait.Timeout, "a connection with the client's renewed certificate", func() bool {
		dial(t, s.URL(), nats.Secure(client.ClientConfig(pki.AnyOf(pki.NATS)))).Close()
		return client.Reloads() > 0
	})
	if n := s.Auth().Total(); n != 0 {
		t.Errorf("%d refusals, want none", n)
	}
}

// TestDisconnectAtExpiry: a client is disconnected when its certificate
// expires, and cannot come back with it.
func TestDisconnectAtExpiry(t *testing.T) {
	p := pkitest.New(t)
	s := natstest.StartTLS(t, p)
	lifetime := 3 * time.Second
	dir := p.Issue(t, pki.Node, "brief", pki.IssueOptions{Lifetime: lifetime})
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, pki.CertFile), filepath.Join(dir, pki.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true, Certificates: []tls.Certificate{cert}}
	nc, err := tryDial(s.URL(), nats.Secure(cfg), nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	if err != nil {
		if time.Now().After(leaf.NotAfter) {
			t.Skipf("the %s certificate expired before the handshake (slow machine)", lifetime)
		}
		t.Fatal(err)
	}
	defer nc.Close()
	select {
	case <-closed:
	case <-time.After(lifetime + testwait.Timeout):
		t.Fatal("still connected after the certificate expired")
	}
	if now := time.Now(); now.Before(leaf.NotAfter) {
		t.Errorf("disconnected at %s, before the certificate's expiry %s", now, leaf.NotAfter)
	}
	if err := connectErr(s.URL(), nats.Secure(cfg)); err == nil {
		t.Error("reconnected with the expired certificate")
	}
}

// TestPermissions: the table's edges.
func TestPermissions(t *testing.T) {
	if p, err := natsauth.Permissions(pki.Admin); p != nil || err != nil {
		t.Errorf("admin: %v, %v; want everything", p, err)
	}
	for _, r := range []pki.Role{pki.Trainer, pki.Etcd, pki.NATS, pki.Role("rogue")} {
		if _, err := natsauth.Permissions(r); err == nil {
			t.Errorf("%s: allowed, want refused", r)
		}
	}
	sched, err := natsauth.Permissions(pki.Scheduler)
	if err != nil {
		t.Fatal(err)
	}
	if !contains(sched.Publish.Allow, natsauth.LogSubjects) || !contains(sched.Publish.Allow, "$JS.API.>") {
		t.Errorf("scheduler publish %v", sched.Publish.Allow)
	}
	for _, r := range []pki.Role{pki.Node, pki.Worker} {
		perm, err := natsauth.Permissions(r)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range perm.Publish.Allow {
			if strings.HasPrefix(a, "styx.") || a == "$JS.API.>" || strings.Contains(a, "STREAM.CREATE") || strings.Contains(a, "STREAM.UPDATE") ||
				strings.Contains(a, "STREAM.DELETE") || strings.Contains(a, "PURGE") || strings.Contains(a, "MSG.DELETE") {
				t.Errorf("%s may publish %s", r, a)
			}
		}
		if !contains(perm.Publish.Deny, natsauth.LogSubjects) {
			t.Errorf("%s: %s not denied", r, natsauth.LogSubjects)
		}
	}
	for _, subj := range []string{verdictlog.SubjectClean, verdictlog.SubjectProxy, verdictlog.SubjectAttacks} {
		if !strings.HasPrefix(subj, strings.TrimSuffix(natsauth.LogSubjects, ">")) {
			t.Errorf("log subject %s outside %s", subj, natsauth.LogSubjects)
		}
	}
}

func TestNewRefusesOtherRoles(t *testing.T) {
	p := pkitest.New(t)
	if _, err := natsauth.New(p.Source(t, pki.Scheduler, "s1"), zerolog.Nop()); err == nil {
		t.Error("a scheduler identity accepted as a nats server's")
	}
	if _, err := natsauth.New(nil, zerolog.Nop()); err == nil {
		t.Error("nil identity accepted")
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// run starts fn in a goroutine; the returned stop (also the test's
// cleanup) cancels it and waits.
func run(t *testing.T, fn func(ctx context.Context) error) func() {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = fn(ctx) }()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}
