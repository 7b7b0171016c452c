package pkitest_test

import (
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/styx-inference/styx/pkg/pki"
	"github.com/styx-inference/styx/pkg/pki/pkitest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func cert(t *testing.T, dir string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, pki.CertFile))
	if err != nil {
		t.Fatal(err)
	}
	certs, err := pki.ParseCertificates(b)
	if err != nil {
		t.Fatal(err)
	}
	return certs[0]
}

func TestPKI(t *testing.T) {
	p := pkitest.New(t)
	if p.CA == nil || !p.CA.Cert.IsCA {
		t.Fatal("no CA")
	}
	if ca, err := pki.LoadCA(pki.CADir(p.Root)); err != nil || !ca.Cert.Equal(p.CA.Cert) {
		t.Fatalf("the CA is not saved in the root: %v", err)
	}

	// Dir issues once, in the root's layout, with the test options.
	w1 := pki.Identity{Role: pki.Worker, ID: "w1"}
	dir := p.Dir(t, pki.Worker, "w1")
	if dir != pki.IdentityDir(p.Root, w1) {
		t.Errorf("Dir %q", dir)
	}
	first := cert(t, dir)
	if again := p.Dir(t, pki.Worker, "w1"); again != dir || !cert(t, again).Equal(first) {
		t.Error("Dir issued again")
	}
	if life := first.NotAfter.Sub(first.NotBefore); life != 24*time.Hour+5*time.Minute {
		t.Errorf("lifetime %s, want a day", life)
	}
	if len(first.DNSNames) != 1 || first.DNSNames[0] != "localhost" || len(first.IPAddresses) != 2 ||
		!first.IPAddresses[0].Equal(net.IPv4(127, 0, 0, 1)) || !first.IPAddresses[1].Equal(net.IPv6loopback) {
		t.Errorf("SANs %v %v, want loopback", first.DNSNames, first.IPAddresses)
	}
	o := pkitest.Opts()
	if o.Lifetime != 24*time.Hour || !o.Now.IsZero() {
		t.Errorf("Opts %+v", o)
	}

	// Source loads the identity.
	src := p.Source(t, pki.Node, "n1")
	if src.Identity() != (pki.Identity{Role: pki.Node, ID: "n1"}) || src.Dir() != p.Dir(t, pki.Node, "n1") {
		t.Errorf("Source %v in %s", src.Identity(), src.Dir())
	}

	// Issue writes a custom certificate into a directory of its own.
	past := time.Now().Add(-48 * time.Hour).Truncate(time.Second)
	old := p.Issue(t, pki.Worker, "w1", pki.IssueOptions{Lifetime: time.Hour, Now: past})
	if old == dir {
		t.Fatal("Issue wrote into Dir's directory")
	}
	if c := cert(t, old); !c.NotAfter.Equal(past.Add(time.Hour)) || c.CheckSignatureFrom(p.CA.Cert) != nil {
		t.Errorf("Issue: NotAfter %s, want %s, from the CA", c.NotAfter, past.Add(time.Hour))
	}
	if !cert(t, dir).Equal(first) {
		t.Error("Issue changed Dir's certificate")
	}
	if b, err := os.ReadFile(filepath.Join(old, pki.CAFile)); err != nil || string(b) != string(p.CA.CertPEM) {
		t.Errorf("Issue's ca.crt: %v", err)
	}

	// Renew replaces the certificate in place.
	p.Renew(t, pki.Worker, "w1", pki.IssueOptions{Lifetime: 2 * time.Hour})
	renewed := cert(t, dir)
	if renewed.Equal(first) || renewed.NotAfter.Sub(renewed.NotBefore) != 2*time.Hour+5*time.Minute {
		t.Errorf("Renew: NotAfter %s", renewed.NotAfter)
	}
	if s, err := pki.Load(dir, zerolog.Nop()); err != nil || s.Identity() != w1 {
		t.Errorf("the renewed directory does not load: %v", err)
	}

	// Two PKIs are two CAs.
	if other := pkitest.New(t); other.CA.Cert.Equal(p.CA.Cert) || other.Root == p.Root {
		t.Error("two PKIs share a CA")
	}
}
