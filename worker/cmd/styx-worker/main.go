// Command styx-worker is the STYX Raven post-processing server: it examines
// the batches of addresses the STYX leader sends it and registers itself in
// etcd. See packages worker and worker/cli.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/styx-inference/styx/worker/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
