package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/styx-inference/styx/pkg/pki"
)

const day = 24 * time.Hour

const initUsage = `styx-pki init --dir ROOT [--name NAME] [--ca-days 1825]

Makes a certificate authority in ROOT/ca: ca.crt (the certificate every
process trusts) and ca.key (mode 0600: whoever holds it can issue any
identity; keep it on the machine that issues, nowhere else). An existing CA
is never overwritten.

Example:
  styx-pki init --dir /etc/styx/pki --name "STYX CA (production)"`

func initCmd(fs *flag.FlagSet) func(context.Context, []string, io.Writer) error {
	dir := fs.String("dir", "", "PKI root directory (required); the CA goes to ROOT/ca")
	name := fs.String("name", "STYX CA", "the CA's name (its certificate's common name)")
	days := fs.Int("ca-days", int(pki.DefaultCALifetime/day), "the CA's lifetime in days; every certificate it issues expires before it")
	return func(_ context.Context, args []string, stdout io.Writer) error {
		if err := noArgs(args); err != nil {
			return err
		}
		if *dir == "" {
			return usagef("--dir is required")
		}
		if *days <= 0 {
			return usagef("--ca-days %d: want a positive number of days", *days)
		}
		ca, err := initCA(*dir, *name, time.Duration(*days)*day, time.Now())
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "CA %q in %s, valid until %s\n", ca.Cert.Subject.CommonName, pki.CADir(*dir), ca.Cert.NotAfter.UTC().Format(time.RFC3339))
		fmt.Fprintf(stdout, "keep %s secret: whoever holds it can issue any identity\n", filepath.Join(pki.CADir(*dir), pki.CAKeyFile))
		return nil
	}
}

// initCA makes a CA in root/ca, refusing when either of its files exists.
func initCA(root, name string, lifetime time.Duration, now time.Time) (*pki.CA, error) {
	dir := pki.CADir(root)
	for _, f := range []string{pki.CAFile, pki.CAKeyFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			return nil, fmt.Errorf("%s exists: a CA is never overwritten (styx-pki show %s prints it)", filepath.Join(dir, f), dir)
		}
	}
	ca, err := pki.NewCA(name, lifetime, now)
	if err != nil {
		return nil, err
	}
	if err := ca.Save(dir); err != nil {
		return nil, err
	}
	return ca, nil
}

// loadCA loads root's CA, saying how to make one when there is none.
func loadCA(root string) (*pki.CA, error) {
	ca, err := pki.LoadCA(pki.CADir(root))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no CA in %s (%v): run styx-pki init --dir %s first", pki.CADir(root), err, root)
	}
	return ca, err
}

const issueUsage = `styx-pki issue --dir ROOT --role ROLE --id ID [--days 30] [--dns a,b] [--ip x,y] [--out DIR]

Issues the certificate of identity spiffe://styx/ROLE/ID (ECDSA P-256,
serverAuth and clientAuth, common name ROLE:ID, which etcd takes as the user
name) and writes its identity directory: DIR, by default ROOT/ROLE-ID, with
ca.crt, tls.crt and tls.key (0600). Running it again renews the certificate
in place, with a new key: each file is replaced atomically, and a process
using the directory picks the new certificate up within a second, on its
next handshake. A directory holding another identity's certificate is left
alone.

Roles: scheduler, worker, node, admin, trainer, etcd, nats. IDs are letters,
digits and - _ . : (at most 128). A worker's id is its host's: worker/<host>
proves the ids <host>-numa<N> that the host's NUMA-pinned workers register,
and names a worker that is not pinned. A node's id is the one it registers,
an etcd server's its member name, a NATS server's its server name.

STYX processes check the identity of their peers, not host names. Add the
DNS names and IP addresses that other clients use (etcdctl, grpcurl,
browsers, etcd's own peers) with --dns and --ip.

Examples:
  styx-pki issue --dir /etc/styx/pki --role worker --id host1
  styx-pki issue --dir /etc/styx/pki --role etcd --id etcd-1 --dns etcd-1.example,localhost --ip 10.0.0.5,127.0.0.1
  styx-pki issue --dir /etc/styx/pki --role admin --id alice --days 7 --out ~/.styx/pki`

