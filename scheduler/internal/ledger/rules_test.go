package ledger

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/styx-inference/styx/pkg/keyspace"
	"github.com/styx-inference/styx/pkg/verdict"
	"github.com/styx-inference/styx/scheduler/internal/pool"
	"github.com/styx-inference/styx/scheduler/internal/state"
)

// queued lists the queued batch rows, oldest first.
func queued(t *testing.T, l *Ledger) []state.Batch {
	t.Helper()
	var out []state.Batch
	_ = l.State().Update(func(tx *state.Txn) error {
		bs, err := tx.QueuedBatches()
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range bs {
			out = append(out, *b)
		}
		return errors.New("read only")
	})
	return out
}

// A batch that keeps failing is split in halves after MaxFailures; a half
// that fails again splits again; a single address that fails is poison and
// ends in exactly one outcome, an error verdict. The other addresses are
// answered normally, each exactly once.
func TestSplitAndPoison(t *testing.T) {
	l := newLedger(t) // MaxFailures 2, batch size 4
	join(t, l, "w1", 1, 1)
	offer(l, t0, "n1", 0, 4)
	poison := addr(2)
	outcomes := map[uint64]int{}
	var errs []uint64
	session := uint64(1)
	for round := 0; round < 50; round++ {
		fx := l.Assign(t0)
		if len(fx.Sends) == 0 {
			break
		}
		s := fx.Sends[0]
		var out Effects
		if slices.Contains(s.Addrs, poison) {
			// The worker dies on it.
			out = l.OnSessionLost(t0, "w1", session, "crashed")
			session++
			l.SessionOpened("w1", session, false)
			l.OnReady("w1", session, 1, "m1", false)
		} else {
			out = l.OnResult(t0, "w1", session, 1, answer(s))
		}
		for _, o := range out.Outcomes {
			outcomes[o.Waiter.ID]++
			if o.Verdict != nil && o.Verdict.Error != "" {
				errs = append(errs, o.Waiter.ID)
			}
		}
	}
	for i := range uint64(4) {
		if outcomes[i] != 1 {
			t.Errorf("sighting %d ended in %d outcomes, want 1", i, outcomes[i])
		}
	}
	if !slices.Equal(errs, []uint64{2}) {
		t.Fatalf("error verdicts for %v, want [2]", errs)
	}
	c := l.Counters()
	// 4 -> fails twice -> split (2+2); the half with 2 fails once (its
	// failures start at MaxFailures-1) -> split (1+1); the single one
	// fails once -> poison.
	if c.Splits != 2 || c.Poisoned != 1 || c.Reassigned != 1 {
		t.Fatalf("counters = %+v", c)
	}
	if q := queued(t, l); len(q) != 0 {
		t.Fatalf("batches left: %+v", q)
	}
}

// The rule of dispatch.OnFailure as the ledger applies it, step by step.
func TestFailureSteps(t *testing.T) {
	l := newLedger(t, func(c *Config) { c.MaxFailures = 3 })
	join(t, l, "w1", 1, 1)
	offer(l, t0, "n1", 0, 4)
	for i := 1; i <= 2; i++ {
		s := l.Assign(t0).Sends[0]
		l.OnSessionLost(t0, "w1", uint64(i), "x")
		l.SessionOpened("w1", uint64(i+1), false)
		l.OnReady("w1", uint64(i+1), 1, "", false)
		q := queued(t, l)
		if len(q) != 1 || q[0].ID != s.Batch || q[0].Failures != uint32(i) || q[0].Size != 4 {
			t.Fatalf("after failure %d: %+v", i, q)
		}
	}
	l.Assign(t0)
	l.OnSessionLost(t0, "w1", 3, "x")
	q := queued(t, l)
	if len(q) != 2 || q[0].Size != 2 || q[1].Size != 2 || q[0].Failures != 2 || !q[0].Created.Equal(t0) {
		t.Fatalf("after the third failure: %+v", q)
	}
	if q[0].Entries[0].Addr != addr(0) || q[1].Entries[0].Addr != addr(2) {
		t.Fatalf("halves: %v / %v", q[0].Entries[0].Addr, q[1].Entries[0].Addr)
	}
}

