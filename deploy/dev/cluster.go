// Package dev runs an all-in-one STYX cluster on one machine: an embedded
// etcd, an embedded NATS server with JetStream (the verdict log), one
// scheduler, workers and cluster nodes as child processes (the built
// binaries), and a load generator that sends the nodes queries for addresses
// taken from the location database. It is what `make run` starts.
package dev

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/styx-inference/styx/pkg/addrsample"
	"github.com/styx-inference/styx/pkg/childproc"
	"github.com/styx-inference/styx/pkg/embedetcd"
	"github.com/styx-inference/styx/pkg/embednats"
	"github.com/styx-inference/styx/pkg/grpcauth"
	"github.com/styx-inference/styx/pkg/locdb"
	"github.com/styx-inference/styx/pkg/pki"
	"github.com/styx-inference/styx/pkg/retry"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

// Config says what to start and where.
type Config struct {
	BinDir     string        // holds styx-scheduler, styx-worker, styx-node
	DataDir    string        // etcd data, JetStream files, node stores, child logs
	EtcdAddr   string        // embedded etcd client address
	NATSAddr   string        // embedded NATS (JetStream) client address
	NATSURL    string        // an external NATS server with JetStream to use instead; "" embeds one
	SchedGRPC  string        // scheduler gRPC listen address
	SchedHTTP  string        // scheduler HTTP listen address
	NodeHTTP   string        // first cluster node's query API listen address; the others count up from its port
	Nodes      int           // cluster node processes
	Workers    int           // worker processes
	DBPath     string        // location database
	Rate       int           // addresses per second the load generator queries; 0 = none
	Interval   time.Duration // between summary lines
	Duration   time.Duration // stop after this long; 0 = until the context ends
	StopPeriod time.Duration // how long a child may take to stop after SIGTERM
	// Insecure runs every hop in plaintext with no authentication. By
	// default a throwaway CA in <data-dir>/pki issues every process its
	// identity, and every hop runs mutual TLS.
	Insecure bool
}

// DefaultConfig is the layout the README documents.
func DefaultConfig() Config {
	return Config{
		BinDir:     "bin",
		EtcdAddr:   "127.0.0.1:2379",
		NATSAddr:   "127.0.0.1:4222",
		SchedGRPC:  "127.0.0.1:7070",
		SchedHTTP:  "127.0.0.1:7080",
		NodeHTTP:   "127.0.0.1:8080",
		Nodes:      1,
		Workers:    2,
		DBPath:     locdb.DefaultPath,
		Rate:       5000,
		Interval:   3 * time.Second,
		StopPeriod: 40 * time.Second,
	}
}

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	switch {
	case c.DataDir == "":
		return errors.New("data dir is required")
	case c.Workers < 1:
		return fmt.Errorf("workers must be at least 1, got %d", c.Workers)
	case c.Nodes < 1:
		return fmt.Errorf("nodes must be at least 1, got %d", c.Nodes)
	case c.NATSAddr == "" && c.NATSURL == "":
		return errors.New("nats address is required")
	case c.Rate < 0:
		return fmt.Errorf("rate must not be negative, got %d", c.Rate)
	case c.Interval <= 0:
		return fmt.Errorf("interval must be positive, got %s", c.Interval)
	case c.NATSURL != "" && !c.Insecure:
		return errors.New("an external NATS server (--nats-url) holds no certificate of the dev CA: add --insecure, or let styx-dev embed JetStream")
	}
	if _, err := c.nodes(); err != nil {
		return err
	}
	for _, b := range []string{"styx-scheduler", "styx-worker", "styx-node"} {
		if _, err := os.Stat(filepath.Join(c.BinDir, b)); err != nil {
			return fmt.Errorf("%s not found in %s (run make build): %w", b, c.BinDir, err)
		}
	}
	return nil
}

// workerID is the id of worker i (from 0).
func workerID(i int) string { return "dev-worker-" + strconv.Itoa(i+1) }

// devNode is one cluster node styx-dev starts.
type devNode struct {
	id      string // --id
	name    string // the child's name, and its log's
	http    string // query API listen address
	dataDir string // store directory
}

