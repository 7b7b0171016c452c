// Package embedetcd starts a single-member etcd inside the process: the
// default for `make run` and the etcd every in-process test uses.
//
// Without an identity directory it serves plaintext. With one (Config.PKIDir,
// an identity of role etcd) it serves clients and its peer port over TLS and
// requires a client certificate signed by the same CA; etcd then takes the
// certificate's CN ("<role>:<id>") as the user name, which pkg/etcdauth
// gives its permissions.
package embedetcd

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"time"

	"github.com/rs/zerolog"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/styx-inference/styx/pkg/etcdauth"
	"github.com/styx-inference/styx/pkg/pki"
)

// Config configures an embedded etcd.
type Config struct {
	// Dir holds the data; it is created when missing.
	Dir string
	// ClientAddr is host:port for clients; "127.0.0.1:0" picks a free port.
	ClientAddr string
	// PeerAddr is host:port for peers; "127.0.0.1:0" picks a free port.
	PeerAddr string
	// PKIDir is an identity directory of role etcd (ca.crt, tls.crt,
	// tls.key). When set, the client and peer ports speak TLS and accept
	// only clients presenting a certificate of that CA. Empty: plaintext.
	// etcd reads a renewed tls.crt and tls.key on the next connection; a
	// new ca.crt needs a restart.
	PKIDir string
	// Logs enables etcd's own logs on stderr (quiet by default).
	Logs bool
}

// Validate reports a configuration error.
func (c Config) Validate() error {
	if c.Dir == "" {
		return errors.New("embedetcd: empty data dir")
	}
	if c.ClientAddr == "" {
		return errors.New("embedetcd: empty client address")
	}
	return nil
}

// Server is a running embedded etcd.
type Server struct {
	e        *embed.Etcd
	endpoint string
	self     *pki.Source // the server's identity; nil when plaintext
}

// Start starts etcd and waits until it serves (up to 30 s).
func Start(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.PeerAddr == "" {
		cfg.PeerAddr = "127.0.0.1:0"
	}
	var self *pki.Source
	scheme := "http://"
	if cfg.PKIDir != "" {
		src, err := loadIdentity(cfg.PKIDir)
		if err != nil {
			return nil, err
		}
		self, scheme = src, "https://"
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("embedetcd: %w", err)
	}
	ec := embed.NewConfig()
	ec.Name = "styx-dev"
	ec.Dir = cfg.Dir
	cu, err := url.Parse(scheme + cfg.ClientAddr)
	if err != nil {
		return nil, fmt.Errorf("embedetcd: client address: %w", err)
	}
	pu, err := url.Parse(scheme + cfg.PeerAddr)
	if err != nil {
		return nil, fmt.Errorf("embedetcd: peer address: %w", err)
	}
	ec.ListenClientUrls = []url.URL{*cu}
	ec.AdvertiseClientUrls = []url.URL{*cu}
	ec.ListenPeerUrls = []url.URL{*pu}
	ec.AdvertisePeerUrls = []url.URL{*pu}
	ec.InitialCluster = ec.Name + "=" + pu.String()
	if self != nil {
		ca, cert, key := self.Paths()
		ec.ClientTLSInfo = transport.TLSInfo{CertFile: cert, KeyFile: key, TrustedCAFile: ca, ClientCertAuth: true}
		// A single member has no peers: only its own identity may connect
		// to the peer port.
		ec.PeerTLSInfo = transport.TLSInfo{CertFile: cert, KeyFile: key, TrustedCAFile: ca, ClientCertAuth: true,
			AllowedCNs: []string{self.Identity().CommonName()}}
	}
	ec.LogLevel = "error"
	if !cfg.Logs {
		ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	}
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("embedetcd: start: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		e.Close()
		return nil, errors.New("embedetcd: not ready after 30s")
	}
	return &Server{e: e, endpoint: e.Clients[0].Addr().String(), self: self}, nil
}

// loadIdentity loads and checks the server's identity directory.
func loadIdentity(dir string) (*pki.Source, error) {
	src, err := pki.Load(dir, zerolog.Nop())
	if err != nil {
		return nil, fmt.Errorf("embedetcd: identity: %w", err)
	}
	if id := src.Identity(); id.Role != pki.Etcd {
		return nil, fmt.Errorf("embedetcd: identity %s in %s: an etcd server needs role %s", id, dir, pki.Etcd)
	}
	return src, nil
}

// Endpoint is the host:port clients dial (with TLS when the server has an
// identity).
func (s *Server) Endpoint() string { return s.endpoint }

// TLS reports whether the server requires TLS and client certificates.
func (s *Server) TLS() bool { return s.self != nil }

// Client returns a new client for this server; the caller closes it. With
// TLS, it presents the server's own certificate: it has every right while
// authentication is off (what bootstrapping etcdauth.Enable needs), and
// none once it is on, since no etcd user bears an etcd server's name.
func (s *Server) Client() (*clientv3.Client, error) {
	return clientv3.New(etcdauth.ClientConfig([]string{s.endpoint}, s.self))
}

// ClientAs returns a new client that presents src's certificate and
// accepts only a server of role etcd; the caller closes it. etcd knows the
// client as src's CN. It fails when the server serves plaintext.
func (s *Server) ClientAs(src *pki.Source) (*clientv3.Client, error) {
	if s.self == nil {
		return nil, errors.New("embedetcd: the server serves plaintext; start it with a PKIDir to connect with an identity")
	}
	if src == nil {
		return nil, errors.New("embedetcd: nil identity")
	}
	return clientv3.New(etcdauth.ClientConfig([]string{s.endpoint}, src))
}

// Close stops etcd.
func (s *Server) Close() {
	s.e.Close()
	select {
	case <-s.e.Server.StopNotify():
	case <-time.After(10 * time.Second):
	}
}

// Wait blocks until ctx ends or etcd stops on its own (returning its error).
func (s *Server) Wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case err := <-s.e.Err():
		return err
	}
}