// A malformed result fails its batch like a lost worker: requeued with a
// failure counted, the worker's in-flight count released, nothing
// answered; the sightings still end in exactly one outcome.
func TestMalformedResult(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Result)
	}{
		{"decode error", func(r *Result) { r.Malformed = errors.New("ragged columns") }},
		{"too few verdicts", func(r *Result) { r.Verdicts = r.Verdicts[:3] }},
		{"too many verdicts", func(r *Result) { r.Verdicts = append(r.Verdicts, verdict.Verdict{}) }},
		{"no verdicts", func(r *Result) { r.Verdicts = nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLedger(t)
			join(t, l, "w1", 1, 1)
			offer(l, t0, "n1", 0, 4)
			s := l.Assign(t0).Sends[0]
			r := answer(s)
			tc.mod(&r)
			fx := l.OnResult(t0, "w1", 1, 1, r)
			if len(fx.Outcomes) != 0 || len(fx.Publish) != 0 {
				t.Fatalf("malformed result answered: %+v", fx)
			}
			if w := worker(t, l, "w1"); w.InFlight != 0 || w.Credits != 1 || w.BatchesDone != 0 {
				t.Fatalf("worker = %+v", w)
			}
			q := queued(t, l)
			if len(q) != 1 || q[0].Failures != 1 {
				t.Fatalf("queued = %+v", q)
			}
			if c := l.Counters(); c.Malformed != 1 || c.Results != 0 || c.Reassigned != 1 {
				t.Fatalf("counters = %+v", c)
			}
			s2 := l.Assign(t0).Sends[0]
			if fx := l.OnResult(t0, "w1", 1, 1, answer(s2)); len(fx.Outcomes) != 4 {
				t.Fatalf("retry: %d outcomes", len(fx.Outcomes))
			}
		})
	}
}

// Expiry at the maximum age: a sighting of exactly MaxAge is kept, one
// nanosecond more expires, with a notice; also on arrival, and for the
// addresses of a retried batch that waited too long.
func TestExpiry(t *testing.T) {
	l := newLedger(t)
	maxAge := time.Hour
	// On arrival.
	old := []Sighting{{ID: 1, Addr: addr(1), Seen: t0.Add(-maxAge - 1).UnixNano()}, {ID: 2, Addr: addr(2), Seen: t0.Add(-maxAge).UnixNano()}}
	fx := l.Offer(t0, "n1", old)
	if len(fx.Outcomes) != 1 || fx.Outcomes[0].Waiter.ID != 1 || fx.Outcomes[0].Kind != pool.KindExpired || fx.Outcomes[0].Reason == "" {
		t.Fatalf("arrival: %+v", fx.Outcomes)
	}
	// Pending: Sweep at exactly max age keeps it, one ns later expires it.
	if fx := l.Sweep(t0); len(fx.Outcomes) != 0 {
		t.Fatalf("sweep at max age: %+v", fx.Outcomes)
	}
	fx = l.Sweep(t0.Add(1))
	if len(fx.Outcomes) != 1 || fx.Outcomes[0].Waiter.ID != 2 || fx.Outcomes[0].Kind != pool.KindExpired {
		t.Fatalf("sweep past max age: %+v", fx.Outcomes)
	}
	// A retried batch whose addresses passed max age while queued.
	join(t, l, "w1", 1, 1)
	offer(l, t0, "n1", 10, 14)
	s := l.Assign(t0).Sends[0]
	l.OnRefusal("w1", 1, 1, s.Batch, s.Attempt, "busy")
	late := t0.Add(maxAge + 1)
	offer(l, late, "n1", 20, 24) // fresh work behind the emptied batch
	fx = l.Assign(late)
	if len(fx.Sends) != 1 || fx.Sends[0].Addrs[0] != addr(20) || len(fx.Outcomes) != 4 {
		t.Fatalf("stale retry: %d sends, %d outcomes", len(fx.Sends), len(fx.Outcomes))
	}
	for _, o := range fx.Outcomes {
		if o.Kind != pool.KindExpired || o.Waiter.ID < 10 || o.Waiter.ID >= 14 {
			t.Fatalf("outcome %+v", o)
		}
	}
	if q := queued(t, l); len(q) != 0 {
		t.Fatalf("an emptied batch stayed: %+v", q)
	}
}

