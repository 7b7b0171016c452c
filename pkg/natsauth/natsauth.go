package natsauth

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/styx-inference/styx/pkg/pki"
)

// Refusal reasons, the label of the refused counter.
const (
	// ReasonHandshake: no certificate, a foreign CA, an expired
	// certificate, no TLS at all, or a handshake that failed otherwise.
	ReasonHandshake = "handshake"
	// ReasonRole: a verified identity whose role may not connect (a
	// trainer or etcd client; a route from anything but a nats server).
	ReasonRole = "role"
	// ReasonPermission: a publish or subscription outside the role's
	// permissions (the connection stays; the message is dropped).
	ReasonPermission = "permission"
)

var reasons = []string{ReasonHandshake, ReasonRole, ReasonPermission}

// Auth authenticates and authorises a NATS server's clients and routes by
// their certificates, and counts what it refuses.
type Auth struct {
	src *pki.Source
	log zerolog.Logger

	clientTLS *tls.Config // the client port; hands each connection a verifying clone
	routeTLS  *tls.Config // both ends of a route

	mu      sync.Mutex
	refused map[string]uint64
	lastLog map[string]time.Time
}

// New returns the authority of a NATS server whose own identity is src
// (role nats).
func New(src *pki.Source, log zerolog.Logger) (*Auth, error) {
	if src == nil {
		return nil, errors.New("natsauth: nil identity")
	}
	if id := src.Identity(); id.Role != pki.NATS {
		return nil, fmt.Errorf("natsauth: the server's identity is %s, want role %s", id, pki.NATS)
	}
	a := &Auth{src: src, log: log, refused: map[string]uint64{}, lastLog: map[string]time.Time{}}
	a.clientTLS = a.newClientTLS()
	a.routeTLS = a.newRouteTLS()
	return a, nil
}

// Configure makes o require TLS on the client port and on cluster routes,
// with certificates of the current CA, and sets the authenticators that
// give each client its role's permissions and accept routes from nats
// servers only. It replaces o's TLS configurations and custom
// authenticators, and always sets the same values, so that a configuration
// reloaded through it compares equal. TLSVerify is set as well: the
// monitoring endpoints report it, and nats-server refuses to reload a
// configuration that would turn it off. The monitoring port, when
// o.HTTPSPort is set, serves HTTPS with the server's certificate and
// (nats-server's rule) asks for no client certificate.
func (a *Auth) Configure(o *server.Options) {
	o.TLSConfig = a.clientTLS
	o.TLSVerify = true
	o.CustomClientAuthentication = clientAuth{a}
	o.Cluster.TLSConfig = a.routeTLS
	o.CustomRouterAuthentication = routeAuth{a}
}

// newClientTLS is the configuration of the client port. nats-server also
// serves its HTTPS monitoring port from it, after turning client
// certificates off and replacing GetConfigForClient. So the outer
// configuration only presents the certificate (that is what the
// monitoring port gets), and hands every client connection the inner one,
// which asks for a client certificate and verifies it. The inner one asks
// rather than requires, so that a client without a certificate reaches
// VerifyConnection and is counted and logged like the others.
func (a *Auth) newClientTLS() *tls.Config {
	inner := a.src.ServerConfig(nil)
	inner.ClientAuth = tls.RequestClientCert
	return &tls.Config{
		MinVersion:     tls.VersionTLS12, // the monitoring port's HTTPS clients
		GetCertificate: inner.GetCertificate,
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			from := "?"
			if hello.Conn != nil {
				from = addrString(hello.Conn.RemoteAddr())
			}
			// A clone per connection, to log the peer's address. Session
			// tickets still resume across connections: their keys are the
			// outer configuration's.
			cfg := inner.Clone()
			cfg.VerifyConnection = func(cs tls.ConnectionState) error {
				if _, err := a.src.Verify(cs.PeerCertificates, x509.ExtKeyUsageClientAuth); err != nil {
					return a.refuse(ReasonHandshake, from, "tls handshake", fmt.Errorf("client certificate (%s): %w", remoteName(cs), err))
				}
				return nil
			}
			return cfg, nil
		},
	}
}

