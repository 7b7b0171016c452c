package clusternode

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/styx-inference/styx/clusternode/internal/api"
	"github.com/styx-inference/styx/clusternode/internal/nodehistory"
	"github.com/styx-inference/styx/clusternode/internal/store"
	"github.com/styx-inference/styx/clusternode/internal/threats"
	"github.com/styx-inference/styx/clusternode/internal/uplink"
	"github.com/styx-inference/styx/pkg/attacks"
	"github.com/styx-inference/styx/pkg/grpcauth"
	"github.com/styx-inference/styx/pkg/history"
	"github.com/styx-inference/styx/pkg/keyspace"
	"github.com/styx-inference/styx/pkg/leader"
	"github.com/styx-inference/styx/pkg/locdb"
	"github.com/styx-inference/styx/pkg/logging"
	"github.com/styx-inference/styx/pkg/modelengine"
	"github.com/styx-inference/styx/pkg/pki"
	"github.com/styx-inference/styx/pkg/raven"
	"github.com/styx-inference/styx/pkg/registration"
	"github.com/styx-inference/styx/pkg/rollout"
	"github.com/styx-inference/styx/pkg/verdict"
	"github.com/styx-inference/styx/pkg/verdictlog"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

// StoreFile is the name of the bbolt file under Config.DataDir.
const StoreFile = "styx-node.db"

// DefaultNATSURL is where the node looks for the verdict log by default.
const DefaultNATSURL = "nats://127.0.0.1:4222"

// Config configures a Node. DefaultConfig holds the defaults the flags use.
type Config struct {
	EtcdEndpoints []string // etcd client endpoints
	HTTPAddr      string   // query API listen address; port 0 picks one
	ID            string   // node id; "" means <host>-<http port>
	DataDir       string   // holds StoreFile

	// NATSURL names the verdict log's NATS JetStream servers
	// (comma-separated nats:// URLs). The node follows both log streams
	// into its store from its stored cursors. "" follows no log: the node
	// then stores only the verdicts of its own sightings.
	NATSURL string

	DBPath     string // location database
	DBKeyPath  string // its signing key; "" means locdb.DefaultKeyPath
	SkipVerify bool   // skip the database signature check

	LeaseTTL time.Duration // registration lease

	DedupWindow   time.Duration // an address seen again within it is not streamed again
	DedupMax      int           // addresses the dedup window remembers
	MaxPending    int           // sightings sent without outcome; beyond, not submitted (counted)
	BatchSize     int           // sightings per batch (lowered to the leader's max_batch)
	BatchInterval time.Duration // a partial batch waits at most this long

	MaxAddresses int   // addresses per query
	MaxBody      int64 // bytes per POST body

	// AttackToken enables POST /v2/attacks for requests carrying it as a
	// bearer token (at least 16 bytes); "" disables the endpoint.
	AttackToken string
	// FollowModels answers queries without a stored verdict with the
	// model /styx/models/current names (the rule until one is published).
	// Ignored when Engine or Locator is set.
	FollowModels     bool
	AttackMaxBody    int64 // bytes per attack report request
	AttackMaxReports int   // report lines per request
	AttackEvents     int   // reports kept per address in the store
	AttackOutboxMax  int   // reports waiting to be forwarded to the leader

	// CleanRetention and ProxyRetention are the retention policy, the
	// verdict log's too: the store keeps a verdict that found no proxy
	// CleanRetention from its inference time, a proxy verdict
	// ProxyRetention, and an attack history ProxyRetention from its newest
	// report (see store.Retention; it sweeps every minute).
	CleanRetention, ProxyRetention time.Duration

	// History keeps a history table (pkg/history) of at most HistoryMax
	// addresses for the schema 2 models the node follows: filled from the
	// store at start, then from every verdict and attack report the store
	// takes. Only when the node follows models (FollowModels, no Engine,
	// no Locator).
	History    bool
	HistoryMax int

	// ThreatsRecent is how many of the newest proxy verdicts the threats
	// page (/threats) samples from; 0 turns the page off.
	ThreatsRecent int

	ShutdownTimeout time.Duration // bound on the graceful HTTP shutdown

	// Optional, mostly for tests.

	// Locator replaces the database at DBPath (which is then not opened).
	Locator raven.Locator
	// Engine answers queries without a stored verdict; default the rule
	// engine over the location database.
	Engine raven.Engine
	// OnOutcome is called exactly once per resolved sighting (after a
	// verdict is stored). It must not block.
	OnOutcome func(sightingID uint64, addr netip.Addr, kind styxv1.OutcomeKind)
	// ReconnectMin and ReconnectMax bound the delay between attempts to
	// reach the leader (defaults 100 ms and 5 s).
	ReconnectMin, ReconnectMax time.Duration
	// LogCheckEvery and LogStallAfter tune the verdict log follower: how
	// often it reads the streams' heads, and how long it may be connected
	// and behind without applying anything before it counts as stalled
	// (defaults 2 s and 30 s, see verdictlog.FollowerConfig).
	LogCheckEvery, LogStallAfter time.Duration
	// DirectWorker, when set, is a worker's gRPC address: the node sends
	// its sightings to that one worker, speaking WorkerService as a
	// scheduler would, instead of to STYX, and follows no log. The
	// end-to-end benchmark uses it to measure the node's path without the
	// scheduler hop. Not for a worker that serves a real leader.
	DirectWorker string
	// PKI is the node's identity: mutual TLS to the scheduler (which
	// accepts it only as this node's id), etcd and NATS, and the
	// certificate of HTTPS. Nil is plaintext (--insecure). The
	// certificate's id names the node unless ID is set, and must equal it.
	PKI *pki.Source
	// HTTPSAddr, when set, also serves the query API over TLS with the
	// PKI certificate.
	HTTPSAddr string
}

