package scheduler_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/styx-inference/styx/pkg/columns"
	"github.com/styx-inference/styx/pkg/embedetcd"
	"github.com/styx-inference/styx/pkg/embedetcd/etcdtest"
	"github.com/styx-inference/styx/pkg/embednats/natstest"
	"github.com/styx-inference/styx/pkg/keyspace"
	"github.com/styx-inference/styx/pkg/leader"
	"github.com/styx-inference/styx/pkg/testwait"
	"github.com/styx-inference/styx/pkg/verdictlog"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
	"github.com/styx-inference/styx/scheduler"
	"github.com/styx-inference/styx/scheduler/internal/pool"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreAnyFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
		goleak.IgnoreTopFunction("go.etcd.io/etcd/client/pkg/v3/logutil.(*MergeLogger).outputLoop"),
	)
}

// ---- fixture: etcd + schedulers ----

func startEtcd(t *testing.T) (*embedetcd.Server, *clientv3.Client) {
	t.Helper()
	return etcdtest.Start(t)
}

type runningScheduler struct {
	*scheduler.Scheduler
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// stop cancels the scheduler and waits for Run to return; safe to call twice.
func (r *runningScheduler) stop() { r.once.Do(func() { r.cancel(); <-r.done }) }

func startScheduler(t *testing.T, etcdEndpoint, id string, mod func(*scheduler.Config)) *runningScheduler {
	t.Helper()
	cfg := scheduler.DefaultConfig()
	cfg.ID = id
	cfg.EtcdEndpoints = []string{etcdEndpoint}
	cfg.GRPCAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.LeaseTTL = 2 * time.Second
	cfg.BatchSize = 256
	cfg.BatchInterval = 5 * time.Millisecond
	cfg.NATSURL = "" // no verdict log unless the test starts one
	if mod != nil {
		mod(&cfg)
	}
	s, err := scheduler.New(cfg, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &runningScheduler{Scheduler: s, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- s.Run(ctx) }()
	<-s.Ready()
	t.Cleanup(r.stop)
	return r
}

// ---- fake worker: real gRPC on loopback, registered on a real lease ----

type fakeWorker struct {
	styxv1.UnimplementedWorkerServiceServer
	id       string
	capacity int
	delay    time.Duration
	model    string // the model version its verdicts name
	// poison: a batch containing this address breaks the stream.
	poison netip.Addr
	// inferAhead, when set, dates its verdicts this far in the future (a
	// forger).
	inferAhead time.Duration

	srv     *grpc.Server
	addr    string
	lease   clientv3.LeaseID
	cli     *clientv3.Client
	mu      sync.Mutex
	maxOut  int
	out     int
	addrs   atomic.Int64
	batches atomic.Int64
	frozen  atomic.Bool // holds batches without answering
	// keepStale: results held while frozen survive the stream's end, and
	// the worker's next stream sends them first (a worker that paused past
	// its lease and came back).
	keepStale atomic.Bool
	stale     []*styxv1.Result
	replayed  atomic.Int64 // stale results sent on a later stream
	keepAlive context.Context
	wg        sync.WaitGroup
	streamMu  sync.Mutex
	streams   []context.CancelFunc
}

func startFakeWorker(t *testing.T, cli *clientv3.Client, id string, capacity int, delay time.Duration, regMods ...func(*keyspace.WorkerRegistration)) *fakeWorker {
	t.Helper()
	return startFakeWorkerWith(t, cli, id, capacity, delay, nil, nil, regMods...)
}

// startFakeWorkerWith starts a fake worker whose gRPC server has opts (its
// transport: mutual TLS, or plaintext when nil); mod adjusts it before it
// serves.
func startFakeWorkerWith(t *testing.T, cli *clientv3.Client, id string, capacity int, delay time.Duration, opts []grpc.ServerOption, mod func(*fakeWorker), regMods ...func(*keyspace.WorkerRegistration)) *fakeWorker {
	t.Helper()
	w := &fakeWorker{id: id, capacity: capacity, delay: delay, cli: cli, model: "fake"}
	if mod != nil {
		mod(w)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w.addr = l.Addr().String()
	w.srv = grpc.NewServer(opts...)
	styxv1.RegisterWorkerServiceServer(w.srv, w)
	go func() { _ = w.srv.Serve(l) }()
	kctx, kcancel := context.WithCancel(context.Background())
	w.keepAlive = kctx
	t.Cleanup(func() {
		kcancel()
		w.wg.Wait()
		w.srv.Stop()
	})
	w.register(t, regMods...)
	return w
}

// register puts the worker's registration under a new 2 s lease and keeps
// the lease alive until the test ends.
func (w *fakeWorker) register(t *testing.T, regMods ...func(*keyspace.WorkerRegistration)) {
	t.Helper()
	g, err := w.cli.Grant(context.Background(), 2)
	if err != nil {
		t.Fatal(err)
	}
	w.lease = g.ID
	reg := keyspace.WorkerRegistration{ID: w.id, Addr: w.addr, Host: "test", NUMANode: -1, Capacity: w.capacity, ModelVersion: "fake"}
	for _, mod := range regMods {
		mod(&reg)
	}
	val, _ := keyspace.Encode(reg)
	if _, err := w.cli.Put(context.Background(), keyspace.WorkerKey(w.id), val, clientv3.WithLease(g.ID)); err != nil {
		t.Fatal(err)
	}
	ka, err := w.cli.KeepAlive(w.keepAlive, g.ID)
	if err != nil {
		t.Fatal(err)
	}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		for range ka {
		}
	}()
}

// expireLease revokes the worker's lease, as if it stopped renewing.
func (w *fakeWorker) expireLease(t *testing.T) {
	if _, err := w.cli.Revoke(context.Background(), w.lease); err != nil {
		t.Fatal(err)
	}
}

func (w *fakeWorker) Work(stream styxv1.WorkerService_WorkServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	open := first.GetOpen()
	if open == nil {
		return errors.New("want open")
	}
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	w.streamMu.Lock()
	w.streams = append(w.streams, cancel)
	w.streamMu.Unlock()
	var sendMu sync.Mutex
	send := func(r *styxv1.WorkReport) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return stream.Send(r)
	}
	w.mu.Lock()
	stale := w.stale
	w.stale = nil
	w.mu.Unlock()
	credit := uint32(w.capacity)
	if len(stale) > 0 {
		credit = 0 // back only to send what it held: it takes no new work
	}
	if err := send(&styxv1.WorkReport{Credit: credit, Msg: &styxv1.WorkReport_Ready{Ready: &styxv1.Ready{WorkerId: w.id, ModelVersion: "fake"}}}); err != nil {
		return err
	}
	for _, res := range stale {
		if err := send(&styxv1.WorkReport{Msg: &styxv1.WorkReport_Result{Result: res}}); err != nil {
			return err
		}
		w.replayed.Add(1)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		m, err := stream.Recv()
		if err != nil {
			return err
		}
		b := m.GetBatch()
		w.mu.Lock()
		w.out++
		w.maxOut = max(w.maxOut, w.out)
		w.mu.Unlock()
		addrs, err := columns.Addrs(b.Addresses)
		if err != nil {
			return err
		}
		for _, ip := range addrs {
			if w.poison.IsValid() && ip == w.poison {
				return errors.New("worker crashed on poison")
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-time.After(w.delay):
			case <-ctx.Done():
				return
			}
			res := &styxv1.Result{BatchId: b.BatchId, Term: b.Term, Attempt: b.Attempt}
			vs := make([]*styxv1.Verdict, len(addrs))
			for i, a := range addrs {
				raw := a.AsSlice()
				vs[i] = &styxv1.Verdict{ModelVersion: w.model, Risk: uint32(raw[len(raw)-1]) % 101}
				if w.inferAhead != 0 {
					vs[i].InferredUnixNano = time.Now().Add(w.inferAhead).UnixNano()
				}
			}
			res.Verdicts = columns.EncodeVerdicts(vs)
			for w.frozen.Load() {
				select {
				case <-time.After(5 * time.Millisecond):
				case <-ctx.Done():
					if w.keepStale.Load() {
						w.mu.Lock()
						w.stale = append(w.stale, res)
						w.mu.Unlock()
					}
					return
				}
			}
			w.mu.Lock()
			w.out--
			w.mu.Unlock()
			w.addrs.Add(int64(len(addrs)))
			w.batches.Add(1)
			_ = send(&styxv1.WorkReport{Credit: 1, Msg: &styxv1.WorkReport_Result{Result: res}})
		}()
	}
}

// ---- fake node: a raw Submit stream with the node's re-send rule ----

type fakeNode struct {
	id  string
	cli *clientv3.Client
	// dial is the transport to the scheduler (nil: plaintext).
	dial grpc.DialOption

	mu       sync.Mutex
	pending  map[uint64]netip.Addr
	outcomes map[uint64][]styxv1.OutcomeKind
	dups     int
	verdicts map[netip.Addr]int
	models   map[string]int // verdicts by the model version they name
	nextID   uint64
	kick     chan struct{}
}

func newFakeNode(id string, cli *clientv3.Client) *fakeNode {
	return &fakeNode{id: id, cli: cli, pending: map[uint64]netip.Addr{}, outcomes: map[uint64][]styxv1.OutcomeKind{}, verdicts: map[netip.Addr]int{}, models: map[string]int{}, kick: make(chan struct{}, 1)}
}

func (n *fakeNode) add(addrs ...netip.Addr) {
	n.mu.Lock()
	for _, a := range addrs {
		n.nextID++
		n.pending[n.nextID] = a
	}
	n.mu.Unlock()
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

func (n *fakeNode) resolved() (total, pending int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.outcomes), len(n.pending)
}

// run keeps a session with the current leader; on every (re)connect it
// sends all pending sightings.
func (n *fakeNode) run(ctx context.Context) {
	for ctx.Err() == nil {
		li, _, err := leader.Current(ctx, n.cli)
		if err != nil {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		_ = n.session(ctx, li.GRPCAddr)
		time.Sleep(20 * time.Millisecond)
	}
}

func (n *fakeNode) session(ctx context.Context, addr string) error {
	dial := n.dial
	if dial == nil {
		dial = grpc.WithTransportCredentials(insecure.NewCredentials())
	}
	conn, err := grpc.NewClient(addr, dial)
	if err != nil {
		return err
	}
	defer conn.Close()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := styxv1.NewSchedulerServiceClient(conn).Submit(sctx)
	if err != nil {
		return err
	}
	if err := st.Send(&styxv1.SubmitRequest{Msg: &styxv1.SubmitRequest_Hello{Hello: &styxv1.Hello{NodeId: n.id}}}); err != nil {
		return err
	}
	wm, err := st.Recv()
	if err != nil {
		return err
	}
	// It reports a log position, as a real node does every few seconds.
	if err := st.Send(&styxv1.SubmitRequest{Msg: &styxv1.SubmitRequest_Status{Status: &styxv1.NodeStatus{
		LogLagMessages: 3, LogLagSeconds: 0.25, LogConnected: true,
	}}}); err != nil {
		return err
	}
	maxBatch := int(wm.GetWelcome().GetMaxBatch())
	errc := make(chan error, 1)
	go func() {
		for {
			m, err := st.Recv()
			if err != nil {
				errc <- err
				return
			}
			if ob := m.GetOutcomes(); ob != nil {
				outs, err := columns.Outcomes(ob)
				if err != nil {
					errc <- err
					return
				}
				n.mu.Lock()
				for _, o := range outs {
					a, ok := n.pending[o.SightingID]
					if !ok {
						n.dups++
						continue
					}
					delete(n.pending, o.SightingID)
					n.outcomes[o.SightingID] = append(n.outcomes[o.SightingID], o.Kind)
					if o.Kind == styxv1.OutcomeKind_OUTCOME_KIND_VERDICT {
						n.verdicts[a]++
						n.models[o.Verdict.GetModelVersion()]++
					}
				}
				n.mu.Unlock()
			}
		}
	}()
	sent := map[uint64]bool{}
	var seq uint64
	for {
		n.mu.Lock()
		batch := &styxv1.SightingBatch{}
		for id, a := range n.pending {
			if sent[id] {
				continue
			}
			sent[id] = true
			columns.AppendSighting(batch, columns.Sighting{ID: id, Addr: a, Seen: time.Now().UnixNano()})
			if len(batch.Ids) == maxBatch {
				break
			}
		}
		n.mu.Unlock()
		if len(batch.Ids) > 0 {
			seq++
			batch.Seq = seq
			if err := st.Send(&styxv1.SubmitRequest{Msg: &styxv1.SubmitRequest_Sightings{Sightings: batch}}); err != nil {
				return err
			}
			continue
		}
		select {
		case err := <-errc:
			return err
		case <-n.kick:
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return nil
		}
	}
}

func runNodes(t *testing.T, nodes ...*fakeNode) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Add(1)
		go func() { defer wg.Done(); n.run(ctx) }()
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
}

func ipv4(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{100, byte(i >> 16), byte(i >> 8), byte(i)})
}

