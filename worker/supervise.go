package worker

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/styx-inference/styx/pkg/childproc"
	"github.com/styx-inference/styx/pkg/logging"
	"github.com/styx-inference/styx/worker/internal/numa"
)

// killGrace is how long a child may take beyond its drain timeout to exit
// after SIGTERM before it is killed.
const killGrace = 15 * time.Second

// SupervisorConfig configures Supervise.
type SupervisorConfig struct {
	// Worker is the parsed configuration (NUMANode AllNodes). Its Sysfs is
	// read for the topology; ID, ListenAddr, AdvertiseAddr and MetricsAddr
	// are derived per child; DrainTimeout bounds a child's stop.
	Worker Config
	// Args are the flags every child gets (see ForwardArgs); the per-node
	// flags are appended, so they win.
	Args []string
	// Exe is the program to start; "" means this executable.
	Exe string
	// Stdout and Stderr of the children; nil means this process's.
	Stdout, Stderr io.Writer
}

// Supervise starts one child process per NUMA node, each running Exe with
// Args plus --numa-node=N and, when set, --id=<id>-numa<N> (otherwise the
// child's default <host>-numa<N>); a fixed (non-zero) port in ListenAddr,
// AdvertiseAddr or MetricsAddr is offset by the node's index, so children do
// not collide. When ctx ends (SIGTERM or SIGINT to this process), each child
// gets SIGTERM and is killed if it has not exited after its drain timeout
// plus a grace period; children also get SIGTERM if this process dies.
// When a child fails on its own (a non-zero exit), the others are stopped
// too, so that a service manager restarts the whole set. A child that exits
// with status 0 on its own was drained by the scheduler (AdminService.Drain,
// `styx-scheduler fleet drain`): it left the fleet on purpose, and the others
// keep running. Supervise returns when every child has exited, without an
// error if every one of them was drained.
func Supervise(ctx context.Context, cfg SupervisorConfig, log zerolog.Logger) error {
	log = logging.For(log, "supervisor")
	if err := cfg.Worker.Validate(); err != nil {
		return err
	}
	exe := cfg.Exe
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return fmt.Errorf("find own executable: %w", err)
		}
	}
	topo, err := numa.Read(cfg.Worker.Sysfs)
	if err != nil {
		return fmt.Errorf("numa topology: %w", err)
	}
	stdout, stderr := cfg.Stdout, cfg.Stderr
	if stdout == nil {
		stdout = os.Stdout
	}
	if stderr == nil {
		stderr = os.Stderr
	}

	ctx, stopAll := context.WithCancel(ctx)
	defer stopAll()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for i, node := range topo.Nodes {
		args, err := childArgs(cfg, i, node.ID)
		if err != nil {
			stopAll()
			wg.Wait()
			return err
		}
		cmd := exec.CommandContext(ctx, exe, args...)
		cmd.Stdout, cmd.Stderr = stdout, stderr
		childproc.SetParentDeathSignal(cmd)
		cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
		cmd.WaitDelay = cfg.Worker.DrainTimeout + killGrace
		if err := cmd.Start(); err != nil {
			stopAll()
			wg.Wait()
			return fmt.Errorf("start worker for numa node %d: %w", node.ID, err)
		}
		clog := log.With().Int("numa_node", node.ID).Int("pid", cmd.Process.Pid).Logger()
		clog.Info().Str("cpus", node.CPUs.String()).Msg("worker started")
		wg.Go(func() {
			err := cmd.Wait()
			stopping := ctx.Err() != nil
			if stopping && stoppedCleanly(cmd.ProcessState) {
				err = nil // Wait reports the cancellation even after a clean exit
			}
			if err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("worker for numa node %d: %w", node.ID, err))
				mu.Unlock()
			}
			if !stopping && err == nil {
				clog.Info().Msg("worker drained and left the fleet; the others keep running")
				return
			}
			if !stopping {
				clog.Error().AnErr("exit", err).Msg("worker exited on its own, stopping the others")
				stopAll()
				if err == nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("worker for numa node %d exited unexpectedly", node.ID))
					mu.Unlock()
				}
				return
			}
			clog.Info().AnErr("exit", err).Msg("worker exited")
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// stoppedCleanly reports whether a child told to stop exited with status 0
// or by the SIGTERM it was sent (before installing its handler).
func stoppedCleanly(ps *os.ProcessState) bool {
	if ps == nil {
		return false
	}
	if ps.Success() {
		return true
	}
	ws, ok := ps.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGTERM
}

// childArgs are the arguments of the child for the index-th node.
func childArgs(cfg SupervisorConfig, index, node int) ([]string, error) {
	w := cfg.Worker
	args := append([]string(nil), cfg.Args...)
	args = append(args, "--numa-node="+strconv.Itoa(node))
	if w.ID != "" {
		args = append(args, "--id="+w.ID+"-numa"+strconv.Itoa(node))
	}
	for _, f := range []struct{ name, addr string }{
		{"listen-addr", w.ListenAddr},
		{"advertise-addr", w.AdvertiseAddr},
		{"metrics-addr", w.MetricsAddr},
	} {
		if f.addr == "" {
			continue
		}
		a, err := offsetPort(f.addr, index)
		if err != nil {
			return nil, fmt.Errorf("--%s: %w", f.name, err)
		}
		args = append(args, "--"+f.name+"="+a)
	}
	return args, nil
}

// offsetPort adds n to the port of addr unless it is 0.
func offsetPort(addr string, n int) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return "", fmt.Errorf("port %q of %s is not a number", port, addr)
	}
	if p == 0 {
		return addr, nil
	}
	if p+n > 65535 {
		return "", fmt.Errorf("port %d + %d is out of range", p, n)
	}
	return net.JoinHostPort(host, strconv.Itoa(p+n)), nil
}

// ForwardArgs returns the flags set on fs (on the command line or from the
// environment) as arguments for a child, leaving out those Supervise sets
// per child (numa-node, id).
func ForwardArgs(fs *flag.FlagSet) []string {
	var args []string
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "numa-node", "id":
			return
		}
		args = append(args, "--"+f.Name+"="+f.Value.String())
	})
	return args
}
