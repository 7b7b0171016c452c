// Package etcdauth sets up etcd's role-based access for STYX identities:
// users named by certificate CN ("<role>:<id>"), one role each, granting
// only the keys that identity may write.
package etcdauth

import (
	"context"
	"errors"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/styx-inference/styx/pkg/pki"
)

// Enable creates the root user and the users and roles of admins, then
// turns authentication on. It is idempotent.
func Enable(ctx context.Context, cli *clientv3.Client, admins ...pki.Identity) error {
	return errors.New("etcdauth: not implemented")
}

// Grant creates (or updates) the etcd user and role of id.
func Grant(ctx context.Context, cli *clientv3.Client, id pki.Identity) error {
	return errors.New("etcdauth: not implemented")
}

// Revoke deletes the etcd user and role of id.
func Revoke(ctx context.Context, cli *clientv3.Client, id pki.Identity) error {
	return errors.New("etcdauth: not implemented")
}
