package dev

import (
	"context"
	"fmt"
	"io"
	"net"
	"path/filepath"

	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/styx-inference/styx/pkg/embedetcd"
	"github.com/styx-inference/styx/pkg/etcdauth"
	"github.com/styx-inference/styx/pkg/pki"
)

// Identities of the dev cluster.
var (
	devEtcd    = pki.Identity{Role: pki.Etcd, ID: "dev-etcd"}
	devNATS    = pki.Identity{Role: pki.NATS, ID: "dev-nats"}
	devAdmin   = pki.Identity{Role: pki.Admin, ID: "dev-admin"}
	devTrainer = pki.Identity{Role: pki.Trainer, ID: "dev-trainer"}
	devSched   = pki.Identity{Role: pki.Scheduler, ID: "dev-scheduler"}
)

// devPKI is the dev cluster's throwaway CA and identity directories under
// <data-dir>/pki (nil with --insecure).
type devPKI struct {
	root string
	dirs map[pki.Identity]string
}

// makePKI makes the CA (once per data directory) and an identity for each
// process, with loopback SANs so that etcdctl, grpcurl and curl accept the
// servers' certificates too.
func makePKI(root string, ids []pki.Identity) (*devPKI, error) {
	ca, _, err := pki.InitRoot(root, "STYX dev CA", 0)
	if err != nil {
		return nil, fmt.Errorf("dev CA: %w", err)
	}
	p := &devPKI{root: root, dirs: map[pki.Identity]string{}}
	opts := pki.IssueOptions{DNSNames: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}}
	for _, id := range ids {
		dir, _, err := pki.EnsureIdentity(root, ca, id, opts)
		if err != nil {
			return nil, err
		}
		p.dirs[id] = dir
	}
	return p, nil
}

// flag is the trust flag of a child with identity id.
func (p *devPKI) flag(id pki.Identity) string {
	if p == nil {
		return "--insecure"
	}
	return "--pki-dir=" + p.dirs[id]
}

// source loads id's identity.
func (p *devPKI) source(id pki.Identity) (*pki.Source, error) {
	if p == nil {
		return nil, nil
	}
	return pki.Load(p.dirs[id], zerolog.Nop())
}

// grantAll gives every identity its etcd permissions and turns etcd's
// authentication on (idempotent: a data directory that has it on already
// is granted again by the admin, who holds the root role).
func (p *devPKI) grantAll(ctx context.Context, etcd *embedetcd.Server, ids []pki.Identity) error {
	admin, err := p.source(devAdmin)
	if err != nil {
		return err
	}
	cli, err := etcd.ClientAs(admin)
	if err != nil {
		return err
	}
	defer cli.Close()
	return grant(ctx, cli, ids)
}

func grant(ctx context.Context, cli *clientv3.Client, ids []pki.Identity) error {
	for _, id := range ids {
		switch id.Role {
		case pki.Etcd, pki.NATS, pki.Admin:
			continue
		}
		if err := etcdauth.Grant(ctx, cli, id); err != nil {
			return fmt.Errorf("etcd permissions of %s: %w", id, err)
		}
	}
	return etcdauth.Enable(ctx, cli, devAdmin)
}

// printTrust prints the CA and the command lines that work with the dev
// certificates.
func (p *devPKI) printTrust(out io.Writer, etcdEndpoint, schedGRPC string) {
	if p == nil {
		fmt.Fprintln(out, "trust       NONE: --insecure, plaintext with no authentication on every hop")
		return
	}
	a := p.dirs[devAdmin]
	ca, cert, key := filepath.Join(a, pki.CAFile), filepath.Join(a, pki.CertFile), filepath.Join(a, pki.KeyFile)
	fmt.Fprintf(out, "trust       mutual TLS on every hop; throwaway CA in %s, identities beside it\n", pki.CADir(p.root))
	fmt.Fprintf(out, "etcdctl     etcdctl --endpoints=https://%s --cacert=%s --cert=%s --key=%s get --prefix --keys-only /styx/\n", etcdEndpoint, ca, cert, key)
	fmt.Fprintf(out, "grpcurl     grpcurl -cacert %s -cert %s -key %s %s styx.v1.AdminService/Status\n", ca, cert, key, schedGRPC)
	fmt.Fprintf(out, "admin       STYX_PKI_DIR=%s styx-scheduler fleet workers --addr %s\n", a, schedGRPC)
}
