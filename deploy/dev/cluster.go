// Package dev runs an all-in-one STYX cluster on one machine: an embedded
// etcd, one scheduler, N workers and one cluster node as child processes
// (the built binaries), and a load generator that sends the node queries for
// addresses taken from the location database. It is what `make run` starts.
package dev

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/styx-inference/styx/pkg/addrsample"
	"github.com/styx-inference/styx/pkg/childproc"
	"github.com/styx-inference/styx/pkg/embedetcd"
	"github.com/styx-inference/styx/pkg/locdb"
	"github.com/styx-inference/styx/pkg/retry"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

// Config says what to start and where.
type Config struct {
	BinDir     string        // holds styx-scheduler, styx-worker, styx-node
	DataDir    string        // etcd data, node store, child logs
	EtcdAddr   string        // embedded etcd client address
	SchedGRPC  string        // scheduler gRPC listen address
	SchedHTTP  string        // scheduler HTTP listen address
	NodeHTTP   string        // cluster node query API listen address
	Workers    int           // worker processes
	DBPath     string        // location database
	Rate       int           // addresses per second the load generator queries; 0 = none
	Interval   time.Duration // between summary lines
	Duration   time.Duration // stop after this long; 0 = until the context ends
	StopPeriod time.Duration // how long a child may take to stop after SIGTERM
}

// DefaultConfig is the layout the README documents.
func DefaultConfig() Config {
	return Config{
		BinDir:     "bin",
		EtcdAddr:   "127.0.0.1:2379",
		SchedGRPC:  "127.0.0.1:7070",
		SchedHTTP:  "127.0.0.1:7080",
		NodeHTTP:   "127.0.0.1:8080",
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
	case c.Rate < 0:
		return fmt.Errorf("rate must not be negative, got %d", c.Rate)
	case c.Interval <= 0:
		return fmt.Errorf("interval must be positive, got %s", c.Interval)
	}
	for _, b := range []string{"styx-scheduler", "styx-worker", "styx-node"} {
		if _, err := os.Stat(filepath.Join(c.BinDir, b)); err != nil {
			return fmt.Errorf("%s not found in %s (run make build): %w", b, c.BinDir, err)
		}
	}
	return nil
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
// ends or cfg.Duration passes, then stops everything, children first.
func Run(ctx context.Context, cfg Config, out io.Writer) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	logDir := filepath.Join(cfg.DataDir, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return err
	}
	etcd, err := embedetcd.Start(embedetcd.Config{Dir: filepath.Join(cfg.DataDir, "etcd"), ClientAddr: cfg.EtcdAddr})
	if err != nil {
		return fmt.Errorf("etcd on %s: %w", cfg.EtcdAddr, err)
	}
	defer etcd.Close()
	fmt.Fprintf(out, "etcd        %s (embedded)\n", etcd.Endpoint())

	var children []*child
	defer func() {
		// Stop in the reverse of start order: the node first, the scheduler last.
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
	sched, err := start("scheduler", "styx-scheduler", "serve", "--id=dev-scheduler", ep,
		"--grpc-addr="+cfg.SchedGRPC, "--http-addr="+cfg.SchedHTTP)
	if err != nil {
		return err
	}
	if err := waitHTTP(ctx, "http://"+cfg.SchedHTTP+"/healthz", sched); err != nil {
		return err
	}
	fmt.Fprintf(out, "scheduler   gRPC %s, visualiser http://%s/ (log %s)\n", cfg.SchedGRPC, cfg.SchedHTTP, sched.log)
	for i := range cfg.Workers {
		id := "dev-worker-" + strconv.Itoa(i+1)
		w, err := start(id, "styx-worker", "--id="+id, ep, "--listen-addr=127.0.0.1:0", "--db="+cfg.DBPath)
		if err != nil {
			return err
		}
		w.mayLeave = true
		fmt.Fprintf(out, "worker      %s (log %s)\n", id, w.log)
	}
	node, err := start("node", "styx-node", "serve", "--id=dev-node", ep, "--http-addr="+cfg.NodeHTTP,
		"--data-dir="+filepath.Join(cfg.DataDir, "node"), "--db="+cfg.DBPath)
	if err != nil {
		return err
	}
	if err := waitHTTP(ctx, "http://"+cfg.NodeHTTP+"/healthz", node); err != nil {
		return err
	}
	fmt.Fprintf(out, "node        query API http://%s/v2/{ip}?vpn=1&asn=1, threats page http://%s/threats (log %s)\n", cfg.NodeHTTP, cfg.NodeHTTP, node.log)

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	nets, err := sampleNetworks(cfg.DBPath, 100_000, rng)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "load        %d addresses/s, random ones inside %d networks sampled from the location database (data only: nothing dials them)\n", cfg.Rate, len(nets))
	fmt.Fprintf(out, "data        %s\n", locdb.Attribution)
	fmt.Fprintf(out, "try         curl 'http://%s/v2/%s?vpn=1&asn=1'\n", cfg.NodeHTTP, addrsample.In(nets[0], rng))
	fmt.Fprintln(out, "Ctrl-C stops everything.")

	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}
	ld := &load{base: "http://" + cfg.NodeHTTP, nets: nets, rate: cfg.Rate}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); ld.run(ctx) }()
	err = report(ctx, cfg, out, ld, children)
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

// report prints one summary line per interval from the scheduler's status,
// and notes a child that exits on its own.
func report(ctx context.Context, cfg Config, out io.Writer, ld *load, children []*child) error {
	conn, err := grpc.NewClient(cfg.SchedGRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	admin := styxv1.NewAdminServiceClient(conn)
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
			st, err := admin.Status(sctx, &styxv1.StatusRequest{})
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
			fmt.Fprintf(out, "%6.0fs  queries/s %7.0f  sightings/s %7.0f  verdicts/s %7.0f  pool %6d  in flight %5d  coverage %5.1f%%  shed %d  workers %d  proxies %d\n",
				now.Sub(began).Seconds(), rate(q, lastQueries), rate(p.Received, prevRecv), rate(p.Verdicts, prevVerd),
				p.Pending, p.InFlight, 100*p.Coverage, p.Shed, len(st.Workers), ld.proxies.Load())
			last, lastAt, lastQueries = p, now, q
		}
	}
}

func summary(p *styxv1.PoolStatus, ld *load) string {
	if p == nil {
		p = &styxv1.PoolStatus{}
	}
	return fmt.Sprintf("queries %d (errors %d), sightings received %d, examined %d, verdicts %d, shed %d, expired %d, answers naming a proxy %d",
		ld.queries.Load(), ld.errors.Load(), p.Received, p.Examined, p.Verdicts, p.Shed, p.Expired, ld.proxies.Load())
}
