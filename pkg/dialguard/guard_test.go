package dialguard_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/styx-inference/styx/pkg/dialguard"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}

func newGuard(t *testing.T, cfg dialguard.Config) *dialguard.Guard {
	t.Helper()
	g, err := dialguard.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// deniedByDefault lists addresses the default deny-list must refuse, with
// the reason the guard should give.
var deniedByDefault = []struct{ addr, reason string }{
	{"10.0.0.1", "private"},
	{"::ffff:10.0.0.1", "private"},
	{"172.16.0.1", "private"},
	{"172.31.255.255", "private"},
	{"192.168.1.1", "private"},
	{"::ffff:192.168.1.1", "private"},
	{"100.64.0.1", "CGNAT"},
	{"100.127.255.255", "CGNAT"},
	{"169.254.169.254", "cloud metadata"},
	{"::ffff:169.254.169.254", "cloud metadata"},
	{"169.254.1.1", "link-local"},
	{"127.0.0.1", "loopback"},
	{"127.255.255.254", "loopback"},
	{"::ffff:127.0.0.1", "loopback"},
	{"0.0.0.0", "unspecified"},
	{"0.1.2.3", "this network"},
	{"224.0.0.1", "multicast"},
	{"239.255.255.250", "multicast"},
	{"240.0.0.1", "reserved"},
	{"255.255.255.255", "broadcast"},
	{"192.0.0.8", "IETF"},
	{"192.0.2.1", "documentation"},
	{"198.51.100.7", "documentation"},
	{"203.0.113.7", "documentation"},
	{"198.18.0.1", "benchmarking"},
	{"192.88.99.1", "6to4"},
	{"::", "unspecified"},
	{"::1", "loopback"},
	{"::10.0.0.1", "IPv4-compatible"},
	{"fe80::1", "link-local"},
	{"fe80::1%eth0", "link-local"},
	{"fec0::1", "site-local"},
	{"fc00::1", "unique local"},
	{"fd12:3456::1", "unique local"},
	{"fd00:ec2::254", "cloud metadata"},
	{"ff02::1", "multicast"},
	{"ff05::1:3", "multicast"},
	{"2001:db8::1", "documentation"},
	{"3fff::1", "documentation"},
	{"2001::1", "Teredo"},
	{"2002:a00:1::1", "6to4"},
	{"64:ff9b::a00:1", "reserved"},
	{"64:ff9b:1::1", "NAT64"},
	{"100::1", "discard-only"},
	{"4000::1", "reserved"},
	{"e000::1", "reserved"},
}

func TestDefaultDenyList(t *testing.T) {
	g := newGuard(t, dialguard.Config{})
	for _, tc := range deniedByDefault {
		err := g.Check(netip.MustParseAddr(tc.addr))
		var de *dialguard.DeniedError
		if !errors.As(err, &de) || !errors.Is(err, dialguard.ErrDenied) {
			t.Errorf("Check(%s) = %v, want a denial", tc.addr, err)
			continue
		}
		if !strings.Contains(err.Error(), tc.reason) {
			t.Errorf("Check(%s) = %q, want the reason to mention %q", tc.addr, err, tc.reason)
		}
	}
}

func TestPublicAddressesPermittedWithoutAllowList(t *testing.T) {
	// Judged only: nothing is dialed.
	g := newGuard(t, dialguard.Config{})
	for _, s := range []string{"1.1.1.1", "8.8.8.8", "100.63.255.255", "100.128.0.1", "172.32.0.1", "169.255.0.1", "2606:4700::1111", "2a00:1450::1", "::ffff:1.1.1.1"} {
		if err := g.Check(netip.MustParseAddr(s)); err != nil {
			t.Errorf("Check(%s) = %v, want permitted", s, err)
		}
	}
}

func TestAllowListIsExclusive(t *testing.T) {
	g := newGuard(t, dialguard.Config{Allow: loopback})
	for _, s := range []string{"127.0.0.1", "127.1.2.3", "::ffff:127.0.0.1"} {
		if err := g.Check(netip.MustParseAddr(s)); err != nil {
			t.Errorf("Check(%s) = %v, want permitted (loopback allowed)", s, err)
		}
	}
	for _, s := range []string{"1.1.1.1", "2606:4700::1111", "::1", "10.0.0.1", "::ffff:10.0.0.1", "169.254.169.254", "100.64.0.1", "fe80::1"} {
		if err := g.Check(netip.MustParseAddr(s)); !errors.Is(err, dialguard.ErrDenied) {
			t.Errorf("Check(%s) = %v, want denied (only 127.0.0.0/8 allowed)", s, err)
		}
	}
}

func TestLongestPrefixDecides(t *testing.T) {
	tests := []struct {
		name    string
		cfg     dialguard.Config
		addr    string
		allowed bool
	}{
		{"allow opens an equal deny prefix", dialguard.Config{Allow: loopback}, "127.0.0.1", true},
		{"allow opens a wider deny prefix", dialguard.Config{Allow: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}}, "10.1.2.3", true},
		{"allow-list excludes the rest of the deny prefix", dialguard.Config{Allow: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}}, "10.2.0.1", false},
		{"narrower deny wins over a wide allow", dialguard.Config{Allow: []netip.Prefix{netip.MustParsePrefix("169.254.0.0/16")}}, "169.254.169.254", false},
		{"wide allow opens the rest", dialguard.Config{Allow: []netip.Prefix{netip.MustParsePrefix("169.254.0.0/16")}}, "169.254.1.1", true},
		{"allow everything keeps the defaults", dialguard.Config{Allow: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}}, "10.0.0.1", false},
		{"allow everything keeps mapped defaults", dialguard.Config{Allow: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}}, "::ffff:10.0.0.1", false},
		{"allow everything permits public", dialguard.Config{Allow: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}}, "1.1.1.1", true},
		{"configured deny", dialguard.Config{Deny: []netip.Prefix{netip.MustParsePrefix("1.2.3.0/24")}}, "1.2.3.4", false},
		{"configured mapped deny is IPv4", dialguard.Config{Deny: []netip.Prefix{netip.MustParsePrefix("::ffff:1.2.3.0/120")}}, "1.2.3.4", false},
		{"mapped allow is IPv4", dialguard.Config{Allow: []netip.Prefix{netip.MustParsePrefix("::ffff:127.0.0.0/104")}}, "127.0.0.9", true},
		{"NAT64 of a public address", dialguard.Config{Allow: []netip.Prefix{netip.MustParsePrefix("64:ff9b::/96")}}, "64:ff9b::102:304", true},
		{"NAT64 of a private address", dialguard.Config{Allow: []netip.Prefix{netip.MustParsePrefix("64:ff9b::/96")}}, "64:ff9b::a00:1", false},
		{"NAT64 of metadata", dialguard.Config{Allow: []netip.Prefix{netip.MustParsePrefix("64:ff9b::/96")}}, "64:ff9b::a9fe:a9fe", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := newGuard(t, tc.cfg)
			err := g.Check(netip.MustParseAddr(tc.addr))
			if tc.allowed && err != nil {
				t.Fatalf("Check(%s) = %v, want permitted", tc.addr, err)
			}
			if !tc.allowed && !errors.Is(err, dialguard.ErrDenied) {
				t.Fatalf("Check(%s) = %v, want denied", tc.addr, err)
			}
		})
	}
}

