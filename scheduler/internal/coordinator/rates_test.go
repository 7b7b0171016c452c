package coordinator

import (
	"math"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"

	"github.com/styx-inference/styx/pkg/attacks"
	"github.com/styx-inference/styx/pkg/recent"
	"github.com/styx-inference/styx/scheduler/internal/pool"
	"github.com/styx-inference/styx/scheduler/internal/state"
)

func testCoordinator(t *testing.T) *Coordinator {
	t.Helper()
	c, err := New(Config{
		SchedulerID: "s", Term: 1, BatchSize: 8, BatchInterval: time.Millisecond, MaxFailures: 3,
		MaxSubmitBatch: 8, OutQueue: 8,
		Pool:   pool.Config{MaxPending: 8, MaxAge: int64(time.Hour), DedupWindow: int64(time.Minute), MaxRecent: 8, MaxWaiters: 4, Policy: pool.Policy{Mode: pool.ShedNewest}},
		Dialer: func(string, string) (*grpc.ClientConn, error) { return nil, nil },
	}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// A worker's throughput is measured from its answered addresses between
// samples, averaged exponentially; a worker that left is forgotten.
func TestWorkerRates(t *testing.T) {
	c := testCoordinator(t)
	t0 := time.Unix(1000, 0)
	set := func(id string, done uint64) {
		if err := c.State().UpsertWorker(&state.Worker{ID: id, Host: "h", State: state.WorkerReady, AddrsDone: done}); err != nil {
			t.Fatal(err)
		}
	}
	sample := func(at time.Time) map[string]float64 {
		c.mu.Lock()
		c.sampleRatesLocked(at)
		c.mu.Unlock()
		return c.WorkerRates()
	}
	set("w1", 100)
	if r := sample(t0); r["w1"] != 0 {
		t.Fatalf("first sample: rate %v, want 0 (no interval yet)", r["w1"])
	}
	set("w1", 1100)
	if r := sample(t0.Add(time.Second)); r["w1"] != 1000 {
		t.Fatalf("after 1000 addresses in 1 s: %v", r["w1"])
	}
	// 2000/s for one second moves the average towards it by 1-e^-0.1.
	set("w1", 3100)
	want := 1000 + (1-math.Exp(-0.1))*1000
	if r := sample(t0.Add(2 * time.Second)); math.Abs(r["w1"]-want) > 1e-9 {
		t.Fatalf("rate %v, want %v", r["w1"], want)
	}
	if err := c.State().Update(func(t *state.Txn) error { return t.DeleteWorkerTxn("w1") }); err != nil {
		t.Fatal(err)
	}
	if r := sample(t0.Add(3 * time.Second)); len(r) != 0 {
		t.Fatalf("rates of a worker that left: %v", r)
	}
}

func mustRecentAttacks(t *testing.T, n int) *recent.Set[attacks.Key, struct{}] {
	t.Helper()
	s, err := recent.New[attacks.Key, struct{}](recent.Limits{MaxLen: n})
	if err != nil {
		t.Fatal(err)
	}
	return s
}
