package pki

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// ReloadCheck is how often a Source looks at its files for a renewal: at
// most once per interval, on the next handshake or lookup after it.
const ReloadCheck = time.Second

// Source is a process's identity, loaded from an identity directory and
// reloaded when its files change (a renewed certificate or a new CA), on
// the next handshake at most ReloadCheck after the change. A file set that
// does not load (half written, key and certificate mismatched, another
// identity, an expired certificate) is refused with an error log and
// counted; the previous material stays in use.
type Source struct {
	dir string
	log zerolog.Logger
	now func() time.Time

	cur atomic.Pointer[material]

	mu        sync.Mutex // serialises reloads
	lastCheck time.Time

	reloads      atomic.Uint64
	reloadErrors atomic.Uint64
}

type material struct {
	cert  tls.Certificate // Leaf set
	id    Identity
	pool  *x509.CertPool
	stamp string
	// caTag names the CA file the pool was read from; session tickets
	// carry it (see ServerConfig).
	caTag []byte
}

// Load reads an identity directory (ca.crt, tls.crt, tls.key).
func Load(dir string, log zerolog.Logger) (*Source, error) {
	s := &Source{dir: dir, log: log, now: time.Now}
	m, err := s.load()
	if err != nil {
		return nil, err
	}
	s.cur.Store(m)
	s.lastCheck = s.now()
	if left := m.cert.Leaf.NotAfter.Sub(s.now()); left <= 0 {
		return nil, fmt.Errorf("%s: certificate of %s expired at %s", dir, m.id, m.cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return s, nil
}

// SetClock replaces the clock used for expiry checks (tests).
func (s *Source) SetClock(now func() time.Time) { s.now = now }

// Dir is the identity directory.
func (s *Source) Dir() string { return s.dir }

// Identity is the identity of the current certificate.
func (s *Source) Identity() Identity { return s.current().id }

// NotAfter is when the current certificate expires.
func (s *Source) NotAfter() time.Time { return s.current().cert.Leaf.NotAfter }

// Reloads counts certificate or CA changes picked up; ReloadErrors counts
// file sets refused.
func (s *Source) Reloads() uint64      { return s.reloads.Load() }
func (s *Source) ReloadErrors() uint64 { return s.reloadErrors.Load() }

// Paths are the files of the identity directory: CA, certificate, key.
func (s *Source) Paths() (ca, cert, key string) {
	return filepath.Join(s.dir, CAFile), filepath.Join(s.dir, CertFile), filepath.Join(s.dir, KeyFile)
}

func (s *Source) current() *material {
	s.mu.Lock()
	if now := s.now(); now.Sub(s.lastCheck) >= ReloadCheck {
		s.lastCheck = now
		s.maybeReload()
	}
	s.mu.Unlock()
	return s.cur.Load()
}

func (s *Source) stamp() (string, error) {
	ca, cert, key := s.Paths()
	var out string
	for _, p := range []string{ca, cert, key} {
		fi, err := os.Stat(p)
		if err != nil {
			return "", err
		}
		out += fmt.Sprintf("%d.%d;", fi.ModTime().UnixNano(), fi.Size())
	}
	return out, nil
}

func (s *Source) maybeReload() {
	old := s.cur.Load()
	st, err := s.stamp()
	if err != nil || st == old.stamp {
		return
	}
	m, err := s.load()
	if err != nil {
		s.reloadErrors.Add(1)
		s.log.Error().Err(err).Str("dir", s.dir).Msg("renewed identity files refused; the previous certificate stays in use")
		return
	}
	if m.id != old.id {
		s.reloadErrors.Add(1)
		s.log.Error().Str("dir", s.dir).Str("was", old.id.String()).Str("now", m.id.String()).
			Msg("renewed certificate names another identity; refused, the previous certificate stays in use")
		return
	}
	// An expired certificate (an old backup restored, a copy from the
	// wrong host) would fail every handshake; Load refuses one too.
	if !m.cert.Leaf.NotAfter.After(s.now()) {
		s.reloadErrors.Add(1)
		s.log.Error().Str("dir", s.dir).Str("identity", m.id.String()).Time("not_after", m.cert.Leaf.NotAfter).
			Msg("renewed certificate has expired; refused, the previous certificate stays in use")
		return
	}
	s.cur.Store(m)
	s.reloads.Add(1)
	s.log.Info().Str("identity", m.id.String()).Time("not_after", m.cert.Leaf.NotAfter).Str("dir", s.dir).Msg("identity files reloaded")
}

func (s *Source) load() (*material, error) {
	caPath, certPath, keyPath := s.Paths()
	st, err := s.stamp()
	if err != nil {
		return nil, fmt.Errorf("identity directory %s: %w", s.dir, err)
	}
	caPEM, err := os.ReadFile(caPath)
	if err != nil {
		return nil, err
	}
	cas, err := ParseCertificates(caPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", caPath, err)
	}
	pool := x509.NewCertPool()
	for _, c := range cas {
		pool.AddCert(c)
	}
	pair, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return nil, fmt.Errorf("%s and %s: %w", certPath, keyPath, err)
	}
	leaf := pair.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, err
		}
		pair.Leaf = leaf
	}
	id, err := FromCert(leaf)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", certPath, err)
	}
	// The signature only: whether the certificate is valid now is for
	// Load and the peers to say. (Verifying at some moment of its life
	// would also ask the CA to be valid then, and call a certificate dated
	// before its CA unsigned.)
	if !slices.ContainsFunc(cas, func(ca *x509.Certificate) bool { return leaf.CheckSignatureFrom(ca) == nil }) {
		return nil, fmt.Errorf("%s is not signed by the CA in %s", certPath, caPath)
	}
	sum := sha256.Sum256(caPEM)
	tag := append([]byte("styx-ca:"), sum[:]...)
	return &material{cert: pair, id: id, pool: pool, stamp: st, caTag: tag}, nil
}