// A partial batch waits one batch interval for more addresses.
func TestBatchInterval(t *testing.T) {
	l := newLedger(t)
	join(t, l, "w1", 1, 4)
	offer(l, t0, "n1", 0, 3)
	if l.FullBatch() {
		t.Fatal("3 of 4 is a full batch")
	}
	if fx := l.Assign(t0.Add(99 * time.Millisecond)); len(fx.Sends) != 0 {
		t.Fatalf("partial batch sent early: %+v", fx.Sends)
	}
	fx := l.Assign(t0.Add(100 * time.Millisecond))
	if len(fx.Sends) != 1 || len(fx.Sends[0].Addrs) != 3 {
		t.Fatalf("partial batch at the interval: %+v", fx.Sends)
	}
	if fx := l.Assign(t0.Add(time.Hour)); len(fx.Sends) != 0 {
		t.Fatalf("empty pool sent %+v", fx.Sends)
	}
}

// Credits are never exceeded: a worker holds at most what it granted, and
// no more than maxCredits whatever it grants.
func TestCredits(t *testing.T) {
	l := newLedger(t, func(c *Config) { c.Pool.MaxPending = 1000 })
	join(t, l, "w1", 1, 3)
	offer(l, t0, "n1", 0, 40)
	fx := l.Assign(t0)
	if len(fx.Sends) != 3 {
		t.Fatalf("3 credits, %d sends", len(fx.Sends))
	}
	if w := worker(t, l, "w1"); w.Credits != 0 || w.InFlight != 3 {
		t.Fatalf("worker = %+v", w)
	}
	l.OnCredit("w1", 1, 1)
	if fx := l.Assign(t0); len(fx.Sends) != 1 {
		t.Fatalf("1 more credit, %d sends", len(fx.Sends))
	}
	l.OnCredit("w1", 1, 1<<31)
	l.OnCredit("w1", 1, 1<<31)
	if w := worker(t, l, "w1"); w.Credits != maxCredits {
		t.Fatalf("credits = %d, want the cap %d", w.Credits, maxCredits)
	}
	l.OnCredit("w1", 99, 5) // an old session grants nothing
	if w := worker(t, l, "w1"); w.Credits != maxCredits {
		t.Fatalf("an old session's grant counted: %d", w.Credits)
	}
}

// Workers of different capacity fill in proportion; a draining or down
// worker gets nothing.
func TestAssignSkipsNotReady(t *testing.T) {
	l := newLedger(t, func(c *Config) { c.Pool.MaxPending = 1000 })
	join(t, l, "a", 1, 4)
	join(t, l, "b", 2, 4)
	join(t, l, "c", 3, 4)
	l.OnReady("b", 2, 0, "m1", true) // b says it is draining
	l.OnSessionLost(t0, "c", 3, "gone")
	offer(l, t0, "n1", 0, 40)
	for _, s := range l.Assign(t0).Sends {
		if s.Worker != "a" {
			t.Fatalf("sent to %s", s.Worker)
		}
	}
	if w := worker(t, l, "b"); w.State != state.WorkerDraining {
		t.Fatalf("b = %s", w.State)
	}
}

// Shedding: each policy as the ledger's Offer applies it.
func TestShedding(t *testing.T) {
	for _, tc := range []struct {
		policy pool.Policy
		// outcomes of 6 new addresses into a pool of 4
		wantShed []uint64
	}{
		{pool.Policy{Mode: pool.ShedNewest}, []uint64{4, 5}},
		{pool.Policy{Mode: pool.ShedOldest}, []uint64{0, 1}},
	} {
		t.Run(tc.policy.Mode, func(t *testing.T) {
			l := newLedger(t, func(c *Config) { c.Pool.MaxPending = 4; c.Pool.Policy = tc.policy })
			fx := offer(l, t0, "n1", 0, 6)
			var shed []uint64
			for _, o := range fx.Outcomes {
				if o.Kind != pool.KindShed || o.Reason == "" {
					t.Fatalf("outcome %+v", o)
				}
				shed = append(shed, o.Waiter.ID)
			}
			if !slices.Equal(shed, tc.wantShed) {
				t.Fatalf("shed %v, want %v", shed, tc.wantShed)
			}
		})
	}
	t.Run("sample", func(t *testing.T) {
		l := newLedger(t, func(c *Config) {
			c.Pool.MaxPending = 1000
			c.Pool.Policy = pool.Policy{Mode: pool.ShedSample, SampleN: 5}
		})
		offer(l, t0, "n1", 0, 500) // up to the high-water mark
		fx := offer(l, t0, "n1", 500, 1500)
		shed := 0
		for _, o := range fx.Outcomes {
			if o.Kind == pool.KindShed {
				shed++
			}
		}
		// About 4 in 5 shed while overloaded, all once full.
		if shed < 700 || shed > 900 {
			t.Fatalf("sample 1/5 shed %d of 1000", shed)
		}
	})
	l := newLedger(t)
	if err := l.SetPolicy(pool.Policy{Mode: "bogus"}); err == nil {
		t.Fatal("a bogus policy was taken")
	}
	if err := l.SetPolicy(pool.Policy{Mode: pool.ShedOldest}); err != nil {
		t.Fatal(err)
	}
	if _, p, _ := l.PoolStats(t0); p.Mode != pool.ShedOldest {
		t.Fatalf("policy = %v", p)
	}
}

