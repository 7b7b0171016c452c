// Command styx-node is the STYX cluster node.
//
//	styx-node [serve] [flags]   answer queries and stream sightings (default)
//	styx-node lookup [flags] ADDR...   look addresses up in the location database
//	styx-node import-attacks [flags] FILE...   post attack reports to a node
//	styx-node export-verdicts [flags]   write stored verdicts as a training labels file
//	styx-node healthcheck [flags]   exit 0 when the node at --http-addr answers /healthz
//
// Every serve flag may also be set as STYX_<FLAG> (upper case, '-' as '_').
// See package clusternode/cli.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/styx-inference/styx/clusternode/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
