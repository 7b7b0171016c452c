// Package embednats starts a NATS server with JetStream inside the process:
// the verdict log of `make run` (styx-dev) and of every in-process test.
// Production runs a JetStream cluster of its own (deploy/nats).
//
// Given the server's identity (Config.Source, role nats), the server
// requires mutual TLS and gives each client its role's permissions
// (package natsauth); without one it serves plaintext to anyone.
package embednats

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/rs/zerolog"

	"github.com/styx-inference/styx/pkg/natsauth"
	"github.com/styx-inference/styx/pkg/pki"
)

// Config configures an embedded server.
type Config struct {
	// Dir holds JetStream's files; it is created when missing.
	Dir string
	// Addr is host:port for clients; "127.0.0.1:0" picks a free port.
	Addr string
	// Logs enables the server's own logs on stderr (quiet by default).
	Logs bool
	// Source is the server's identity (role nats). With it, clients must
	// connect over TLS with a certificate of its CA and get their role's
	// permissions; without it, the server is plaintext and open.
	Source *pki.Source
	// Log receives the refused clients (zero value: discarded).
	Log zerolog.Logger
}

// Validate reports a configuration error.
func (c Config) Validate() error {
	if c.Dir == "" {
		return errors.New("embednats: empty data dir")
	}
	if c.Addr == "" {
		return errors.New("embednats: empty client address")
	}
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return fmt.Errorf("embednats: client address: %w", err)
	}
	if c.Source != nil && c.Source.Identity().Role != pki.NATS {
		return fmt.Errorf("embednats: server identity %s, want role %s", c.Source.Identity(), pki.NATS)
	}
	return nil
}

// Server is a running embedded NATS server with JetStream.
type Server struct {
	s    *server.Server
	auth *natsauth.Auth
	addr string
	url  string
}

// Start starts the server and waits until it accepts clients (up to 30 s).
func Start(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	host, portStr, _ := net.SplitHostPort(cfg.Addr)
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("embednats: client port %q: %w", portStr, err)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("embednats: %w", err)
	}
	opts := &server.Options{
		ServerName: "styx-dev",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   cfg.Dir,
		NoSigs:     true,
		NoLog:      !cfg.Logs,
	}
	var auth *natsauth.Auth
	if cfg.Source != nil {
		if auth, err = natsauth.New(cfg.Source, cfg.Log); err != nil {
			return nil, fmt.Errorf("embednats: %w", err)
		}
		auth.Configure(opts)
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embednats: %w", err)
	}
	if cfg.Logs {
		s.ConfigureLogger()
	}
	if auth != nil {
		var next server.Logger
		if cfg.Logs {
			next = s.Logger()
		}
		auth.SetLogger(s, next, false, false, false)
	}
	go s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		s.Shutdown()
		s.WaitForShutdown()
		return nil, errors.New("embednats: not ready after 30 s")
	}
	return &Server{s: s, auth: auth, addr: s.Addr().String(), url: s.ClientURL()}, nil
}

// Auth is the server's authority over clients (its refusal counters), or
// nil for a plaintext server.
func (s *Server) Auth() *natsauth.Auth { return s.auth }

// TLS reports whether clients must connect with mutual TLS.
func (s *Server) TLS() bool { return s.auth != nil }

// URL is the client URL: nats://host:port, or tls://host:port when
// clients must use TLS.
func (s *Server) URL() string { return s.url }

// Addr is the bound client address (host:port); it stays known after
// Close, so that a test can start a server on it again.
func (s *Server) Addr() string { return s.addr }

// Close stops the server and waits for it to end.
func (s *Server) Close() {
	s.s.Shutdown()
	s.s.WaitForShutdown()
}
