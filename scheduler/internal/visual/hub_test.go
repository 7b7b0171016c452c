package visual

import (
	"bufio"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"
	"google.golang.org/grpc"

	"github.com/styx-inference/styx/pkg/keyspace"
	"github.com/styx-inference/styx/pkg/testwait"
	"github.com/styx-inference/styx/scheduler/internal/coordinator"
	"github.com/styx-inference/styx/scheduler/internal/pool"
	"github.com/styx-inference/styx/scheduler/internal/state"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeSource is a scheduler whose role the test sets.
type fakeSource struct {
	mu     sync.Mutex
	co     *coordinator.Coordinator
	leader keyspace.LeaderInfo
	ch     chan struct{}
}

func (f *fakeSource) ID() string { return "s1" }
func (f *fakeSource) Current() *coordinator.Coordinator {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.co
}
func (f *fakeSource) Leader() (keyspace.LeaderInfo, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.leader, f.leader.ID != ""
}
func (f *fakeSource) RoleChanged() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ch
}
func (f *fakeSource) set(co *coordinator.Coordinator, li keyspace.LeaderInfo) {
	f.mu.Lock()
	f.co, f.leader = co, li
	close(f.ch)
	f.ch = make(chan struct{})
	f.mu.Unlock()
}

func newCoordinator(t *testing.T, term int64) *coordinator.Coordinator {
	t.Helper()
	co, err := coordinator.New(coordinator.Config{
		SchedulerID: "s1", Term: term, BatchSize: 8, BatchInterval: time.Millisecond,
		Pool:        pool.Config{MaxPending: 10, MaxAge: int64(time.Hour), MaxWaiters: 1, Policy: pool.Policy{Mode: pool.ShedNewest}},
		MaxFailures: 1, MaxSubmitBatch: 8, OutQueue: 8,
		Dialer: func(string, string) (*grpc.ClientConn, error) { return nil, nil },
	}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	return co
}

// sse reads data lines from an event stream.
func sse(t *testing.T, url string) (frames <-chan string, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	ch := make(chan string, 64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(ch)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				ch <- d
			}
		}
	}()
	return ch, func() { cancel(); resp.Body.Close(); <-done }
}

func next(t *testing.T, frames <-chan string, what string, ok func(string) bool) string {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case f, open := <-frames:
			if !open {
				t.Fatalf("stream ended waiting for %s", what)
			}
			if ok(f) {
				return f
			}
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func TestHubFollowsRoleAndWatchSets(t *testing.T) {
	src := &fakeSource{ch: make(chan struct{})}
	src.set(nil, keyspace.LeaderInfo{ID: "s2", HTTPAddr: "127.0.0.1:9"})
	h := New(Config{MinInterval: 10 * time.Millisecond, Refresh: time.Hour}, src, zerolog.Nop())
	ctx, cancel := context.WithCancel(context.Background())
	hubDone := make(chan struct{})
	go func() { h.Run(ctx); close(hubDone) }()
	srv := httptest.NewServer(http.HandlerFunc(h.ServeEvents))
	defer srv.Close()

	frames, stop := sse(t, srv.URL)
	next(t, frames, "the follower's frame", func(f string) bool {
		return strings.Contains(f, `"lead":false`) && strings.Contains(f, `"leader":"s2"`) && strings.Contains(f, `"lhttp":"127.0.0.1:9"`)
	})

	// Taking over is a role change: a full frame.
	co := newCoordinator(t, 5)
	src.set(co, keyspace.LeaderInfo{ID: "s1"})
	next(t, frames, "the leader's frame", func(f string) bool {
		return strings.HasPrefix(f, `{"full":1`) && strings.Contains(f, `"lead":true,"term":5`)
	})

	// A row written to memdb wakes the hub through the watch set.
	if err := co.State().UpsertWorker(&state.Worker{ID: "w1", Host: "host-a", NUMANode: 1, CPUs: "0-7", Capacity: 4, State: state.WorkerReady, Credits: 4}); err != nil {
		t.Fatal(err)
	}
	next(t, frames, "w1 joins", func(f string) bool {
		return !strings.Contains(f, `"full"`) && strings.Contains(f, `"id":"w1","h":"host-a","n":1,"c":"0-7","cores":8,"cap":4,"cr":4`)
	})
	if err := co.State().Update(func(tx *state.Txn) error {
		w, err := tx.Worker("w1")
		if err != nil {
			return err
		}
		nw := *w
		nw.Credits, nw.InFlight, nw.BatchesDone = 1, 3, 2
		return tx.UpsertWorkerTxn(&nw)
	}); err != nil {
		t.Fatal(err)
	}
	next(t, frames, "w1's counters", func(f string) bool { return strings.Contains(f, `"w":[[1,1,3,2,`) })
	if err := co.State().Update(func(tx *state.Txn) error { return tx.DeleteWorkerTxn("w1") }); err != nil {
		t.Fatal(err)
	}
	next(t, frames, "w1 leaves", func(f string) bool { return strings.Contains(f, `"rm":[1]`) })
	if n := len(h.Streams()); n != 1 {
		t.Fatalf("%d streams, want 1", n)
	}

	// A client that goes away ends its handler; so does stopping the hub.
	stop()
	testwait.For(t, 5*time.Second, "the stream handler to end after the client left", func() bool { return len(h.Streams()) == 0 })
	frames, stop = sse(t, srv.URL)
	next(t, frames, "a fresh full frame", func(f string) bool { return strings.HasPrefix(f, `{"full":1`) })
	cancel()
	<-hubDone
	for range frames {
	}
	stop()
}
