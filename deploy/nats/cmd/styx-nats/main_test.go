package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/styx-inference/styx/pkg/childproc"
	"github.com/styx-inference/styx/pkg/testwait"
	"github.com/styx-inference/styx/pkg/verdictlog"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutine leak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func TestOptions(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(conf, []byte("server_name: conf-1\njetstream {\n  store_dir: \""+filepath.Join(dir, "js")+"\"\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cluster := []string{"--name", "nats-1", "--store_dir", dir, "--cluster_name", "styx", "--cluster", "nats://127.0.0.1:6222",
		"--routes", "nats://127.0.0.1:6222,nats://127.0.0.1:6223,nats://127.0.0.1:6224"}
	for _, tc := range []struct {
		name  string
		args  []string
		err   string // substring of the error; "" none
		help  bool   // flag.ErrHelp
		check func(t *testing.T, o optionsView)
	}{
		{name: "store dir flag", args: []string{"--store_dir", dir}, check: func(t *testing.T, o optionsView) {
			if !o.jetStream || o.storeDir != dir {
				t.Errorf("jetstream %v store %q, want on in %s", o.jetStream, o.storeDir, dir)
			}
		}},
		{name: "short flags", args: []string{"-sd", dir, "-p", "14222", "-m", "18222"}, check: func(t *testing.T, o optionsView) {
			if o.port != 14222 || o.httpPort != 18222 || !o.jetStream {
				t.Errorf("port %d monitor %d jetstream %v", o.port, o.httpPort, o.jetStream)
			}
		}},
		{name: "config file", args: []string{"-c", conf}, check: func(t *testing.T, o optionsView) {
			if o.storeDir != filepath.Join(dir, "js") || o.name != "conf-1" || !o.jetStream {
				t.Errorf("store %q name %q jetstream %v", o.storeDir, o.name, o.jetStream)
			}
		}},
		{name: "flags win over the config file", args: []string{"-c", conf, "--name", "flag-1"}, check: func(t *testing.T, o optionsView) {
			if o.name != "flag-1" {
				t.Errorf("name %q, want flag-1", o.name)
			}
		}},
		{name: "cluster", args: cluster, check: func(t *testing.T, o optionsView) {
			if o.name != "nats-1" || o.clusterName != "styx" || o.clusterPort != 6222 || o.routes != 3 {
				t.Errorf("name %q cluster %q port %d routes %d", o.name, o.clusterName, o.clusterPort, o.routes)
			}
		}},
		{name: "no store dir", args: []string{"-p", "14222"}, err: "no store directory"},
		{name: "jetstream off", args: []string{"--jetstream=false", "--store_dir", dir}, err: "JetStream is off"},
		{name: "unknown flag", args: []string{"--bogus"}, err: "not defined"},
		{name: "unknown argument", args: []string{"--store_dir", dir, "extra"}, err: "extra"},
		{name: "help", args: []string{"-h"}, help: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			opts, err := options(tc.args, &stdout, &stderr)
			switch {
			case tc.help:
				if !errors.Is(err, flag.ErrHelp) || !strings.Contains(stdout.String(), "store_dir") {
					t.Errorf("err %v, usage %q; want flag.ErrHelp and the options", err, stdout.String())
				}
			case tc.err != "":
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("err %v, want one containing %q", err, tc.err)
				}
			case err != nil || opts == nil:
				t.Fatalf("options: %v", err)
			default:
				o := optionsView{
					jetStream: opts.JetStream, storeDir: opts.StoreDir, name: opts.ServerName, port: opts.Port,
					httpPort: opts.HTTPPort, clusterName: opts.Cluster.Name, clusterPort: opts.Cluster.Port, routes: len(opts.Routes),
				}
				tc.check(t, o)
			}
		})
	}
}

type optionsView struct {
	jetStream           bool
	storeDir, name      string
	port, httpPort      int
	clusterName         string
	clusterPort, routes int
}

func TestServeExitStatus(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want int
	}{
		{[]string{"-h"}, 0},
		{[]string{"--version"}, 0},
		{[]string{"-p", "0"}, 2},
		{[]string{"--bogus"}, 2},
	} {
		var stdout, stderr bytes.Buffer
		if got := serve(tc.args, &stdout, &stderr); got != tc.want {
			t.Errorf("serve %q = %d, want %d (stderr %q)", tc.args, got, tc.want, stderr.String())
		}
	}
}