// staleResults is the leader's count of results it refused as stale.
func staleResults(s *scheduler.Scheduler) uint64 {
	co := s.Current()
	if co == nil {
		return 0
	}
	_, ctr, _, _ := co.Stats()
	return ctr.StaleResults
}

func checkExactlyOnce(t *testing.T, n *fakeNode, want int) {
	t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.outcomes) != want || len(n.pending) != 0 {
		t.Fatalf("node %s: %d outcomes, %d pending, want %d and 0", n.id, len(n.outcomes), len(n.pending), want)
	}
	for id, ks := range n.outcomes {
		if len(ks) != 1 {
			t.Fatalf("node %s: sighting %d got %d outcomes", n.id, id, len(ks))
		}
	}
}

// ---- tests ----

func TestEverySightingOneOutcomeDedupAcrossNodes(t *testing.T) {
	srv, cli := startEtcd(t)
	s := startScheduler(t, srv.Endpoint(), "s1", nil)
	testwait.For(t, 10*time.Second, "leadership", s.IsLeader)
	ws := []*fakeWorker{
		startFakeWorker(t, cli, "w1", 2, time.Millisecond),
		startFakeWorker(t, cli, "w2", 2, time.Millisecond),
		startFakeWorker(t, cli, "w3", 4, time.Millisecond),
	}
	const total = 100_000
	n1, n2 := newFakeNode("node-1", cli), newFakeNode("node-2", cli)
	// Both nodes see the same 50,000 addresses: each is inferred once.
	var a1, a2 []netip.Addr
	for i := 0; i < total/2; i++ {
		a1 = append(a1, ipv4(i))
		a2 = append(a2, ipv4(i))
	}
	n1.add(a1...)
	n2.add(a2...)
	runNodes(t, n1, n2)
	testwait.For(t, 60*time.Second, "every outcome", func() bool {
		r1, _ := n1.resolved()
		r2, _ := n2.resolved()
		return r1+r2 == total
	})
	checkExactlyOnce(t, n1, total/2)
	checkExactlyOnce(t, n2, total/2)
	var inferred int64
	for _, w := range ws {
		inferred += w.addrs.Load()
		w.mu.Lock()
		if w.maxOut > w.capacity {
			t.Errorf("worker %s held %d batches with %d credits", w.id, w.maxOut, w.capacity)
		}
		w.mu.Unlock()
	}
	if inferred != total/2 {
		t.Fatalf("inferred %d addresses, want %d (each distinct address once)", inferred, total/2)
	}
}

