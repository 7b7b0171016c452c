package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/styx-inference/styx/pkg/attacks"
	"github.com/styx-inference/styx/pkg/grpcauth"
	"github.com/styx-inference/styx/pkg/grpcstop"
	"github.com/styx-inference/styx/pkg/history"
	"github.com/styx-inference/styx/pkg/keyspace"
	"github.com/styx-inference/styx/pkg/locdb"
	"github.com/styx-inference/styx/pkg/logging"
	"github.com/styx-inference/styx/pkg/modelengine"
	"github.com/styx-inference/styx/pkg/pki"
	"github.com/styx-inference/styx/pkg/raven"
	"github.com/styx-inference/styx/pkg/registration"
	"github.com/styx-inference/styx/pkg/rollout"
	"github.com/styx-inference/styx/pkg/verdictlog"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
	"github.com/styx-inference/styx/worker/internal/attackfeed"
	"github.com/styx-inference/styx/worker/internal/numa"
	"github.com/styx-inference/styx/worker/internal/service"
)

// Timeouts of the shutdown steps that have no flag.
const (
	// refreshTimeout bounds writing Draining=true to etcd.
	refreshTimeout = 2 * time.Second
	// gracefulStopTimeout bounds GracefulStop before Stop cuts the rest.
	gracefulStopTimeout = 5 * time.Second
	// metricsShutdownTimeout bounds the /metrics server's shutdown.
	metricsShutdownTimeout = 2 * time.Second
)

// gRPC keepalive: the server pings an idle scheduler connection every
// keepaliveTime; clients may ping no more often than keepaliveMinTime.
const (
	keepaliveTime    = 15 * time.Second
	keepaliveTimeout = 5 * time.Second
	keepaliveMinTime = 5 * time.Second
)

// Worker is one styx-worker: a WorkerService on gRPC, registered in etcd.
// Several Workers can run in one process (nothing is global) as long as
// none of them pins (NUMANode "").
type Worker struct {
	cfg   Config
	base  zerolog.Logger // without a component, for the sub-components
	log   zerolog.Logger
	ready chan struct{}
	drain chan struct{}
	once  sync.Once // closes drain
	leave chan struct{}
	left  sync.Once // closes leave
	ran   sync.Once

	mu          sync.Mutex // guards the fields below, set before ready closes
	addr        string
	advertise   string
	id          string
	metricsAddr string
	attacks     *attacks.Table       // nil when the attack feed is off
	history     *history.Table       // nil without History, the attack feed or a database
	feed        *attackfeed.Follower // nil when the attack feed is off
	guard       *grpcauth.Guard      // authorises gRPC calls; set before ready closes
}

// Rules are who may call a worker: the scheduler only (and admins
// reflection; anyone authenticated may ask its health).
var Rules = grpcauth.Rules{
	styxv1.WorkerService_ServiceDesc.ServiceName: {pki.Scheduler},
	healthpb.Health_ServiceDesc.ServiceName:      pki.Roles,
	"grpc.reflection.v1.ServerReflection":        {pki.Admin},
	"grpc.reflection.v1alpha.ServerReflection":   {pki.Admin},
}

// Guard is the gRPC guard (its refusals), after Ready.
func (w *Worker) Guard() *grpcauth.Guard {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.guard
}

// New checks cfg and returns a Worker; Run starts it. NUMANode AllNodes is
// refused here: it is Supervise's job.
func New(cfg Config, log zerolog.Logger) (*Worker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.NUMANode == AllNodes {
		return nil, fmt.Errorf("worker config: numa node %q runs one process per node: use Supervise", AllNodes)
	}
	if cfg.Host == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("host name: %w", err)
		}
		cfg.Host = h
	}
	if cfg.Build == "" {
		cfg.Build = buildVersion()
	}
	return &Worker{
		cfg:   cfg,
		base:  log,
		log:   logging.For(log, "worker"),
		ready: make(chan struct{}),
		drain: make(chan struct{}),
		leave: make(chan struct{}),
	}, nil
}

