package ledger

import (
	"bytes"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/styx-inference/styx/pkg/keyspace"
	"github.com/styx-inference/styx/pkg/verdict"
	"github.com/styx-inference/styx/scheduler/internal/pool"
	"github.com/styx-inference/styx/scheduler/internal/state"
)

var t0 = time.Unix(1_800_000_000, 0)

const term = 7

func testConfig() Config {
	return Config{
		Term:          term,
		BatchSize:     4,
		BatchInterval: 100 * time.Millisecond,
		MaxFailures:   2,
		Pool: pool.Config{
			MaxPending:  100,
			MaxAge:      int64(time.Hour),
			DedupWindow: int64(time.Minute),
			MaxRecent:   1000,
			MaxWaiters:  4,
			Policy:      pool.Policy{Mode: pool.ShedNewest},
		},
	}
}

// newLedger returns a ledger whose log the test can read; a test that
// logs an error fails unless it reads the log itself (logged).
func newLedger(t *testing.T, mod ...func(*Config)) *Ledger {
	t.Helper()
	cfg := testConfig()
	for _, m := range mod {
		m(&cfg)
	}
	buf := &bytes.Buffer{}
	l, err := New(cfg, zerolog.New(buf).Level(zerolog.DebugLevel))
	if err != nil {
		t.Fatal(err)
	}
	logs[l] = buf
	t.Cleanup(func() {
		if b := logs[l]; b != nil && strings.Contains(b.String(), `"level":"error"`) {
			t.Errorf("the ledger logged an error:\n%s", b)
		}
		delete(logs, l)
	})
	return l
}

// logs holds each test ledger's log.
var logs = map[*Ledger]*bytes.Buffer{}

// logged returns what l logged so far and forgets it.
func logged(l *Ledger) string {
	b := logs[l]
	out := b.String()
	b.Reset()
	return out
}

func addr(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)}) }

// join registers worker id, opens its session and grants credits.
func join(t *testing.T, l *Ledger, id string, session uint64, credits uint32) {
	t.Helper()
	if !l.Register(t0, keyspace.WorkerRegistration{ID: id, Addr: id + ":1", Host: "h-" + id, Capacity: int(credits)}) {
		t.Fatalf("register %s: no restart for a new worker", id)
	}
	l.SessionOpened(id, session, false)
	l.OnReady(id, session, credits, "m1", false)
}

// offer offers addresses [from, to) from node with ids equal to i.
func offer(l *Ledger, now time.Time, node string, from, to int) Effects {
	var ss []Sighting
	for i := from; i < to; i++ {
		ss = append(ss, Sighting{ID: uint64(i), Addr: addr(i), Seen: now.UnixNano()})
	}
	return l.Offer(now, node, ss)
}

// answer builds a valid result for s.
func answer(s Send) Result {
	vs := make([]verdict.Verdict, len(s.Addrs))
	for i := range vs {
		vs[i] = verdict.Verdict{Proxy: i%2 == 0, Type: "VPN", Risk: 90, ModelVersion: "m1", Inferred: t0}
	}
	return Result{Batch: s.Batch, Term: s.Term, Attempt: s.Attempt, Verdicts: vs}
}

func worker(t *testing.T, l *Ledger, id string) state.Worker {
	t.Helper()
	w, err := l.State().Snapshot().Worker(id)
	if err != nil {
		t.Fatalf("worker %s: %v", id, err)
	}
	return *w
}

func batch(t *testing.T, l *Ledger, id uint64) (state.Batch, bool) {
	t.Helper()
	var b state.Batch
	found := false
	_ = l.State().Update(func(tx *state.Txn) error {
		r, err := tx.Batch(id)
		if err == nil {
			b, found = *r, true
		}
		return errors.New("read only")
	})
	return b, found
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		mod  func(*Config)
		want string
	}{
		{func(c *Config) { c.Term = 0 }, "term"},
		{func(c *Config) { c.BatchSize = 0 }, "batch size"},
		{func(c *Config) { c.BatchInterval = 0 }, "batch interval"},
		{func(c *Config) { c.MaxFailures = 0 }, "max failures"},
		{func(c *Config) { c.Pool.MaxPending = 0 }, "max pending"},
	} {
		c := testConfig()
		tc.mod(&c)
		if _, err := New(c, zerolog.Nop()); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New: %v, want an error about %q", err, tc.want)
		}
	}
	if err := testConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	// The least valid values of each.
	c := testConfig()
	c.Term, c.BatchSize, c.BatchInterval, c.MaxFailures = 1, 1, 1, 1
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

