package etcdwatch

import (
	"context"
	"fmt"
	"maps"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/styx-inference/styx/pkg/embedetcd/etcdtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// call is one handler call: a reset (with its listing), a put or a delete.
type call struct {
	op    string            // "reset", "put", "delete"
	kvs   map[string]string // reset: the listing
	key   string            // put, delete
	value string            // put
	rev   int64             // reset: the listing's revision; else the change's
}

func (c call) String() string {
	switch c.op {
	case "reset":
		return fmt.Sprintf("reset@%d%v", c.rev, c.kvs)
	case "put":
		return fmt.Sprintf("put %s=%s", c.key, c.value)
	}
	return "delete " + c.key
}

// recorder is a Handler that sends every call to a channel, and a mirror
// of the watched keys kept as a user of the package would keep it.
type recorder struct {
	calls  chan call
	mirror map[string]string // only touched by the handler's goroutine
	// gate, when set, holds the first Reset until it is closed.
	gate chan struct{}
}

func newRecorder() *recorder {
	return &recorder{calls: make(chan call, 1000), mirror: map[string]string{}}
}

func (r *recorder) handler() Handler {
	return Handler{
		Reset: func(kvs []*mvccpb.KeyValue, rev int64) {
			m := map[string]string{}
			for _, kv := range kvs {
				m[string(kv.Key)] = string(kv.Value)
			}
			r.mirror = maps.Clone(m)
			r.calls <- call{op: "reset", kvs: m, rev: rev}
			if r.gate != nil {
				<-r.gate
				r.gate = nil
			}
		},
		Put: func(kv *mvccpb.KeyValue) {
			r.mirror[string(kv.Key)] = string(kv.Value)
			r.calls <- call{op: "put", key: string(kv.Key), value: string(kv.Value), rev: kv.ModRevision}
		},
		Delete: func(kv *mvccpb.KeyValue) {
			delete(r.mirror, string(kv.Key))
			r.calls <- call{op: "delete", key: string(kv.Key), rev: kv.ModRevision}
		},
	}
}

// next returns the next handler call, failing the test after 10 s.
func (r *recorder) next(t *testing.T) call {
	t.Helper()
	select {
	case c := <-r.calls:
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("no handler call within 10s")
		return call{}
	}
}

// expect reads the next handler calls and compares them with want.
func (r *recorder) expect(t *testing.T, want ...string) {
	t.Helper()
	for i, w := range want {
		if got := r.next(t).String(); got != w {
			t.Fatalf("call %d: %s, want %s", i, got, w)
		}
	}
}

// start runs fn (Prefix or Key) on its own goroutine; the test's end
// cancels it and checks it returned nil.
func start(t *testing.T, fn func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("returned %v after its context ended, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("did not return within 10s of its context ending")
		}
	})
}

func put(t *testing.T, cli *clientv3.Client, k, v string) int64 {
	t.Helper()
	resp, err := cli.Put(context.Background(), k, v)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}

func del(t *testing.T, cli *clientv3.Client, k string) int64 {
	t.Helper()
	resp, err := cli.Delete(context.Background(), k)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}

