package scheduler

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"github.com/styx-inference/styx/pkg/etcdwatch"
	"github.com/styx-inference/styx/pkg/grpcauth"
	"github.com/styx-inference/styx/pkg/grpcstop"
	"github.com/styx-inference/styx/pkg/keyspace"
	"github.com/styx-inference/styx/pkg/leader"
	"github.com/styx-inference/styx/pkg/logging"
	"github.com/styx-inference/styx/pkg/pki"
	"github.com/styx-inference/styx/pkg/registration"
	"github.com/styx-inference/styx/pkg/retry"
	"github.com/styx-inference/styx/pkg/verdictlog"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
	"github.com/styx-inference/styx/scheduler/internal/api"
	"github.com/styx-inference/styx/scheduler/internal/coordinator"
	"github.com/styx-inference/styx/scheduler/internal/pool"
	"github.com/styx-inference/styx/scheduler/internal/visual"
)

// Config configures a scheduler.
type Config struct {
	ID            string
	EtcdEndpoints []string
	// Etcd, when set, is used instead of dialing EtcdEndpoints (tests).
	Etcd *clientv3.Client
	// GRPCAddr and HTTPAddr are the listen addresses; AdvertiseAddr is the
	// gRPC address others dial (default: the bound address, with the host
	// name in place of an unspecified IP such as 0.0.0.0).
	GRPCAddr      string
	HTTPAddr      string
	AdvertiseAddr string
	// LeaseTTL is the election session's TTL: a dead leader is replaced
	// within about this long.
	LeaseTTL time.Duration

	BatchSize      int
	BatchInterval  time.Duration
	MaxPending     int
	MaxAge         time.Duration
	DedupWindow    time.Duration
	MaxRecent      int
	MaxFailures    int
	MaxSubmitBatch int
	// NATSURL names the verdict log's JetStream servers (comma-separated
	// nats:// URLs). Empty: no log; verdicts reach only the nodes that
	// asked for them (tests of the scheduler alone), and a warning says so.
	NATSURL string
	// LogPolicy is the retention policy of the log's streams, which the
	// scheduler creates or updates at start.
	LogPolicy verdictlog.Policy
	// HTTPToken, when set, is required by every HTTP route but /healthz
	// (bearer header, or a cookie set by ?token= on a page load).
	HTTPToken string
	OutQueue  int
	// Shed is the default shedding policy; /styx/config/shedding overrides it live.
	Shed pool.Policy
	// PKI is this scheduler's identity: mutual TLS on gRPC (nodes,
	// admins, workers), etcd and NATS, and the certificate of HTTPS. Nil
	// is plaintext with no authentication (--insecure).
	PKI *pki.Source
	// HTTPSAddr, when set, also serves the HTTP routes over TLS with the
	// PKI certificate.
	HTTPSAddr string
	// MaxClockSkew is how far ahead of this scheduler's clock a verdict's
	// inference time may be; results with later ones are refused.
	MaxClockSkew time.Duration
}

// DefaultConfig returns the defaults the command line starts from.
func DefaultConfig() Config {
	return Config{
		EtcdEndpoints:  []string{"127.0.0.1:2379"},
		GRPCAddr:       "127.0.0.1:7070",
		HTTPAddr:       "127.0.0.1:7080",
		LeaseTTL:       5 * time.Second,
		BatchSize:      1024,
		BatchInterval:  20 * time.Millisecond,
		MaxPending:     1 << 20,
		MaxAge:         time.Hour,
		DedupWindow:    10 * time.Minute,
		MaxRecent:      1_000_000,
		MaxFailures:    3,
		MaxSubmitBatch: 16384,
		NATSURL:        "nats://127.0.0.1:4222",
		LogPolicy:      verdictlog.DefaultPolicy(),
		OutQueue:       1024,
		Shed:           pool.Policy{Mode: pool.ShedSample, SampleN: 5},
		MaxClockSkew:   30 * time.Second,
	}
}

// Validate reports a configuration error.
func (c Config) Validate() error {
	if err := keyspace.ValidID(c.ID); err != nil {
		return fmt.Errorf("scheduler id: %w", err)
	}
	if c.Etcd == nil && len(c.EtcdEndpoints) == 0 {
		return errors.New("no etcd endpoints")
	}
	if c.LeaseTTL < time.Second {
		return fmt.Errorf("lease ttl %s below 1s", c.LeaseTTL)
	}
	if c.MaxFailures < 1 {
		return errors.New("max failures < 1")
	}
	if c.NATSURL != "" {
		if err := c.LogPolicy.Validate(); err != nil {
			return err
		}
	}
	if c.PKI != nil && c.PKI.Identity().Role != pki.Scheduler {
		return fmt.Errorf("identity %s is not a scheduler's", c.PKI.Identity())
	}
	if c.HTTPSAddr != "" && c.PKI == nil {
		return errors.New("https needs a certificate: give --pki-dir")
	}
	return c.coordinatorConfig(1).Validate()
}

