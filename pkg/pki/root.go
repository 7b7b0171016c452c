package pki

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// A PKI root directory (what `styx-pki` and make run keep) holds the CA
// in <root>/ca and one identity directory per identity in
// <root>/<role>-<id>.

// CADir is the CA directory of a PKI root.
func CADir(root string) string { return filepath.Join(root, "ca") }

// IdentityDir is an identity's directory in a PKI root.
func IdentityDir(root string, id Identity) string {
	return filepath.Join(root, string(id.Role)+"-"+id.ID)
}

// InitRoot loads the root's CA, or makes one when there is none.
func InitRoot(root, name string, lifetime time.Duration) (ca *CA, created bool, err error) {
	ca, err = LoadCA(CADir(root))
	if err == nil {
		return ca, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, err
	}
	if ca, err = NewCA(name, lifetime, time.Now()); err != nil {
		return nil, false, err
	}
	if err := ca.Save(CADir(root)); err != nil {
		return nil, false, err
	}
	return ca, true, nil
}

// EnsureIdentity issues id's directory in the root unless a certificate for
// it from this CA is there and has more than a third of its lifetime left.
// It returns the directory and whether it issued.
func EnsureIdentity(root string, ca *CA, id Identity, o IssueOptions) (string, bool, error) {
	dir := IdentityDir(root, id)
	if fresh(dir, ca, id) {
		return dir, false, nil
	}
	is, err := ca.Issue(id, o)
	if err != nil {
		return "", false, fmt.Errorf("issue %s: %w", id, err)
	}
	if err := is.WriteDir(dir, ca.CertPEM); err != nil {
		return "", false, err
	}
	return dir, true, nil
}

func fresh(dir string, ca *CA, id Identity) bool {
	b, err := os.ReadFile(filepath.Join(dir, CertFile))
	if err != nil {
		return false
	}
	cb, err := os.ReadFile(filepath.Join(dir, CAFile))
	if err != nil || string(cb) != string(ca.CertPEM) {
		return false
	}
	if _, err := os.Stat(filepath.Join(dir, KeyFile)); err != nil {
		return false
	}
	certs, err := ParseCertificates(b)
	if err != nil {
		return false
	}
	c := certs[0]
	got, err := FromCert(c)
	if err != nil || got != id || c.CheckSignatureFrom(ca.Cert) != nil {
		return false
	}
	life := c.NotAfter.Sub(c.NotBefore)
	return time.Until(c.NotAfter) > life/3
}
