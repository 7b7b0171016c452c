// Package registration keeps a key in etcd for as long as a process runs,
// attached to the lease of a concurrency.Session, one session per lease.
// When the session ends on its own (the lease expired or was revoked, or
// keep-alives failed for longer than its TTL) the lease is gone, and the
// key with it: the registrar calls OnLost, opens a new session and
// registers again. Run closes the session on the way out, which revokes the
// lease, so a clean stop leaves the keyspace at once.
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
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/styx-inference/styx/pkg/logging"
	"github.com/styx-inference/styx/pkg/retry"
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
	// registering again. In-flight work tied to the old lease must be
	// treated as lost. May be nil.
	OnLost func()
	// OnRegistered is called after each successful registration. May be nil.
	OnRegistered func(lease clientv3.LeaseID)
	// RetryInterval is the first wait after a failed attempt (default
	// 500 ms); the waits double up to one TTL while attempts keep failing.
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

	mu   sync.Mutex
	sess *concurrency.Session // nil while not registered
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
	if r.sess == nil {
		return clientv3.NoLease
	}
	return r.sess.Lease()
}

func (r *Registrar) setSession(s *concurrency.Session) {
	r.mu.Lock()
	r.sess = s
	r.mu.Unlock()
}

// Refresh writes the current value again under the current lease.
func (r *Registrar) Refresh(ctx context.Context) error {
	lease := r.Lease()
	if lease == clientv3.NoLease {
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
	bo := retry.NewBackoff(r.cfg.RetryInterval, max(r.cfg.RetryInterval, r.cfg.TTL))
	for {
		sess, err := r.register(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			d := bo.NextBackOff()
			r.log.Warn().Err(err).Dur("retry_in", d).Msg("register failed, retrying")
			if !retry.Sleep(ctx, d) {
				return nil
			}
			continue // no lease was held: nothing lost
		}
		bo.Reset()
		select {
		case <-ctx.Done():
		case <-sess.Done():
		}
		r.setSession(nil)
		if ctx.Err() != nil {
			r.leave(sess)
			return nil
		}
		r.log.Warn().Int64(logging.Lease, int64(sess.Lease())).Msg("lease lost, registering again")
		if r.cfg.OnLost != nil {
			r.cfg.OnLost()
		}
	}
}

// register opens a session on a new lease and writes the key under it.
func (r *Registrar) register(ctx context.Context) (*concurrency.Session, error) {
	ttl := int(r.cfg.TTL / time.Second)
	// ctx and one TTL bound the grant and the writes. The session itself
	// lives on a context that ctx does not end: Close revokes the lease with
	// it once ctx has ended.
	gctx, cancel := context.WithTimeout(ctx, r.cfg.TTL)
	defer cancel()
	g, err := r.cfg.Client.Grant(gctx, int64(ttl))
	if err != nil {
		return nil, fmt.Errorf("grant lease: %w", err)
	}
	sess, err := concurrency.NewSession(r.cfg.Client, concurrency.WithLease(g.ID), concurrency.WithTTL(ttl),
		concurrency.WithContext(context.WithoutCancel(ctx)))
	if err != nil {
		return nil, fmt.Errorf("keep lease alive: %w", err)
	}
	v, err := r.put(gctx, sess.Lease())
	if err != nil {
		// Best effort, within the same bound: an unrevoked lease expires.
		sess.Orphan()
		_, _ = r.cfg.Client.Revoke(gctx, sess.Lease())
		return nil, err
	}
	r.setSession(sess)
	// A caller that changed what Value returns while Lease was still 0
	// could not Refresh: write the value again if it changed meanwhile.
	if now, err := r.cfg.Value(); err == nil && now != v {
		if _, err := r.put(gctx, sess.Lease()); err != nil {
			r.log.Warn().Err(err).Msg("value changed while registering, not rewritten")
		}
	}
	r.log.Info().Int64(logging.Lease, int64(sess.Lease())).Int("ttl_s", ttl).Msg("registered")
	if r.cfg.OnRegistered != nil {
		r.cfg.OnRegistered(sess.Lease())
	}
	return sess, nil
}

// put writes the current value under lease and returns it.
func (r *Registrar) put(ctx context.Context, lease clientv3.LeaseID) (string, error) {
	v, err := r.cfg.Value()
	if err != nil {
		return "", fmt.Errorf("registration value: %w", err)
	}
	if _, err := r.cfg.Client.Put(ctx, r.cfg.Key, v, clientv3.WithLease(lease)); err != nil {
		return "", fmt.Errorf("put %s: %w", r.cfg.Key, err)
	}
	return v, nil
}

// leave closes the session, which revokes its lease (waiting one TTL at
// most), so the key goes at once.
func (r *Registrar) leave(sess *concurrency.Session) {
	if err := sess.Close(); err != nil {
		r.log.Warn().Err(err).Int64(logging.Lease, int64(sess.Lease())).Msg("revoke lease")
		return
	}
	r.log.Info().Int64(logging.Lease, int64(sess.Lease())).Msg("lease revoked")
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
