// Command styx-etcd is etcd, built from the etcd module this repository
// already depends on, so that the compose deployment can run etcd from a
// static binary on a FROM scratch image (no image is pulled).
//
//	styx-etcd --pki-dir DIR [etcd flags]   run an etcd member over TLS
//	styx-etcd --insecure [etcd flags]      run an etcd member in plaintext
//	styx-etcd healthcheck [--http-addr A] [--pki-dir DIR]
//	                                       exit 0 when the member at A (default
//	                                       127.0.0.1:2379) answers /health
//
// --pki-dir names an identity directory of role etcd (ca.crt, tls.crt,
// tls.key). The member then serves clients and peers over TLS only and
// requires a certificate of the same CA from both (etcd's --cert-file,
// --key-file, --trusted-ca-file, --client-cert-auth and their --peer-*
// twins, set from the directory); etcd takes a client's certificate CN,
// "<role>:<id>", as its user name. URLs default to https:// and an http://
// one is refused. The peer port accepts only the etcd identities of the
// members in --initial-cluster (etcd/<member name>), unless
// --peer-cert-allowed-cn says otherwise; so the member's own identity must
// be etcd/<its --name>. etcd checks host names between peers: give each
// member's certificate the host name its peer URL uses.
//
// --insecure serves plaintext without authentication and says so at start.
// With neither, styx-etcd refuses to start. STYX_PKI_DIR and STYX_INSECURE
// set them from the environment; every other setting is etcd's (its flags,
// or its own ETCD_* environment variables).
//
// etcd's gateway and grpc-proxy subcommands pass through unchanged.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"go.etcd.io/etcd/api/v3/version"
	"go.etcd.io/etcd/server/v3/etcdmain"

	"github.com/styx-inference/styx/pkg/envflag"
	"github.com/styx-inference/styx/pkg/healthcheck"
	"github.com/styx-inference/styx/pkg/pki"
)

const prog = "styx-etcd"

// Defaults of the healthcheck subcommand: etcd's usual client port.
const (
	healthAddr = "127.0.0.1:2379"
	healthPath = "/health"
)

// errNoIdentity is the refusal every STYX binary gives without
// --pki-dir or --insecure.
var errNoIdentity = errors.New("no identity: give --pki-dir DIR (ca.crt, tls.crt, tls.key) or --insecure for plaintext")

func main() {
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "healthcheck" {
		os.Exit(healthMain(args[1:], os.LookupEnv, os.Stderr))
	}
	p, err := prepare(args, os.LookupEnv)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", prog, err)
		os.Exit(2)
	}
	if p.help {
		fmt.Fprint(os.Stdout, usage)
	}
	if p.warn != "" {
		fmt.Fprintf(os.Stderr, "%s: warning: %s\n", prog, p.warn)
	}
	etcdmain.Main(append([]string{os.Args[0]}, p.args...))
}

var usage = fmt.Sprintf(`Usage: %[1]s --pki-dir DIR [etcd flags]
       %[1]s --insecure [etcd flags]
       %[1]s healthcheck [--http-addr %[2]s] [--pki-dir DIR] [--timeout 3s]

etcd %[3]s for STYX. One of these is required:

  --pki-dir DIR  identity directory of role etcd (ca.crt, tls.crt, tls.key;
                 env STYX_PKI_DIR). Clients and peers connect over TLS only
                 and must present a certificate of the same CA; etcd takes a
                 client's certificate CN ("<role>:<id>") as its user name.
                 URLs default to https:// and an http:// one is refused. The
                 peer port accepts only etcd/<member name> of the members in
                 --initial-cluster (unless --peer-cert-allowed-cn is given),
                 so the identity must be etcd/<--name>.
  --insecure     plaintext, no authentication (env STYX_INSECURE); a
                 warning is printed at start.

healthcheck exits 0 when the member at --http-addr (env STYX_HTTP_ADDR)
answers %[4]s, over TLS with the identity in --pki-dir (env STYX_PKI_DIR).
etcd's gateway and grpc-proxy subcommands pass through unchanged.

etcd's own flags follow (etcd also reads them from ETCD_* variables):
`, prog, healthAddr, version.Version, healthPath)

