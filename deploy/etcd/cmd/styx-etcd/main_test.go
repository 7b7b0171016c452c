package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/styx-inference/styx/pkg/etcdauth"
	"github.com/styx-inference/styx/pkg/keyspace"
	"github.com/styx-inference/styx/pkg/pki"
	"github.com/styx-inference/styx/pkg/pki/pkitest"
	"github.com/styx-inference/styx/pkg/testwait"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func env(kv ...string) func(string) (string, bool) {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// TestPrepare checks how styx-etcd turns its arguments into etcd's.
func TestPrepare(t *testing.T) {
	p := pkitest.New(t)
	def := p.Dir(t, pki.Etcd, "default")
	e1 := p.Dir(t, pki.Etcd, "e1")
	tlsArgs := func(dir string) []string {
		ca, cert, key := filepath.Join(dir, pki.CAFile), filepath.Join(dir, pki.CertFile), filepath.Join(dir, pki.KeyFile)
		return []string{"--cert-file=" + cert, "--key-file=" + key, "--trusted-ca-file=" + ca, "--client-cert-auth",
			"--peer-cert-file=" + cert, "--peer-key-file=" + key, "--peer-trusted-ca-file=" + ca, "--peer-client-cert-auth"}
	}
	cluster := []string{"--name", "e1", "--initial-cluster", "e1=https://e1:2380,e2=https://e2:2380",
		"--listen-client-urls", "https://0.0.0.0:2379", "--advertise-client-urls", "https://e1:2379",
		"--listen-peer-urls", "https://0.0.0.0:2380", "--initial-advertise-peer-urls", "https://e1:2380"}
	for _, tc := range []struct {
		name string
		args []string
		env  []string
		want []string // etcd's arguments
		help bool
		warn bool
		err  string // a part of the error
	}{
		{name: "neither", err: "no identity: give --pki-dir DIR (ca.crt, tls.crt, tls.key) or --insecure for plaintext"},
		{name: "insecure", args: []string{"--insecure", "--name", "x"}, want: []string{"--name", "x"}, warn: true},
		{name: "insecure from env", args: []string{"--name", "x"}, env: []string{"STYX_INSECURE", "1"}, want: []string{"--name", "x"}, warn: true},
		{name: "insecure=false", args: []string{"--insecure=false"}, err: "no identity"},
		{name: "both", args: []string{"--insecure", "--pki-dir", def}, err: "exclude each other"},
		{name: "help", args: []string{"-h"}, want: []string{"-h"}, help: true},
		{name: "version", args: []string{"--version"}, want: []string{"--version"}},
		{name: "gateway", args: []string{"gateway", "start"}, want: []string{"gateway", "start"}},
		{name: "missing dir", args: []string{"--pki-dir"}, err: "needs a directory"},
		{name: "worker identity", args: []string{"--pki-dir", p.Dir(t, pki.Worker, "w1")}, err: "role etcd"},
		{name: "empty dir", args: []string{"--pki-dir", t.TempDir()}, err: "--pki-dir"},
		{
			name: "defaults",
			args: []string{"--pki-dir=" + def, "--data-dir", "/d"},
			want: append(append([]string{"--data-dir", "/d"}, tlsArgs(def)...),
				"--listen-client-urls=https://localhost:2379", "--advertise-client-urls=https://localhost:2379",
				"--listen-peer-urls=https://localhost:2380", "--initial-advertise-peer-urls=https://localhost:2380",
				"--initial-cluster=default=https://localhost:2380", "--peer-cert-allowed-cn=etcd:default"),
		},
		{
			name: "identity from env",
			env:  []string{"STYX_PKI_DIR", def},
			want: append(tlsArgs(def),
				"--listen-client-urls=https://localhost:2379", "--advertise-client-urls=https://localhost:2379",
				"--listen-peer-urls=https://localhost:2380", "--initial-advertise-peer-urls=https://localhost:2380",
				"--initial-cluster=default=https://localhost:2380", "--peer-cert-allowed-cn=etcd:default"),
		},
		{
			name: "cluster",
			args: append([]string{"--pki-dir", e1}, cluster...),
			want: append(append(slices.Clone(cluster), tlsArgs(e1)...), "--peer-cert-allowed-cn=etcd:e1,etcd:e2"),
		},
		{
			name: "cluster from etcd's environment",
			args: []string{"--pki-dir", e1},
			env: []string{"ETCD_NAME", "e1", "ETCD_INITIAL_CLUSTER", "e1=https://e1:2380,e2=https://e2:2380",
				"ETCD_LISTEN_CLIENT_URLS", "https://0.0.0.0:2379", "ETCD_ADVERTISE_CLIENT_URLS", "https://e1:2379",
				"ETCD_LISTEN_PEER_URLS", "https://0.0.0.0:2380", "ETCD_INITIAL_ADVERTISE_PEER_URLS", "https://e1:2380"},
			want: append(tlsArgs(e1), "--peer-cert-allowed-cn=etcd:e1,etcd:e2"),
		},
		{
			name: "peers named by the operator",
			args: append([]string{"--pki-dir", def, "--peer-cert-allowed-cn", "etcd:a"}, cluster...),
			want: append(append([]string{"--peer-cert-allowed-cn", "etcd:a"}, cluster...), tlsArgs(def)...),
		},
		{name: "another member's name", args: append([]string{"--pki-dir", def}, cluster...), err: `named "e1"`},
		{name: "plaintext listen url", args: []string{"--pki-dir", def, "--listen-client-urls", "http://0.0.0.0:2379", "--advertise-client-urls", "https://x:2379"}, err: "--listen-client-urls http://0.0.0.0:2379"},
		{name: "plaintext url from env", args: []string{"--pki-dir", def}, env: []string{"ETCD_LISTEN_PEER_URLS", "http://0.0.0.0:2380"}, err: "--listen-peer-urls http://"},
		{name: "plaintext peer in cluster", args: []string{"--pki-dir", e1, "--name", "e1", "--initial-cluster", "e1=https://e1:2380,e2=http://e2:2380"}, err: "--initial-cluster http://e2:2380"},
		{name: "own cert file", args: []string{"--pki-dir", def, "--cert-file", "/x"}, err: "remove --cert-file"},
		{name: "client cert auth from env", args: []string{"--pki-dir", def}, env: []string{"ETCD_CLIENT_CERT_AUTH", "false"}, err: "ETCD_CLIENT_CERT_AUTH"},
		{name: "config file", args: []string{"--pki-dir", def, "--config-file", "/etc/etcd.yml"}, err: "configuration file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := prepare(tc.args, env(tc.env...))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got.args, tc.want) {
				t.Errorf("etcd args\n got %q\nwant %q", got.args, tc.want)
			}
			if got.help != tc.help || (got.warn != "") != tc.warn {
				t.Errorf("help %v warn %q, want help %v, a warning %v", got.help, got.warn, tc.help, tc.warn)
			}
		})
	}
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func binary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("multi-process test")
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "styx-etcd-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "styx-etcd")
		out, err := exec.Command("go", "build", "-o", binPath, "github.com/styx-inference/styx/deploy/etcd/cmd/styx-etcd").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// member is a running styx-etcd.
