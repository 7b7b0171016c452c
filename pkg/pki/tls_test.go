package pki_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/styx-inference/styx/pkg/pki"
	"github.com/styx-inference/styx/pkg/pki/pkitest"
	"github.com/styx-inference/styx/pkg/testwait"
)

// seen is a policy that records the identities it was asked about and
// accepts while allow is set.
type seen struct {
	mu    sync.Mutex
	ids   []pki.Identity
	allow atomic.Bool
}

func newSeen() *seen {
	s := &seen{}
	s.allow.Store(true)
	return s
}

func (s *seen) policy(id pki.Identity) error {
	s.mu.Lock()
	s.ids = append(s.ids, id)
	s.mu.Unlock()
	if !s.allow.Load() {
		return errors.New("refused by the test")
	}
	return nil
}

func (s *seen) calls() []pki.Identity {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]pki.Identity(nil), s.ids...)
}

func TestMutualTLS(t *testing.T) {
	p := pkitest.New(t)
	server := p.Source(t, pki.Worker, "w1")
	client := p.Source(t, pki.Scheduler, "s1")
	accept, expect := newSeen(), newSeen()
	srv := serveTLS(t, server.ServerConfig(accept.policy))
	cs := mustHandshake(t, srv, client.ClientConfig(expect.policy))
	if cs.Version != tls.VersionTLS13 {
		t.Errorf("version %x, want TLS 1.3", cs.Version)
	}
	if got := peerIdentity(t, cs); got != w1 {
		t.Errorf("client sees %v", got)
	}
	if got := accept.calls(); len(got) != 1 || got[0] != (pki.Identity{Role: pki.Scheduler, ID: "s1"}) {
		t.Errorf("server policy saw %v", got)
	}
	if got := expect.calls(); len(got) != 1 || got[0] != w1 {
		t.Errorf("client policy saw %v", got)
	}
	// Nil policies accept any identity of the CA.
	mustHandshake(t, serveTLS(t, server.ServerConfig(nil)), p.Source(t, pki.Node, "n1").ClientConfig(nil))
}

func TestServerRefuses(t *testing.T) {
	p := pkitest.New(t)
	foreign := pkitest.New(t)
	srv := serveTLS(t, p.Source(t, pki.Worker, "w1").ServerConfig(nil))
	for _, tc := range []struct {
		name   string
		client func(t *testing.T) *tls.Config
		says   string // in the server's error
	}{
		{name: "no certificate", says: "certificate", client: func(t *testing.T) *tls.Config {
			return rawClient(t, "")
		}},
		{name: "a certificate of another CA", says: "unknown authority", client: func(t *testing.T) *tls.Config {
			return rawClient(t, foreign.Dir(t, pki.Scheduler, "s1"))
		}},
		{name: "a Source of another CA", says: "unknown authority", client: func(t *testing.T) *tls.Config {
			// The foreign client would refuse the server as well; let it
			// accept anything so that the server's refusal is seen.
			c := foreign.Source(t, pki.Scheduler, "s1").ClientConfig(nil)
			c.VerifyConnection = nil
			return c
		}},
		{name: "expired", says: "expired", client: func(t *testing.T) *tls.Config {
			return rawClient(t, p.Issue(t, pki.Scheduler, "s1", pki.IssueOptions{Lifetime: time.Hour, Now: time.Now().Add(-2 * time.Hour)}))
		}},
		{name: "not yet valid", says: "not yet valid", client: func(t *testing.T) *tls.Config {
			return rawClient(t, p.Issue(t, pki.Scheduler, "s1", pki.IssueOptions{Lifetime: time.Hour, Now: time.Now().Add(time.Hour)}))
		}},
		{name: "server auth only", says: "usage", client: func(t *testing.T) *tls.Config {
			return rawClient(t, custom(t, p.CA, func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth} }))
		}},
		{name: "no identity URI", says: "no spiffe", client: func(t *testing.T) *tls.Config {
			return rawClient(t, custom(t, p.CA, func(c *x509.Certificate) { c.URIs = nil }))
		}},
		{name: "signed by a home-made CA", says: "unknown authority", client: func(t *testing.T) *tls.Config {
			self, err := pki.NewCA("self", 0, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			return rawClient(t, custom(t, self, func(c *x509.Certificate) {}))
		}},
		{name: "TLS 1.2", says: "version", client: func(t *testing.T) *tls.Config {
			c := rawClient(t, p.Dir(t, pki.Scheduler, "s1"))
			c.MaxVersion = tls.VersionTLS12
			return c
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, serr := mustRefuse(t, srv, tc.client(t))
			if !strings.Contains(serr.Error(), tc.says) {
				t.Errorf("server error %q does not say %q", serr, tc.says)
			}
		})
	}
	// The server still accepts its own CA's clients, raw or not.
	mustHandshake(t, srv, rawClient(t, p.Dir(t, pki.Scheduler, "s1")))
	mustHandshake(t, srv, p.Source(t, pki.Scheduler, "s1").ClientConfig(nil))
}

