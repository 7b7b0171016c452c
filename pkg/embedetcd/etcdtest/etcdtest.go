// Package etcdtest starts an embedded etcd for a test: on 127.0.0.1:0, in
// the test's temporary directory, with a client, both closed when the test
// ends. Start serves plaintext; StartSecure serves TLS with client
// certificates and etcd's authentication on, as a deployment does.
package etcdtest

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/styx-inference/styx/pkg/embedetcd"
	"github.com/styx-inference/styx/pkg/etcdauth"
	"github.com/styx-inference/styx/pkg/pki"
	"github.com/styx-inference/styx/pkg/pki/pkitest"
)

// Start starts etcd and returns it with a client; tb.Cleanup closes both.
func Start(tb testing.TB) (*embedetcd.Server, *clientv3.Client) {
	tb.Helper()
	srv, err := embedetcd.Start(embedetcd.Config{Dir: tb.TempDir(), ClientAddr: "127.0.0.1:0"})
	if err != nil {
		tb.Fatalf("embedded etcd: %v", err)
	}
	cli, err := srv.Client()
	if err != nil {
		srv.Close()
		tb.Fatalf("etcd client: %v", err)
	}
	tb.Cleanup(func() { cli.Close(); srv.Close() })
	return srv, cli
}

// Server is the identity StartSecure serves as; Admin is the admin whose
// client it returns.
var (
	Server = pki.Identity{Role: pki.Etcd, ID: "etcd-test"}
	Admin  = pki.Identity{Role: pki.Admin, ID: "etcd-test"}
)

// StartSecure starts etcd as Server, an identity of p, requiring client
// certificates of p's CA; turns authentication on with Admin as its admin
// (etcdauth.Enable); and returns the server with Admin's client.
// tb.Cleanup closes both. Give other identities their access with
// etcdauth.Grant on that client, then connect with srv.ClientAs.
func StartSecure(tb testing.TB, p *pkitest.PKI) (*embedetcd.Server, *clientv3.Client) {
	tb.Helper()
	srv, err := embedetcd.Start(embedetcd.Config{Dir: tb.TempDir(), ClientAddr: "127.0.0.1:0", PKIDir: p.Dir(tb, Server.Role, Server.ID)})
	if err != nil {
		tb.Fatalf("embedded etcd: %v", err)
	}
	tb.Cleanup(srv.Close)
	boot, err := srv.Client()
	if err != nil {
		tb.Fatalf("etcd client: %v", err)
	}
	defer boot.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := etcdauth.Enable(ctx, boot, Admin); err != nil {
		tb.Fatalf("etcd authentication: %v", err)
	}
	admin, err := srv.ClientAs(p.Source(tb, Admin.Role, Admin.ID))
	if err != nil {
		tb.Fatalf("etcd client: %v", err)
	}
	tb.Cleanup(func() { admin.Close() })
	return srv, admin
}
