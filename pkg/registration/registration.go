// Package registration keeps a key in etcd alive on a lease for as long as a
// process runs. When the keep-alive channel closes (the lease expired or the
// connection was lost for longer than its TTL) the lease is gone: the
// registrar calls OnLost, grants a new lease and registers again. Run revokes
// the lease on the way out, so a clean stop leaves the keyspace at once.
package registration

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/styx-inference/styx/pkg/logging"
)

// Config configures a Registrar.
type Config struct {
	Client *clientv3.Client
	Key    string
	// TTL of the lease; etcd rounds it to whole seconds (minimum 1 s).
	TTL time.Duration
	// Value returns the current value to store; called at every
	// (re-)registration and by Refresh.
	Value func() (string, error)
	// OnLost is called (from Run's goroutine) when a lease was lost, before
	// re-registering. In-flight work tied to the old lease must be treated
	// as lost. May be nil.
	OnLost func()
	// OnRegistered is called after each successful registration. May be nil.
	OnRegistered func(lease clientv3.LeaseID)
	// RetryInterval between failed attempts; default 500 ms.
	RetryInterval time.Duration
}

// Validate reports a configuration error.
func (c Config) Validate() error {
	switch {
	case c.Client == nil:
		return errors.New("registration: nil etcd client")
	case c.Key == "":
		return errors.New("registration: empty key")
	case c.TTL < time.Second:
		return fmt.Errorf("registration: ttl %s below 1s", c.TTL)
	case c.Value == nil:
		return errors.New("registration: nil Value func")
	}
	return nil
}

// Registrar keeps one key registered.
type Registrar struct {
	cfg Config
	log zerolog.Logger

	mu    sync.Mutex
	lease clientv3.LeaseID
}

// New returns a Registrar; call Run to register.
func New(cfg Config, log zerolog.Logger) (*Registrar, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = 500 * time.Millisecond
	}
	return &Registrar{cfg: cfg, log: logging.For(log, "registration").With().Str("key", cfg.Key).Logger()}, nil
}

// Lease returns the current lease, or 0 when not registered.
func (r *Registrar) Lease() clientv3.LeaseID {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lease
}

// Refresh writes the current value again under the current lease.
func (r *Registrar) Refresh(ctx context.Context) error {
	lease := r.Lease()
	if lease == 0 {
		return errors.New("not registered")
	}
	v, err := r.cfg.Value()
	if err != nil {
		return fmt.Errorf("registration value: %w", err)
	}
	if _, err := r.cfg.Client.Put(ctx, r.cfg.Key, v, clientv3.WithLease(lease)); err != nil {
		return fmt.Errorf("refresh %s: %w", r.cfg.Key, err)
	}
	return nil
}

// Run registers and keeps the registration alive until ctx ends, then
// revokes the lease (bounded by one TTL) and returns nil.
func (r *Registrar) Run(ctx context.Context) error {
	first := true
	for {
		if !first && r.cfg.OnLost != nil {
			r.cfg.OnLost()
		}
		first = false
		ka, err := r.register(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			r.log.Warn().Err(err).Msg("register failed, retrying")
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(r.cfg.RetryInterval):
			}
			first = true // no lease was held: nothing lost
			continue
		}
		for range ka {
		}
		// The keep-alive channel closed: either ctx ended or the lease is gone.
		lease := r.Lease()
		r.mu.Lock()
		r.lease = 0
		r.mu.Unlock()
		if ctx.Err() != nil {
			r.revoke(lease)
			return nil
		}
		r.log.Warn().Int64(logging.Lease, int64(lease)).Msg("lease lost, registering again")
	}
}

func (r *Registrar) register(ctx context.Context) (<-chan *clientv3.LeaseKeepAliveResponse, error) {
	ttl := int64(r.cfg.TTL / time.Second)
	gctx, cancel := context.WithTimeout(ctx, r.cfg.TTL)
	defer cancel()
	g, err := r.cfg.Client.Grant(gctx, ttl)
	if err != nil {
		return nil, fmt.Errorf("grant lease: %w", err)
	}
	v, err := r.cfg.Value()
	if err != nil {
		return nil, fmt.Errorf("registration value: %w", err)
	}
	if _, err := r.cfg.Client.Put(gctx, r.cfg.Key, v, clientv3.WithLease(g.ID)); err != nil {
		return nil, fmt.Errorf("put %s: %w", r.cfg.Key, err)
	}
	ka, err := r.cfg.Client.KeepAlive(ctx, g.ID)
	if err != nil {
		return nil, fmt.Errorf("keep alive: %w", err)
	}
	r.mu.Lock()
	r.lease = g.ID
	r.mu.Unlock()
	r.log.Info().Int64(logging.Lease, int64(g.ID)).Int64("ttl_s", ttl).Msg("registered")
	if r.cfg.OnRegistered != nil {
		r.cfg.OnRegistered(g.ID)
	}
	return ka, nil
}

func (r *Registrar) revoke(lease clientv3.LeaseID) {
	if lease == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.TTL)
	defer cancel()
	if _, err := r.cfg.Client.Revoke(ctx, lease); err != nil {
		r.log.Warn().Err(err).Msg("revoke lease")
		return
	}
	r.log.Info().Int64(logging.Lease, int64(lease)).Msg("lease revoked")
}

// Advertise is the address to publish for a bound one: the bound address,
// with host in place of an unspecified IP (0.0.0.0, ::), which no peer could
// dial. In a container the host name is what its peers resolve.
func Advertise(bound, host string) string {
	h, port, err := net.SplitHostPort(bound)
	if err != nil {
		return bound
	}
	if ip := net.ParseIP(h); ip != nil && ip.IsUnspecified() && host != "" {
		return net.JoinHostPort(host, port)
	}
	return bound
}