// A transaction that fails (here: a registration without an id, which the
// schema refuses) changes nothing and is logged as an error.
func TestFailedTransactionLogged(t *testing.T) {
	l := newLedger(t)
	l.Register(t0, keyspace.WorkerRegistration{Addr: "a:1"})
	if out := logged(l); !strings.Contains(out, `"level":"error"`) || !strings.Contains(out, "register worker") {
		t.Fatalf("log = %s", out)
	}
	if ws, _ := l.State().Snapshot().Workers(nil); len(ws) != 0 {
		t.Fatalf("workers = %+v", ws)
	}
}

// A full batch goes out at once, to the worker with credits, carrying the
// term and attempt 1; a valid result answers every sighting and puts each
// verdict on the log.
func TestAssignAndResult(t *testing.T) {
	l := newLedger(t)
	join(t, l, "w1", 1, 2)
	if fx := offer(l, t0, "n1", 0, 4); len(fx.Outcomes)+len(fx.Rejected) != 0 {
		t.Fatalf("offer answered at once: %+v", fx)
	}
	if !l.FullBatch() {
		t.Fatal("4 pending of batch size 4 is not a full batch")
	}
	fx := l.Assign(t0)
	if len(fx.Sends) != 1 {
		t.Fatalf("sends = %+v, want 1", fx.Sends)
	}
	s := fx.Sends[0]
	if s.Worker != "w1" || s.Session != 1 || s.Term != term || s.Attempt != 1 || len(s.Addrs) != 4 || s.Addrs[0] != addr(0) {
		t.Fatalf("send = %+v", s)
	}
	if w := worker(t, l, "w1"); w.Credits != 1 || w.InFlight != 1 {
		t.Fatalf("after send: credits %d in flight %d", w.Credits, w.InFlight)
	}
	if b, ok := batch(t, l, s.Batch); !ok || b.State != state.BatchAssigned || b.WorkerID != "w1" || b.Session != 1 || b.Attempt != 1 || !b.AssignedAt.Equal(t0) {
		t.Fatalf("batch row = %+v", b)
	}
	now := t0.Add(time.Second)
	fx = l.OnResult(now, "w1", 1, 1, answer(s))
	if len(fx.Outcomes) != 4 || len(fx.Publish) != 4 {
		t.Fatalf("result: %d outcomes, %d published", len(fx.Outcomes), len(fx.Publish))
	}
	for i, o := range fx.Outcomes {
		if o.Kind != pool.KindVerdict || o.Waiter != (pool.Waiter{Node: "n1", ID: uint64(i)}) || o.Verdict.Risk != 90 {
			t.Errorf("outcome %d = %+v", i, o)
		}
		if fx.Publish[i].Addr != addr(i) || fx.Publish[i].Verdict != o.Verdict {
			t.Errorf("published %d = %+v", i, fx.Publish[i])
		}
	}
	w := worker(t, l, "w1")
	if w.Credits != 2 || w.InFlight != 0 || w.BatchesDone != 1 || w.AddrsDone != 4 || !w.LastResult.Equal(now) {
		t.Fatalf("worker after result: %+v", w)
	}
	if _, ok := batch(t, l, s.Batch); ok {
		t.Fatal("answered batch still in the table")
	}
	c := l.Counters()
	if c.Batches != 1 || c.Results != 1 || c.Verdicts != 4 || c.Proxies != 2 || c.StaleResults != 0 {
		t.Fatalf("counters = %+v", c)
	}
	// The same addresses again, from another node: answered from the
	// recent window, nothing sent.
	fx = offer(l, now, "n2", 0, 4)
	if len(fx.Outcomes) != 4 || fx.Outcomes[0].Verdict.Risk != 90 || fx.Outcomes[0].Waiter.Node != "n2" {
		t.Fatalf("repeat: %+v", fx.Outcomes)
	}
	if c := l.Counters(); c.Verdicts != 8 {
		t.Fatalf("verdicts counted %d, want 8", c.Verdicts)
	}
	// Non-verdict outcomes are not verdicts.
	offer(l, now.Add(-2*time.Hour), "n2", 50, 51)
	l.Offer(now, "n2", []Sighting{{ID: 60, Addr: addr(60), Seen: now.Add(-2 * time.Hour).UnixNano()}})
	if c := l.Counters(); c.Verdicts != 8 {
		t.Fatalf("an expiry counted as a verdict: %d", c.Verdicts)
	}
	if fx := l.Assign(now); len(fx.Sends) != 0 {
		t.Fatalf("repeat sent %+v", fx.Sends)
	}
}