type member struct {
	cmd    *exec.Cmd
	addr   string      // client address, read from etcd's log
	addrs  chan string // the reader's report of it
	stderr *syncBuffer
	done   chan struct{}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// single are the arguments of a one-member cluster named m1 on
// 127.0.0.1, ports picked by the system; scheme is "https" or "http".
func single(t *testing.T, scheme string) []string {
	u := scheme + "://127.0.0.1:0"
	return []string{"--name", "m1", "--data-dir", filepath.Join(t.TempDir(), "data"),
		"--listen-client-urls", u, "--advertise-client-urls", u,
		"--listen-peer-urls", u, "--initial-advertise-peer-urls", u, "--initial-cluster", "m1=" + u}
}

// launch runs styx-etcd with args; t's cleanup stops it (SIGTERM).
func launch(t *testing.T, args ...string) *member {
	t.Helper()
	cmd := exec.Command(binary(t), args...)
	cmd.Env = []string{"HOME=" + t.TempDir()}
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	m := &member{cmd: cmd, addrs: make(chan string, 1), stderr: &syncBuffer{}, done: make(chan struct{})}
	go func() {
		defer close(m.done)
		sc := bufio.NewScanner(pipe)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			_, _ = m.stderr.Write(append(line, '\n'))
			var e struct {
				Msg     string `json:"msg"`
				Address string `json:"address"`
			}
			if json.Unmarshal(line, &e) == nil && strings.HasPrefix(e.Msg, "serving client traffic") && e.Address != "" {
				select {
				case m.addrs <- e.Address:
				default:
				}
			}
		}
		_ = cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-m.done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-m.done
		}
		if t.Failed() {
			t.Logf("---- styx-etcd %s stderr ----\n%s", strings.Join(args, " "), lastLines(m.stderr.String(), 30))
		}
	})
	return m
}

