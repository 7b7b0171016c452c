package authlimit_test

import (
	"bytes"
	"encoding/json"
	"math"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/styx-inference/styx/pkg/authlimit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clock is a test clock that moves only when told.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// logs is a log sink that keeps the lines.
type logs struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// warnings returns the warning lines, decoded.
func (l *logs) warnings(t *testing.T) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.buf.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if m["level"] == "warn" {
			out = append(out, m)
		}
	}
	return out
}

func newLimiter(t *testing.T, cfg authlimit.Config) (*authlimit.Limiter, *clock, *logs) {
	t.Helper()
	c, lg := newClock(), &logs{}
	cfg.Now = c.Now
	l, err := authlimit.New(cfg, zerolog.New(lg))
	if err != nil {
		t.Fatal(err)
	}
	return l, c, lg
}

var (
	srcA = netip.MustParseAddr("192.0.2.1")
	srcB = netip.MustParseAddr("192.0.2.2")
)

// fail makes one failed attempt from src, which must be allowed.
func fail(t *testing.T, l *authlimit.Limiter, src netip.Addr) {
	t.Helper()
	if wait, ok := l.Allow(src); !ok {
		t.Fatalf("%s refused (retry after %s), want allowed", src, wait)
	}
	l.Failed(src)
}

// refused checks that src is refused, to be retried after wait.
func refused(t *testing.T, l *authlimit.Limiter, src netip.Addr, wait time.Duration) {
	t.Helper()
	got, ok := l.Allow(src)
	if ok {
		l.Failed(src)
		t.Fatalf("%s allowed, want refused for %s", src, wait)
	}
	if got != wait {
		t.Fatalf("%s refused for %s, want %s", src, got, wait)
	}
}

func TestBurstThenOnePerEvery(t *testing.T) {
	l, c, _ := newLimiter(t, authlimit.Config{})
	for range authlimit.DefaultBurst {
		fail(t, l, srcA)
	}
	refused(t, l, srcA, time.Second)
	refused(t, l, srcA, time.Second) // a refusal costs nothing more
	c.Add(999 * time.Millisecond)
	refused(t, l, srcA, time.Millisecond)
	c.Add(time.Millisecond)
	fail(t, l, srcA) // one earned back
	refused(t, l, srcA, time.Second)
	// Three seconds idle earn three attempts.
	c.Add(3 * time.Second)
	for range 3 {
		fail(t, l, srcA)
	}
	refused(t, l, srcA, time.Second)
	// Long idle earns the whole burst back, and no more.
	c.Add(time.Hour)
	for range authlimit.DefaultBurst {
		fail(t, l, srcA)
	}
	refused(t, l, srcA, time.Second)
	if st := l.Stats(); st.Failures != 2*authlimit.DefaultBurst+4 || st.Limited != 6 {
		t.Fatalf("stats %+v, want %d failures and 6 refusals", st, 2*authlimit.DefaultBurst+4)
	}
}

func TestBurstAndIntervalConfigured(t *testing.T) {
	l, c, _ := newLimiter(t, authlimit.Config{Burst: 2, Every: 10 * time.Second})
	fail(t, l, srcA)
	fail(t, l, srcA)
	refused(t, l, srcA, 10*time.Second)
	c.Add(4 * time.Second)
	refused(t, l, srcA, 6*time.Second)
	c.Add(6 * time.Second)
	fail(t, l, srcA)
	refused(t, l, srcA, 10*time.Second)

	one, c1, _ := newLimiter(t, authlimit.Config{Burst: 1, Every: time.Minute})
	fail(t, one, srcA)
	refused(t, one, srcA, time.Minute)
	c1.Add(time.Minute)
	fail(t, one, srcA)
	refused(t, one, srcA, time.Minute)
}