// Policy decides whether a verified peer identity may connect. Nil accepts
// every identity the CA signed.
type Policy func(Identity) error

// AnyOf accepts the listed roles.
func AnyOf(roles ...Role) Policy {
	return func(id Identity) error {
		for _, r := range roles {
			if id.Role == r {
				return nil
			}
		}
		return fmt.Errorf("%s: role %q not allowed here", id, id.Role)
	}
}

// Exactly accepts one identity.
func Exactly(want Identity) Policy {
	return func(id Identity) error {
		if id != want {
			return fmt.Errorf("peer is %s, want %s", id, want)
		}
		return nil
	}
}

// ErrNoCertificate is a peer that sent no certificate.
var ErrNoCertificate = errors.New("peer sent no certificate")

// Verify checks a peer's chain against the current CA at the current time
// and returns its identity.
func (s *Source) Verify(chain []*x509.Certificate, usage x509.ExtKeyUsage) (Identity, error) {
	if len(chain) == 0 {
		return Identity{}, ErrNoCertificate
	}
	m := s.current()
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: m.pool, Intermediates: inter, CurrentTime: s.now(), KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		return Identity{}, err
	}
	return FromCert(chain[0])
}

// ServerConfig is a TLS 1.3 server configuration that presents the
// current certificate and requires a client certificate signed by the
// current CA whose identity accept allows. It checks on every connection,
// resumed ones included.
func (s *Source) ServerConfig(accept Policy) *tls.Config {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return &s.current().cert, nil
		},
		ClientAuth: tls.RequireAnyClientCert,
		VerifyConnection: func(cs tls.ConnectionState) error {
			id, err := s.Verify(cs.PeerCertificates, x509.ExtKeyUsageClientAuth)
			if err != nil {
				return fmt.Errorf("client certificate: %w", err)
			}
			if accept != nil {
				return accept(id)
			}
			return nil
		},
	}
	// A session ticket carries the CA its client certificate was verified
	// with. After a CA change the session is declined and a full handshake
	// checks the certificates the peers hold now. Resumed, it would show
	// the new CA the client's old certificate, be refused, and stay
	// refused: the client sees its own handshake succeed, so it keeps the
	// ticket and offers it again, for as long as the ticket lives.
	cfg.WrapSession = func(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
		ss.Extra = append(ss.Extra, s.current().caTag)
		return cfg.EncryptTicket(cs, ss)
	}
	cfg.UnwrapSession = func(ticket []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
		ss, err := cfg.DecryptTicket(ticket, cs)
		if ss == nil || err != nil {
			return nil, err
		}
		tag := s.current().caTag
		if !slices.ContainsFunc(ss.Extra, func(b []byte) bool { return bytes.Equal(b, tag) }) {
			return nil, nil // a full handshake
		}
		return ss, nil
	}
	return cfg
}

// ClientConfig is a TLS 1.3 client configuration that presents the current
// certificate and accepts a server signed by the current CA whose identity
// expect allows. Host names are not checked: the identity is.
func (s *Source) ClientConfig(expect Policy) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &s.current().cert, nil
		},
		// The chain and identity are checked in VerifyConnection, against
		// the CA current at the time of the handshake.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			id, err := s.Verify(cs.PeerCertificates, x509.ExtKeyUsageServerAuth)
			if err != nil {
				return fmt.Errorf("server certificate: %w", err)
			}
			if expect != nil {
				return expect(id)
			}
			return nil
		},
		ClientSessionCache: tls.NewLRUClientSessionCache(64),
	}
}

// HTTPSConfig is a server configuration for browsers and HTTP clients:
// it presents the current certificate and asks for no client certificate.
func (s *Source) HTTPSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return &s.current().cert, nil
		},
	}
}

// ClientTLS is the client configuration for servers of role server, or
// nil (plaintext) for a nil src.
func ClientTLS(src *Source, server Role) *tls.Config {
	if src == nil {
		return nil
	}
	return src.ClientConfig(AnyOf(server))
}
