package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// File names in a CA directory and an identity directory.
const (
	CAFile    = "ca.crt"
	CAKeyFile = "ca.key"
	CertFile  = "tls.crt"
	KeyFile   = "tls.key"
)

// Default lifetimes.
const (
	DefaultLifetime   = 30 * 24 * time.Hour
	DefaultCALifetime = 5 * 365 * 24 * time.Hour
)

// clockSkew back-dates NotBefore so that a host a little behind accepts a
// certificate issued a moment ago.
const clockSkew = 5 * time.Minute

// CA is a certificate authority: its certificate and key.
type CA struct {
	Cert    *x509.Certificate
	Key     *ecdsa.PrivateKey
	CertPEM []byte
}

// NewCA makes a self-signed CA named name.
func NewCA(name string, lifetime time.Duration, now time.Time) (*CA, error) {
	if lifetime <= 0 {
		lifetime = DefaultCALifetime
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"STYX"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(lifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// LoadCA reads ca.crt and ca.key from dir.
func LoadCA(dir string) (*CA, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, CAFile))
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	certs, err := ParseCertificates(certPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, CAFile), err)
	}
	if !certs[0].IsCA {
		return nil, fmt.Errorf("%s is not a CA certificate", filepath.Join(dir, CAFile))
	}
	key, err := ParseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, CAKeyFile), err)
	}
	if !key.PublicKey.Equal(certs[0].PublicKey) {
		return nil, fmt.Errorf("%s does not match %s", CAKeyFile, CAFile)
	}
	return &CA{Cert: certs[0], Key: key, CertPEM: certPEM}, nil
}

// Save writes ca.crt (0644) and ca.key (0600) into dir, creating it. It
// refuses when either file exists: a CA is never overwritten, and a
// certificate whose key was lost still names the CA every identity trusts.
func (ca *CA) Save(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	keyPath := filepath.Join(dir, CAKeyFile)
	for _, p := range []string{filepath.Join(dir, CAFile), keyPath} {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("%s exists: a CA is never overwritten", p)
		}
	}
	keyDER, err := x509.MarshalECPrivateKey(ca.Key)
	if err != nil {
		return err
	}
	if err := WriteFile(filepath.Join(dir, CAFile), ca.CertPEM, 0o644); err != nil {
		return err
	}
	return WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
}

// IssueOptions shapes an issued certificate.
type IssueOptions struct {
	// Lifetime defaults to DefaultLifetime (30 days).
	Lifetime time.Duration
	// DNSNames and IPs are added as SANs for clients that check host
	// names (etcdctl, grpcurl, browsers). STYX's own peers check the
	// identity URI instead.
	DNSNames []string
	IPs      []net.IP
	// Now is the issue time (default time.Now()).
	Now time.Time
}

// Issued is a certificate and its key, PEM-encoded.
type Issued struct {
	Identity Identity
	Cert     *x509.Certificate
	CertPEM  []byte
	KeyPEM   []byte
}

// Issue makes a certificate for id, usable as TLS server and client.
func (ca *CA) Issue(id Identity, o IssueOptions) (*Issued, error) {
	if _, err := NewIdentity(string(id.Role), id.ID); err != nil {
		return nil, err
	}
	if o.Lifetime <= 0 {
		o.Lifetime = DefaultLifetime
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	notAfter := o.Now.Add(o.Lifetime)
	if notAfter.After(ca.Cert.NotAfter) {
		return nil, fmt.Errorf("the certificate would outlive its CA (CA expires %s)", ca.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: id.CommonName(), Organization: []string{"STYX"}, OrganizationalUnit: []string{string(id.Role)}},
		NotBefore:    o.Now.Add(-clockSkew),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{id.URI()},
		DNSNames:     o.DNSNames,
		IPAddresses:  o.IPs,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	return &Issued{
		Identity: id,
		Cert:     cert,
		CertPEM:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:   pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

// WriteDir writes an identity directory: ca.crt, tls.crt, tls.key. Files
// are replaced atomically (write, then rename), so a process reloading
// them never reads half a file.
func (is *Issued) WriteDir(dir string, caPEM []byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	// The key first: a reader that sees the new certificate finds its key.
	if err := WriteFile(filepath.Join(dir, KeyFile), is.KeyPEM, 0o600); err != nil {
		return err
	}
	if err := WriteFile(filepath.Join(dir, CertFile), is.CertPEM, 0o644); err != nil {
		return err
	}
	return WriteFile(filepath.Join(dir, CAFile), caPEM, 0o644)
}

// WriteFile replaces path with b atomically (write, sync, rename): a
// reader sees the old file or the new one, never half of it. The owner of
// an existing file is kept where the process may (root giving identity
// files to the service user).
func WriteFile(path string, b []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if fi, err := os.Stat(path); err == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			_ = tmp.Chown(int(st.Uid), int(st.Gid)) // best effort: only root may give files away
		}
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func newSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

// ParseCertificates reads every CERTIFICATE block of a PEM file.
func ParseCertificates(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return out, nil
}

// ParseKey reads an ECDSA private key (EC PRIVATE KEY or PKCS#8).
func ParseKey(b []byte) (*ecdsa.PrivateKey, error) {
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, errors.New("no PEM private key found")
		}
		switch blk.Type {
		case "EC PRIVATE KEY":
			return x509.ParseECPrivateKey(blk.Bytes)
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
			if err != nil {
				return nil, err
			}
			ek, ok := k.(*ecdsa.PrivateKey)
			if !ok {
				return nil, fmt.Errorf("private key is %T, want ECDSA", k)
			}
			return ek, nil
		}
	}
}
