package coordinator

import (
	"errors"
	"testing"

	"github.com/styx-inference/styx/scheduler/internal/state"
)

// Drain is the ledger's (which selects and marks the rows, see its tests)
// plus the shell's part: each selected worker's connection remembers the
// request, with its reason, to send on its stream; a refused Drain reaches
// no connection.
func TestDrainRequestsOnConnections(t *testing.T) {
	c := testCoordinator(t)
	for _, w := range []state.Worker{
		{ID: "a1", Host: "a", State: state.WorkerReady},
		{ID: "a2", Host: "a", State: state.WorkerDown},
		{ID: "b1", Host: "b", State: state.WorkerReady},
	} {
		if err := c.State().UpsertWorker(&w); err != nil {
			t.Fatal(err)
		}
		c.conns[w.ID] = &workerConn{id: w.ID}
	}
	var nf *NotFoundError
	if _, err := c.Drain([]string{"a1", "nope"}, "", "x"); !errors.As(err, &nf) {
		t.Fatalf("Drain with an unknown id: %v", err)
	}
	if _, err := c.Drain(nil, "", "x"); !errors.Is(err, ErrNothingSelected) {
		t.Fatalf("Drain of nothing: %v", err)
	}
	if d := c.conns["a1"].drainRequest(); d != nil {
		t.Fatalf("a refused Drain reached a1: %v", d)
	}
	got, err := c.Drain(nil, "a", "maintenance")
	if err != nil || len(got) != 2 {
		t.Fatalf("Drain(host a) = %v, %v", got, err)
	}
	for id, want := range map[string]bool{"a1": true, "a2": true, "b1": false} {
		d := c.conns[id].drainRequest()
		if (d != nil) != want || (d != nil && d.Reason != "maintenance") {
			t.Errorf("%s: drain request on the connection: %v", id, d)
		}
	}
	if ctr := c.ledger.Counters(); ctr.DrainRequests != 2 {
		t.Errorf("drain requests counted %d, want 2", ctr.DrainRequests)
	}
}