func (c Config) coordinatorConfig(term int64) coordinator.Config {
	return coordinator.Config{
		SchedulerID:   c.ID,
		Term:          term,
		BatchSize:     c.BatchSize,
		BatchInterval: c.BatchInterval,
		Pool: pool.Config{
			MaxPending: c.MaxPending, MaxAge: int64(c.MaxAge), DedupWindow: int64(c.DedupWindow),
			MaxRecent: c.MaxRecent, MaxWaiters: 256, Policy: c.Shed,
		},
		MaxFailures:    uint32(c.MaxFailures),
		MaxSubmitBatch: c.MaxSubmitBatch,
		OutQueue:       c.OutQueue,
		Dialer:         c.dialWorker,
		MaxClockSkew:   c.MaxClockSkew,
	}
}

// dialWorker dials the worker registered as id. Over mutual TLS the
// worker must present a certificate that proves that id (pki.ProvesWorker): an etcd
// registration alone earns no work.
func (c Config) dialWorker(id, addr string) (*grpc.ClientConn, error) {
	creds := grpc.WithTransportCredentials(insecure.NewCredentials())
	if c.PKI != nil {
		creds = grpcauth.DialOption(c.PKI, pki.WorkerPolicy(id))
	}
	return grpc.NewClient(addr, creds,
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}),
	)
}

// Rules are who may call the scheduler's gRPC services. Schedulers call
// AdminService too: a standby forwards an admin's call to the leader.
var Rules = grpcauth.Rules{
	styxv1.SchedulerService_ServiceDesc.ServiceName: {pki.Node},
	styxv1.AdminService_ServiceDesc.ServiceName:     {pki.Admin, pki.Scheduler},
	healthpb.Health_ServiceDesc.ServiceName:         pki.Roles,
	"grpc.reflection.v1.ServerReflection":           {pki.Admin},
	"grpc.reflection.v1alpha.ServerReflection":      {pki.Admin},
}

// Scheduler is one STYX scheduler process.
type Scheduler struct {
	cfg  Config
	log  zerolog.Logger // component=scheduler
	base zerolog.Logger // the caller's logger, for parts that name their own component

	current atomic.Pointer[coordinator.Coordinator]
	leader  atomic.Pointer[keyspace.LeaderInfo]
	policy  atomic.Pointer[pool.Policy]

	// roleCh is closed (and replaced) whenever current or leader changes,
	// so the visualiser blocks on it instead of polling. roleMu is a leaf.
	roleMu sync.Mutex
	roleCh chan struct{}
	visual *visual.Hub

	// publisher publishes every term's verdicts and attack reports to
	// the log (nil without Config.NATSURL); set by Run before it campaigns.
	publisher *verdictlog.Publisher

	// guard authorises gRPC calls over mutual TLS and counts refusals.
	guard *grpcauth.Guard

	ready     chan struct{}
	grpcAddr  string
	httpAddr  string
	httpsAddr string
}

// New returns a scheduler; Run starts it.
func New(cfg Config, log zerolog.Logger) (*Scheduler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	base := log.With().Str(logging.SchedulerID, cfg.ID).Logger()
	s := &Scheduler{cfg: cfg, log: logging.For(base, "scheduler"), base: base, ready: make(chan struct{}), roleCh: make(chan struct{})}
	p := cfg.Shed
	s.policy.Store(&p)
	s.visual = visual.New(visual.Config{}, s, base)
	s.guard = grpcauth.NewGuard(Rules, logging.For(base, "auth"))
	return s, nil
}

// Ready is closed once both listeners are bound.
func (s *Scheduler) Ready() <-chan struct{} { return s.ready }

// GRPCAddr is the bound gRPC address (after Ready).
func (s *Scheduler) GRPCAddr() string { return s.grpcAddr }

// HTTPAddr is the bound HTTP address (after Ready).
func (s *Scheduler) HTTPAddr() string { return s.httpAddr }

// HTTPSAddr is the bound HTTPS address (after Ready; empty without one).
func (s *Scheduler) HTTPSAddr() string { return s.httpsAddr }