// listing is what etcd holds under prefix now.
func listing(t *testing.T, cli *clientv3.Client, prefix string) map[string]string {
	t.Helper()
	resp, err := cli.Get(context.Background(), prefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, kv := range resp.Kvs {
		m[string(kv.Key)] = string(kv.Value)
	}
	return m
}

func TestPrefixListsThenFollowsInOrder(t *testing.T) {
	_, cli := etcdtest.Start(t)
	put(t, cli, "/w/a", "1")
	put(t, cli, "/w/b", "1")
	rev := put(t, cli, "/wx", "not under /w/")
	rec := newRecorder()
	start(t, func(ctx context.Context) error { return Prefix(ctx, cli, "/w/", rec.handler(), zerolog.Nop()) })
	if c, want := rec.next(t).String(), fmt.Sprintf("reset@%dmap[/w/a:1 /w/b:1]", rev); c != want {
		t.Fatalf("first call %s, want %s", c, want)
	}

	put(t, cli, "/w/c", "1")
	put(t, cli, "/other", "x")
	del(t, cli, "/w/a")
	put(t, cli, "/w/b", "2")
	if _, err := cli.Txn(context.Background()).Then(
		clientv3.OpPut("/w/d", "1"), clientv3.OpDelete("/w/c"), clientv3.OpPut("/other2", "x"),
	).Commit(); err != nil {
		t.Fatal(err)
	}
	rec.expect(t, "put /w/c=1", "delete /w/a", "put /w/b=2", "put /w/d=1", "delete /w/c")
	select {
	case c := <-rec.calls:
		t.Fatalf("unexpected call %s", c)
	default:
	}
}

// TestCompactedWhileBehind holds the handler in its first Reset while keys
// change, one is deleted and the store is compacted past the listing: the
// watch cannot resume there, so it lists again, and the second listing
// has everything (and lacks the deleted key).
func TestCompactedWhileBehind(t *testing.T) {
	_, cli := etcdtest.Start(t)
	put(t, cli, "/w/keep", "1")
	put(t, cli, "/w/gone", "1")
	put(t, cli, "/w/changed", "1")
	rec := newRecorder()
	rec.gate = make(chan struct{})
	start(t, func(ctx context.Context) error { return Prefix(ctx, cli, "/w/", rec.handler(), zerolog.Nop()) })
	if c := rec.next(t); c.op != "reset" || len(c.kvs) != 3 {
		t.Fatalf("first call %s, want a listing of 3 keys", c)
	}

	// Behind: the handler is still busy with the first listing.
	del(t, cli, "/w/gone")
	put(t, cli, "/w/changed", "2")
	var rev int64
	for i := range 20 {
		rev = put(t, cli, fmt.Sprintf("/w/new%02d", i), "1")
	}
	if _, err := cli.Compact(context.Background(), rev, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	close(rec.gate)

	c := rec.next(t)
	if c.op != "reset" || c.rev < rev {
		t.Fatalf("after the compaction %s, want a listing at revision %d or later", c, rev)
	}
	want := listing(t, cli, "/w/")
	if !maps.Equal(c.kvs, want) {
		t.Fatalf("second listing %v, want %v", c.kvs, want)
	}
	if _, ok := c.kvs["/w/gone"]; ok {
		t.Fatal("the key deleted in the gap is still listed")
	}

	// And it follows on from there.
	put(t, cli, "/w/after", "1")
	del(t, cli, "/w/keep")
	rec.expect(t, "put /w/after=1", "delete /w/keep")
	got := rec.mirror // the handler is idle: every call was received
	if want := listing(t, cli, "/w/"); !maps.Equal(got, want) {
		t.Fatalf("the handler's view %v, want %v", got, want)
	}
}

// TestKeyDeletedInGap follows one key, which is deleted while the handler
// is behind and the store compacted: the new listing is empty.
func TestKeyDeletedInGap(t *testing.T) {
	_, cli := etcdtest.Start(t)
	put(t, cli, "/cfg", "1")
	first := put(t, cli, "/cfg2", "sibling")
	rec := newRecorder()
	rec.gate = make(chan struct{})
	start(t, func(ctx context.Context) error { return Key(ctx, cli, "/cfg", rec.handler(), zerolog.Nop()) })
	if c, want := rec.next(t).String(), fmt.Sprintf("reset@%dmap[/cfg:1]", first); c != want {
		t.Fatalf("first call %s, want %s", c, want)
	}
	del(t, cli, "/cfg")
	rev := put(t, cli, "/cfg2", "changed") // compacting at rev removes every revision before it
	if _, err := cli.Compact(context.Background(), rev); err != nil {
		t.Fatal(err)
	}
	close(rec.gate)
	if c := rec.next(t); c.op != "reset" || len(c.kvs) != 0 {
		t.Fatalf("after the gap %s, want an empty listing", c)
	}
	put(t, cli, "/cfg2", "still not it")
	put(t, cli, "/cfg", "2")
	rec.expect(t, "put /cfg=2")
}

// breakingClient cuts every watch after the first response that carries
// events, as a lost stream would.
type breakingClient struct {
	*clientv3.Client
	watches atomic.Int32
}

func (b *breakingClient) Watch(ctx context.Context, key string, opts ...clientv3.OpOption) clientv3.WatchChan {
	b.watches.Add(1)
	ctx, cancel := context.WithCancel(ctx)
	in := b.Client.Watch(ctx, key, opts...)
	out := make(chan clientv3.WatchResponse)
	go func() {
		defer close(out)
		defer cancel()
		for wr := range in {
			select {
			case out <- wr:
			case <-ctx.Done():
				return
			}
			if len(wr.Events) > 0 {
				return
			}
		}
	}()
	return out
}

// TestResumesFromLastRevision breaks the watch after every response: each
// change still arrives exactly once and in order, without a new listing.
func TestResumesFromLastRevision(t *testing.T) {
	_, cli := etcdtest.Start(t)
	bc := &breakingClient{Client: cli}
	rec := newRecorder()
	start(t, func(ctx context.Context) error { return Prefix(ctx, bc, "/w/", rec.handler(), zerolog.Nop()) })
	if c := rec.next(t); c.op != "reset" || len(c.kvs) != 0 {
		t.Fatalf("first call %s, want an empty listing", c)
	}

	// One change at a time, each seen before the next is made, so that
	// each comes in a response of its own (etcd may batch changes made
	// together) and every response breaks the watch.
	for i := range 4 {
		k := fmt.Sprintf("/w/%d", i)
		put(t, cli, k, "1")
		rec.expect(t, "put "+k+"=1")
		if i%2 == 1 {
			del(t, cli, k)
			rec.expect(t, "delete "+k)
		}
	}
	if n := bc.watches.Load(); n < 6 {
		t.Errorf("%d watches, want one per change and the first: each broken one resumed", n)
	}
	select {
	case c := <-rec.calls:
		t.Fatalf("unexpected call %s", c)
	default:
	}
}

func TestBadArguments(t *testing.T) {
	_, cli := etcdtest.Start(t)
	ok := newRecorder().handler()
	tests := []struct {
		name string
		run  func() error
	}{
		{"empty prefix", func() error { return Prefix(t.Context(), cli, "", ok, zerolog.Nop()) }},
		{"empty key", func() error { return Key(t.Context(), cli, "", ok, zerolog.Nop()) }},
		{"nil client", func() error { return Prefix(t.Context(), nil, "/w/", ok, zerolog.Nop()) }},
		{"nil reset", func() error { return Prefix(t.Context(), cli, "/w/", Handler{Put: ok.Put}, zerolog.Nop()) }},
		{"nil put", func() error { return Key(t.Context(), cli, "/k", Handler{Reset: ok.Reset}, zerolog.Nop()) }},
	}
	for _, tt := range tests {
		if err := tt.run(); err == nil {
			t.Errorf("%s: no error", tt.name)
		}
	}
}
