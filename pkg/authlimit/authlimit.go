package authlimit

import (
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/styx-inference/styx/pkg/recent"
)

// Defaults of Config.
const (
	DefaultBurst      = 5
	DefaultEvery      = time.Second
	DefaultMaxSources = 65_536
	DefaultLogEvery   = 30 * time.Second
)

// IPv6Bits is the prefix length by which IPv6 sources are grouped.
const IPv6Bits = 64

// Config configures a Limiter. Zero fields take their defaults.
type Config struct {
	// Burst is how many attempts a source may fail at once before it is
	// slowed down (default 5).
	Burst int
	// Every is how long a source takes to earn one more attempt back
	// (default 1 s).
	Every time.Duration
	// MaxSources bounds the sources tracked (default 65,536).
	MaxSources int
	// LogEvery is the least time between two log lines about one source's
	// refusals (default 30 s).
	LogEvery time.Duration
	// What names the credential in log lines ("attack token").
	What string
	// Now defaults to time.Now. It must not go backwards.
	Now func() time.Time
}

// Validate reports a configuration error.
func (c Config) Validate() error {
	// One if a field rather than a switch: a case's condition lies outside
	// the blocks coverage counts, which would hide its mutants.
	if c.Burst < 0 {
		return fmt.Errorf("authlimit: negative burst %d", c.Burst)
	}
	if c.Every < 0 {
		return fmt.Errorf("authlimit: negative interval %s", c.Every)
	}
	if c.MaxSources < 0 || c.MaxSources > math.MaxInt32 {
		return fmt.Errorf("authlimit: max sources %d outside 0..%d", c.MaxSources, math.MaxInt32)
	}
	if c.LogEvery < 0 {
		return fmt.Errorf("authlimit: negative log interval %s", c.LogEvery)
	}
	return nil
}

