package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/styx-inference/styx/pkg/envflag"
	"github.com/styx-inference/styx/pkg/etcdauth"
	"github.com/styx-inference/styx/pkg/pki"
)

const etcdNote = `It connects to etcd with mutual TLS as the admin whose identity directory
--pki-dir names; once etcd authentication is on, only an admin may change
users. --etcd-endpoints and --pki-dir default to STYX_ETCD_ENDPOINTS and
STYX_PKI_DIR.`

const grantUsage = `styx-pki grant --etcd-endpoints ENDPOINTS --pki-dir ADMIN_DIR (--role ROLE --id ID | ROLE/ID...)

Creates, or updates, the etcd user of each identity and its role, which
grants only what that identity may do: a worker writes /styx/workers/<id>
(and <id>-numa<N>), a node /styx/nodes/<id>, schedulers campaign and write
/styx/config/, trainers publish models, admins hold etcd's root role (docs/operations.md, "Certificates and trust").
etcd names the user of a client certificate by its common name, ROLE:ID.
Grant a new host's identities before its processes start: etcd refuses a
process without its user, and a worker that cannot register gets no work.

` + etcdNote + `

Examples:
  styx-pki grant --etcd-endpoints 10.0.0.5:2379,10.0.0.6:2379 --pki-dir ~/.styx/admin worker/host4 node/node-c
  styx-pki grant --etcd-endpoints etcd-1:2379 --pki-dir /etc/styx/pki/admin-ops --role trainer --id trainer`

const revokeUsage = `styx-pki revoke --etcd-endpoints ENDPOINTS --pki-dir ADMIN_DIR (--role ROLE --id ID | ROLE/ID...)

Deletes the etcd user and role of each identity: etcd refuses it from then
on. There is no revocation list: the certificate itself stays valid for
gRPC and NATS until it expires (30 days by default). A revoked worker
cannot register in etcd, so no scheduler sends it work; a revoked node
cannot register either. Stop the host's processes, delete its identity
directory, and let the certificate expire; or, at once, rotate the CA
(docs/operations.md, "Certificates and trust").

` + etcdNote + `

Example:
  styx-pki revoke --etcd-endpoints 10.0.0.5:2379 --pki-dir ~/.styx/admin worker/host4`

const enableUsage = `styx-pki etcd-enable --etcd-endpoints ENDPOINTS --pki-dir ADMIN_DIR [--admin NAME[,NAME]] [ROLE/ID...]

Grants each identity listed (as grant does), then creates etcd's root user
and the users of the admins, and turns authentication on. From then on etcd
serves a client only as the user its certificate names, with that user's
permissions. The admin of --pki-dir is always one of the admins. Running it
again changes nothing that is already so. Grant before enabling: every
process without its user is refused once authentication is on.

etcd must require client certificates of the cluster's CA, or anyone
could claim a user: styx-etcd --pki-dir does (etcd's --client-cert-auth
and --trusted-ca-file).

` + etcdNote + `

Example:
  styx-pki etcd-enable --etcd-endpoints etcd-1:2379 --pki-dir /etc/styx/pki/admin-ops --admin ops,alice \
    scheduler/sched-1 worker/host1 node/node-a trainer/trainer`

// etcdFlags are the flags of the commands that talk to etcd.
type etcdFlags struct {
	fs        *flag.FlagSet
	endpoints listFlag
	dir       string
	timeout   time.Duration
	role, id  string
}

func registerEtcd(fs *flag.FlagSet, identity bool) *etcdFlags {
	f := &etcdFlags{fs: fs}
	fs.Var(&f.endpoints, "etcd-endpoints", "etcd endpoints, comma-separated host:port (or https:// URLs)")
	fs.Var(&f.endpoints, "etcd", "the same as --etcd-endpoints")
	fs.StringVar(&f.dir, "pki-dir", "", "an admin's identity directory (ca.crt, tls.crt, tls.key)")
	fs.DurationVar(&f.timeout, "timeout", 30*time.Second, "give up after this long")
	if identity {
		fs.StringVar(&f.role, "role", "", "the role of one identity (with --id)")
		fs.StringVar(&f.id, "id", "", "the id of one identity (with --role)")
	}
	return f
}