// newRouteTLS is the configuration of both ends of a route: nats-server
// uses the one configuration to accept routes and to dial them. Either end
// must present a certificate of the current CA with role nats, valid for
// both client and server authentication.
func (a *Auth) newRouteTLS() *tls.Config {
	srv := a.src.ServerConfig(nil)
	cli := a.src.ClientConfig(nil)
	cfg := &tls.Config{
		MinVersion:           tls.VersionTLS13,
		GetCertificate:       srv.GetCertificate,
		GetClientCertificate: cli.GetClientCertificate,
		ClientAuth:           tls.RequestClientCert,
		// Dialling: the chain and identity are checked in
		// VerifyConnection, against the CA current at the handshake.
		InsecureSkipVerify: true,
		VerifyConnection:   a.verifyRouteConn("dialled route"),
	}
	accept := cfg.Clone()
	// Accepting: a clone per connection, to log the peer's address.
	cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		c := accept.Clone()
		from := "?"
		if hello.Conn != nil {
			from = addrString(hello.Conn.RemoteAddr())
		}
		c.VerifyConnection = a.verifyRouteConn(from)
		return c, nil
	}
	return cfg
}

func (a *Auth) verifyRouteConn(from string) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		id, err := a.verifyRoute(cs.PeerCertificates)
		if err == nil {
			return nil
		}
		reason := ReasonHandshake
		if !id.IsZero() {
			reason = ReasonRole
		}
		return a.refuse(reason, from, "route tls handshake", fmt.Errorf("%s: %w", remoteName(cs), err))
	}
}

// verifyRoute checks a route peer's chain: the current CA, both usages,
// role nats. The identity is set when only the role was wrong.
func (a *Auth) verifyRoute(chain []*x509.Certificate) (pki.Identity, error) {
	if _, err := a.src.Verify(chain, x509.ExtKeyUsageServerAuth); err != nil {
		return pki.Identity{}, fmt.Errorf("route certificate: %w", err)
	}
	id, err := a.src.Verify(chain, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return pki.Identity{}, fmt.Errorf("route certificate: %w", err)
	}
	if id.Role != pki.NATS {
		return id, fmt.Errorf("route from %s: only %s servers may join the cluster", id, pki.NATS)
	}
	return id, nil
}

// clientAuth is the client port's server.Authentication.
type clientAuth struct{ a *Auth }

// Check verifies the client's certificate again (the handshake did; this
// holds even if the TLS configuration were replaced) and registers the
// client as its identity, with its role's permissions, until its
// certificate expires: then nats-server closes the connection, and the
// client reconnects with its renewed certificate.
func (ca clientAuth) Check(c server.ClientAuthentication) bool {
	a := ca.a
	from := addrString(c.RemoteAddress())
	if c.Kind() != server.CLIENT {
		a.refuse(ReasonRole, from, "connect", fmt.Errorf("connection kind %d is not a client", c.Kind()))
		return false
	}
	cs := c.GetTLSConnectionState()
	if cs == nil {
		a.refuse(ReasonHandshake, from, "connect", errors.New("not TLS"))
		return false
	}
	id, err := a.src.Verify(cs.PeerCertificates, x509.ExtKeyUsageClientAuth)
	if err != nil {
		a.refuse(ReasonHandshake, from, "connect", fmt.Errorf("client certificate: %w", err))
		return false
	}
	perms, err := Permissions(id.Role)
	if err != nil {
		a.refuse(ReasonRole, id.String()+"@"+from, "connect", err)
		return false
	}
	c.RegisterUser(&server.User{Username: id.String(), Permissions: perms, ConnectionDeadline: cs.PeerCertificates[0].NotAfter})
	a.log.Debug().Str("identity", id.String()).Str("peer", from).Uint64("cid", c.GetID()).Msg("nats client authenticated")
	return true
}