// DefaultConfig returns the defaults: a node on one machine.
func DefaultConfig() Config {
	return Config{
		EtcdEndpoints:    []string{"127.0.0.1:2379"},
		NATSURL:          DefaultNATSURL,
		HTTPAddr:         "127.0.0.1:8080",
		DataDir:          "./styx-node-data",
		DBPath:           locdb.DefaultPath,
		LeaseTTL:         5 * time.Second,
		DedupWindow:      10 * time.Minute,
		DedupMax:         1_000_000,
		MaxPending:       1_000_000,
		BatchSize:        1024,
		BatchInterval:    20 * time.Millisecond,
		MaxAddresses:     1000,
		MaxBody:          1 << 20,
		AttackMaxBody:    api.DefaultAttackMaxBody,
		AttackMaxReports: api.DefaultAttackMaxReports,
		AttackEvents:     store.DefaultAttackEvents,
		AttackOutboxMax:  store.DefaultOutboxMax,
		CleanRetention:   verdictlog.DefaultCleanRetention,
		ProxyRetention:   verdictlog.DefaultProxyRetention,
		ThreatsRecent:    threats.DefaultCapacity,
		FollowModels:     true,
		History:          true,
		HistoryMax:       history.DefaultMaxAddrs,
		ShutdownTimeout:  5 * time.Second,
	}
}

