package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"

	"github.com/styx-inference/styx/pkg/pki"
)

const usage = `styx-pki: the STYX certificate authority.

Every STYX process proves who it is with a certificate of the cluster's CA.
Its identity is the certificate's URI SAN, spiffe://styx/<role>/<id>, with
role one of scheduler, worker, node, admin, trainer, etcd, nats. A PKI root
directory holds the CA in ROOT/ca (ca.crt, ca.key) and one identity
directory per identity in ROOT/<role>-<id> (ca.crt, tls.crt, tls.key): the
directory a process is given with --pki-dir (STYX_PKI_DIR). Certificates
are ECDSA P-256, valid for both TLS server and client, for 30 days unless
told otherwise. Files are replaced atomically, and running processes pick
up renewed files within a second, on their next handshake.

Usage:
  styx-pki init --dir ROOT [--name NAME] [--ca-days 1825]
      make the CA in ROOT/ca (never overwrites one)
  styx-pki issue --dir ROOT --role ROLE --id ID [--days 30] [--dns a,b] [--ip x,y] [--out DIR]
      issue an identity directory, or renew it in place
  styx-pki ensure --dir ROOT [flags] ROLE/ID...
      make the CA unless there is one, then issue each identity that is
      missing or past two thirds of its lifetime (idempotent: for scripts)
  styx-pki trust --dir ROOT [--add FILE]... [--only-own]
      set the CAs the identities of ROOT trust (a CA rotation)
  styx-pki show [--ca FILE] PATH
      print the identity, lifetime and issuer of an identity directory or a
      certificate; exit 1 when it is expired or not signed by its CA
  styx-pki grant --etcd-endpoints ENDPOINTS --pki-dir ADMIN_DIR ROLE/ID...
      create (or update) the etcd users and roles of identities
  styx-pki revoke --etcd-endpoints ENDPOINTS --pki-dir ADMIN_DIR ROLE/ID...
      delete the etcd users and roles of identities
  styx-pki etcd-enable --etcd-endpoints ENDPOINTS --pki-dir ADMIN_DIR --admin NAME[,NAME] [ROLE/ID...]
      grant the identities listed, then turn etcd authentication on
  styx-pki help [COMMAND]

Start a cluster's PKI, then give each host its directory:

  styx-pki init  --dir /etc/styx/pki --name "STYX CA"
  styx-pki issue --dir /etc/styx/pki --role scheduler --id sched-1
  styx-pki issue --dir /etc/styx/pki --role etcd --id etcd-1 --dns etcd-1.example --ip 10.0.0.5
  styx-pki show  /etc/styx/pki/scheduler-sched-1

Run 'styx-pki COMMAND -h' for the flags and examples of a command.
Exit status: 0 on success, 1 on a failure, 2 on a usage error.`

// command is one subcommand: its usage text, and a setup that registers
// its flags and returns what runs once they are parsed.
type command struct {
	usage string
	setup func(fs *flag.FlagSet) func(ctx context.Context, args []string, stdout io.Writer) error
}

var commands = map[string]command{
	"init":        {initUsage, initCmd},
	"issue":       {issueUsage, issueCmd},
	"ensure":      {ensureUsage, ensureCmd},
	"trust":       {trustUsage, trustCmd},
	"show":        {showUsage, showCmd},
	"grant":       {grantUsage, grantCmd},
	"revoke":      {revokeUsage, revokeCmd},
	"etcd-enable": {enableUsage, enableCmd},
}

// usageError is a mistake on the command line (exit status 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// run runs the command line args and returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, usage)
		return 2
	}
	name, args := args[0], args[1:]
	switch name {
	case "help", "-h", "-help", "--help":
		if len(args) == 0 {
			fmt.Fprintln(stdout, usage)
			return 0
		}
		name, args = args[0], []string{"-h"}
	}
	c, ok := commands[name]
	if !ok {
		fmt.Fprintf(stderr, "styx-pki: unknown command %q (styx-pki help lists them)\n", name)
		return 2
	}
	fs := flag.NewFlagSet("styx-pki "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {} // printed below, once
	exec := c.setup(fs)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fmt.Fprintf(stdout, "%s\n\nFlags:\n", c.usage)
			fs.PrintDefaults()
			return 0
		}
		fmt.Fprintf(stderr, "run 'styx-pki %s -h' for its usage\n", name)
		return 2
	}
	err = exec(ctx, pos, stdout)
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "styx-pki %s: %v (styx-pki %s -h for its usage)\n", name, err, name)
		return 2
	default:
		fmt.Fprintf(stderr, "styx-pki %s: %v\n", name, err)
		return 1
	}
}

// parseInterspersed parses flags that may come after arguments too
// ("ensure ROLE/ID --dns-id") and returns the arguments.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos, args = append(pos, args[0]), args[1:]
	}
}

// listFlag is a comma-separated list; the flag may also be repeated.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(s string) error {
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*l = append(*l, v)
		}
	}
	return nil
}

// ipFlag is a comma-separated list of IP addresses.
type ipFlag []net.IP

func (l *ipFlag) String() string {
	s := make([]string, len(*l))
	for i, ip := range *l {
		s[i] = ip.String()
	}
	return strings.Join(s, ",")
}

func (l *ipFlag) Set(s string) error {
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v == "" {
			continue
		}
		ip := net.ParseIP(v)
		if ip == nil {
			return fmt.Errorf("%q is not an IP address", v)
		}
		*l = append(*l, ip)
	}
	return nil
}

// parseIdentity reads ROLE/ID, or an identity URI spiffe://styx/ROLE/ID.
func parseIdentity(s string) (pki.Identity, error) {
	if strings.HasPrefix(s, "spiffe:") {
		u, err := url.Parse(s)
		if err != nil {
			return pki.Identity{}, usagef("identity %q: %v", s, err)
		}
		id, err := pki.ParseURI(u)
		if err != nil {
			return pki.Identity{}, usageError{err.Error()}
		}
		return id, nil
	}
	role, id, ok := strings.Cut(s, "/")
	if !ok {
		return pki.Identity{}, usagef("identity %q: want ROLE/ID, for example worker/host1", s)
	}
	ident, err := pki.NewIdentity(role, id)
	if err != nil {
		return pki.Identity{}, usagef("identity %q: %v", s, err)
	}
	return ident, nil
}

// identityFlags reads one identity from --role and --id, or from
// arguments ROLE/ID; at least one.
func identityFlags(role, id string, args []string) ([]pki.Identity, error) {
	var out []pki.Identity
	switch {
	case role != "" && id != "":
		ident, err := pki.NewIdentity(role, id)
		if err != nil {
			return nil, usageError{err.Error()}
		}
		out = append(out, ident)
	case role != "" || id != "":
		return nil, usagef("give --role and --id together")
	}
	for _, a := range args {
		ident, err := parseIdentity(a)
		if err != nil {
			return nil, err
		}
		out = append(out, ident)
	}
	if len(out) == 0 {
		return nil, usagef("no identity: give --role ROLE --id ID, or ROLE/ID arguments")
	}
	return out, nil
}
