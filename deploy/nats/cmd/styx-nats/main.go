// Command styx-nats is the NATS server with JetStream that holds STYX's
// verdict log, built from the nats-server module this repository already
// depends on, so that deployments run it from a static binary on a FROM
// scratch image (no image is pulled). It is nats-server with two changes:
// JetStream is always on, and a store directory is required.
//
//	styx-nats [nats-server options]         run a server (the options and the
//	                                        configuration file of nats-server)
//	styx-nats healthcheck [--http-addr A]   exit 0 when the server whose
//	                                        monitoring port is A (default
//	                                        127.0.0.1:8222) answers
//	                                        /healthz?js-meta-only=true
//
// A three-server cluster, as deploy/compose runs it:
//
//	styx-nats --name nats-1 --store_dir /var/lib/nats --http_port 8222 \
//	  --cluster_name styx --cluster nats://0.0.0.0:6222 \
//	  --routes nats://nats-1:6222,nats://nats-2:6222,nats://nats-3:6222
//
// nats-server reads no environment variables of its own (a configuration
// file may refer to them as $NAME); STYX_* ones do not apply.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/styx-inference/styx/pkg/healthcheck"
)

const prog = "styx-nats"

// Defaults of the healthcheck subcommand: nats-server's usual monitoring
// port, and the health check that passes once JetStream is on and, in a
// cluster, current with a meta leader: from then on streams can be created.
// (js-enabled-only would pass before the cluster has formed; the full
// /healthz fails while any stream replica here catches up, which suits a
// readiness probe but not a liveness check.)
const (
	healthAddr = "127.0.0.1:8222"
	healthPath = "/healthz?js-meta-only=true"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "healthcheck" {
		os.Exit(healthcheck.Main(prog, os.Args[2:], healthAddr, healthPath, os.Stderr))
	}
	os.Exit(serve(os.Args[1:], os.Stdout, os.Stderr))
}

// serve runs the server until a signal stops it (nats-server's own signal
// handling: SIGINT and SIGTERM stop, SIGHUP reloads the configuration file,
// SIGUSR2 enters lame duck mode). It returns 0 after --help or --version,
// 1 when the server cannot start and 2 on a usage error.
func serve(args []string, stdout, stderr io.Writer) int {
	opts, err := options(args, stdout, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "%s: %v\n", prog, err)
		return 2
	}
	if opts == nil { // --version, --help_tls
		return 0
	}
	if opts.CheckConfig {
		fmt.Fprintf(stderr, "%s: configuration file %s is valid (%s)\n", prog, opts.ConfigFile, opts.ConfigDigest())
		return 0
	}
	s, err := server.NewServer(opts)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", prog, err)
		return 1
	}
	s.ConfigureLogger()
	if err := server.Run(s); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", prog, err)
		return 1
	}
	s.WaitForShutdown()
	return 0
}

// options parses nats-server's options with JetStream switched on, as if
// --jetstream came first, and checks that JetStream has a store directory
// of its own (nats-server would otherwise pick one under the temporary
// directory, which a FROM scratch image does not have). It returns nil
// options after --version or --help_tls, and flag.ErrHelp after --help.
func options(args []string, stdout, stderr io.Writer) (*server.Options, error) {
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // a parse error is returned, and printed once by serve
	fs.Usage = func() {}
	help := false
	printVersion := func() { fmt.Fprintf(stdout, "%s: nats-server v%s\n", prog, server.VERSION) }
	printHelp := func() {
		help = true
		fmt.Fprintf(stdout, `Usage: %[1]s [nats-server options]
       %[1]s healthcheck [--http-addr %[2]s] [--timeout 3s]

The NATS server that holds STYX's verdict log: nats-server %[3]s with
JetStream always on. A store directory is required: --store_dir DIR, or
store_dir in the jetstream block of a configuration file (-c FILE). For a
cluster, give every server a --name, the same --cluster_name, a --cluster
listen URL and --routes to all servers. healthcheck exits 0 when the
server's monitoring port (--http_port) answers %[4]s.

Options (nats-server's; so is the configuration file format):
`, prog, healthAddr, server.VERSION, healthPath)
		fs.SetOutput(stdout)
		fs.PrintDefaults()
	}
	printTLSHelp := func() {
		fmt.Fprintln(stdout, "TLS: --tls, --tlscert, --tlskey, --tlsverify, --tlscacert, or the tls block of the configuration file (nats-server's documentation).")
	}
	opts, err := server.ConfigureOptions(fs, append([]string{"--jetstream"}, args...), printVersion, printHelp, printTLSHelp)
	switch {
	case help:
		return nil, flag.ErrHelp
	case err != nil:
		return nil, fmt.Errorf("%w (%s -h lists the options)", err, prog)
	case opts == nil:
		return nil, nil
	case !opts.JetStream:
		return nil, errors.New("JetStream is off (--jetstream=false); STYX needs it")
	case opts.StoreDir == "" && !opts.CheckConfig:
		return nil, errors.New("no store directory: give --store_dir DIR, or store_dir in the configuration file's jetstream block")
	}
	return opts, nil
}
