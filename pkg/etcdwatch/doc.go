// Package etcdwatch follows a key or a prefix in etcd without missing a
// change: it lists what is there, then watches from the next revision. A
// watch that breaks is resumed from the last revision seen; a watch whose
// revision was compacted away lists again and hands the handler the whole
// new listing, so it can drop what vanished in the gap. Failures are retried
// with a backoff that resets once etcd answers again; Prefix and Key return
// only when their context ends.
//
//	err := etcdwatch.Prefix(ctx, cli, keyspace.WorkersPrefix, etcdwatch.Handler{
//		Reset: func(kvs []*mvccpb.KeyValue, rev int64) {
//			// kvs is everything under the prefix at rev: add what is new,
//			// drop what is known but not listed.
//		},
//		Put:    func(kv *mvccpb.KeyValue) { /* created or changed */ },
//		Delete: func(kv *mvccpb.KeyValue) { /* deleted or expired */ },
//	}, log)
//
// The handler runs on the caller's goroutine, one call at a time, in
// revision order. Every watch asks for a leader (clientv3.WithRequireLeader),
// so a member cut off from its cluster does not leave it waiting for
// changes that never come.
package etcdwatch
