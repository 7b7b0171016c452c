// Command styx-scheduler runs a STYX scheduler: it campaigns for leadership
// in etcd and, while leading, hands batches of addresses to the worker fleet.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/styx-inference/styx/scheduler/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
