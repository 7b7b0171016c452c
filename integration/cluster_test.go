package integration

import (
	"context"
	"fmt"
	"github.com/nats-io/nats.go"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/styx-inference/styx/clusternode"
	"github.com/styx-inference/styx/pkg/embedetcd"
	"github.com/styx-inference/styx/pkg/embedetcd/etcdtest"
	"github.com/styx-inference/styx/pkg/embednats/natstest"
	"github.com/styx-inference/styx/pkg/etcdauth"
	"github.com/styx-inference/styx/pkg/locdb"
	"github.com/styx-inference/styx/pkg/pki"
	"github.com/styx-inference/styx/pkg/pki/pkitest"
	"github.com/styx-inference/styx/pkg/raven"
	"github.com/styx-inference/styx/pkg/testwait"
	"github.com/styx-inference/styx/pkg/verdict"
	"github.com/styx-inference/styx/pkg/verdictlog"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
	"github.com/styx-inference/styx/scheduler"
	"github.com/styx-inference/styx/worker"
)

// cluster is an in-process STYX: embedded etcd, one scheduler, workers and
// cluster nodes, each running its real Run loop and speaking real gRPC on
// 127.0.0.1.
type cluster struct {
	tb    testing.TB
	nats  *natstest.Server // the verdict log
	etcd  *embedetcd.Server
	cli   *clientv3.Client
	sched *scheduler.Scheduler
	stops []func() // in start order; run in reverse by close
	// pki, when set, runs every hop over mutual TLS: each process has its
	// own identity, etcd its permissions (granted by cli, an admin).
	pki *pkitest.PKI
}

func newCluster(tb testing.TB, mod func(*scheduler.Config)) *cluster {
	tb.Helper()
	c := newEtcdOnly(tb)
	c.startScheduler(mod)
	return c
}

// newSecureCluster is newCluster over mutual TLS: etcd with client
// certificates and per-identity permissions, JetStream with certificate
// authentication, and each scheduler, worker and node its own identity.
func newSecureCluster(tb testing.TB, mod func(*scheduler.Config)) *cluster {
	tb.Helper()
	c := newSecureEtcdOnly(tb)
	c.startScheduler(mod)
	return c
}

// newSecureEtcdOnly is newEtcdOnly over mutual TLS.
func newSecureEtcdOnly(tb testing.TB) *cluster {
	tb.Helper()
	p := pkitest.New(tb)
	ns := natstest.StartTLS(tb, p)
	srv, cli := etcdtest.StartSecure(tb, p)
	c := &cluster{tb: tb, nats: ns, etcd: srv, cli: cli, pki: p}
	tb.Cleanup(c.close)
	return c
}

// identity issues role/id its certificate and, for etcd, its permissions;
// nil for a plaintext cluster.
func (c *cluster) identity(role pki.Role, id string) *pki.Source {
	c.tb.Helper()
	if c.pki == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := etcdauth.Grant(ctx, c.cli, pki.Identity{Role: role, ID: id}); err != nil {
		c.tb.Fatal(err)
	}
	return c.pki.Source(c.tb, role, id)
}

// natsOpts connect the tests' own NATS clients: as an admin over mutual
// TLS, or none for a plaintext cluster.
func (c *cluster) natsOpts(tb testing.TB) []nats.Option {
	tb.Helper()
	if c.pki == nil {
		return nil
	}
	return verdictlog.TLS(c.pki.Source(tb, pki.Admin, "cluster-test"))
}

// newEtcdOnly starts the cluster's etcd and its verdict log (JetStream),
// and nothing else.
func newEtcdOnly(tb testing.TB) *cluster {
	tb.Helper()
	ns := natstest.Start(tb) // stopped after c.close, which is registered later
	srv, err := embedetcd.Start(embedetcd.Config{Dir: tb.TempDir(), ClientAddr: "127.0.0.1:0"})
	if err != nil {
		tb.Fatal(err)
	}
	cli, err := srv.Client()
	if err != nil {
		srv.Close()
		tb.Fatal(err)
	}
	c := &cluster{tb: tb, nats: ns, etcd: srv, cli: cli}
	c.stops = append(c.stops, func() { cli.Close(); srv.Close() })
	tb.Cleanup(c.close)
	return c
}

