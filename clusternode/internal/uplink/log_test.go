package uplink

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"github.com/styx-inference/styx/clusternode/internal/fakesched"
	"github.com/styx-inference/styx/pkg/attacks"
	"github.com/styx-inference/styx/pkg/columns"
	"github.com/styx-inference/styx/pkg/embednats/natstest"
	"github.com/styx-inference/styx/pkg/testwait"
	"github.com/styx-inference/styx/pkg/verdictlog"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

// testLog is an embedded JetStream server holding the verdict log's
// streams, and a JetStream handle to it.
type testLog struct {
	js jetstream.JetStream
}

func startLog(t *testing.T) *testLog {
	t.Helper()
	srv := natstest.Start(t)
	nc, err := verdictlog.Connect(srv.URL(), "uplink-test", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := verdictlog.Ensure(t.Context(), js, verdictlog.DefaultPolicy()); err != nil {
		t.Fatal(err)
	}
	return &testLog{js: js}
}

// publish stores b on subject as the leader's publisher would, and returns
// its stream sequence.
func (l *testLog) publish(t *testing.T, subject string, b *styxv1.LogBatch) uint64 {
	t.Helper()
	data, err := proto.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	ack, err := l.js.Publish(t.Context(), subject, data)
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

// follow runs a follower of both streams into h's uplink and store until
// the test ends.
func (h *harness) follow(l *testLog) {
	h.t.Helper()
	f, err := verdictlog.NewFollower(verdictlog.FollowerConfig{
		JS: l.js, Cursor: h.store.Cursor, Apply: h.up.ApplyLog, CheckEvery: 50 * time.Millisecond,
	}, zerolog.Nop())
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	h.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			h.t.Errorf("follower: %v", err)
		}
	})
}

func logVerdict(a netip.Addr, proxy bool, inferred int64) *styxv1.Verdict {
	return &styxv1.Verdict{Address: a.AsSlice(), Proxy: proxy, Type: "Hosting", Risk: 50, InferredUnixNano: inferred}
}

// Verdicts and attack reports on the log land in the store with each
// stream's cursor; unusable verdicts and reports are skipped and counted,
// and reports from the log do not enter the outbox.
func TestLogApplied(t *testing.T) {
	l := startLog(t)
	h := newHarness(t, nil)
	a := netip.MustParseAddr("203.0.113.9")
	v6 := netip.MustParseAddr("2001:db8::7")
	r := attacks.Report{Addr: v6, Time: time.Unix(1_700_000_000, 0), Kind: attacks.KindDDoS, Reporter: "node-b"}

	// Published before the follower starts: it reads from the start.
	clean := l.publish(t, verdictlog.SubjectClean, &styxv1.LogBatch{Term: 1, Seq: 1, Verdicts: []*styxv1.Verdict{
		logVerdict(a, false, 1000),
		{Proxy: true, InferredUnixNano: 5}, // no address
	}})
	l.publish(t, verdictlog.SubjectProxy, &styxv1.LogBatch{Term: 1, Seq: 2, Verdicts: []*styxv1.Verdict{logVerdict(a, true, 1001)}})
	proxy := l.publish(t, verdictlog.SubjectAttacks, &styxv1.LogBatch{Term: 1, Seq: 3, Attacks: []*styxv1.AttackReport{
		r.Proto(), r.Proto(), // again: a duplicate
		{Address: []byte{10, 0, 0, 1}, Kind: "no such kind"},
	}})
	h.follow(l)
	testwait.For(t, testwait.Timeout, "the log applied", func() bool { return h.up.Stats().LogMessages == 3 })

	e, err := h.store.Lookup(a)
	if err != nil || !e.HasVerdict || !e.Verdict.Proxy || e.Verdict.Inferred.UnixNano() != 1001 {
		t.Fatalf("verdict from the log %+v %v, want the proxy verdict (the newer)", e, err)
	}
	hist, err := h.store.Attacks(v6)
	if err != nil || hist.Total() != 1 || hist.Counts[attacks.KindDDoS] != 1 {
		t.Fatalf("history %+v %v", hist, err)
	}
	st := h.up.Stats()
	if st.LogVerdicts != 2 || st.LogVerdictsSkipped != 1 || st.LogVerdictsKnown != 0 ||
		st.LogAttacksNew != 1 || st.LogAttacksDuplicate != 1 || st.LogAttacksInvalid != 1 {
		t.Fatalf("stats %+v", st)
	}
	for stream, want := range map[string]uint64{verdictlog.StreamClean: clean, verdictlog.StreamProxy: proxy} {
		if seq, err := h.store.Cursor(stream); err != nil || seq != want {
			t.Fatalf("cursor of %s %d, %v; want %d", stream, seq, err, want)
		}
	}
	if h.store.OutboxLen() != 0 {
		t.Fatal("a report from the log entered the outbox")
	}
}

