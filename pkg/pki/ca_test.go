package pki_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/styx-inference/styx/pkg/pki"
)

// second is a time with no sub-second part: certificates keep whole
// seconds, so times computed from it compare exactly.
func second(t time.Time) time.Time { return t.Truncate(time.Second) }

func newCA(t *testing.T, lifetime time.Duration, now time.Time) *pki.CA {
	t.Helper()
	ca, err := pki.NewCA("test CA", lifetime, now)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func TestNewCA(t *testing.T) {
	now := second(time.Now())
	ca := newCA(t, 0, now)
	c := ca.Cert
	if !c.IsCA || !c.BasicConstraintsValid || c.MaxPathLen != 0 || !c.MaxPathLenZero {
		t.Errorf("not a path-length-zero CA: IsCA %v, MaxPathLen %d, zero %v", c.IsCA, c.MaxPathLen, c.MaxPathLenZero)
	}
	if c.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("key usage %b lacks cert sign", c.KeyUsage)
	}
	if c.Subject.CommonName != "test CA" {
		t.Errorf("CN %q", c.Subject.CommonName)
	}
	if want := now.Add(pki.DefaultCALifetime); !c.NotAfter.Equal(want) {
		t.Errorf("NotAfter %s, want %s (the default lifetime)", c.NotAfter, want)
	}
	if pki.DefaultCALifetime != 5*365*24*time.Hour {
		t.Errorf("DefaultCALifetime = %s", pki.DefaultCALifetime)
	}
	if want := now.Add(-5 * time.Minute); !c.NotBefore.Equal(want) {
		t.Errorf("NotBefore %s, want %s (clock skew)", c.NotBefore, want)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Errorf("not self-signed: %v", err)
	}
	if ca.Key.Curve != elliptic.P256() || !ca.Key.PublicKey.Equal(c.PublicKey) {
		t.Error("the key is not the certificate's P-256 key")
	}
	certs, err := pki.ParseCertificates(ca.CertPEM)
	if err != nil || len(certs) != 1 || !certs[0].Equal(c) {
		t.Errorf("CertPEM does not hold the certificate: %v", err)
	}
	// A lifetime given is used.
	if c := newCA(t, 48*time.Hour, now).Cert; !c.NotAfter.Equal(now.Add(48 * time.Hour)) {
		t.Errorf("NotAfter %s with a 48h lifetime", c.NotAfter)
	}
	// Two CAs are two keys and two serials.
	other := newCA(t, 0, now)
	if other.Key.Equal(ca.Key) || other.Cert.SerialNumber.Cmp(c.SerialNumber) == 0 {
		t.Error("two CAs share a key or a serial")
	}
}

