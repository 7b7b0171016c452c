package worker

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/styx-inference/styx/pkg/attacks"
	"github.com/styx-inference/styx/pkg/keyspace"
	"github.com/styx-inference/styx/pkg/locdb"
	"github.com/styx-inference/styx/pkg/raven"
)

// AllNodes is the NUMANode value that runs one pinned child process per
// NUMA node (see Supervise).
const AllNodes = "all"

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
	// MetricsAddr serves Prometheus /metrics over HTTP when not "".
	MetricsAddr string
	// AttackFeed follows the leader's feed of attack reports into an
	// in-memory table of AttackTableMax addresses at most, which an engine
	// implementing attacks.HistoryUser receives.
	AttackFeed     bool
	AttackTableMax int
	// FollowModels, with the rule engine, follows /styx/models/current:
	// the published model (and a canary) replace the rule live.
	FollowModels bool
	// Build names the build in the registration; "" means the module
	// version and VCS revision from the binary's build info.
	Build string
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
	fs.BoolVar(&c.AttackFeed, "attack-feed", c.AttackFeed, "follow the leader's attack reports into an in-memory table the engine can read (--attack-feed=false: off)")
	fs.IntVar(&c.AttackTableMax, "attack-table-max", c.AttackTableMax, "addresses the attack table holds at most (the ones attacked longest ago go first)")
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
	if c.AttackFeed && c.AttackTableMax < 1 {
		errs = append(errs, fmt.Errorf("attack table max %d, want >= 1", c.AttackTableMax))
	}
	if c.DrainTimeout <= 0 {
		errs = append(errs, fmt.Errorf("drain timeout %s, want > 0", c.DrainTimeout))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("worker config: %w", err)
	}
	return nil
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
