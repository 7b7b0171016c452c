// Command styx-trainer builds and evaluates Raven models:
//
//	styx-trainer train [flags]               train, report held-out metrics, write the artifact
//	styx-trainer eval --model M --labels F   score a labelled list
//	styx-trainer inspect --model M           print a model's version, schema, metrics, provenance
//
// Every flag may also be set as STYX_<FLAG> (upper case, '-' as '_').
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/styx-inference/styx/trainer/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