// Ready is closed once the gRPC listener is bound and serving; Addr, ID and
// AdvertiseAddr are valid from then on. It stays open if Run fails before.
func (w *Worker) Ready() <-chan struct{} { return w.ready }

// Addr is the bound gRPC address ("" before Ready).
func (w *Worker) Addr() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.addr
}

// AdvertiseAddr is the address registered for schedulers ("" before Ready).
func (w *Worker) AdvertiseAddr() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.advertise
}

// ID is the worker id ("" before Ready).
func (w *Worker) ID() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.id
}

// AttackTable is the table the attack feed fills (nil when AttackFeed is
// off, or before Ready).
func (w *Worker) AttackTable() *attacks.Table {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.attacks
}

// History is the table the verdict log's verdicts and attack reports are
// folded into (nil when History or AttackFeed is off, without a location
// database, or before Ready).
func (w *Worker) History() *history.Table {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.history
}

// LogStatus is the state of the attack feed's verdict log follower: the
// NATS connection, and per stream the sequence applied and the lag. ok is
// false when AttackFeed is off, or before Ready.
func (w *Worker) LogStatus() (st verdictlog.Status, ok bool) {
	w.mu.Lock()
	f := w.feed
	w.mu.Unlock()
	if f == nil {
		return verdictlog.Status{}, false
	}
	return f.Status(), true
}

// MetricsAddr is the bound /metrics address ("" when off or before Ready).
func (w *Worker) MetricsAddr() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.metricsAddr
}

// Drain starts draining without stopping: health turns NOT_SERVING, the
// registration says draining, no credit is granted and new batches are
// refused; in-flight batches are still answered. Run keeps serving until
// its context ends. Drain may be called before or during Run, repeatedly.
func (w *Worker) Drain() { w.once.Do(func() { close(w.drain) }) }

// Leave makes Run stop as if its context had ended: drain, answer what is
// held, revoke the lease, stop; Run then returns nil. A scheduler's Drain
// message (AdminService.Drain) calls it. It may be called at any time,
// repeatedly.
func (w *Worker) Leave() { w.left.Do(func() { close(w.leave) }) }