// Validate reports a configuration error. An empty ID is valid (New
// derives it).
func (c Config) Validate() error {
	var errs []error
	check := func(bad bool, format string, args ...any) {
		if bad {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(len(c.EtcdEndpoints) == 0, "no etcd endpoints")
	for _, e := range c.EtcdEndpoints {
		check(strings.TrimSpace(e) == "", "empty etcd endpoint")
	}
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		errs = append(errs, fmt.Errorf("http address %q: %w", c.HTTPAddr, err))
	}
	if c.ID != "" {
		if err := keyspace.ValidID(c.ID); err != nil {
			errs = append(errs, fmt.Errorf("node id: %w", err))
		}
	}
	check(c.DataDir == "", "empty data dir")
	check(c.DBPath == "" && c.Locator == nil, "no location database path")
	check(c.LeaseTTL < time.Second, "lease ttl %s below 1s", c.LeaseTTL)
	check(c.DedupWindow < 0, "negative dedup window %s", c.DedupWindow)
	check(c.DedupWindow > 0 && c.DedupMax < 2, "dedup max %d below 2", c.DedupMax)
	check(c.MaxPending < 1, "max pending %d below 1", c.MaxPending)
	check(c.BatchSize < 1, "batch size %d below 1", c.BatchSize)
	check(c.BatchInterval <= 0, "batch interval %s not positive", c.BatchInterval)
	check(c.MaxAddresses < 1, "max addresses %d below 1", c.MaxAddresses)
	check(c.MaxBody < 1, "max body %d below 1", c.MaxBody)
	check(c.AttackToken != "" && len(c.AttackToken) < 16, "attack token shorter than 16 bytes")
	check(c.AttackMaxBody < 1, "attack max body %d below 1", c.AttackMaxBody)
	check(c.AttackMaxReports < 1, "attack max reports %d below 1", c.AttackMaxReports)
	check(c.AttackEvents < 1, "attack events %d below 1", c.AttackEvents)
	check(c.AttackOutboxMax < 1, "attack outbox max %d below 1", c.AttackOutboxMax)
	check(c.CleanRetention <= 0, "clean retention %s not positive", c.CleanRetention)
	check(c.ProxyRetention < c.CleanRetention, "proxy retention %s shorter than clean retention %s", c.ProxyRetention, c.CleanRetention)
	check(c.History && c.HistoryMax < 1, "history max %d below 1", c.HistoryMax)
	check(c.ThreatsRecent < 0 || c.ThreatsRecent > threats.MaxCapacity,
		"threats recent %d outside 0..%d", c.ThreatsRecent, threats.MaxCapacity)
	check(c.ShutdownTimeout <= 0, "shutdown timeout %s not positive", c.ShutdownTimeout)
	check(c.ReconnectMin < 0 || (c.ReconnectMax != 0 && c.ReconnectMax < c.ReconnectMin),
		"reconnect bounds %s..%s", c.ReconnectMin, c.ReconnectMax)
	check(c.LogCheckEvery < 0 || c.LogStallAfter < 0, "negative log check interval %s or stall time %s", c.LogCheckEvery, c.LogStallAfter)
	if c.PKI != nil {
		id := c.PKI.Identity()
		check(id.Role != pki.Node, "identity %s is not a node's", id)
		check(c.ID != "" && c.ID != id.ID, "node id %q but the certificate is %s: the scheduler accepts a node only as its certificate's id", c.ID, id)
		check(c.DirectWorker != "", "direct worker mode is plaintext only (a worker accepts only the scheduler's identity)")
	}
	check(c.HTTPSAddr != "" && c.PKI == nil, "https needs a certificate: give --pki-dir")
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("clusternode: config: %w", err)
	}
	return nil
}

// followsLog reports whether Run follows the verdict log.
func (c Config) followsLog() bool { return c.NATSURL != "" && c.DirectWorker == "" }

// followsModels reports whether Run follows the published model (the
// real-time client), which is what reads the history table.
func (c Config) followsModels() bool {
	return c.FollowModels && c.Engine == nil && c.Locator == nil
}

// DefaultID returns "<host>-<port>" for an HTTP listen address, with
// characters a key element cannot hold replaced by '-'.
func DefaultID(httpAddr string) string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "node"
	}
	_, port, _ := net.SplitHostPort(httpAddr)
	id := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' {
			return r
		}
		return '-'
	}, host+"-"+port)
	return id
}

// Stats are the node's sighting and outcome counters since start.
type Stats struct {
	Submitted    uint64 // sightings created
	NotSubmitted uint64 // addresses not submitted: pending table full
	Deduplicated uint64 // addresses not submitted: seen within the dedup window
	Pending      int    // sightings without outcome
	Resent       uint64 // sightings sent again after a reconnect or leader change

	Verdicts, Expired, Shed, Rejected uint64 // outcomes by kind
	// DuplicateOutcomes counts outcomes for sightings already resolved.
	DuplicateOutcomes uint64

	Connected bool // a Submit stream to the leader is up

	// Log is the verdict log follower's state: connection, stall, and per
	// stream the sequence applied, the head and the lag (zero when the
	// node follows no log).
	Log verdictlog.Status
	// LogMessages counts the log messages applied, LogVerdicts the
	// verdicts in them.
	LogMessages, LogVerdicts uint64

	AttackOutbox     int    // attack reports waiting to be forwarded to the leader
	AttacksForwarded uint64 // attack reports the leader put on the log
	LogAttacksNew    uint64 // attack reports from the log new here
}

// Node is a cluster node.
type Node struct {
	cfg Config
	log zerolog.Logger

	store   *store.Store
	threats *threats.Recent // nil when the threats page is off
	history *history.Table  // nil without Config.History or when not following models
	db      *locdb.DB       // nil when Config.Locator was given
	engine  *raven.Swap
	up      *uplink.Uplink
	// follower follows the verdict log into the store; set by Run (nil
	// before, and when the node follows no log).
	follower atomic.Pointer[verdictlog.Follower]
	// testBeforeApply, when set (by tests, before Run), runs before each
	// burst of the log is applied.
	testBeforeApply func(stream string)
	handler         http.Handler
	reg             *prometheus.Registry
	// leaseLosses counts registration leases lost while running.
	leaseLosses prometheus.Counter

	ready     chan struct{}
	httpAddr  atomic.Pointer[string]
	httpsAddr atomic.Pointer[string]
	started   atomic.Bool

	cliMu sync.Mutex
	cli   *clientv3.Client // set by Run before the uplink starts

	closeOnce sync.Once
	closeErr  error
}

