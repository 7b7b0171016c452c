package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
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

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/styx-inference/styx/pkg/childproc"
	"github.com/styx-inference/styx/pkg/pki"
	"github.com/styx-inference/styx/pkg/pki/pkitest"
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
	leafConf := filepath.Join(dir, "leaf.conf")
	if err := os.WriteFile(leafConf, []byte("leafnodes {\n  port: 7422\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	usersConf := filepath.Join(dir, "users.conf")
	if err := os.WriteFile(usersConf, []byte("authorization {\n  users: [{user: a, password: b}]\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cluster := []string{"--insecure", "--name", "nats-1", "--store_dir", dir, "--cluster_name", "styx", "--cluster", "nats://127.0.0.1:6222",
		"--routes", "nats://127.0.0.1:6222,nats://127.0.0.1:6223,nats://127.0.0.1:6224"}
	pkiDir := pkitest.New(t).Dir(t, pki.NATS, "n")
	for _, tc := range []struct {
		name  string
		args  []string
		env   map[string]string
		err   string // substring of the error; "" none
		help  bool   // flag.ErrHelp
		check func(t *testing.T, o optionsView)
	}{
		{name: "store dir flag", args: []string{"--insecure", "--store_dir", dir}, check: func(t *testing.T, o optionsView) {
			if !o.jetStream || o.storeDir != dir || !o.insecure || o.pkiDir != "" {
				t.Errorf("jetstream %v store %q insecure %v pki %q, want on in %s, insecure", o.jetStream, o.storeDir, o.insecure, o.pkiDir, dir)
			}
		}},
		{name: "short flags", args: []string{"--insecure", "-sd", dir, "-p", "14222", "-m", "18222"}, check: func(t *testing.T, o optionsView) {
			if o.port != 14222 || o.httpPort != 18222 || !o.jetStream {
				t.Errorf("port %d monitor %d jetstream %v", o.port, o.httpPort, o.jetStream)
			}
		}},
		{name: "config file", args: []string{"--insecure", "-c", conf}, check: func(t *testing.T, o optionsView) {
			if o.storeDir != filepath.Join(dir, "js") || o.name != "conf-1" || !o.jetStream {
				t.Errorf("store %q name %q jetstream %v", o.storeDir, o.name, o.jetStream)
			}
		}},
		{name: "flags win over the config file", args: []string{"--insecure", "-c", conf, "--name", "flag-1"}, check: func(t *testing.T, o optionsView) {
			if o.name != "flag-1" {
				t.Errorf("name %q, want flag-1", o.name)
			}
		}},
		{name: "cluster", args: cluster, check: func(t *testing.T, o optionsView) {
			if o.name != "nats-1" || o.clusterName != "styx" || o.clusterPort != 6222 || o.routes != 3 {
				t.Errorf("name %q cluster %q port %d routes %d", o.name, o.clusterName, o.clusterPort, o.routes)
			}
		}},
		{name: "pki dir", args: []string{"--pki-dir", pkiDir, "--store_dir", dir, "-ms", "18222"}, check: func(t *testing.T, o optionsView) {
			if o.pkiDir != pkiDir || o.insecure || o.httpsPort != 18222 {
				t.Errorf("pki %q insecure %v https %d", o.pkiDir, o.insecure, o.httpsPort)
			}
		}},
		{name: "pki dir from the environment", args: []string{"--store_dir", dir}, env: map[string]string{"STYX_PKI_DIR": pkiDir},
			check: func(t *testing.T, o optionsView) {
				if o.pkiDir != pkiDir {
					t.Errorf("pki %q, want %s", o.pkiDir, pkiDir)
				}
			}},
		{name: "insecure from the environment", args: []string{"--store_dir", dir}, env: map[string]string{"STYX_INSECURE": "true"},
			check: func(t *testing.T, o optionsView) {
				if !o.insecure {
					t.Error("not insecure")
				}
			}},
		{name: "other STYX variables do not apply", args: []string{"--insecure", "--store_dir", dir}, env: map[string]string{"STYX_NAME": "env-1", "STYX_PORT": "1"},
			check: func(t *testing.T, o optionsView) {
				if o.name == "env-1" || o.port == 1 {
					t.Errorf("name %q port %d from STYX_*", o.name, o.port)
				}
			}},
		{name: "no trust flag", args: []string{"--store_dir", dir}, err: "no identity: give --pki-dir DIR"},
		{name: "both trust flags", args: []string{"--store_dir", dir, "--insecure", "--pki-dir", pkiDir}, err: "choose one"},
		{name: "pki dir with plain monitoring", args: []string{"--pki-dir", pkiDir, "--store_dir", dir, "-m", "8222"}, err: "plain HTTP monitoring"},
		{name: "pki dir with tls flags", args: []string{"--pki-dir", pkiDir, "--store_dir", dir, "--tls",
			"--tlscert", filepath.Join(pkiDir, pki.CertFile), "--tlskey", filepath.Join(pkiDir, pki.KeyFile)}, err: "client TLS"},
		{name: "pki dir with users", args: []string{"--pki-dir", pkiDir, "--store_dir", dir, "-c", usersConf}, err: "client authentication"},
		{name: "pki dir with profiling", args: []string{"--pki-dir", pkiDir, "--store_dir", dir, "--profile", "6060"}, err: "profiling port"},
		{name: "pki dir with leaf nodes", args: []string{"--pki-dir", pkiDir, "--store_dir", dir, "-c", leafConf}, err: "leaf nodes"},
		{name: "no store dir", args: []string{"--insecure", "-p", "14222"}, err: "no store directory"},
		{name: "jetstream off", args: []string{"--insecure", "--jetstream=false", "--store_dir", dir}, err: "JetStream is off"},
		{name: "unknown flag", args: []string{"--bogus"}, err: "not defined"},
		{name: "unknown argument", args: []string{"--insecure", "--store_dir", dir, "extra"}, err: "extra"},
		{name: "help", args: []string{"-h"}, help: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			var stdout, stderr bytes.Buffer
			opts, trust, err := options(tc.args, &stdout, &stderr)
			switch {
			case tc.help:
				out := stdout.String()
				if !errors.Is(err, flag.ErrHelp) || !strings.Contains(out, "store_dir") || !strings.Contains(out, "-pki-dir") || !strings.Contains(out, "-insecure") {
					t.Errorf("err %v, usage %q; want flag.ErrHelp and the options", err, out)
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
					httpPort: opts.HTTPPort, httpsPort: opts.HTTPSPort, clusterName: opts.Cluster.Name, clusterPort: opts.Cluster.Port, routes: len(opts.Routes),
					pkiDir: trust.Dir, insecure: trust.Insecure,
				}
				tc.check(t, o)
			}
		})
	}
}

type optionsView struct {
	jetStream                 bool
	storeDir, name            string
	port, httpPort, httpsPort int
	clusterName               string
	clusterPort, routes       int
	pkiDir                    string
	insecure                  bool
}

func TestServeExitStatus(t *testing.T) {
	dir := t.TempDir()
	p := pkitest.New(t)
	for _, tc := range []struct {
		args []string
		want int
	}{
		{[]string{"-h"}, 0},
		{[]string{"--version"}, 0},
		{[]string{"-p", "0"}, 2},
		{[]string{"--bogus"}, 2},
		{[]string{"--store_dir", dir}, 2}, // neither --pki-dir nor --insecure
		{[]string{"--store_dir", dir, "--pki-dir", filepath.Join(dir, "missing")}, 1},        // no identity files
		{[]string{"--store_dir", dir, "--pki-dir", p.Dir(t, pki.Node, "n1"), "-p", "-1"}, 1}, // not a nats identity
	} {
		var stdout, stderr bytes.Buffer
		if got := serve(tc.args, &stdout, &stderr); got != tc.want {
			t.Errorf("serve %q = %d, want %d (stderr %q)", tc.args, got, tc.want, stderr.String())
		}
	}
}

func TestHealthcheckUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want int
	}{
		{[]string{"-h"}, 0},
		{[]string{"--pki-dir", t.TempDir(), "--insecure"}, 2},
		{[]string{"extra"}, 2},
		{[]string{"--http-addr", "127.0.0.1:0"}, 2},
		{[]string{"--bogus"}, 2},
		{[]string{"--http-addr", "127.0.0.1:1", "--pki-dir", filepath.Join(t.TempDir(), "missing")}, 1},
	} {
		var stderr bytes.Buffer
		if got := healthcheckMain(tc.args, &stderr); got != tc.want {
			t.Errorf("healthcheck %q = %d, want %d (stderr %q)", tc.args, got, tc.want, stderr.String())
		}
	}
}

