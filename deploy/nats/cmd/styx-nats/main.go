// Command styx-nats is the NATS server with JetStream that holds STYX's
// verdict log, built from the nats-server module this repository already
// depends on, so that deployments run it from a static binary on a FROM
// scratch image (no image is pulled). It is nats-server with three
// changes: JetStream is always on, a store directory is required, and it
// takes STYX's trust flags.
//
//	styx-nats (--pki-dir DIR | --insecure) [nats-server options]
//	                                        run a server (the options and the
//	                                        configuration file of nats-server)
//	styx-nats healthcheck [--http-addr A] [--pki-dir DIR]
//	                                        exit 0 when the server whose
//	                                        monitoring port is A (default
//	                                        127.0.0.1:8222) answers
//	                                        /healthz?js-meta-only=true
//
// With --pki-dir (the server's identity directory, role nats), clients and
// cluster routes must connect over mutual TLS with certificates of its CA:
// each client gets its role's permissions (only schedulers publish
// verdicts and manage the streams; nodes and workers read), and routes
// are accepted from nats identities only. The monitoring port is then
// HTTPS (--https_port); the healthcheck given the same --pki-dir checks
// it over HTTPS. --insecure runs nats-server as it is: plaintext, open to
// anyone who reaches the ports. With neither, styx-nats refuses to start.
//
// A three-server cluster over mutual TLS:
//
//	styx-nats --pki-dir /etc/styx/pki/nats-1 --name nats-1 \
//	  --store_dir /var/lib/nats --https_port 8222 \
//	  --cluster_name styx --cluster nats://0.0.0.0:6222 \
//	  --routes nats://nats-1:6222,nats://nats-2:6222,nats://nats-3:6222
//
// nats-server reads no environment variables of its own (a configuration
// file may refer to them as $NAME); of STYX_* only STYX_PKI_DIR and
// STYX_INSECURE apply, to --pki-dir and --insecure.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/styx-inference/styx/pkg/envflag"
	"github.com/styx-inference/styx/pkg/logging"
	"github.com/styx-inference/styx/pkg/natsauth"
	"github.com/styx-inference/styx/pkg/pkiflag"
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
		os.Exit(healthcheckMain(os.Args[2:], os.Stderr))
	}
	os.Exit(serve(os.Args[1:], os.Stdout, os.Stderr))
}

// serve runs the server until a signal stops it (nats-server's signal
// handling: SIGINT and SIGTERM stop, SIGHUP reloads the configuration file,
// SIGUSR1 reopens the log file, SIGUSR2 enters lame duck mode). It returns
// 0 after --help or --version, 1 when the server cannot start and 2 on a
// usage error.
func serve(args []string, stdout, stderr io.Writer) int {
	opts, trust, err := options(args, stdout, stderr)
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
	log, _ := logging.New(stderr, "info")
	log = logging.For(log, "styx-nats")
	src, err := trust.Load(log)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", prog, err)
		return 1
	}
	var auth *natsauth.Auth
	if src != nil {
		if auth, err = natsauth.New(src, logging.For(log, "natsauth")); err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", prog, err)
			return 1
		}
		auth.Configure(opts)
		// Our own signal handling: nats-server's would reload the
		// configuration file without the TLS and authentication set here.
		opts.NoSigs = true
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
	if auth != nil {
		auth.SetLogger(s, s.Logger(), opts.Debug, opts.Trace, opts.TraceVerbose)
		stop := handleSignals(s, auth, opts.ConfigFile)
		defer stop()
	}
	if err := server.Run(s); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", prog, err)
		return 1
	}
	s.WaitForShutdown()
	return 0
}