func issueCmd(fs *flag.FlagSet) func(context.Context, []string, io.Writer) error {
	dir := fs.String("dir", "", "PKI root directory holding the CA in ROOT/ca (required)")
	role := fs.String("role", "", "the identity's role: scheduler, worker, node, admin, trainer, etcd or nats (required)")
	id := fs.String("id", "", "the identity's id (required)")
	days := fs.Int("days", int(pki.DefaultLifetime/day), "lifetime in days")
	var dns listFlag
	var ips ipFlag
	fs.Var(&dns, "dns", "DNS names to add as SANs, comma-separated")
	fs.Var(&ips, "ip", "IP addresses to add as SANs, comma-separated")
	out := fs.String("out", "", "identity directory to write (default ROOT/ROLE-ID)")
	return func(_ context.Context, args []string, stdout io.Writer) error {
		if err := noArgs(args); err != nil {
			return err
		}
		if *dir == "" {
			return usagef("--dir is required")
		}
		if *role == "" || *id == "" {
			return usagef("--role and --id are required")
		}
		ident, err := pki.NewIdentity(*role, *id)
		if err != nil {
			return usageError{err.Error()}
		}
		if *days <= 0 {
			return usagef("--days %d: want a positive number of days", *days)
		}
		ca, err := loadCA(*dir)
		if err != nil {
			return err
		}
		target := *out
		if target == "" {
			target = pki.IdentityDir(*dir, ident)
		}
		is, renewed, err := issueInto(ca, target, ident, pki.IssueOptions{Lifetime: time.Duration(*days) * day, DNSNames: dns, IPs: ips})
		if err != nil {
			return err
		}
		verb := "issued"
		if renewed {
			verb = "renewed"
		}
		fmt.Fprintf(stdout, "%s %s in %s, serial %s, valid until %s\n", verb, ident, target, serialHex(is.Cert), is.Cert.NotAfter.UTC().Format(time.RFC3339))
		return nil
	}
}

// issueInto issues id's certificate into dir; renewed reports a
// certificate of id that was there before. A directory holding another
// identity's certificate is refused.
func issueInto(ca *pki.CA, dir string, id pki.Identity, o pki.IssueOptions) (is *pki.Issued, renewed bool, err error) {
	if b, err := os.ReadFile(filepath.Join(dir, pki.CertFile)); err == nil {
		certs, err := pki.ParseCertificates(b)
		if err != nil {
			return nil, false, fmt.Errorf("%s: %w; remove it to issue anew", filepath.Join(dir, pki.CertFile), err)
		}
		had, err := pki.FromCert(certs[0])
		if err != nil || had != id {
			return nil, false, fmt.Errorf("%s holds the certificate of %s, not %s: give another directory", dir, describe(had, err), id)
		}
		renewed = true
	}
	if is, err = ca.Issue(id, o); err != nil {
		return nil, false, fmt.Errorf("issue %s: %w", id, err)
	}
	if err := is.WriteDir(dir, ca.CertPEM); err != nil {
		return nil, false, err
	}
	return is, renewed, nil
}

func describe(id pki.Identity, err error) string {
	if err != nil {
		return "no STYX identity"
	}
	return id.String()
}

const ensureUsage = `styx-pki ensure --dir ROOT [--name NAME] [--days 30] [--dns-id] [--dns a,b] [--ip x,y] [--owner UID:GID] ROLE/ID...

Makes the CA in ROOT/ca unless there is one, then issues each identity
ROLE/ID into ROOT/ROLE-ID unless a certificate of this CA for it is there
with more than a third of its lifetime left. Running it again changes
nothing until a certificate is due, then renews it in place (running
processes pick it up). It is what a deployment's one-shot PKI step runs.

--dns-id adds each identity's id as a DNS name (when ids are also host
names, as the service names of deploy/compose). --owner gives the identity
directories and their files to UID:GID (a PKI written by root for services
that run as another user); the CA stays with the user running ensure.

Example:
  styx-pki ensure --dir /var/lib/styx-pki --dns-id --owner 65534:65534 \
    etcd/etcd-1 nats/nats-1 scheduler/scheduler-a worker/worker-1 node/node-a admin/admin`