func TestServerRefusesExpiredByItsClock(t *testing.T) {
	// The server checks the client's certificate at its own current time.
	p := pkitest.New(t)
	server := p.Source(t, pki.Worker, "w1")
	clk := newClock(time.Now())
	server.SetClock(clk.Now)
	client := p.Source(t, pki.Scheduler, "s1")
	srv := serveTLS(t, server.ServerConfig(nil))
	mustHandshake(t, srv, client.ClientConfig(nil))
	clk.Set(client.NotAfter().Add(time.Second))
	_, serr := mustRefuse(t, srv, client.ClientConfig(nil))
	if !strings.Contains(serr.Error(), "expired") {
		t.Errorf("server error %v", serr)
	}
}

// rawServer serves the certificate in dir with no client authentication,
// as a rogue or misconfigured server would.
func rawServer(t *testing.T, dir string) *tlsServer {
	t.Helper()
	c := rawClient(t, dir)
	return serveTLS(t, &tls.Config{Certificates: c.Certificates})
}

func TestClientRefuses(t *testing.T) {
	p := pkitest.New(t)
	foreign := pkitest.New(t)
	client := p.Source(t, pki.Scheduler, "s1")
	for _, tc := range []struct {
		name   string
		server func(t *testing.T) *tlsServer
		says   string
	}{
		{name: "a server of another CA", says: "unknown authority", server: func(t *testing.T) *tlsServer {
			return rawServer(t, foreign.Dir(t, pki.Worker, "w1"))
		}},
		{name: "a mutual TLS server of another CA", says: "unknown authority", server: func(t *testing.T) *tlsServer {
			return serveTLS(t, foreign.Source(t, pki.Worker, "w1").ServerConfig(nil))
		}},
		{name: "an expired server", says: "expired", server: func(t *testing.T) *tlsServer {
			return rawServer(t, p.Issue(t, pki.Worker, "w1", pki.IssueOptions{Lifetime: time.Hour, Now: time.Now().Add(-2 * time.Hour)}))
		}},
		{name: "client auth only", says: "usage", server: func(t *testing.T) *tlsServer {
			return rawServer(t, custom(t, p.CA, func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth} }))
		}},
		{name: "no identity URI", says: "no spiffe", server: func(t *testing.T) *tlsServer {
			return rawServer(t, custom(t, p.CA, func(c *x509.Certificate) { c.URIs = nil }))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := tc.server(t)
			_, cerr, _ := handshake(t, srv, client.ClientConfig(nil))
			if cerr == nil || !strings.Contains(cerr.Error(), tc.says) {
				t.Errorf("client error %v, want one saying %q", cerr, tc.says)
			}
		})
	}
	// The client checks at its own current time.
	srv := serveTLS(t, p.Source(t, pki.Worker, "w1").ServerConfig(nil))
	clk := newClock(time.Now())
	client.SetClock(clk.Now)
	cfg := client.ClientConfig(nil)
	cfg.ClientSessionCache = nil
	mustHandshake(t, srv, cfg)
	clk.Add(48 * time.Hour)
	_, cerr, _ := handshake(t, srv, cfg)
	if cerr == nil || !strings.Contains(cerr.Error(), "expired") {
		t.Errorf("client error %v, want the server's certificate expired", cerr)
	}
}

