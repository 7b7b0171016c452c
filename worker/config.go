package worker

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/styx-inference/styx/pkg/attacks"
	"github.com/styx-inference/styx/pkg/evidence/proxyprobe"
	"github.com/styx-inference/styx/pkg/history"
	"github.com/styx-inference/styx/pkg/keyspace"
	"github.com/styx-inference/styx/pkg/locdb"
	"github.com/styx-inference/styx/pkg/pki"
	"github.com/styx-inference/styx/pkg/raven"
)

// AllNodes is the NUMANode value that runs one pinned child process per
// NUMA node (see Supervise).
const AllNodes = "all"

// DefaultNATSURL is the verdict log's default NATS server.
const DefaultNATSURL = "nats://127.0.0.1:4222"

// Engine names.
const (
	EngineRule = "rule"
	EngineNop  = "nop"
)

// Config configures a Worker. DefaultConfig returns the defaults the flags
// show; RegisterFlags binds every field that has a flag.
type Config struct {
	// EtcdEndpoints are dialed when Etcd is nil.
	EtcdEndpoints []string
	// Etcd, when set, is used instead of dialing EtcdEndpoints, and is not
	// closed by the worker (in-process clusters share one client).
	Etcd *clientv3.Client

	// ListenAddr is the gRPC listen address; port 0 lets the OS choose.
	ListenAddr string
	// AdvertiseAddr is the address the scheduler dials; "" means the bound
	// address (with Host in place of an unspecified IP such as 0.0.0.0).
	AdvertiseAddr string
	// ID names the worker in etcd; "" means <host>-numa<N> when pinned,
	// <host>-<port> otherwise.
	ID string
	// Host is reported in the registration; "" means os.Hostname().
	Host string

	// NUMANode is "" (no pinning), a node number N (pin this process to
	// node N's CPUs, GOMAXPROCS = their count) or AllNodes (Supervise only).
	NUMANode string
	// Sysfs is the sysfs root the NUMA topology is read from.
	Sysfs string

	// Capacity is the number of credits granted (batches held at once);
	// 0 means 2 × GOMAXPROCS (after pinning).
	Capacity int
	// MaxBatch is the largest batch accepted; 0 means 65,536 addresses.
	MaxBatch int
	// LeaseTTL is the registration lease's TTL (whole seconds, at least 1s).
	LeaseTTL time.Duration

	// EngineName selects the engine when Engine is nil: EngineRule (over
	// the location database) or EngineNop.
	EngineName string
	// Engine, when set, is used as is (tests, embedding).
	Engine raven.Engine
	// DBPath and DBKeyPath locate the location database and its signing
	// key; SkipVerify skips the signature check.
	DBPath     string
	DBKeyPath  string
	SkipVerify bool

	// BatchDelay is an artificial delay per batch (tests of slow workers).
	BatchDelay time.Duration
	// DrainTimeout bounds how long a stopping worker waits for its
	// in-flight batches.
	DrainTimeout time.Duration
	// PKI is the worker's identity: mutual TLS on its gRPC server (the
	// scheduler only may call it), etcd and NATS. Nil is plaintext
	// (--insecure). The certificate's id names the worker unless ID is set,
	// and must prove it (pki.ProvesWorker).
	PKI *pki.Source
	// MetricsAddr serves Prometheus /metrics over HTTP when not "".
	MetricsAddr string
	// AttackFeed follows the verdict log's attack reports (NATS
	// JetStream at NATSURL, pkg/verdictlog) into an in-memory table of
	// AttackTableMax addresses at most, which an engine implementing
	// attacks.HistoryUser receives. The table is rebuilt at every start
	// from what the log's retention holds.
	AttackFeed     bool
	AttackTableMax int
	// NATSURL is the verdict log's NATS server (a comma-separated list of
	// URLs for a cluster); used with AttackFeed.
	NATSURL string
	// History, with AttackFeed and the rule engine (a location database),
	// follows the verdicts of the log too into a history table of
	// HistoryMax addresses at most (pkg/history): the per-address attack
	// history and the per-bucket and per-AS statistics that schema 2
	// models read.
	History    bool
	HistoryMax int
	// FollowModels, with the rule engine, follows /styx/models/current:
	// the published model (and a canary) replace the rule live.
	FollowModels bool
	// Build names the build in the registration; "" means the module
	// version and VCS revision from the binary's build info.
	Build string

	// Probe turns the open-proxy probe on (pkg/evidence/proxyprobe): every
	// address the engine does not already call a proxy is probed on
	// ProbePorts with HTTP CONNECT, SOCKS5 and SOCKS4 handshakes to
	// ProbeTarget, and a confirmed open proxy makes the verdict a proxy of
	// that type, with its port. Off by default: it dials the examined
	// addresses.
	Probe bool
	// ProbePorts are the ports probed on every address.
	ProbePorts []uint16
	// ProbeTarget is where a proxy is asked to connect: a host the
	// operator runs (IPv4, since SOCKS4 has no IPv6); required with Probe.
	ProbeTarget netip.AddrPort
	// ProbeBanner, if set, is what ProbeTarget sends first on every
	// connection; a proxy counts only if the banner comes through it. Go
	// escapes (\n, \r, \t, \xHH) are decoded.
	ProbeBanner string
	// ProbeAllow, when not empty, is the only address ranges the probe may
	// dial; empty means public addresses only (the dial guard always
	// denies private, loopback, link-local, multicast and reserved ranges
	// that no allow prefix opens).
	ProbeAllow []netip.Prefix
	// ProbeConcurrencyMin and ProbeConcurrencyMax bound the probes in
	// flight; the limit moves between them with the backlog.
	ProbeConcurrencyMin, ProbeConcurrencyMax int
	// ProbeRate is the number of probes (addresses) started per second;
	// 0 means no rate limit.
	ProbeRate float64
	// ProbeTimeout bounds one address's probe.
	ProbeTimeout time.Duration
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		EtcdEndpoints:  []string{"127.0.0.1:2379"},
		ListenAddr:     "127.0.0.1:0",
		Sysfs:          "/sys",
		LeaseTTL:       5 * time.Second,
		EngineName:     EngineRule,
		DBPath:         locdb.DefaultPath,
		DBKeyPath:      locdb.DefaultKeyPath,
		DrainTimeout:   30 * time.Second,
		AttackFeed:     true,
		FollowModels:   true,
		AttackTableMax: attacks.DefaultTableMax,
		NATSURL:        DefaultNATSURL,
		History:        true,
		HistoryMax:     history.DefaultMaxAddrs,

		ProbePorts:          []uint16{1080, 3128, 8080, 8888},
		ProbeConcurrencyMin: 4,
		ProbeConcurrencyMax: 32,
		ProbeRate:           20,
		ProbeTimeout:        5 * time.Second,
	}
}