// connect fills the flags from the environment and dials etcd as the
// admin of --pki-dir.
func (f *etcdFlags) connect(ctx context.Context) (*clientv3.Client, pki.Identity, error) {
	only := func(name string) (string, bool) {
		if name == "STYX_ETCD_ENDPOINTS" || name == "STYX_PKI_DIR" {
			return os.LookupEnv(name)
		}
		return "", false
	}
	if err := envflag.Apply(f.fs, "STYX", only); err != nil {
		return nil, pki.Identity{}, usageError{err.Error()}
	}
	if len(f.endpoints) == 0 {
		return nil, pki.Identity{}, usagef("no etcd: give --etcd-endpoints (or STYX_ETCD_ENDPOINTS)")
	}
	if f.dir == "" {
		return nil, pki.Identity{}, usagef("no identity: give --pki-dir with an admin's identity directory (or STYX_PKI_DIR)")
	}
	src, err := pki.Load(f.dir, zerolog.Nop())
	if err != nil {
		return nil, pki.Identity{}, err
	}
	me := src.Identity()
	if me.Role != pki.Admin {
		return nil, pki.Identity{}, fmt.Errorf("%s holds the identity %s: etcd users are managed by an admin's", f.dir, me)
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   f.endpoints,
		DialTimeout: 5 * time.Second,
		TLS:         src.ClientConfig(pki.AnyOf(pki.Etcd)),
		Logger:      zap.NewNop(),
		Context:     ctx,
	})
	if err != nil {
		return nil, pki.Identity{}, fmt.Errorf("etcd client: %w", err)
	}
	return cli, me, nil
}

// withClient runs fn with an etcd client authenticated as the --pki-dir
// identity (me), within --timeout.
func (f *etcdFlags) withClient(ctx context.Context, fn func(ctx context.Context, cli *clientv3.Client, me pki.Identity) error) error {
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	cli, me, err := f.connect(ctx)
	if err != nil {
		return err
	}
	defer cli.Close()
	return fn(ctx, cli, me)
}

func grantCmd(fs *flag.FlagSet) func(context.Context, []string, io.Writer) error {
	f := registerEtcd(fs, true)
	return func(ctx context.Context, args []string, stdout io.Writer) error {
		ids, err := identityFlags(f.role, f.id, args)
		if err != nil {
			return err
		}
		return f.withClient(ctx, func(ctx context.Context, cli *clientv3.Client, _ pki.Identity) error {
			return grant(ctx, cli, ids, stdout)
		})
	}
}

func grant(ctx context.Context, cli *clientv3.Client, ids []pki.Identity, stdout io.Writer) error {
	for _, id := range ids {
		if err := etcdauth.Grant(ctx, cli, id); err != nil {
			return fmt.Errorf("grant %s: %w", id, err)
		}
		fmt.Fprintf(stdout, "granted %s (etcd user %s)\n", id, id.CommonName())
	}
	return nil
}

func revokeCmd(fs *flag.FlagSet) func(context.Context, []string, io.Writer) error {
	f := registerEtcd(fs, true)
	return func(ctx context.Context, args []string, stdout io.Writer) error {
		ids, err := identityFlags(f.role, f.id, args)
		if err != nil {
			return err
		}
		return f.withClient(ctx, func(ctx context.Context, cli *clientv3.Client, me pki.Identity) error {
			for _, id := range ids {
				if id == me {
					return fmt.Errorf("refusing to revoke %s: it is the identity this command runs as", id)
				}
				if err := etcdauth.Revoke(ctx, cli, id); err != nil {
					return fmt.Errorf("revoke %s: %w", id, err)
				}
				fmt.Fprintf(stdout, "revoked %s: etcd refuses user %s from now on\n", id, id.CommonName())
			}
			fmt.Fprintln(stdout, "the certificates stay valid for gRPC and NATS until they expire (there is no revocation list); see styx-pki revoke -h")
			return nil
		})
	}
}

func enableCmd(fs *flag.FlagSet) func(context.Context, []string, io.Writer) error {
	f := registerEtcd(fs, false)
	var admins listFlag
	fs.Var(&admins, "admin", "ids of the admins (admin/<id> identities), comma-separated; the --pki-dir admin is always one")
	return func(ctx context.Context, args []string, stdout io.Writer) error {
		var ids []pki.Identity
		for _, a := range args {
			id, err := parseIdentity(a)
			if err != nil {
				return err
			}
			ids = append(ids, id)
		}
		var adm []pki.Identity
		for _, a := range admins {
			id, err := pki.NewIdentity(string(pki.Admin), strings.TrimPrefix(a, "admin/"))
			if err != nil {
				return usagef("--admin %q: %v", a, err)
			}
			adm = append(adm, id)
		}
		return f.withClient(ctx, func(ctx context.Context, cli *clientv3.Client, me pki.Identity) error {
			if !slices.Contains(adm, me) {
				adm = append(adm, me)
			}
			if err := grant(ctx, cli, ids, stdout); err != nil {
				return err
			}
			if err := etcdauth.Enable(ctx, cli, adm...); err != nil {
				return fmt.Errorf("enable etcd authentication: %w", err)
			}
			names := make([]string, len(adm))
			for i, a := range adm {
				names[i] = a.CommonName()
			}
			fmt.Fprintf(stdout, "etcd authentication is on; admins: %s\n", strings.Join(names, ", "))
			return nil
		})
	}
}
