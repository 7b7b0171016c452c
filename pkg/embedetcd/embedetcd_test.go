package embedetcd_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/styx-inference/styx/pkg/embedetcd"
	"github.com/styx-inference/styx/pkg/pki"
	"github.com/styx-inference/styx/pkg/pki/pkitest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func ctx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func start(t *testing.T, cfg embedetcd.Config) *embedetcd.Server {
	t.Helper()
	srv, err := embedetcd.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return srv
}

// TestPlaintext: without an identity the server speaks plaintext, and
// connecting with an identity is refused at once.
func TestPlaintext(t *testing.T) {
	srv := start(t, embedetcd.Config{Dir: t.TempDir(), ClientAddr: "127.0.0.1:0"})
	if srv.TLS() {
		t.Error("TLS() with no PKIDir")
	}
	cli, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Put(ctx(t), "k", "v"); err != nil {
		t.Fatal(err)
	}
	p := pkitest.New(t)
	if c, err := srv.ClientAs(p.Source(t, pki.Worker, "w1")); err == nil {
		c.Close()
		t.Error("ClientAs on a plaintext server: no error")
	}
}

// TestTLS: with an identity the server takes clients presenting a
// certificate of its CA (its own, and any identity's through ClientAs, a
// tls.Config that sets GetClientCertificate and VerifyConnection, with
// InsecureSkipVerify), and refuses a client without one.
func TestTLS(t *testing.T) {
	p := pkitest.New(t)
	srv := start(t, embedetcd.Config{Dir: t.TempDir(), ClientAddr: "127.0.0.1:0", PKIDir: p.Dir(t, pki.Etcd, "e1")})
	if !srv.TLS() {
		t.Error("TLS() false with a PKIDir")
	}
	self, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer self.Close()
	if _, err := self.Put(ctx(t), "k", "v"); err != nil {
		t.Fatalf("put as the server's own identity: %v", err)
	}
	w1, err := srv.ClientAs(p.Source(t, pki.Worker, "w1"))
	if err != nil {
		t.Fatal(err)
	}
	defer w1.Close()
	resp, err := w1.Get(ctx(t), "k")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("get as worker w1: %v, %v", resp, err)
	}

	// A client without a certificate: the server's alert arrives with the
	// first read after the (TLS 1.3) handshake.
	conn, err := (&tls.Dialer{Config: &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true}}).DialContext(ctx(t), "tcp", srv.Endpoint())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = conn.Write([]byte("GET /version HTTP/1.1\r\nHost: etcd\r\n\r\n"))
	_, err = conn.Read(make([]byte, 1))
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "remote error" || !strings.HasSuffix(err.Error(), "tls: certificate required") {
		t.Errorf("client without certificate: %v, want the server's alert: certificate required", err)
	}
}

// TestStartRefusesOtherRoles: only an identity of role etcd serves etcd.
func TestStartRefusesOtherRoles(t *testing.T) {
	p := pkitest.New(t)
	srv, err := embedetcd.Start(embedetcd.Config{Dir: t.TempDir(), ClientAddr: "127.0.0.1:0", PKIDir: p.Dir(t, pki.Worker, "w1")})
	if err == nil {
		srv.Close()
		t.Fatal("started with a worker's identity")
	}
	if !strings.Contains(err.Error(), "role etcd") {
		t.Errorf("error %q does not name the role wanted", err)
	}
	if _, err := embedetcd.Start(embedetcd.Config{Dir: t.TempDir(), ClientAddr: "127.0.0.1:0", PKIDir: t.TempDir()}); err == nil {
		t.Error("started with an empty identity directory")
	}
}
