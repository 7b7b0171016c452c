package worker

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// childModeEnv makes the re-executed test binary act as a supervised
// worker (TestSuperviseChild): "wait" waits for SIGTERM, "fail" makes the
// child of node 1 exit at once with status 3, "drained" makes it exit at
// once with status 0 (as a worker the scheduler drained does).
const childModeEnv = "WORKER_TEST_CHILD_MODE"

// TestSuperviseChild is not a test: it runs only in the children that
// TestSupervise starts. Its arguments are the ones after "--".
func TestSuperviseChild(t *testing.T) {
	mode, ok := os.LookupEnv(childModeEnv)
	if !ok {
		t.Skip("child process for TestSupervise")
	}
	args := flag.Args()
	if mode == "fail" && slices.Contains(args, "--numa-node=1") {
		os.Exit(3)
	}
	if mode == "drained" && slices.Contains(args, "--numa-node=1") {
		fmt.Printf("DRAINED %s\n", strings.Join(args, " "))
		os.Exit(0)
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM)
	fmt.Printf("CHILD %s\n", strings.Join(args, " "))
	select {
	case <-stop:
		fmt.Printf("STOPPED %s\n", strings.Join(args, " "))
		os.Exit(0)
	case <-time.After(30 * time.Second):
		os.Exit(4)
	}
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

// lines returns the lines starting with prefix.
func (s *syncBuffer) lines(prefix string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for l := range strings.Lines(s.b.String()) {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(l), prefix+" "); ok {
			out = append(out, rest)
		}
	}
	slices.Sort(out)
	return out
}

func twoNodeSysfs(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for n, cpus := range []string{"0", "1"} {
		dir := filepath.Join(root, "devices/system/node", fmt.Sprintf("node%d", n))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "cpulist"), []byte(cpus+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func superviseConfig(t *testing.T, out *syncBuffer) SupervisorConfig {
	cfg := DefaultConfig()
	cfg.NUMANode = AllNodes
	cfg.Sysfs = twoNodeSysfs(t)
	cfg.ID = "w"
	cfg.DrainTimeout = time.Second
	return SupervisorConfig{
		Worker: cfg,
		Exe:    os.Args[0],
		Args:   []string{"-test.run=^TestSuperviseChild$", "-test.count=1", "--"},
		Stdout: out,
	}
}

func TestSupervise(t *testing.T) {
	t.Setenv(childModeEnv, "wait")
	out := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- Supervise(ctx, superviseConfig(t, out), zerolog.Nop()) }()

	deadline := time.Now().Add(20 * time.Second)
	for len(out.lines("CHILD")) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("children did not start; output:\n%s", out.b.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	want := []string{
		"--numa-node=0 --id=w-numa0 --listen-addr=127.0.0.1:0",
		"--numa-node=1 --id=w-numa1 --listen-addr=127.0.0.1:0",
	}
	if got := out.lines("CHILD"); !slices.Equal(got, want) {
		t.Errorf("child args %q, want %q", got, want)
	}

	cancel() // as SIGTERM to the supervisor does
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Supervise: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Supervise did not return")
	}
	if got := out.lines("STOPPED"); !slices.Equal(got, want) {
		t.Errorf("stopped children %q, want %q (each got SIGTERM)", got, want)
	}
}

func TestSuperviseStopsAllWhenOneExits(t *testing.T) {
	t.Setenv(childModeEnv, "fail")
	out := &syncBuffer{}
	errc := make(chan error, 1)
	go func() { errc <- Supervise(context.Background(), superviseConfig(t, out), zerolog.Nop()) }()
	select {
	case err := <-errc:
		if err == nil || !strings.Contains(err.Error(), "numa node 1") {
			t.Errorf("Supervise = %v, want an error about numa node 1", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Supervise did not return after a child failed")
	}
}

// A child that exits with status 0 on its own was drained: the others keep
// running until the supervisor is stopped, and Supervise reports no error.
func TestSuperviseDrainedChildLeavesAlone(t *testing.T) {
	t.Setenv(childModeEnv, "drained")
	out, logs := &syncBuffer{}, &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- Supervise(ctx, superviseConfig(t, out), zerolog.New(logs)) }()
	deadline := time.Now().Add(20 * time.Second)
	for len(out.lines("CHILD")) < 1 || !strings.Contains(logs.String(), "worker drained and left the fleet") {
		if time.Now().After(deadline) {
			t.Fatalf("no drained child; output:\n%s\nlog:\n%s", out.String(), logs.String())
		}
		select {
		case err := <-done:
			t.Fatalf("Supervise returned (%v) after one child was drained; the other must keep running", err)
		default:
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Supervise: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Supervise did not return")
	}
	want := []string{"--numa-node=0 --id=w-numa0 --listen-addr=127.0.0.1:0"}
	if got := out.lines("STOPPED"); !slices.Equal(got, want) {
		t.Errorf("stopped children %q, want %q", got, want)
	}
}
