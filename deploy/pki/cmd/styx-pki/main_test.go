package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/styx-inference/styx/pkg/embedetcd"
	"github.com/styx-inference/styx/pkg/keyspace"
	"github.com/styx-inference/styx/pkg/pki"
	"github.com/styx-inference/styx/pkg/pki/pkitest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// cmd runs styx-pki with args and returns its exit status and output.
func cmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(t.Context(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// must runs styx-pki and fails the test unless it exits 0.
func must(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errOut := cmd(t, args...)
	if code != 0 {
		t.Fatalf("styx-pki %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

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

func TestInitIssueShow(t *testing.T) {
	root := t.TempDir()
	must(t, "init", "--dir", root, "--name", "Test CA")
	before := time.Now()
	must(t, "issue", "--dir", root, "--role", "worker", "--id", "w1")
	dir := filepath.Join(root, "worker-w1")
	c := readCert(t, filepath.Join(dir, pki.CertFile))

	if len(c.URIs) != 1 || c.URIs[0].String() != "spiffe://styx/worker/w1" {
		t.Errorf("URI SANs %v, want exactly spiffe://styx/worker/w1", c.URIs)
	}
	if len(c.DNSNames) != 0 || len(c.IPAddresses) != 0 {
		t.Errorf("SANs DNS %v IP %v, want none without --dns and --ip", c.DNSNames, c.IPAddresses)
	}
	if c.Subject.CommonName != "worker:w1" {
		t.Errorf("CN %q, want worker:w1 (the etcd user name)", c.Subject.CommonName)
	}
	if k, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
		t.Errorf("key %T, want ECDSA P-256", c.PublicKey)
	}
	if !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) {
		t.Errorf("ext key usages %v, want serverAuth and clientAuth", c.ExtKeyUsage)
	}
	if left := c.NotAfter.Sub(before); left < 30*day-time.Minute || left > 30*day+time.Minute {
		t.Errorf("lifetime from now %v, want 30 days", left)
	}
	if c.IsCA {
		t.Error("an identity certificate is a CA")
	}
	ca := readCert(t, filepath.Join(root, "ca", pki.CAFile))
	if err := c.CheckSignatureFrom(ca); err != nil {
		t.Errorf("not signed by the CA: %v", err)
	}
	if ca.Subject.CommonName != "Test CA" {
		t.Errorf("CA name %q", ca.Subject.CommonName)
	}
	if fi, err := os.Stat(filepath.Join(dir, pki.KeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("tls.key: %v, mode %v, want 0600", err, fi.Mode())
	}
	// A process loads the directory as is.
	src, err := pki.Load(dir, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if src.Identity() != (pki.Identity{Role: pki.Worker, ID: "w1"}) {
		t.Errorf("loaded identity %s", src.Identity())
	}

	for _, path := range []string{dir, filepath.Join(dir, pki.CertFile)} {
		out := must(t, "show", path)
		for _, want := range []string{"spiffe://styx/worker/w1", "worker:w1", "29 days left", "URI:spiffe://styx/worker/w1",
			"ECDSA P-256", "serverAuth, clientAuth", "Test CA", "status       valid"} {
			if !strings.Contains(out, want) {
				t.Errorf("show %s: no %q in\n%s", path, want, out)
			}
		}
	}
	if out := must(t, "show", filepath.Join(root, "ca")); !strings.Contains(out, "Test CA") || !strings.Contains(out, "1824 days left") {
		t.Errorf("show of the CA directory:\n%s", out)
	}
}

func TestIssueSANsAndOut(t *testing.T) {
	root := t.TempDir()
	must(t, "init", "--dir", root)
	out := filepath.Join(t.TempDir(), "etcd")
	must(t, "issue", "--dir", root, "--role", "etcd", "--id", "etcd-1", "--days", "7",
		"--dns", "etcd-1,localhost", "--ip", "127.0.0.1,::1", "--out", out)
	c := readCert(t, filepath.Join(out, pki.CertFile))
	if !slices.Equal(c.DNSNames, []string{"etcd-1", "localhost"}) || len(c.IPAddresses) != 2 {
		t.Errorf("SANs DNS %v IP %v", c.DNSNames, c.IPAddresses)
	}
	if life := c.NotAfter.Sub(c.NotBefore); life < 7*day || life > 7*day+time.Hour {
		t.Errorf("lifetime %v, want 7 days", life)
	}
	if _, err := os.Stat(filepath.Join(root, "etcd-etcd-1")); err == nil {
		t.Error("--out given, but the default directory was written too")
	}
}

func TestReissueRenewsInPlace(t *testing.T) {
	root := t.TempDir()
	must(t, "init", "--dir", root)
	must(t, "issue", "--dir", root, "--role", "node", "--id", "node-a")
	dir := filepath.Join(root, "node-node-a")
	first := readCert(t, filepath.Join(dir, pki.CertFile))
	key1, _ := os.ReadFile(filepath.Join(dir, pki.KeyFile))

	// A process using the directory.
	src, err := pki.Load(dir, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	src.SetClock(func() time.Time { return now })

	out := must(t, "issue", "--dir", root, "--role", "node", "--id", "node-a")
	if !strings.HasPrefix(out, "renewed ") {
		t.Errorf("second issue says %q, want renewed", out)
	}
	second := readCert(t, filepath.Join(dir, pki.CertFile))
	key2, _ := os.ReadFile(filepath.Join(dir, pki.KeyFile))
	if first.SerialNumber.Cmp(second.SerialNumber) == 0 {
		t.Error("re-issue kept the serial")
	}
	if bytes.Equal(key1, key2) {
		t.Error("re-issue kept the key")
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{pki.CAFile, pki.CertFile, pki.KeyFile}) {
		t.Errorf("identity directory holds %v after renewal", names)
	}
	now = now.Add(2 * pki.ReloadCheck)
	if got := src.Identity(); got.ID != "node-a" || src.Reloads() != 1 || src.ReloadErrors() != 0 {
		t.Errorf("running process: identity %s, %d reloads, %d refused; want the renewal picked up", got, src.Reloads(), src.ReloadErrors())
	}
	if !src.NotAfter().Equal(second.NotAfter) {
		t.Errorf("running process uses a certificate expiring %v, want the renewed one (%v)", src.NotAfter(), second.NotAfter)
	}
}

func TestBadInput(t *testing.T) {
	root := t.TempDir()
	must(t, "init", "--dir", root)
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown role", []string{"issue", "--dir", root, "--role", "wroker", "--id", "w1"}, 2, `unknown role "wroker"`},
		{"bad id", []string{"issue", "--dir", root, "--role", "worker", "--id", "w/1"}, 2, "not allowed"},
		{"empty id", []string{"issue", "--dir", root, "--role", "worker"}, 2, "--role and --id are required"},
		{"no dir", []string{"issue", "--role", "worker", "--id", "w1"}, 2, "--dir is required"},
		{"days", []string{"issue", "--dir", root, "--role", "worker", "--id", "w1", "--days", "0"}, 2, "positive"},
		{"bad ip", []string{"issue", "--dir", root, "--role", "worker", "--id", "w1", "--ip", "10.0.0"}, 2, "not an IP address"},
		{"missing CA", []string{"issue", "--dir", t.TempDir(), "--role", "worker", "--id", "w1"}, 1, "run styx-pki init --dir"},
		{"outlives CA", []string{"issue", "--dir", root, "--role", "worker", "--id", "w1", "--days", "4000"}, 1, "outlive its CA"},
		{"ensure bad identity", []string{"ensure", "--dir", root, "worker"}, 2, "want ROLE/ID"},
		{"ensure bad role", []string{"ensure", "--dir", root, "boss/x"}, 2, "unknown role"},
		{"ensure owner", []string{"ensure", "--dir", root, "--owner", "nobody", "worker/w1"}, 2, "numeric UID:GID"},
		{"unknown command", []string{"sign"}, 2, `unknown command "sign"`},
		{"unknown flag", []string{"issue", "--bogus"}, 2, "flag provided but not defined"},
		{"grant, no identity", []string{"grant", "--etcd-endpoints", "127.0.0.1:1", "--pki-dir", root}, 2, "no identity"},
		{"grant, not an admin", []string{"grant", "--etcd-endpoints", "127.0.0.1:1", "--pki-dir", filepath.Join(root, "worker-w2"), "worker/w2"}, 1, "managed by an admin"},
		{"grant, no etcd", []string{"grant", "--pki-dir", root, "worker/w2"}, 2, "no etcd"},
		{"show nothing", []string{"show"}, 2, "one PATH"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "grant, not an admin" {
				must(t, "issue", "--dir", root, "--role", "worker", "--id", "w2")
			}
			t.Setenv("STYX_ETCD_ENDPOINTS", "")
			os.Unsetenv("STYX_ETCD_ENDPOINTS")
			code, out, errOut := cmd(t, tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.want) {
				t.Errorf("exit %d, stderr %q; want exit %d and %q (stdout %q)", code, errOut, tc.code, tc.want, out)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(root, "worker-w1")); err == nil {
		t.Error("a refused issue wrote an identity directory")
	}
}

func TestInitRefusesToOverwrite(t *testing.T) {
	root := t.TempDir()
	must(t, "init", "--dir", root)
	key := filepath.Join(root, "ca", pki.CAKeyFile)
	before, _ := os.ReadFile(key)
	code, _, errOut := cmd(t, "init", "--dir", root)
	if code != 1 || !strings.Contains(errOut, "never overwritten") {
		t.Errorf("second init: exit %d, %q; want 1 and a refusal", code, errOut)
	}
	// Only the certificate left (a half-copied CA) is refused as well.
	if err := os.Remove(key); err != nil {
		t.Fatal(err)
	}
	if code, _, _ := cmd(t, "init", "--dir", root); code != 1 {
		t.Errorf("init over a CA certificate without its key: exit %d, want 1", code)
	}
	if err := os.WriteFile(key, before, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := pki.LoadCA(filepath.Join(root, "ca")); err != nil {
		t.Errorf("the CA no longer loads: %v", err)
	}
}

func TestShowRefuses(t *testing.T) {
	p := pkitest.New(t)
	expired := p.Issue(t, pki.Worker, "old", pki.IssueOptions{Lifetime: time.Hour, Now: time.Now().Add(-2 * time.Hour)})
	code, out, errOut := cmd(t, "show", expired)
	if code != 1 || !strings.Contains(errOut, "expired") || !strings.Contains(out, "expired") || !strings.Contains(out, "INVALID") {
		t.Errorf("show of an expired certificate: exit %d\n%s%s", code, out, errOut)
	}

	future := p.Issue(t, pki.Worker, "future", pki.IssueOptions{Now: time.Now().Add(48 * time.Hour)})
	if code, _, errOut := cmd(t, "show", future); code != 1 || !strings.Contains(errOut, "not valid before") {
		t.Errorf("show of a certificate not yet valid: exit %d, %s", code, errOut)
	}

	// A directory whose certificate another CA signed.
	foreign := pkitest.New(t).Dir(t, pki.Worker, "w1")
	mixed := t.TempDir()
	copyFile(t, filepath.Join(foreign, pki.CertFile), filepath.Join(mixed, pki.CertFile))
	copyFile(t, filepath.Join(p.Root, "ca", pki.CAFile), filepath.Join(mixed, pki.CAFile))
	if code, _, errOut := cmd(t, "show", mixed); code != 1 || !strings.Contains(errOut, "not signed by any CA") {
		t.Errorf("show of a foreign certificate: exit %d, %s", code, errOut)
	}
	if code, _, errOut := cmd(t, "show", "--ca", filepath.Join(p.Root, "ca", pki.CAFile), filepath.Join(foreign, pki.CertFile)); code != 1 || !strings.Contains(errOut, "not signed") {
		t.Errorf("show --ca of a foreign certificate: exit %d, %s", code, errOut)
	}
	// The right CA, given with --ca.
	if code, _, errOut := cmd(t, "show", "--ca", filepath.Join(foreign, pki.CAFile), filepath.Join(mixed, pki.CertFile)); code != 0 {
		t.Errorf("show --ca with the signing CA: exit %d, %s", code, errOut)
	}
	// No CA beside a certificate.
	alone := filepath.Join(t.TempDir(), "alone.crt")
	copyFile(t, filepath.Join(foreign, pki.CertFile), alone)
	if code, _, errOut := cmd(t, "show", alone); code != 1 || !strings.Contains(errOut, "no CA to check against") {
		t.Errorf("show of a certificate without a CA: exit %d, %s", code, errOut)
	}
	// Due for renewal: valid, exit 0, marked.
	due := p.Issue(t, pki.Node, "due", pki.IssueOptions{Lifetime: 30 * day, Now: time.Now().Add(-25 * day)})
	if out := must(t, "show", due); !strings.Contains(out, "renew") {
		t.Errorf("show of a certificate past two thirds of its life does not say renew:\n%s", out)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestIssueRefusesAnotherIdentity(t *testing.T) {
	root := t.TempDir()
	must(t, "init", "--dir", root)
	must(t, "issue", "--dir", root, "--role", "worker", "--id", "w1")
	dir := filepath.Join(root, "worker-w1")
	before := readCert(t, filepath.Join(dir, pki.CertFile))
	code, _, errOut := cmd(t, "issue", "--dir", root, "--role", "node", "--id", "n1", "--out", dir)
	if code != 1 || !strings.Contains(errOut, "holds the certificate of spiffe://styx/worker/w1") {
		t.Errorf("issue into another identity's directory: exit %d, %s", code, errOut)
	}
	if after := readCert(t, filepath.Join(dir, pki.CertFile)); after.SerialNumber.Cmp(before.SerialNumber) != 0 {
		t.Error("the other identity's certificate was replaced")
	}
}

func TestEnsure(t *testing.T) {
	root := t.TempDir()
	args := []string{"ensure", "--dir", root, "--dns-id", "--ip", "127.0.0.1",
		"--owner", strconv.Itoa(os.Getuid()) + ":" + strconv.Itoa(os.Getgid()), "etcd/etcd-1", "worker/w1", "spiffe://styx/admin/ops"}
	out := must(t, args...)
	if !strings.Contains(out, "made CA") || strings.Count(out, "issued ") != 3 {
		t.Errorf("first ensure:\n%s", out)
	}
	etcd := readCert(t, filepath.Join(root, "etcd-etcd-1", pki.CertFile))
	if !slices.Equal(etcd.DNSNames, []string{"etcd-1"}) || len(etcd.IPAddresses) != 1 {
		t.Errorf("--dns-id --ip: SANs DNS %v IP %v", etcd.DNSNames, etcd.IPAddresses)
	}
	ca := readCert(t, filepath.Join(root, "ca", pki.CAFile))

	// Again: nothing changes, and a new identity is added.
	out = must(t, append(args, "node/n1")...)
	if strings.Contains(out, "made CA") || strings.Count(out, "kept ") != 3 || strings.Count(out, "issued ") != 1 {
		t.Errorf("second ensure:\n%s", out)
	}
	if again := readCert(t, filepath.Join(root, "etcd-etcd-1", pki.CertFile)); again.SerialNumber.Cmp(etcd.SerialNumber) != 0 {
		t.Error("ensure re-issued a fresh certificate")
	}
	if again := readCert(t, filepath.Join(root, "ca", pki.CAFile)); !again.Equal(ca) {
		t.Error("ensure replaced the CA")
	}

	// A certificate past two thirds of its life is renewed in place.
	cax, err := pki.LoadCA(filepath.Join(root, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	is, err := cax.Issue(pki.Identity{Role: pki.Worker, ID: "w1"}, pki.IssueOptions{Lifetime: 30 * day, Now: time.Now().Add(-21 * day)})
	if err != nil {
		t.Fatal(err)
	}
	if err := is.WriteDir(filepath.Join(root, "worker-w1"), cax.CertPEM); err != nil {
		t.Fatal(err)
	}
	out = must(t, args...)
	if !strings.Contains(out, "issued spiffe://styx/worker/w1") {
		t.Errorf("ensure kept a certificate due for renewal:\n%s", out)
	}
	if c := readCert(t, filepath.Join(root, "worker-w1", pki.CertFile)); time.Until(c.NotAfter) < 29*day {
		t.Errorf("renewed certificate expires %v", c.NotAfter)
	}
}

// TestEnsureOwner checks that --owner hands the identity directories to
// the services' user and keeps the CA: only root may give files away.
func TestEnsureOwner(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("giving files to another user needs root")
	}
	root := t.TempDir()
	must(t, "ensure", "--dir", root, "--owner", "65534:65534", "node/n1")
	for _, p := range []string{"node-n1", "node-n1/ca.crt", "node-n1/tls.crt", "node-n1/tls.key", "ca", "ca/ca.key"} {
		fi, err := os.Stat(filepath.Join(root, p))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		want := uint32(65534)
		if strings.HasPrefix(p, "ca") {
			want = 0
		}
		if st.Uid != want || st.Gid != want {
			t.Errorf("%s owned by %d:%d, want %d:%d", p, st.Uid, st.Gid, want, want)
		}
	}
	if fi, _ := os.Stat(filepath.Join(root, "node-n1", pki.KeyFile)); fi.Mode().Perm() != 0o600 {
		t.Errorf("tls.key mode %v, want 0600", fi.Mode())
	}
}

// TestTrustRotation walks the CA rotation of trust -h: every identity
// trusts both CAs, identities are re-issued by the new one, the old one is
// dropped. At each step a peer of either generation verifies the other
// exactly when it should.
func TestTrustRotation(t *testing.T) {
	oldRoot, newRoot := t.TempDir(), t.TempDir()
	must(t, "init", "--dir", oldRoot, "--name", "CA 1")
	must(t, "init", "--dir", newRoot, "--name", "CA 2")
	must(t, "issue", "--dir", oldRoot, "--role", "scheduler", "--id", "s1")
	must(t, "issue", "--dir", oldRoot, "--role", "worker", "--id", "w1")
	sched, err := pki.Load(filepath.Join(oldRoot, "scheduler-s1"), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	sched.SetClock(func() time.Time { return now })
	tick := func() { now = now.Add(2 * pki.ReloadCheck) }
	verifies := func(src *pki.Source, certDir string) bool {
		c := readCert(t, filepath.Join(certDir, pki.CertFile))
		_, err := src.Verify([]*x509.Certificate{c}, x509.ExtKeyUsageClientAuth)
		return err == nil
	}
	// A worker of the new CA, issued before anyone trusts it.
	newWorker := filepath.Join(t.TempDir(), "w2")
	must(t, "issue", "--dir", newRoot, "--role", "worker", "--id", "w2", "--out", newWorker)
	if verifies(sched, newWorker) {
		t.Fatal("a certificate of the new CA is trusted before the rotation")
	}

	// 1. Everyone trusts both.
	out := must(t, "trust", "--dir", oldRoot, "--add", filepath.Join(newRoot, "ca", pki.CAFile))
	if !strings.Contains(out, "CA 1") || !strings.Contains(out, "CA 2") || !strings.Contains(out, "2 identity directories") {
		t.Errorf("trust --add:\n%s", out)
	}
	tick()
	if !verifies(sched, newWorker) {
		t.Error("after trust --add, the running scheduler does not accept the new CA's worker")
	}
	if !verifies(sched, filepath.Join(oldRoot, "worker-w1")) {
		t.Error("after trust --add, the old CA's worker is refused")
	}
	// The old root still issues with its own key; its bundle is passed on.
	must(t, "issue", "--dir", oldRoot, "--role", "worker", "--id", "w1")
	if b, _ := os.ReadFile(filepath.Join(oldRoot, "worker-w1", pki.CAFile)); bytes.Count(b, []byte("BEGIN CERTIFICATE")) != 2 {
		t.Error("an identity issued by a root trusting two CAs holds one")
	}

	// 2. Re-issue from the new root, which trusts the old CA too.
	must(t, "trust", "--dir", newRoot, "--add", filepath.Join(oldRoot, "ca", pki.CAFile))
	must(t, "issue", "--dir", newRoot, "--role", "scheduler", "--id", "s1", "--out", filepath.Join(oldRoot, "scheduler-s1"))
	tick()
	if c := readCert(t, filepath.Join(oldRoot, "scheduler-s1", pki.CertFile)); c.Issuer.CommonName != "CA 2" || sched.Reloads() == 0 {
		t.Errorf("the re-issued scheduler: issuer %q, %d reloads", c.Issuer.CommonName, sched.Reloads())
	}
	if !verifies(sched, filepath.Join(oldRoot, "worker-w1")) {
		t.Error("mid-rotation, the old CA's worker is refused")
	}

	// 3. Drop the old CA.
	must(t, "trust", "--dir", newRoot, "--only-own")
	copyFile(t, filepath.Join(newRoot, "ca", pki.CAFile), filepath.Join(oldRoot, "scheduler-s1", pki.CAFile))
	tick()
	if verifies(sched, filepath.Join(oldRoot, "worker-w1")) {
		t.Error("after --only-own, the old CA's worker is still trusted")
	}
	if !verifies(sched, newWorker) {
		t.Error("after --only-own, the new CA's worker is refused")
	}
	if b, _ := os.ReadFile(filepath.Join(newRoot, "ca", pki.CAFile)); bytes.Count(b, []byte("BEGIN CERTIFICATE")) != 1 {
		t.Error("--only-own left more than one CA in the root's ca.crt")
	}
	if _, err := pki.LoadCA(filepath.Join(newRoot, "ca")); err != nil {
		t.Errorf("the new root's CA no longer loads: %v", err)
	}

	if code, _, errOut := cmd(t, "trust", "--dir", newRoot, "--add", filepath.Join(newWorker, pki.CertFile)); code != 1 || !strings.Contains(errOut, "not a CA") {
		t.Errorf("trust --add of a leaf certificate: exit %d, %s", code, errOut)
	}
}

func TestHelp(t *testing.T) {
	out := must(t, "help")
	for name := range commands {
		if !strings.Contains(out, "styx-pki "+name+" ") {
			t.Errorf("styx-pki help does not list %s", name)
		}
		for _, args := range [][]string{{name, "-h"}, {"help", name}} {
			code, out, _ := cmd(t, args...)
			if code != 0 || !strings.HasPrefix(out, "styx-pki "+name) || !strings.Contains(out, "Flags:") || !strings.Contains(out, "  styx-pki "+name) {
				t.Errorf("styx-pki %s: exit %d, want its usage with an example and its flags:\n%s", strings.Join(args, " "), code, out)
			}
		}
	}
	if code, _, errOut := cmd(t); code != 2 || !strings.Contains(errOut, "Usage:") {
		t.Errorf("no arguments: exit %d, %s", code, errOut)
	}
}

// TestEtcdUsers grants, enables and revokes against a real etcd that
// requires client certificates of the CA: each identity ends up with
// exactly its permissions, and a revoked one is refused.
func TestEtcdUsers(t *testing.T) {
	p := pkitest.New(t)
	srv, err := embedetcd.Start(embedetcd.Config{Dir: t.TempDir(), ClientAddr: "127.0.0.1:0", PKIDir: p.Dir(t, pki.Etcd, "etcd-1")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	admin := p.Dir(t, pki.Admin, "ops")
	etcd := []string{"--etcd-endpoints", srv.Endpoint(), "--pki-dir", admin, "--timeout", "20s"}

	out := must(t, append([]string{"etcd-enable", "--admin", "alice"}, append(etcd, "worker/w1", "node/n1")...)...)
	if !strings.Contains(out, "granted spiffe://styx/worker/w1") || !strings.Contains(out, "admins: admin:alice, admin:ops") {
		t.Errorf("etcd-enable:\n%s", out)
	}
	client := func(role pki.Role, id string) func(key string) error {
		cli, err := srv.ClientAs(p.Source(t, role, id))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cli.Close() })
		return func(key string) error {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			_, err := cli.Put(ctx, key, "x")
			return err
		}
	}
	w1 := client(pki.Worker, "w1")
	if err := w1(keyspace.WorkerKey("w1")); err != nil {
		t.Errorf("granted worker w1 writing its registration: %v", err)
	}
	if err := client(pki.Worker, "w3")(keyspace.WorkerKey("w3")); err == nil {
		t.Error("worker w3, never granted, wrote its registration")
	}

	// Granted later by an admin: with authentication on.
	must(t, append([]string{"grant", "--role", "worker", "--id", "w3"}, etcd...)...)
	if err := client(pki.Worker, "w3")(keyspace.WorkerKey("w3")); err != nil {
		t.Errorf("worker w3 after grant: %v", err)
	}

	// Only an admin grants.
	code, _, errOut := cmd(t, "grant", "--etcd-endpoints", srv.Endpoint(), "--pki-dir", p.Dir(t, pki.Node, "n1"), "node/n1")
	if code != 1 || !strings.Contains(errOut, "admin") {
		t.Errorf("grant as a node: exit %d, %s", code, errOut)
	}

	// Revoke, with the environment naming etcd and the admin.
	t.Setenv("STYX_ETCD_ENDPOINTS", srv.Endpoint())
	t.Setenv("STYX_PKI_DIR", admin)
	out = must(t, "revoke", "worker/w1")
	if !strings.Contains(out, "revoked spiffe://styx/worker/w1") || !strings.Contains(out, "no revocation list") {
		t.Errorf("revoke:\n%s", out)
	}
	if err := w1(keyspace.WorkerKey("w1")); err == nil {
		t.Error("worker w1 wrote its registration after revoke")
	}
	if code, _, errOut := cmd(t, "revoke", "admin/ops"); code != 1 || !strings.Contains(errOut, "runs as") {
		t.Errorf("revoking oneself: exit %d, %s", code, errOut)
	}

	// etcd-enable again changes nothing and still works.
	must(t, append([]string{"etcd-enable"}, etcd...)...)
	cli, err := srv.ClientAs(p.Source(t, pki.Admin, "ops"))
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	users, err := cli.UserList(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"admin:alice", "admin:ops", "node:n1", "root", "worker:w3"}
	if got := slices.Sorted(slices.Values(users.Users)); !slices.Equal(got, want) {
		t.Errorf("etcd users %v, want %v", got, want)
	}
	if st, err := cli.AuthStatus(t.Context()); err != nil || !st.Enabled {
		t.Errorf("auth status %v, %v; want enabled", st, err)
	}
}
