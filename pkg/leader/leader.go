// Package leader finds the current STYX leader from etcd without taking
// part in the election: the leader is the key under the election prefix
// with the lowest create revision, as concurrency.Election defines it.
package leader

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

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

// Observe sends the leader each time it changes (and once at the start when
// one exists) until ctx ends; the channel is then closed. Errors are retried
// every retry interval. The zero LeaderInfo is sent when the leader is gone.
func Observe(ctx context.Context, cli *clientv3.Client) <-chan keyspace.LeaderInfo {
	out := make(chan keyspace.LeaderInfo, 1)
	go func() {
		defer close(out)
		var last keyspace.LeaderInfo
		sent := false
		send := func(li keyspace.LeaderInfo) bool {
			if sent && li == last {
				return true
			}
			select {
			case out <- li:
				last, sent = li, true
				return true
			case <-ctx.Done():
				return false
			}
		}
		for ctx.Err() == nil {
			li, rev, err := Current(ctx, cli)
			if err != nil && !errors.Is(err, ErrNoLeader) {
				select {
				case <-ctx.Done():
					return
				case <-time.After(500 * time.Millisecond):
				}
				continue
			}
			if !send(li) {
				return
			}
			wctx, cancel := context.WithCancel(ctx)
			wch := cli.Watch(clientv3.WithRequireLeader(wctx), keyspace.LeaderPrefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
			for range wch {
				// Any change under the prefix may change the leader: re-read.
				li, _, err := Current(ctx, cli)
				if err != nil && !errors.Is(err, ErrNoLeader) {
					break
				}
				if !send(li) {
					cancel()
					return
				}
			}
			cancel()
		}
	}()
	return out
}
