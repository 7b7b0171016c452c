//go:build linux

package integration

// Helpers of the multi-process tests (process_test.go): an etcd in this
// process, the built binaries as child processes (each in its own process
// group, killed by the kernel if this process dies, killed and reaped by
// t.Cleanup), and an in-process cluster node that counts the outcomes of
// its sightings. Every name here starts with "proc" so that it cannot clash
// with the in-process fixtures of cluster_test.go.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"github.com/nats-io/nats.go"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/styx-inference/styx/clusternode"
	"github.com/styx-inference/styx/pkg/childproc"
	"github.com/styx-inference/styx/pkg/embedetcd"
	"github.com/styx-inference/styx/pkg/embednats/natstest"
	"github.com/styx-inference/styx/pkg/etcdauth"
	"github.com/styx-inference/styx/pkg/keyspace"
	"github.com/styx-inference/styx/pkg/leader"
	"github.com/styx-inference/styx/pkg/locdb"
	"github.com/styx-inference/styx/pkg/pki"
	"github.com/styx-inference/styx/pkg/pki/pkitest"
	"github.com/styx-inference/styx/pkg/testwait"
	"github.com/styx-inference/styx/pkg/verdictlog"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

const (
	// procTTL is the lease TTL of every scheduler and worker process.
	procTTL = 2 * time.Second
	// procSlack is added to the timing bounds for the polling interval.
	procSlack = 250 * time.Millisecond
	// procPoll is the polling interval of the timed waits.
	procPoll = 10 * time.Millisecond
	// procTailLines is how much of each log a failed test prints.
	procTailLines = 40
)

// procCluster is an etcd in this process plus the STYX processes and
// in-process nodes a test starts. Its cleanup stops the nodes, kills and
// reaps every child, dumps the logs' tails when the test failed and stops
// etcd, in that order.
type procCluster struct {
	t    *testing.T
	bin  string
	dir  string           // logs and data
	nats *natstest.Server // the verdict log, restartable
	etcd *embedetcd.Server
	cli  *clientv3.Client
	http *http.Client

	children []*procChild
	nodes    []*procNode

	// Every hop runs mutual TLS: pki issues each process its identity,
	// and cli (an admin) grants its etcd permissions.
	pki *pkitest.PKI
}

func newProcCluster(t *testing.T) *procCluster {
	t.Helper()
	bin := binaries(t)
	dir := t.TempDir()
	p := pkitest.New(t)
	ns := natstest.StartTLS(t, p) // stopped after c.close, which is registered later
	srv, err := embedetcd.Start(embedetcd.Config{Dir: filepath.Join(dir, "etcd"), ClientAddr: "127.0.0.1:0", PKIDir: p.Dir(t, pki.Etcd, procEtcdID)})
	if err != nil {
		t.Fatal(err)
	}
	cli, err := procEtcdAdmin(t, srv, p)
	if err != nil {
		srv.Close()
		t.Fatal(err)
	}
	c := &procCluster{
		t: t, bin: bin, dir: dir, nats: ns, etcd: srv, cli: cli, pki: p,
		http: &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}},
	}
	t.Cleanup(c.close)
	return c
}

func (c *procCluster) close() {
	for _, n := range c.nodes {
		n.stop(c.t)
	}
	for _, ch := range c.children {
		ch.kill(c.t)
	}
	if c.t.Failed() {
		for _, ch := range c.children {
			c.t.Logf("---- tail of %s (%s) ----\n%s", ch.name, ch.exitStatus(), procTail(ch.logPath, procTailLines))
		}
		for _, n := range c.nodes {
			c.t.Logf("---- tail of node %s ----\n%s", n.node.ID(), procTail(n.logPath, procTailLines))
		}
	}
	c.http.CloseIdleConnections()
	c.cli.Close()
	c.etcd.Close()
}

// procEtcdID is the etcd server's identity, etcd/<procEtcdID>.
const procEtcdID = "proc-etcd"

// procAdmin is the tests' own identity: etcd's root role, AdminService.
var procAdmin = pki.Identity{Role: pki.Admin, ID: "proc-test"}

