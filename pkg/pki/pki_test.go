package pki_test

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/styx-inference/styx/pkg/pki"
	"github.com/styx-inference/styx/pkg/testwait"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var nopLog = zerolog.Nop()

// clock is a settable clock for Source.SetClock, safe to read from
// handshake goroutines.
type clock struct{ ns atomic.Int64 }

func newClock(t time.Time) *clock {
	c := &clock{}
	c.ns.Store(t.UnixNano())
	return c
}

func (c *clock) Now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *clock) Add(d time.Duration) { c.ns.Add(int64(d)) }
func (c *clock) Set(t time.Time)     { c.ns.Store(t.UnixNano()) }

// tlsServer accepts TLS connections on loopback. Each connection's
// handshake result goes to results; a connection that completes its
// handshake is answered with "ok\n" and closed.
type tlsServer struct {
	addr    string
	results chan error
}

func serveTLS(t *testing.T, cfg *tls.Config) *tlsServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &tlsServer{addr: ln.Addr().String(), results: make(chan error, 64)}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(testwait.Timeout))
				tc := tls.Server(c, cfg)
				err := tc.Handshake()
				if err == nil {
					_, err = tc.Write([]byte("ok\n"))
				}
				s.results <- err
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return s
}

// result is the server's side of the last connection.
func (s *tlsServer) result(t *testing.T) error {
	t.Helper()
	select {
	case err := <-s.results:
		return err
	case <-time.After(testwait.Timeout):
		t.Fatal("the server never finished a handshake")
		return nil
	}
}

// dial connects with cfg and reads the server's "ok". In TLS 1.3 the
// client learns that the server refused its certificate only on that read.
func dial(addr string, cfg *tls.Config) (tls.ConnectionState, error) {
	d := &net.Dialer{Timeout: testwait.Timeout}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(testwait.Timeout))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return tls.ConnectionState{}, err
	}
	if line != "ok\n" {
		return tls.ConnectionState{}, errors.New("unexpected answer " + line)
	}
	return c.ConnectionState(), nil
}

// handshake dials s with cfg and returns the client's and the server's
// errors and, on success, the connection state.
func handshake(t *testing.T, s *tlsServer, cfg *tls.Config) (tls.ConnectionState, error, error) {
	t.Helper()
	cs, cerr := dial(s.addr, cfg)
	return cs, cerr, s.result(t)
}

// mustHandshake fails the test unless both sides complete the handshake.
func mustHandshake(t *testing.T, s *tlsServer, cfg *tls.Config) tls.ConnectionState {
	t.Helper()
	cs, cerr, serr := handshake(t, s, cfg)
	if cerr != nil || serr != nil {
		t.Fatalf("handshake failed: client: %v; server: %v", cerr, serr)
	}
	return cs
}

// mustRefuse fails the test unless the handshake fails on both sides.
func mustRefuse(t *testing.T, s *tlsServer, cfg *tls.Config) (cerr, serr error) {
	t.Helper()
	_, cerr, serr = handshake(t, s, cfg)
	if cerr == nil || serr == nil {
		t.Fatalf("handshake not refused: client: %v; server: %v", cerr, serr)
	}
	return cerr, serr
}

// peerIdentity is the identity of the peer's leaf certificate.
func peerIdentity(t *testing.T, cs tls.ConnectionState) pki.Identity {
	t.Helper()
	if len(cs.PeerCertificates) == 0 {
		t.Fatal("no peer certificate")
	}
	id, err := pki.FromCert(cs.PeerCertificates[0])
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// custom signs a certificate shaped by edit with ca's key and writes an
// identity directory for it: certificates Issue never makes (no identity
// URI, one key usage only).
func custom(t *testing.T, ca *pki.CA, edit func(*x509.Certificate)) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(now.UnixNano()),
		Subject:      pkix.Name{CommonName: "custom"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{pki.Identity{Role: pki.Worker, ID: "custom"}.URI()},
	}
	edit(tmpl)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "custom")
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	is := &pki.Issued{
		Cert:    cert,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	}
	if err := is.WriteDir(dir, ca.CertPEM); err != nil {
		t.Fatal(err)
	}
	return dir
}

// rawClient is a TLS client that does not use a Source: it presents the
// certificate in dir (none when dir is empty) and skips verifying the
// server, as a rogue client would.
func rawClient(t *testing.T, dir string) *tls.Config {
	t.Helper()
	cfg := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}
	if dir != "" {
		pair, err := tls.LoadX509KeyPair(filepath.Join(dir, pki.CertFile), filepath.Join(dir, pki.KeyFile))
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg
}

// readCert parses the first certificate of a PEM file.
func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := pki.ParseCertificates(b)
	if err != nil {
		t.Fatal(err)
	}
	return certs[0]
}
