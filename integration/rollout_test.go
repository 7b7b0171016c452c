package integration

import (
	"bytes"
	"context"
	"io"
	"net/netip"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/styx-inference/styx/clusternode"
	"github.com/styx-inference/styx/pkg/features/featurestest"
	"github.com/styx-inference/styx/pkg/keyspace"
	"github.com/styx-inference/styx/pkg/locdb"
	"github.com/styx-inference/styx/pkg/model"
	"github.com/styx-inference/styx/pkg/modelstore"
	"github.com/styx-inference/styx/pkg/testwait"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
	"github.com/styx-inference/styx/trainer"
	"github.com/styx-inference/styx/worker"
)

// versions counts the verdicts in the verdict log by model version.
type versions struct {
	mu     sync.Mutex
	counts map[string]int
	errors int
}

func (v *versions) snapshot() map[string]int {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make(map[string]int, len(v.counts))
	for k, n := range v.counts {
		out[k] = n
	}
	return out
}

// followLog counts the verdicts of the verdict log by model version until
// ctx ends; the channel closes then.
func followLog(ctx context.Context, t *testing.T, url string, v *versions) <-chan struct{} {
	return readLog(ctx, t, url, func(b *styxv1.LogBatch) {
		v.mu.Lock()
		defer v.mu.Unlock()
		for _, vd := range b.GetVerdicts() {
			v.counts[vd.ModelVersion]++
			if vd.Error != "" {
				v.errors++
			}
		}
	})
}