// Invalid sightings are rejected, each with one outcome and the reason.
func TestRejections(t *testing.T) {
	l := newLedger(t)
	l.Attach(t0, "n1", 1)
	fx := l.Offer(t0, "n1", []Sighting{{ID: 1}, {ID: 2, Addr: netip.IPv6Unspecified()}, {ID: 3, Addr: addr(5)}})
	if len(fx.Rejected) != 2 || fx.Rejected[0] != (Rejection{Node: "n1", ID: 1, Reason: "unspecified address"}) || fx.Rejected[1].ID != 2 {
		t.Fatalf("rejected = %+v", fx.Rejected)
	}
	fx = l.Reject("n1", []uint64{7, 8}, "malformed sighting batch")
	if len(fx.Rejected) != 2 || fx.Rejected[1].ID != 8 || fx.Rejected[1].Reason != "malformed sighting batch" {
		t.Fatalf("rejected = %+v", fx.Rejected)
	}
	if c := l.Counters(); c.Rejected != 4 {
		t.Fatalf("rejected counted %d", c.Rejected)
	}
	subs, _ := l.State().Snapshot().Submitters(nil)
	if len(subs) != 1 || subs[0].Received != 5 {
		t.Fatalf("submitters = %+v", subs)
	}
}

// Node sessions: a newer session keeps the totals; only the current
// session's detach marks the node gone.
func TestNodeSessions(t *testing.T) {
	l := newLedger(t)
	l.Attach(t0, "n1", 1)
	offer(l, t0, "n1", 0, 3)
	l.Attach(t0.Add(time.Second), "n1", 2)
	l.Detach("n1", 1) // the old session's stream closes late
	l.Detach("ghost", 1)
	// A log report counts from the current session only.
	report := state.NodeLog{At: t0, Lag: 7, LagSeconds: 1.5, Connected: true, Stalled: true}
	l.NodeLog("n1", 2, report)
	l.NodeLog("n1", 1, state.NodeLog{Lag: 99}) // the old session's, late
	l.NodeLog("ghost", 1, report)
	subs, _ := l.State().Snapshot().Submitters(nil)
	if len(subs) != 1 || !subs[0].Connected || subs[0].Session != 2 || subs[0].Received != 3 || !subs[0].Since.Equal(t0.Add(time.Second)) {
		t.Fatalf("after the old session's detach: %+v", subs)
	}
	if subs[0].Log != report {
		t.Fatalf("log status %+v, want %+v", subs[0].Log, report)
	}
	l.Detach("n1", 2)
	subs, _ = l.State().Snapshot().Submitters(nil)
	if subs[0].Connected {
		t.Fatal("still connected after its session detached")
	}
	// Sightings of a node never attached are still taken.
	if fx := offer(l, t0, "n9", 100, 101); len(fx.Rejected) != 0 {
		t.Fatal(fx)
	}
}

