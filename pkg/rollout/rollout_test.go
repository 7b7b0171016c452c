package rollout_test

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/styx-inference/styx/pkg/embedetcd/etcdtest"
	"github.com/styx-inference/styx/pkg/keyspace"
	"github.com/styx-inference/styx/pkg/modelstore"
	"github.com/styx-inference/styx/pkg/raven"
	"github.com/styx-inference/styx/pkg/rollout"
	"github.com/styx-inference/styx/pkg/testwait"
	"github.com/styx-inference/styx/pkg/verdict"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
		goleak.IgnoreTopFunction("go.etcd.io/etcd/client/pkg/v3/logutil.(*MergeLogger).outputLoop"),
	)
}

// fake artifacts are "fake:<version>:<type>"; the engine answers every
// address with that type.
type fakeEngine struct{ version, typ string }

func (f fakeEngine) Examine(netip.Addr) verdict.Verdict {
	return verdict.Verdict{Proxy: f.typ != "", Type: f.typ}
}
func (f fakeEngine) ModelVersion() string { return f.version }

func load(b []byte) (raven.Engine, error) {
	parts := strings.Split(string(b), ":")
	if len(parts) != 3 || parts[0] != "fake" {
		return nil, errors.New("not a fake artifact")
	}
	return fakeEngine{parts[1], parts[2]}, nil
}

type holder struct {
	mu  sync.Mutex
	eng raven.Engine
	n   int
}

func (h *holder) set(e raven.Engine) { h.mu.Lock(); h.eng = e; h.n++; h.mu.Unlock() }
func (h *holder) version() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.eng == nil {
		return ""
	}
	return h.eng.ModelVersion()
}

func TestFollowsPointerCanaryAndRollback(t *testing.T) {
	_, cli := etcdtest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lease, err := cli.Grant(ctx, 30)
	if err != nil {
		t.Fatal(err)
	}

	h := &holder{}
	changed := make(chan struct{}, 16)
	f := rollout.New(rollout.Config{
		Client: cli, WorkerID: "w1", Load: load, Set: h.set,
		Changed:     func() { changed <- struct{}{} },
		Lease:       func() clientv3.LeaseID { return lease.ID },
		ReportEvery: 50 * time.Millisecond,
	}, zerolog.Nop())
	done := make(chan struct{})
	go func() { defer close(done); f.Run(ctx) }()

	store := func(v, typ string) keyspace.ModelRef {
		r, err := modelstore.Store(ctx, cli, v, []byte("fake:"+v+":"+typ))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	m1, m2 := store("m1", ""), store("m2", "VPN")

	if _, err := modelstore.Activate(ctx, cli, m1); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, testwait.Timeout, "m1 active", func() bool { return h.version() == "m1" && f.Active() == "m1" })
	<-changed

	// A canary on every address: verdicts name m2, and the comparison is
	// reported under the worker's key.
	if _, err := modelstore.StartCanary(ctx, cli, m2, 1); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, testwait.Timeout, "canary running", func() bool { return f.Active() == "m1+canary:m2" })
	h.mu.Lock()
	eng := h.eng
	h.mu.Unlock()
	for i := range 100 {
		v := eng.Examine(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}))
		if v.ModelVersion != "m2" || v.Type != "VPN" {
			t.Fatalf("canary verdict %+v", v)
		}
	}
	var rep keyspace.CanaryReport
	testwait.For(t, testwait.Timeout, "canary report", func() bool {
		resp, err := cli.Get(ctx, keyspace.CanaryKey("w1"))
		if err != nil || len(resp.Kvs) == 0 {
			return false
		}
		_ = keyspace.Decode(resp.Kvs[0].Value, &rep)
		return rep.Examined >= 100
	})
	if rep.Current != "m1" || rep.Canary != "m2" || rep.Differed != rep.Examined || rep.ByType["->VPN"] != rep.Examined {
		t.Fatalf("report %+v", rep)
	}

	// Promote, then roll back: the engine follows each step, and the
	// canary report goes away with the canary.
	if _, err := modelstore.Promote(ctx, cli); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, testwait.Timeout, "m2 active", func() bool { return f.Active() == "m2" && h.version() == "m2" })
	testwait.For(t, testwait.Timeout, "canary report removed", func() bool {
		resp, err := cli.Get(ctx, keyspace.CanaryKey("w1"))
		return err == nil && len(resp.Kvs) == 0
	})
	if _, err := modelstore.Rollback(ctx, cli); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, testwait.Timeout, "rolled back to m1", func() bool { return f.Active() == "m1" && h.version() == "m1" })

	// A tampered artifact is refused; the running engine stays.
	m3 := store("m3", "Hosting")
	if _, err := cli.Put(ctx, keyspace.ModelBlobKey("m3", 0), "fake:m3:Hostile"); err != nil {
		t.Fatal(err)
	}
	if _, err := modelstore.Activate(ctx, cli, m3); err != nil {
		t.Fatal(err)
	}
	// An artifact the loader cannot read is refused too.
	bad, err := modelstore.Store(ctx, cli, "m4", []byte("garbage"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := modelstore.Activate(ctx, cli, bad); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if f.Active() != "m1" || h.version() != "m1" {
		t.Fatalf("active %s / %s after bad artifacts, want m1", f.Active(), h.version())
	}
	cancel()
	<-done
}