// New opens the node's local state (store, location database) and builds
// its parts; Run brings it onto the network. Call Run once, or Close when
// Run is never called.
func New(cfg Config, log zerolog.Logger) (*Node, error) {
	if cfg.ID == "" {
		cfg.ID = DefaultID(cfg.HTTPAddr)
		if cfg.PKI != nil {
			cfg.ID = cfg.PKI.Identity().ID
		}
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := &Node{
		cfg:   cfg,
		log:   log.With().Str(logging.NodeID, cfg.ID).Logger(),
		reg:   prometheus.NewRegistry(),
		ready: make(chan struct{}),
	}
	ok := false
	defer func() {
		if !ok {
			_ = n.Close()
		}
	}()

	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("clusternode: data dir: %w", err)
	}
	var err error
	loc := cfg.Locator
	if loc == nil {
		if n.db, err = locdb.Open(locdb.Config{Path: cfg.DBPath, KeyPath: cfg.DBKeyPath, SkipVerify: cfg.SkipVerify}); err != nil {
			return nil, fmt.Errorf("clusternode: location database: %w", err)
		}
		loc = n.db
	}
	// The store's hooks: the threats window and the history table follow
	// what lands in it.
	var landed []func([]store.Landed)
	var attacked func([]attacks.Report)
	if cfg.ThreatsRecent > 0 {
		if n.threats, err = threats.New(cfg.ThreatsRecent); err != nil {
			return nil, fmt.Errorf("clusternode: %w", err)
		}
		landed = append(landed, n.threats.Landed)
	}
	if cfg.History && cfg.followsModels() {
		n.history = history.New(history.Config{MaxAddrs: cfg.HistoryMax, Locate: locdb.ASNOf(loc.Lookup)})
		f := nodehistory.New(n.history)
		landed = append(landed, f.Landed)
		attacked = f.Attacked
	}
	if n.store, err = store.Open(store.Config{
		Path:         filepath.Join(cfg.DataDir, StoreFile),
		AttackEvents: cfg.AttackEvents,
		OutboxMax:    cfg.AttackOutboxMax,
		OnVerdicts:   chain(landed),
		OnAttacks:    attacked,
		Retention:    store.Retention{Clean: cfg.CleanRetention, Proxy: cfg.ProxyRetention},
	}, n.log); err != nil {
		return nil, err
	}
	// Before the uplink runs and the API serves, so nothing lands during
	// the scans. A store that cannot be read whole does not stop the node:
	// the threats window and the history table hold what was read and
	// follow the store from there. With both, one pass over the verdicts
	// fills both.
	start := time.Now()
	switch {
	case n.history != nil:
		scan := &fillScan{Scanner: n.store, threats: n.threats}
		st, err := nodehistory.Fill(n.history, scan, cfg.HistoryMax)
		z := n.history.Sizes()
		level := zerolog.InfoLevel
		if err != nil {
			level = zerolog.WarnLevel
		}
		n.log.WithLevel(level).Err(err).Int("verdicts", st.Verdicts).Int("attacked", st.Attacked).Int("skipped", st.Skipped).
			Int("addresses", z.Addrs).Dur("took", time.Since(start)).Msg("history table loaded from the store")
		if err := nodehistory.Register(n.reg, n.history); err != nil {
			return nil, fmt.Errorf("clusternode: history metrics: %w", err)
		}
		if n.threats != nil {
			n.threatsFilled(scan.err, start)
		}
	case n.threats != nil:
		n.threatsFilled(n.threats.Fill(n.store), start)
	}
	engine := cfg.Engine
	if engine == nil {
		engine = raven.NewRule(loc)
	}
	// The query path answers through a Swap, so that a published model
	// replaces the rule live (see Run).
	n.engine = raven.NewSwap(engine)

	ucfg := uplink.Config{
		NodeID:        cfg.ID,
		Leaders:       n.leaders,
		DirectWorker:  cfg.DirectWorker,
		Store:         n.store,
		Outbox:        n.store,
		DedupWindow:   cfg.DedupWindow,
		DedupMax:      cfg.DedupMax,
		MaxPending:    cfg.MaxPending,
		BatchSize:     cfg.BatchSize,
		BatchInterval: cfg.BatchInterval,
		BackoffMin:    cfg.ReconnectMin,
		BackoffMax:    cfg.ReconnectMax,
		OnOutcome:     cfg.OnOutcome,
	}
	if cfg.PKI != nil {
		ucfg.DialOptions = append(ucfg.DialOptions, grpcauth.DialOption(cfg.PKI, pki.AnyOf(pki.Scheduler)))
		if err := cfg.PKI.Register(n.reg, "styx_node"); err != nil {
			return nil, err
		}
	}
	if cfg.followsLog() {
		ucfg.LogStatus = n.logReport
	}
	n.up, err = uplink.New(ucfg, n.log)
	if err != nil {
		return nil, fmt.Errorf("clusternode: %w", err)
	}
	if err := n.up.Register(n.reg); err != nil {
		return nil, fmt.Errorf("clusternode: uplink metrics: %w", err)
	}
	if err := n.store.Register(n.reg); err != nil {
		return nil, fmt.Errorf("clusternode: store metrics: %w", err)
	}
	n.leaseLosses = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "styx_node", Name: "lease_losses_total",
		Help: "Times the node's registration lease was lost while running (it registered again).",
	})
	for _, c := range []prometheus.Collector{
		n.leaseLosses,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "styx_node", Name: "last_seen_dropped_total",
			Help: "Last-seen updates dropped because the unflushed table was full.",
		}, func() float64 { return float64(n.store.TouchesDropped()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "styx_node", Name: "attack_outbox",
			Help: "Attack reports accepted here and waiting to be forwarded to the leader.",
		}, func() float64 { return float64(n.store.OutboxLen()) }),
	} {
		if err := n.reg.Register(c); err != nil {
			return nil, fmt.Errorf("clusternode: metrics: %w", err)
		}
	}

	n.handler, err = api.New(api.Config{
		NodeID:           cfg.ID,
		Store:            n.store,
		Locator:          loc,
		Engine:           n.engine,
		Sighted:          func(a netip.Addr, t time.Time) { n.up.Offer(a, t) },
		MaxAddresses:     cfg.MaxAddresses,
		MaxBody:          cfg.MaxBody,
		Registerer:       n.reg,
		Gatherer:         n.reg,
		Health:           n.health,
		Unhealthy:        n.unhealthy,
		AttackToken:      cfg.AttackToken,
		Attacks:          attackSink{n},
		AttackMaxBody:    cfg.AttackMaxBody,
		AttackMaxReports: cfg.AttackMaxReports,
		Threats:          n.threats,
	}, n.log)
	if err != nil {
		return nil, fmt.Errorf("clusternode: %w", err)
	}
	ok = true
	return n, nil
}

