// Package natstest starts an embedded NATS server with JetStream for a
// test: on 127.0.0.1:0, in the test's temporary directory, stopped when the
// test ends.
package natstest

import (
	"testing"

	"github.com/styx-inference/styx/pkg/embednats"
)

// Server is a test's JetStream server; Restart stops it and starts it
// again on the same address and files.
type Server struct {
	*embednats.Server
	tb  testing.TB
	dir string
}

// Start starts a server; tb.Cleanup stops it.
func Start(tb testing.TB) *Server {
	tb.Helper()
	s := &Server{tb: tb, dir: tb.TempDir()}
	srv, err := embednats.Start(embednats.Config{Dir: s.dir, Addr: "127.0.0.1:0"})
	if err != nil {
		tb.Fatalf("embedded nats: %v", err)
	}
	s.Server = srv
	tb.Cleanup(func() { s.Server.Close() })
	return s
}

// Stop stops the server (Start again with Restart).
func (s *Server) Stop() { s.Server.Close() }

// Restart starts the stopped server again on the same address and files.
func (s *Server) Restart() {
	s.tb.Helper()
	srv, err := embednats.Start(embednats.Config{Dir: s.dir, Addr: s.Server.Addr()})
	if err != nil {
		s.tb.Fatalf("embedded nats restart: %v", err)
	}
	s.Server = srv
}