// plan is what to run etcd with.
type plan struct {
	args []string // etcd's arguments, without the program name
	help bool     // print usage before etcd prints its flags
	warn string   // printed on stderr before etcd starts
}

// tlsFlags are the etcd flags --pki-dir sets; giving one as well is
// refused.
var tlsFlags = []string{
	"cert-file", "key-file", "trusted-ca-file", "client-cert-auth", "auto-tls",
	"peer-cert-file", "peer-key-file", "peer-trusted-ca-file", "peer-client-cert-auth", "peer-auto-tls",
	"client-cert-file", "client-key-file",
}

// urlFlags are etcd's flags naming URLs clients or peers use, and their
// defaults under --pki-dir ("" for none).
var urlFlags = []struct{ name, def string }{
	{"listen-client-urls", "https://localhost:2379"},
	{"advertise-client-urls", "https://localhost:2379"},
	{"listen-client-http-urls", ""},
	{"listen-peer-urls", "https://localhost:2380"},
	{"initial-advertise-peer-urls", "https://localhost:2380"},
}

// prepare turns styx-etcd's arguments into etcd's: it takes out --pki-dir
// and --insecure and, for --pki-dir, adds the TLS flags.
func prepare(args []string, lookup func(string) (string, bool)) (plan, error) {
	if len(args) > 0 && (args[0] == "gateway" || args[0] == "grpc-proxy") {
		return plan{args: args}, nil
	}
	own, rest, err := splitOwn(args, lookup)
	if err != nil {
		return plan{}, err
	}
	if own.help || own.version {
		return plan{args: rest, help: own.help}, nil
	}
	switch {
	case own.pkiDir != "" && own.insecure:
		return plan{}, errors.New("--pki-dir and --insecure exclude each other")
	case own.insecure:
		return plan{args: rest, warn: "--insecure: clients and peers connect in plaintext, and etcd authenticates no one by certificate"}, nil
	case own.pkiDir == "":
		return plan{}, errNoIdentity
	}
	out, err := withTLS(own.pkiDir, rest, lookup)
	if err != nil {
		return plan{}, err
	}
	return plan{args: out}, nil
}

type ownFlags struct {
	pkiDir        string
	insecure      bool
	help, version bool
}

// splitOwn takes --pki-dir and --insecure (also from STYX_PKI_DIR and
// STYX_INSECURE) out of args, and notes -h and --version.
func splitOwn(args []string, lookup func(string) (string, bool)) (ownFlags, []string, error) {
	var own ownFlags
	var rest []string
	pkiSet, insecureSet := false, false
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			rest = append(rest, args[i:]...)
			break
		}
		name, val, hasVal := flagOf(a)
		switch name {
		case "pki-dir":
			if !hasVal {
				if i+1 >= len(args) {
					return own, nil, errors.New("--pki-dir needs a directory")
				}
				i++
				val = args[i]
			}
			own.pkiDir, pkiSet = val, true
			continue
		case "insecure":
			b := true
			if hasVal {
				var err error
				if b, err = strconv.ParseBool(val); err != nil {
					return own, nil, fmt.Errorf("--insecure=%s: %w", val, err)
				}
			}
			own.insecure, insecureSet = b, true
			continue
		case "h", "help":
			own.help = true
		case "version":
			own.version = true
		}
		rest = append(rest, a)
	}
	if v, ok := lookup(envflag.Name("STYX", "pki-dir")); ok && !pkiSet {
		own.pkiDir = v
	}
	if v, ok := lookup(envflag.Name("STYX", "insecure")); ok && !insecureSet {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return own, nil, fmt.Errorf("%s=%q: %w", envflag.Name("STYX", "insecure"), v, err)
		}
		own.insecure = b
	}
	return own, rest, nil
}