// nodes lays out the cluster nodes. The first is dev-node on NodeHTTP with
// its store in <data-dir>/node, as when styx-dev started one node only, so
// that an existing data directory keeps its store; node i (from 2) is
// dev-node-i on NodeHTTP's port + i-1, its store in <data-dir>/node-i.
func (c Config) nodes() ([]devNode, error) {
	host, portStr, err := net.SplitHostPort(c.NodeHTTP)
	if err != nil {
		return nil, fmt.Errorf("node http address %q: %w", c.NodeHTTP, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 1 || port+c.Nodes-1 > 65535 {
		return nil, fmt.Errorf("node http address %q: a fixed port with room for %d nodes above it is needed", c.NodeHTTP, c.Nodes)
	}
	out := make([]devNode, c.Nodes)
	for i := range out {
		n := devNode{id: "dev-node", name: "node", http: net.JoinHostPort(host, strconv.Itoa(port+i))}
		if i > 0 {
			suffix := "-" + strconv.Itoa(i+1)
			n.id, n.name = n.id+suffix, n.name+suffix
		}
		n.dataDir = filepath.Join(c.DataDir, n.name)
		out[i] = n
	}
	return out, nil
}

// child is one running STYX process.
type child struct {
	name string
	log  string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
	// mayLeave marks a worker: one that exits with status 0 on its own was
	// drained (styx-scheduler fleet drain) and the cluster runs on.
	mayLeave bool
	noted    bool // its leaving was reported
}

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and waits; after grace it kills.
func (c *child) stop(grace time.Duration) error {
	if c.exited() {
		return c.err
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
		return c.err
	case <-time.After(grace):
		_ = c.cmd.Process.Kill()
		<-c.done
		return fmt.Errorf("%s did not stop within %s; killed", c.name, grace)
	}
}

// Run starts the cluster, drives load and prints summaries to out until ctx
// ends or cfg.Duration passes, then stops everything: the children in the
// reverse of start order (nodes, workers, scheduler), then NATS, then etcd.
func Run(ctx context.Context, cfg Config, out io.Writer) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	nodes, err := cfg.nodes()
	if err != nil {
		return err
	}
	logDir := filepath.Join(cfg.DataDir, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return err
	}
	ids := []pki.Identity{devEtcd, devNATS, devAdmin, devTrainer, devSched}
	for i := range cfg.Workers {
		ids = append(ids, pki.Identity{Role: pki.Worker, ID: workerID(i)})
	}
	for _, n := range nodes {
		ids = append(ids, pki.Identity{Role: pki.Node, ID: n.id})
	}
	var trust *devPKI
	if !cfg.Insecure {
		if trust, err = makePKI(filepath.Join(cfg.DataDir, "pki"), ids); err != nil {
			return err
		}
	}
	// The deferred stops run last in, first out: children, NATS, etcd.
	ecfg := embedetcd.Config{Dir: filepath.Join(cfg.DataDir, "etcd"), ClientAddr: cfg.EtcdAddr}
	if trust != nil {
		ecfg.PKIDir = trust.dirs[devEtcd]
	}
	etcd, err := embedetcd.Start(ecfg)
	if err != nil {
		return fmt.Errorf("etcd on %s: %w", cfg.EtcdAddr, err)
	}
	defer etcd.Close()
	if trust != nil {
		gctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := trust.grantAll(gctx, etcd, ids)
		cancel()
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "etcd        https://%s (embedded; client certificates, each identity its own keys)\n", etcd.Endpoint())
	} else {
		fmt.Fprintf(out, "etcd        %s (embedded)\n", etcd.Endpoint())
	}
	natsURL := cfg.NATSURL
	if natsURL == "" {
		natsSrc, err := trust.source(devNATS)
		if err != nil {
			return err
		}
		// Refused clients are logged to logs/nats.log.
		natsLog, err := os.Create(filepath.Join(logDir, "nats.log"))
		if err != nil {
			return err
		}
		defer natsLog.Close()
		nats, err := embednats.Start(embednats.Config{Dir: filepath.Join(cfg.DataDir, "nats"), Addr: cfg.NATSAddr, Source: natsSrc,
			Log: zerolog.New(natsLog).With().Timestamp().Logger()})
		if err != nil {
			return fmt.Errorf("nats on %s: %w", cfg.NATSAddr, err)
		}
		defer nats.Close()
		natsURL = nats.URL()
		fmt.Fprintf(out, "nats        %s (embedded, JetStream: the verdict log)\n", natsURL)
	} else {
		fmt.Fprintf(out, "nats        %s (external, JetStream: the verdict log)\n", natsURL)
	}

	var children []*child
	defer func() {
		// Stop in the reverse of start order: the nodes first, the scheduler last.
		for i := len(children) - 1; i >= 0; i-- {
			if err := children[i].stop(cfg.StopPeriod); err != nil && !errors.Is(err, context.Canceled) {
				fmt.Fprintf(out, "%s: %v (log: %s)\n", children[i].name, err, children[i].log)
			}
		}
		fmt.Fprintln(out, "stopped")
	}()
	start := func(name, bin string, args ...string) (*child, error) {
		logPath := filepath.Join(logDir, name+".log")
		f, err := os.Create(logPath)
		if err != nil {
			return nil, err
		}
		cmd := exec.Command(filepath.Join(cfg.BinDir, bin), args...)
		cmd.Stdout, cmd.Stderr = f, f
		childproc.SetParentDeathSignal(cmd)
		if err := cmd.Start(); err != nil {
			f.Close()
			return nil, fmt.Errorf("start %s: %w", name, err)
		}
		c := &child{name: name, log: logPath, cmd: cmd, done: make(chan struct{})}
		go func() { c.err = cmd.Wait(); f.Close(); close(c.done) }()
		children = append(children, c)
		return c, nil
	}
	ep := "--etcd-endpoints=" + etcd.Endpoint()
	logURL := "--nats-url=" + natsURL
	sched, err := start("scheduler", "styx-scheduler", "serve", "--id="+devSched.ID, ep, logURL, trust.flag(devSched),
		"--grpc-addr="+cfg.SchedGRPC, "--http-addr="+cfg.SchedHTTP)
	if err != nil {
		return err
	}
	if err := waitHTTP(ctx, "http://"+cfg.SchedHTTP+"/healthz", sched); err != nil {
		return err
	}
	fmt.Fprintf(out, "scheduler   gRPC %s, visualiser http://%s/ (log %s)\n", cfg.SchedGRPC, cfg.SchedHTTP, sched.log)
	for i := range cfg.Workers {
		id := workerID(i)
		w, err := start(id, "styx-worker", "--id="+id, ep, logURL, trust.flag(pki.Identity{Role: pki.Worker, ID: id}),
			"--listen-addr=127.0.0.1:0", "--db="+cfg.DBPath)
		if err != nil {
			return err
		}
		w.mayLeave = true
		fmt.Fprintf(out, "worker      %s (log %s)\n", id, w.log)
	}
	var bases []string
	for _, n := range nodes {
		c, err := start(n.name, "styx-node", "serve", "--id="+n.id, ep, logURL, trust.flag(pki.Identity{Role: pki.Node, ID: n.id}),
			"--http-addr="+n.http, "--data-dir="+n.dataDir, "--db="+cfg.DBPath)
		if err != nil {
			return err
		}
		if err := waitHTTP(ctx, "http://"+n.http+"/healthz", c); err != nil {
			return err
		}
		fmt.Fprintf(out, "node        %s: query API http://%s/v2/{ip}?vpn=1&asn=1, threats page http://%s/threats (log %s)\n", n.id, n.http, n.http, c.log)
		bases = append(bases, "http://"+n.http)
	}

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	nets, err := sampleNetworks(cfg.DBPath, 100_000, rng)
	if err != nil {
		return err
	}
	spread := ""
	if len(bases) > 1 {
		spread = fmt.Sprintf(", spread over the %d nodes", len(bases))
	}
	fmt.Fprintf(out, "load        %d addresses/s%s, random ones inside %d networks sampled from the location database (data only: nothing dials them)\n", cfg.Rate, spread, len(nets))
	fmt.Fprintf(out, "data        %s\n", locdb.Attribution)
	fmt.Fprintf(out, "try         curl 'http://%s/v2/%s?vpn=1&asn=1'\n", nodes[0].http, addrsample.In(nets[0], rng))
	trust.printTrust(out, etcd.Endpoint(), cfg.SchedGRPC)
	fmt.Fprintln(out, "Ctrl-C stops everything.")

	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}
	ld := &load{bases: bases, nets: nets, rate: cfg.Rate}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); ld.run(ctx) }()
	adminSrc, err := trust.source(devAdmin)
	if err != nil {
		return err
	}
	err = report(ctx, cfg, adminSrc, out, ld, children, bases)
	wg.Wait()
	return err
}

