// Package etcdtest starts an embedded etcd for a test: on 127.0.0.1:0, in
// the test's temporary directory, with a client, both closed when the test
// ends.
package etcdtest

import (
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/styx-inference/styx/pkg/embedetcd"
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