// tinyModels trains one small model on dbPath and returns two artifacts of
// it: version a as trained, and version b with thresholds so low that it
// calls far more addresses proxies, so the two visibly differ.
func tinyModels(t *testing.T, dbPath, a, b string) (art1, art2 []byte) {
	t.Helper()
	cfg := trainer.DefaultConfig()
	cfg.DBPath, cfg.SkipVerify, cfg.OutDir = dbPath, true, t.TempDir()
	cfg.Params.Trees, cfg.Params.MaxDepth, cfg.Params.MinLeafRows, cfg.Params.MaxBins = 20, 3, 5, 32
	cfg.ModelVersion = a
	res, err := trainer.Train(context.Background(), cfg, quiet(t), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := res.Model.Encode(&buf); err != nil {
		t.Fatal(err)
	}
	art1 = append([]byte(nil), buf.Bytes()...)
	m := res.Model
	m.Version = b
	for i := range m.Heads {
		m.Heads[i].Threshold = 1e-6
	}
	buf.Reset()
	if err := m.Encode(&buf); err != nil {
		t.Fatal(err)
	}
	if _, err := model.Decode(bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatal(err)
	}
	return art1, buf.Bytes()
}

// TestModelRolloutWhileSightingsFlow publishes a model, runs a second one
// as a canary, promotes it and rolls back, all while a node streams
// sightings: no sighting fails or goes missing, the verdicts switch model
// versions at each step, and the canary's comparison is reported.
func TestModelRolloutWhileSightingsFlow(t *testing.T) {
	dbPath := featurestest.WriteTemp(t, 200, 21)
	art1, art2 := tinyModels(t, dbPath, "raven-it-1", "raven-it-2")

	db, err := locdb.Open(locdb.Config{Path: dbPath, SkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var addrs []netip.Addr
	for n := range db.Networks() {
		a := n.Prefix.Addr()
		for range 8 {
			addrs = append(addrs, a)
			a = a.Next()
			if !n.Prefix.Contains(a) {
				break
			}
		}
	}

	c := newCluster(t, nil)
	for _, id := range []string{"w1", "w2"} {
		c.addWorkerWith(id, func(cfg *worker.Config) {
			cfg.EngineName, cfg.DBPath, cfg.SkipVerify, cfg.Capacity = worker.EngineRule, dbPath, true, 2
		})
	}
	o := newOutcomes()
	node := c.addNode("node-1", o, func(cfg *clusternode.Config) {
		cfg.DBPath, cfg.SkipVerify, cfg.DedupWindow = dbPath, true, 0
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	v := &versions{counts: map[string]int{}}
	feedDone := followLog(ctx, t, c.nats.URL(), v)

	// A steady stream of sightings for the whole test.
	var submitted int
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			k := 50
			chunk := make([]netip.Addr, k)
			for j := range chunk {
				chunk[j] = addrs[(i*k+j)%len(addrs)]
			}
			submitted += node.Submit(chunk...)
		}
	}()

	since := func(ver string, base map[string]int) func() bool {
		return func() bool { return v.snapshot()[ver] > base[ver]+100 }
	}
	testwait.For(t, 30*time.Second, "rule verdicts", since("rule-v1", nil))

	r1, err := modelstore.Store(ctx, c.cli, "raven-it-1", art1)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := modelstore.Store(ctx, c.cli, "raven-it-2", art2)
	if err != nil {
		t.Fatal(err)
	}
	step := func(what, ver string, change func() error) {
		t.Helper()
		if err := change(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		// Once every worker runs it, the new version keeps coming.
		testwait.For(t, 60*time.Second, what, since(ver, v.snapshot()))
		base := v.snapshot()
		testwait.For(t, 30*time.Second, what+" on every worker", since(ver, base))
	}
	step("activate raven-it-1", "raven-it-1", func() error { _, err := modelstore.Activate(ctx, c.cli, r1); return err })
	step("canary raven-it-2", "raven-it-2", func() error { _, err := modelstore.StartCanary(ctx, c.cli, r2, 0.5); return err })
	// Both versions answer while the canary runs, and the workers report
	// how the canary's answers differ.
	base := v.snapshot()
	testwait.For(t, 30*time.Second, "both versions during the canary", func() bool {
		s := v.snapshot()
		return s["raven-it-1"] > base["raven-it-1"]+100 && s["raven-it-2"] > base["raven-it-2"]+100
	})
	testwait.For(t, 30*time.Second, "a canary report", func() bool {
		resp, err := c.cli.Get(ctx, keyspace.CanaryPrefix, clientv3.WithPrefix())
		if err != nil {
			return false
		}
		for _, kv := range resp.Kvs {
			var r keyspace.CanaryReport
			if keyspace.Decode(kv.Value, &r) == nil && r.Canary == "raven-it-2" && r.Examined > 0 && r.Differed > 0 {
				return true
			}
		}
		return false
	})
	step("promote raven-it-2", "raven-it-2", func() error { _, err := modelstore.Promote(ctx, c.cli); return err })
	afterPromote := v.snapshot()
	time.Sleep(500 * time.Millisecond)
	if s := v.snapshot(); s["rule-v1"] != afterPromote["rule-v1"] {
		t.Errorf("rule verdicts after promotion: %v then %v", afterPromote, s)
	}
	step("roll back to raven-it-1", "raven-it-1", func() error { _, err := modelstore.Rollback(ctx, c.cli); return err })
	// Registrations name the model each worker runs.
	testwait.For(t, 10*time.Second, "registrations name raven-it-1", func() bool {
		resp, err := c.cli.Get(ctx, keyspace.WorkersPrefix, clientv3.WithPrefix())
		if err != nil || len(resp.Kvs) != 2 {
			return false
		}
		for _, kv := range resp.Kvs {
			var r keyspace.WorkerRegistration
			if keyspace.Decode(kv.Value, &r) != nil || r.ModelVersion != "raven-it-1" {
				return false
			}
		}
		return true
	})

	// The node's real-time client follows the same pointer.
	testwait.For(t, 30*time.Second, "the node answers with raven-it-1", func() bool { return node.ModelVersion() == "raven-it-1" })

	close(stop)
	wg.Wait()
	testwait.For(t, 60*time.Second, "an outcome for every sighting", func() bool { return int(o.total.Load()) >= submitted })
	o.mu.Lock()
	if len(o.byID) != submitted || o.twice != 0 || o.byKind[styxv1.OutcomeKind_OUTCOME_KIND_VERDICT] != submitted {
		t.Errorf("%d sightings, %d resolved, %d twice, by kind %v", submitted, len(o.byID), o.twice, o.byKind)
	}
	o.mu.Unlock()
	v.mu.Lock()
	if v.errors != 0 {
		t.Errorf("%d verdicts carried an error", v.errors)
	}
	t.Logf("verdicts by model version: %v", v.counts)
	v.mu.Unlock()
	cancel()
	<-feedDone
}
