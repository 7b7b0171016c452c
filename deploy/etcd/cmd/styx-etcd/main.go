// Command styx-etcd is etcd, built from the etcd module this repository
// already depends on, so that the compose deployment can run etcd from a
// static binary on a FROM scratch image (no image is pulled).
//
//	styx-etcd [etcd flags]          run an etcd member (etcdmain.Main)
//	styx-etcd healthcheck [--http-addr A] exit 0 when the member at A (default
//	                                      127.0.0.1:2379) answers /health
//
// etcd reads its own ETCD_* environment variables; STYX_* ones do not apply.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"

	"github.com/styx-inference/styx/pkg/healthcheck"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "healthcheck" {
		os.Exit(healthcheck.Main("styx-etcd", os.Args[2:], "127.0.0.1:2379", "/health", os.Stderr))
	}
	etcdmain.Main(os.Args)
}