// Run runs the worker until ctx ends, then drains and stops (see the
// shutdown order below). A Worker runs once.
//
// Start-up order: pin (if asked), open the engine, listen, build the
// open-proxy probe (with --probe) and wrap the engine with it, hand the
// engine the attack table when it implements attacks.HistoryUser (every
// engine the model follower installs later is wrapped and handed the
// table alike), serve gRPC (WorkerService, health, reflection), follow
// the verdict log from the start of its retention (attack reports, and
// verdicts too into the history table with History; the NATS connection
// retries in the background, so a worker starts while NATS is down and
// its lag shows in the styx_worker_log_* metrics), register in etcd.
//
// Shutdown order, on ctx end or Leave (a scheduler's Drain):
//  1. drain: mark the service draining (no credit, new batches refused),
//     stop probing (probes in progress end at once), health NOT_SERVING,
//     registration rewritten with Draining=true, so the scheduler stops
//     sending but still owns the in-flight batches;
//  2. wait until every in-flight batch is answered, or DrainTimeout;
//  3. leave membership: stop the registrar, which revokes the lease (the
//     key disappears at once; whatever is still in flight is requeued by
//     the scheduler);
//  4. end the remaining sessions (UNAVAILABLE) and GracefulStop the gRPC
//     server, falling back to Stop after a deadline;
//  5. stop the examining pool, the probe's steering loop, the attack
//     feed's log follower, the /metrics server;
//  6. close state: the NATS connection, the etcd client if owned, the
//     location database.
func (w *Worker) Run(ctx context.Context) error {
	first := false
	w.ran.Do(func() { first = true })
	if !first {
		return errors.New("worker: Run called twice")
	}
	cfg := w.cfg

	// Pin first, so that everything allocated from here on is local.
	numaNode, cpus, err := w.pin()
	if err != nil {
		return err
	}

	engine, db, closeEngine, err := w.openEngine()
	if err != nil {
		return err
	}
	defer closeEngine()
	var table *attacks.Table
	var hist *history.Table
	if cfg.AttackFeed {
		table = attacks.NewTable(cfg.AttackTableMax)
		if cfg.History && db != nil {
			hist = history.New(history.Config{MaxAddrs: cfg.HistoryMax, Locate: locdb.ASNOf(db.Lookup), Attacks: table})
		}
	}

	capacity := cfg.Capacity
	if capacity == 0 {
		capacity = 2 * runtime.GOMAXPROCS(0)
	}

	var lc net.ListenConfig
	lis, err := lc.Listen(ctx, "tcp", cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.ListenAddr, err)
	}
	// Until the servers own them, the listeners are closed on any error.
	var metricsLis net.Listener
	serving := false
	defer func() {
		if !serving {
			lis.Close()
			if metricsLis != nil {
				metricsLis.Close()
			}
		}
	}()
	bound := lis.Addr().String()
	advertise := cfg.AdvertiseAddr
	if advertise == "" {
		advertise = registration.Advertise(bound, cfg.Host)
	}
	id := cfg.ID
	if id == "" {
		id = defaultID(cfg.Host, numaNode, bound)
		if cfg.PKI != nil {
			// The certificate names the worker (a NUMA child adds -numa<N>).
			id = cfg.PKI.Identity().ID
			if numaNode >= 0 {
				id += "-numa" + strconv.Itoa(numaNode)
			}
		}
	}
	if err := keyspace.ValidID(id); err != nil {
		return fmt.Errorf("worker id (set --id): %w", err)
	}
	if cfg.PKI != nil && !pki.ProvesWorker(cfg.PKI.Identity().ID, id) {
		return fmt.Errorf("worker id %q: the certificate in %s is %s, which does not prove it (the scheduler would give this worker no work)", id, cfg.PKI.Dir(), cfg.PKI.Identity())
	}
	log := w.log.With().Str(logging.WorkerID, id).Logger()
	subLog := w.base.With().Str(logging.WorkerID, id).Logger() // for components

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	// The evidence plugins run after the engine: off unless --probe.
	var probes *probing
	var workers, chunk int // the service's defaults unless probing
	if cfg.Probe {
		if probes, err = newProbing(cfg, reg, subLog); err != nil {
			return fmt.Errorf("open-proxy probe: %w", err)
		}
		defer probes.stop()
		workers, chunk = poolSize(cfg), probeChunkSize
	}
	// install readies every engine the service runs, the first and each
	// one the model follower swaps in: the probe after it, the attack
	// table given to it.
	install := func(e raven.Engine) raven.Engine {
		if probes != nil {
			e = probes.wrap(e)
		}
		if u, ok := e.(attacks.HistoryUser); ok && table != nil {
			u.UseAttackHistory(table)
		}
		return e
	}
	svc, err := service.New(service.Config{
		WorkerID:   id,
		Capacity:   capacity,
		Engine:     install(engine),
		Workers:    workers,
		ChunkSize:  chunk,
		MaxBatch:   cfg.MaxBatch,
		BatchDelay: cfg.BatchDelay,
		Metrics:    service.NewMetrics(reg),
		OnDrain:    func(string) { w.Leave() },
	}, subLog)
	if err != nil {
		return err
	}

	maxBatch := cfg.MaxBatch
	if maxBatch == 0 {
		maxBatch = service.DefaultMaxBatch
	}
	opts := []grpc.ServerOption{
		// A batch is at most maxBatch addresses of 16 bytes plus framing.
		grpc.MaxRecvMsgSize(max(4<<20, maxBatch*20+4096)),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: keepaliveTime, Timeout: keepaliveTimeout}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: keepaliveMinTime, PermitWithoutStream: true}),
	}
	guard := grpcauth.NewGuard(Rules, logging.For(subLog, "auth"))
	w.mu.Lock()
	w.guard = guard
	w.mu.Unlock()
	reg.MustRegister(guard.Collector("styx_worker"))
	if cfg.PKI != nil {
		opts = append(opts, grpcauth.ServerOptions(cfg.PKI, guard)...)
		if err := cfg.PKI.Register(reg, "styx_worker"); err != nil {
			return err
		}
	}
	srv := grpc.NewServer(opts...)
	hs := health.NewServer()
	styxv1.RegisterWorkerServiceServer(srv, svc)
	healthpb.RegisterHealthServer(srv, hs)
	reflection.Register(srv)
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(styxv1.WorkerService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)

	var metricsSrv *http.Server
	if cfg.MetricsAddr != "" {
		metricsLis, err = lc.Listen(ctx, "tcp", cfg.MetricsAddr)
		if err != nil {
			return fmt.Errorf("listen on %s for metrics: %w", cfg.MetricsAddr, err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	}

	cli := cfg.Etcd
	if cli == nil {
		cli, err = clientv3.New(clientv3.Config{
			Endpoints:   cfg.EtcdEndpoints,
			DialTimeout: 5 * time.Second,
			Logger:      zap.NewNop(),
			TLS:         pki.ClientTLS(cfg.PKI, pki.Etcd),
		})
		if err != nil {
			return fmt.Errorf("etcd client for %v: %w", cfg.EtcdEndpoints, err)
		}
		defer cli.Close()
	}

	value := func() (string, error) {
		return keyspace.Encode(keyspace.WorkerRegistration{
			ID:           id,
			Addr:         advertise,
			Host:         cfg.Host,
			NUMANode:     numaNode,
			CPUs:         cpus,
			Capacity:     capacity,
			ModelVersion: svc.ModelVersion(),
			Build:        cfg.Build,
			Draining:     svc.Draining(),
		})
	}
	leaseLosses := prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "styx", Subsystem: "worker", Name: "lease_losses_total",
		Help: "Times the registration lease was lost while running (the worker registered again).",
	})
	reg.MustRegister(leaseLosses)
	registrar, err := registration.New(registration.Config{
		Client: cli,
		Key:    keyspace.WorkerKey(id),
		TTL:    cfg.LeaseTTL,
		Value:  value,
		OnLost: func() {
			// The scheduler sees the key go and requeues what this worker
			// held: end the sessions so no result of a lost batch is sent.
			leaseLosses.Inc()
			log.Warn().Msg("registration lost, ending sessions")
			svc.EndSessions(status.Error(codes.Unavailable, "worker registration lost"))
		},
	}, subLog)
	if err != nil {
		return err
	}

	var follower *attackfeed.Follower
	if table != nil {
		// Connect returns at once and keeps trying: the worker serves
		// while NATS is down, and its tables fill once it is up.
		nc, err := verdictlog.Connect(cfg.NATSURL, "styx-worker "+id, logging.For(subLog, "attackfeed"), verdictlog.TLS(cfg.PKI)...)
		if err != nil {
			return err
		}
		defer nc.Close() // step 6: after the follower has stopped (wg.Wait)
		js, err := jetstream.New(nc)
		if err != nil {
			return fmt.Errorf("verdict log: %w", err)
		}
		follower, err = attackfeed.New(attackfeed.Config{JS: js, Table: table, History: hist}, subLog)
		if err != nil {
			return err
		}
		if err := follower.Register(reg); err != nil {
			return fmt.Errorf("attack feed metrics: %w", err)
		}
	}

	// Every goroutine below is waited for before Run returns.
	serving = true
	var wg sync.WaitGroup
	svcCtx, stopSvc := context.WithCancel(context.Background())
	defer stopSvc()
	wg.Go(func() { _ = svc.Run(svcCtx) })

	serveErr := make(chan error, 1)
	wg.Go(func() { serveErr <- srv.Serve(lis) })

	metricsErr := make(chan error, 1)
	if metricsSrv != nil {
		wg.Go(func() { metricsErr <- metricsSrv.Serve(metricsLis) })
	}

	feedCtx, stopFeed := context.WithCancel(context.Background())
	defer stopFeed()
	if follower != nil {
		wg.Go(func() { _ = follower.Run(feedCtx) })
	}
	probeCtx, stopProbeRunner := context.WithCancel(context.Background())
	defer stopProbeRunner()
	if probes != nil {
		wg.Go(func() { probes.run(probeCtx) })
	}
	// The model follower swaps the engine when /styx/models/current
	// changes; it stops with the feed, before the database closes.
	if cfg.FollowModels && db != nil {
		loader := modelengine.New(db, hist)
		models := rollout.New(rollout.Config{
			Client: cli, WorkerID: id, Load: loader.Load, Locator: db,
			Set:   func(e raven.Engine) { svc.SetEngine(install(e)) },
			Lease: registrar.Lease,
			Changed: func() {
				rctx, cancel := context.WithTimeout(feedCtx, refreshTimeout)
				defer cancel()
				if registrar.Lease() != 0 {
					if err := registrar.Refresh(rctx); err != nil {
						log.Warn().Err(err).Msg("registration with the new model version")
					}
				}
			},
		}, subLog)
		wg.Go(func() { models.Run(feedCtx) })
	}

	regCtx, stopReg := context.WithCancel(context.Background())
	defer stopReg()
	regDone := make(chan struct{})
	wg.Go(func() {
		defer close(regDone)
		_ = registrar.Run(regCtx)
	})

	w.mu.Lock()
	w.addr, w.advertise, w.id, w.attacks, w.history, w.feed = bound, advertise, id, table, hist, follower
	if metricsLis != nil {
		w.metricsAddr = metricsLis.Addr().String()
	}
	w.mu.Unlock()
	close(w.ready)
	log.Info().Str(logging.Addr, bound).Str("advertise_addr", advertise).Int("numa_node", numaNode).
		Str("cpus", cpus).Int("capacity", capacity).Int("gomaxprocs", runtime.GOMAXPROCS(0)).
		Str(logging.Model, svc.ModelVersion()).Str(logging.MetricsAddr, w.MetricsAddr()).Msg("worker serving")

	drained := false
	startDrain := func() {
		if drained {
			return
		}
		drained = true
		svc.Drain()
		if probes != nil {
			// Answer what is held without waiting on the network.
			probes.stop()
		}
		hs.Shutdown() // every service NOT_SERVING, for good
		// Not registered yet: the next registration carries Draining.
		if registrar.Lease() != 0 {
			rctx, cancel := context.WithTimeout(context.Background(), refreshTimeout)
			defer cancel()
			if err := registrar.Refresh(rctx); err != nil {
				log.Warn().Err(err).Msg("mark registration draining")
			}
		}
		log.Info().Int(logging.InFlight, svc.InFlight()).Msg("draining")
	}

	var runErr error
	drainReq := w.drain