// Registration: a new worker starts connecting; the same address updates
// the row; a new address starts over.
func TestRegister(t *testing.T) {
	l := newLedger(t)
	reg := keyspace.WorkerRegistration{ID: "w1", Addr: "a:1", Host: "h", Capacity: 0, ModelVersion: "m1"}
	if !l.Register(t0, reg) {
		t.Fatal("a new worker needs a connection")
	}
	w := worker(t, l, "w1")
	if w.State != state.WorkerConnecting || w.Capacity != 1 || !w.Since.Equal(t0) {
		t.Fatalf("new row = %+v", w)
	}
	l.SessionOpened("w1", 4, false)
	l.OnReady("w1", 4, 2, "m2", false)
	if w := worker(t, l, "w1"); w.ModelVersion != "m2" || w.State != state.WorkerReady || w.Credits != 2 {
		t.Fatalf("after Ready: %+v", w)
	}
	reg.Capacity, reg.ModelVersion, reg.NUMANode, reg.CPUs, reg.Draining = 8, "m3", 1, "0-3", true
	if l.Register(t0.Add(time.Second), reg) {
		t.Fatal("the same address restarted the connection")
	}
	w = worker(t, l, "w1")
	if w.Capacity != 8 || w.ModelVersion != "m3" || w.NUMANode != 1 || w.CPUs != "0-3" || w.State != state.WorkerDraining || w.Session != 4 || w.Credits != 2 {
		t.Fatalf("updated row = %+v", w)
	}
	reg.Addr, reg.Draining = "b:2", false
	if !l.Register(t0.Add(2*time.Second), reg) {
		t.Fatal("a new address needs a new connection")
	}
	if w := worker(t, l, "w1"); w.State != state.WorkerConnecting || w.Addr != "b:2" || w.Session != 0 {
		t.Fatalf("moved row = %+v", w)
	}
	// A draining registration of a down worker does not make it ready.
	l.SessionOpened("w1", 5, true)
	if w := worker(t, l, "w1"); w.State != state.WorkerDraining {
		t.Fatalf("opened draining: %s", w.State)
	}
	l.SessionOpened("ghost", 1, false) // unknown: nothing
	l.OnReady("ghost", 1, 1, "", false)
	if _, err := l.State().Snapshot().Worker("ghost"); err == nil {
		t.Fatal("a ghost row appeared")
	}
}

// A worker whose registration leaves: its batches are requeued with a
// failure counted, its row goes; it counts as drained only when it was.
func TestDeregister(t *testing.T) {
	for _, tc := range []struct {
		name        string
		regDraining bool
		drain       bool // an operator asked
		ready       bool // it said draining in Ready
		drained     bool
	}{
		{name: "lease lost"},
		{name: "registration said draining", regDraining: true, drained: true},
		{name: "operator drain", drain: true, drained: true},
		{name: "worker said draining", ready: true, drained: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLedger(t)
			join(t, l, "w1", 1, 1)
			offer(l, t0, "n1", 0, 4)
			s := l.Assign(t0).Sends[0]
			if tc.drain {
				if _, _, err := l.Drain([]string{"w1"}, ""); err != nil {
					t.Fatal(err)
				}
			}
			if tc.ready {
				l.OnReady("w1", 1, 0, "", true)
			}
			fx, known, drained := l.Deregister(t0, "w1", tc.regDraining)
			if !known || drained != tc.drained || len(fx.Outcomes) != 0 {
				t.Fatalf("known %v drained %v outcomes %d", known, drained, len(fx.Outcomes))
			}
			if _, err := l.State().Snapshot().Worker("w1"); !errors.Is(err, state.ErrNotFound) {
				t.Fatalf("row still there: %v", err)
			}
			q := queued(t, l)
			if len(q) != 1 || q[0].ID != s.Batch || q[0].Failures != 1 {
				t.Fatalf("queued = %+v", q)
			}
			c := l.Counters()
			if (c.WorkersDrained == 1) != tc.drained || (c.LeaseLosses == 1) == tc.drained {
				t.Fatalf("counters = %+v", c)
			}
			// Its late result is stale.
			if fx := l.OnResult(t0, "w1", 1, 0, answer(s)); len(fx.Outcomes) != 0 || l.Counters().StaleResults != 1 {
				t.Fatal("a result after the lease went counted")
			}
		})
	}
	l := newLedger(t)
	if _, known, _ := l.Deregister(t0, "ghost", false); known {
		t.Fatal("an unknown worker is known")
	}
	if c := l.Counters(); c.LeaseLosses != 0 {
		t.Fatalf("counters = %+v", c)
	}
}