func TestPolicies(t *testing.T) {
	p := pkitest.New(t)
	worker := p.Source(t, pki.Worker, "w1")
	sched := p.Source(t, pki.Scheduler, "s1")
	node := p.Source(t, pki.Node, "n1")

	// The server's policy.
	adminsOnly := serveTLS(t, worker.ServerConfig(pki.AnyOf(pki.Admin)))
	_, serr := mustRefuse(t, adminsOnly, sched.ClientConfig(nil))
	if !strings.Contains(serr.Error(), "not allowed") {
		t.Errorf("server error %v", serr)
	}
	mustHandshake(t, adminsOnly, p.Source(t, pki.Admin, "alice").ClientConfig(nil))
	s1Only := serveTLS(t, worker.ServerConfig(pki.Exactly(pki.Identity{Role: pki.Scheduler, ID: "s1"})))
	mustHandshake(t, s1Only, sched.ClientConfig(nil))
	mustRefuse(t, s1Only, p.Source(t, pki.Scheduler, "s2").ClientConfig(nil))

	// The client's policy.
	srv := serveTLS(t, worker.ServerConfig(nil))
	mustHandshake(t, srv, sched.ClientConfig(pki.WorkerPolicy("w1-numa0")))
	for name, expect := range map[string]pki.Policy{
		"another worker": pki.WorkerPolicy("w2"),
		"a scheduler":    pki.AnyOf(pki.Scheduler),
		"exactly w10":    pki.Exactly(pki.Identity{Role: pki.Worker, ID: "w10"}),
	} {
		if _, cerr, _ := handshake(t, srv, node.ClientConfig(expect)); cerr == nil {
			t.Errorf("the client expecting %s accepted worker w1", name)
		}
	}

	// ClientTLS: the server role, or plaintext without a Source.
	if pki.ClientTLS(nil, pki.Etcd) != nil {
		t.Error("ClientTLS(nil) is not plaintext")
	}
	mustHandshake(t, srv, pki.ClientTLS(sched, pki.Worker))
	if _, cerr, _ := handshake(t, srv, pki.ClientTLS(sched, pki.Etcd)); cerr == nil || !strings.Contains(cerr.Error(), "not allowed") {
		t.Errorf("ClientTLS(etcd) accepted a worker: %v", cerr)
	}
}

func TestHostNamesAreNotChecked(t *testing.T) {
	// STYX peers check the identity; the name dialled does not matter.
	p := pkitest.New(t)
	srv := serveTLS(t, p.Source(t, pki.Worker, "w1").ServerConfig(nil))
	cfg := p.Source(t, pki.Scheduler, "s1").ClientConfig(pki.AnyOf(pki.Worker))
	cfg.ServerName = "somewhere-else.example"
	mustHandshake(t, srv, cfg)
}

func TestHTTPSConfig(t *testing.T) {
	p := pkitest.New(t)
	src := p.Source(t, pki.Node, "n1")
	srv := serveTLS(t, src.HTTPSConfig())
	pool := x509.NewCertPool()
	pool.AddCert(p.CA.Cert)
	// A browser: TLS 1.2 is fine, no client certificate, checks the host
	// name against the loopback SANs pkitest adds.
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		cs := mustHandshake(t, srv, &tls.Config{RootCAs: pool, ServerName: "localhost", MaxVersion: v})
		if got := peerIdentity(t, cs); got != (pki.Identity{Role: pki.Node, ID: "n1"}) {
			t.Errorf("HTTPS server is %v", got)
		}
	}
	mustRefuse(t, srv, &tls.Config{RootCAs: pool, ServerName: "localhost", MaxVersion: tls.VersionTLS11})
}

func TestVerify(t *testing.T) {
	p := pkitest.New(t)
	src := p.Source(t, pki.Worker, "w1")
	if _, err := src.Verify(nil, x509.ExtKeyUsageClientAuth); !errors.Is(err, pki.ErrNoCertificate) {
		t.Errorf("Verify(nil) = %v, want ErrNoCertificate", err)
	}
	leaf := readCert(t, p.Dir(t, pki.Admin, "a")+"/"+pki.CertFile)
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth} {
		id, err := src.Verify([]*x509.Certificate{leaf}, usage)
		if err != nil || id != (pki.Identity{Role: pki.Admin, ID: "a"}) {
			t.Errorf("Verify(admin, %v) = %v, %v", usage, id, err)
		}
	}
	foreign := readCert(t, pkitest.New(t).Dir(t, pki.Admin, "a")+"/"+pki.CertFile)
	if _, err := src.Verify([]*x509.Certificate{foreign}, x509.ExtKeyUsageClientAuth); err == nil {
		t.Error("Verify accepted another CA's certificate")
	}
	// A CA certificate sent along as an "intermediate" does not make a
	// foreign leaf trusted.
	other := pkitest.New(t)
	otherLeaf := readCert(t, other.Dir(t, pki.Admin, "a")+"/"+pki.CertFile)
	if _, err := src.Verify([]*x509.Certificate{otherLeaf, other.CA.Cert}, x509.ExtKeyUsageClientAuth); err == nil {
		t.Error("Verify accepted a foreign chain")
	}
	// A chain that carries the CA itself verifies too.
	if _, err := src.Verify([]*x509.Certificate{leaf, p.CA.Cert}, x509.ExtKeyUsageClientAuth); err != nil {
		t.Errorf("Verify with the CA in the chain: %v", err)
	}
}