// flagOf splits "-name", "--name" or "--name=value".
func flagOf(a string) (name, val string, hasVal bool) {
	if len(a) < 2 || a[0] != '-' {
		return "", "", false
	}
	a = strings.TrimPrefix(a[1:], "-")
	name, val, hasVal = strings.Cut(a, "=")
	return name, val, hasVal
}

// etcdValue is the value of etcd's string flag name: from args, else from
// its ETCD_* variable.
func etcdValue(args []string, lookup func(string) (string, bool), name string) (string, bool) {
	for i, a := range args {
		n, v, hasVal := flagOf(a)
		if n != name {
			continue
		}
		if hasVal {
			return v, true
		}
		if i+1 < len(args) {
			return args[i+1], true
		}
		return "", true
	}
	return lookup(envflag.Name("ETCD", name))
}

// withTLS checks the identity in dir and returns args with etcd's TLS
// flags, https:// defaults and the peers allowed.
func withTLS(dir string, args []string, lookup func(string) (string, bool)) ([]string, error) {
	src, err := pki.Load(dir, zerolog.Nop())
	if err != nil {
		return nil, fmt.Errorf("--pki-dir: %w", err)
	}
	self := src.Identity()
	if self.Role != pki.Etcd {
		return nil, fmt.Errorf("--pki-dir %s holds %s: an etcd member needs an identity of role %s", dir, self, pki.Etcd)
	}
	if _, ok := etcdValue(args, lookup, "config-file"); ok {
		return nil, errors.New("--pki-dir: etcd ignores its flags when given a configuration file (--config-file, ETCD_CONFIG_FILE); give the settings as flags")
	}
	for _, f := range tlsFlags {
		if _, ok := etcdValue(args, lookup, f); ok {
			return nil, fmt.Errorf("--pki-dir sets etcd's TLS flags from the identity directory: remove --%s (or %s)", f, envflag.Name("ETCD", f))
		}
	}
	ca, cert, key := src.Paths()
	out := append([]string(nil), args...)
	out = append(out,
		"--cert-file="+cert, "--key-file="+key, "--trusted-ca-file="+ca, "--client-cert-auth",
		"--peer-cert-file="+cert, "--peer-key-file="+key, "--peer-trusted-ca-file="+ca, "--peer-client-cert-auth")

	_, listenSet := etcdValue(args, lookup, "listen-client-urls")
	values := map[string]string{}
	for _, f := range urlFlags {
		v, ok := etcdValue(args, lookup, f.name)
		switch {
		case ok:
			if err := checkURLs(f.name, strings.Split(v, ",")); err != nil {
				return nil, err
			}
		case f.def == "":
			continue
		case f.name == "advertise-client-urls" && listenSet:
			// etcd asks for both when one is given; let it say so.
			continue
		default:
			v = f.def
			out = append(out, "--"+f.name+"="+v)
		}
		values[f.name] = v
	}

	name, ok := etcdValue(args, lookup, "name")
	if !ok {
		name = "default"
	}
	cluster, clusterSet := etcdValue(args, lookup, "initial-cluster")
	if !clusterSet && !discovers(args, lookup) {
		// As etcd does for a member named by --name alone, with the
		// https:// default in place of http://localhost:2380.
		var b []string
		for _, u := range strings.Split(values["initial-advertise-peer-urls"], ",") {
			b = append(b, name+"="+u)
		}
		cluster = strings.Join(b, ",")
		out = append(out, "--initial-cluster="+cluster)
	}
	members, err := clusterMembers(cluster)
	if err != nil {
		return nil, err
	}
	if _, ok := etcdValue(args, lookup, "peer-cert-allowed-cn"); !ok && len(members) > 0 {
		if self.ID != name {
			return nil, fmt.Errorf("--pki-dir holds %s but the member is named %q: peers accept etcd/<member name> only; issue etcd/%s or give --name=%s", self, name, name, self.ID)
		}
		var cns []string
		for _, m := range members {
			id, err := pki.NewIdentity(string(pki.Etcd), m)
			if err != nil {
				return nil, fmt.Errorf("--initial-cluster member %q: %w", m, err)
			}
			cns = append(cns, id.CommonName())
		}
		out = append(out, "--peer-cert-allowed-cn="+strings.Join(cns, ","))
	}
	return out, nil
}