// RegisterFlags binds c's fields to flags on fs; the current values of c are
// the defaults shown.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.Var((*listValue)(&c.EtcdEndpoints), "etcd-endpoints", "etcd endpoints, a comma-separated `host:port` list")
	fs.StringVar(&c.ListenAddr, "listen-addr", c.ListenAddr, "gRPC listen address; port 0 lets the OS choose")
	fs.StringVar(&c.AdvertiseAddr, "advertise-addr", c.AdvertiseAddr, "address the scheduler dials (default: the bound address, with --host for an unspecified IP)")
	fs.StringVar(&c.ID, "id", c.ID, "worker id in etcd (default <host>-numa<N> when pinned, <host>-<port> otherwise; with --numa-node=all, each child gets <id>-numa<N>)")
	fs.StringVar(&c.Host, "host", c.Host, "host name reported in the registration (default: the OS host name)")
	fs.StringVar(&c.NUMANode, "numa-node", c.NUMANode, `NUMA pinning: "" = none; "N" = pin to node N's CPUs and set GOMAXPROCS to their count; "all" = start one pinned child process per node and forward stop signals to them`)
	fs.StringVar(&c.Sysfs, "sysfs", c.Sysfs, "sysfs root to read the NUMA topology from")
	fs.IntVar(&c.Capacity, "capacity", c.Capacity, "credits granted to the scheduler, i.e. batches held at once (0 = 2 × GOMAXPROCS)")
	fs.IntVar(&c.MaxBatch, "max-batch", c.MaxBatch, "largest batch accepted, in addresses (0 = 65536)")
	fs.DurationVar(&c.LeaseTTL, "lease-ttl", c.LeaseTTL, "TTL of the etcd registration lease (whole seconds)")
	fs.StringVar(&c.EngineName, "engine", c.EngineName, `inference engine: "rule" (location database rule) or "nop" (finds nothing; benchmarks)`)
	fs.StringVar(&c.DBPath, "db", c.DBPath, "location database file (engine rule)")
	fs.StringVar(&c.DBKeyPath, "db-key", c.DBKeyPath, "PEM public key the location database is signed with")
	fs.BoolVar(&c.SkipVerify, "skip-verify", c.SkipVerify, "skip the location database signature check")
	fs.DurationVar(&c.BatchDelay, "batch-delay", c.BatchDelay, "artificial delay per batch (to test slow workers)")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", c.DrainTimeout, "on stop, how long to wait for in-flight batches before leaving")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", c.MetricsAddr, `HTTP address serving Prometheus /metrics ("" = off)`)
	fs.BoolVar(&c.FollowModels, "follow-models", c.FollowModels, "with --engine=rule, run the model /styx/models/current names (checksum verified, swapped between batches) and any canary; the rule answers until a model is published (--follow-models=false: the rule only)")
	fs.BoolVar(&c.AttackFeed, "attack-feed", c.AttackFeed, "follow the attack reports of the verdict log (NATS JetStream, --nats-url) into an in-memory table the engine can read, rebuilt at every start from what the log holds (--attack-feed=false: off)")
	fs.StringVar(&c.NATSURL, "nats-url", c.NATSURL, "NATS server of the verdict log, with --attack-feed (a comma-separated list for a cluster)")
	fs.IntVar(&c.AttackTableMax, "attack-table-max", c.AttackTableMax, "addresses the attack table holds at most (the ones attacked longest ago go first)")
	fs.BoolVar(&c.History, "history", c.History, "with --attack-feed and --engine=rule, follow the verdicts of the verdict log too and keep per-address, per-/24 (/48) and per-AS statistics for schema 2 models (--history=false: attack reports only)")
	fs.IntVar(&c.HistoryMax, "history-max", c.HistoryMax, "addresses the history holds at most (the ones updated longest ago go first, with their share of their bucket's and AS's statistics)")
	fs.BoolVar(&c.Probe, "probe", c.Probe, "probe every address the engine does not already call a proxy for an open HTTP CONNECT, SOCKS5 or SOCKS4 proxy (this dials the examined addresses; needs --probe-target)")
	fs.Var((*portsValue)(&c.ProbePorts), "probe-ports", "ports probed on every address, a comma-separated list")
	fs.TextVar(&c.ProbeTarget, "probe-target", c.ProbeTarget, "`ip:port` of a host you run that proxies are asked to connect to (IPv4; required with --probe)")
	fs.StringVar(&c.ProbeBanner, "probe-banner", c.ProbeBanner, `what --probe-target sends first on every connection; if set, a proxy counts only if the banner comes through it (Go escapes such as \n are decoded)`)
	fs.Var((*prefixesValue)(&c.ProbeAllow), "probe-allow", `the only ranges the probe may dial, a comma-separated CIDR list ("" = public addresses only; private, loopback and reserved ranges stay denied unless listed)`)
	fs.IntVar(&c.ProbeConcurrencyMin, "probe-concurrency-min", c.ProbeConcurrencyMin, "the lowest concurrency limit of the probe (the limit starts here and falls back to it when probes stop waiting)")
	fs.IntVar(&c.ProbeConcurrencyMax, "probe-concurrency-max", c.ProbeConcurrencyMax, "the highest concurrency limit of the probe, i.e. probes in flight at most (the limit rises towards it while probes wait)")
	fs.Float64Var(&c.ProbeRate, "probe-rate", c.ProbeRate, "probes (addresses) started per second at most; each dials every --probe-ports port up to three times (0 = no limit)")
	fs.DurationVar(&c.ProbeTimeout, "probe-timeout", c.ProbeTimeout, "longest probe of one address")
}

