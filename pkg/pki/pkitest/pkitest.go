// Package pkitest makes a throwaway PKI for tests: a CA in a temporary
// directory and identity directories issued on demand.
package pkitest

import (
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/styx-inference/styx/pkg/pki"
)

// PKI is a test CA and the identities it issued.
type PKI struct {
	Root string
	CA   *pki.CA

	mu   sync.Mutex
	dirs map[pki.Identity]string
}

// New makes a CA under t.TempDir().
func New(t testing.TB) *PKI {
	t.Helper()
	root := t.TempDir()
	ca, _, err := pki.InitRoot(root, "STYX test CA", 0)
	if err != nil {
		t.Fatal(err)
	}
	return &PKI{Root: root, CA: ca, dirs: map[pki.Identity]string{}}
}

// Opts are the options of test certificates: loopback SANs, 1 day.
func Opts() pki.IssueOptions {
	return pki.IssueOptions{Lifetime: 24 * time.Hour, DNSNames: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}}
}

// Dir returns the identity directory of role/id, issuing it once.
func (p *PKI) Dir(t testing.TB, role pki.Role, id string) string {
	t.Helper()
	ident := pki.Identity{Role: role, ID: id}
	p.mu.Lock()
	defer p.mu.Unlock()
	if d, ok := p.dirs[ident]; ok {
		return d
	}
	d, _, err := pki.EnsureIdentity(p.Root, p.CA, ident, Opts())
	if err != nil {
		t.Fatal(err)
	}
	p.dirs[ident] = d
	return d
}

// Source loads role/id's identity.
func (p *PKI) Source(t testing.TB, role pki.Role, id string) *pki.Source {
	t.Helper()
	s, err := pki.Load(p.Dir(t, role, id), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Issue writes a certificate for role/id with options o into a new
// directory (expired, short-lived or re-issued certificates).
func (p *PKI) Issue(t testing.TB, role pki.Role, id string, o pki.IssueOptions) string {
	t.Helper()
	is, err := p.CA.Issue(pki.Identity{Role: role, ID: id}, o)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), string(role)+"-"+id)
	if err := is.WriteDir(dir, p.CA.CertPEM); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Renew re-issues role/id into its existing directory (a rotation).
func (p *PKI) Renew(t testing.TB, role pki.Role, id string, o pki.IssueOptions) {
	t.Helper()
	dir := p.Dir(t, role, id)
	is, err := p.CA.Issue(pki.Identity{Role: role, ID: id}, o)
	if err != nil {
		t.Fatal(err)
	}
	if err := is.WriteDir(dir, p.CA.CertPEM); err != nil {
		t.Fatal(err)
	}
}