// withDefaults fills the zero fields.
func (c Config) withDefaults() Config {
	if c.Burst == 0 {
		c.Burst = DefaultBurst
	}
	if c.Every == 0 {
		c.Every = DefaultEvery
	}
	if c.MaxSources == 0 {
		c.MaxSources = DefaultMaxSources
	}
	if c.LogEvery == 0 {
		c.LogEvery = DefaultLogEvery
	}
	if c.What == "" {
		c.What = "credential"
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Limiter limits failed authentications per source; see the package
// comment. It is safe for concurrent use.
type Limiter struct {
	cfg   Config
	log   zerolog.Logger
	epoch time.Time // times are kept as nanoseconds since epoch
	every int64     // cfg.Every in nanoseconds
	// slack is how far ahead of now a source's debt may reach while it
	// still has an attempt left: (Burst-1)·Every.
	slack    int64
	logEvery int64

	mu       sync.Mutex
	sources  *recent.Set[netip.Addr, source]
	failures uint64
	limited  uint64
}

// source is what a Limiter knows of one source.
type source struct {
	// debt is when the source will have its whole allowance again. Each
	// attempt moves it one Every later (from now, if it lies in the
	// past); the source has an attempt left while debt lies at most slack
	// ahead of now.
	debt int64
	// nextLog is when a refusal may be logged again; quiet counts the
	// refusals since the last one logged.
	nextLog int64
	quiet   uint64
}

// New returns a Limiter.
func New(cfg Config, log zerolog.Logger) (*Limiter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	every := int64(cfg.Every)
	// A source is worth keeping while it has a debt or a log line held
	// back; past both, forgetting it changes nothing.
	keep := max(time.Duration(cfg.Burst)*cfg.Every, cfg.LogEvery)
	set, err := recent.New[netip.Addr, source](recent.Limits{MaxLen: cfg.MaxSources, MaxAge: keep})
	if err != nil {
		return nil, fmt.Errorf("authlimit: %w", err)
	}
	return &Limiter{
		cfg:      cfg,
		log:      log,
		epoch:    cfg.Now(),
		every:    every,
		slack:    int64(cfg.Burst-1) * every,
		logEvery: int64(cfg.LogEvery),
		sources:  set,
	}, nil
}

// Config returns the limiter's configuration, defaults filled in.
func (l *Limiter) Config() Config { return l.cfg }

func (l *Limiter) now() int64 { return int64(l.cfg.Now().Sub(l.epoch)) }

// Allow asks, before a credential from src is checked, whether it may be.
// When it may (ok), the attempt is taken from src's allowance, and the
// caller must then call Failed or Succeeded with src. When it may not, the
// refusal is counted (and perhaps logged), and retryAfter is how long
// until src has an attempt again.
func (l *Limiter) Allow(src netip.Addr) (retryAfter time.Duration, ok bool) {
	key := Group(src)
	now := l.now()
	l.mu.Lock()
	s, held := l.sources.Get(now, key)
	if !held {
		s = source{debt: now, nextLog: math.MinInt64}
	}
	start := max(s.debt, now)
	wait := start - now - l.slack
	if wait <= 0 {
		s.debt = start + l.every
		l.sources.Put(now, key, s)
		l.mu.Unlock()
		return 0, true
	}
	l.limited++
	s.quiet++
	var logged uint64
	if now >= s.nextLog {
		logged, s.quiet = s.quiet, 0
		s.nextLog = now + l.logEvery
	}
	l.sources.Put(now, key, s)
	l.mu.Unlock()
	if logged > 0 {
		l.log.Warn().Str("source", Describe(key)).Str("credential", l.cfg.What).Uint64("refused", logged).
			Dur("retry_after", time.Duration(wait)).Msg("too many failed authentications: refusing the source's attempts unchecked")
	}
	return time.Duration(wait), false
}

// Failed tells that the attempt Allow granted to src failed: it stays
// taken from src's allowance, and it is counted (and logged at debug
// level: the refusals that follow are logged as warnings).
func (l *Limiter) Failed(src netip.Addr) {
	l.mu.Lock()
	l.failures++
	l.mu.Unlock()
	l.log.Debug().Str("source", Describe(src)).Str("credential", l.cfg.What).Msg("failed authentication")
}

// Succeeded tells that the attempt Allow granted to src succeeded: src has
// it back.
func (l *Limiter) Succeeded(src netip.Addr) {
	key := Group(src)
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if s, held := l.sources.Get(now, key); held {
		s.debt -= l.every
		l.sources.Put(now, key, s)
	}
}

// Stats are a Limiter's counts.
type Stats struct {
	Failures uint64 // credentials checked and found wrong (Failed)
	Limited  uint64 // attempts refused unchecked (Allow said no)
	Evicted  uint64 // sources forgotten early, to make room for another
	Sources  int    // sources tracked now
}

// Stats returns the counts so far.
func (l *Limiter) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return Stats{Failures: l.failures, Limited: l.limited, Evicted: l.sources.Evictions().ByCount, Sources: l.sources.Len()}
}

// Group returns the key of a source: the address itself for IPv4 (and
// IPv4-mapped IPv6), its /64 for IPv6, without a zone. The zero Addr (a
// RemoteAddr that did not parse) is one source.
func Group(a netip.Addr) netip.Addr {
	a = a.Unmap().WithZone("")
	if a.Is6() {
		return netip.PrefixFrom(a, IPv6Bits).Masked().Addr()
	}
	return a
}

// Describe names a source for log lines: "192.0.2.1", "2001:db8::/64".
func Describe(a netip.Addr) string {
	a = Group(a)
	if a.Is6() {
		return netip.PrefixFrom(a, IPv6Bits).String()
	}
	return a.String()
}

// Source returns the address of an http.Request's RemoteAddr ("ip:port",
// or an address alone); the zero Addr when it is neither.
func Source(remoteAddr string) netip.Addr {
	if ap, err := netip.ParseAddrPort(remoteAddr); err == nil {
		return ap.Addr()
	}
	a, _ := netip.ParseAddr(remoteAddr)
	return a
}

// RetryAfter formats a wait for a Retry-After header: whole seconds,
// rounded up, at least 1.
func RetryAfter(wait time.Duration) string {
	s := max((wait+time.Second-1)/time.Second, 1)
	return strconv.FormatInt(int64(s), 10)
}

// Collector exports the limiter's counts, for the caller to register, as
// <prefix>_auth_failures_total, <prefix>_auth_limited_total,
// <prefix>_auth_evicted_total and <prefix>_auth_sources.
func (l *Limiter) Collector(prefix string) prometheus.Collector {
	return &collector{
		l: l,
		failures: prometheus.NewDesc(prefix+"_auth_failures_total",
			"Credentials checked and found wrong (HTTP 401).", nil, nil),
		limited: prometheus.NewDesc(prefix+"_auth_limited_total",
			"Attempts refused without their credential checked (HTTP 429), their source having failed too often.", nil, nil),
		evicted: prometheus.NewDesc(prefix+"_auth_evicted_total",
			"Sources forgotten early to make room for another (the table of sources is full).", nil, nil),
		srcs: prometheus.NewDesc(prefix+"_auth_sources",
			"Sources with recent attempts tracked by the limiter of failed authentications.", nil, nil),
	}
}

type collector struct {
	l                                *Limiter
	failures, limited, evicted, srcs *prometheus.Desc
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.failures
	ch <- c.limited
	ch <- c.evicted
	ch <- c.srcs
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.l.Stats()
	ch <- prometheus.MustNewConstMetric(c.failures, prometheus.CounterValue, float64(st.Failures))
	ch <- prometheus.MustNewConstMetric(c.limited, prometheus.CounterValue, float64(st.Limited))
	ch <- prometheus.MustNewConstMetric(c.evicted, prometheus.CounterValue, float64(st.Evicted))
	ch <- prometheus.MustNewConstMetric(c.srcs, prometheus.GaugeValue, float64(st.Sources))
}
