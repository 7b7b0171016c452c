// Package grpcauth puts STYX's identities on gRPC: mutual TLS from a
// pki.Source, and a guard that authorises every call by the caller's role.
// Refusals (a failed handshake, a role not allowed) are logged and counted.
package grpcauth

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/styx-inference/styx/pkg/pki"
)

// Rules maps a service's full name (styx.v1.AdminService) to the roles
// that may call it. A service not listed is refused (default deny).
type Rules map[string][]pki.Role

// Refusal reasons, the label of the refused counter.
const (
	ReasonHandshake = "handshake" // no certificate, foreign CA, expired, plaintext
	ReasonRole      = "role"      // an identity whose role may not call the service
	ReasonIdentity  = "identity"  // a role allowed, but acting as another id
)

// Guard authorises calls and counts refusals.
type Guard struct {
	rules Rules
	log   zerolog.Logger

	mu      sync.Mutex
	refused map[string]uint64 // reason -> count
	lastLog map[string]time.Time
}

// NewGuard returns a guard for rules.
func NewGuard(rules Rules, log zerolog.Logger) *Guard {
	return &Guard{rules: rules, log: log, refused: map[string]uint64{}, lastLog: map[string]time.Time{}}
}

// Refused returns the refusals so far by reason.
func (g *Guard) Refused() map[string]uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make(map[string]uint64, len(g.refused))
	for k, v := range g.refused {
		out[k] = v
	}
	return out
}

// Total is the number of refusals.
func (g *Guard) Total() uint64 {
	var n uint64
	for _, v := range g.Refused() {
		n += v
	}
	return n
}

// Refuse counts and logs a refusal. Logs are limited to one per reason and
// source per second, so a flood of refused peers cannot flood the log;
// the counter counts every one.
func (g *Guard) Refuse(reason, from, what string, err error) {
	g.mu.Lock()
	g.refused[reason]++
	key := reason + "|" + from
	now := time.Now()
	quiet := now.Sub(g.lastLog[key]) < time.Second
	if !quiet {
		// Forget every source when there are too many, before noting
		// this one, so that it stays quiet for its second.
		if len(g.lastLog) >= 4096 {
			clear(g.lastLog)
		}
		g.lastLog[key] = now
	}
	g.mu.Unlock()
	if quiet {
		return
	}
	g.log.Warn().Str("reason", reason).Str("peer", from).Str("call", what).Err(err).Msg("refused an unauthenticated or unauthorised peer")
}

// Identity returns the verified identity of a call's peer (false over a
// plaintext transport).
func Identity(ctx context.Context) (pki.Identity, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return pki.Identity{}, false
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.PeerCertificates) == 0 {
		return pki.Identity{}, false
	}
	id, err := pki.FromCert(ti.State.PeerCertificates[0])
	if err != nil {
		return pki.Identity{}, false
	}
	return id, true
}

// peerHost is the peer's address without its port: a source, for the log
// limit, that a client cannot renew by opening another connection.
func peerHost(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok {
		return hostOf(p.Addr)
	}
	return "?"
}

func service(fullMethod string) string {
	s := strings.TrimPrefix(fullMethod, "/")
	if i := strings.LastIndexByte(s, '/'); i >= 0 {
		return s[:i]
	}
	return s
}

func (g *Guard) authorise(ctx context.Context, fullMethod string) error {
	id, ok := Identity(ctx)
	if !ok {
		err := errors.New("no verified client certificate")
		g.Refuse(ReasonHandshake, peerHost(ctx), fullMethod, err)
		return status.Error(codes.Unauthenticated, "a client certificate of this cluster's CA is required")
	}
	roles, listed := g.rules[service(fullMethod)]
	for _, r := range roles {
		if r == id.Role {
			return nil
		}
	}
	err := fmt.Errorf("%s may not call %s", id, service(fullMethod))
	if !listed {
		err = fmt.Errorf("%s: service %s is not open to any role", id, service(fullMethod))
	}
	g.Refuse(ReasonRole, id.String()+"@"+peerHost(ctx), fullMethod, err)
	return status.Error(codes.PermissionDenied, err.Error())
}

// Unary is the guard as a unary interceptor.
func (g *Guard) Unary() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if err := g.authorise(ctx, info.FullMethod); err != nil {
			return nil, err
		}
		return h(ctx, req)
	}
}

// Stream is the guard as a stream interceptor.
func (g *Guard) Stream() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		if err := g.authorise(ss.Context(), info.FullMethod); err != nil {
			return err
		}
		return h(srv, ss)
	}
}

// ServerOptions are the options of a gRPC server that requires mTLS with
// src's CA and authorises every call with g.
func ServerOptions(src *pki.Source, g *Guard) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.Creds(&countingCreds{TransportCredentials: credentials.NewTLS(src.ServerConfig(nil)), g: g}),
		grpc.ChainUnaryInterceptor(g.Unary()),
		grpc.ChainStreamInterceptor(g.Stream()),
	}
}

// DialOption is the transport of a client that presents src's certificate
// and accepts a server whose identity expect allows.
func DialOption(src *pki.Source, expect pki.Policy) grpc.DialOption {
	return grpc.WithTransportCredentials(credentials.NewTLS(src.ClientConfig(expect)))
}

// countingCreds counts and logs failed server handshakes: a plaintext
// client, no certificate, a foreign CA or an expired certificate.
type countingCreds struct {
	credentials.TransportCredentials
	g *Guard
}

func (c *countingCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	out, ai, err := c.TransportCredentials.ServerHandshake(conn)
	if err != nil {
		c.g.Refuse(ReasonHandshake, hostOf(conn.RemoteAddr()), "tls handshake", err)
	}
	return out, ai, err
}

func (c *countingCreds) Clone() credentials.TransportCredentials {
	return &countingCreds{TransportCredentials: c.TransportCredentials.Clone(), g: c.g}
}

func hostOf(a net.Addr) string {
	if a == nil {
		return "?"
	}
	if h, _, err := net.SplitHostPort(a.String()); err == nil {
		return h
	}
	return a.String()
}

// Register exports the refusals as <prefix>_auth_refused_total{reason}.
func (g *Guard) Register(reg prometheus.Registerer, prefix string) error {
	return reg.Register(g.Collector(prefix))
}

// Collector is the refusals as <prefix>_auth_refused_total{reason}.
func (g *Guard) Collector(prefix string) prometheus.Collector {
	return &collector{g: g, desc: prometheus.NewDesc(prefix+"_auth_refused_total",
		"gRPC peers refused: handshake (no or bad certificate, plaintext), role (identity not allowed on the service), identity (acting as another id).",
		[]string{"reason"}, nil)}
}

type collector struct {
	g    *Guard
	desc *prometheus.Desc
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	r := c.g.Refused()
	for _, reason := range []string{ReasonHandshake, ReasonRole, ReasonIdentity} {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(r[reason]), reason)
	}
}
