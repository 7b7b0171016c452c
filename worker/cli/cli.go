package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/styx-inference/styx/pkg/envflag"
	"github.com/styx-inference/styx/pkg/logging"
	"github.com/styx-inference/styx/pkg/pki"
	"github.com/styx-inference/styx/pkg/pkiflag"
	"github.com/styx-inference/styx/worker"
)

const synopsis = `styx-worker: the STYX Raven post-processing server.

Serves styx.v1.WorkerService on gRPC (with health and reflection), registers
under /styx/workers/<id> on an etcd lease, and examines the batches the STYX
leader sends. Unless --attack-feed=false, it rebuilds its attack and history
tables at start from the verdict log (NATS JetStream, --nats-url) and follows
it. On SIGTERM or SIGINT, or when the leader sends it a Drain
('styx-scheduler fleet drain'), it drains (gRPC health NOT_SERVING, no new
batches, answers the ones it holds, up to --drain-timeout), revokes its lease
and stops. It exits with 0 after a drain, 1 on a failure, 2 on a usage error.

Usage: styx-worker [flags]
       styx-worker help`

// Main runs the worker until ctx ends (a drain) and returns its exit
// status: 0 after a drain, 1 on a failure, 2 on a usage error.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("styx-worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := worker.DefaultConfig()
	cfg.RegisterFlags(fs)
	var trust pkiflag.Flags
	trust.Register(fs)
	level := fs.String("log-level", "info", "log level: debug, info, warn or error")
	fs.Usage = envflag.Usage(fs, "STYX", synopsis)
	if len(args) == 1 && args[0] == "help" {
		fs.SetOutput(stdout)
		fs.Usage()
		return 0
	}
	if err := envflag.Parse(fs, "STYX", args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "styx-worker:", err)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "styx-worker: unexpected arguments %q\n", fs.Args())
		return 2
	}
	log, err := logging.New(stderr, *level)
	if err != nil {
		fmt.Fprintln(stderr, "styx-worker: --log-level:", err)
		return 2
	}
	if cfg.PKI, err = trust.Load(log); err != nil {
		fmt.Fprintln(stderr, "styx-worker:", err)
		return 2
	}
	if err := pkiflag.Require(cfg.PKI, pki.Worker); err != nil {
		fmt.Fprintln(stderr, "styx-worker: --pki-dir:", err)
		return 2
	}

	if cfg.NUMANode == worker.AllNodes {
		err = worker.Supervise(ctx, worker.SupervisorConfig{
			Worker: cfg, Args: worker.ForwardArgs(fs), Stdout: stdout, Stderr: stderr,
		}, log)
	} else {
		var w *worker.Worker
		if w, err = worker.New(cfg, log); err == nil {
			err = w.Run(ctx)
		}
	}
	if err != nil {
		log.Error().Err(err).Msg("styx-worker failed")
		return 1
	}
	return 0
}
