package pki_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io/fs"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/styx-inference/styx/pkg/pki"
	"github.com/styx-inference/styx/pkg/pki/pkitest"
	"github.com/styx-inference/styx/pkg/testwait"
)

var w1 = pki.Identity{Role: pki.Worker, ID: "w1"}

func TestLoad(t *testing.T) {
	p := pkitest.New(t)
	dir := p.Dir(t, pki.Worker, "w1")
	src, err := pki.Load(dir, nopLog)
	if err != nil {
		t.Fatal(err)
	}
	if src.Identity() != w1 {
		t.Errorf("Identity %v", src.Identity())
	}
	if src.Dir() != dir {
		t.Errorf("Dir %q", src.Dir())
	}
	ca, cert, key := src.Paths()
	if ca != filepath.Join(dir, "ca.crt") || cert != filepath.Join(dir, "tls.crt") || key != filepath.Join(dir, "tls.key") {
		t.Errorf("Paths %q %q %q", ca, cert, key)
	}
	if want := readCert(t, cert).NotAfter; !src.NotAfter().Equal(want) {
		t.Errorf("NotAfter %s, want %s", src.NotAfter(), want)
	}
	if src.Reloads() != 0 || src.ReloadErrors() != 0 {
		t.Errorf("Reloads %d, ReloadErrors %d after Load", src.Reloads(), src.ReloadErrors())
	}
}

func TestLoadACertificateDatedBeforeItsCA(t *testing.T) {
	// Issued with a time before the CA was made (a clock behind, a test):
	// signed by the CA all the same, and valid now.
	p := pkitest.New(t)
	dir := p.Issue(t, pki.Worker, "w1", pki.IssueOptions{Lifetime: 24 * time.Hour, Now: time.Now().Add(-time.Hour)})
	if c := readCert(t, filepath.Join(dir, pki.CertFile)); !c.NotBefore.Before(p.CA.Cert.NotBefore) {
		t.Fatalf("certificate from %s, CA from %s: not dated before", c.NotBefore, p.CA.Cert.NotBefore)
	}
	src, err := pki.Load(dir, nopLog)
	if err != nil {
		t.Fatal(err)
	}
	mustHandshake(t, serveTLS(t, src.ServerConfig(nil)), p.Source(t, pki.Scheduler, "s1").ClientConfig(nil))
}

// copyDir copies an identity directory so that a test can break the copy.
func copyDir(t *testing.T, dir string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), filepath.Base(dir))
	if err := os.MkdirAll(out, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{pki.CAFile, pki.CertFile, pki.KeyFile} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(out, name), b)
	}
	return out
}

