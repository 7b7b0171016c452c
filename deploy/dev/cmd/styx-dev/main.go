// Command styx-dev runs an all-in-one STYX cluster on this machine (what
// `make run` starts): embedded etcd and NATS JetStream, one scheduler,
// workers and cluster nodes from the built binaries, and a load generator.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/styx-inference/styx/deploy/dev"
	"github.com/styx-inference/styx/pkg/envflag"
)

func main() {
	os.Exit(run())
}

func run() int {
	cfg := dev.DefaultConfig()
	if exe, err := os.Executable(); err == nil {
		cfg.BinDir = filepath.Dir(exe)
	}
	fs := flag.NewFlagSet("styx-dev", flag.ContinueOnError)
	fs.StringVar(&cfg.BinDir, "bin", cfg.BinDir, "directory holding styx-scheduler, styx-worker and styx-node")
	fs.StringVar(&cfg.DataDir, "data-dir", "", "directory for etcd data, JetStream's files, the nodes' stores and the logs (default: a new temporary directory, removed at exit)")
	fs.StringVar(&cfg.EtcdAddr, "etcd-addr", cfg.EtcdAddr, "embedded etcd client listen address")
	fs.StringVar(&cfg.NATSAddr, "nats-addr", cfg.NATSAddr, "embedded NATS (JetStream, the verdict log) client listen address")
	fs.StringVar(&cfg.NATSURL, "nats-url", "", "an external NATS server with JetStream to use instead of the embedded one, e.g. nats://127.0.0.1:4222 for Debian's nats-server -js -sd DIR (the streams are created there)")
	fs.StringVar(&cfg.SchedGRPC, "scheduler-grpc-addr", cfg.SchedGRPC, "scheduler gRPC listen address")
	fs.StringVar(&cfg.SchedHTTP, "scheduler-http-addr", cfg.SchedHTTP, "scheduler HTTP listen address (visualiser, status page)")
	fs.StringVar(&cfg.NodeHTTP, "node-http-addr", cfg.NodeHTTP, "first cluster node's query API listen address; further nodes listen on the ports above it")
	fs.IntVar(&cfg.Nodes, "nodes", cfg.Nodes, "cluster node processes to start (ids dev-node, dev-node-2, ...); the load is spread over them")
	fs.IntVar(&cfg.Workers, "workers", cfg.Workers, "worker processes to start")
	fs.StringVar(&cfg.DBPath, "db", cfg.DBPath, "location database file")
	fs.IntVar(&cfg.Rate, "rate", cfg.Rate, "addresses per second the load generator queries (0 = no load)")
	fs.DurationVar(&cfg.Interval, "interval", cfg.Interval, "time between summary lines")
	fs.DurationVar(&cfg.Duration, "duration", 0, "stop after this long (0 = run until Ctrl-C)")
	fs.BoolVar(&cfg.Insecure, "insecure", false, "plaintext with no authentication on every hop (default: a throwaway CA in <data-dir>/pki issues each process its certificate, and every hop runs mutual TLS)")
	fs.Usage = envflag.Usage(fs, "STYX", "styx-dev [flags]\n\nRuns an all-in-one STYX cluster on 127.0.0.1: embedded etcd and NATS JetStream (the verdict\nlog), one scheduler, workers and -nodes cluster nodes (child processes; their logs go to\n<data-dir>/logs), and a load generator that queries the nodes for addresses sampled from the\nlocation database. Prints the URLs and, every -interval, a summary line. Ctrl-C stops everything.\n\nEvery hop runs mutual TLS: a throwaway CA in <data-dir>/pki issues each process its identity,\netcd requires client certificates with per-identity permissions, and styx-dev prints etcdctl,\ngrpcurl and styx-scheduler lines that work with the admin certificate. --insecure: plaintext.")
	if err := envflag.Parse(fs, "STYX", os.Args[1:]); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		fmt.Fprintln(os.Stderr, "styx-dev:", err)
		return 2
	}
	if cfg.DataDir == "" {
		dir, err := os.MkdirTemp("", "styx-dev-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		cfg.DataDir = dir
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := dev.Run(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "styx-dev:", err)
		return 1
	}
	return 0
}