// recordingCache is a client session cache that counts the sessions the
// client offered.
type recordingCache struct {
	tls.ClientSessionCache
	hits atomic.Int64
}

func (c *recordingCache) Get(key string) (*tls.ClientSessionState, bool) {
	s, ok := c.ClientSessionCache.Get(key)
	if ok && s != nil {
		c.hits.Add(1)
	}
	return s, ok
}

func TestResumedSessionsAreChecked(t *testing.T) {
	p := pkitest.New(t)
	server := p.Source(t, pki.Worker, "w1")
	client := p.Source(t, pki.Scheduler, "s1")
	accept, expect := newSeen(), newSeen()
	srv := serveTLS(t, server.ServerConfig(accept.policy))
	cfg := client.ClientConfig(expect.policy)
	cache := &recordingCache{ClientSessionCache: cfg.ClientSessionCache}
	cfg.ClientSessionCache = cache

	if cs := mustHandshake(t, srv, cfg); cs.DidResume {
		t.Fatal("the first connection resumed")
	}
	cs := mustHandshake(t, srv, cfg)
	if !cs.DidResume {
		t.Fatal("the second connection did not resume: nothing below tests resumption")
	}
	// Both policies ran on the resumed connection too.
	if n := len(accept.calls()); n != 2 {
		t.Errorf("server policy ran %d times for 2 connections", n)
	}
	if n := len(expect.calls()); n != 2 {
		t.Errorf("client policy ran %d times for 2 connections", n)
	}

	// The server's policy now refuses: the session the client offers is
	// refused as well.
	accept.allow.Store(false)
	hits := cache.hits.Load()
	_, serr := mustRefuse(t, srv, cfg)
	if cache.hits.Load() != hits+1 {
		t.Fatal("the client offered no session")
	}
	if !strings.Contains(serr.Error(), "refused by the test") {
		t.Errorf("server error %v", serr)
	}
	accept.allow.Store(true)

	// The client's policy refuses: the resumed server is refused.
	mustHandshake(t, srv, cfg)
	expect.allow.Store(false)
	hits = cache.hits.Load()
	if _, cerr, _ := handshake(t, srv, cfg); cerr == nil || !strings.Contains(cerr.Error(), "refused by the test") {
		t.Errorf("client error %v", cerr)
	}
	if cache.hits.Load() != hits+1 {
		t.Fatal("the client offered no session")
	}
}

func TestResumedSessionOfAnExpiredClient(t *testing.T) {
	p := pkitest.New(t)
	server := p.Source(t, pki.Worker, "w1")
	clk := newClock(time.Now())
	server.SetClock(clk.Now)
	client := p.Source(t, pki.Scheduler, "s1")
	srv := serveTLS(t, server.ServerConfig(nil))
	cfg := client.ClientConfig(nil)
	mustHandshake(t, srv, cfg)
	if !mustHandshake(t, srv, cfg).DidResume {
		t.Fatal("no resumption")
	}
	clk.Set(client.NotAfter().Add(time.Second))
	mustRefuse(t, srv, cfg)
}

func TestResumptionAcrossACARotation(t *testing.T) {
	// Both peers move to a new CA (a new ca.crt and a certificate it
	// signed). A session from before names certificates of the old CA,
	// which neither side trusts now: it must give way to a full handshake,
	// not fail every connection until the session ages out.
	old := pkitest.New(t)
	next := pkitest.New(t)
	server := old.Source(t, pki.Worker, "w1")
	client := old.Source(t, pki.Scheduler, "s1")
	sclk, cclk := newClock(time.Now()), newClock(time.Now())
	server.SetClock(sclk.Now)
	client.SetClock(cclk.Now)
	srv := serveTLS(t, server.ServerConfig(nil))
	cfg := client.ClientConfig(nil)
	mustHandshake(t, srv, cfg)
	if !mustHandshake(t, srv, cfg).DidResume {
		t.Fatal("no resumption before the rotation")
	}

	for _, src := range []*pki.Source{server, client} {
		writeDir(t, issue(t, next.CA, src.Identity(), pkitest.Opts()), src.Dir(), next.CA)
	}
	sclk.Add(pki.ReloadCheck)
	cclk.Add(pki.ReloadCheck)
	cs := mustHandshake(t, srv, cfg)
	if cs.DidResume {
		t.Error("resumed a session of the old CA")
	}
	if err := cs.PeerCertificates[0].CheckSignatureFrom(next.CA.Cert); err != nil {
		t.Errorf("the server presents a certificate of the old CA: %v", err)
	}
	// Sessions of the new CA resume.
	if !mustHandshake(t, srv, cfg).DidResume {
		t.Error("no resumption after the rotation")
	}
}