// leaders observes the leader through the etcd client Run created.
func (n *Node) leaders(ctx context.Context) <-chan keyspace.LeaderInfo {
	n.cliMu.Lock()
	cli := n.cli
	n.cliMu.Unlock()
	return leader.Observe(ctx, cli)
}

// ID is the node's id.
func (n *Node) ID() string { return n.cfg.ID }

// ModelVersion names the engine answering queries without a stored verdict.
func (n *Node) ModelVersion() string { return n.engine.ModelVersion() }

// Ready is closed once the query API listens.
func (n *Node) Ready() <-chan struct{} { return n.ready }

// HTTPSAddr is the address the query API listens on over TLS, "" before
// Ready or without HTTPS.
func (n *Node) HTTPSAddr() string {
	if p := n.httpsAddr.Load(); p != nil {
		return *p
	}
	return ""
}

// HTTPAddr is the address the query API listens on, "" before Ready.
func (n *Node) HTTPAddr() string {
	if p := n.httpAddr.Load(); p != nil {
		return *p
	}
	return ""
}

// Handler is the query API's HTTP handler (also usable without Run).
func (n *Node) Handler() http.Handler { return n.handler }

// Submit offers addresses as if they had been queried: each one not seen
// within the dedup window becomes a sighting. It returns how many did.
func (n *Node) Submit(addrs ...netip.Addr) int {
	now := time.Now()
	c := 0
	for _, a := range addrs {
		if n.up.Offer(a, now) {
			c++
		}
	}
	return c
}

