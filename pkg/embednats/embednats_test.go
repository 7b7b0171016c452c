package embednats_test

import (
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/styx-inference/styx/pkg/embednats"
	"github.com/styx-inference/styx/pkg/embednats/natstest"
	"github.com/styx-inference/styx/pkg/natsauth"
	"github.com/styx-inference/styx/pkg/pki"
	"github.com/styx-inference/styx/pkg/pki/pkitest"
	"github.com/styx-inference/styx/pkg/testwait"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func connect(url string, opts ...nats.Option) error {
	nc, err := nats.Connect(url, append([]nats.Option{nats.NoReconnect(), nats.Timeout(5 * time.Second)}, opts...)...)
	if err != nil {
		return err
	}
	defer nc.Close()
	return nc.Flush()
}

// TestPlaintext: without an identity the server is open, as before.
func TestPlaintext(t *testing.T) {
	s := natstest.Start(t)
	if s.TLS() || s.Auth() != nil {
		t.Fatal("a server without identity requires TLS")
	}
	if !strings.HasPrefix(s.URL(), "nats://") {
		t.Errorf("URL %s", s.URL())
	}
	if err := connect(s.URL()); err != nil {
		t.Fatal(err)
	}
}

// TestTLS: with an identity, only clients with a certificate of the CA
// connect, also after a restart.
func TestTLS(t *testing.T) {
	p := pkitest.New(t)
	s := natstest.StartTLS(t, p)
	if !s.TLS() {
		t.Fatal("no TLS")
	}
	check := func() {
		t.Helper()
		if err := connect(s.URL(), natstest.ClientTLS(t, p, pki.Scheduler, "s1")); err != nil {
			t.Errorf("scheduler: %v", err)
		}
		before := s.Auth().Refused()[natsauth.ReasonHandshake]
		if err := connect(s.URL(), nats.Secure(&tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true})); err == nil {
			t.Error("a client without a certificate connected")
		}
		testwait.For(t, testwait.Timeout, "the refusal counted", func() bool {
			return s.Auth().Refused()[natsauth.ReasonHandshake] > before
		})
	}
	check()
	s.Stop()
	s.Restart()
	if !s.TLS() {
		t.Fatal("restarted without TLS")
	}
	check()
}

func TestValidate(t *testing.T) {
	p := pkitest.New(t)
	cfg := embednats.Config{Dir: t.TempDir(), Addr: "127.0.0.1:0", Source: p.Source(t, pki.Node, "n1")}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "want role nats") {
		t.Errorf("a node identity for the server: %v", err)
	}
	cfg.Source = p.Source(t, pki.NATS, "n")
	if err := cfg.Validate(); err != nil {
		t.Error(err)
	}
}