// procEtcdAdmin turns etcd's authentication on (idempotent) and returns
// the admin's client.
func procEtcdAdmin(t *testing.T, srv *embedetcd.Server, p *pkitest.PKI) (*clientv3.Client, error) {
	t.Helper()
	admin, err := srv.ClientAs(p.Source(t, procAdmin.Role, procAdmin.ID))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := etcdauth.Enable(ctx, admin, procAdmin); err != nil {
		admin.Close()
		return nil, err
	}
	return admin, nil
}

// natsOpts connect the tests' own NATS clients as the admin.
func (c *procCluster) natsOpts(t testing.TB) []nats.Option {
	t.Helper()
	return verdictlog.TLS(c.pki.Source(t, procAdmin.Role, procAdmin.ID))
}

// identity issues role/id its certificate and etcd permissions and
// returns its identity directory.
func (c *procCluster) identity(role pki.Role, id string) string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := etcdauth.Grant(ctx, c.cli, pki.Identity{Role: role, ID: id}); err != nil {
		c.t.Fatal(err)
	}
	return c.pki.Dir(c.t, role, id)
}

// procChild is one child process. Its stdout and stderr go to logPath.
type procChild struct {
	name    string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{} // closed once the process has been reaped
	waitErr error         // valid after done
}

// start starts binary as a child process in its own process group, with
// the parent-death signal set so that it cannot outlive the test process.
func (c *procCluster) start(name, binary string, args ...string) *procChild {
	c.t.Helper()
	logPath := filepath.Join(c.dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		c.t.Fatal(err)
	}
	defer f.Close() // the child holds its own descriptor
	cmd := exec.Command(filepath.Join(c.bin, binary), args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = procEnv()
	childproc.SetParentDeathSignal(cmd)
	// SIGKILL rather than the SIGTERM the helper sets: a child the test
	// SIGSTOPped would not act on SIGTERM until it is continued.
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	cmd.SysProcAttr.Setpgid = true
	if err := cmd.Start(); err != nil {
		c.t.Fatalf("start %s: %v", name, err)
	}
	ch := &procChild{name: name, logPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		ch.waitErr = cmd.Wait()
		close(ch.done)
	}()
	c.children = append(c.children, ch)
	c.t.Logf("started %s (pid %d): %s %s", name, cmd.Process.Pid, binary, strings.Join(args, " "))
	return ch
}

// procEnv is this process's environment without STYX_ settings, which
// would override the children's flags.
func procEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "STYX_") {
			env = append(env, kv)
		}
	}
	return env
}

func (p *procChild) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *procChild) exitStatus() string {
	if !p.exited() {
		return "running"
	}
	if p.waitErr == nil {
		return "exited 0"
	}
	return p.waitErr.Error()
}

// signal sends sig to the process and returns the time just before.
func (p *procChild) signal(t *testing.T, sig syscall.Signal) time.Time {
	t.Helper()
	at := time.Now()
	if err := syscall.Kill(p.cmd.Process.Pid, sig); err != nil {
		t.Fatalf("signal %v to %s: %v", sig, p.name, err)
	}
	t.Logf("sent %v to %s", sig, p.name)
	return at
}

// kill kills the process group with SIGKILL (a stopped process dies too)
// and waits until the process is reaped.
func (p *procChild) kill(t *testing.T) {
	if !p.exited() {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Errorf("%s (pid %d) not reaped 10s after SIGKILL", p.name, p.cmd.Process.Pid)
	}
}