// A worker that stops renewing its lease loses its batches to another
// worker. When it comes back and sends the results it held for its lost
// session, they are refused as stale, even though the batches they name
// are still outstanding (on the other worker): no sighting is answered by
// them, and none gets a second outcome.
func TestWorkerLeaseExpiryRequeues(t *testing.T) {
	srv, cli := startEtcd(t)
	s := startScheduler(t, srv.Endpoint(), "s1", nil)
	testwait.For(t, 10*time.Second, "leadership", s.IsLeader)
	bad := startFakeWorker(t, cli, "frozen", 4, 0)
	bad.model = "late"
	bad.frozen.Store(true)
	bad.keepStale.Store(true)
	n := newFakeNode("node-1", cli)
	for i := 0; i < 2000; i++ {
		n.add(ipv4(i))
	}
	runNodes(t, n)
	testwait.For(t, 10*time.Second, "batches held by the frozen worker", func() bool {
		bad.mu.Lock()
		defer bad.mu.Unlock()
		return bad.out > 0
	})
	good := startFakeWorker(t, cli, "good", 4, 0)
	good.frozen.Store(true) // holds the reassigned batches for now
	bad.expireLease(t)
	testwait.For(t, 10*time.Second, "the frozen worker's results kept", func() bool {
		bad.mu.Lock()
		defer bad.mu.Unlock()
		return len(bad.stale) > 0 && bad.out == len(bad.stale)
	})
	testwait.For(t, 10*time.Second, "the batches reassigned", func() bool {
		good.mu.Lock()
		defer good.mu.Unlock()
		return good.out == good.capacity
	})
	// The frozen worker wakes up, registers again and sends the results it
	// held: each names a batch now assigned to the good worker.
	bad.mu.Lock()
	held := len(bad.stale)
	bad.mu.Unlock()
	staleBefore := staleResults(s.Scheduler)
	bad.frozen.Store(false)
	bad.register(t)
	testwait.For(t, 20*time.Second, "the late results sent", func() bool { return bad.replayed.Load() == int64(held) })
	testwait.For(t, 10*time.Second, "the late results refused", func() bool { return staleResults(s.Scheduler)-staleBefore >= uint64(held) })
	good.frozen.Store(false)
	testwait.For(t, 20*time.Second, "every outcome", func() bool { r, _ := n.resolved(); return r == 2000 })
	checkExactlyOnce(t, n, 2000)
	n.mu.Lock()
	dups, late := n.dups, n.models["late"]
	n.mu.Unlock()
	if dups != 0 || late != 0 {
		t.Fatalf("%d duplicate outcomes, %d verdicts from the lapsed worker's late results", dups, late)
	}
	if good.addrs.Load() == 0 {
		t.Fatal("the good worker got nothing")
	}
	t.Logf("%d late results from the lapsed worker, all refused as stale", held)
}