// The fencing rule: a result counts only when it answers the batch as
// assigned now (term, worker, session, attempt); anything else is stale,
// counted, and changes nothing.
func TestResultFencing(t *testing.T) {
	for _, tc := range []struct {
		name string
		// mutate the result or how it is delivered; worker and session are
		// those the result arrives on.
		mod     func(*Result)
		worker  string
		session uint64
	}{
		{name: "old term", mod: func(r *Result) { r.Term = term - 1 }, worker: "w1", session: 1},
		{name: "newer term", mod: func(r *Result) { r.Term = term + 1 }, worker: "w1", session: 1},
		{name: "old attempt", mod: func(r *Result) { r.Attempt-- }, worker: "w1", session: 1},
		{name: "future attempt", mod: func(r *Result) { r.Attempt++ }, worker: "w1", session: 1},
		{name: "unknown batch", mod: func(r *Result) { r.Batch += 100 }, worker: "w1", session: 1},
		{name: "other worker", mod: func(*Result) {}, worker: "w2", session: 2},
		{name: "old session", mod: func(*Result) {}, worker: "w1", session: 99},
		{name: "unknown worker", mod: func(*Result) {}, worker: "ghost", session: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLedger(t)
			join(t, l, "w1", 1, 1)
			join(t, l, "w2", 2, 1)
			offer(l, t0, "n1", 0, 4)
			fx := l.Assign(t0)
			if len(fx.Sends) != 1 || fx.Sends[0].Worker != "w1" {
				t.Fatalf("sends = %+v", fx.Sends)
			}
			s := fx.Sends[0]
			r := answer(s)
			tc.mod(&r)
			before := worker(t, l, "w1")
			fx = l.OnResult(t0, tc.worker, tc.session, 0, r)
			if len(fx.Outcomes) != 0 || len(fx.Publish) != 0 {
				t.Fatalf("stale result delivered %d outcomes, published %d", len(fx.Outcomes), len(fx.Publish))
			}
			c := l.Counters()
			if c.StaleResults != 1 || c.Results != 0 {
				t.Fatalf("stale %d results %d, want 1 and 0", c.StaleResults, c.Results)
			}
			if b, ok := batch(t, l, s.Batch); !ok || b.State != state.BatchAssigned || b.WorkerID != "w1" {
				t.Fatalf("batch after a stale result: %+v (found %v)", b, ok)
			}
			if after := worker(t, l, "w1"); after.InFlight != before.InFlight || after.BatchesDone != 0 {
				t.Fatalf("w1 changed: %+v -> %+v", before, after)
			}
			// The real answer still counts.
			if fx := l.OnResult(t0, "w1", 1, 0, answer(s)); len(fx.Outcomes) != 4 {
				t.Fatalf("the real result after a stale one: %d outcomes", len(fx.Outcomes))
			}
		})
	}
}

// A result after its batch was reassigned (the worker lost it, another got
// it) is stale, and so is a second copy of an accepted result.
func TestLateAndDuplicateResults(t *testing.T) {
	l := newLedger(t, func(c *Config) { c.MaxFailures = 5 })
	join(t, l, "w1", 1, 1)
	offer(l, t0, "n1", 0, 4)
	first := l.Assign(t0).Sends[0]
	l.OnSessionLost(t0, "w1", 1, "stream ended")
	join2 := func() {
		l.SessionOpened("w1", 3, false)
		l.OnReady("w1", 3, 1, "m1", false)
	}
	join2()
	second := l.Assign(t0).Sends[0]
	if second.Batch != first.Batch || second.Attempt != 2 || second.Session != 3 {
		t.Fatalf("reassigned as %+v", second)
	}
	// The first attempt's result arrives late on the new session.
	if fx := l.OnResult(t0, "w1", 3, 0, answer(first)); len(fx.Outcomes) != 0 {
		t.Fatal("a late result of attempt 1 was accepted")
	}
	if fx := l.OnResult(t0, "w1", 3, 1, answer(second)); len(fx.Outcomes) != 4 {
		t.Fatalf("attempt 2: %d outcomes", len(fx.Outcomes))
	}
	if fx := l.OnResult(t0, "w1", 3, 0, answer(second)); len(fx.Outcomes) != 0 {
		t.Fatal("a duplicate result was accepted")
	}
	if c := l.Counters(); c.StaleResults != 2 || c.Results != 1 || c.Verdicts != 4 || c.Reassigned != 1 {
		t.Fatalf("counters = %+v", c)
	}
}