// routeAuth is the cluster port's server.Authentication.
type routeAuth struct{ a *Auth }

// Check accepts a route whose peer presented a nats certificate of the
// current CA.
func (ra routeAuth) Check(c server.ClientAuthentication) bool {
	a := ra.a
	from := addrString(c.RemoteAddress())
	cs := c.GetTLSConnectionState()
	if cs == nil {
		a.refuse(ReasonHandshake, from, "route", errors.New("not TLS"))
		return false
	}
	id, err := a.verifyRoute(cs.PeerCertificates)
	if err != nil {
		reason := ReasonHandshake
		if !id.IsZero() {
			reason = ReasonRole
		}
		a.refuse(reason, from, "route", err)
		return false
	}
	return true
}

// refusedError marks a handshake error this package already counted, so
// that the log hook does not count it again.
type refusedError struct{ err error }

func (e *refusedError) Error() string { return e.err.Error() }
func (e *refusedError) Unwrap() error { return e.err }

// refuse counts and logs a refusal and returns err marked as counted.
func (a *Auth) refuse(reason, from, what string, err error) error {
	a.count(reason, from, what, err)
	return &refusedError{err: err}
}

// count counts a refusal and logs it. Logs are limited to one per reason
// and peer per second, so that a flood of refused peers cannot flood the
// log; the counter counts every one.
func (a *Auth) count(reason, from, what string, err error) {
	a.mu.Lock()
	a.refused[reason]++
	key := reason + "|" + from
	now := time.Now()
	quiet := now.Sub(a.lastLog[key]) < time.Second
	if !quiet {
		a.lastLog[key] = now
		if len(a.lastLog) > 4096 {
			clear(a.lastLog)
		}
	}
	a.mu.Unlock()
	if quiet {
		return
	}
	a.log.Warn().Str("reason", reason).Str("peer", from).Str("what", what).Err(err).Msg("nats: refused an unauthenticated or unauthorised peer")
}

// Refused returns the refusals so far by reason.
func (a *Auth) Refused() map[string]uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]uint64, len(a.refused))
	for k, v := range a.refused {
		out[k] = v
	}
	return out
}

// Total is the number of refusals.
func (a *Auth) Total() uint64 {
	var n uint64
	for _, v := range a.Refused() {
		n += v
	}
	return n
}

// Collector exports the refusals as <prefix>_nats_refused_total{reason}.
func (a *Auth) Collector(prefix string) prometheus.Collector {
	return &collector{a: a, desc: prometheus.NewDesc(prefix+"_nats_refused_total",
		"NATS peers and operations refused: handshake (no or bad certificate, not TLS), role (identity not allowed to connect), permission (publish or subscribe outside the role's permissions).",
		[]string{"reason"}, nil)}
}

// Register adds Collector(prefix) to reg.
func (a *Auth) Register(reg prometheus.Registerer, prefix string) error {
	return reg.Register(a.Collector(prefix))
}

type collector struct {
	a    *Auth
	desc *prometheus.Desc
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	r := c.a.Refused()
	for _, reason := range reasons {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(r[reason]), reason)
	}
}

// remoteName names a TLS peer for the log by what its certificate claims,
// verified or not.
func remoteName(cs tls.ConnectionState) string {
	if len(cs.PeerCertificates) > 0 {
		if id, err := pki.FromCert(cs.PeerCertificates[0]); err == nil {
			return "claims " + id.String()
		}
		return "subject " + cs.PeerCertificates[0].Subject.String()
	}
	return "none sent"
}

func addrString(a net.Addr) string {
	if a == nil {
		return "?"
	}
	if h, _, err := net.SplitHostPort(a.String()); err == nil {
		return h
	}
	return a.String()
}
