package leader

import (
	"context"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/goleak"

	"github.com/styx-inference/styx/pkg/embedetcd/etcdtest"
	"github.com/styx-inference/styx/pkg/keyspace"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// candidate campaigns under the election prefix on its own session.
type candidate struct {
	sess *concurrency.Session
	el   *concurrency.Election
}

func newCandidate(t *testing.T, cli *clientv3.Client) *candidate {
	t.Helper()
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(5))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sess.Close() })
	return &candidate{sess: sess, el: concurrency.NewElection(sess, strings.TrimSuffix(keyspace.LeaderPrefix, "/"))}
}

func (c *candidate) campaign(t *testing.T, id string) <-chan error {
	t.Helper()
	v, err := keyspace.Encode(keyspace.LeaderInfo{ID: id, GRPCAddr: id + ":1"})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.el.Campaign(context.Background(), v) }()
	return done
}

func next(t *testing.T, ch <-chan keyspace.LeaderInfo) keyspace.LeaderInfo {
	t.Helper()
	select {
	case li, ok := <-ch:
		if !ok {
			t.Fatal("Observe closed its channel")
		}
		return li
	case <-time.After(10 * time.Second):
		t.Fatal("no leader change within 10s")
		return keyspace.LeaderInfo{}
	}
}

// TestObserve follows an election: nobody, then a (and a's new address
// while b stands by), then b once a resigns, then nobody.
func TestObserve(t *testing.T) {
	_, cli := etcdtest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	ch := Observe(ctx, cli)
	if li := next(t, ch); li != (keyspace.LeaderInfo{}) {
		t.Fatalf("first %+v, want no leader", li)
	}

	a, b := newCandidate(t, cli), newCandidate(t, cli)
	if err := <-a.campaign(t, "a"); err != nil {
		t.Fatal(err)
	}
	if li := next(t, ch); li.ID != "a" {
		t.Fatalf("leader %+v, want a", li)
	}
	// b stands by: its key, created after a's, is there before a resigns
	// (as Campaign would write it), and changes nothing.
	bv, _ := keyspace.Encode(keyspace.LeaderInfo{ID: "b", GRPCAddr: "b:1"})
	if _, err := cli.Put(ctx, keyspace.LeaderPrefix+"b", bv, clientv3.WithLease(b.sess.Lease())); err != nil {
		t.Fatal(err)
	}
	av, _ := keyspace.Encode(keyspace.LeaderInfo{ID: "a", GRPCAddr: "a:2"})
	if err := a.el.Proclaim(ctx, av); err != nil {
		t.Fatal(err)
	}
	if li := next(t, ch); li.ID != "a" || li.GRPCAddr != "a:2" {
		t.Fatalf("after a proclaimed a new address %+v, want a at a:2 (b only stands by)", li)
	}
	if err := a.el.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	if li := next(t, ch); li.ID != "b" {
		t.Fatalf("leader after a resigned %+v, want b", li)
	}
	if err := b.sess.Close(); err != nil {
		t.Fatal(err)
	}
	if li := next(t, ch); li != (keyspace.LeaderInfo{}) {
		t.Fatalf("after b's lease went %+v, want no leader", li)
	}

	cancel()
	for range ch { // closes once ctx ended
	}
}