// Stats returns the sighting and outcome counters.
func (n *Node) Stats() Stats {
	s := n.up.Stats()
	return Stats{
		Submitted: s.Submitted, NotSubmitted: s.NotSubmitted, Deduplicated: s.Deduplicated,
		Pending: s.Pending, Resent: s.Resent,
		Verdicts: s.Verdicts, Expired: s.Expired, Shed: s.Shed, Rejected: s.Rejected,
		DuplicateOutcomes: s.DuplicateOutcomes,
		Connected:         s.Connected,
		Log:               n.logStatus(),
		LogMessages:       s.LogMessages, LogVerdicts: s.LogVerdicts,
		AttackOutbox:     n.store.OutboxLen(),
		AttacksForwarded: s.AttacksForwarded,
		LogAttacksNew:    s.LogAttacksNew,
	}
}

// logStatus is the follower's state (zero without one).
func (n *Node) logStatus() verdictlog.Status {
	if f := n.follower.Load(); f != nil {
		return f.Status()
	}
	return verdictlog.Status{}
}

// logReport is the log position the uplink reports to the leader.
func (n *Node) logReport() *styxv1.NodeStatus {
	st := n.logStatus()
	m, sec := st.Lag()
	return &styxv1.NodeStatus{LogLagMessages: m, LogLagSeconds: sec, LogConnected: st.Connected, LogStalled: st.Stalled}
}

// health is what /healthz shows beside its status: the Submit stream, the
// pending sightings, the model answering queries, and the verdict log
// follower (absent when the node follows no log).
func (n *Node) health() map[string]any {
	s := n.up.Stats()
	h := map[string]any{"uplink_connected": s.Connected, "pending": s.Pending, "model": n.engine.ModelVersion()}
	if f := n.follower.Load(); f != nil {
		st := f.Status()
		streams := make(map[string]any, len(st.Streams))
		for _, ss := range st.Streams {
			streams[ss.Stream] = map[string]any{
				"applied": ss.Applied, "head": ss.Head,
				"lag_messages": ss.Lag, "lag_seconds": math.Round(ss.LagSeconds*1000) / 1000,
			}
		}
		h["log"] = map[string]any{"connected": st.Connected, "stalled": st.Stalled, "streams": streams}
	}
	return h
}

// unhealthy makes /healthz a 503 while the verdict log follower is stalled:
// connected and behind, but applying nothing.
func (n *Node) unhealthy() string {
	if f := n.follower.Load(); f != nil && f.Status().Stalled {
		return "verdict log follower stalled: connected and behind, but applying nothing"
	}
	return ""
}

// applyLog is the follower's Apply: the uplink writes each burst to the
// store with the stream's cursor.
func (n *Node) applyLog(stream string, msgs []verdictlog.Message) error {
	if n.testBeforeApply != nil {
		n.testBeforeApply(stream)
	}
	return n.up.ApplyLog(stream, msgs)
}

// newFollower connects to the verdict log and builds the follower of both
// streams, its metrics registered. The caller closes nc once the follower
// has stopped.
func (n *Node) newFollower() (*verdictlog.Follower, *nats.Conn, error) {
	log := logging.For(n.log, "verdictlog")
	nc, err := verdictlog.Connect(n.cfg.NATSURL, "styx-node-"+n.cfg.ID, log, verdictlog.TLS(n.cfg.PKI)...)
	if err != nil {
		return nil, nil, fmt.Errorf("clusternode: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("clusternode: jetstream: %w", err)
	}
	f, err := verdictlog.NewFollower(verdictlog.FollowerConfig{
		JS:         js,
		Cursor:     n.store.Cursor,
		Apply:      n.applyLog,
		CheckEvery: n.cfg.LogCheckEvery,
		StallAfter: n.cfg.LogStallAfter,
	}, log)
	if err == nil {
		err = f.Register(n.reg, "styx_node")
	}
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("clusternode: verdict log follower: %w", err)
	}
	return f, nc, nil
}

// Attacks returns the attack history the node holds for addr: the number
// of distinct reports per kind, and the newest attack's time.
func (n *Node) Attacks(addr netip.Addr) (total uint64, byKind [attacks.NumKinds]uint64, last time.Time, err error) {
	h, err := n.store.Attacks(addr)
	if err != nil {
		return 0, byKind, time.Time{}, err
	}
	return h.Total(), h.Counts, h.Last(), nil
}

// attackSink stores reports accepted here and kicks the uplink, which
// forwards the store's outbox to the leader.
type attackSink struct{ n *Node }