wait:
	for {
		select {
		case <-ctx.Done():
			break wait
		case <-w.leave:
			log.Info().Msg("leaving the fleet: drain requested by the scheduler")
			break wait
		case <-drainReq:
			drainReq = nil
			startDrain()
		case err := <-serveErr:
			runErr = fmt.Errorf("serve grpc: %w", err)
			break wait
		case err := <-metricsErr:
			runErr = fmt.Errorf("serve metrics: %w", err)
			break wait
		}
	}

	// 1. Drain.
	startDrain()
	// 2. Wait for in-flight batches.
	dctx, cancel := context.WithTimeout(context.Background(), cfg.DrainTimeout)
	if err := svc.WaitIdle(dctx); err != nil {
		log.Warn().Err(err).Msg("drain timed out, leaving with batches in flight")
	}
	cancel()
	// 3. Leave membership: the registrar revokes the lease as it returns.
	stopReg()
	<-regDone
	// 4. End sessions (and refuse new ones), stop gRPC.
	svc.Stop(status.Error(codes.Unavailable, "worker stopping"))
	if !grpcstop.Graceful(srv, gracefulStopTimeout) {
		log.Warn().Dur("timeout", gracefulStopTimeout).Msg("grpc calls still running at the deadline, stopped")
	}
	// 5. Stop the pool, the probe's steering, the attack feed and /metrics.
	stopSvc()
	stopProbeRunner()
	stopFeed()
	if metricsSrv != nil {
		mctx, cancel := context.WithTimeout(context.Background(), metricsShutdownTimeout)
		if err := metricsSrv.Shutdown(mctx); err != nil {
			metricsSrv.Close()
		}
		cancel()
	}
	wg.Wait()
	// 6. Close state (deferred: the NATS connection, the etcd client, the
	// engine's database).
	log.Info().Msg("worker stopped")
	return runErr
}

