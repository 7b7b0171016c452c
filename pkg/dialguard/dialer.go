package dialguard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"
)

// Resolver resolves host names; *net.Resolver implements it.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// DialFunc dials one address; (*net.Dialer).DialContext has its shape.
type DialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// DialerConfig configures a Dialer.
type DialerConfig struct {
	// Guard judges every address; required.
	Guard *Guard
	// Resolver resolves host names; nil means net.DefaultResolver.
	Resolver Resolver
	// Dial opens the connection to an address the guard permitted, always
	// given as an IP literal and port. Nil means a net.Dialer with Timeout
	// whose Control runs Guard.Control again before connect(2). A custom
	// Dial (tests) does not get that second check.
	Dial DialFunc
	// Timeout bounds the default net.Dialer's connect; 0 means none beyond
	// the context's deadline.
	Timeout time.Duration
}

// Validate reports a configuration error.
func (c DialerConfig) Validate() error {
	switch {
	case c.Guard == nil:
		return errors.New("dialguard: nil guard")
	case c.Timeout < 0:
		return fmt.Errorf("dialguard: timeout %s, want >= 0", c.Timeout)
	}
	return nil
}

// Dialer opens connections only to addresses its Guard permits. It is safe
// for concurrent use.
type Dialer struct {
	guard    *Guard
	resolver Resolver
	dial     DialFunc
}

// NewDialer returns a Dialer.
func NewDialer(cfg DialerConfig) (*Dialer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := &Dialer{guard: cfg.Guard, resolver: cfg.Resolver, dial: cfg.Dial}
	if d.resolver == nil {
		d.resolver = net.DefaultResolver
	}
	if d.dial == nil {
		nd := &net.Dialer{Timeout: cfg.Timeout, Control: cfg.Guard.Control}
		d.dial = nd.DialContext
	}
	return d, nil
}

// Guard returns the dialer's guard.
func (d *Dialer) Guard() *Guard { return d.guard }

// DialContext connects to address ("host:port") on network ("tcp", "tcp4",
// "tcp6", "udp", "udp4", "udp6"). A host name is resolved first; every
// resolved address is judged, and the permitted ones are tried in order.
// If none is permitted, the error matches ErrDenied and nothing was
// dialed.
func (d *Dialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	family, err := ipNetwork(network)
	if err != nil {
		return nil, err
	}
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, fmt.Errorf("dialguard: dial %s %s: %w", network, address, err)
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return d.dialAddrs(ctx, network, address, port, []netip.Addr{a})
	}
	addrs, err := d.resolver.LookupNetIP(ctx, family, host)
	if err != nil {
		return nil, fmt.Errorf("dialguard: resolve %s: %w", host, err)
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("dialguard: resolve %s: no addresses", host)
	}
	return d.dialAddrs(ctx, network, address, port, addrs)
}

// DialAddrPort connects to ap on network, with no name resolution.
func (d *Dialer) DialAddrPort(ctx context.Context, network string, ap netip.AddrPort) (net.Conn, error) {
	if _, err := ipNetwork(network); err != nil {
		return nil, err
	}
	return d.dialAddrs(ctx, network, ap.String(), strconv.Itoa(int(ap.Port())), []netip.Addr{ap.Addr()})
}

// dialAddrs judges addrs and dials the permitted ones in order.
func (d *Dialer) dialAddrs(ctx context.Context, network, address, port string, addrs []netip.Addr) (net.Conn, error) {
	var denied, last error
	for _, a := range addrs {
		if err := d.guard.Check(a); err != nil {
			if denied == nil {
				denied = err
			}
			continue
		}
		conn, err := d.dial(ctx, network, net.JoinHostPort(a.String(), port))
		if err == nil {
			return conn, nil
		}
		last = err
		if ctx.Err() != nil {
			break
		}
	}
	if last != nil {
		return nil, last
	}
	return nil, fmt.Errorf("dialguard: dial %s %s: %w", network, address, denied)
}

// ipNetwork checks network and returns the resolver network for it.
func ipNetwork(network string) (string, error) {
	switch network {
	case "tcp", "udp":
		return "ip", nil
	case "tcp4", "udp4":
		return "ip4", nil
	case "tcp6", "udp6":
		return "ip6", nil
	}
	return "", fmt.Errorf("dialguard: unsupported network %q", network)
}