func (s attackSink) AddAttacks(rs []attacks.Report) (store.AttackResult, error) {
	res, err := s.n.store.AddAttacks(rs)
	if err == nil && res.New > 0 {
		s.n.up.KickAttacks()
	}
	return res, err
}

// Run serves until ctx ends, then shuts down in order: stop accepting HTTP
// (bounded by ShutdownTimeout), flush and stop the uplink, stop following
// the verdict log and close the NATS connection, revoke the registration
// lease, close the store. It returns nil after a clean stop.
func (n *Node) Run(ctx context.Context) (err error) {
	if !n.started.CompareAndSwap(false, true) {
		return errors.New("clusternode: Run called twice")
	}
	defer func() {
		if cerr := n.Close(); err == nil {
			err = cerr
		}
	}()

	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   n.cfg.EtcdEndpoints,
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
		TLS:         pki.ClientTLS(n.cfg.PKI, pki.Etcd),
	})
	if err != nil {
		return fmt.Errorf("clusternode: etcd client: %w", err)
	}
	defer cli.Close()
	n.cliMu.Lock()
	n.cli = cli
	n.cliMu.Unlock()

	var follower *verdictlog.Follower
	var nc *nats.Conn
	if n.cfg.followsLog() {
		if follower, nc, err = n.newFollower(); err != nil {
			return err
		}
		defer nc.Close() // closed after the follower stops; again here on an early return
		n.follower.Store(follower)
	} else {
		n.log.Warn().Msg("following no verdict log: only the verdicts of this node's own sightings are stored")
	}

	ln, err := net.Listen("tcp", n.cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("clusternode: listen: %w", err)
	}
	addr := ln.Addr().String()
	n.httpAddr.Store(&addr)
	srv := &http.Server{
		Handler:           n.handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
	registrar, err := registration.New(registration.Config{
		Client: cli,
		Key:    keyspace.NodeKey(n.cfg.ID),
		TTL:    n.cfg.LeaseTTL,
		Value: func() (string, error) {
			return keyspace.Encode(keyspace.NodeRegistration{ID: n.cfg.ID, HTTPAddr: addr, Host: hostname(), Build: build()})
		},
		OnLost: func() { n.leaseLosses.Inc() },
	}, n.log)
	if err != nil {
		_ = ln.Close()
		return fmt.Errorf("clusternode: %w", err)
	}

	var tlsSrv *http.Server
	var tln net.Listener
	if n.cfg.HTTPSAddr != "" {
		if tln, err = net.Listen("tcp", n.cfg.HTTPSAddr); err != nil {
			_ = ln.Close()
			return fmt.Errorf("clusternode: listen https: %w", err)
		}
		a := tln.Addr().String()
		n.httpsAddr.Store(&a)
		tlsSrv = &http.Server{
			Handler:           n.handler,
			TLSConfig:         n.cfg.PKI.HTTPSConfig(),
			ReadHeaderTimeout: srv.ReadHeaderTimeout,
			ReadTimeout:       srv.ReadTimeout,
			WriteTimeout:      srv.WriteTimeout,
			IdleTimeout:       srv.IdleTimeout,
			MaxHeaderBytes:    srv.MaxHeaderBytes,
		}
	}

	httpErr := make(chan error, 2)
	var serving sync.WaitGroup
	serving.Go(func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			httpErr <- fmt.Errorf("clusternode: serve http: %w", err)
		}
	})
	if tlsSrv != nil {
		serving.Go(func() {
			if err := tlsSrv.ServeTLS(tln, "", ""); !errors.Is(err, http.ErrServerClosed) {
				httpErr <- fmt.Errorf("clusternode: serve https: %w", err)
			}
		})
	}
	go func() { serving.Wait(); close(httpErr) }()
	upCtx, stopUplink := context.WithCancel(context.WithoutCancel(ctx))
	upDone := start(func() error { return n.up.Run(upCtx) })
	regCtx, stopRegistrar := context.WithCancel(context.WithoutCancel(ctx))
	regDone := start(func() error { return registrar.Run(regCtx) })
	storeCtx, stopStore := context.WithCancel(context.WithoutCancel(ctx))
	storeDone := start(func() error { return n.store.Run(storeCtx) })
	logCtx, stopLog := context.WithCancel(context.WithoutCancel(ctx))
	logDone := start(func() error {
		if follower == nil {
			return nil
		}
		if err := follower.Run(logCtx); err != nil {
			n.log.Error().Err(err).Msg("verdict log follower stopped: no verdicts from the log until restart")
		}
		return nil
	})

	// The real-time client: the published model answers queries without
	// a stored verdict, with the features this node has at hand.
	modelsCtx, stopModels := context.WithCancel(context.WithoutCancel(ctx))
	modelsDone := start(func() error {
		if !n.cfg.followsModels() {
			return nil
		}
		loader := n.loader()
		rollout.New(rollout.Config{
			Client: cli, WorkerID: "node-" + n.cfg.ID, Load: loader.Load, Set: n.engine.Set, Locator: n.db,
		}, n.log).Run(modelsCtx)
		return nil
	})

	close(n.ready)
	n.log.Info().Str("http_addr", addr).Msg("node serving")

	select {
	case <-ctx.Done():
	case err = <-httpErr:
	}
	n.log.Info().Msg("node shutting down")

	// 1. Stop accepting HTTP; let requests in flight finish.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), n.cfg.ShutdownTimeout)
	if serr := srv.Shutdown(sctx); serr != nil {
		n.log.Warn().Err(serr).Msg("http shutdown deadline passed, closing connections")
		_ = srv.Close()
	}
	if tlsSrv != nil && tlsSrv.Shutdown(sctx) != nil {
		_ = tlsSrv.Close()
	}
	cancel()
	for herr := range httpErr {
		if err == nil {
			err = herr
		}
	}
	stopModels()
	<-modelsDone
	// 2. Flush what is queued to the leader and stop the uplink.
	stopUplink()
	<-upDone
	// 3. Stop following the log (a burst being applied is committed or
	// not at all) and close the connection.
	stopLog()
	<-logDone
	if nc != nil {
		nc.Close()
	}
	// 4. Leave: revoke the registration lease.
	stopRegistrar()
	<-regDone
	// 5. Close the store (the deferred Close flushes last-seen times).
	stopStore()
	<-storeDone
	n.log.Info().Msg("node stopped")
	return err
}

