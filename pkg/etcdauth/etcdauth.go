package etcdauth

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/authpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/styx-inference/styx/pkg/pki"
)

// Enable creates the root user (no password: nobody logs in as it) and
// the users of admins, with the root role, then turns authentication on.
// It is idempotent; once authentication is on, cli must be an admin's.
func Enable(ctx context.Context, cli *clientv3.Client, admins ...pki.Identity) error {
	for _, a := range admins {
		if !IsRoot(a) {
			return fmt.Errorf("etcdauth: enable: %s is not an admin", a)
		}
	}
	if err := ensureUser(ctx, cli, rootUser); err != nil {
		return fmt.Errorf("etcdauth: enable: %w", err)
	}
	if _, err := cli.UserGrantRole(ctx, rootUser, RootRole); err != nil {
		return fmt.Errorf("etcdauth: enable: grant %s to %s: %w", RootRole, rootUser, err)
	}
	for _, a := range admins {
		if err := Grant(ctx, cli, a); err != nil {
			return err
		}
	}
	// etcd ignores the request when authentication is already on.
	if _, err := cli.AuthEnable(ctx); err != nil {
		return fmt.Errorf("etcdauth: enable authentication: %w", err)
	}
	return nil
}

// Grant creates or updates id's etcd user, without a password, and gives
// it exactly the permissions of its role (Permissions): a role of the
// user's name holding those and no others, or etcd's root role for an
// admin. Any other role the user held is revoked. cli must be an admin's
// once authentication is on.
func Grant(ctx context.Context, cli *clientv3.Client, id pki.Identity) error {
	if _, err := pki.NewIdentity(string(id.Role), id.ID); err != nil {
		return fmt.Errorf("etcdauth: grant: %w", err)
	}
	if !hasAccess(id) {
		return fmt.Errorf("etcdauth: grant %s: role %s has no access to etcd", id, id.Role)
	}
	name := UserName(id)
	if err := ensureUser(ctx, cli, name); err != nil {
		return fmt.Errorf("etcdauth: grant %s: %w", id, err)
	}
	role := RootRole
	if !IsRoot(id) {
		role = name
		if err := ensureRole(ctx, cli, role, Permissions(id)); err != nil {
			return fmt.Errorf("etcdauth: grant %s: %w", id, err)
		}
	}
	if _, err := cli.UserGrantRole(ctx, name, role); err != nil {
		return fmt.Errorf("etcdauth: grant %s: role %s: %w", id, role, err)
	}
	u, err := cli.UserGet(ctx, name)
	if err != nil {
		return fmt.Errorf("etcdauth: grant %s: %w", id, err)
	}
	for _, r := range u.Roles {
		if r == role {
			continue
		}
		if _, err := cli.UserRevokeRole(ctx, name, r); err != nil && !errors.Is(err, rpctypes.ErrRoleNotGranted) {
			return fmt.Errorf("etcdauth: grant %s: revoke extra role %s: %w", id, r, err)
		}
	}
	return nil
}

// Revoke deletes id's etcd user and its role (for an admin, the user
// only). It is idempotent. Clients connected as id lose their access with
// their next request. Revoking the last admin leaves no one who can manage
// users: root has no password.
func Revoke(ctx context.Context, cli *clientv3.Client, id pki.Identity) error {
	name := UserName(id)
	if _, err := cli.UserDelete(ctx, name); err != nil && !errors.Is(err, rpctypes.ErrUserNotFound) {
		return fmt.Errorf("etcdauth: revoke %s: delete user: %w", id, err)
	}
	if _, err := cli.RoleDelete(ctx, name); err != nil && !errors.Is(err, rpctypes.ErrRoleNotFound) {
		return fmt.Errorf("etcdauth: revoke %s: delete role: %w", id, err)
	}
	return nil
}

// ensureUser adds a user without a password unless it exists.
func ensureUser(ctx context.Context, cli *clientv3.Client, name string) error {
	_, err := cli.UserAddWithOptions(ctx, name, "", &clientv3.UserAddOptions{NoPassword: true})
	if err != nil && !errors.Is(err, rpctypes.ErrUserAlreadyExist) {
		return fmt.Errorf("add user %s: %w", name, err)
	}
	return nil
}

// ensureRole makes role hold exactly perms.
func ensureRole(ctx context.Context, cli *clientv3.Client, role string, perms []Permission) error {
	if _, err := cli.RoleAdd(ctx, role); err != nil && !errors.Is(err, rpctypes.ErrRoleAlreadyExist) {
		return fmt.Errorf("add role %s: %w", role, err)
	}
	have, err := cli.RoleGet(ctx, role)
	if err != nil {
		return fmt.Errorf("role %s: %w", role, err)
	}
	type span struct{ key, end string }
	want := map[span]authpb.Permission_Type{}
	for _, p := range perms {
		want[span{p.Key, p.RangeEnd()}] = authpb.Permission_Type(p.Access.permType())
	}
	held := map[span]authpb.Permission_Type{}
	for _, p := range have.Perm {
		s := span{string(p.Key), string(p.RangeEnd)}
		held[s] = p.PermType
		if _, ok := want[s]; ok {
			continue
		}
		if _, err := cli.RoleRevokePermission(ctx, role, s.key, s.end); err != nil && !errors.Is(err, rpctypes.ErrPermissionNotGranted) {
			return fmt.Errorf("role %s: revoke %q..%q: %w", role, s.key, s.end, err)
		}
	}
	for _, p := range perms {
		s := span{p.Key, p.RangeEnd()}
		if t, ok := held[s]; ok && t == want[s] {
			continue
		}
		if _, err := cli.RoleGrantPermission(ctx, role, s.key, s.end, p.Access.permType()); err != nil {
			return fmt.Errorf("role %s: grant %s: %w", role, p, err)
		}
	}
	return nil
}
