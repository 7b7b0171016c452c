package etcdauth

import (
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/styx-inference/styx/pkg/keyspace"
	"github.com/styx-inference/styx/pkg/pki"
)

// Access is what a permission allows on its keys.
type Access int

// The accesses. ReadWrite includes Read.
const (
	Read Access = iota + 1
	ReadWrite
)

func (a Access) String() string {
	switch a {
	case Read:
		return "read"
	case ReadWrite:
		return "readwrite"
	}
	return fmt.Sprintf("Access(%d)", int(a))
}

func (a Access) permType() clientv3.PermissionType {
	if a == ReadWrite {
		return clientv3.PermissionType(clientv3.PermReadWrite)
	}
	return clientv3.PermissionType(clientv3.PermRead)
}

// Permission is one entry of an etcd role: Access on the key Key, or on
// every key that starts with Key when Prefix is set.
type Permission struct {
	Access Access
	Key    string
	Prefix bool
}

// RangeEnd is the permission's range end as etcd stores it: empty for a
// single key.
func (p Permission) RangeEnd() string {
	if p.Prefix {
		return clientv3.GetPrefixRangeEnd(p.Key)
	}
	return ""
}

func (p Permission) String() string {
	if p.Prefix {
		return p.Access.String() + " prefix " + p.Key
	}
	return p.Access.String() + " key " + p.Key
}

// RootRole is etcd's superuser role, which admins hold.
const RootRole = "root"

// rootUser is the user etcd requires before it turns authentication on.
const rootUser = "root"

// UserName is id's etcd user name: its certificate's CN.
func UserName(id pki.Identity) string { return id.CommonName() }

// IsRoot reports whether id holds etcd's root role (admins).
func IsRoot(id pki.Identity) bool { return id.Role == pki.Admin }

// Permissions lists what id may do in etcd, in the order Grant grants it.
// It is nil for admins, who hold the root role instead (see IsRoot), and
// for identities with no etcd access (etcd and nats servers).
func Permissions(id pki.Identity) []Permission {
	readAll := Permission{Access: Read, Key: keyspace.Root, Prefix: true}
	switch id.Role {
	case pki.Scheduler:
		return []Permission{
			readAll,
			{Access: ReadWrite, Key: keyspace.LeaderPrefix, Prefix: true},
			{Access: ReadWrite, Key: keyspace.ConfigPrefix, Prefix: true},
		}
	case pki.Worker:
		return []Permission{
			readAll,
			{Access: ReadWrite, Key: keyspace.WorkerKey(id.ID)},
			{Access: ReadWrite, Key: keyspace.CanaryKey(id.ID)},
			// The NUMA children a host's supervisor starts register as
			// <id>-numa<N> under the host's certificate (pki.ProvesWorker).
			{Access: ReadWrite, Key: keyspace.WorkerKey(id.ID + "-numa"), Prefix: true},
			{Access: ReadWrite, Key: keyspace.CanaryKey(id.ID + "-numa"), Prefix: true},
		}
	case pki.Node:
		return []Permission{
			readAll,
			{Access: ReadWrite, Key: keyspace.NodeKey(id.ID)},
		}
	case pki.Trainer:
		return []Permission{
			readAll,
			{Access: ReadWrite, Key: keyspace.ModelCurrent},
			{Access: ReadWrite, Key: keyspace.ModelBlobs, Prefix: true},
		}
	}
	return nil
}

// hasAccess reports whether id may use etcd at all.
func hasAccess(id pki.Identity) bool { return IsRoot(id) || len(Permissions(id)) > 0 }