func TestInvalidInputRefused(t *testing.T) {
	g := newGuard(t, dialguard.Config{Allow: loopback})
	if err := g.Check(netip.Addr{}); !errors.Is(err, dialguard.ErrDenied) {
		t.Errorf("Check(zero) = %v, want denied", err)
	}
	for _, a := range []string{"", "127.0.0.1", "localhost:80", "[::1", "127.0.0.1:http"} {
		if err := g.Control("tcp", a, nil); !errors.Is(err, dialguard.ErrDenied) {
			t.Errorf("Control(%q) = %v, want denied", a, err)
		}
	}
	if _, err := dialguard.New(dialguard.Config{Allow: []netip.Prefix{{}}}); err == nil {
		t.Error("New accepted an invalid allow prefix")
	}
	if _, err := dialguard.New(dialguard.Config{Deny: []netip.Prefix{{}}}); err == nil {
		t.Error("New accepted an invalid deny prefix")
	}
	if _, err := dialguard.NewDialer(dialguard.DialerConfig{}); err == nil {
		t.Error("NewDialer accepted a nil guard")
	}
}

func TestControlJudgesTheResolvedAddress(t *testing.T) {
	// Control receives the address the socket is about to connect to;
	// calling it directly dials nothing.
	deny := newGuard(t, dialguard.Config{})
	allow := newGuard(t, dialguard.Config{Allow: loopback})
	for _, a := range []string{"[::ffff:10.0.0.1]:80", "169.254.169.254:80", "100.64.0.1:1080", "10.0.0.1:3128", "[fe80::1%eth0]:80", "[::1]:8080", "127.0.0.1:80"} {
		if err := deny.Control("tcp", a, nil); !errors.Is(err, dialguard.ErrDenied) {
			t.Errorf("Control(%s) = %v, want denied", a, err)
		}
	}
	for _, a := range []string{"[::ffff:10.0.0.1]:80", "169.254.169.254:80", "100.64.0.1:1080", "10.0.0.1:3128", "[fe80::1]:80", "[::1]:8080"} {
		if err := allow.Control("tcp", a, nil); !errors.Is(err, dialguard.ErrDenied) {
			t.Errorf("Control(%s) with loopback allowed = %v, want denied", a, err)
		}
	}
	if err := allow.Control("tcp4", "127.0.0.1:80", nil); err != nil {
		t.Errorf("Control(127.0.0.1:80) with loopback allowed = %v", err)
	}
}