// Validate reports a configuration error.
func (c Config) Validate() error {
	var errs []error
	if c.Etcd == nil && len(c.EtcdEndpoints) == 0 {
		errs = append(errs, errors.New("no etcd endpoints"))
	}
	if _, _, err := net.SplitHostPort(c.ListenAddr); err != nil {
		errs = append(errs, fmt.Errorf("listen address %q: %w", c.ListenAddr, err))
	}
	if c.AdvertiseAddr != "" {
		if _, _, err := net.SplitHostPort(c.AdvertiseAddr); err != nil {
			errs = append(errs, fmt.Errorf("advertise address %q: %w", c.AdvertiseAddr, err))
		}
	}
	if c.MetricsAddr != "" {
		if _, _, err := net.SplitHostPort(c.MetricsAddr); err != nil {
			errs = append(errs, fmt.Errorf("metrics address %q: %w", c.MetricsAddr, err))
		}
	}
	if c.ID != "" {
		if err := keyspace.ValidID(c.ID); err != nil {
			errs = append(errs, fmt.Errorf("worker id: %w", err))
		}
	}
	if _, err := c.numaNode(); err != nil {
		errs = append(errs, err)
	}
	if c.NUMANode != "" && c.Sysfs == "" {
		errs = append(errs, errors.New("numa pinning needs a sysfs root"))
	}
	if c.Capacity < 0 {
		errs = append(errs, fmt.Errorf("capacity %d, want >= 0", c.Capacity))
	}
	if c.MaxBatch < 0 {
		errs = append(errs, fmt.Errorf("max batch %d, want >= 0", c.MaxBatch))
	}
	if c.LeaseTTL < time.Second {
		errs = append(errs, fmt.Errorf("lease ttl %s, want at least 1s", c.LeaseTTL))
	}
	if c.Engine == nil {
		switch c.EngineName {
		case EngineNop:
		case EngineRule:
			if c.DBPath == "" {
				errs = append(errs, errors.New("engine rule needs a location database path"))
			}
		default:
			errs = append(errs, fmt.Errorf("engine %q, want %q or %q", c.EngineName, EngineRule, EngineNop))
		}
	}
	if c.BatchDelay < 0 {
		errs = append(errs, fmt.Errorf("batch delay %s, want >= 0", c.BatchDelay))
	}
	if c.AttackFeed && strings.TrimSpace(c.NATSURL) == "" {
		errs = append(errs, errors.New("--attack-feed needs --nats-url"))
	}
	if c.AttackFeed && c.AttackTableMax < 1 {
		errs = append(errs, fmt.Errorf("attack table max %d, want >= 1", c.AttackTableMax))
	}
	if c.AttackFeed && c.History && c.HistoryMax < 1 {
		errs = append(errs, fmt.Errorf("history max %d, want >= 1", c.HistoryMax))
	}
	if c.DrainTimeout <= 0 {
		errs = append(errs, fmt.Errorf("drain timeout %s, want > 0", c.DrainTimeout))
	}
	if c.Probe {
		errs = append(errs, c.validateProbe()...)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("worker config: %w", err)
	}
	return nil
}