// Refusals: a refusal of the batch as assigned puts it back without a
// failure; any other refusal changes nothing but the count.
func TestRefusals(t *testing.T) {
	for _, tc := range []struct {
		name    string
		worker  string
		session uint64
		batch   func(Send) uint64
		attempt func(Send) uint32
		requeue bool
	}{
		{"as assigned", "w1", 1, func(s Send) uint64 { return s.Batch }, func(s Send) uint32 { return s.Attempt }, true},
		{"old attempt", "w1", 1, func(s Send) uint64 { return s.Batch }, func(s Send) uint32 { return s.Attempt - 1 }, false},
		{"unknown batch", "w1", 1, func(s Send) uint64 { return s.Batch + 9 }, func(s Send) uint32 { return s.Attempt }, false},
		{"old session", "w1", 5, func(s Send) uint64 { return s.Batch }, func(s Send) uint32 { return s.Attempt }, false},
		{"other worker", "w2", 2, func(s Send) uint64 { return s.Batch }, func(s Send) uint32 { return s.Attempt }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLedger(t)
			join(t, l, "w1", 1, 1)
			join(t, l, "w2", 2, 0)
			offer(l, t0, "n1", 0, 4)
			s := l.Assign(t0).Sends[0]
			l.OnRefusal(tc.worker, tc.session, 0, tc.batch(s), tc.attempt(s), "busy")
			b, _ := batch(t, l, s.Batch)
			w := worker(t, l, "w1")
			if tc.requeue {
				if b.State != state.BatchQueued || b.WorkerID != "" || b.Session != 0 || b.Failures != 0 || w.InFlight != 0 {
					t.Fatalf("refused batch %+v, worker in flight %d", b, w.InFlight)
				}
			} else if b.State != state.BatchAssigned || w.InFlight != 1 {
				t.Fatalf("a refusal that does not match changed the batch: %+v, in flight %d", b, w.InFlight)
			}
			wantRefusals := uint64(1)
			if tc.session == 5 { // an old session's refusal is not counted
				wantRefusals = 0
			}
			if c := l.Counters(); c.Refusals != wantRefusals || c.Reassigned != 0 {
				t.Fatalf("counters = %+v", c)
			}
		})
	}
}

// A refused batch goes out again with the next attempt.
func TestRefusedBatchRetried(t *testing.T) {
	l := newLedger(t)
	join(t, l, "w1", 1, 1)
	offer(l, t0, "n1", 0, 4)
	s := l.Assign(t0).Sends[0]
	l.OnRefusal("w1", 1, 1, s.Batch, s.Attempt, "draining")
	fx := l.Assign(t0)
	if len(fx.Sends) != 1 || fx.Sends[0].Batch != s.Batch || fx.Sends[0].Attempt != 2 {
		t.Fatalf("retry = %+v", fx.Sends)
	}
}

// A session lost with batches in flight: each batch is requeued with a
// failure counted, the worker is down with no credits; batches of another
// session of the same worker are not touched.
func TestSessionLost(t *testing.T) {
	l := newLedger(t, func(c *Config) { c.MaxFailures = 3 })
	join(t, l, "w1", 1, 2)
	join(t, l, "w2", 2, 1)
	offer(l, t0, "n1", 0, 12)
	fx := l.Assign(t0)
	if len(fx.Sends) != 3 {
		t.Fatalf("sends = %d, want 3", len(fx.Sends))
	}
	l.OnSessionLost(t0, "w1", 7, "old session") // not the current one
	if w := worker(t, l, "w1"); w.State != state.WorkerReady || w.InFlight != 2 {
		t.Fatalf("loss of another session changed w1: %+v", w)
	}
	if out := logged(l); strings.Contains(out, "lost its batches") {
		t.Fatalf("the loss of another session logged a loss:\n%s", out)
	}
	fx = l.OnSessionLost(t0, "w1", 1, "stream ended")
	if len(fx.Outcomes) != 0 {
		t.Fatalf("session loss answered %+v", fx.Outcomes)
	}
	if out := logged(l); !strings.Contains(out, `"count":2,"reason":"stream ended","message":"worker lost its batches; requeued"`) {
		t.Fatalf("the loss is not logged with its count:\n%s", out)
	}
	w := worker(t, l, "w1")
	if w.State != state.WorkerDown || w.Session != 0 || w.Credits != 0 || w.InFlight != 0 || w.Failures != 1 {
		t.Fatalf("w1 after loss: %+v", w)
	}
	queued := 0
	_ = l.State().Update(func(tx *state.Txn) error {
		bs, _ := tx.QueuedBatches()
		for _, b := range bs {
			queued++
			if b.Failures != 1 || b.WorkerID != "" {
				t.Errorf("requeued batch %+v", b)
			}
		}
		return errors.New("read only")
	})
	if queued != 2 {
		t.Fatalf("%d batches queued, want 2", queued)
	}
	if c := l.Counters(); c.Reassigned != 2 {
		t.Fatalf("reassigned = %d", c.Reassigned)
	}
	if w := worker(t, l, "w2"); w.InFlight != 1 || w.State != state.WorkerReady {
		t.Fatalf("w2 touched: %+v", w)
	}
	// w2 gets them back as its credits return.
	s2 := l.Assign(t0)
	if len(s2.Sends) != 0 {
		t.Fatalf("w2 without credits got %+v", s2.Sends)
	}
}