// TestCluster runs three styx-nats processes as one JetStream cluster on
// loopback, over mutual TLS (clients and routes, each server with its own
// nats identity), creates STYX's streams at three replicas as a
// scheduler, and publishes
// verdict batches through the real publisher while the leader of the clean
// stream is killed with SIGKILL and started again. Every batch is in the
// stream once, in publish order, and the restarted server catches up.
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process cluster test")
	}
	bin := binary(t)
	dir := t.TempDir()
	p := pkitest.New(t)
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
		args[n] = []string{"--pki-dir", p.Dir(t, pki.NATS, n), "--name", n, "-a", "127.0.0.1", "-p", strconv.Itoa(ports[3*i]), "-ms", strconv.Itoa(ports[3*i+2]),
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
		return runHealthcheck(bin, fmt.Sprintf("127.0.0.1:%d", ports[3*i+2]), "--pki-dir", p.Dir(t, pki.NATS, names[i]))
	}
	testwait.For(t, 30*time.Second, "every server's healthcheck passing", func() bool {
		return health(0) == 0 && health(1) == 0 && health(2) == 0
	})
	for i, n := range names {
		var v struct {
			TLSRequired bool `json:"tls_required"`
			Cluster     struct {
				TLSRequired bool `json:"tls_required"`
			} `json:"cluster"`
		}
		getJSON(t, p.Source(t, pki.Admin, "ops"), fmt.Sprintf("https://127.0.0.1:%d/varz", ports[3*i+2]), &v)
		if !v.TLSRequired || !v.Cluster.TLSRequired {
			t.Errorf("%s: TLS required for clients %v, for routes %v; want both", n, v.TLSRequired, v.Cluster.TLSRequired)
		}
	}

	log := zerolog.Nop()
	nc, err := verdictlog.Connect(strings.Join(urls, ","), "styx-nats-test", log, clientTLS(t, p, pki.Scheduler, "s1"))
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

