// Package etcdauth sets up etcd's role-based access for STYX identities
// and connects to etcd with one.
//
// etcd authenticates a client by its TLS certificate (the server runs with
// client certificate authentication) and takes the certificate's CN,
// "<role>:<id>", as the user name. Grant gives every identity a user of
// that name, without a password, and a role of the same name holding
// exactly the permissions of its role:
//
//	identity           read     read and write
//	scheduler/<id>     /styx/   /styx/leader/ (prefix: the election), /styx/config/ (prefix)
//	worker/<id>        /styx/   /styx/workers/<id>, /styx/models/canary/<id> (single keys)
//	node/<id>          /styx/   /styx/nodes/<id> (single key)
//	trainer/<id>       /styx/   /styx/models/current, /styx/models/blobs/ (prefix)
//	admin/<id>         etcd's root role: every key, and users and roles
//
// etcd and nats identities get no etcd user. Leases need no key
// permission to grant or keep alive; revoking one needs write permission
// on every key attached to it, which each identity has for the keys it
// attaches (its registration, a worker's canary report, a scheduler's
// election key). No identity's CN can be "root", the name of etcd's
// superuser, which Enable creates without a password: nobody logs in as
// it.
//
// Bootstrapping: with authentication still off, any client the server
// accepts may call Enable, naming the first admins. From then on Enable,
// Grant and Revoke need an admin's client.
package etcdauth