// serving waits until etcd logs that it serves clients (once its
// cluster has a leader) and notes the address.
func (m *member) serving(t *testing.T) *member {
	t.Helper()
	select {
	case m.addr = <-m.addrs:
	case <-m.done:
		t.Fatalf("styx-etcd exited: %v", m.cmd.ProcessState)
	case <-time.After(60 * time.Second):
		t.Fatal("styx-etcd not serving after 60s")
	}
	return m
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// alert connects to addr with cfg, asks for /version and returns the
// error of the first read: nil when served, the server's TLS alert when
// refused (in TLS 1.3 it arrives after the client's handshake is done).
func alert(t *testing.T, addr string, cfg *tls.Config) error {
	t.Helper()
	conn, err := (&tls.Dialer{Config: cfg}).DialContext(t.Context(), "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(testwait.Timeout))
	_, _ = conn.Write([]byte("GET /version HTTP/1.1\r\nHost: etcd\r\n\r\n"))
	_, err = conn.Read(make([]byte, 1))
	return err
}

func refused(err error, alert string) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "remote error" && strings.HasSuffix(err.Error(), "tls: "+alert)
}

func certTLS(t *testing.T, dir string) *tls.Config {
	t.Helper()
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true} // the server is not what is tested
	if dir != "" {
		pair, err := tls.LoadX509KeyPair(filepath.Join(dir, pki.CertFile), filepath.Join(dir, pki.KeyFile))
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg
}

func health(addr string, args ...string) (int, string) {
	var out bytes.Buffer
	code := healthMain(append([]string{"--http-addr", addr, "--timeout", "5s"}, args...), env(), &out)
	return code, out.String()
}

// TestTLSMember runs styx-etcd --pki-dir: the healthcheck passes over
// TLS with an identity of the CA and fails otherwise; a client without a
// certificate is refused in the handshake; etcd authenticates clients by
// their certificate's CN, so the users etcdauth grants hold.
func TestTLSMember(t *testing.T) {
	p := pkitest.New(t)
	dir := p.Dir(t, pki.Etcd, "m1")
	m := launch(t, append([]string{"--pki-dir", dir}, single(t, "https")...)...).serving(t)

	testwait.For(t, testwait.Timeout, "the healthcheck passing over TLS", func() bool { code, _ := health(m.addr, "--pki-dir", dir); return code == 0 })
	if code, out := health(m.addr, "--pki-dir", p.Dir(t, pki.Node, "n1")); code != 0 {
		t.Errorf("healthcheck as a node of the CA: exit %d: %s", code, out)
	}
	if code, _ := health(m.addr); code != 1 {
		t.Errorf("healthcheck over plain HTTP: exit %d, want 1", code)
	}
	// In a container the server's environment names the identity, and the
	// health check run there finds it too.
	var out bytes.Buffer
	if code := healthMain([]string{"--timeout", "5s"}, env("STYX_HTTP_ADDR", m.addr, "STYX_PKI_DIR", dir), &out); code != 0 {
		t.Errorf("healthcheck with STYX_HTTP_ADDR and STYX_PKI_DIR: exit %d: %s", code, out.String())
	}
	if code, _ := health(m.addr, "--pki-dir", pkitest.New(t).Dir(t, pki.Etcd, "m1")); code != 1 {
		t.Errorf("healthcheck from another CA: exit %d, want 1", code)
	}

	if err := alert(t, m.addr, certTLS(t, "")); !refused(err, "certificate required") {
		t.Errorf("client without a certificate: %v, want the server's alert: certificate required", err)
	}

	client := func(role pki.Role, id string) *clientv3.Client {
		src, err := pki.Load(p.Dir(t, role, id), zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		cli, err := clientv3.New(etcdauth.ClientConfig([]string{m.addr}, src))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cli.Close() })
		return cli
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	ops := pki.Identity{Role: pki.Admin, ID: "ops"}
	if err := etcdauth.Enable(ctx, client(pki.Etcd, "m1"), ops); err != nil {
		t.Fatalf("enable: %v", err)
	}
	admin := client(pki.Admin, "ops")
	w1id := pki.Identity{Role: pki.Worker, ID: "w1"}
	if err := etcdauth.Grant(ctx, admin, w1id); err != nil {
		t.Fatal(err)
	}
	w1 := client(pki.Worker, "w1")
	if _, err := w1.Put(ctx, keyspace.WorkerKey("w1"), "{}"); err != nil {
		t.Errorf("worker w1 puts its key: %v", err)
	}
	if _, err := w1.Put(ctx, keyspace.WorkerKey("w2"), "{}"); !errors.Is(err, rpctypes.ErrPermissionDenied) {
		t.Errorf("worker w1 puts w2's key: %v, want %v", err, rpctypes.ErrPermissionDenied)
	}
	if _, err := admin.Put(ctx, keyspace.ModelCurrent, "{}"); err != nil {
		t.Errorf("admin puts the model pointer: %v", err)
	}
}

// TestInsecureMember runs styx-etcd --insecure: it warns, then serves
// plaintext.
func TestInsecureMember(t *testing.T) {
	m := launch(t, append([]string{"--insecure"}, single(t, "http")...)...).serving(t)
	if !strings.Contains(m.stderr.String(), "styx-etcd: warning: --insecure") {
		t.Errorf("no warning on stderr:\n%s", m.stderr.String())
	}
	cli, err := clientv3.New(etcdauth.ClientConfig([]string{m.addr}, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, testwait.Timeout, "the healthcheck passing over HTTP", func() bool { code, _ := health(m.addr); return code == 0 })
}

// TestRefusal: the binary refuses to start with no identity and no
// --insecure, with exit status 2.
func TestRefusal(t *testing.T) {
	bin := binary(t)
	for _, args := range [][]string{nil, {"--name", "m1"}, {"--pki-dir", t.TempDir()}} {
		cmd := exec.Command(bin, args...)
		cmd.Env = []string{"HOME=" + t.TempDir()}
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Errorf("styx-etcd %q: %v, want exit status 2\n%s", args, err, out)
		}
		if len(args) < 2 && !strings.Contains(string(out), "styx-etcd: no identity: give --pki-dir DIR (ca.crt, tls.crt, tls.key) or --insecure for plaintext") {
			t.Errorf("styx-etcd %q said:\n%s", args, out)
		}
	}
}

// TestHelp: --help names both ways to start, then etcd's own flags.
func TestHelp(t *testing.T) {
	bin := binary(t)
	cmd := exec.Command(bin, "--help")
	cmd.Env = []string{"HOME=" + t.TempDir()}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("--help: %v", err)
	}
	for _, want := range []string{"--pki-dir DIR", "--insecure", "healthcheck", "--listen-client-urls", "--peer-client-cert-auth"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("--help does not mention %s", want)
		}
	}
}

