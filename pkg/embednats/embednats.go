// Package embednats starts a NATS server with JetStream inside the process:
// the verdict log of `make run` (styx-dev) and of every in-process test.
// Production runs a JetStream cluster of its own (deploy/nats).
package embednats

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Config configures an embedded server.
type Config struct {
	// Dir holds JetStream's files; it is created when missing.
	Dir string
	// Addr is host:port for clients; "127.0.0.1:0" picks a free port.
	Addr string
	// Logs enables the server's own logs on stderr (quiet by default).
	Logs bool
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
	return nil
}

// Server is a running embedded NATS server with JetStream.
type Server struct {
	s    *server.Server
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
	s, err := server.NewServer(&server.Options{
		ServerName: "styx-dev",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   cfg.Dir,
		NoSigs:     true,
		NoLog:      !cfg.Logs,
	})
	if err != nil {
		return nil, fmt.Errorf("embednats: %w", err)
	}
	if cfg.Logs {
		s.ConfigureLogger()
	}
	go s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		s.Shutdown()
		s.WaitForShutdown()
		return nil, errors.New("embednats: not ready after 30 s")
	}
	return &Server{s: s, addr: s.Addr().String(), url: s.ClientURL()}, nil
}

// URL is the client URL (nats://host:port).
func (s *Server) URL() string { return s.url }

// Addr is the bound client address (host:port); it stays known after
// Close, so that a test can start a server on it again.
func (s *Server) Addr() string { return s.addr }

// Close stops the server and waits for it to end.
func (s *Server) Close() {
	s.s.Shutdown()
	s.s.WaitForShutdown()
}