func ensureCmd(fs *flag.FlagSet) func(context.Context, []string, io.Writer) error {
	dir := fs.String("dir", "", "PKI root directory (required)")
	name := fs.String("name", "STYX CA", "the CA's name, when ensure makes it")
	caDays := fs.Int("ca-days", int(pki.DefaultCALifetime/day), "the CA's lifetime in days, when ensure makes it")
	days := fs.Int("days", int(pki.DefaultLifetime/day), "lifetime in days of the certificates issued")
	dnsID := fs.Bool("dns-id", false, "add each identity's id as a DNS name SAN")
	var dns listFlag
	var ips ipFlag
	fs.Var(&dns, "dns", "DNS names to add as SANs to every certificate issued, comma-separated")
	fs.Var(&ips, "ip", "IP addresses to add as SANs to every certificate issued, comma-separated")
	owner := fs.String("owner", "", "UID:GID to own the identity directories and their files (numeric)")
	return func(_ context.Context, args []string, stdout io.Writer) error {
		if *dir == "" {
			return usagef("--dir is required")
		}
		if *days <= 0 || *caDays <= 0 {
			return usagef("--days and --ca-days want a positive number of days")
		}
		uid, gid := -1, -1
		if *owner != "" {
			var err error
			if uid, gid, err = parseOwner(*owner); err != nil {
				return err
			}
		}
		if len(args) == 0 {
			return usagef("no identity: give ROLE/ID arguments")
		}
		var ids []pki.Identity
		for _, a := range args {
			id, err := parseIdentity(a)
			if err != nil {
				return err
			}
			ids = append(ids, id)
		}
		ca, created, err := pki.InitRoot(*dir, *name, time.Duration(*caDays)*day)
		if err != nil {
			return err
		}
		if created {
			fmt.Fprintf(stdout, "made CA %q in %s, valid until %s\n", *name, pki.CADir(*dir), ca.Cert.NotAfter.UTC().Format(time.RFC3339))
		}
		for _, id := range ids {
			o := pki.IssueOptions{Lifetime: time.Duration(*days) * day, DNSNames: dns, IPs: ips}
			if *dnsID {
				o.DNSNames = append([]string{id.ID}, dns...)
			}
			d, issued, err := pki.EnsureIdentity(*dir, ca, id, o)
			if err != nil {
				return err
			}
			if uid >= 0 {
				if err := chownDir(d, uid, gid); err != nil {
					return err
				}
			}
			if issued {
				fmt.Fprintf(stdout, "issued %s in %s\n", id, d)
			} else {
				fmt.Fprintf(stdout, "kept %s in %s\n", id, d)
			}
		}
		return nil
	}
}

func parseOwner(s string) (uid, gid int, err error) {
	u, g, ok := strings.Cut(s, ":")
	if ok {
		if uid, err = strconv.Atoi(u); err == nil {
			gid, err = strconv.Atoi(g)
		}
	}
	if !ok || err != nil || uid < 0 || gid < 0 {
		return 0, 0, usagef("--owner %q: want numeric UID:GID, for example 65534:65534", s)
	}
	return uid, gid, nil
}

// chownDir gives an identity directory and its files to uid:gid.
func chownDir(dir string, uid, gid int) error {
	for _, p := range []string{dir, filepath.Join(dir, pki.CAFile), filepath.Join(dir, pki.CertFile), filepath.Join(dir, pki.KeyFile)} {
		if err := os.Chown(p, uid, gid); err != nil {
			return err
		}
	}
	return nil
}

