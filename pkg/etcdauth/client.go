package etcdauth

import (
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/styx-inference/styx/pkg/pki"
)

// DialTimeout bounds a client's first connection.
const DialTimeout = 5 * time.Second

// ClientConfig is the configuration of an etcd client for endpoints
// (host:port): over TLS presenting src's certificate and accepting only a
// server of role etcd when src is set, in plaintext when src is nil. An
// endpoint written http:// would make etcd's client drop TLS: give
// host:port or https://host:port.
func ClientConfig(endpoints []string, src *pki.Source) clientv3.Config {
	cfg := clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: DialTimeout,
		Logger:      zap.NewNop(),
	}
	if src != nil {
		// etcd's client hands this to gRPC's TLS credentials as is: the
		// certificate comes from GetClientCertificate at each handshake
		// and the server is checked in VerifyConnection (pki.Source).
		cfg.TLS = src.ClientConfig(pki.AnyOf(pki.Etcd))
	}
	return cfg
}
