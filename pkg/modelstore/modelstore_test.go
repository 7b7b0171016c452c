package modelstore_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/styx-inference/styx/pkg/embedetcd/etcdtest"
	"github.com/styx-inference/styx/pkg/keyspace"
	"github.com/styx-inference/styx/pkg/modelstore"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
		goleak.IgnoreTopFunction("go.etcd.io/etcd/client/pkg/v3/logutil.(*MergeLogger).outputLoop"),
	)
}

func etcd(t *testing.T) *clientv3.Client {
	t.Helper()
	_, cli := etcdtest.Start(t)
	return cli
}

func artifact(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) ^ seed
	}
	return b
}

func TestStoreFetchAcrossChunks(t *testing.T) {
	cli := etcd(t)
	ctx := context.Background()
	art := artifact(2*modelstore.ChunkSize+123, 1) // three chunks
	ref, err := modelstore.Store(ctx, cli, "m1", art)
	if err != nil {
		t.Fatal(err)
	}
	got, err := modelstore.Fetch(ctx, cli, ref)
	if err != nil || !bytes.Equal(got, art) {
		t.Fatalf("fetch: %v, equal %v", err, bytes.Equal(got, art))
	}
	// The same bytes again are fine; other bytes under the same version are not.
	if _, err := modelstore.Store(ctx, cli, "m1", art); err != nil {
		t.Fatalf("idempotent store: %v", err)
	}
	if _, err := modelstore.Store(ctx, cli, "m1", artifact(10, 2)); err == nil {
		t.Fatal("overwrote a version with other content")
	}
	// Bad input.
	for _, v := range []string{"", "a/b", "x y"} {
		if _, err := modelstore.Store(ctx, cli, v, art); err == nil {
			t.Errorf("version %q accepted", v)
		}
	}
	if _, err := modelstore.Store(ctx, cli, "empty", nil); err == nil {
		t.Error("empty artifact accepted")
	}
}

