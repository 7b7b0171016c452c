package proxyprobe_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/styx-inference/styx/pkg/dialguard"
	"github.com/styx-inference/styx/pkg/evidence"
	"github.com/styx-inference/styx/pkg/evidence/proxyprobe"
)

// Hosts: the proxies and some non-proxies on 127.0.0.1 (Dante listens
// only there), the target on 127.0.0.2, more non-proxies on 127.0.0.3.
const (
	proxyHost  = "127.0.0.1"
	targetHost = "127.0.0.2"
	otherHost  = "127.0.0.3"
)

var banner = []byte("styx-proxyprobe-target v1\n")

// loopbackDialer is the dialer tests use: its guard allows 127.0.0.0/8 and
// nothing else.
func loopbackDialer(t *testing.T) *dialguard.Dialer {
	t.Helper()
	g, err := dialguard.New(dialguard.Config{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	if err != nil {
		t.Fatal(err)
	}
	d, err := dialguard.NewDialer(dialguard.DialerConfig{Guard: g, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func newProbe(t *testing.T, cfg proxyprobe.Config) *proxyprobe.Probe {
	t.Helper()
	cfg.Enabled = true
	if cfg.Dialer == nil {
		cfg.Dialer = loopbackDialer(t)
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = time.Second
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = 500 * time.Millisecond
	}
	p, err := proxyprobe.New(cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func examine(t *testing.T, p evidence.Plugin, host string) []evidence.Evidence {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	got, err := p.Examine(ctx, netip.MustParseAddr(host), nil)
	if err != nil {
		t.Fatalf("Examine(%s): %v", host, err)
	}
	return got
}

func found(typ string, port uint16) evidence.Evidence {
	return evidence.Evidence{Source: proxyprobe.Name, Type: typ, Port: port}
}

func TestFindsOpenProxies(t *testing.T) {
	target := startTarget(t, targetHost, banner)
	httpProxy := startTinyproxy(t, proxyHost)
	socks5 := startMicrosocks(t, proxyHost)
	socks4 := startDante(t, true)
	notFound := serveHTTP(t, proxyHost, 404)
	closer := serve(t, proxyHost, closeAtOnce)
	garbage := serve(t, proxyHost, sendGarbage)
	silent := serve(t, proxyHost, neverAnswer)
	closed := freePort(t, proxyHost)

	t.Run("each alone", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			port uint16
			want string
		}{
			{"tinyproxy", httpProxy, "HTTP"},
			{"microsocks", socks5, "SOCKS5"},
			{"dante socks4 only", socks4, "SOCKS4"},
		} {
			p := newProbe(t, proxyprobe.Config{Target: target, Banner: banner, Ports: []uint16{tc.port}})
			got := examine(t, p, proxyHost)
			if want := []evidence.Evidence{found(tc.want, tc.port)}; !reflect.DeepEqual(got, want) {
				t.Errorf("%s: found %v, want %v", tc.name, got, want)
			}
		}
	})

	t.Run("among non-proxies on one address", func(t *testing.T) {
		p := newProbe(t, proxyprobe.Config{
			Target: target, Banner: banner,
			Ports: []uint16{notFound.port, httpProxy, closer.port, socks5, garbage.port, socks4, silent.port, closed},
		})
		got := examine(t, p, proxyHost)
		want := []evidence.Evidence{found("HTTP", httpProxy), found("SOCKS5", socks5), found("SOCKS4", socks4)}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("found %v, want %v", got, want)
		}
		if e, ok := evidence.Typed(got); !ok || e.Type != "HTTP" || e.Port != httpProxy {
			t.Fatalf("Typed = %v %v, want the HTTP proxy (first port)", e, ok)
		}
		if s := got[1].String(); s != "proxyprobe:SOCKS5:"+itoa(socks5) {
			t.Fatalf("evidence string %q", s)
		}
	})
}

func itoa(p uint16) string { return strconv.Itoa(int(p)) }

func TestFindsNothingOnNonProxies(t *testing.T) {
	target := startTarget(t, targetHost, banner)
	servers := map[string]*server{
		"http 404":    serveHTTP(t, otherHost, 404),
		"http 400":    serveHTTP(t, otherHost, 400),
		"closes":      serve(t, otherHost, closeAtOnce),
		"garbage":     serve(t, otherHost, sendGarbage),
		"silent":      serve(t, otherHost, neverAnswer),
		"liar HTTP":   serve(t, otherHost, liarHTTP),
		"liar SOCKS5": serve(t, otherHost, liarSOCKS5),
		"liar SOCKS4": serve(t, otherHost, liarSOCKS4),
		"closed port": {port: freePort(t, otherHost)},
	}
	var ports []uint16
	for _, s := range servers {
		ports = append(ports, s.port)
	}
	p := newProbe(t, proxyprobe.Config{Target: target, Banner: banner, Ports: ports, HandshakeTimeout: 300 * time.Millisecond, Parallel: len(ports)})
	start := time.Now()
	if got := examine(t, p, otherHost); len(got) != 0 {
		t.Fatalf("found %v on non-proxies", got)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %s", d)
	}
	// A port that answered as an HTTP server, or stayed silent, is not
	// tried with the SOCKS handshakes.
	for _, name := range []string{"http 404", "http 400", "silent"} {
		if n := servers[name].accepted.Load(); n != 1 {
			t.Errorf("%s: %d connections, want 1", name, n)
		}
	}
	// The others got every protocol.
	for _, name := range []string{"closes", "garbage", "liar SOCKS5", "liar SOCKS4"} {
		if n := servers[name].accepted.Load(); n != 3 {
			t.Errorf("%s: %d connections, want 3", name, n)
		}
	}
	// The HTTP liar's 200 is not trusted (wrong banner); it then stays
	// silent on the SOCKS5 greeting, waiting for the end of a line.
	if n := servers["liar HTTP"].accepted.Load(); n != 2 {
		t.Errorf("liar HTTP: %d connections, want 2", n)
	}
}

func TestWithoutBannerA200IsTrusted(t *testing.T) {
	target := startTarget(t, targetHost, banner)
	httpProxy := startTinyproxy(t, proxyHost)
	liar := serve(t, otherHost, liarHTTP)
	p := newProbe(t, proxyprobe.Config{Target: target, Ports: []uint16{httpProxy}})
	if got, want := examine(t, p, proxyHost), []evidence.Evidence{found("HTTP", httpProxy)}; !reflect.DeepEqual(got, want) {
		t.Fatalf("found %v, want %v", got, want)
	}
	// The documented cost of no banner: a server answering 200 to
	// anything looks like a proxy.
	p = newProbe(t, proxyprobe.Config{Target: target, Ports: []uint16{liar.port}})
	if got, want := examine(t, p, otherHost), []evidence.Evidence{found("HTTP", liar.port)}; !reflect.DeepEqual(got, want) {
		t.Fatalf("found %v, want %v", got, want)
	}
}

func TestProtocolOrder(t *testing.T) {
	// Dante without restriction speaks SOCKS4 and SOCKS5: the first
	// protocol in the order that succeeds is reported.
	target := startTarget(t, targetHost, banner)
	both := startDante(t, false)
	for _, tc := range []struct {
		order []proxyprobe.Protocol
		want  string
	}{
		{nil, "SOCKS5"},
		{[]proxyprobe.Protocol{proxyprobe.SOCKS4, proxyprobe.SOCKS5}, "SOCKS4"},
		{[]proxyprobe.Protocol{proxyprobe.SOCKS4}, "SOCKS4"},
	} {
		p := newProbe(t, proxyprobe.Config{Target: target, Banner: banner, Ports: []uint16{both}, Protocols: tc.order})
		if got, want := examine(t, p, proxyHost), []evidence.Evidence{found(tc.want, both)}; !reflect.DeepEqual(got, want) {
			t.Errorf("order %v: found %v, want %v", tc.order, got, want)
		}
	}
	// A SOCKS proxy is not found when its protocol is not asked for.
	socks5 := startMicrosocks(t, proxyHost)
	p := newProbe(t, proxyprobe.Config{Target: target, Banner: banner, Ports: []uint16{socks5}, Protocols: []proxyprobe.Protocol{proxyprobe.HTTP, proxyprobe.SOCKS4}})
	if got := examine(t, p, proxyHost); len(got) != 0 {
		t.Errorf("found %v with SOCKS5 not asked for", got)
	}
}

func TestSilentPortTimesOut(t *testing.T) {
	target := startTarget(t, targetHost, banner)
	silent := serve(t, otherHost, neverAnswer)
	p := newProbe(t, proxyprobe.Config{Target: target, Banner: banner, Ports: []uint16{silent.port}, HandshakeTimeout: 300 * time.Millisecond})
	start := time.Now()
	if got := examine(t, p, otherHost); len(got) != 0 {
		t.Fatalf("found %v", got)
	}
	if d := time.Since(start); d < 300*time.Millisecond || d > 3*time.Second {
		t.Fatalf("returned after %s, want about the 300ms handshake timeout", d)
	}

	// The caller's deadline cuts a longer handshake timeout short.
	p = newProbe(t, proxyprobe.Config{Target: target, Banner: banner, Ports: []uint16{silent.port}, HandshakeTimeout: time.Minute})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start = time.Now()
	if _, err := p.Examine(ctx, netip.MustParseAddr(otherHost), nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Examine = %v, want the context's deadline", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("returned after %s, want about 200ms", d)
	}

	// Cancellation too.
	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	if _, err := p.Examine(ctx, netip.MustParseAddr(otherHost), nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("Examine = %v, want context.Canceled", err)
	}
}

// mustNotDial fails the test if the probe's dialer ever reaches it.
func mustNotDial(t *testing.T) dialguard.DialFunc {
	return func(_ context.Context, network, address string) (net.Conn, error) {
		t.Errorf("dial %s %s reached the underlying dialer", network, address)
		return nil, errors.New("must not dial")
	}
}

func TestGuardRefusesBeforeDialing(t *testing.T) {
	target := netip.MustParseAddrPort("127.0.0.2:7") // never reached: nothing is dialed
	newDialer := func(allow []netip.Prefix) *dialguard.Dialer {
		g, err := dialguard.New(dialguard.Config{Allow: allow})
		if err != nil {
			t.Fatal(err)
		}
		d, err := dialguard.NewDialer(dialguard.DialerConfig{Guard: g, Dial: mustNotDial(t)})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	loopbackOnly := newDialer([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")})
	defaults := newDialer(nil)
	for _, tc := range []struct {
		dialer *dialguard.Dialer
		addr   string
	}{
		{loopbackOnly, "::ffff:10.0.0.1"},
		{loopbackOnly, "169.254.169.254"},
		{loopbackOnly, "100.64.0.1"},
		{loopbackOnly, "10.0.0.1"},
		{loopbackOnly, "fe80::1"},
		{loopbackOnly, "::1"},
		{loopbackOnly, "192.0.2.1"},
		{loopbackOnly, "8.8.8.8"}, // public, but not allowed in tests
		{defaults, "127.0.0.1"},   // loopback is denied unless allowed
		{defaults, "::ffff:127.0.0.1"},
		{defaults, "::1"},
		{defaults, "::ffff:10.0.0.1"},
		{defaults, "169.254.169.254"},
		{defaults, "100.64.0.1"},
		{defaults, "fe80::1"},
		{defaults, "fd00:ec2::254"},
	} {
		p := newProbe(t, proxyprobe.Config{Dialer: tc.dialer, Target: target, Ports: []uint16{80, 1080, 3128}})
		got, err := p.Examine(context.Background(), netip.MustParseAddr(tc.addr), nil)
		if !errors.Is(err, dialguard.ErrDenied) || len(got) != 0 {
			t.Errorf("Examine(%s) = %v, %v; want ErrDenied and nothing", tc.addr, got, err)
		}
	}
}

func TestOffByDefault(t *testing.T) {
	d := loopbackDialer(t)
	target := netip.MustParseAddrPort("127.0.0.2:7")
	if _, err := proxyprobe.New(proxyprobe.Config{}, zerolog.Nop()); !errors.Is(err, proxyprobe.ErrDisabled) {
		t.Fatalf("New(zero Config) = %v, want ErrDisabled", err)
	}
	if _, err := proxyprobe.New(proxyprobe.Config{Dialer: d, Target: target}, zerolog.Nop()); !errors.Is(err, proxyprobe.ErrDisabled) {
		t.Fatalf("New without Enabled = %v, want ErrDisabled", err)
	}
	ok := proxyprobe.Config{Enabled: true, Dialer: d, Target: target}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mutate := range map[string]func(*proxyprobe.Config){
		"no dialer":         func(c *proxyprobe.Config) { c.Dialer = nil },
		"no target":         func(c *proxyprobe.Config) { c.Target = netip.AddrPort{} },
		"target port 0":     func(c *proxyprobe.Config) { c.Target = netip.MustParseAddrPort("127.0.0.2:0") },
		"unspecified":       func(c *proxyprobe.Config) { c.Target = netip.MustParseAddrPort("0.0.0.0:7") },
		"IPv6 with SOCKS4":  func(c *proxyprobe.Config) { c.Target = netip.MustParseAddrPort("[2001:db8::1]:7") },
		"long banner":       func(c *proxyprobe.Config) { c.Banner = make([]byte, proxyprobe.MaxBanner+1) },
		"empty ports":       func(c *proxyprobe.Config) { c.Ports = []uint16{} },
		"port 0":            func(c *proxyprobe.Config) { c.Ports = []uint16{0} },
		"duplicate port":    func(c *proxyprobe.Config) { c.Ports = []uint16{80, 80} },
		"empty protocols":   func(c *proxyprobe.Config) { c.Protocols = []proxyprobe.Protocol{} },
		"unknown protocol":  func(c *proxyprobe.Config) { c.Protocols = []proxyprobe.Protocol{9} },
		"duplicate proto":   func(c *proxyprobe.Config) { c.Protocols = []proxyprobe.Protocol{proxyprobe.HTTP, proxyprobe.HTTP} },
		"negative timeout":  func(c *proxyprobe.Config) { c.HandshakeTimeout = -1 },
		"negative parallel": func(c *proxyprobe.Config) { c.Parallel = -1 },
	} {
		c := ok
		mutate(&c)
		if _, err := proxyprobe.New(c, zerolog.Nop()); err == nil {
			t.Errorf("%s: New accepted %+v", name, c)
		}
	}
	v6 := ok
	v6.Target = netip.MustParseAddrPort("[2001:db8::1]:7")
	v6.Protocols = []proxyprobe.Protocol{proxyprobe.HTTP, proxyprobe.SOCKS5}
	if _, err := proxyprobe.New(v6, zerolog.Nop()); err != nil {
		t.Errorf("IPv6 target without SOCKS4: %v", err)
	}
}

func TestParseProtocol(t *testing.T) {
	for _, p := range []proxyprobe.Protocol{proxyprobe.HTTP, proxyprobe.SOCKS5, proxyprobe.SOCKS4} {
		for _, s := range []string{p.String(), "socks5"} {
			got, err := proxyprobe.ParseProtocol(s)
			if s == p.String() && (err != nil || got != p) {
				t.Errorf("ParseProtocol(%q) = %v, %v", s, got, err)
			}
		}
	}
	if _, err := proxyprobe.ParseProtocol("SOCKS6"); err == nil {
		t.Error("ParseProtocol(SOCKS6) accepted")
	}
}

func TestRunnerAroundProbe(t *testing.T) {
	target := startTarget(t, targetHost, banner)
	socks5 := startMicrosocks(t, proxyHost)
	silent := serve(t, otherHost, neverAnswer)
	newRunner := func(ports ...uint16) *evidence.Runner {
		probe := newProbe(t, proxyprobe.Config{Target: target, Banner: banner, Ports: ports, HandshakeTimeout: time.Minute})
		r, err := evidence.NewRunner(evidence.Config{
			Plugin:      probe,
			Concurrency: evidence.CommanderConfig{Min: 1, Max: 4},
			Rate:        50,
			Burst:       2,
			CallTimeout: 300 * time.Millisecond,
		}, zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	r := newRunner(socks5)
	got, err := r.Examine(context.Background(), netip.MustParseAddr(proxyHost), nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := []evidence.Evidence{found("SOCKS5", socks5)}; !reflect.DeepEqual(got, want) {
		t.Fatalf("found %v, want %v", got, want)
	}
	// The silent port holds the handshake past the Runner's call timeout.
	r = newRunner(silent.port)
	start := time.Now()
	if _, err := r.Examine(context.Background(), netip.MustParseAddr(otherHost), nil); !errors.Is(err, evidence.ErrCallTimeout) {
		t.Fatalf("Examine(silent) = %v, want ErrCallTimeout", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("call timeout took %s", d)
	}
	if s := r.Stats(); s.Calls != 1 || s.Timeouts != 1 || s.InFlight != 0 {
		t.Fatalf("stats %+v", s)
	}
}
