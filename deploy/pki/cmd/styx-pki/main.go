// Command styx-pki is STYX's certificate authority on the command line: it
// makes the CA, issues and renews the certificate of each identity
// (spiffe://styx/<role>/<id>, ECDSA P-256, 30 days by default), shows what
// a certificate says, and gives identities their etcd users.
//
//	styx-pki init   --dir /etc/styx/pki --name "STYX CA"
//	styx-pki issue  --dir /etc/styx/pki --role worker --id host1
//	styx-pki show   /etc/styx/pki/worker-host1
//	styx-pki grant  --etcd-endpoints etcd-1:2379 --pki-dir /etc/styx/pki/admin-ops worker/host1
//
// `styx-pki help` prints the usage of every command.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