// logEntries returns the JSON log lines written so far whose message is
// msg (all of them when msg is "").
func (p *procChild) logEntries(msg string) []map[string]any {
	f, err := os.Open(p.logPath)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) != nil {
			continue // a line still being written, or not JSON
		}
		if msg == "" || m["message"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// waitLog waits until the child logs msg and returns that line; it fails at
// once when the child exits first.
func (p *procChild) waitLog(t *testing.T, d time.Duration, msg string) map[string]any {
	t.Helper()
	var line map[string]any
	testwait.For(t, d, fmt.Sprintf("%s to log %q", p.name, msg), func() bool {
		if es := p.logEntries(msg); len(es) > 0 {
			line = es[0]
			return true
		}
		if p.exited() {
			t.Fatalf("%s exited (%s) before logging %q:\n%s", p.name, p.exitStatus(), msg, procTail(p.logPath, procTailLines))
		}
		return false
	})
	return line
}

// procScheduler is a styx-scheduler process.
type procScheduler struct {
	*procChild
	id       string
	grpcAddr string
	httpAddr string
}

// startScheduler starts a scheduler with the test lease TTL and small
// batches, listening on ports the OS picks (read back from its log).
func (c *procCluster) startScheduler(id string, extra ...string) *procScheduler {
	c.t.Helper()
	args := append([]string{
		"serve",
		"--id=" + id,
		"--etcd-endpoints=" + c.etcd.Endpoint(),
		"--grpc-addr=127.0.0.1:0",
		"--http-addr=127.0.0.1:0",
		"--lease-ttl=" + procTTL.String(),
		"--batch-size=256",
		"--batch-interval=5ms",
		"--nats-url=" + c.nats.URL(),
		"--pki-dir=" + c.identity(pki.Scheduler, id),
		"--log-level=info",
	}, extra...)
	ch := c.start("scheduler-"+id, "styx-scheduler", args...)
	line := ch.waitLog(c.t, 30*time.Second, "serving")
	s := &procScheduler{procChild: ch, id: id}
	s.grpcAddr, _ = line["grpc"].(string)
	s.httpAddr, _ = line["http"].(string)
	if s.grpcAddr == "" || s.httpAddr == "" {
		c.t.Fatalf("scheduler %s: no addresses in %v", id, line)
	}
	return s
}

// status reads the scheduler's /api/status.
func (c *procCluster) status(s *procScheduler) (*styxv1.StatusResponse, error) {
	b, err := c.get("http://" + s.httpAddr + "/api/status")
	if err != nil {
		return nil, err
	}
	st := &styxv1.StatusResponse{}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("decode status: %w", err)
	}
	return st, nil
}

// event reads styx_scheduler_events_total{kind=kind} from the scheduler's
// /metrics (only the leader exports it).
func (c *procCluster) event(s *procScheduler, kind string) (float64, error) {
	b, err := c.get("http://" + s.httpAddr + "/metrics")
	if err != nil {
		return 0, err
	}
	v, err := sample(string(b), eventSeries(kind))
	if err != nil {
		return 0, fmt.Errorf("%s: %w", s.name, err)
	}
	return v, nil
}

// eventSeries names the scheduler's event counter of kind.
func eventSeries(kind string) string { return `styx_scheduler_events_total{kind="` + kind + `"}` }

// sample returns the value of the series named exactly by series in a
// /metrics body.
func sample(body, series string) (float64, error) {
	prefix := series + " "
	for line := range strings.SplitSeq(body, "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("no series %s", series)
}

func (c *procCluster) mustEvent(s *procScheduler, kind string) float64 {
	c.t.Helper()
	v, err := c.event(s, kind)
	if err != nil {
		c.t.Fatal(err)
	}
	return v
}

func (c *procCluster) get(url string) ([]byte, error) {
	resp, err := c.http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", url, resp.Status, bytes.TrimSpace(b))
	}
	return b, nil
}

// waitLeading waits until s leads, as etcd and s itself see it.
func (c *procCluster) waitLeading(s *procScheduler) {
	c.t.Helper()
	testwait.For(c.t, 30*time.Second, s.id+" to lead", func() bool {
		li, err := c.leader()
		if err != nil || li.ID != s.id {
			return false
		}
		st, err := c.status(s)
		return err == nil && st.Leader
	})
}

func (c *procCluster) leader() (keyspace.LeaderInfo, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	li, _, err := leader.Current(ctx, c.cli)
	return li, err
}

// workerStatus returns the leader s's view of worker id (nil when unknown).
func (c *procCluster) workerStatus(s *procScheduler, id string) *styxv1.WorkerStatus {
	st, err := c.status(s)
	if err != nil {
		return nil
	}
	for _, w := range st.Workers {
		if w.WorkerId == id {
			return w
		}
	}
	return nil
}

// waitWorkersReady waits until the leader s has a ready stream to every
// worker in ids.
func (c *procCluster) waitWorkersReady(s *procScheduler, ids ...string) {
	c.t.Helper()
	testwait.For(c.t, 30*time.Second, fmt.Sprintf("workers %v ready at %s", ids, s.id), func() bool {
		for _, id := range ids {
			if w := c.workerStatus(s, id); w == nil || w.State != "ready" {
				return false
			}
		}
		return true
	})
}