// pin pins the process when NUMANode names a node. It returns the node
// (-1 when not pinned) and the CPUs the worker runs on, as a cpulist.
func (w *Worker) pin() (int, string, error) {
	node, _ := w.cfg.numaNode() // validated in New
	if node < 0 {
		cpus := ""
		if set, err := numa.Affinity(0); err == nil {
			cpus = set.String()
		}
		return -1, cpus, nil
	}
	topo, err := numa.Read(w.cfg.Sysfs)
	if err != nil {
		return 0, "", fmt.Errorf("numa topology: %w", err)
	}
	n, ok := topo.Node(node)
	if !ok {
		return 0, "", fmt.Errorf("numa node %d not found under %s", node, w.cfg.Sysfs)
	}
	if err := numa.Pin(n.CPUs); err != nil {
		return 0, "", fmt.Errorf("pin to numa node %d: %w", node, err)
	}
	log := w.log.With().Int("numa_node", node).Str("cpus", n.CPUs.String()).Logger()
	switch err := numa.PreferMemory(node); {
	case err == nil:
	case numa.IsUnsupported(err):
		log.Info().Err(err).Msg("memory policy not available, relying on cpu affinity")
	default:
		log.Warn().Err(err).Msg("set preferred memory node")
	}
	log.Info().Int("gomaxprocs", runtime.GOMAXPROCS(0)).Msg("pinned")
	return node, n.CPUs.String(), nil
}

