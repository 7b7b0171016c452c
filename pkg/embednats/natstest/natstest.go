// Package natstest starts an embedded NATS server with JetStream for a
// test: on 127.0.0.1:0, in the test's temporary directory, stopped when the
// test ends. Start serves plaintext; StartTLS requires mutual TLS with the
// test's PKI and gives each client its role's permissions.
package natstest

import (
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/styx-inference/styx/pkg/embednats"
	"github.com/styx-inference/styx/pkg/pki"
	"github.com/styx-inference/styx/pkg/pki/pkitest"
)

// ServerID is the id of StartTLS's server identity, nats/<ServerID>.
const ServerID = "natstest"

// Server is a test's JetStream server; Restart stops it and starts it
// again on the same address and files.
type Server struct {
	*embednats.Server
	tb  testing.TB
	dir string
	src *pki.Source
	log zerolog.Logger
}

// Start starts a plaintext server; tb.Cleanup stops it.
func Start(tb testing.TB) *Server {
	tb.Helper()
	return start(tb, nil, zerolog.Nop())
}

// StartTLS starts a server with the identity nats/natstest of p that
// requires mutual TLS; tb.Cleanup stops it. Clients connect with
// ClientTLS; refusals are counted on Auth().
func StartTLS(tb testing.TB, p *pkitest.PKI) *Server {
	tb.Helper()
	return start(tb, p.Source(tb, pki.NATS, ServerID), zerolog.Nop())
}

// StartTLSLog is StartTLS with a logger for refusals.
func StartTLSLog(tb testing.TB, p *pkitest.PKI, log zerolog.Logger) *Server {
	tb.Helper()
	return start(tb, p.Source(tb, pki.NATS, ServerID), log)
}

func start(tb testing.TB, src *pki.Source, log zerolog.Logger) *Server {
	tb.Helper()
	s := &Server{tb: tb, dir: tb.TempDir(), src: src, log: log}
	srv, err := embednats.Start(s.config("127.0.0.1:0"))
	if err != nil {
		tb.Fatalf("embedded nats: %v", err)
	}
	s.Server = srv
	tb.Cleanup(func() { s.Server.Close() })
	return s
}

func (s *Server) config(addr string) embednats.Config {
	return embednats.Config{Dir: s.dir, Addr: addr, Source: s.src, Log: s.log}
}

// Stop stops the server (Start again with Restart).
func (s *Server) Stop() { s.Server.Close() }

// Restart starts the stopped server again on the same address and files,
// with the same identity.
func (s *Server) Restart() {
	s.tb.Helper()
	srv, err := embednats.Start(s.config(s.Server.Addr()))
	if err != nil {
		s.tb.Fatalf("embedded nats restart: %v", err)
	}
	s.Server = srv
}

// ClientTLS is the connection option of a client with identity role/id of
// p that accepts a nats server of p's CA.
func ClientTLS(tb testing.TB, p *pkitest.PKI, role pki.Role, id string) nats.Option {
	tb.Helper()
	return nats.Secure(p.Source(tb, role, id).ClientConfig(pki.AnyOf(pki.NATS)))
}