// options parses nats-server's options with JetStream switched on, as if
// --jetstream came first, and STYX's trust flags (--pki-dir, --insecure,
// or STYX_PKI_DIR and STYX_INSECURE); it checks that JetStream has a store
// directory of its own (nats-server would otherwise pick one under the
// temporary directory, which a FROM scratch image does not have), that
// exactly one trust flag is given, and that with --pki-dir nothing else
// sets TLS or authentication or opens another port. It returns nil
// options after --version or --help_tls, and flag.ErrHelp after --help.
func options(args []string, stdout, stderr io.Writer) (*server.Options, pkiflag.Flags, error) {
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // a parse error is returned, and printed once by serve
	fs.Usage = func() {}
	var trust pkiflag.Flags
	trust.Register(fs)
	help := false
	printVersion := func() { fmt.Fprintf(stdout, "%s: nats-server v%s\n", prog, server.VERSION) }
	printHelp := func() {
		help = true
		fmt.Fprintf(stdout, `Usage: %[1]s (--pki-dir DIR | --insecure) [nats-server options]
       %[1]s healthcheck [--http-addr %[2]s] [--pki-dir DIR] [--timeout 3s]

The NATS server that holds STYX's verdict log: nats-server %[3]s with
JetStream always on. A store directory is required: --store_dir DIR, or
store_dir in the jetstream block of a configuration file (-c FILE). For a
cluster, give every server a --name, the same --cluster_name, a --cluster
listen URL and --routes to all servers.

--pki-dir DIR (or STYX_PKI_DIR) is the server's identity (ca.crt, tls.crt,
tls.key; role nats): clients and routes then need mutual TLS with
certificates of that CA, each client gets its role's permissions
(schedulers publish verdicts and manage the streams, nodes and workers
read, admins may do anything, other roles are refused), and only nats
identities join the cluster. The files are reloaded when renewed. The
monitoring port must then be HTTPS (--https_port, not --http_port), and
no other TLS, authentication, profiling, leaf node, gateway, websocket or
MQTT setting may be given. --insecure (or STYX_INSECURE) runs plaintext and
open, with a warning. One of the two is required.

healthcheck exits 0 when the server's monitoring port answers
%[4]s: over HTTPS with --pki-dir (or
STYX_PKI_DIR), accepting a nats server of that CA; over HTTP without.

Options (nats-server's, and the two above; so is the configuration file format):
`, prog, healthAddr, server.VERSION, healthPath)
		fs.SetOutput(stdout)
		fs.PrintDefaults()
	}
	printTLSHelp := func() {
		fmt.Fprintln(stdout, "TLS: --pki-dir DIR sets TLS for clients and routes from STYX's identity directory. Without it (--insecure), nats-server's --tls, --tlscert, --tlskey, --tlsverify, --tlscacert, or the tls block of the configuration file apply.")
	}
	opts, err := server.ConfigureOptions(fs, append([]string{"--jetstream"}, args...), printVersion, printHelp, printTLSHelp)
	switch {
	case help:
		return nil, trust, flag.ErrHelp
	case err != nil:
		return nil, trust, fmt.Errorf("%w (%s -h lists the options)", err, prog)
	case opts == nil:
		return nil, trust, nil
	}
	if err := trustFromEnv(fs, os.LookupEnv); err != nil {
		return nil, trust, err
	}
	switch {
	case !opts.JetStream:
		return nil, trust, errors.New("JetStream is off (--jetstream=false); STYX needs it")
	case opts.StoreDir == "" && !opts.CheckConfig:
		return nil, trust, errors.New("no store directory: give --store_dir DIR, or store_dir in the configuration file's jetstream block")
	case trust.Dir != "" && trust.Insecure:
		return nil, trust, errors.New("--pki-dir and --insecure both given: choose one")
	case trust.Dir == "" && !trust.Insecure:
		return nil, trust, pkiflag.ErrNoIdentity
	case trust.Dir != "":
		if err := checkPKIOptions(opts); err != nil {
			return nil, trust, err
		}
	}
	return opts, trust, nil
}

// trustFromEnv fills --pki-dir and --insecure, when not given, from
// STYX_PKI_DIR and STYX_INSECURE. nats-server's own flags read no
// environment.
func trustFromEnv(fs *flag.FlagSet, lookup func(string) (string, bool)) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for _, name := range []string{"pki-dir", "insecure"} {
		if set[name] {
			continue
		}
		env := envflag.Name("STYX", name)
		if v, ok := lookup(env); ok {
			if err := fs.Set(name, v); err != nil {
				return fmt.Errorf("%s=%q: %w", env, v, err)
			}
		}
	}
	return nil
}

// checkPKIOptions refuses, with --pki-dir, the settings that would bypass
// or contradict the certificate trust: other TLS settings, other
// authentication, plain HTTP monitoring, and listeners whose connections
// the client and route authentication does not cover.
func checkPKIOptions(o *server.Options) error {
	var bad []string
	add := func(cond bool, what string) {
		if cond {
			bad = append(bad, what)
		}
	}
	add(o.TLSConfig != nil, "client TLS (--tls*, or the tls block)")
	add(o.Cluster.TLSConfig != nil, "cluster TLS (the cluster block's tls)")
	add(o.AllowNonTLS, "allow_non_tls")
	add(o.HTTPPort != 0, "plain HTTP monitoring (--http_port, -m, http_port: use --https_port, -ms, https_port)")
	add(o.ProfPort != 0, "the profiling port (--profile, prof_port)")
	add(o.Username != "" || o.Password != "" || o.Authorization != "" || len(o.Users) > 0 || len(o.Nkeys) > 0,
		"client authentication (--user, --pass, --auth, or the authorization block)")
	add(len(o.TrustedOperators) > 0 || len(o.TrustedKeys) > 0 || o.AuthCallout != nil, "operators, trusted keys or auth callout")
	add(len(o.Accounts) > 0, "accounts")
	add(o.LeafNode.Port != 0 || len(o.LeafNode.Remotes) > 0, "leaf nodes")
	add(o.Gateway.Port != 0 || o.Gateway.Name != "", "gateways")
	add(o.Websocket.Port != 0, "websocket")
	add(o.MQTT.Port != 0, "MQTT")
	if len(bad) == 0 {
		return nil
	}
	return fmt.Errorf("--pki-dir sets TLS and authentication for clients and routes, and serves nothing else; remove: %s", strings.Join(bad, "; "))
}