// startWorker starts a worker process with the nop engine and the test
// lease TTL, and waits until it is registered.
func (c *procCluster) startWorker(id string, batchDelay time.Duration, extra ...string) *procChild {
	c.t.Helper()
	args := append([]string{
		"--id=" + id,
		"--etcd-endpoints=" + c.etcd.Endpoint(),
		"--listen-addr=127.0.0.1:0",
		"--engine=nop",
		"--lease-ttl=" + procTTL.String(),
		"--batch-delay=" + batchDelay.String(),
		"--capacity=4",
		"--drain-timeout=5s",
		"--nats-url=" + c.nats.URL(),
		"--pki-dir=" + c.identity(pki.Worker, id),
		"--log-level=info",
	}, extra...)
	ch := c.start("worker-"+id, "styx-worker", args...)
	testwait.For(c.t, 30*time.Second, "worker "+id+" registered", func() bool {
		if ch.exited() {
			c.t.Fatalf("worker %s exited (%s):\n%s", id, ch.exitStatus(), procTail(ch.logPath, procTailLines))
		}
		return c.keyExists(keyspace.WorkerKey(id))
	})
	return ch
}

func (c *procCluster) keyExists(key string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := c.cli.Get(ctx, key, clientv3.WithCountOnly())
	return err == nil && resp.Count > 0
}

// waitKeyGone polls etcd until key is gone and returns how long after
// since that was observed. It fails after limit.
func (c *procCluster) waitKeyGone(key string, since time.Time, limit time.Duration) time.Duration {
	c.t.Helper()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		resp, err := c.cli.Get(ctx, key, clientv3.WithCountOnly())
		cancel()
		now := time.Now()
		if err == nil && resp.Count == 0 {
			return now.Sub(since)
		}
		if now.Sub(since) > limit {
			c.t.Fatalf("%s still in etcd %s later (last error: %v)", key, now.Sub(since).Round(time.Millisecond), err)
		}
		time.Sleep(procPoll)
	}
}

// procNode is an in-process cluster node whose outcomes are tallied.
type procNode struct {
	node    *clusternode.Node
	tally   *procTally
	logPath string
	logFile *os.File
	cancel  context.CancelFunc
	done    chan error
	stopped bool
}