func TestFetchRefusesTamperedArtifact(t *testing.T) {
	cli := etcd(t)
	ctx := context.Background()
	art := artifact(modelstore.ChunkSize+10, 3)
	ref, err := modelstore.Store(ctx, cli, "m1", art)
	if err != nil {
		t.Fatal(err)
	}
	bad := append([]byte(nil), art[modelstore.ChunkSize:]...)
	bad[0] ^= 0xff
	if _, err := cli.Put(ctx, keyspace.ModelBlobKey("m1", 1), string(bad)); err != nil {
		t.Fatal(err)
	}
	if _, err := modelstore.Fetch(ctx, cli, ref); err == nil {
		t.Fatal("tampered artifact accepted")
	}
	short := ref
	short.Size--
	if _, err := modelstore.Fetch(ctx, cli, short); err == nil {
		t.Fatal("size mismatch accepted")
	}
	// A file artifact is checked the same way.
	path := filepath.Join(t.TempDir(), "m2.model")
	if err := os.WriteFile(path, art, 0o644); err != nil {
		t.Fatal(err)
	}
	fref := modelstore.Ref("m2", art, "file://"+path)
	if _, err := modelstore.Fetch(ctx, cli, fref); err != nil {
		t.Fatalf("file fetch: %v", err)
	}
	if err := os.WriteFile(path, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := modelstore.Fetch(ctx, cli, fref); err == nil {
		t.Fatal("changed file accepted")
	}
}

func TestPointerLifecycle(t *testing.T) {
	cli := etcd(t)
	ctx := context.Background()
	refs := map[string]keyspace.ModelRef{}
	for i, v := range []string{"m1", "m2", "m3"} {
		r, err := modelstore.Store(ctx, cli, v, artifact(100+i, byte(i)))
		if err != nil {
			t.Fatal(err)
		}
		refs[v] = r
	}
	if _, err := modelstore.Rollback(ctx, cli); !errors.Is(err, modelstore.ErrNoModel) {
		t.Fatalf("rollback with no model: %v", err)
	}
	if _, err := modelstore.StartCanary(ctx, cli, refs["m2"], 0.1); err == nil {
		t.Fatal("canary without a current model accepted")
	}
	p, err := modelstore.Activate(ctx, cli, refs["m1"])
	if err != nil || p.Version != "m1" || p.Previous != nil {
		t.Fatalf("activate m1: %+v %v", p, err)
	}
	if _, err := modelstore.StartCanary(ctx, cli, refs["m2"], 1.5); err == nil {
		t.Fatal("canary share 1.5 accepted")
	}
	p, err = modelstore.StartCanary(ctx, cli, refs["m2"], 0.25)
	if err != nil || p.Canary == nil || p.Canary.Version != "m2" || p.CanaryShare != 0.25 {
		t.Fatalf("canary: %+v %v", p, err)
	}
	p, err = modelstore.Promote(ctx, cli)
	if err != nil || p.Version != "m2" || p.Previous.Version != "m1" || p.Canary != nil {
		t.Fatalf("promote: %+v %v", p, err)
	}
	p, err = modelstore.Rollback(ctx, cli)
	if err != nil || p.Version != "m1" || p.Previous.Version != "m2" {
		t.Fatalf("rollback: %+v %v", p, err)
	}
	p, err = modelstore.Activate(ctx, cli, refs["m3"])
	if err != nil || p.Version != "m3" || p.Previous.Version != "m1" {
		t.Fatalf("activate m3: %+v %v", p, err)
	}
	n, err := modelstore.Prune(ctx, cli)
	if err != nil || n != 1 {
		t.Fatalf("prune: %d %v (want m2 gone)", n, err)
	}
	if _, err := modelstore.Fetch(ctx, cli, refs["m2"]); err == nil {
		t.Fatal("pruned artifact still fetched")
	}
	if _, err := modelstore.Fetch(ctx, cli, refs["m1"]); err != nil {
		t.Fatalf("previous model pruned: %v", err)
	}
}

func TestUpdateDetectsConcurrentChange(t *testing.T) {
	cli := etcd(t)
	ctx := context.Background()
	r1, _ := modelstore.Store(ctx, cli, "m1", artifact(10, 1))
	r2, _ := modelstore.Store(ctx, cli, "m2", artifact(10, 2))
	if _, err := modelstore.Activate(ctx, cli, r1); err != nil {
		t.Fatal(err)
	}
	_, err := modelstore.Update(ctx, cli, func(p *keyspace.ModelPointer, _ bool) error {
		// Someone else changes the pointer while this change is prepared.
		if _, err := modelstore.Activate(ctx, cli, r2); err != nil {
			t.Fatal(err)
		}
		p.ModelRef = r1
		return nil
	})
	if !errors.Is(err, modelstore.ErrConflict) {
		t.Fatalf("concurrent change not detected: %v", err)
	}
	p, _, _ := modelstore.Current(ctx, cli)
	if p.Version != "m2" {
		t.Fatalf("pointer %s, want m2", p.Version)
	}
}

func TestWatchDeliversChangesAndIgnoresGarbage(t *testing.T) {
	cli := etcd(t)
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var seen []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		modelstore.Watch(ctx, cli, func(p keyspace.ModelPointer) {
			mu.Lock()
			seen = append(seen, p.Version)
			mu.Unlock()
		})
	}()
	r1, _ := modelstore.Store(ctx, cli, "m1", artifact(10, 1))
	r2, _ := modelstore.Store(ctx, cli, "m2", artifact(10, 2))
	if _, err := modelstore.Activate(ctx, cli, r1); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, keyspace.ModelCurrent, "{not json"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, keyspace.ModelCurrent, `{"version":"x","sha256":"short","size":1,"url":"http://elsewhere"}`); err != nil {
		t.Fatal(err)
	}
	if _, err := modelstore.Update(ctx, cli, func(p *keyspace.ModelPointer, _ bool) error {
		p.ModelRef, p.Canary, p.Previous = r2, nil, nil
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		got := append([]string(nil), seen...)
		mu.Unlock()
		if len(got) == 2 {
			if got[0] != "m1" || got[1] != "m2" {
				t.Fatalf("seen %v", got)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("seen %v, want [m1 m2]", got)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
}