// A verdict this node asked for comes as an outcome and again through the
// log: it is written once, and counted as known.
func TestLogVerdictOfOwnSightingWrittenOnce(t *testing.T) {
	l := startLog(t)
	h := newHarness(t, nil)
	var mu sync.Mutex
	var answered []*columns.Outcome
	h.fake(fakesched.Config{Answer: func(sg columns.Sighting) *columns.Outcome {
		o := fakesched.VerdictFor(sg)
		mu.Lock()
		answered = append(answered, o)
		mu.Unlock()
		return o
	}}, "x")
	h.start()
	h.follow(l)
	a := netip.MustParseAddr("198.51.100.77")
	h.up.Offer(a, time.Now())
	testwait.For(t, testwait.Timeout, "the outcome", func() bool { return h.up.Stats().Verdicts == 1 })

	mu.Lock()
	v := proto.CloneOf(answered[0].Verdict)
	mu.Unlock()
	v.Address = a.AsSlice() // the log's copy names its address
	b := netip.MustParseAddr("198.51.100.78")
	other := logVerdict(b, true, 1)
	l.publish(t, verdictlog.SubjectProxy, &styxv1.LogBatch{Term: 1, Seq: 1, Verdicts: []*styxv1.Verdict{v, other}})
	testwait.For(t, testwait.Timeout, "the log applied", func() bool { return h.up.Stats().LogMessages == 1 })
	if st := h.up.Stats(); st.LogVerdicts != 2 || st.LogVerdictsKnown != 1 {
		t.Fatalf("stats %+v, want 2 verdicts read, 1 of them known", st)
	}
	if e, err := h.store.Lookup(b); err != nil || !e.HasVerdict {
		t.Fatalf("the other verdict %+v %v", e, err)
	}

	// A burst of known verdicts only is not committed for its cursor
	// alone, until the cursor has waited cursorEvery.
	cursor := func() uint64 {
		c, err := h.store.Cursor(verdictlog.StreamProxy)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	h.up.cursorMu.Lock()
	h.up.cursorEvery = time.Hour
	h.up.cursorMu.Unlock()
	l.publish(t, verdictlog.SubjectProxy, &styxv1.LogBatch{Term: 1, Seq: 2, Verdicts: []*styxv1.Verdict{v}})
	testwait.For(t, testwait.Timeout, "the second message applied", func() bool { return h.up.Stats().LogMessages == 2 })
	if c := cursor(); c != 1 {
		t.Fatalf("cursor %d after a burst of known verdicts, want it left at 1", c)
	}
	h.up.cursorMu.Lock()
	h.up.cursorEvery = 0
	h.up.cursorMu.Unlock()
	l.publish(t, verdictlog.SubjectProxy, &styxv1.LogBatch{Term: 1, Seq: 3, Verdicts: []*styxv1.Verdict{v}})
	testwait.For(t, testwait.Timeout, "the cursor committed", func() bool { return cursor() == 3 })
}