// TestTLSServer runs one styx-nats with --pki-dir and a configuration
// file: the healthcheck passes over HTTPS with an identity of the CA and
// fails otherwise; a scheduler creates the streams; clients without a
// certificate, plaintext clients and trainers are refused and logged; and
// a configuration reload (SIGHUP) keeps all of that.
func TestTLSServer(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test")
	}
	bin := binary(t)
	dir := t.TempDir()
	p := pkitest.New(t)
	ports := freePorts(t, 2)
	conf := filepath.Join(dir, "nats.conf")
	text := fmt.Sprintf("server_name: tls-1\nhost: 127.0.0.1\nport: %d\nhttps: \"127.0.0.1:%d\"\njetstream {\n  store_dir: %q\n}\n",
		ports[0], ports[1], filepath.Join(dir, "js"))
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "nats.log")
	srv := start(t, bin, logPath, "--pki-dir", p.Dir(t, pki.NATS, "tls-1"), "-c", conf)
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			srv.stop(t)
		}
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("---- log ----\n%s", lastLines(string(b), 40))
		}
	})
	url := fmt.Sprintf("nats://127.0.0.1:%d", ports[0])
	monitor := fmt.Sprintf("127.0.0.1:%d", ports[1])
	testwait.For(t, 30*time.Second, "the healthcheck passing over HTTPS", func() bool {
		return runHealthcheck(bin, monitor, "--pki-dir", p.Dir(t, pki.NATS, "tls-1")) == 0
	})
	if got := runHealthcheck(bin, monitor, "--pki-dir", p.Dir(t, pki.Node, "n1")); got != 0 {
		t.Errorf("healthcheck with a node identity of the CA: exit %d, want 0", got)
	}
	if got := runHealthcheck(bin, monitor); got != 1 {
		t.Errorf("healthcheck over plain HTTP: exit %d, want 1", got)
	}
	if got := runHealthcheck(bin, monitor, "--pki-dir", pkitest.New(t).Dir(t, pki.NATS, "tls-1")); got != 1 {
		t.Errorf("healthcheck trusting another CA: exit %d, want 1", got)
	}

	check := func(phase string) {
		t.Helper()
		nc, err := tryConnect(url, clientTLS(t, p, pki.Scheduler, "s1"))
		if err != nil {
			t.Fatalf("%s: scheduler: %v", phase, err)
		}
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		err = verdictlog.Ensure(ctx, js, verdictlog.DefaultPolicy())
		cancel()
		nc.Close()
		if err != nil {
			t.Fatalf("%s: scheduler creates the streams: %v", phase, err)
		}
		if nc, err := tryConnect(url, nats.Secure(&tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true})); err == nil {
			nc.Close()
			t.Errorf("%s: a client without a certificate connected", phase)
		}
		if nc, err := tryConnect(url, clientTLS(t, p, pki.Trainer, "t1")); err == nil {
			nc.Close()
			t.Errorf("%s: a trainer connected", phase)
		}
		if err := plaintextRefused(ports[0]); err != nil {
			t.Errorf("%s: %v", phase, err)
		}
	}
	check("started")
	if err := srv.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, 30*time.Second, "the reload logged", func() bool {
		b, _ := os.ReadFile(logPath)
		return strings.Contains(string(b), "Reloaded server configuration")
	})
	check("reloaded")

	b, _ := os.ReadFile(logPath)
	for _, want := range []string{`"reason":"handshake"`, `"reason":"role","peer":"spiffe://styx/trainer/t1@127.0.0.1"`, `"identity":"spiffe://styx/nats/tls-1"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("log has no %s", want)
		}
	}
	srv.stop(t)
	stopped = true
	if code := srv.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit status %d after SIGTERM, want 0", code)
	}
}

// TestInsecure: with --insecure, styx-nats is nats-server as it was:
// plaintext and open, with a warning at start.
func TestInsecure(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test")
	}
	bin := binary(t)
	dir := t.TempDir()
	ports := freePorts(t, 2)
	logPath := filepath.Join(dir, "nats.log")
	srv := start(t, bin, logPath, "--insecure", "--name", "plain-1", "-a", "127.0.0.1", "-p", strconv.Itoa(ports[0]),
		"-m", strconv.Itoa(ports[1]), "--store_dir", filepath.Join(dir, "js"))
	t.Cleanup(func() { srv.stop(t) })
	testwait.For(t, 30*time.Second, "the healthcheck passing over HTTP", func() bool {
		return runHealthcheck(bin, fmt.Sprintf("127.0.0.1:%d", ports[1])) == 0
	})
	nc, err := tryConnect(fmt.Sprintf("nats://127.0.0.1:%d", ports[0]))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := verdictlog.Ensure(ctx, js, verdictlog.DefaultPolicy()); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(logPath)
	if !strings.Contains(string(b), `"level":"warn"`) || !strings.Contains(string(b), "--insecure") {
		t.Errorf("no --insecure warning in the log:\n%s", lastLines(string(b), 20))
	}
}

// getJSON decodes the answer of a monitoring endpoint over HTTPS.
func getJSON(t *testing.T, src *pki.Source, url string, v any) {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: src.ClientConfig(pki.AnyOf(pki.NATS))}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("%s: %v", url, err)
	}
}

func clientTLS(t *testing.T, p *pkitest.PKI, role pki.Role, id string) nats.Option {
	t.Helper()
	return nats.Secure(p.Source(t, role, id).ClientConfig(pki.AnyOf(pki.NATS)))
}

// tryConnect connects once and makes a round trip (TLS 1.3 reports a
// refused client certificate on the first read).
func tryConnect(url string, opts ...nats.Option) (*nats.Conn, error) {
	nc, err := nats.Connect(url, append([]nats.Option{nats.NoReconnect(), nats.Timeout(5 * time.Second),
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {})}, opts...)...)
	if err != nil {
		return nil, err
	}
	if err := nc.Flush(); err != nil {
		nc.Close()
		return nil, err
	}
	return nc, nil
}

// plaintextRefused speaks NATS without TLS and expects the server to
// require TLS and close the connection without answering.
func plaintextRefused(port int) error {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		return fmt.Errorf("plaintext: no INFO: %w", err)
	}
	if !strings.Contains(string(buf[:n]), `"tls_required":true`) {
		return fmt.Errorf("plaintext: the server does not require TLS: %s", buf[:n])
	}
	if _, err := io.WriteString(c, "CONNECT {\"verbose\":false}\r\nPING\r\n"); err != nil {
		return nil // refused
	}
	n, _ = c.Read(buf)
	if strings.Contains(string(buf[:n]), "PONG") {
		return errors.New("plaintext: a plaintext client got PONG")
	}
	return nil
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
func runHealthcheck(bin, addr string, extra ...string) int {
	cmd := exec.Command(bin, append([]string{"healthcheck", "--http-addr", addr, "--timeout", "1s"}, extra...)...)
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