func TestResumptionWhenOnlyTheServerRotated(t *testing.T) {
	// The server moved to a new CA; a client that trusts both (a bundle)
	// but still holds its old certificate offers a session from before.
	// The server declines it and checks the client's certificate afresh:
	// refused, since the server trusts only the new CA now.
	old := pkitest.New(t)
	next := pkitest.New(t)
	server := old.Source(t, pki.Worker, "w1")
	sclk := newClock(time.Now())
	server.SetClock(sclk.Now)
	clientDir := copyDir(t, old.Dir(t, pki.Scheduler, "s1"))
	writeFile(t, clientDir+"/"+pki.CAFile, append(append([]byte(nil), old.CA.CertPEM...), next.CA.CertPEM...))
	client, err := pki.Load(clientDir, nopLog)
	if err != nil {
		t.Fatal(err)
	}
	srv := serveTLS(t, server.ServerConfig(nil))
	cfg := client.ClientConfig(nil)
	mustHandshake(t, srv, cfg)
	if !mustHandshake(t, srv, cfg).DidResume {
		t.Fatal("no resumption before the rotation")
	}
	writeDir(t, issue(t, next.CA, w1, pkitest.Opts()), server.Dir(), next.CA)
	sclk.Add(pki.ReloadCheck)
	_, serr := mustRefuse(t, srv, cfg)
	if !strings.Contains(serr.Error(), "client certificate") {
		t.Errorf("server error %v", serr)
	}
	// Renewed from the new CA, the client is accepted.
	writeDir(t, issue(t, next.CA, client.Identity(), pkitest.Opts()), clientDir, next.CA)
	testwait.Every(t, testwait.Timeout, 100*time.Millisecond, "the client's renewal accepted", func() bool {
		_, cerr, serr := handshake(t, srv, cfg)
		return cerr == nil && serr == nil
	})
}

func TestResumptionAfterAStagedCARotation(t *testing.T) {
	// The documented rotation: every ca.crt holds both CAs, every
	// certificate is re-issued by the new CA, then the old CA leaves the
	// server's ca.crt. The client renewed, but the session it holds was
	// made with its old certificate. Resumed, the server would see that
	// certificate, refuse it, and the client, whose own side of the
	// handshake succeeded, would offer the same session again and again.
	old := pkitest.New(t)
	next := pkitest.New(t)
	bundle := append(append([]byte(nil), old.CA.CertPEM...), next.CA.CertPEM...)
	serverDir := copyDir(t, old.Dir(t, pki.Worker, "w1"))
	clientDir := copyDir(t, old.Dir(t, pki.Scheduler, "s1"))
	for _, d := range []string{serverDir, clientDir} {
		writeFile(t, filepath.Join(d, pki.CAFile), bundle)
	}
	server, err := pki.Load(serverDir, nopLog)
	if err != nil {
		t.Fatal(err)
	}
	client, err := pki.Load(clientDir, nopLog)
	if err != nil {
		t.Fatal(err)
	}
	sclk, cclk := newClock(time.Now()), newClock(time.Now())
	server.SetClock(sclk.Now)
	client.SetClock(cclk.Now)
	srv := serveTLS(t, server.ServerConfig(nil))
	cfg := client.ClientConfig(nil)
	mustHandshake(t, srv, cfg)
	if !mustHandshake(t, srv, cfg).DidResume {
		t.Fatal("no resumption before the rotation")
	}

	// Both re-issued by the new CA, both still trusting both.
	for _, src := range []*pki.Source{server, client} {
		is := issue(t, next.CA, src.Identity(), pkitest.Opts())
		writeFile(t, filepath.Join(src.Dir(), pki.KeyFile), is.KeyPEM)
		writeFile(t, filepath.Join(src.Dir(), pki.CertFile), is.CertPEM)
	}
	// The old CA leaves the server.
	writeFile(t, filepath.Join(serverDir, pki.CAFile), next.CA.CertPEM)
	sclk.Add(pki.ReloadCheck)
	cclk.Add(pki.ReloadCheck)
	for i := range 3 {
		cs, cerr, serr := handshake(t, srv, cfg)
		if cerr != nil || serr != nil {
			t.Fatalf("connection %d after the rotation: client: %v; server: %v", i, cerr, serr)
		}
		if i == 0 && cs.DidResume {
			t.Error("resumed a session verified with the old CA")
		}
	}
	if server.Reloads() != 1 || client.Reloads() != 1 {
		t.Errorf("reloads: server %d, client %d", server.Reloads(), client.Reloads())
	}
}