func read(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestLoadRefuses(t *testing.T) {
	p := pkitest.New(t)
	foreign := pkitest.New(t)
	good := p.Dir(t, pki.Worker, "w1")
	other := p.Dir(t, pki.Worker, "w2")
	for _, tc := range []struct {
		name     string
		dir      func(t *testing.T) string
		notExist bool
		contains string
	}{
		{name: "no directory", notExist: true, dir: func(t *testing.T) string { return filepath.Join(t.TempDir(), "none") }},
		{name: "no ca.crt", notExist: true, dir: func(t *testing.T) string {
			d := copyDir(t, good)
			remove(t, filepath.Join(d, pki.CAFile))
			return d
		}},
		{name: "no tls.crt", notExist: true, dir: func(t *testing.T) string {
			d := copyDir(t, good)
			remove(t, filepath.Join(d, pki.CertFile))
			return d
		}},
		{name: "no tls.key", notExist: true, dir: func(t *testing.T) string {
			d := copyDir(t, good)
			remove(t, filepath.Join(d, pki.KeyFile))
			return d
		}},
		{name: "expired", contains: "expired", dir: func(t *testing.T) string {
			return p.Issue(t, pki.Worker, "w1", pki.IssueOptions{Lifetime: time.Hour, Now: time.Now().Add(-2 * time.Hour)})
		}},
		{name: "expired a moment ago", contains: "expired", dir: func(t *testing.T) string {
			return p.Issue(t, pki.Worker, "w1", pki.IssueOptions{Lifetime: time.Hour, Now: time.Now().Add(-time.Hour - time.Second)})
		}},
		{name: "not signed by the directory's CA", contains: "not signed", dir: func(t *testing.T) string {
			d := copyDir(t, good)
			writeFile(t, filepath.Join(d, pki.CAFile), foreign.CA.CertPEM)
			return d
		}},
		{name: "a CA that is not a certificate", dir: func(t *testing.T) string {
			d := copyDir(t, good)
			writeFile(t, filepath.Join(d, pki.CAFile), read(t, filepath.Join(good, pki.KeyFile)))
			return d
		}},
		{name: "another identity's key", dir: func(t *testing.T) string {
			d := copyDir(t, good)
			writeFile(t, filepath.Join(d, pki.KeyFile), read(t, filepath.Join(other, pki.KeyFile)))
			return d
		}},
		{name: "half a certificate", dir: func(t *testing.T) string {
			d := copyDir(t, good)
			b := read(t, filepath.Join(d, pki.CertFile))
			writeFile(t, filepath.Join(d, pki.CertFile), b[:len(b)/2])
			return d
		}},
		{name: "no identity URI", contains: "no spiffe", dir: func(t *testing.T) string {
			return custom(t, p.CA, func(c *x509.Certificate) { c.URIs = nil })
		}},
		{name: "two identity URIs", contains: "2 identities", dir: func(t *testing.T) string {
			return custom(t, p.CA, func(c *x509.Certificate) {
				c.URIs = []*url.URL{w1.URI(), pki.Identity{Role: pki.Admin, ID: "a"}.URI()}
			})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src, err := pki.Load(tc.dir(t), nopLog)
			if err == nil {
				t.Fatalf("Load = %v", src.Identity())
			}
			if errors.Is(err, fs.ErrNotExist) != tc.notExist {
				t.Errorf("errors.Is(%v, fs.ErrNotExist) = %v", err, !tc.notExist)
			}
			if !strings.Contains(err.Error(), tc.contains) {
				t.Errorf("error %q does not say %q", err, tc.contains)
			}
		})
	}
}

func TestLoadCABundle(t *testing.T) {
	// During a CA rotation ca.crt holds the old and the new CA: a
	// certificate of either loads, and peers of either are trusted.
	p := pkitest.New(t)
	next := pkitest.New(t)
	dir := copyDir(t, p.Dir(t, pki.Worker, "w1"))
	writeFile(t, filepath.Join(dir, pki.CAFile), bytes.Join([][]byte{next.CA.CertPEM, p.CA.CertPEM}, nil))
	src, err := pki.Load(dir, nopLog)
	if err != nil {
		t.Fatal(err)
	}
	srv := serveTLS(t, src.ServerConfig(nil))
	for _, peer := range []*pkitest.PKI{p, next} {
		mustHandshake(t, srv, rawClient(t, peer.Dir(t, pki.Scheduler, "s1")))
	}
	mustRefuse(t, srv, rawClient(t, pkitest.New(t).Dir(t, pki.Scheduler, "s1")))
}

// probe dials srv with a client of p that never resumes, so that every
// handshake shows the certificate the server presents now.
type probe struct {
	srv    *tlsServer
	client *tls.Config
}

func newProbe(t *testing.T, p *pkitest.PKI, server *pki.Source) *probe {
	t.Helper()
	c := p.Source(t, pki.Scheduler, "probe").ClientConfig(nil)
	c.ClientSessionCache = nil
	return &probe{srv: serveTLS(t, server.ServerConfig(nil)), client: c}
}

// serial is the serial of the certificate the server presents.
func (pr *probe) serial(t *testing.T) *big.Int {
	t.Helper()
	return mustHandshake(t, pr.srv, pr.client).PeerCertificates[0].SerialNumber
}

func serialIn(t *testing.T, dir string) *big.Int {
	t.Helper()
	return readCert(t, filepath.Join(dir, pki.CertFile)).SerialNumber
}

// logBuf collects a Source's or Guard's log lines.
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

func TestReloadRenewed(t *testing.T) {
	p := pkitest.New(t)
	dir := p.Dir(t, pki.Worker, "w1")
	var log logBuf
	src, err := pki.Load(dir, zerolog.New(&log))
	if err != nil {
		t.Fatal(err)
	}
	clk := newClock(time.Now())
	src.SetClock(clk.Now)
	pr := newProbe(t, p, src)
	first := serialIn(t, dir)
	if got := pr.serial(t); got.Cmp(first) != 0 {
		t.Fatalf("presents serial %s, want %s", got, first)
	}

	p.Renew(t, pki.Worker, "w1", pki.IssueOptions{Lifetime: 48 * time.Hour})
	second := serialIn(t, dir)
	if second.Cmp(first) == 0 {
		t.Fatal("Renew kept the serial")
	}
	// The files are looked at no more than once per ReloadCheck.
	clk.Add(pki.ReloadCheck / 2)
	if got := pr.serial(t); got.Cmp(first) != 0 {
		t.Fatalf("reloaded before ReloadCheck had passed: serial %s", got)
	}
	clk.Add(pki.ReloadCheck / 2)
	if got := pr.serial(t); got.Cmp(second) != 0 {
		t.Fatalf("after Renew and ReloadCheck: serial %s, want the renewed %s", got, second)
	}
	if src.Reloads() != 1 || src.ReloadErrors() != 0 {
		t.Errorf("Reloads %d, ReloadErrors %d; want 1, 0", src.Reloads(), src.ReloadErrors())
	}
	if want := readCert(t, filepath.Join(dir, pki.CertFile)).NotAfter; !src.NotAfter().Equal(want) {
		t.Errorf("NotAfter %s, want the renewed %s", src.NotAfter(), want)
	}
	if src.Identity() != w1 {
		t.Errorf("Identity %v", src.Identity())
	}
	if !strings.Contains(log.String(), "identity files reloaded") {
		t.Errorf("no reload logged: %s", log.String())
	}
	// Unchanged files are not loaded again.
	clk.Add(10 * pki.ReloadCheck)
	pr.serial(t)
	if src.Reloads() != 1 {
		t.Errorf("Reloads %d with no change", src.Reloads())
	}
}

func TestReloadLive(t *testing.T) {
	// No clock of the test's: the real ReloadCheck, the real handshakes.
	p := pkitest.New(t)
	src := p.Source(t, pki.Worker, "w1")
	pr := newProbe(t, p, src)
	first := pr.serial(t)
	p.Renew(t, pki.Worker, "w1", pkitest.Opts())
	renewed := serialIn(t, p.Dir(t, pki.Worker, "w1"))
	if renewed.Cmp(first) == 0 {
		t.Fatal("Renew kept the serial")
	}
	testwait.Every(t, testwait.Timeout, 100*time.Millisecond, "the renewed certificate presented", func() bool {
		return pr.serial(t).Cmp(renewed) == 0
	})
	if src.Reloads() != 1 || src.ReloadErrors() != 0 {
		t.Errorf("Reloads %d, ReloadErrors %d", src.Reloads(), src.ReloadErrors())
	}
}

// reloadRefused loads w1, lets change alter its directory, and expects the
// change refused: counted, logged, and the first certificate still in use.
func reloadRefused(t *testing.T, change func(t *testing.T, p *pkitest.PKI, dir string), logged string) (*pkitest.PKI, *pki.Source, *clock, *probe) {
	t.Helper()
	p := pkitest.New(t)
	dir := p.Dir(t, pki.Worker, "w1")
	var log logBuf
	src, err := pki.Load(dir, zerolog.New(&log))
	if err != nil {
		t.Fatal(err)
	}
	clk := newClock(time.Now())
	src.SetClock(clk.Now)
	pr := newProbe(t, p, src)
	first := pr.serial(t)
	notAfter := src.NotAfter()

	change(t, p, dir)
	clk.Add(pki.ReloadCheck)
	if got := pr.serial(t); got.Cmp(first) != 0 {
		t.Fatalf("presents %s after a refused change, want the first certificate %s", got, first)
	}
	if src.ReloadErrors() != 1 || src.Reloads() != 0 {
		t.Errorf("ReloadErrors %d, Reloads %d; want 1, 0", src.ReloadErrors(), src.Reloads())
	}
	if src.Identity() != w1 || !src.NotAfter().Equal(notAfter) {
		t.Errorf("Identity %v, NotAfter %s changed", src.Identity(), src.NotAfter())
	}
	if !strings.Contains(log.String(), `"level":"error"`) || !strings.Contains(log.String(), logged) {
		t.Errorf("refusal not logged as an error saying %q: %s", logged, log.String())
	}
	// Peers are still verified against the CA that stays in use.
	if _, cerr, serr := handshake(t, pr.srv, pkitest.New(t).Source(t, pki.Scheduler, "s1").ClientConfig(nil)); cerr == nil || serr == nil {
		t.Error("a client of another CA was accepted")
	}
	return p, src, clk, pr
}

func TestReloadRefusesHalfWritten(t *testing.T) {
	var renewed *pki.Issued
	p, src, clk, pr := reloadRefused(t, func(t *testing.T, p *pkitest.PKI, dir string) {
		// WriteDir writes the key first: a reload between the key and the
		// certificate sees a key that does not match.
		renewed = issue(t, p.CA, w1, pkitest.Opts())
		writeFile(t, filepath.Join(dir, pki.KeyFile), renewed.KeyPEM)
	}, "renewed identity files refused")
	// The rest of the write lands: the set loads.
	writeFile(t, filepath.Join(p.Dir(t, pki.Worker, "w1"), pki.CertFile), renewed.CertPEM)
	clk.Add(pki.ReloadCheck)
	if got := pr.serial(t); got.Cmp(renewed.Cert.SerialNumber) != 0 {
		t.Fatalf("presents %s once the set is whole, want %s", got, renewed.Cert.SerialNumber)
	}
	if src.Reloads() != 1 {
		t.Errorf("Reloads %d", src.Reloads())
	}
}

func TestReloadRefusesAnotherIdentity(t *testing.T) {
	reloadRefused(t, func(t *testing.T, p *pkitest.PKI, dir string) {
		writeDir(t, issue(t, p.CA, pki.Identity{Role: pki.Worker, ID: "w2"}, pkitest.Opts()), dir, p.CA)
	}, "another identity")
}

func TestReloadRefusesAnotherRole(t *testing.T) {
	reloadRefused(t, func(t *testing.T, p *pkitest.PKI, dir string) {
		writeDir(t, issue(t, p.CA, pki.Identity{Role: pki.Admin, ID: "w1"}, pkitest.Opts()), dir, p.CA)
	}, "another identity")
}

func TestReloadRefusesACertificateTheNewCADidNotSign(t *testing.T) {
	reloadRefused(t, func(t *testing.T, p *pkitest.PKI, dir string) {
		writeFile(t, filepath.Join(dir, pki.CAFile), pkitest.New(t).CA.CertPEM)
	}, "not signed")
}

func TestReloadRefusesAnExpiredCertificate(t *testing.T) {
	reloadRefused(t, func(t *testing.T, p *pkitest.PKI, dir string) {
		old := issue(t, p.CA, w1, pki.IssueOptions{Lifetime: time.Hour, Now: time.Now().Add(-2 * time.Hour)})
		writeDir(t, old, dir, p.CA)
	}, "expired")
}

func TestReloadRefusesGarbage(t *testing.T) {
	reloadRefused(t, func(t *testing.T, p *pkitest.PKI, dir string) {
		writeFile(t, filepath.Join(dir, pki.CertFile), []byte("junk"))
	}, "renewed identity files refused")
}

func TestReloadMissingFileKeepsTheCertificate(t *testing.T) {
	p := pkitest.New(t)
	dir := p.Dir(t, pki.Worker, "w1")
	src, err := pki.Load(dir, nopLog)
	if err != nil {
		t.Fatal(err)
	}
	clk := newClock(time.Now())
	src.SetClock(clk.Now)
	pr := newProbe(t, p, src)
	first := pr.serial(t)
	remove(t, filepath.Join(dir, pki.KeyFile))
	clk.Add(pki.ReloadCheck)
	if got := pr.serial(t); got.Cmp(first) != 0 {
		t.Fatalf("serial %s, want %s", got, first)
	}
	if src.Reloads() != 0 {
		t.Errorf("Reloads %d", src.Reloads())
	}
	// Renewing brings the directory back.
	p.Renew(t, pki.Worker, "w1", pkitest.Opts())
	clk.Add(pki.ReloadCheck)
	if got := pr.serial(t); got.Cmp(serialIn(t, dir)) != 0 {
		t.Fatalf("serial %s after the renewal, want %s", got, serialIn(t, dir))
	}
}

func TestReloadCARotation(t *testing.T) {
	// A whole new file set from another CA, same identity: the CA is
	// rotated. Peers of the new CA are accepted, of the old one refused.
	old := pkitest.New(t)
	next := pkitest.New(t)
	dir := old.Dir(t, pki.Worker, "w1")
	src, err := pki.Load(dir, nopLog)
	if err != nil {
		t.Fatal(err)
	}
	clk := newClock(time.Now())
	src.SetClock(clk.Now)
	srv := serveTLS(t, src.ServerConfig(nil))
	oldClient := old.Source(t, pki.Scheduler, "s1").ClientConfig(nil)
	newClient := next.Source(t, pki.Scheduler, "s1").ClientConfig(nil)
	mustHandshake(t, srv, oldClient)
	mustRefuse(t, srv, newClient)

	writeDir(t, issue(t, next.CA, w1, pkitest.Opts()), dir, next.CA)
	clk.Add(pki.ReloadCheck)
	cs := mustHandshake(t, srv, newClient)
	if err := cs.PeerCertificates[0].CheckSignatureFrom(next.CA.Cert); err != nil {
		t.Errorf("the server presents a certificate of the old CA: %v", err)
	}
	if src.Reloads() != 1 {
		t.Errorf("Reloads %d", src.Reloads())
	}
	// The old CA's client refuses the new server; and the server, the old
	// CA's client certificate.
	mustRefuse(t, srv, oldClient)
	_, serr := mustRefuse(t, srv, rawClient(t, old.Dir(t, pki.Scheduler, "s1")))
	if !strings.Contains(serr.Error(), "client certificate") {
		t.Errorf("server error %v", serr)
	}
}