func TestPoisonAddressIsolated(t *testing.T) {
	srv, cli := startEtcd(t)
	s := startScheduler(t, srv.Endpoint(), "s1", func(c *scheduler.Config) { c.BatchSize = 64; c.MaxFailures = 2 })
	testwait.For(t, 10*time.Second, "leadership", s.IsLeader)
	poison := ipv4(77)
	for i := 0; i < 3; i++ {
		w := startFakeWorker(t, cli, fmt.Sprintf("w%d", i), 2, 0)
		w.poison = poison
	}
	n := newFakeNode("node-1", cli)
	for i := 0; i < 500; i++ {
		n.add(ipv4(i))
	}
	runNodes(t, n)
	testwait.For(t, 60*time.Second, "every outcome", func() bool { r, _ := n.resolved(); return r == 500 })
	checkExactlyOnce(t, n, 500)
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.verdicts[poison] != 1 {
		t.Fatalf("poison address outcomes: %d", n.verdicts[poison])
	}
}

func TestFlowControlProportionalToCapacity(t *testing.T) {
	srv, cli := startEtcd(t)
	s := startScheduler(t, srv.Endpoint(), "s1", func(c *scheduler.Config) { c.BatchSize = 16 })
	testwait.For(t, 10*time.Second, "leadership", s.IsLeader)
	// Delays long enough to dominate CPU contention on a loaded machine.
	small := startFakeWorker(t, cli, "small", 1, 20*time.Millisecond)
	big := startFakeWorker(t, cli, "big", 4, 20*time.Millisecond)
	slow := startFakeWorker(t, cli, "slow", 4, 100*time.Millisecond)
	n := newFakeNode("node-1", cli)
	for i := 0; i < 20000; i++ {
		n.add(ipv4(i))
	}
	runNodes(t, n)
	testwait.For(t, 60*time.Second, "every outcome", func() bool { r, _ := n.resolved(); return r == 20000 })
	r := float64(big.batches.Load()) / float64(small.batches.Load())
	rs := float64(slow.batches.Load()) / float64(big.batches.Load())
	t.Logf("batches: small=%d big=%d slow=%d big/small=%.2f slow/big=%.2f", small.batches.Load(), big.batches.Load(), slow.batches.Load(), r, rs)
	if r < 2.5 || r > 5.5 {
		t.Errorf("big/small = %.2f, want about 4", r)
	}
	if rs > 0.5 {
		t.Errorf("slow/big = %.2f, want about 0.2", rs)
	}
}