func TestSuccessCostsNothing(t *testing.T) {
	l, _, _ := newLimiter(t, authlimit.Config{})
	for range 100 {
		if _, ok := l.Allow(srcA); !ok {
			t.Fatal("a source that only succeeds was refused")
		}
		l.Succeeded(srcA)
	}
	for range authlimit.DefaultBurst - 1 {
		fail(t, l, srcA)
	}
	for range 10 {
		if _, ok := l.Allow(srcA); !ok {
			t.Fatal("a success after failures was refused")
		}
		l.Succeeded(srcA)
	}
	fail(t, l, srcA) // the last of the burst, still there
	refused(t, l, srcA, time.Second)
	// A success does not pay off earlier failures either.
	if st := l.Stats(); st.Failures != authlimit.DefaultBurst || st.Limited != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestSucceededUnknownSourceTracksNothing(t *testing.T) {
	l, _, _ := newLimiter(t, authlimit.Config{})
	l.Succeeded(srcA)
	if st := l.Stats(); st.Sources != 0 {
		t.Fatalf("stats %+v: a success with no attempt asked made a source", st)
	}
	for range authlimit.DefaultBurst {
		fail(t, l, srcA)
	}
	refused(t, l, srcA, time.Second)
}

// However many attempts of one source run at once, no more are allowed
// than the burst: Allow takes the attempt before the credential is checked.
func TestConcurrentAttemptsAreBounded(t *testing.T) {
	l, _, _ := newLimiter(t, authlimit.Config{})
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		allowed int
	)
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				if _, ok := l.Allow(srcA); ok {
					mu.Lock()
					allowed++
					mu.Unlock()
					l.Failed(srcA)
				}
			}
		}()
	}
	wg.Wait()
	if allowed != authlimit.DefaultBurst {
		t.Fatalf("%d of 5,000 concurrent attempts allowed, want %d", allowed, authlimit.DefaultBurst)
	}
	if st := l.Stats(); st.Failures != authlimit.DefaultBurst || st.Limited != 5000-authlimit.DefaultBurst || st.Sources != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestSourcesAreSeparate(t *testing.T) {
	cases := []struct {
		name   string
		a, b   string
		shared bool
	}{
		{"two IPv4 addresses", "192.0.2.1", "192.0.2.2", false},
		{"IPv4 and its mapped IPv6", "192.0.2.1", "::ffff:192.0.2.1", true},
		{"one IPv6 /64", "2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff", true},
		{"two IPv6 /64s", "2001:db8:1:2::1", "2001:db8:1:3::1", false},
		{"a zone", "fe80::1%eth0", "fe80::2", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l, _, _ := newLimiter(t, authlimit.Config{})
			a, b := netip.MustParseAddr(c.a), netip.MustParseAddr(c.b)
			for range authlimit.DefaultBurst {
				fail(t, l, a)
			}
			refused(t, l, a, time.Second)
			_, ok := l.Allow(b)
			if ok == c.shared {
				t.Fatalf("%s allowed %v after %s was limited; want shared %v", c.b, ok, c.a, c.shared)
			}
		})
	}
}

func TestGroupDescribeSource(t *testing.T) {
	cases := []struct {
		remote, addr, group, describe string
	}{
		{"192.0.2.1:5555", "192.0.2.1", "192.0.2.1", "192.0.2.1"},
		{"192.0.2.1", "192.0.2.1", "192.0.2.1", "192.0.2.1"},
		{"[::ffff:192.0.2.1]:80", "::ffff:192.0.2.1", "192.0.2.1", "192.0.2.1"},
		{"[2001:db8:1:2:3:4:5:6]:443", "2001:db8:1:2:3:4:5:6", "2001:db8:1:2::", "2001:db8:1:2::/64"},
		{"2001:db8:1:2:3:4:5:6", "2001:db8:1:2:3:4:5:6", "2001:db8:1:2::", "2001:db8:1:2::/64"},
		{"[fe80::1%eth0]:80", "fe80::1%eth0", "fe80::", "fe80::/64"},
		{"[::1]:80", "::1", "::", "::/64"},
		{"@", "invalid IP", "invalid IP", "invalid IP"},
		{"", "invalid IP", "invalid IP", "invalid IP"},
	}
	for _, c := range cases {
		a := authlimit.Source(c.remote)
		if got := a.String(); got != c.addr {
			t.Errorf("Source(%q) = %s, want %s", c.remote, got, c.addr)
		}
		if got := authlimit.Group(a).String(); got != c.group {
			t.Errorf("Group(%s) = %s, want %s", a, got, c.group)
		}
		if got := authlimit.Describe(a); got != c.describe {
			t.Errorf("Describe(%s) = %s, want %s", a, got, c.describe)
		}
	}
}

