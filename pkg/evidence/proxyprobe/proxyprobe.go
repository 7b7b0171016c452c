package proxyprobe

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/styx-inference/styx/pkg/dialguard"
	"github.com/styx-inference/styx/pkg/evidence"
	"github.com/styx-inference/styx/pkg/logging"
)

// Name is the plugin's name and the Source of its evidence.
const Name = "proxyprobe"

// Protocol is a proxy protocol the probe speaks.
type Protocol uint8

// The protocols, named as verdict types.
const (
	HTTP Protocol = iota + 1
	SOCKS5
	SOCKS4
)

func (p Protocol) String() string {
	switch p {
	case HTTP:
		return "HTTP"
	case SOCKS5:
		return "SOCKS5"
	case SOCKS4:
		return "SOCKS4"
	}
	return fmt.Sprintf("Protocol(%d)", uint8(p))
}

// ParseProtocol parses "HTTP", "SOCKS5" or "SOCKS4" (any case).
func ParseProtocol(s string) (Protocol, error) {
	for _, p := range []Protocol{HTTP, SOCKS5, SOCKS4} {
		if strings.EqualFold(s, p.String()) {
			return p, nil
		}
	}
	return 0, fmt.Errorf("proxyprobe: unknown protocol %q (want HTTP, SOCKS5 or SOCKS4)", s)
}

// Defaults.
var (
	// DefaultPorts are common open-proxy ports.
	DefaultPorts = []uint16{80, 1080, 3128, 8000, 8080, 8081, 8118, 8888}
	// DefaultProtocols is the order in which a port is tried. HTTP goes
	// first: a SOCKS server closes at once on "CONNECT", while an HTTP
	// proxy would wait for the end of a line that a SOCKS request lacks.
	DefaultProtocols = []Protocol{HTTP, SOCKS5, SOCKS4}
)

const (
	// DefaultDialTimeout bounds one connect.
	DefaultDialTimeout = 3 * time.Second
	// DefaultHandshakeTimeout bounds one handshake, banner included.
	DefaultHandshakeTimeout = 5 * time.Second
	// DefaultParallel is how many ports of one address are probed at once.
	DefaultParallel = 4
	// MaxBanner is the longest Banner.
	MaxBanner = 256
	// maxResponse bounds what one attempt reads (the HTTP response head,
	// a SOCKS reply, and the banner).
	maxResponse = 16 << 10
	// socks4UserID is the SOCKS4 USERID field.
	socks4UserID = "styx"
)

// ErrDisabled is returned by New unless Config.Enabled is set.
var ErrDisabled = errors.New("proxyprobe: the open-proxy probe is off (set Enabled to turn it on)")

// Config configures a Probe.
type Config struct {
	// Enabled must be true: the probe is off unless an operator turns it on.
	Enabled bool
	// Dialer opens every connection, after its guard allowed the address;
	// required.
	Dialer *dialguard.Dialer
	// Target is where proxies are asked to connect: a host the operator
	// controls; required. SOCKS4 needs an IPv4 target.
	Target netip.AddrPort
	// Banner, if set, is what Target sends first on every connection; the
	// probe reads it through the tunnel to confirm it (at most MaxBanner
	// bytes).
	Banner []byte
	// Ports are probed on every address; nil means DefaultPorts.
	Ports []uint16
	// Protocols are tried on each port in this order; nil means
	// DefaultProtocols.
	Protocols []Protocol
	// DialTimeout bounds one connect; 0 means DefaultDialTimeout.
	DialTimeout time.Duration
	// HandshakeTimeout bounds one handshake after connect, banner
	// included; 0 means DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// Parallel is how many ports of one address are probed at once; 0
	// means DefaultParallel.
	Parallel int
}