// Guard is the gRPC guard (its refusals).
func (s *Scheduler) Guard() *grpcauth.Guard { return s.guard }

// ID implements api.Leadership.
func (s *Scheduler) ID() string { return s.cfg.ID }

// Current implements api.Leadership.
func (s *Scheduler) Current() *coordinator.Coordinator { return s.current.Load() }

// Leader implements api.Leadership.
func (s *Scheduler) Leader() (keyspace.LeaderInfo, bool) {
	li := s.leader.Load()
	if li == nil || li.ID == "" {
		return keyspace.LeaderInfo{}, false
	}
	return *li, true
}

// RoleChanged implements visual.Source: the channel is closed at the next
// change of leadership (this scheduler's coordinator or the known leader).
func (s *Scheduler) RoleChanged() <-chan struct{} {
	s.roleMu.Lock()
	defer s.roleMu.Unlock()
	return s.roleCh
}

func (s *Scheduler) roleChanged() {
	s.roleMu.Lock()
	close(s.roleCh)
	s.roleCh = make(chan struct{})
	s.roleMu.Unlock()
}

// VisualStreams reports the visualiser's open event streams: bytes sent
// and how long each has been open.
func (s *Scheduler) VisualStreams() []visual.StreamStats { return s.visual.Streams() }

// IsLeader reports whether this scheduler leads now.
func (s *Scheduler) IsLeader() bool { return s.current.Load() != nil }

// grpcStopTimeout bounds GracefulStop at shutdown; Stop then cuts the
// streams still open.
const grpcStopTimeout = 5 * time.Second

// Run serves until ctx ends. Shutdown order: stop the coordinator (node
// streams end; nodes re-send to the new leader), report NOT_SERVING, resign
// leadership (a standby takes over at once instead of after the TTL), stop
// gRPC gracefully with a deadline, stop HTTP, publish what is queued for
// the log (at most 5 s), close NATS and etcd.
func (s *Scheduler) Run(ctx context.Context) error {
	var (
		pubWG sync.WaitGroup
		nc    *nats.Conn
	)
	// The publisher outlives the coordinator: it is stopped last, then it
	// publishes what is still queued, then the connection closes.
	pctx, pcancel := context.WithCancel(context.Background())
	defer func() {
		pcancel()
		pubWG.Wait()
		if nc != nil {
			nc.Close()
		}
	}()
	if s.cfg.NATSURL == "" {
		s.log.Warn().Msg("no verdict log (--nats-url empty): verdicts reach only the nodes that asked for them")
	} else {
		var err error
		nc, err = verdictlog.Connect(s.cfg.NATSURL, "styx-scheduler "+s.cfg.ID, s.log, verdictlog.TLS(s.cfg.PKI)...)
		if err != nil {
			return err
		}
		js, err := jetstream.New(nc)
		if err != nil {
			return fmt.Errorf("jetstream: %w", err)
		}
		s.publisher = verdictlog.NewPublisher(js, verdictlog.PublisherConfig{}, s.log)
		pubWG.Add(2)
		go func() { defer pubWG.Done(); _ = s.publisher.Run(pctx) }()
		go func() { defer pubWG.Done(); s.ensureStreams(pctx, js) }()
	}
	cli := s.cfg.Etcd
	if cli == nil {
		var err error
		cli, err = clientv3.New(clientv3.Config{Endpoints: s.cfg.EtcdEndpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop(), TLS: pki.ClientTLS(s.cfg.PKI, pki.Etcd)})
		if err != nil {
			return fmt.Errorf("etcd client: %w", err)
		}
		defer cli.Close()
	}
	gl, err := net.Listen("tcp", s.cfg.GRPCAddr)
	if err != nil {
		return fmt.Errorf("listen grpc: %w", err)
	}
	hl, err := net.Listen("tcp", s.cfg.HTTPAddr)
	if err != nil {
		gl.Close()
		return fmt.Errorf("listen http: %w", err)
	}
	var sl net.Listener
	if s.cfg.HTTPSAddr != "" {
		if sl, err = net.Listen("tcp", s.cfg.HTTPSAddr); err != nil {
			gl.Close()
			hl.Close()
			return fmt.Errorf("listen https: %w", err)
		}
		s.httpsAddr = sl.Addr().String()
	}
	s.grpcAddr, s.httpAddr = gl.Addr().String(), hl.Addr().String()
	adv := s.cfg.AdvertiseAddr
	if adv == "" {
		host, _ := os.Hostname()
		adv = registration.Advertise(s.grpcAddr, host)
	}

	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(64 << 20),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
	}
	if s.cfg.PKI != nil {
		opts = append(opts, grpcauth.ServerOptions(s.cfg.PKI, s.guard)...)
	}
	gs := grpc.NewServer(opts...)
	h := api.New(s, s.log)
	if s.cfg.PKI != nil {
		h.Secure(s.guard, grpcauth.DialOption(s.cfg.PKI, pki.AnyOf(pki.Scheduler)))
	}
	defer h.Close()
	styxv1.RegisterSchedulerServiceServer(gs, h)
	styxv1.RegisterAdminServiceServer(gs, h)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	reflection.Register(gs)
	// Health: "" and AdminService are SERVING on every scheduler (a standby
	// answers Status and forwards Drain); SchedulerService only while this
	// scheduler leads (nodes stream to the leader only).
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(styxv1.AdminService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(styxv1.SchedulerService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)

	handler := s.httpHandler(h)
	httpSrv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
	var httpsSrv *http.Server
	if sl != nil {
		httpsSrv = &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second, TLSConfig: s.cfg.PKI.HTTPSConfig()}
	}

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = gs.Serve(gl) }()
	go func() { defer wg.Done(); _ = httpSrv.Serve(hl) }()
	if httpsSrv != nil {
		wg.Add(1)
		go func() { defer wg.Done(); _ = httpsSrv.ServeTLS(sl, "", "") }()
	}
	close(s.ready)
	s.log.Info().Str("grpc", s.grpcAddr).Str("http", s.httpAddr).Msg("serving")

	octx, ocancel := context.WithCancel(ctx)
	wg.Add(2)
	go func() {
		defer wg.Done()
		for li := range leader.Observe(octx, cli) {
			l := li
			s.leader.Store(&l)
			s.roleChanged()
		}
	}()
	go func() { defer wg.Done(); s.watchPolicy(octx, cli) }()
	wg.Add(1)
	go func() { defer wg.Done(); s.visual.Run(octx) }()

	info := keyspace.LeaderInfo{ID: s.cfg.ID, GRPCAddr: adv, HTTPAddr: advertiseHTTP(s.httpAddr, adv)}
	err = s.campaignLoop(ctx, cli, info, hs)

	hs.Shutdown()
	ocancel()
	if !grpcstop.Graceful(gs, grpcStopTimeout) {
		s.log.Warn().Dur("timeout", grpcStopTimeout).Msg("grpc calls still running at the deadline, stopped")
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	if httpSrv.Shutdown(sctx) != nil {
		_ = httpSrv.Close() // connections still busy after the deadline
	}
	if httpsSrv != nil && httpsSrv.Shutdown(sctx) != nil {
		_ = httpsSrv.Close()
	}
	cancel()
	wg.Wait()
	return err
}