// TestCluster runs three styx-nats processes as one JetStream cluster on
// loopback, creates STYX's streams at three replicas, and publishes
// verdict batches through the real publisher while the leader of the clean
// stream is killed with SIGKILL and started again. Every batch is in the
// stream once, in publish order, and the restarted server catches up.
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process cluster test")
	}
	bin := binary(t)
	dir := t.TempDir()
	ports := freePorts(t, 9)
	names := []string{"nats-1", "nats-2", "nats-3"}
	var routes, urls []string
	for i := range names {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", ports[3*i+1]))
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", ports[3*i]))
	}
	servers := map[string]*proc{}
	args := map[string][]string{}
	for i, n := range names {
		args[n] = []string{"--name", n, "-a", "127.0.0.1", "-p", strconv.Itoa(ports[3*i]), "-m", strconv.Itoa(ports[3*i+2]),
			"--store_dir", filepath.Join(dir, n), "--cluster_name", "styx-test",
			"--cluster", routes[i], "--routes", strings.Join(routes, ",")}
		servers[n] = start(t, bin, filepath.Join(dir, n+".log"), args[n]...)
	}
	t.Cleanup(func() {
		for _, n := range names {
			servers[n].stop(t)
			if t.Failed() {
				b, _ := os.ReadFile(filepath.Join(dir, n+".log"))
				t.Logf("---- %s log ----\n%s", n, lastLines(string(b), 30))
			}
		}
	})
	health := func(i int) int {
		return runHealthcheck(bin, fmt.Sprintf("127.0.0.1:%d", ports[3*i+2]))
	}
	testwait.For(t, 30*time.Second, "every server's healthcheck passing", func() bool {
		return health(0) == 0 && health(1) == 0 && health(2) == 0
	})

	log := zerolog.Nop()
	nc, err := verdictlog.Connect(strings.Join(urls, ","), "styx-nats-test", log)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	pol := verdictlog.DefaultPolicy()
	pol.Replicas = 3
	var ensureErr error
	testwait.Every(t, 30*time.Second, 100*time.Millisecond, "the streams created at 3 replicas", func() bool {
		ectx, ecancel := context.WithTimeout(ctx, 5*time.Second)
		defer ecancel()
		ensureErr = verdictlog.Ensure(ectx, js, pol)
		if ensureErr != nil {
			t.Logf("ensure: %v", ensureErr)
		}
		return ensureErr == nil
	})

	pub := verdictlog.NewPublisher(js, verdictlog.PublisherConfig{AckWait: 2 * time.Second}, log)
	pctx, stopPub := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = pub.Run(pctx) }()
	defer func() { stopPub(); wg.Wait() }()

	rng := rand.New(rand.NewPCG(1, 2))
	const perBatch, perPhase = 1024, 100
	sent := 0
	publish := func(n int) {
		for range n {
			vs := make([]*styxv1.Verdict, perBatch)
			for i := range vs {
				a := netip.AddrFrom4([4]byte{byte(rng.IntN(223) + 1), byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32())}).AsSlice()
				vs[i] = &styxv1.Verdict{Address: a, ModelVersion: "rule-v1", InferredUnixNano: time.Now().UnixNano()}
			}
			pub.Verdicts(1, vs, nil)
			sent++
		}
	}
	published := func(want int) {
		t.Helper()
		testwait.For(t, 60*time.Second, fmt.Sprintf("%d batches acknowledged", want), func() bool {
			return pub.Stats().Messages == uint64(want)
		})
	}
	streamInfo := func() *jetstream.StreamInfo {
		ictx, icancel := context.WithTimeout(ctx, 2*time.Second)
		defer icancel()
		s, err := js.Stream(ictx, verdictlog.StreamClean)
		if err != nil {
			return nil
		}
		info, err := s.Info(ictx)
		if err != nil {
			return nil
		}
		return info
	}

	publish(perPhase)
	published(sent)
	var leader string
	testwait.For(t, 10*time.Second, "a leader of the clean stream", func() bool {
		info := streamInfo()
		if info == nil || info.Cluster == nil {
			return false
		}
		leader = info.Cluster.Leader
		return leader != ""
	})
	victim := servers[leader]
	victim.kill(t)
	t.Logf("killed %s, the clean stream's leader (SIGKILL), after %d batches", leader, sent)
	i := slices.Index(names, leader)
	if got := health(i); got != 1 {
		t.Errorf("healthcheck of the killed %s: exit %d, want 1", leader, got)
	}
	publish(perPhase)
	published(sent)
	t.Logf("%d batches acknowledged with %s down (%d publishes tried again)", sent, leader, pub.Stats().Retries)

	servers[leader] = start(t, bin, filepath.Join(dir, leader+".restart.log"), args[leader]...)
	testwait.For(t, 30*time.Second, "the restarted server's healthcheck passing", func() bool { return health(i) == 0 })
	publish(perPhase)
	published(sent)
	testwait.For(t, 30*time.Second, "the restarted server current on the clean stream", func() bool {
		info := streamInfo()
		if info == nil || info.Cluster == nil || info.Cluster.Leader == "" || len(info.Cluster.Replicas) != 2 {
			return false
		}
		for _, r := range info.Cluster.Replicas {
			if !r.Current || r.Lag != 0 {
				return false
			}
		}
		return true
	})

	info := streamInfo()
	if info == nil {
		t.Fatal("no stream info")
	}
	if info.State.Msgs != uint64(sent) || info.State.FirstSeq != 1 || info.State.LastSeq != uint64(sent) {
		t.Errorf("clean stream holds %d messages, sequences %d..%d; want %d, 1..%d", info.State.Msgs, info.State.FirstSeq, info.State.LastSeq, sent, sent)
	}
	t.Logf("clean stream: %d messages of %d verdicts, %d bytes: %.1f bytes per verdict stored (per replica)",
		info.State.Msgs, perBatch, info.State.Bytes, float64(info.State.Bytes)/float64(sent*perBatch))

	// Read the stream back: every batch once. A batch that the publisher
	// sent again after the kill may follow batches published after it (the
	// publisher keeps several in flight), so order is counted, not required.
	cons, err := js.OrderedConsumer(ctx, verdictlog.StreamClean, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[uint64]int{}
	var last uint64
	reordered := 0
	// The restarted server has just rejoined: a pull request can meet a
	// moment with no responder while the consumer's placement settles. The
	// ordered consumer resumes after the last message it delivered, so a
	// failed fetch is tried again, within a deadline.
	readBy := time.Now().Add(60 * time.Second)
	transient := func(err error) {
		t.Helper()
		if time.Now().After(readBy) {
			t.Fatal(err)
		}
		t.Logf("fetch: %v (trying again)", err)
		time.Sleep(200 * time.Millisecond)
	}
	for read := 0; read < sent; {
		mb, err := cons.Fetch(200, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			transient(err)
			continue
		}
		n := 0
		for m := range mb.Messages() {
			n++
			var b styxv1.LogBatch
			if err := proto.Unmarshal(m.Data(), &b); err != nil {
				t.Fatal(err)
			}
			if len(b.Verdicts) != perBatch {
				t.Errorf("batch %d.%d: %d verdicts, want %d", b.Term, b.Seq, len(b.Verdicts), perBatch)
			}
			seen[b.Seq]++
			if b.Seq < last {
				reordered++
			}
			last = max(last, b.Seq)
		}
		read += n
		if err := mb.Error(); err != nil {
			transient(err)
			continue
		}
		if n == 0 {
			t.Fatalf("read %d of %d batches, then nothing", read, sent)
		}
	}
	for seq := uint64(1); seq <= uint64(sent); seq++ {
		if seen[seq] != 1 {
			t.Errorf("batch %d is in the stream %d times, want once", seq, seen[seq])
		}
	}
	t.Logf("read back %d batches, each once; %d stored after a batch published later", len(seen), reordered)
}

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binary builds styx-nats once per test run (static, as the image has it).
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "styx-nats-bin-")
		if buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", binDir+string(filepath.Separator), "github.com/styx-inference/styx/deploy/nats/cmd/styx-nats")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, "styx-nats")
}

// freePorts returns n distinct free loopback ports: each listener is held
// until all are picked.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ls []net.Listener
	var out []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return out
}

// proc is one styx-nats process.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func start(t *testing.T, bin, logPath string, args ...string) *proc {
	t.Helper()
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close() // the child holds its own descriptor
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	childproc.SetParentDeathSignal(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p
}

func (p *proc) kill(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("pid %d not reaped after SIGKILL", p.cmd.Process.Pid)
	}
}

// stop sends SIGTERM, and SIGKILL after 10 s.
func (p *proc) stop(t *testing.T) {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Errorf("pid %d did not stop on SIGTERM within 10 s", p.cmd.Process.Pid)
		p.kill(t)
	}
}

// runHealthcheck runs `styx-nats healthcheck` against addr and returns its
// exit status.
func runHealthcheck(bin, addr string) int {
	cmd := exec.Command(bin, "healthcheck", "--http-addr", addr, "--timeout", "1s")
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.ExitCode()
	default:
		return -1
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
