package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/styx-inference/styx/pkg/embedetcd"
	"github.com/styx-inference/styx/pkg/keyspace"
	"github.com/styx-inference/styx/pkg/testwait"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
	"github.com/styx-inference/styx/worker/internal/numa"
)

// asMainEnv makes the test binary run Main as styx-worker's main does
// instead of the tests, so the tests can start it (and it can start its
// own children) as styx-worker.
const asMainEnv = "WORKER_MAIN_TEST_AS_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(asMainEnv) == "1" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code := Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
	goleak.VerifyTestMain(m)
}

// command returns styx-worker with args.
func command(args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), asMainEnv+"=1")
	return cmd
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestUsage(t *testing.T) {
	tests := []struct {
		name      string
		args      []string
		env       []string
		code      int
		stderrHas []string
	}{
		{"help", []string{"--help"}, nil, 0, []string{"STYX_<FLAG>", "-numa-node", "-etcd-endpoints", "-nats-url", "-drain-timeout", "-log-level"}},
		{"help command", []string{"help"}, nil, 0, nil},
		{"unknown flag", []string{"--nope"}, nil, 2, []string{"nope"}},
		{"positional argument", []string{"extra"}, nil, 2, []string{"unexpected arguments"}},
		{"bad log level", []string{"--log-level=loud"}, nil, 2, []string{"log-level"}},
		{"bad level from the environment", nil, []string{"STYX_LOG_LEVEL=loud"}, 2, []string{"log-level"}},
		{"bad duration from the environment", nil, []string{"STYX_DRAIN_TIMEOUT=soon"}, 2, []string{"STYX_DRAIN_TIMEOUT"}},
		{"invalid config", []string{"--capacity=-1", "--engine=nop", "--insecure"}, nil, 1, []string{"capacity"}},
		{"no identity", []string{"--engine=nop"}, nil, 2, []string{"no identity", "--pki-dir", "--insecure"}},
		{"both trust flags", []string{"--engine=nop", "--insecure", "--pki-dir=/nonexistent"}, nil, 2, []string{"choose one"}},
		{"missing identity dir", []string{"--engine=nop", "--pki-dir=/nonexistent"}, nil, 2, []string{"/nonexistent"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := command(tt.args...)
			cmd.Env = append(cmd.Env, tt.env...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tt.code {
				t.Errorf("exit code %d, want %d; stderr:\n%s", code, tt.code, stderr.String())
			}
			for _, s := range tt.stderrHas {
				if !strings.Contains(stderr.String(), s) {
					t.Errorf("stderr lacks %q:\n%s", s, stderr.String())
				}
			}
		})
	}
}

// TestAllNodes runs styx-worker --numa-node=all on a fake two-node
// topology made of this machine's first two CPUs: each child pins itself to
// one CPU, registers, serves, and leaves on SIGTERM to the parent.
func TestAllNodes(t *testing.T) {
	allowed, err := numa.Affinity(0)
	if err != nil || allowed.Size() < 2 {
		t.Skipf("needs two usable CPUs (have %v, %v)", allowed, err)
	}
	cpus := allowed.List()[:2]
	sysfs := t.TempDir()
	for n, cpu := range cpus {
		dir := filepath.Join(sysfs, "devices/system/node", fmt.Sprintf("node%d", n))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "cpulist"), fmt.Appendf(nil, "%d\n", cpu), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	etcd, err := embedetcd.Start(embedetcd.Config{Dir: t.TempDir(), ClientAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer etcd.Close()
	cli, err := etcd.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()

	cmd := command("--numa-node=all", "--sysfs="+sysfs, "--engine=nop", "--host=e2e",
		"--etcd-endpoints="+etcd.Endpoint(), "--lease-ttl=2s", "--drain-timeout=2s",
		"--nats-url=nats://127.0.0.1:1", // no NATS there: the attack feed keeps trying
		"--insecure")
	var logs lockedBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("styx-worker output:\n%s", logs.String())
		}
	}()

	for n, cpu := range cpus {
		id := fmt.Sprintf("e2e-numa%d", n)
		reg := waitKey(t, cli, id)
		// GOMAXPROCS is the node's CPU count, so the default capacity is 2.
		if reg.NUMANode != n || reg.CPUs != fmt.Sprint(cpu) || reg.Capacity != 2 || reg.Host != "e2e" {
			t.Errorf("registration %+v, want numa node %d, cpus %d, capacity 2", reg, n, cpu)
		}
		ready := openReady(t, reg.Addr)
		if ready.GetWorkerId() != id {
			t.Errorf("worker at %s answers as %q, want %q", reg.Addr, ready.GetWorkerId(), id)
		}
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("styx-worker exited with %v, want 0", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("styx-worker did not exit after SIGTERM")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, keyspace.WorkersPrefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 0 {
		t.Errorf("%d worker keys left after exit", len(resp.Kvs))
	}
}

func waitKey(t *testing.T, cli *clientv3.Client, id string) keyspace.WorkerRegistration {
	t.Helper()
	var reg keyspace.WorkerRegistration
	testwait.For(t, 20*time.Second, "worker "+id+" registered", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := cli.Get(ctx, keyspace.WorkerKey(id))
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) != 1 {
			return false
		}
		if err := keyspace.Decode(resp.Kvs[0].Value, &reg); err != nil {
			t.Fatal(err)
		}
		return true
	})
	return reg
}

func openReady(t *testing.T, addr string) *styxv1.Ready {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := styxv1.NewWorkerServiceClient(conn).Work(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(&styxv1.WorkAssign{Msg: &styxv1.WorkAssign_Open{Open: &styxv1.Open{SchedulerId: "e2e", Term: 1}}}); err != nil {
		t.Fatal(err)
	}
	r, err := s.Recv()
	if err != nil {
		t.Fatalf("open on %s: %v", addr, err)
	}
	return r.GetReady()
}