const trustUsage = `styx-pki trust --dir ROOT [--add FILE]... [--only-own]

Sets the CAs that ROOT's identities trust, and rewrites ROOT/ca/ca.crt and
the ca.crt of every identity directory in ROOT with them, atomically
(running processes pick it up within a second). ROOT's own CA is always
first: it signs what 'issue' and 'ensure' issue. --add appends the
certificates of a PEM file (another CA's ca.crt); --only-own drops every CA
but ROOT's own. Copy ROOT/ca/ca.crt to identity directories kept elsewhere.

A CA rotation, with OLD the current root and NEW a new one:
  styx-pki init  --dir NEW --name "STYX CA 2"
  styx-pki trust --dir OLD --add NEW/ca/ca.crt    # 1. everyone trusts both
  styx-pki trust --dir NEW --add OLD/ca/ca.crt
  styx-pki issue --dir NEW ...                    # 2. re-issue every identity from NEW
  styx-pki trust --dir NEW --only-own             # 3. drop OLD`

func trustCmd(fs *flag.FlagSet) func(context.Context, []string, io.Writer) error {
	dir := fs.String("dir", "", "PKI root directory (required)")
	var add listFlag
	fs.Var(&add, "add", "PEM file of CA certificates to trust as well (repeatable)")
	only := fs.Bool("only-own", false, "trust ROOT's own CA only")
	return func(_ context.Context, args []string, stdout io.Writer) error {
		if err := noArgs(args); err != nil {
			return err
		}
		if *dir == "" {
			return usagef("--dir is required")
		}
		if *only && len(add) > 0 {
			return usagef("--add and --only-own exclude each other")
		}
		if !*only && len(add) == 0 {
			return usagef("give --add FILE or --only-own")
		}
		cas, dirs, err := setTrust(*dir, add, *only)
		if err != nil {
			return err
		}
		for _, c := range cas {
			fmt.Fprintf(stdout, "trusted: %s (serial %s, until %s)\n", c.Subject.CommonName, serialHex(c), c.NotAfter.UTC().Format(time.RFC3339))
		}
		fmt.Fprintf(stdout, "rewrote %s and the ca.crt of %d identity directories\n", filepath.Join(pki.CADir(*dir), pki.CAFile), dirs)
		return nil
	}
}

// setTrust rewrites root's trust bundle: its own CA first, then the
// others it held (unless only), then those in the files of add.
func setTrust(root string, add []string, only bool) ([]*x509.Certificate, int, error) {
	ca, err := loadCA(root)
	if err != nil {
		return nil, 0, err
	}
	cur, err := pki.ParseCertificates(ca.CertPEM)
	if err != nil {
		return nil, 0, err
	}
	bundle := []*x509.Certificate{ca.Cert}
	if !only {
		bundle = append(bundle, cur[1:]...)
	}
	for _, f := range add {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, 0, err
		}
		certs, err := pki.ParseCertificates(b)
		if err != nil {
			return nil, 0, fmt.Errorf("%s: %w", f, err)
		}
		for _, c := range certs {
			if !c.IsCA {
				return nil, 0, fmt.Errorf("%s: %s is not a CA certificate", f, c.Subject.CommonName)
			}
			bundle = append(bundle, c)
		}
	}
	var pemBytes []byte
	var kept []*x509.Certificate
	for _, c := range bundle {
		dup := false
		for _, k := range kept {
			dup = dup || bytes.Equal(k.Raw, c.Raw)
		}
		if !dup {
			kept = append(kept, c)
			pemBytes = append(pemBytes, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
		}
	}
	// Identity directories first, the root's bundle last: a failure
	// half-way leaves the root as it was, and running trust again finishes.
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, 0, err
	}
	n := 0
	for _, e := range entries {
		d := filepath.Join(root, e.Name())
		if !e.IsDir() || d == pki.CADir(root) {
			continue
		}
		if _, err := os.Stat(filepath.Join(d, pki.CertFile)); err != nil {
			continue
		}
		if err := pki.WriteFile(filepath.Join(d, pki.CAFile), pemBytes, 0o644); err != nil {
			return nil, 0, err
		}
		n++
	}
	if err := pki.WriteFile(filepath.Join(pki.CADir(root), pki.CAFile), pemBytes, 0o644); err != nil {
		return nil, 0, err
	}
	return kept, n, nil
}

func noArgs(args []string) error {
	if len(args) > 0 {
		return usagef("unexpected arguments %q", args)
	}
	return nil
}

func serialHex(c *x509.Certificate) string { return fmt.Sprintf("%x", c.SerialNumber) }