// openEngine returns the configured engine and a function releasing it.
// With the rule engine it also returns the open location database, which
// models loaded later examine with; nil otherwise.
func (w *Worker) openEngine() (raven.Engine, *locdb.DB, func(), error) {
	nothing := func() {}
	switch {
	case w.cfg.Engine != nil:
		return w.cfg.Engine, nil, nothing, nil
	case w.cfg.EngineName == EngineNop:
		return raven.Nop{}, nil, nothing, nil
	}
	db, err := locdb.Open(locdb.Config{Path: w.cfg.DBPath, KeyPath: w.cfg.DBKeyPath, SkipVerify: w.cfg.SkipVerify})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("open location database: %w", err)
	}
	w.log.Info().Str("path", w.cfg.DBPath).Int("networks", db.NetworkCount()).Msg("location database open")
	return raven.NewRule(db), db, func() { closeLogged(w.log, "close location database", db) }, nil
}

// closeLogged closes c and logs a failure as a warning.
func closeLogged(log zerolog.Logger, what string, c io.Closer) {
	if err := c.Close(); err != nil {
		log.Warn().Err(err).Msg(what)
	}
}

// defaultID is <host>-numa<N> when pinned to node N, <host>-<port>
// otherwise (several unpinned workers may share a host).
func defaultID(host string, numaNode int, bound string) string {
	if numaNode >= 0 {
		return host + "-numa" + strconv.Itoa(numaNode)
	}
	_, port, err := net.SplitHostPort(bound)
	if err != nil {
		port = "0"
	}
	return host + "-" + port
}
