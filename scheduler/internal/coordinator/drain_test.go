package coordinator

import (
	"errors"
	"slices"
	"testing"

	"github.com/styx-inference/styx/scheduler/internal/state"
)

// Drain selects workers by id and by host, marks them draining at once (so
// dispatch skips them) and remembers the request on their connections; an
// unknown id or an empty host changes nothing.
func TestDrainSelects(t *testing.T) {
	c := testCoordinator(t)
	for _, w := range []state.Worker{
		{ID: "a1", Host: "a", State: state.WorkerReady},
		{ID: "a2", Host: "a", State: state.WorkerDown},
		{ID: "b1", Host: "b", State: state.WorkerReady},
		{ID: "c1", Host: "c", State: state.WorkerReady},
	} {
		if err := c.State().UpsertWorker(&w); err != nil {
			t.Fatal(err)
		}
		c.conns[w.ID] = &workerConn{id: w.ID}
	}
	ids := func(ws []state.Worker) []string {
		var out []string
		for _, w := range ws {
			out = append(out, w.ID)
		}
		return out
	}

	for _, tc := range []struct {
		ids     []string
		host    string
		wantErr string
	}{
		{ids: []string{"nope", "a1"}, wantErr: "no such worker: nope"},
		{host: "z", wantErr: `no worker on host "z"`},
		{ids: []string{"x"}, host: "z", wantErr: `no such worker: x; no worker on host "z"`},
	} {
		_, err := c.Drain(tc.ids, tc.host, "test")
		var nf *NotFoundError
		if !errors.As(err, &nf) || err.Error() != tc.wantErr {
			t.Errorf("Drain(%v, %q) = %v, want %q", tc.ids, tc.host, err, tc.wantErr)
		}
	}
	if _, err := c.Drain(nil, "", "test"); !errors.Is(err, ErrNothingSelected) {
		t.Errorf("Drain of nothing: %v", err)
	}
	if w, _ := c.State().Snapshot().Worker("a1"); w.DrainRequested || w.State != state.WorkerReady {
		t.Fatalf("a failed Drain changed a1: %+v", w)
	}

	got, err := c.Drain([]string{"c1"}, "a", "maintenance")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"a1", "a2", "c1"}; !slices.Equal(ids(got), want) {
		t.Fatalf("drained %v, want %v", ids(got), want)
	}
	for id, want := range map[string]string{"a1": state.WorkerDraining, "a2": state.WorkerDown, "b1": state.WorkerReady, "c1": state.WorkerDraining} {
		w, _ := c.State().Snapshot().Worker(id)
		if w.State != want || w.DrainRequested != (id != "b1") {
			t.Errorf("%s: state %s, drain requested %v; want %s", id, w.State, w.DrainRequested, want)
		}
		if d := c.conns[id].drainRequest(); (d != nil) != (id != "b1") || (d != nil && d.Reason != "maintenance") {
			t.Errorf("%s: drain request on the connection: %v", id, d)
		}
	}
	if ctr := c.ledger.Counters(); ctr.DrainRequests != 3 {
		t.Errorf("drain requests counted %d, want 3", ctr.DrainRequests)
	}
}