// validateProbe checks the probe's settings (when Probe is on).
func (c Config) validateProbe() []error {
	var errs []error
	switch t := c.ProbeTarget; {
	case !t.IsValid():
		errs = append(errs, errors.New("--probe needs --probe-target: the ip:port of a host you run, which proxies are asked to connect to"))
	case t.Port() == 0 || t.Addr().IsUnspecified():
		errs = append(errs, fmt.Errorf("probe target %s, want an IP address and a non-zero port", t))
	case !t.Addr().Unmap().Is4():
		errs = append(errs, fmt.Errorf("probe target %s, want an IPv4 address (SOCKS4 cannot reach IPv6)", t))
	}
	if b, err := decodeBanner(c.ProbeBanner); err != nil {
		errs = append(errs, err)
	} else if len(b) > proxyprobe.MaxBanner {
		errs = append(errs, fmt.Errorf("probe banner of %d bytes, want at most %d", len(b), proxyprobe.MaxBanner))
	}
	if err := checkPorts(c.ProbePorts); err != nil {
		errs = append(errs, err)
	}
	for _, p := range c.ProbeAllow {
		if !p.IsValid() {
			errs = append(errs, fmt.Errorf("probe allow prefix %v is not valid", p))
		}
	}
	if c.ProbeConcurrencyMin < 1 {
		errs = append(errs, fmt.Errorf("probe concurrency min %d, want >= 1", c.ProbeConcurrencyMin))
	}
	if c.ProbeConcurrencyMax < c.ProbeConcurrencyMin {
		errs = append(errs, fmt.Errorf("probe concurrency max %d, want >= min %d", c.ProbeConcurrencyMax, c.ProbeConcurrencyMin))
	}
	if c.ProbeRate < 0 || math.IsNaN(c.ProbeRate) || math.IsInf(c.ProbeRate, 0) {
		errs = append(errs, fmt.Errorf("probe rate %g, want >= 0", c.ProbeRate))
	}
	if c.ProbeTimeout <= 0 {
		errs = append(errs, fmt.Errorf("probe timeout %s, want > 0", c.ProbeTimeout))
	}
	return errs
}