// Drain selects by id and host, turns ready rows draining and marks every
// selected one; an unknown id or an empty host changes nothing.
func TestDrain(t *testing.T) {
	l := newLedger(t)
	for _, w := range []state.Worker{
		{ID: "a1", Host: "a", State: state.WorkerReady},
		{ID: "a2", Host: "a", State: state.WorkerDown},
		{ID: "b1", Host: "b", State: state.WorkerReady},
		{ID: "c1", Host: "c", State: state.WorkerReady},
	} {
		if err := l.State().UpsertWorker(&w); err != nil {
			t.Fatal(err)
		}
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
		_, fx, err := l.Drain(tc.ids, tc.host)
		var nf *NotFoundError
		if !errors.As(err, &nf) || err.Error() != tc.wantErr || len(fx.Drains) != 0 {
			t.Errorf("Drain(%v, %q) = %v, want %q", tc.ids, tc.host, err, tc.wantErr)
		}
	}
	if _, _, err := l.Drain(nil, ""); !errors.Is(err, ErrNothingSelected) {
		t.Errorf("Drain of nothing: %v", err)
	}
	if w := worker(t, l, "a1"); w.DrainRequested || w.State != state.WorkerReady {
		t.Fatalf("a failed Drain changed a1: %+v", w)
	}
	got, fx, err := l.Drain([]string{"c1"}, "a")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, w := range got {
		ids = append(ids, w.ID)
	}
	if want := []string{"a1", "a2", "c1"}; !slices.Equal(ids, want) || !slices.Equal(fx.Drains, want) {
		t.Fatalf("drained %v (effects %v), want %v", ids, fx.Drains, want)
	}
	for id, want := range map[string]string{"a1": state.WorkerDraining, "a2": state.WorkerDown, "b1": state.WorkerReady, "c1": state.WorkerDraining} {
		if w := worker(t, l, id); w.State != want || w.DrainRequested != (id != "b1") {
			t.Errorf("%s: state %s, drain requested %v; want %s", id, w.State, w.DrainRequested, want)
		}
	}
	if c := l.Counters(); c.DrainRequests != 3 {
		t.Errorf("drain requests counted %d, want 3", c.DrainRequests)
	}
	// A drained worker whose stream reopens stays draining.
	l.SessionOpened("a2", 9, false)
	if w := worker(t, l, "a2"); w.State != state.WorkerDraining {
		t.Fatalf("a2 reopened as %s", w.State)
	}
	var nf NotFoundError
	if nf.Error() != "" || !strings.Contains((&NotFoundError{IDs: []string{"p", "q"}}).Error(), "p, q") {
		t.Fatal("NotFoundError text")
	}
}

// Two nodes sighting the same address: inferred once, both answered.
func TestDedupAcrossNodes(t *testing.T) {
	l := newLedger(t)
	join(t, l, "w1", 1, 1)
	l.Offer(t0, "n1", []Sighting{{ID: 1, Addr: addr(1)}})
	l.Offer(t0, "n2", []Sighting{{ID: 9, Addr: addr(1)}})
	l.Offer(t0, "n1", []Sighting{{ID: 1, Addr: addr(1)}}) // re-sent
	fx := l.Assign(t0.Add(time.Second))
	if len(fx.Sends) != 1 || len(fx.Sends[0].Addrs) != 1 {
		t.Fatalf("sends = %+v", fx.Sends)
	}
	fx = l.OnResult(t0, "w1", 1, 0, answer(fx.Sends[0]))
	var got []string
	for _, o := range fx.Outcomes {
		got = append(got, fmt.Sprintf("%s/%d", o.Waiter.Node, o.Waiter.ID))
	}
	if !slices.Equal(got, []string{"n1/1", "n2/9"}) || len(fx.Publish) != 1 {
		t.Fatalf("outcomes %v, published %d", got, len(fx.Publish))
	}
	if st, _, _ := l.PoolStats(t0); st.Examined != 1 || st.Unique != 1 {
		t.Fatalf("stats = %+v", st)
	}
}

// PoolStats reports how long the oldest pending address has waited.
func TestPoolAge(t *testing.T) {
	l := newLedger(t)
	if _, _, age := l.PoolStats(t0); age != 0 {
		t.Fatalf("age with nothing pending = %v", age)
	}
	offer(l, t0, "n1", 10, 11)
	if _, _, age := l.PoolStats(t0.Add(time.Second)); age != time.Second {
		t.Fatalf("oldest pending age = %v", age)
	}
}