// startNode starts a cluster node in this process and waits until its
// submit stream to the leader is up.
func (c *procCluster) startNode(id string) *procNode {
	c.t.Helper()
	if _, err := os.Stat(locdb.DefaultPath); err != nil {
		c.t.Skipf("location database %s not available: %v", locdb.DefaultPath, err)
	}
	logPath := filepath.Join(c.dir, "node-"+id+".log")
	f, err := os.Create(logPath)
	if err != nil {
		c.t.Fatal(err)
	}
	tally := newProcTally()
	cfg := clusternode.DefaultConfig()
	cfg.EtcdEndpoints = []string{c.etcd.Endpoint()}
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.ID = id
	cfg.DataDir = filepath.Join(c.dir, "node-"+id)
	cfg.DBPath = locdb.DefaultPath
	cfg.SkipVerify = true // the signature is not what these tests are about
	cfg.LeaseTTL = procTTL
	cfg.NATSURL = c.nats.URL()
	cfg.BatchInterval = 5 * time.Millisecond
	cfg.ReconnectMin, cfg.ReconnectMax = 20*time.Millisecond, 250*time.Millisecond
	cfg.ShutdownTimeout = 2 * time.Second
	cfg.OnOutcome = tally.record
	src, err := pki.Load(c.identity(pki.Node, id), zerolog.Nop())
	if err != nil {
		f.Close()
		c.t.Fatal(err)
	}
	cfg.PKI = src
	n, err := clusternode.New(cfg, zerolog.New(f).Level(zerolog.InfoLevel).With().Timestamp().Logger())
	if err != nil {
		f.Close()
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	pn := &procNode{node: n, tally: tally, logPath: logPath, logFile: f, cancel: cancel, done: make(chan error, 1)}
	go func() { pn.done <- n.Run(ctx) }()
	c.nodes = append(c.nodes, pn)
	testwait.For(c.t, 30*time.Second, "node "+id+" connected to the leader", func() bool { return n.Stats().Connected })
	return pn
}

func (n *procNode) stop(t *testing.T) {
	if n.stopped {
		return
	}
	n.stopped = true
	n.cancel()
	select {
	case err := <-n.done:
		if err != nil {
			t.Errorf("node %s: %v", n.node.ID(), err)
		}
	case <-time.After(20 * time.Second):
		t.Errorf("node %s did not stop within 20s", n.node.ID())
	}
	n.logFile.Close()
}

// submit submits addrs, each of which must become a new sighting.
func (n *procNode) submit(t *testing.T, addrs []netip.Addr) {
	t.Helper()
	if got := n.node.Submit(addrs...); got != len(addrs) {
		t.Fatalf("Submit made %d sightings of %d addresses (stats %+v)", got, len(addrs), n.node.Stats())
	}
}

// waitResolved waits until want sightings have an outcome and none is
// pending.
func (n *procNode) waitResolved(t *testing.T, d time.Duration, want int) {
	t.Helper()
	testwait.For(t, d, fmt.Sprintf("%d outcomes", want), func() bool {
		return n.tally.count() >= want && n.node.Stats().Pending == 0
	})
}

// checkExactlyOnce asserts that every address in addrs (one sighting each)
// got exactly one outcome, of kind verdict, and that the node saw no
// duplicate outcome.
func (n *procNode) checkExactlyOnce(t *testing.T, addrs []netip.Addr) {
	t.Helper()
	st := n.node.Stats()
	if st.DuplicateOutcomes != 0 {
		t.Errorf("node saw %d duplicate outcomes", st.DuplicateOutcomes)
	}
	if st.Pending != 0 {
		t.Errorf("%d sightings still pending", st.Pending)
	}
	if st.Submitted != uint64(len(addrs)) {
		t.Errorf("node submitted %d sightings, want %d", st.Submitted, len(addrs))
	}
	n.tally.mu.Lock()
	defer n.tally.mu.Unlock()
	if len(n.tally.byID) != len(addrs) {
		t.Errorf("%d sighting ids got an outcome, want %d", len(n.tally.byID), len(addrs))
	}
	dupIDs := 0
	for _, k := range n.tally.byID {
		if k != 1 {
			dupIDs++
		}
	}
	if dupIDs > 0 {
		t.Errorf("%d sighting ids got more than one outcome", dupIDs)
	}
	missing, dupAddrs := 0, 0
	for _, a := range addrs {
		switch n.tally.byAddr[a] {
		case 0:
			missing++
		case 1:
		default:
			dupAddrs++
		}
	}
	if missing > 0 || dupAddrs > 0 {
		t.Errorf("of %d addresses, %d got no outcome and %d more than one", len(addrs), missing, dupAddrs)
	}
	if v := n.tally.kinds[styxv1.OutcomeKind_OUTCOME_KIND_VERDICT]; v != len(addrs) {
		t.Errorf("%d verdicts of %d outcomes; kinds %v", v, n.tally.n, n.tally.kinds)
	}
	t.Logf("node %s: %d sightings, %d outcomes (kinds %v), %d re-sent, %d duplicate outcomes",
		n.node.ID(), st.Submitted, n.tally.n, n.tally.kinds, st.Resent, st.DuplicateOutcomes)
}

// procTally counts outcomes per sighting id, per address and per kind.
type procTally struct {
	mu     sync.Mutex
	byID   map[uint64]int
	byAddr map[netip.Addr]int
	kinds  map[styxv1.OutcomeKind]int
	n      int
}

func newProcTally() *procTally {
	return &procTally{byID: map[uint64]int{}, byAddr: map[netip.Addr]int{}, kinds: map[styxv1.OutcomeKind]int{}}
}

// record is the node's OnOutcome.
func (t *procTally) record(id uint64, a netip.Addr, kind styxv1.OutcomeKind) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.byID[id]++
	t.byAddr[a]++
	t.kinds[kind]++
	t.n++
}

func (t *procTally) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.n
}

// procAddrs returns n distinct addresses from 198.18.0.0/15 (the
// benchmarking range) starting at offset. They are only data: the nop
// engine examines nothing and nothing dials them.
func procAddrs(offset, n int) []netip.Addr {
	out := make([]netip.Addr, n)
	for i := range out {
		v := (uint32(198)<<24 | uint32(18)<<16) + uint32(offset+i)
		out[i] = netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	}
	return out
}

// procTail returns the last n lines of the file at path.
func procTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