// campaignLoop campaigns, leads until the session is lost or ctx ends, and
// campaigns again.
func (s *Scheduler) campaignLoop(ctx context.Context, cli *clientv3.Client, info keyspace.LeaderInfo, hs *health.Server) error {
	val, err := keyspace.Encode(info)
	if err != nil {
		return err
	}
	for ctx.Err() == nil {
		sess, err := concurrency.NewSession(cli, concurrency.WithTTL(int(s.cfg.LeaseTTL/time.Second)), concurrency.WithContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			s.log.Warn().Err(err).Msg("election session")
			retry.Sleep(ctx, 500*time.Millisecond)
			continue
		}
		el := concurrency.NewElection(sess, strings.TrimSuffix(keyspace.LeaderPrefix, "/")) // keys are /styx/leader/<lease>
		s.log.Info().Msg("campaigning")
		if err := el.Campaign(ctx, val); err != nil {
			sess.Close()
			if ctx.Err() != nil {
				return nil
			}
			s.log.Warn().Err(err).Msg("campaign")
			continue
		}
		term := el.Rev()
		s.lead(ctx, cli, sess, el, term, hs)
		if ctx.Err() != nil {
			rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = el.Resign(rctx)
			cancel()
			sess.Close()
			return nil
		}
		sess.Close()
	}
	return nil
}

