// Package leader finds the current STYX leader from etcd without taking
// part in the election: the leader is the key under the election prefix
// with the lowest create revision, as concurrency.Election defines it.
package leader

import (
	"context"
	"errors"
	"fmt"

	"github.com/rs/zerolog"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/styx-inference/styx/pkg/etcdwatch"
	"github.com/styx-inference/styx/pkg/keyspace"
)

// ErrNoLeader is returned when no scheduler leads.
var ErrNoLeader = errors.New("no STYX leader elected")

// Current returns the leader's registration and the etcd revision read.
func Current(ctx context.Context, cli *clientv3.Client) (keyspace.LeaderInfo, int64, error) {
	resp, err := cli.Get(ctx, keyspace.LeaderPrefix, clientv3.WithFirstCreate()...)
	if err != nil {
		return keyspace.LeaderInfo{}, 0, fmt.Errorf("get leader: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return keyspace.LeaderInfo{}, resp.Header.Revision, ErrNoLeader
	}
	var li keyspace.LeaderInfo
	if err := keyspace.Decode(resp.Kvs[0].Value, &li); err != nil {
		return keyspace.LeaderInfo{}, resp.Header.Revision, err
	}
	return li, resp.Header.Revision, nil
}

// Observe sends the leader each time it changes (and once at the start,
// the zero LeaderInfo when none leads) until ctx ends; the channel is then
// closed. The zero LeaderInfo is sent when the leader is gone; nothing is
// sent while the leader's value does not decode. It follows the election
// prefix with etcdwatch, so it outlives etcd restarts and compactions.
func Observe(ctx context.Context, cli *clientv3.Client) <-chan keyspace.LeaderInfo {
	out := make(chan keyspace.LeaderInfo, 1)
	go func() {
		defer close(out)
		var (
			cands = map[string]*mvccpb.KeyValue{} // election keys by key
			last  keyspace.LeaderInfo
			sent  bool
		)
		changed := func() {
			li, ok := leaderOf(cands)
			if !ok || sent && li == last {
				return
			}
			select {
			case out <- li:
				last, sent = li, true
			case <-ctx.Done():
			}
		}
		_ = etcdwatch.Prefix(ctx, cli, keyspace.LeaderPrefix, etcdwatch.Handler{
			Reset: func(kvs []*mvccpb.KeyValue, _ int64) {
				clear(cands)
				for _, kv := range kvs {
					cands[string(kv.Key)] = kv
				}
				changed()
			},
			Put: func(kv *mvccpb.KeyValue) {
				cands[string(kv.Key)] = kv
				changed()
			},
			Delete: func(kv *mvccpb.KeyValue) {
				delete(cands, string(kv.Key))
				changed()
			},
		}, zerolog.Nop())
	}()
	return out
}

// leaderOf decodes the candidate with the lowest create revision, the
// leader as concurrency.Election ranks them: the zero LeaderInfo when there
// is none, false when its value does not decode.
func leaderOf(cands map[string]*mvccpb.KeyValue) (keyspace.LeaderInfo, bool) {
	var first *mvccpb.KeyValue
	for _, kv := range cands {
		if first == nil || kv.CreateRevision < first.CreateRevision {
			first = kv
		}
	}
	var li keyspace.LeaderInfo
	if first == nil {
		return li, true
	}
	return li, keyspace.Decode(first.Value, &li) == nil
}