func TestIssue(t *testing.T) {
	now := second(time.Now())
	ca := newCA(t, 0, now)
	id := pki.Identity{Role: pki.Scheduler, ID: "s1"}
	ips := []net.IP{net.IPv4(10, 0, 0, 1).To4(), net.IPv6loopback}
	is, err := ca.Issue(id, pki.IssueOptions{DNSNames: []string{"sched.example", "localhost"}, IPs: ips, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	c := is.Cert
	if is.Identity != id {
		t.Errorf("Identity %v", is.Identity)
	}
	pub, ok := c.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() || c.PublicKeyAlgorithm != x509.ECDSA {
		t.Errorf("public key %T, want ECDSA P-256", c.PublicKey)
	}
	if c.SignatureAlgorithm != x509.ECDSAWithSHA256 {
		t.Errorf("signature algorithm %s", c.SignatureAlgorithm)
	}
	if want := now.Add(30 * 24 * time.Hour); !c.NotAfter.Equal(want) || pki.DefaultLifetime != 30*24*time.Hour {
		t.Errorf("NotAfter %s, want %s (30 days)", c.NotAfter, want)
	}
	if want := now.Add(-5 * time.Minute); !c.NotBefore.Equal(want) {
		t.Errorf("NotBefore %s, want %s", c.NotBefore, want)
	}
	if !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) {
		t.Errorf("ExtKeyUsage %v, want server and client auth", c.ExtKeyUsage)
	}
	if c.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("KeyUsage %b", c.KeyUsage)
	}
	if c.IsCA {
		t.Error("an issued certificate is a CA")
	}
	if c.Subject.CommonName != "scheduler:s1" {
		t.Errorf("CN %q, want scheduler:s1", c.Subject.CommonName)
	}
	if !slices.Equal(c.Subject.OrganizationalUnit, []string{"scheduler"}) {
		t.Errorf("OU %v", c.Subject.OrganizationalUnit)
	}
	if len(c.URIs) != 1 || c.URIs[0].String() != "spiffe://styx/scheduler/s1" {
		t.Errorf("URIs %v, want exactly spiffe://styx/scheduler/s1", c.URIs)
	}
	if got, err := pki.FromCert(c); err != nil || got != id {
		t.Errorf("FromCert = %v, %v", got, err)
	}
	if !slices.Equal(c.DNSNames, []string{"sched.example", "localhost"}) {
		t.Errorf("DNSNames %v", c.DNSNames)
	}
	if len(c.IPAddresses) != 2 || !c.IPAddresses[0].Equal(ips[0]) || !c.IPAddresses[1].Equal(ips[1]) {
		t.Errorf("IPAddresses %v", c.IPAddresses)
	}
	if err := c.CheckSignatureFrom(ca.Cert); err != nil {
		t.Errorf("not signed by the CA: %v", err)
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		pool := x509.NewCertPool()
		pool.AddCert(ca.Cert)
		if _, err := c.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{usage}, DNSName: "sched.example"}); err != nil {
			t.Errorf("does not verify for %v: %v", usage, err)
		}
	}
	// The PEM forms are the certificate and its key.
	certs, err := pki.ParseCertificates(is.CertPEM)
	if err != nil || !certs[0].Equal(c) {
		t.Errorf("CertPEM: %v", err)
	}
	key, err := pki.ParseKey(is.KeyPEM)
	if err != nil || !key.PublicKey.Equal(c.PublicKey) {
		t.Errorf("KeyPEM does not hold the certificate's key: %v", err)
	}

	// Two certificates for one identity have their own keys and serials.
	again, err := ca.Issue(id, pki.IssueOptions{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if again.Cert.SerialNumber.Cmp(c.SerialNumber) == 0 || bytes.Equal(again.KeyPEM, is.KeyPEM) {
		t.Error("a re-issued certificate shares the serial or the key")
	}
	if len(again.Cert.DNSNames) != 0 || len(again.Cert.IPAddresses) != 0 {
		t.Errorf("SANs without asking: %v %v", again.Cert.DNSNames, again.Cert.IPAddresses)
	}
}

func TestIssueLifetimeAndNow(t *testing.T) {
	before := time.Now()
	ca := newCA(t, 0, before)
	is, err := ca.Issue(pki.Identity{Role: pki.Worker, ID: "w1"}, pki.IssueOptions{Lifetime: 2 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	after := time.Now()
	// Now defaults to the time of the call.
	if na := is.Cert.NotAfter; na.Before(second(before.Add(2*time.Hour))) || na.After(after.Add(2*time.Hour)) {
		t.Errorf("NotAfter %s not two hours after the call (%s..%s)", na, before, after)
	}
	past := second(time.Now().Add(-72 * time.Hour))
	is, err = ca.Issue(pki.Identity{Role: pki.Worker, ID: "w1"}, pki.IssueOptions{Lifetime: time.Hour, Now: past})
	if err != nil {
		t.Fatal(err)
	}
	if !is.Cert.NotAfter.Equal(past.Add(time.Hour)) {
		t.Errorf("NotAfter %s, want %s", is.Cert.NotAfter, past.Add(time.Hour))
	}
}

func TestIssueRefuses(t *testing.T) {
	now := second(time.Now())
	ca := newCA(t, 10*24*time.Hour, now)
	for _, id := range []pki.Identity{
		{Role: "root", ID: "w1"},
		{Role: pki.Worker, ID: ""},
		{Role: pki.Worker, ID: "a/b"},
		{},
	} {
		if _, err := ca.Issue(id, pki.IssueOptions{Now: now}); err == nil {
			t.Errorf("issued a certificate for %#v", id)
		}
	}
	id := pki.Identity{Role: pki.Worker, ID: "w1"}
	// The default 30 days would outlive a 10-day CA.
	if _, err := ca.Issue(id, pki.IssueOptions{Now: now}); err == nil || !strings.Contains(err.Error(), "outlive") {
		t.Errorf("a 30-day certificate from a 10-day CA: %v", err)
	}
	if _, err := ca.Issue(id, pki.IssueOptions{Now: now, Lifetime: 10*24*time.Hour + time.Second}); err == nil {
		t.Error("a certificate one second longer than its CA was issued")
	}
	if _, err := ca.Issue(id, pki.IssueOptions{Now: now.Add(time.Second), Lifetime: 10 * 24 * time.Hour}); err == nil {
		t.Error("a certificate issued later and ending after its CA was issued")
	}
	// Ending with the CA is allowed.
	is, err := ca.Issue(id, pki.IssueOptions{Now: now, Lifetime: 10 * 24 * time.Hour})
	if err != nil {
		t.Fatalf("a certificate ending with its CA: %v", err)
	}
	if !is.Cert.NotAfter.Equal(ca.Cert.NotAfter) {
		t.Errorf("NotAfter %s, CA %s", is.Cert.NotAfter, ca.Cert.NotAfter)
	}
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// entries lists a directory, temporary files included.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, de := range des {
		out = append(out, de.Name())
	}
	return out
}

func TestCASaveLoad(t *testing.T) {
	ca := newCA(t, 0, time.Now())
	dir := filepath.Join(t.TempDir(), "a", "ca")
	if err := ca.Save(dir); err != nil {
		t.Fatal(err)
	}
	if got := entries(t, dir); !slices.Equal(got, []string{pki.CAFile, pki.CAKeyFile}) {
		t.Errorf("CA directory holds %v", got)
	}
	for path, want := range map[string]os.FileMode{
		dir:                               0o700,
		filepath.Join(dir, pki.CAFile):    0o644,
		filepath.Join(dir, pki.CAKeyFile): 0o600,
	} {
		if got := mode(t, path); got != want {
			t.Errorf("%s: mode %o, want %o", filepath.Base(path), got, want)
		}
	}
	loaded, err := pki.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Cert.Equal(ca.Cert) || !loaded.Key.Equal(ca.Key) || !bytes.Equal(loaded.CertPEM, ca.CertPEM) {
		t.Error("the loaded CA differs from the saved one")
	}
	// A loaded CA issues certificates the saved one's certificate verifies.
	is, err := loaded.Issue(pki.Identity{Role: pki.Admin, ID: "a"}, pki.IssueOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := is.Cert.CheckSignatureFrom(ca.Cert); err != nil {
		t.Error(err)
	}

	// Never overwritten: not by another CA, not by itself.
	keyBefore, _ := os.ReadFile(filepath.Join(dir, pki.CAKeyFile))
	certBefore, _ := os.ReadFile(filepath.Join(dir, pki.CAFile))
	for _, c := range []*pki.CA{newCA(t, 0, time.Now()), ca} {
		if err := c.Save(dir); err == nil {
			t.Error("Save overwrote a CA")
		}
	}
	keyAfter, _ := os.ReadFile(filepath.Join(dir, pki.CAKeyFile))
	certAfter, _ := os.ReadFile(filepath.Join(dir, pki.CAFile))
	if !bytes.Equal(keyBefore, keyAfter) || !bytes.Equal(certBefore, certAfter) {
		t.Error("a refused Save changed the CA files")
	}
}

func TestCASaveRefusesALoneCertificate(t *testing.T) {
	// A CA directory that lost its key still names the CA every identity
	// trusts; a new CA must not silently replace it.
	old := newCA(t, 0, time.Now())
	dir := filepath.Join(t.TempDir(), "ca")
	if err := old.Save(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, pki.CAKeyFile)); err != nil {
		t.Fatal(err)
	}
	if err := newCA(t, 0, time.Now()).Save(dir); err == nil {
		t.Error("Save replaced the certificate of a CA whose key is missing")
	}
	if got := readCert(t, filepath.Join(dir, pki.CAFile)); !got.Equal(old.Cert) {
		t.Error("ca.crt was replaced")
	}
	if _, err := os.Stat(filepath.Join(dir, pki.CAKeyFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a key was written beside the old certificate: %v", err)
	}
}

func TestLoadCARefuses(t *testing.T) {
	a := newCA(t, 0, time.Now())
	b := newCA(t, 0, time.Now())
	keyPEM := func(ca *pki.CA) []byte {
		der, err := x509.MarshalECPrivateKey(ca.Key)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
	}
	leaf, err := a.Issue(pki.Identity{Role: pki.Worker, ID: "w1"}, pki.IssueOptions{})
	if err != nil {
		t.Fatal(err)
	}
	write := func(t *testing.T, cert, key []byte) string {
		dir := t.TempDir()
		if cert != nil {
			if err := os.WriteFile(filepath.Join(dir, pki.CAFile), cert, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if key != nil {
			if err := os.WriteFile(filepath.Join(dir, pki.CAKeyFile), key, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	for _, tc := range []struct {
		name      string
		cert, key []byte
		notExist  bool
		contains  string
	}{
		{name: "empty directory", notExist: true},
		{name: "no key", cert: a.CertPEM, notExist: true},
		{name: "no certificate", key: keyPEM(a), notExist: true},
		{name: "another CA's key", cert: a.CertPEM, key: keyPEM(b), contains: "does not match"},
		{name: "not a CA", cert: leaf.CertPEM, key: leaf.KeyPEM, contains: "not a CA"},
		{name: "certificate not PEM", cert: []byte("junk"), key: keyPEM(a)},
		{name: "key not PEM", cert: a.CertPEM, key: []byte("junk")},
		{name: "key is a certificate", cert: a.CertPEM, key: a.CertPEM},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ca, err := pki.LoadCA(write(t, tc.cert, tc.key))
			if err == nil {
				t.Fatalf("LoadCA = %v", ca.Cert.Subject)
			}
			if errors.Is(err, fs.ErrNotExist) != tc.notExist {
				t.Errorf("errors.Is(%v, fs.ErrNotExist) = %v, want %v", err, !tc.notExist, tc.notExist)
			}
			if !strings.Contains(err.Error(), tc.contains) {
				t.Errorf("error %q does not say %q", err, tc.contains)
			}
		})
	}
	// A PKCS#8 key is read as well.
	der, err := x509.MarshalPKCS8PrivateKey(a.Key)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadCA(write(t, a.CertPEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})))
	if err != nil || !ca.Key.Equal(a.Key) {
		t.Errorf("LoadCA with a PKCS#8 key: %v", err)
	}
}

func TestWriteDir(t *testing.T) {
	ca := newCA(t, 0, time.Now())
	id := pki.Identity{Role: pki.Node, ID: "n1"}
	is, err := ca.Issue(id, pki.IssueOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "x", "node-n1")
	if err := is.WriteDir(dir, ca.CertPEM); err != nil {
		t.Fatal(err)
	}
	check := func(is *pki.Issued) {
		t.Helper()
		if got := entries(t, dir); !slices.Equal(got, []string{pki.CAFile, pki.CertFile, pki.KeyFile}) {
			t.Errorf("identity directory holds %v (no temporary files may stay)", got)
		}
		for name, want := range map[string]os.FileMode{pki.CAFile: 0o644, pki.CertFile: 0o644, pki.KeyFile: 0o600} {
			if got := mode(t, filepath.Join(dir, name)); got != want {
				t.Errorf("%s: mode %o, want %o", name, got, want)
			}
		}
		for name, want := range map[string][]byte{pki.CAFile: ca.CertPEM, pki.CertFile: is.CertPEM, pki.KeyFile: is.KeyPEM} {
			if got, err := os.ReadFile(filepath.Join(dir, name)); err != nil || !bytes.Equal(got, want) {
				t.Errorf("%s does not hold what was written: %v", name, err)
			}
		}
	}
	check(is)
	if got := mode(t, dir); got != 0o700 {
		t.Errorf("directory mode %o, want 700", got)
	}
	// A renewal replaces the files and keeps the modes, even of files an
	// operator loosened.
	if err := os.Chmod(filepath.Join(dir, pki.KeyFile), 0o666); err != nil {
		t.Fatal(err)
	}
	renewed, err := ca.Issue(id, pki.IssueOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := renewed.WriteDir(dir, ca.CertPEM); err != nil {
		t.Fatal(err)
	}
	check(renewed)
	// A directory that cannot be made is an error.
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := is.WriteDir(filepath.Join(file, "sub"), ca.CertPEM); err == nil {
		t.Error("WriteDir under a file succeeded")
	}
}

func TestParseCertificates(t *testing.T) {
	a := newCA(t, 0, time.Now())
	b := newCA(t, 0, time.Now())
	is, err := a.Issue(pki.Identity{Role: pki.Worker, ID: "w1"}, pki.IssueOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Other blocks are skipped; every certificate is read in order.
	bundle := slices.Concat(is.KeyPEM, a.CertPEM, []byte("comment\n"), b.CertPEM)
	certs, err := pki.ParseCertificates(bundle)
	if err != nil || len(certs) != 2 || !certs[0].Equal(a.Cert) || !certs[1].Equal(b.Cert) {
		t.Fatalf("ParseCertificates(bundle) = %d certificates, %v", len(certs), err)
	}
	for name, in := range map[string][]byte{
		"empty":    nil,
		"not PEM":  []byte("-----BEGIN nothing"),
		"key only": is.KeyPEM,
		"bad DER":  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2, 3}}),
	} {
		if _, err := pki.ParseCertificates(in); err == nil {
			t.Errorf("ParseCertificates(%s) succeeded", name)
		}
	}
}

func TestParseKey(t *testing.T) {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sec1, _ := x509.MarshalECPrivateKey(ec)
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(ec)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	rsa8, _ := x509.MarshalPKCS8PrivateKey(rsaKey)
	ca := newCA(t, 0, time.Now())
	block := func(typ string, der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}) }

	for name, in := range map[string][]byte{
		"EC PRIVATE KEY":             block("EC PRIVATE KEY", sec1),
		"PRIVATE KEY":                block("PRIVATE KEY", pkcs8),
		"after a certificate":        slices.Concat(ca.CertPEM, block("EC PRIVATE KEY", sec1)),
		"after EC PARAMETERS":        slices.Concat(block("EC PARAMETERS", []byte{6, 8, 42, 134, 72, 206, 61, 3, 1, 7}), block("EC PRIVATE KEY", sec1)),
		"the first of two keys":      slices.Concat(block("PRIVATE KEY", pkcs8), block("EC PRIVATE KEY", []byte{1})),
		"PKCS#8, then a certificate": slices.Concat(block("PRIVATE KEY", pkcs8), ca.CertPEM),
	} {
		k, err := pki.ParseKey(in)
		if err != nil || !k.Equal(ec) {
			t.Errorf("ParseKey(%s) = %v", name, err)
		}
	}
	for name, in := range map[string][]byte{
		"empty":           nil,
		"certificate":     ca.CertPEM,
		"RSA PKCS#8":      block("PRIVATE KEY", rsa8),
		"bad SEC 1":       block("EC PRIVATE KEY", []byte{1, 2, 3}),
		"bad PKCS#8":      block("PRIVATE KEY", []byte{1, 2, 3}),
		"RSA PRIVATE KEY": block("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey)),
	} {
		if _, err := pki.ParseKey(in); err == nil {
			t.Errorf("ParseKey(%s) succeeded", name)
		}
	}
}