func TestRetryAfter(t *testing.T) {
	for _, c := range []struct {
		wait time.Duration
		want string
	}{
		{0, "1"},
		{time.Nanosecond, "1"},
		{time.Second - time.Nanosecond, "1"},
		{time.Second, "1"},
		{time.Second + time.Nanosecond, "2"},
		{2 * time.Second, "2"},
		{90 * time.Second, "90"},
	} {
		if got := authlimit.RetryAfter(c.wait); got != c.want {
			t.Errorf("RetryAfter(%s) = %s, want %s", c.wait, got, c.want)
		}
	}
}

func TestRefusalsLoggedOncePerSourcePerInterval(t *testing.T) {
	l, c, lg := newLimiter(t, authlimit.Config{What: "attack token", LogEvery: 10 * time.Second})
	for range authlimit.DefaultBurst {
		fail(t, l, srcA)
	}
	for range 1000 {
		refused(t, l, srcA, time.Second)
	}
	w := lg.warnings(t)
	if len(w) != 1 {
		t.Fatalf("%d warnings after a flood, want 1: %v", len(w), w)
	}
	if w[0]["source"] != "192.0.2.1" || w[0]["credential"] != "attack token" || w[0]["refused"] != 1.0 || w[0]["retry_after"] != 1000.0 {
		t.Fatalf("warning %v", w[0])
	}
	// Another source is logged on its own.
	for range authlimit.DefaultBurst {
		fail(t, l, srcB)
	}
	refused(t, l, srcB, time.Second)
	if w := lg.warnings(t); len(w) != 2 || w[1]["source"] != "192.0.2.2" {
		t.Fatalf("warnings %v, want a second one for 192.0.2.2", w)
	}
	// Not again before the interval is over; then with the refusals held
	// back.
	c.Add(10*time.Second - time.Nanosecond)
	for range authlimit.DefaultBurst {
		fail(t, l, srcA)
	}
	refused(t, l, srcA, time.Second)
	if w := lg.warnings(t); len(w) != 2 {
		t.Fatalf("%d warnings within the interval, want 2", len(w))
	}
	c.Add(time.Nanosecond)
	refused(t, l, srcA, time.Second-time.Nanosecond)
	w = lg.warnings(t)
	if len(w) != 3 || w[2]["source"] != "192.0.2.1" || w[2]["refused"] != 1001.0 {
		t.Fatalf("warnings %v, want a third for 192.0.2.1 counting 1,001 refusals", w)
	}
	if st := l.Stats(); st.Limited != 1002+1 {
		t.Fatalf("stats %+v, want 1,003 refusals", st)
	}
}

// A source is remembered as long as its debt lasts, even when that is
// longer than the log interval.
func TestDebtOutlivesLogInterval(t *testing.T) {
	l, c, _ := newLimiter(t, authlimit.Config{Burst: 5, Every: 10 * time.Second, LogEvery: time.Second})
	for range 5 {
		fail(t, l, srcA)
	}
	c.Add(2 * time.Second)
	refused(t, l, srcA, 8*time.Second)
	c.Add(5 * time.Second)
	refused(t, l, srcA, 3*time.Second)
}

// A source is remembered as long as a held-back log line, even when that
// is longer than its debt: a source that pauses cannot log more often.
func TestLogIntervalOutlivesDebt(t *testing.T) {
	l, c, lg := newLimiter(t, authlimit.Config{Burst: 1, Every: time.Second, LogEvery: time.Minute})
	fail(t, l, srcA)
	refused(t, l, srcA, time.Second)
	c.Add(30 * time.Second)
	fail(t, l, srcA)
	refused(t, l, srcA, time.Second)
	if w := lg.warnings(t); len(w) != 1 {
		t.Fatalf("%d warnings, want 1 within the log interval", len(w))
	}
}

func TestBoundedSources(t *testing.T) {
	l, _, _ := newLimiter(t, authlimit.Config{MaxSources: 3})
	src := func(i byte) netip.Addr { return netip.AddrFrom4([4]byte{198, 51, 100, i}) }
	for i := range byte(3) {
		for range authlimit.DefaultBurst {
			fail(t, l, src(i))
		}
	}
	refused(t, l, src(0), time.Second) // touches 0: 1 is now the oldest
	if st := l.Stats(); st.Sources != 3 || st.Evicted != 0 {
		t.Fatalf("stats %+v", st)
	}
	fail(t, l, src(3)) // evicts 1
	if st := l.Stats(); st.Sources != 3 || st.Evicted != 1 {
		t.Fatalf("stats %+v, want 3 sources and 1 evicted", st)
	}
	refused(t, l, src(0), time.Second)
	refused(t, l, src(2), time.Second)
	fail(t, l, src(1)) // forgotten: a fresh allowance (and evicts 0)
	if st := l.Stats(); st.Sources != 3 || st.Evicted != 2 {
		t.Fatalf("stats %+v, want 3 sources and 2 evicted", st)
	}
}