func (s *Scheduler) lead(ctx context.Context, cli *clientv3.Client, sess *concurrency.Session, el *concurrency.Election, term int64, hs *health.Server) {
	log := s.log.With().Int64(logging.Term, term).Logger()
	cc := s.cfg.coordinatorConfig(term)
	cc.Pool.Policy = *s.policy.Load()
	if s.publisher != nil {
		cc.Log = s.publisher
	}
	co, err := coordinator.New(cc, s.base)
	if err != nil {
		log.Error().Err(err).Msg("start coordinator")
		return
	}
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-sess.Done():
			log.Warn().Msg("election session lost; stepping down")
			cancel()
		case <-lctx.Done():
		}
	}()
	s.current.Store(co)
	s.roleChanged()
	hs.SetServingStatus(styxv1.SchedulerService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	log.Info().Msg("leading")
	if err := co.Run(lctx, cli); err != nil {
		log.Error().Err(err).Msg("coordinator stopped")
	}
	hs.SetServingStatus(styxv1.SchedulerService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
	s.current.Store(nil)
	s.roleChanged()
	log.Info().Msg("no longer leading")
}

// ensureStreams creates or updates the log's streams, retrying until it
// succeeds: the publisher's batches wait in its queue meanwhile.
func (s *Scheduler) ensureStreams(ctx context.Context, js jetstream.JetStream) {
	bo := retry.NewBackoff(250*time.Millisecond, 5*time.Second)
	for {
		ectx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := verdictlog.Ensure(ectx, js, s.cfg.LogPolicy)
		cancel()
		if err == nil {
			p := s.cfg.LogPolicy
			s.log.Info().Dur("clean_retention", p.CleanRetention).Dur("proxy_retention", p.ProxyRetention).
				Int("replicas", p.Replicas).Msg("verdict log streams ready")
			return
		}
		if ctx.Err() != nil {
			return
		}
		s.log.Warn().Err(err).Msg("verdict log streams not ready, retrying")
		if !retry.Sleep(ctx, bo.NextBackOff()) {
			return
		}
	}
}

// LogStats returns the verdict log publisher's counters (ok false without
// a log).
func (s *Scheduler) LogStats() (st verdictlog.PublisherStats, ok bool) {
	if s.publisher == nil {
		return st, false
	}
	return s.publisher.Stats(), true
}

// watchPolicy follows /styx/config/shedding and applies it live; while the
// key is absent (deleted, or gone when a compaction made it list again) the
// configured policy applies.
func (s *Scheduler) watchPolicy(ctx context.Context, cli *clientv3.Client) {
	set := func(p pool.Policy) {
		s.policy.Store(&p)
		if co := s.current.Load(); co != nil {
			_ = co.SetPolicy(p)
		}
	}
	apply := func(v []byte) {
		var sp keyspace.ShedPolicy
		if err := keyspace.Decode(v, &sp); err != nil {
			s.log.Warn().Err(err).Msg("bad shedding policy ignored")
			return
		}
		p := pool.Policy{Mode: sp.Mode, SampleN: sp.SampleN}
		if err := p.Validate(); err != nil {
			s.log.Warn().Err(err).Msg("bad shedding policy ignored")
			return
		}
		set(p)
		s.log.Info().Str("policy", p.String()).Msg("shedding policy set")
	}
	configured := func() {
		if *s.policy.Load() == s.cfg.Shed {
			return
		}
		set(s.cfg.Shed)
		s.log.Info().Str("policy", s.cfg.Shed.String()).Msg("shedding policy removed; the configured one applies")
	}
	_ = etcdwatch.Key(ctx, cli, keyspace.ShedPolicyKey, etcdwatch.Handler{
		Reset: func(kvs []*mvccpb.KeyValue, _ int64) {
			if len(kvs) == 0 {
				configured()
				return
			}
			apply(kvs[0].Value)
		},
		Put:    func(kv *mvccpb.KeyValue) { apply(kv.Value) },
		Delete: func(*mvccpb.KeyValue) { configured() },
	}, s.log)
}

// DefaultID is <hostname>-<pid>-style id safe for the keyspace.
func DefaultID() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		h = "scheduler"
	}
	h = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' {
			return r
		}
		return '-'
	}, h)
	return fmt.Sprintf("%s-%d", h, os.Getpid())
}

// advertiseHTTP is the HTTP address to publish as the leader's (the
// visualiser of a standby links to it): the bound address, with the host
// of the advertised gRPC address in place of an unspecified or empty one.
func advertiseHTTP(bound, grpcAdv string) string {
	h, port, err := net.SplitHostPort(bound)
	gh, _, gerr := net.SplitHostPort(grpcAdv)
	if err != nil || gerr != nil || gh == "" {
		return bound
	}
	if h == "" {
		return net.JoinHostPort(gh, port)
	}
	return registration.Advertise(bound, gh)
}