// checkPorts reports an empty list, a zero port or a port listed twice.
func checkPorts(ports []uint16) error {
	if len(ports) == 0 {
		return errors.New("no probe ports")
	}
	seen := map[uint16]bool{}
	for _, p := range ports {
		if p == 0 || seen[p] {
			return fmt.Errorf("probe port %d is zero or listed twice", p)
		}
		seen[p] = true
	}
	return nil
}

// decodeBanner decodes the Go escapes of a --probe-banner value.
func decodeBanner(s string) ([]byte, error) {
	var b []byte
	for s != "" {
		r, multibyte, tail, err := strconv.UnquoteChar(s, 0)
		if err != nil {
			return nil, fmt.Errorf("probe banner: bad escape in %q", s)
		}
		if r < utf8.RuneSelf || !multibyte {
			b = append(b, byte(r))
		} else {
			b = utf8.AppendRune(b, r)
		}
		s = tail
	}
	return b, nil
}

// numaNode parses NUMANode: -1 for "" and AllNodes, else the node number.
func (c Config) numaNode() (int, error) {
	switch c.NUMANode {
	case "", AllNodes:
		return -1, nil
	}
	n, err := strconv.Atoi(c.NUMANode)
	if err != nil || n < 0 {
		return -1, fmt.Errorf("numa node %q, want \"\", %q or a node number", c.NUMANode, AllNodes)
	}
	return n, nil
}

// portsValue is a comma-separated list of ports.
type portsValue []uint16

func (l *portsValue) String() string {
	parts := make([]string, len(*l))
	for i, p := range *l {
		parts[i] = strconv.Itoa(int(p))
	}
	return strings.Join(parts, ",")
}

func (l *portsValue) Set(s string) error {
	var out []uint16
	for _, e := range strings.Split(s, ",") {
		if e = strings.TrimSpace(e); e == "" {
			continue
		}
		p, err := strconv.ParseUint(e, 10, 16)
		if err != nil || p == 0 {
			return fmt.Errorf("port %q, want 1..65535", e)
		}
		out = append(out, uint16(p))
	}
	if err := checkPorts(out); err != nil {
		return err
	}
	*l = out
	return nil
}

// prefixesValue is a comma-separated list of CIDR prefixes; a bare
// address is a prefix of that address alone.
type prefixesValue []netip.Prefix

func (l *prefixesValue) String() string {
	parts := make([]string, len(*l))
	for i, p := range *l {
		parts[i] = p.String()
	}
	return strings.Join(parts, ",")
}

func (l *prefixesValue) Set(s string) error {
	var out []netip.Prefix
	for _, e := range strings.Split(s, ",") {
		if e = strings.TrimSpace(e); e == "" {
			continue
		}
		p, err := netip.ParsePrefix(e)
		if err != nil {
			a, aerr := netip.ParseAddr(e)
			if aerr != nil {
				return fmt.Errorf("%q is neither a CIDR prefix nor an IP address", e)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p)
	}
	*l = out
	return nil
}

// listValue is a comma-separated list flag.
type listValue []string

func (l *listValue) String() string { return strings.Join(*l, ",") }

func (l *listValue) Set(s string) error {
	var out []string
	for _, e := range strings.Split(s, ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	*l = out
	return nil
}