func TestIdleSourcesForgotten(t *testing.T) {
	l, c, _ := newLimiter(t, authlimit.Config{})
	for range authlimit.DefaultBurst {
		fail(t, l, srcA)
	}
	c.Add(authlimit.DefaultLogEvery + time.Nanosecond)
	fail(t, l, srcB) // sweeps A
	if st := l.Stats(); st.Sources != 1 || st.Evicted != 0 {
		t.Fatalf("stats %+v, want only the new source (idle ones leave without counting as evicted)", st)
	}
}

func TestConfig(t *testing.T) {
	bad := []authlimit.Config{
		{Burst: -1},
		{Every: -1},
		{MaxSources: -1},
		{MaxSources: math.MaxInt32 + 1},
		{LogEvery: -1},
	}
	for _, c := range bad {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v valid", c)
		}
		if _, err := authlimit.New(c, zerolog.Nop()); err == nil {
			t.Errorf("New(%+v) succeeded", c)
		}
	}
	if err := (authlimit.Config{MaxSources: math.MaxInt32}).Validate(); err != nil {
		t.Errorf("max sources at the limit: %v", err)
	}
	l, err := authlimit.New(authlimit.Config{}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	got := l.Config()
	if got.Burst != 5 || got.Every != time.Second || got.MaxSources != 65_536 || got.LogEvery != 30*time.Second || got.What != "credential" || got.Now == nil {
		t.Fatalf("defaults %+v", got)
	}
	set := authlimit.Config{Burst: 2, Every: 3, MaxSources: 4, LogEvery: 5, What: "token", Now: time.Now}
	l, err = authlimit.New(set, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	got = l.Config()
	if got.Burst != 2 || got.Every != 3 || got.MaxSources != 4 || got.LogEvery != 5 || got.What != "token" {
		t.Fatalf("config %+v, want %+v kept", got, set)
	}
}

func TestCollector(t *testing.T) {
	l, _, _ := newLimiter(t, authlimit.Config{MaxSources: 1})
	reg := prometheus.NewRegistry()
	reg.MustRegister(l.Collector("styx_test"))
	for range 3 {
		fail(t, l, srcA)
	}
	for range 2 {
		fail(t, l, srcB) // evicts A, then makes 2 attempts of 5
	}
	for range 3 {
		fail(t, l, srcB)
	}
	for range 4 {
		refused(t, l, srcB, time.Second)
	}
	want := `
# HELP styx_test_auth_evicted_total Sources forgotten early to make room for another (the table of sources is full).
# TYPE styx_test_auth_evicted_total counter
styx_test_auth_evicted_total 1
# HELP styx_test_auth_failures_total Credentials checked and found wrong (HTTP 401).
# TYPE styx_test_auth_failures_total counter
styx_test_auth_failures_total 8
# HELP styx_test_auth_limited_total Attempts refused without their credential checked (HTTP 429), their source having failed too often.
# TYPE styx_test_auth_limited_total counter
styx_test_auth_limited_total 4
# HELP styx_test_auth_sources Sources with recent attempts tracked by the limiter of failed authentications.
# TYPE styx_test_auth_sources gauge
styx_test_auth_sources 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
}

func FuzzSource(f *testing.F) {
	for _, s := range []string{"192.0.2.1:80", "[2001:db8::1]:443", "[fe80::1%eth0]:1", "::ffff:1.2.3.4", "@", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, remote string) {
		a := authlimit.Source(remote)
		g := authlimit.Group(a)
		if authlimit.Group(g) != g {
			t.Fatalf("Group not idempotent on %s", a)
		}
		if g.Zone() != "" || g.Is4In6() {
			t.Fatalf("Group(%s) = %s keeps a zone or a mapping", a, g)
		}
		if g.Is6() && g != netip.PrefixFrom(g, authlimit.IPv6Bits).Masked().Addr() {
			t.Fatalf("Group(%s) = %s, not a /64", a, g)
		}
		_ = authlimit.Describe(a)
	})
}