// discovers reports whether the member finds its peers by discovery
// instead of --initial-cluster.
func discovers(args []string, lookup func(string) (string, bool)) bool {
	for _, f := range []string{"discovery", "discovery-srv", "discovery-endpoints"} {
		if v, ok := etcdValue(args, lookup, f); ok && v != "" {
			return true
		}
	}
	return false
}

// checkURLs refuses a URL clients or peers would use without TLS.
func checkURLs(flagName string, urls []string) error {
	for _, s := range urls {
		u, err := url.Parse(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("--%s: %w", flagName, err)
		}
		if u.Scheme != "https" && u.Scheme != "unixs" {
			return fmt.Errorf("--%s %s: with --pki-dir clients and peers use TLS; write https://", flagName, s)
		}
	}
	return nil
}

// clusterMembers returns the member names of an --initial-cluster value,
// checking its URLs use TLS.
func clusterMembers(cluster string) ([]string, error) {
	if cluster == "" {
		return nil, nil
	}
	var names []string
	seen := map[string]bool{}
	for _, m := range strings.Split(cluster, ",") {
		name, u, ok := strings.Cut(strings.TrimSpace(m), "=")
		if !ok {
			return nil, fmt.Errorf("--initial-cluster: %q is not name=URL", m)
		}
		if err := checkURLs("initial-cluster", []string{u}); err != nil {
			return nil, err
		}
		if !seen[name] {
			seen[name] = true
			names = append(names, name)
		}
	}
	return names, nil
}

// healthMain is "styx-etcd healthcheck": it returns 0 when the member
// answers /health, 1 when not (the reason on stderr) and 2 on a usage
// error. With an identity it asks over TLS, presenting it.
func healthMain(args []string, lookup func(string) (string, bool), stderr io.Writer) int {
	fs := flag.NewFlagSet(prog+" healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("http-addr", healthAddr, "the member's client address (an unspecified host means loopback)")
	dir := fs.String("pki-dir", "", "identity directory to ask over TLS with (ca.crt, tls.crt, tls.key); empty: plain HTTP")
	timeout := fs.Duration("timeout", 3*time.Second, "how long to wait for the answer")
	fs.Usage = envflag.Usage(fs, "STYX", prog+" healthcheck [flags]\n\nExits 0 when the etcd member at --http-addr answers 200 on "+healthPath+", 1 otherwise.\nMeant for container health checks on images without a shell.")
	err := fs.Parse(args)
	if err == nil {
		err = envflag.Apply(fs, "STYX", lookup)
	}
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "%s healthcheck: %v\n", prog, err)
		return 2
	}
	u, err := healthcheck.URL(*addr, healthPath)
	if err != nil {
		fmt.Fprintf(stderr, "%s healthcheck: %v\n", prog, err)
		return 2
	}
	client := &http.Client{}
	if *dir != "" {
		src, err := pki.Load(*dir, zerolog.Nop())
		if err != nil {
			fmt.Fprintf(stderr, "%s healthcheck: %v\n", prog, err)
			return 2
		}
		u = "https://" + strings.TrimPrefix(u, "http://")
		client.Transport = &http.Transport{TLSClientConfig: src.ClientConfig(pki.AnyOf(pki.Etcd)), ForceAttemptHTTP2: true}
		defer client.CloseIdleConnections()
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := check(ctx, client, u); err != nil {
		fmt.Fprintf(stderr, "%s healthcheck: %v\n", prog, err)
		return 1
	}
	return 0
}

// check GETs u and returns nil on 200 OK.
func check(ctx context.Context, client *http.Client, u string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", u, resp.Status)
	}
	return nil
}