// Validate reports a configuration error; ErrDisabled if not Enabled.
func (c Config) Validate() error {
	if !c.Enabled {
		return ErrDisabled
	}
	switch {
	case c.Dialer == nil:
		return errors.New("proxyprobe: nil dialer")
	case !c.Target.IsValid() || c.Target.Port() == 0 || c.Target.Addr().IsUnspecified():
		return fmt.Errorf("proxyprobe: target %v, want ip:port", c.Target)
	case len(c.Banner) > MaxBanner:
		return fmt.Errorf("proxyprobe: banner of %d bytes, want at most %d", len(c.Banner), MaxBanner)
	case c.DialTimeout < 0 || c.HandshakeTimeout < 0:
		return fmt.Errorf("proxyprobe: negative timeout (dial %s, handshake %s)", c.DialTimeout, c.HandshakeTimeout)
	case c.Parallel < 0:
		return fmt.Errorf("proxyprobe: parallel %d, want >= 0", c.Parallel)
	case c.Ports != nil && len(c.Ports) == 0:
		return errors.New("proxyprobe: empty port list")
	case c.Protocols != nil && len(c.Protocols) == 0:
		return errors.New("proxyprobe: empty protocol list")
	}
	seenPort := map[uint16]bool{}
	for _, p := range c.Ports {
		if p == 0 || seenPort[p] {
			return fmt.Errorf("proxyprobe: port %d is zero or listed twice", p)
		}
		seenPort[p] = true
	}
	seenProto := map[Protocol]bool{}
	for _, p := range c.Protocols {
		if p < HTTP || p > SOCKS4 || seenProto[p] {
			return fmt.Errorf("proxyprobe: protocol %v is unknown or listed twice", p)
		}
		seenProto[p] = true
		if p == SOCKS4 && !c.Target.Addr().Unmap().Is4() {
			return fmt.Errorf("proxyprobe: SOCKS4 needs an IPv4 target, have %v", c.Target)
		}
	}
	if c.Protocols == nil && !c.Target.Addr().Unmap().Is4() {
		return fmt.Errorf("proxyprobe: the default protocols include SOCKS4, which needs an IPv4 target, have %v", c.Target)
	}
	return nil
}

// Probe is the open-proxy probe. It implements evidence.Plugin and is safe
// for concurrent use.
type Probe struct {
	cfg  Config
	log  zerolog.Logger
	reqs requests
	bufs sync.Pool // *buffers
}

var _ evidence.Plugin = (*Probe)(nil)

// buffers are what one attempt reads with; pooled.
type buffers struct {
	lim     io.LimitedReader
	br      *bufio.Reader
	scratch [maxReply]byte
}

// New returns a Probe, or ErrDisabled if cfg.Enabled is false.
func New(cfg Config, log zerolog.Logger) (*Probe, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Target = netip.AddrPortFrom(cfg.Target.Addr().Unmap(), cfg.Target.Port())
	if cfg.Ports == nil {
		cfg.Ports = DefaultPorts
	}
	if cfg.Protocols == nil {
		cfg.Protocols = DefaultProtocols
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.Parallel == 0 {
		cfg.Parallel = DefaultParallel
	}
	cfg.Ports = append([]uint16(nil), cfg.Ports...)
	cfg.Protocols = append([]Protocol(nil), cfg.Protocols...)
	cfg.Banner = append([]byte(nil), cfg.Banner...)
	p := &Probe{
		cfg:  cfg,
		log:  logging.For(log, Name),
		reqs: encodeRequests(cfg.Target),
	}
	p.bufs.New = func() any { return &buffers{br: bufio.NewReaderSize(nil, 4096)} }
	return p, nil
}

// Name implements evidence.Plugin.
func (p *Probe) Name() string { return Name }

// Log field names of this package.
const (
	fieldPort = "port"
	fieldType = "type"
)

// Examine implements evidence.Plugin: it probes every configured port of
// addr and appends one Evidence per open proxy found, in port order. An
// address the dialer's guard denies is an error matching
// dialguard.ErrDenied, and nothing is dialed. If ctx ends first, what was
// found is returned with ctx's cause.
func (p *Probe) Examine(ctx context.Context, addr netip.Addr, dst []evidence.Evidence) ([]evidence.Evidence, error) {
	if err := p.cfg.Dialer.Guard().Check(addr); err != nil {
		return dst, fmt.Errorf("%s: %w", Name, err)
	}
	addr = addr.Unmap()
	found := make([]Protocol, len(p.cfg.Ports))
	errs := make([]error, len(p.cfg.Ports))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(p.cfg.Parallel, len(p.cfg.Ports)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(p.cfg.Ports) || ctx.Err() != nil {
					return
				}
				found[i], errs[i] = p.probePort(ctx, netip.AddrPortFrom(addr, p.cfg.Ports[i]))
			}
		}()
	}
	wg.Wait()
	for i, proto := range found {
		if proto == 0 {
			continue
		}
		dst = append(dst, evidence.Evidence{Source: Name, Type: proto.String(), Port: p.cfg.Ports[i]})
		p.log.Debug().Stringer(logging.Addr, addr).Uint16(fieldPort, p.cfg.Ports[i]).Stringer(fieldType, proto).Msg("open proxy found")
	}
	if ctx.Err() != nil {
		return dst, fmt.Errorf("%s: %s: %w", Name, addr, context.Cause(ctx))
	}
	if err := errors.Join(errs...); err != nil {
		return dst, fmt.Errorf("%s: %s: %w", Name, addr, err)
	}
	return dst, nil
}