func TestOverloadShedsWithNotices(t *testing.T) {
	srv, cli := startEtcd(t)
	s := startScheduler(t, srv.Endpoint(), "s1", func(c *scheduler.Config) {
		c.MaxPending = 2000
		c.Shed = pool.Policy{Mode: pool.ShedSample, SampleN: 5}
	})
	testwait.For(t, 10*time.Second, "leadership", s.IsLeader)
	startFakeWorker(t, cli, "w1", 1, 20*time.Millisecond)
	n := newFakeNode("node-1", cli)
	const total = 30000
	for i := 0; i < total; i++ {
		n.add(ipv4(i))
	}
	runNodes(t, n)
	testwait.For(t, 120*time.Second, "every outcome", func() bool { r, _ := n.resolved(); return r == total })
	checkExactlyOnce(t, n, total)
	n.mu.Lock()
	kinds := map[styxv1.OutcomeKind]int{}
	for _, ks := range n.outcomes {
		kinds[ks[0]]++
	}
	n.mu.Unlock()
	t.Logf("outcomes by kind: %v", kinds)
	if kinds[styxv1.OutcomeKind_OUTCOME_KIND_SHED] == 0 {
		t.Fatal("no shed notices under overload")
	}
	st, err := statusOf(s)
	if err != nil {
		t.Fatal(err)
	}
	if st.Pool.Pending > 2000 {
		t.Fatalf("pending %d above the bound", st.Pool.Pending)
	}
}