// freePorts returns n ports on 127.0.0.1 that were free a moment ago: a
// cluster's peer URLs must be known before its members start.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return ports
}

// TestCluster runs three members with --pki-dir: they form a cluster over
// peer TLS, a write through one is read through another, and the peer port
// refuses a worker's certificate and an etcd identity that is not a member.
func TestCluster(t *testing.T) {
	p := pkitest.New(t)
	ports := freePorts(t, 3)
	names := []string{"m1", "m2", "m3"}
	var cluster []string
	for i, n := range names {
		cluster = append(cluster, fmt.Sprintf("%s=https://127.0.0.1:%d", n, ports[i]))
	}
	var ms []*member
	for i, n := range names {
		peer := fmt.Sprintf("https://127.0.0.1:%d", ports[i])
		ms = append(ms, launch(t, "--pki-dir", p.Dir(t, pki.Etcd, n), "--name", n,
			"--data-dir", filepath.Join(t.TempDir(), n),
			"--listen-client-urls", "https://127.0.0.1:0", "--advertise-client-urls", "https://127.0.0.1:0",
			"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
			"--initial-cluster", strings.Join(cluster, ","), "--initial-cluster-token", "styx-test"))
	}
	for _, m := range ms {
		m.serving(t)
	}

	client := func(addr string, dir string) *clientv3.Client {
		src, err := pki.Load(dir, zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		cli, err := clientv3.New(etcdauth.ClientConfig([]string{addr}, src))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cli.Close() })
		return cli
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	a := client(ms[0].addr, p.Dir(t, pki.Admin, "ops"))
	if _, err := a.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	resp, err := client(ms[2].addr, p.Dir(t, pki.Admin, "ops")).Get(ctx, "k")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("read through m3: %v, %v", resp, err)
	}
	ml, err := a.MemberList(ctx)
	if err != nil || len(ml.Members) != 3 {
		t.Fatalf("members %v, %v; want 3", ml, err)
	}

	peer := fmt.Sprintf("127.0.0.1:%d", ports[0])
	if err := alert(t, peer, certTLS(t, p.Dir(t, pki.Etcd, "m2"))); err != nil {
		t.Errorf("peer port, member m2: %v, want served", err)
	}
	for _, who := range []struct {
		role pki.Role
		id   string
	}{{pki.Worker, "w1"}, {pki.Etcd, "m9"}} {
		if err := alert(t, peer, certTLS(t, p.Dir(t, who.role, who.id))); !refused(err, "bad certificate") {
			t.Errorf("peer port, %s/%s: %v, want the server's alert: bad certificate", who.role, who.id, err)
		}
	}
}