func (c *cluster) startScheduler(mod func(*scheduler.Config)) {
	tb := c.tb
	tb.Helper()
	cfg := scheduler.DefaultConfig()
	cfg.ID = "sched-1"
	cfg.Etcd = c.cli
	cfg.GRPCAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.LeaseTTL = 2 * time.Second
	cfg.NATSURL = c.nats.URL()
	if mod != nil {
		mod(&cfg)
	}
	if c.pki != nil {
		cfg.Etcd, cfg.EtcdEndpoints = nil, []string{c.etcd.Endpoint()}
		cfg.PKI = c.identity(pki.Scheduler, cfg.ID)
	}
	s, err := scheduler.New(cfg, quiet(tb))
	if err != nil {
		tb.Fatal(err)
	}
	c.sched = s
	c.run("scheduler", s.Run)
	<-s.Ready()
	testwait.For(tb, 15*time.Second, "the scheduler leads", s.IsLeader)
}

// run starts fn in a goroutine and registers its stop.
func (c *cluster) run(name string, fn func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	c.stops = append(c.stops, func() {
		cancel()
		select {
		case err := <-done:
			if err != nil && err != context.Canceled {
				c.tb.Errorf("%s: %v", name, err)
			}
		case <-time.After(60 * time.Second):
			c.tb.Errorf("%s did not stop within 60s", name)
		}
	})
}

func (c *cluster) close() {
	for i := len(c.stops) - 1; i >= 0; i-- {
		c.stops[i]()
	}
	c.stops = nil
}

// addWorker starts a worker with the given engine and capacity.
func (c *cluster) addWorker(id string, eng raven.Engine, capacity int) *worker.Worker {
	c.tb.Helper()
	return c.addWorkerWith(id, func(cfg *worker.Config) { cfg.Engine, cfg.Capacity = eng, capacity })
}

// addWorkerWith starts a worker whose configuration mod adjusts.
func (c *cluster) addWorkerWith(id string, mod func(*worker.Config)) *worker.Worker {
	c.tb.Helper()
	cfg := worker.DefaultConfig()
	cfg.Etcd = c.cli
	cfg.ID = id
	cfg.Host = "host-" + id
	cfg.LeaseTTL = 2 * time.Second
	cfg.DrainTimeout = 5 * time.Second
	cfg.NATSURL = c.nats.URL()
	mod(&cfg)
	if c.pki != nil {
		cfg.Etcd, cfg.EtcdEndpoints = nil, []string{c.etcd.Endpoint()}
		cfg.PKI = c.identity(pki.Worker, cfg.ID)
	}
	w, err := worker.New(cfg, quiet(c.tb))
	if err != nil {
		c.tb.Fatal(err)
	}
	c.run("worker "+id, w.Run)
	<-w.Ready()
	return w
}

// outcomes records every outcome a node reports, by sighting id.
type outcomes struct {
	mu     sync.Mutex
	byID   map[uint64]styxv1.OutcomeKind
	twice  int
	byKind map[styxv1.OutcomeKind]int
	total  atomic.Int64
}

func newOutcomes() *outcomes {
	return &outcomes{byID: map[uint64]styxv1.OutcomeKind{}, byKind: map[styxv1.OutcomeKind]int{}}
}

func (o *outcomes) record(id uint64, _ netip.Addr, kind styxv1.OutcomeKind) {
	o.mu.Lock()
	if _, ok := o.byID[id]; ok {
		o.twice++
	}
	o.byID[id] = kind
	o.byKind[kind]++
	o.mu.Unlock()
	o.total.Add(1)
}

// addNode starts a cluster node over the real location database, reporting
// outcomes to o.
func (c *cluster) addNode(id string, o *outcomes, mod func(*clusternode.Config)) *clusternode.Node {
	c.tb.Helper()
	cfg := clusternode.DefaultConfig()
	cfg.ID = id
	cfg.EtcdEndpoints = []string{c.etcd.Endpoint()}
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.DataDir = c.tb.TempDir()
	cfg.LeaseTTL = 2 * time.Second
	cfg.NATSURL = c.nats.URL()
	cfg.OnOutcome = o.record
	if mod != nil {
		mod(&cfg)
	}
	if c.pki != nil {
		cfg.PKI = c.identity(pki.Node, cfg.ID)
	}
	n, err := clusternode.New(cfg, quiet(c.tb))
	if err != nil {
		c.tb.Fatal(err)
	}
	c.run("node "+id, n.Run)
	<-n.Ready()
	return n
}

func quiet(tb testing.TB) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(tb)).Level(zerolog.WarnLevel)
}

// countingEngine is the rule engine over the real database, counting how
// often each address is examined across every worker that shares it.
type countingEngine struct {
	raven.Engine
	mu   sync.Mutex
	seen map[netip.Addr]int
}

func (e *countingEngine) Examine(a netip.Addr) verdict.Verdict {
	e.mu.Lock()
	e.seen[a]++
	e.mu.Unlock()
	return e.Engine.Examine(a)
}