// probePort tries the protocols on one port until one succeeds or the
// port's answer says none will. The error is the guard's refusal only: a
// closed port or a failed handshake is no finding, not an error.
func (p *Probe) probePort(ctx context.Context, ap netip.AddrPort) (Protocol, error) {
	for _, proto := range p.cfg.Protocols {
		out, err := p.attempt(ctx, ap, proto)
		if err != nil {
			return 0, err
		}
		switch out {
		case outOpen:
			return proto, nil
		case outClosed, outHTTP, outSilent:
			return 0, nil
		}
		if ctx.Err() != nil {
			return 0, nil
		}
	}
	return 0, nil
}

// longAgo is a deadline in the past: setting it wakes blocked I/O at once.
var longAgo = time.Unix(1, 0)

// attempt makes one connection and one handshake.
func (p *Probe) attempt(ctx context.Context, ap netip.AddrPort, proto Protocol) (outcome, error) {
	dctx, cancel := context.WithTimeout(ctx, p.cfg.DialTimeout)
	conn, err := p.cfg.Dialer.DialAddrPort(dctx, "tcp", ap)
	cancel()
	if err != nil {
		if errors.Is(err, dialguard.ErrDenied) {
			return 0, err
		}
		return outClosed, nil
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(p.cfg.HandshakeTimeout)); err != nil {
		return outFailed, nil
	}
	// The context's end (its deadline included) interrupts the handshake
	// through this, not through the connection's deadline, so that
	// ctx.Err() is set whenever the context cut an attempt short.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(longAgo) })
	defer stop()

	b := p.bufs.Get().(*buffers)
	defer p.putBuffers(b)
	b.lim = io.LimitedReader{R: conn, N: maxResponse}
	b.br.Reset(&b.lim)
	return p.handshake(conn, b, proto), nil
}

func (p *Probe) putBuffers(b *buffers) {
	b.lim.R = nil
	b.br.Reset(nil)
	p.bufs.Put(b)
}

func (p *Probe) handshake(w io.Writer, b *buffers, proto Protocol) outcome {
	switch proto {
	case HTTP:
		return handshakeHTTP(w, b.br, b.scratch[:], p.reqs.http, p.cfg.Banner)
	case SOCKS5:
		return handshakeSOCKS5(w, b.br, b.scratch[:], p.reqs.socks5Greeting, p.reqs.socks5Connect, p.cfg.Banner)
	case SOCKS4:
		return handshakeSOCKS4(w, b.br, b.scratch[:], p.reqs.socks4Connect, p.cfg.Banner)
	}
	return outFailed
}

// isTimeout reports whether err is a deadline expiry.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, errDeadline) || (errors.As(err, &ne) && ne.Timeout())
}