// waitHTTP polls url until it answers 200, the child exits, or 30 s pass.
func waitHTTP(ctx context.Context, url string, c *child) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if c.exited() {
			return fmt.Errorf("%s exited: %v; last lines of %s:\n%s", c.name, c.err, c.log, tail(c.log, 10))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready at %s after 30s (log %s)", c.name, url, c.log)
		}
		if !retry.Sleep(ctx, 100*time.Millisecond) {
			return ctx.Err()
		}
	}
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// report prints one summary line per interval from the scheduler's status
// and the nodes' verdict log lag, and notes a child that exits on its own.
func report(ctx context.Context, cfg Config, admin *pki.Source, out io.Writer, ld *load, children []*child, nodes []string) error {
	metricsClient := &http.Client{Timeout: time.Second}
	creds := grpc.WithTransportCredentials(insecure.NewCredentials())
	if admin != nil {
		creds = grpcauth.DialOption(admin, pki.AnyOf(pki.Scheduler))
	}
	conn, err := grpc.NewClient(cfg.SchedGRPC, creds)
	if err != nil {
		return err
	}
	defer conn.Close()
	adminClient := styxv1.NewAdminServiceClient(conn)
	tick := time.NewTicker(cfg.Interval)
	defer tick.Stop()
	began := time.Now()
	var last *styxv1.PoolStatus
	lastAt := began
	var lastQueries uint64
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintf(out, "summary     %s\n", summary(last, ld))
			return nil
		case now := <-tick.C:
			for _, c := range children {
				if c.exited() && c.mayLeave && c.err == nil {
					if !c.noted {
						c.noted = true
						fmt.Fprintf(out, "%6.0fs  %s drained and left the fleet\n", now.Sub(began).Seconds(), c.name)
					}
					continue
				}
				if c.exited() {
					return fmt.Errorf("%s exited: %v; last lines of %s:\n%s", c.name, c.err, c.log, tail(c.log, 10))
				}
			}
			sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			st, err := adminClient.Status(sctx, &styxv1.StatusRequest{})
			cancel()
			if err != nil {
				if dl, ok := ctx.Deadline(); ctx.Err() != nil || ok && !time.Now().Before(dl) {
					continue // stopping (the deadline may pass before ctx's timer fires): the summary follows
				}
				fmt.Fprintf(out, "%6.0fs  status: %v\n", now.Sub(began).Seconds(), err)
				continue
			}
			p := st.GetPool()
			if p == nil {
				p = &styxv1.PoolStatus{}
			}
			secs := now.Sub(lastAt).Seconds()
			rate := func(cur, prev uint64) float64 { return float64(cur-prev) / secs }
			var prevRecv, prevVerd uint64
			if last != nil {
				prevRecv, prevVerd = last.Received, last.Verdicts
			}
			q := ld.queries.Load()
			fmt.Fprintf(out, "%6.0fs  queries/s %7.0f  sightings/s %7.0f  verdicts/s %7.0f  pool %6d  in flight %5d  coverage %5.1f%%  shed %d  workers %d  proxies %d  log lag %s\n",
				now.Sub(began).Seconds(), rate(q, lastQueries), rate(p.Received, prevRecv), rate(p.Verdicts, prevVerd),
				p.Pending, p.InFlight, 100*p.Coverage, p.Shed, len(st.Workers), ld.proxies.Load(), logLags(ctx, metricsClient, nodes))
			last, lastAt, lastQueries = p, now, q
		}
	}
}

