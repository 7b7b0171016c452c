// Package embedetcd starts a single-member etcd inside the process: the
// default for `make run` and the etcd every in-process test uses.
package embedetcd

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Config configures an embedded etcd.
type Config struct {
	// Dir holds the data; it is created when missing.
	Dir string
	// ClientAddr is host:port for clients; "127.0.0.1:0" picks a free port.
	ClientAddr string
	// PeerAddr is host:port for peers; "127.0.0.1:0" picks a free port.
	PeerAddr string
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
}

// Start starts etcd and waits until it serves (up to 30 s).
func Start(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.PeerAddr == "" {
		cfg.PeerAddr = "127.0.0.1:0"
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("embedetcd: %w", err)
	}
	ec := embed.NewConfig()
	ec.Name = "styx-dev"
	ec.Dir = cfg.Dir
	cu, err := url.Parse("http://" + cfg.ClientAddr)
	if err != nil {
		return nil, fmt.Errorf("embedetcd: client address: %w", err)
	}
	pu, err := url.Parse("http://" + cfg.PeerAddr)
	if err != nil {
		return nil, fmt.Errorf("embedetcd: peer address: %w", err)
	}
	ec.ListenClientUrls = []url.URL{*cu}
	ec.AdvertiseClientUrls = []url.URL{*cu}
	ec.ListenPeerUrls = []url.URL{*pu}
	ec.AdvertisePeerUrls = []url.URL{*pu}
	ec.InitialCluster = ec.Name + "=" + pu.String()
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
	return &Server{e: e, endpoint: e.Clients[0].Addr().String()}, nil
}

// Endpoint is the host:port clients dial.
func (s *Server) Endpoint() string { return s.endpoint }

// Client returns a new client for this server; the caller closes it.
func (s *Server) Client() (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints:   []string{s.endpoint},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
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