// fakeResolver answers from a table and fails the test when asked about a
// name it does not know: no query ever leaves the process.
type fakeResolver struct {
	t     *testing.T
	names map[string][]netip.Addr
}

func (r fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	addrs, ok := r.names[host]
	if !ok {
		r.t.Errorf("unexpected resolution of %q", host)
		return nil, errors.New("unknown name")
	}
	return addrs, nil
}

// mustNotDial is a dial function that fails the test if it is called.
func mustNotDial(t *testing.T) dialguard.DialFunc {
	return func(_ context.Context, network, address string) (net.Conn, error) {
		t.Errorf("dial %s %s reached the underlying dialer", network, address)
		return nil, errors.New("must not dial")
	}
}

var testNames = map[string][]netip.Addr{
	"metadata.test": {netip.MustParseAddr("169.254.169.254")},
	"private.test":  {netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fd00::1")},
	"mapped.test":   {netip.MustParseAddr("::ffff:10.0.0.1")},
	"cgnat.test":    {netip.MustParseAddr("100.64.0.1")},
	"local.test":    {netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")},
}

func TestDialerRefusesBeforeDialing(t *testing.T) {
	addrs := []string{
		"[::ffff:10.0.0.1]:80", "169.254.169.254:80", "100.64.0.1:1080", "10.0.0.1:3128",
		"[fe80::1]:80", "[fe80::1%lo]:80", "[::1]:8080", "127.0.0.1:8080", "192.168.0.1:80", "[fd00:ec2::254]:80",
		"metadata.test:80", "private.test:80", "mapped.test:80", "cgnat.test:1080", "local.test:80",
	}
	for _, allowLoopback := range []bool{false, true} {
		cfg := dialguard.Config{}
		if allowLoopback {
			cfg.Allow = loopback
		}
		d, err := dialguard.NewDialer(dialguard.DialerConfig{
			Guard:    newGuard(t, cfg),
			Resolver: fakeResolver{t, testNames},
			Dial:     mustNotDial(t),
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range addrs {
			if allowLoopback && (strings.HasPrefix(a, "127.") || strings.HasPrefix(a, "local.")) {
				continue
			}
			for _, network := range []string{"tcp", "udp"} {
				conn, err := d.DialContext(context.Background(), network, a)
				if conn != nil {
					conn.Close()
				}
				if !errors.Is(err, dialguard.ErrDenied) {
					t.Errorf("loopback allowed %v: DialContext(%s, %s) = %v, want ErrDenied", allowLoopback, network, a, err)
				}
			}
		}
		for _, a := range []string{"[::ffff:10.0.0.1]:80", "169.254.169.254:80", "[::1]:80"} {
			if _, err := d.DialAddrPort(context.Background(), "tcp", netip.MustParseAddrPort(a)); !errors.Is(err, dialguard.ErrDenied) {
				t.Errorf("DialAddrPort(%s) = %v, want ErrDenied", a, err)
			}
		}
	}
}

func TestDialerTriesOnlyPermittedAddresses(t *testing.T) {
	errFake := errors.New("fake dial")
	var mu sync.Mutex
	var dialed []string
	d, err := dialguard.NewDialer(dialguard.DialerConfig{
		Guard: newGuard(t, dialguard.Config{Allow: loopback}),
		Resolver: fakeResolver{t, map[string][]netip.Addr{
			"mixed.test": {netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("::1"), netip.MustParseAddr("127.0.0.7"), netip.MustParseAddr("169.254.169.254"), netip.MustParseAddr("127.0.0.8")},
		}},
		Dial: func(_ context.Context, network, address string) (net.Conn, error) {
			mu.Lock()
			defer mu.Unlock()
			dialed = append(dialed, network+" "+address)
			return nil, errFake
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.DialContext(context.Background(), "tcp", "mixed.test:1080"); !errors.Is(err, errFake) {
		t.Fatalf("DialContext = %v, want the underlying dial's error", err)
	}
	if got, want := strings.Join(dialed, ","), "tcp 127.0.0.7:1080,tcp 127.0.0.8:1080"; got != want {
		t.Fatalf("dialed %q, want %q (IP literals, permitted only)", got, want)
	}
	if _, err := d.DialContext(context.Background(), "unix", "/tmp/x"); err == nil || errors.Is(err, errFake) {
		t.Fatalf("DialContext(unix) = %v, want an unsupported-network error", err)
	}
}

// listen starts a loopback listener that counts accepted connections.
func listen(t *testing.T) (net.Listener, func() int) {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	accepted := 0
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			accepted++
			mu.Unlock()
			c.Close()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln, func() int {
		mu.Lock()
		defer mu.Unlock()
		return accepted
	}
}

func TestDialerOnLoopback(t *testing.T) {
	ln, accepted := listen(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	// Not allowed: refused, nothing reaches the listener.
	d, err := dialguard.NewDialer(dialguard.DialerConfig{Guard: newGuard(t, dialguard.Config{}), Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.DialContext(ctx, "tcp", ln.Addr().String()); !errors.Is(err, dialguard.ErrDenied) {
		t.Fatalf("DialContext(%s) without allowing loopback = %v, want ErrDenied", ln.Addr(), err)
	}

	// Allowed explicitly: connects through the default net.Dialer.
	d, err = dialguard.NewDialer(dialguard.DialerConfig{Guard: newGuard(t, dialguard.Config{Allow: loopback}), Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := d.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("DialContext(%s) with loopback allowed: %v", ln.Addr(), err)
	}
	conn.Close()
	conn, err = d.DialAddrPort(ctx, "tcp", netip.MustParseAddrPort(ln.Addr().String()))
	if err != nil {
		t.Fatalf("DialAddrPort(%s) with loopback allowed: %v", ln.Addr(), err)
	}
	conn.Close()
	deadline := time.Now().Add(5 * time.Second)
	for accepted() != 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := accepted(); n != 2 {
		t.Fatalf("listener accepted %d connections, want 2 (the refused dial must not connect)", n)
	}
}

func TestControlStopsAPlainNetDialer(t *testing.T) {
	// Code that builds its own net.Dialer with the guard's Control is
	// stopped after resolution, before connect(2).
	ln, accepted := listen(t)
	g := newGuard(t, dialguard.Config{})
	nd := net.Dialer{Timeout: time.Second, Control: g.Control}
	if _, err := nd.DialContext(context.Background(), "tcp", ln.Addr().String()); !errors.Is(err, dialguard.ErrDenied) {
		t.Fatalf("net.Dialer with Control: %v, want ErrDenied", err)
	}
	time.Sleep(50 * time.Millisecond)
	if n := accepted(); n != 0 {
		t.Fatalf("listener accepted %d connections, want 0", n)
	}
}

func TestDefaultDenyCopy(t *testing.T) {
	a := dialguard.DefaultDeny()
	a[0] = netip.MustParsePrefix("1.0.0.0/8")
	if dialguard.DefaultDeny()[0] == a[0] {
		t.Fatal("DefaultDeny returned shared storage")
	}
	g := newGuard(t, dialguard.Config{})
	for _, p := range dialguard.DefaultDeny() {
		if err := g.Check(p.Addr()); !errors.Is(err, dialguard.ErrDenied) {
			t.Errorf("first address of default deny prefix %s permitted", p)
		}
	}
}

// FuzzCheck compares the guard with the standard library's own
// classification: a permitted address is never loopback, private,
// link-local, multicast or unspecified, and with only loopback allowed it
// is always loopback IPv4.
func FuzzCheck(f *testing.F) {
	for _, tc := range deniedByDefault {
		a := netip.MustParseAddr(tc.addr)
		b := a.AsSlice()
		f.Add(b)
	}
	f.Add([]byte{1, 1, 1, 1})
	f.Add([]byte{127, 0, 0, 1})
	def, err := dialguard.New(dialguard.Config{})
	if err != nil {
		f.Fatal(err)
	}
	lo, err := dialguard.New(dialguard.Config{Allow: loopback})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		a, ok := netip.AddrFromSlice(b)
		if err := def.Check(a); err == nil {
			u := a.Unmap()
			if !ok || u.IsLoopback() || u.IsPrivate() || u.IsLinkLocalUnicast() || u.IsLinkLocalMulticast() ||
				u.IsInterfaceLocalMulticast() || u.IsMulticast() || u.IsUnspecified() || !u.IsGlobalUnicast() {
				t.Fatalf("default guard permitted %v", a)
			}
		}
		if err := lo.Check(a); err == nil {
			if u := a.Unmap(); !u.Is4() || !u.IsLoopback() {
				t.Fatalf("loopback-only guard permitted %v", a)
			}
		}
		if err := def.Control("tcp", netip.AddrPortFrom(a, 80).String(), nil); ok && (err == nil) != (def.Check(a) == nil) {
			t.Fatalf("Control and Check disagree on %v", a)
		}
	})
}