// logLags is each node's verdict log lag, in messages summed over the
// streams, read from its /metrics and joined with "/" in node order: "?"
// for a node that did not answer, and "!" after the count of a node whose
// follower reports itself stalled.
func logLags(ctx context.Context, client *http.Client, bases []string) string {
	parts := make([]string, len(bases))
	for i, base := range bases {
		parts[i] = "?"
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
		if err != nil {
			continue
		}
		resp, err := client.Do(req)
		if err != nil {
			continue
		}
		lag, stalled, ok := parseLogLag(resp.Body)
		resp.Body.Close()
		if ok {
			parts[i] = strconv.FormatFloat(lag, 'f', 0, 64)
			if stalled {
				parts[i] += "!"
			}
		}
	}
	return strings.Join(parts, "/")
}

// parseLogLag sums styx_node_log_lag_messages over its streams and reads
// styx_node_log_stalled from a Prometheus text exposition; ok is false when
// no lag is exported.
func parseLogLag(r io.Reader) (lag float64, stalled, ok bool) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		i := strings.LastIndexByte(line, ' ')
		if i < 0 || strings.HasPrefix(line, "#") {
			continue
		}
		metric, _, _ := strings.Cut(line[:i], "{")
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		switch metric {
		case "styx_node_log_lag_messages":
			lag, ok = lag+v, true
		case "styx_node_log_stalled":
			stalled = v != 0
		}
	}
	return lag, stalled, ok
}

func summary(p *styxv1.PoolStatus, ld *load) string {
	if p == nil {
		p = &styxv1.PoolStatus{}
	}
	return fmt.Sprintf("queries %d (errors %d), sightings received %d, examined %d, verdicts %d, shed %d, expired %d, answers naming a proxy %d",
		ld.queries.Load(), ld.errors.Load(), p.Received, p.Examined, p.Verdicts, p.Shed, p.Expired, ld.proxies.Load())
}
