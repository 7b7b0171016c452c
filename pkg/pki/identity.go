// Package pki is STYX's small public-key infrastructure: a CA, identities
// carried as URI SANs (spiffe://styx/<role>/<id>) in ECDSA P-256
// certificates, and TLS configurations that reload renewed files without a
// restart and verify peers against the current CA.
//
// An identity directory holds three PEM files: ca.crt (the CA to trust),
// tls.crt (this process's certificate) and tls.key (its key). The CA
// directory holds ca.crt and ca.key.
package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/styx-inference/styx/pkg/keyspace"
)

// Role is what an identity may do.
type Role string

// The roles. Etcd and NATS are the servers of the coordination store and
// the verdict log.
const (
	Scheduler Role = "scheduler"
	Worker    Role = "worker"
	Node      Role = "node"
	Admin     Role = "admin"
	Trainer   Role = "trainer"
	Etcd      Role = "etcd"
	NATS      Role = "nats"
)

// Roles lists every role.
var Roles = []Role{Scheduler, Worker, Node, Admin, Trainer, Etcd, NATS}

// ParseRole checks a role name.
func ParseRole(s string) (Role, error) {
	for _, r := range Roles {
		if string(r) == s {
			return r, nil
		}
	}
	return "", fmt.Errorf("unknown role %q (want one of %s)", s, roleList())
}

func roleList() string {
	var b strings.Builder
	for i, r := range Roles {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(string(r))
	}
	return b.String()
}

// TrustDomain is the SPIFFE trust domain of every STYX identity.
const TrustDomain = "styx"

// Identity is who a certificate speaks for.
type Identity struct {
	Role Role
	ID   string
}

// NewIdentity checks role and id.
func NewIdentity(role, id string) (Identity, error) {
	r, err := ParseRole(role)
	if err != nil {
		return Identity{}, err
	}
	if err := keyspace.ValidID(id); err != nil {
		return Identity{}, err
	}
	return Identity{Role: r, ID: id}, nil
}

// URI is the identity's URI SAN: spiffe://styx/<role>/<id>.
func (i Identity) URI() *url.URL {
	return &url.URL{Scheme: "spiffe", Host: TrustDomain, Path: "/" + string(i.Role) + "/" + i.ID}
}

// String is the URI's text.
func (i Identity) String() string { return i.URI().String() }

// CommonName is the certificate's subject CN, "<role>:<id>". etcd takes it
// as the user name of a client authenticated by certificate.
func (i Identity) CommonName() string { return string(i.Role) + ":" + i.ID }

// IsZero reports an empty identity.
func (i Identity) IsZero() bool { return i.Role == "" && i.ID == "" }

// ParseURI reads an identity from its URI SAN.
func ParseURI(u *url.URL) (Identity, error) {
	if u == nil || u.Scheme != "spiffe" || u.Host != TrustDomain {
		return Identity{}, fmt.Errorf("URI %v is not a spiffe://%s/ identity", u, TrustDomain)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil || u.Port() != "" {
		return Identity{}, fmt.Errorf("URI %v: identity URIs carry no port, user, query or fragment", u)
	}
	parts := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
	if len(parts) != 2 {
		return Identity{}, fmt.Errorf("URI %v: want spiffe://%s/<role>/<id>", u, TrustDomain)
	}
	id, err := NewIdentity(parts[0], parts[1])
	if err != nil {
		return Identity{}, err
	}
	// One identity has one spelling: no empty query ("...?"), no escaped
	// letters ("w%31"), nothing url.Parse accepts but Issue never writes.
	if u.String() != id.String() {
		return Identity{}, fmt.Errorf("URI %v: not written as %s", u, id)
	}
	return id, nil
}

// FromCert reads the identity of a certificate: exactly one spiffe://styx/
// URI SAN.
func FromCert(c *x509.Certificate) (Identity, error) {
	var found []Identity
	for _, u := range c.URIs {
		if u.Scheme != "spiffe" {
			continue
		}
		id, err := ParseURI(u)
		if err != nil {
			return Identity{}, err
		}
		found = append(found, id)
	}
	switch len(found) {
	case 0:
		return Identity{}, errors.New("certificate carries no spiffe://styx/ identity")
	case 1:
		return found[0], nil
	default:
		return Identity{}, fmt.Errorf("certificate carries %d identities, want one", len(found))
	}
}

// ProvesWorker reports whether a worker certificate of id certID proves a
// worker registered as workerID: the same id, or one of the host's NUMA
// children, <certID>-numa<N>. One certificate per host covers the workers
// its supervisor starts, one per NUMA node.
func ProvesWorker(certID, workerID string) bool {
	if certID == workerID {
		return true
	}
	rest, ok := strings.CutPrefix(workerID, certID+"-numa")
	if !ok || rest == "" || len(rest) > 4 {
		return false
	}
	for _, r := range rest {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// WorkerPolicy accepts the worker certificates that prove workerID.
func WorkerPolicy(workerID string) Policy {
	return func(id Identity) error {
		if id.Role != Worker || !ProvesWorker(id.ID, workerID) {
			return fmt.Errorf("peer is %s, which does not prove worker %q", id, workerID)
		}
		return nil
	}
}