func openDB(tb testing.TB) *locdb.DB {
	tb.Helper()
	db, err := locdb.Open(locdb.Config{Path: locdb.DefaultPath})
	if err != nil {
		tb.Skipf("the location database is needed (make deps installs it): %v", err)
	}
	tb.Cleanup(func() { db.Close() })
	return db
}

// addrAt returns the i-th address of a test range: IPv4 from 1.0.0.0 up,
// every eighth one IPv6, so both families travel the whole path.
func addrAt(i int) netip.Addr {
	if i%8 == 7 {
		var b [16]byte
		b[0], b[1] = 0x2a, 0x00
		b[12], b[13], b[14], b[15] = byte(i>>24), byte(i>>16), byte(i>>8), byte(i)
		return netip.AddrFrom16(b)
	}
	v := uint32(1<<24 + i*13)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// TestHundredThousandSightingsTwoNodesThreeWorkers is the pipeline's main
// promise: every sighting ends in exactly one outcome at its submitter, and
// an address both nodes saw is inferred once. It runs over mutual TLS, as
// production does: every process its own certificate, etcd its permissions.
func TestHundredThousandSightingsTwoNodesThreeWorkers(t *testing.T) {
	db := openDB(t)
	eng := &countingEngine{Engine: raven.NewRule(db), seen: map[netip.Addr]int{}}
	// No process fails here, so leases are long: on a loaded machine a 2 s
	// lease can lapse, and a new term re-examines what was in flight (as it
	// should), which this test would count as a double examination.
	const ttl = 10 * time.Second
	c := newSecureCluster(t, func(cfg *scheduler.Config) { cfg.LeaseTTL = ttl })
	for i := range 3 {
		c.addWorkerWith(fmt.Sprintf("w%d", i), func(cfg *worker.Config) {
			cfg.Engine, cfg.Capacity, cfg.LeaseTTL = eng, 4, ttl
		})
	}
	const perNode, overlap = 55_000, 10_000 // 110,000 sightings, 100,000 addresses
	o1, o2 := newOutcomes(), newOutcomes()
	longLease := func(cfg *clusternode.Config) { cfg.LeaseTTL = ttl }
	n1 := c.addNode("node-1", o1, longLease)
	n2 := c.addNode("node-2", o2, longLease)

	addrs := func(from, to int) []netip.Addr {
		out := make([]netip.Addr, 0, to-from)
		for i := from; i < to; i++ {
			out = append(out, addrAt(i))
		}
		return out
	}
	// The nodes submit concurrently; the shared range [45,000, 55,000) is
	// seen by both.
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); submitAll(t, n1, addrs(0, perNode)) }()
	go func() { defer wg.Done(); submitAll(t, n2, addrs(perNode-overlap, 2*perNode-overlap)) }()
	wg.Wait()

	testwait.For(t, 3*time.Minute, "an outcome for every sighting", func() bool {
		return o1.total.Load() >= perNode && o2.total.Load() >= perNode
	})
	time.Sleep(200 * time.Millisecond) // a late duplicate would show now
	for name, o := range map[string]*outcomes{"node-1": o1, "node-2": o2} {
		o.mu.Lock()
		if len(o.byID) != perNode || o.twice != 0 {
			t.Errorf("%s: %d sightings resolved (want %d), %d resolved twice", name, len(o.byID), perNode, o.twice)
		}
		if o.byKind[styxv1.OutcomeKind_OUTCOME_KIND_VERDICT] != perNode {
			t.Errorf("%s: outcomes by kind %v, want %d verdicts", name, o.byKind, perNode)
		}
		o.mu.Unlock()
	}
	for _, n := range []*clusternode.Node{n1, n2} {
		if st := n.Stats(); st.DuplicateOutcomes != 0 || st.Pending != 0 {
			t.Errorf("%s: stats %+v", n.ID(), st)
		}
	}
	eng.mu.Lock()
	defer eng.mu.Unlock()
	if len(eng.seen) != 2*perNode-overlap {
		t.Errorf("%d distinct addresses examined, want %d", len(eng.seen), 2*perNode-overlap)
	}
	twice := 0
	for _, k := range eng.seen {
		if k > 1 {
			twice++
		}
	}
	if twice != 0 {
		t.Errorf("%d addresses examined more than once", twice)
	}
}

// submitAll offers addrs to n in chunks, retrying while the node's pending
// table is full.
func submitAll(t *testing.T, n *clusternode.Node, addrs []netip.Addr) {
	for len(addrs) > 0 {
		k := min(len(addrs), 1000)
		if got := n.Submit(addrs[:k]...); got != k {
			t.Errorf("%s: %d of %d addresses submitted", n.ID(), got, k)
			return
		}
		addrs = addrs[k:]
	}
}