func statusOf(s *runningScheduler) (*styxv1.StatusResponse, error) {
	conn, err := grpc.NewClient(s.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return styxv1.NewAdminServiceClient(conn).Status(ctx, &styxv1.StatusRequest{})
}

// A leader stops half-way: the standby takes over, every sighting still
// gets one outcome, and both terms publish to the same log streams, which
// end up holding a verdict for every address.
func TestFailoverLosesNothing(t *testing.T) {
	srv, cli := startEtcd(t)
	ns := natstest.Start(t)
	withLog := func(c *scheduler.Config) { c.NATSURL = ns.URL() }
	s1 := startScheduler(t, srv.Endpoint(), "s1", withLog)
	testwait.For(t, 10*time.Second, "s1 leads", s1.IsLeader)
	s2 := startScheduler(t, srv.Endpoint(), "s2", withLog)
	startFakeWorker(t, cli, "w1", 2, 5*time.Millisecond)
	startFakeWorker(t, cli, "w2", 2, 5*time.Millisecond)
	n := newFakeNode("node-1", cli)
	const total = 20000
	for i := 0; i < total; i++ {
		n.add(ipv4(i))
	}
	runNodes(t, n)
	testwait.For(t, 30*time.Second, "some outcomes", func() bool { r, _ := n.resolved(); return r > 1000 })
	s1.stop()
	testwait.For(t, 10*time.Second, "s2 leads", s2.IsLeader)
	testwait.For(t, 60*time.Second, "every outcome", func() bool { r, _ := n.resolved(); return r == total })
	checkExactlyOnce(t, n, total)
	// A follower points nodes to the leader.
	st, err := statusOf(s2)
	if err != nil || !st.Leader || st.LeaderId != "s2" {
		t.Fatalf("status after failover: %v %v", st, err)
	}
	var distinct map[string]bool
	terms := map[int64]bool{}
	readLog(t, ns.URL(), verdictlog.Streams, func(bs []*styxv1.LogBatch) bool {
		distinct = map[string]bool{}
		for _, b := range bs {
			terms[b.GetTerm()] = true
			for _, v := range b.GetVerdicts() {
				distinct[string(v.GetAddress())] = true
			}
		}
		return len(distinct) == total
	})
	if len(terms) != 2 {
		t.Fatalf("the log holds batches of terms %v, want both leaders'", terms)
	}
}

func TestBadInputOnSubmit(t *testing.T) {
	srv, _ := startEtcd(t)
	s := startScheduler(t, srv.Endpoint(), "s1", func(c *scheduler.Config) { c.MaxSubmitBatch = 10 })
	testwait.For(t, 10*time.Second, "leadership", s.IsLeader)
	conn, err := grpc.NewClient(s.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := styxv1.NewSchedulerServiceClient(conn)

	// No hello first.
	st, _ := c.Submit(ctx)
	_ = st.Send(&styxv1.SubmitRequest{Msg: &styxv1.SubmitRequest_Sightings{Sightings: &styxv1.SightingBatch{}}})
	if _, err := st.Recv(); err == nil {
		t.Fatal("sightings before hello accepted")
	}
	// Bad node id.
	st, _ = c.Submit(ctx)
	_ = st.Send(&styxv1.SubmitRequest{Msg: &styxv1.SubmitRequest_Hello{Hello: &styxv1.Hello{NodeId: "a/b"}}})
	if _, err := st.Recv(); err == nil {
		t.Fatal("bad node id accepted")
	}
	// Bad addresses are rejected one by one (unspecified ones, and every
	// sighting of a batch whose columns do not line up); an oversized batch
	// ends the stream.
	st, _ = c.Submit(ctx)
	_ = st.Send(&styxv1.SubmitRequest{Msg: &styxv1.SubmitRequest_Hello{Hello: &styxv1.Hello{NodeId: "n"}}})
	if _, err := st.Recv(); err != nil {
		t.Fatal(err)
	}
	mapped0 := netip.AddrFrom16(netip.MustParseAddr("::ffff:0.0.0.0").As16())
	_ = st.Send(&styxv1.SubmitRequest{Msg: &styxv1.SubmitRequest_Sightings{Sightings: &styxv1.SightingBatch{Seq: 1,
		Ids: []uint64{1, 2}, Addresses: append(columns.AppendAddr(nil, netip.IPv6Unspecified()), mapped0.AsSlice()...), SeenUnixNano: []int64{0, 0},
	}}})
	_ = st.Send(&styxv1.SubmitRequest{Msg: &styxv1.SubmitRequest_Sightings{Sightings: &styxv1.SightingBatch{Seq: 2,
		Ids: []uint64{3, 4}, Addresses: make([]byte, 20), SeenUnixNano: []int64{0, 0},
	}}})
	rejected := map[uint64]string{}
	for len(rejected) < 4 {
		m, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		outs, err := columns.Outcomes(m.GetOutcomes())
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range outs {
			if o.Kind != styxv1.OutcomeKind_OUTCOME_KIND_REJECTED || o.Reason == "" || rejected[o.SightingID] != "" {
				t.Fatalf("outcome %+v", o)
			}
			rejected[o.SightingID] = o.Reason
		}
	}
	if !strings.Contains(rejected[1], "unspecified") || !strings.Contains(rejected[2], "unspecified") || !strings.Contains(rejected[4], "malformed") {
		t.Errorf("reasons %v", rejected)
	}
	_ = st.Send(&styxv1.SubmitRequest{Msg: &styxv1.SubmitRequest_Sightings{Sightings: &styxv1.SightingBatch{Seq: 3, Ids: make([]uint64, 11)}}})
	for {
		if _, err := st.Recv(); err != nil {
			break
		}
	}
}