// threatsFilled logs the threats window's start-up fill, begun at start.
func (n *Node) threatsFilled(err error, start time.Time) {
	if err != nil {
		n.log.Warn().Err(err).Int(logging.Count, n.threats.Len()).Msg("threats page: recent proxies only partly loaded from the store")
		return
	}
	n.log.Info().Int(logging.Count, n.threats.Len()).Dur("took", time.Since(start)).Msg("recent proxies loaded from the store")
}

// fillScan is the store as the history table's start-up fill reads it,
// with the threats window (when not nil) filled from the same pass over
// the verdicts, so that the start-up reads them once.
type fillScan struct {
	nodehistory.Scanner
	threats *threats.Recent
	err     error // the verdict scan's
}

func (s *fillScan) ScanVerdicts(want func(time.Time) bool, fn func(netip.Addr, verdict.Verdict)) error {
	if s.threats == nil {
		return s.Scanner.ScanVerdicts(want, fn)
	}
	s.err = s.Scanner.ScanVerdicts(func(t time.Time) bool {
		w := want(t) // once per verdict, whatever the window wants
		return s.threats.Wants(t) || w
	}, func(a netip.Addr, v verdict.Verdict) {
		// Each side keeps only what it would have wanted.
		s.threats.Take(a, v)
		fn(a, v)
	})
	return s.err
}

// loader builds the engines of published models: a schema 2 model reads
// the node's history table (a zero history block without one).
func (n *Node) loader() *modelengine.Loader { return modelengine.New(n.db, n.history) }

// chain returns one OnVerdicts hook calling fs in order (nil: none).
func chain(fs []func([]store.Landed)) func([]store.Landed) {
	switch len(fs) {
	case 0:
		return nil
	case 1:
		return fs[0]
	}
	return func(vs []store.Landed) {
		for _, f := range fs {
			f(vs)
		}
	}
}

// start runs f in a goroutine; the channel is closed when it returns.
func start(f func() error) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = f() // these components report through logs and counters
	}()
	return done
}

// Close releases the local state (store, location database). Run calls
// it; call it only when Run is never called. It is idempotent.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		var errs []error
		if n.store != nil {
			errs = append(errs, n.store.Close())
		}
		if n.db != nil {
			errs = append(errs, n.db.Close())
		}
		n.closeErr = errors.Join(errs...)
	})
	return n.closeErr
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil {
		return ""
	}
	return h
}

// build names the binary's version: its module version, else its VCS
// revision, else "dev".
func build() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" {
			return s.Value
		}
	}
	return "dev"
}
