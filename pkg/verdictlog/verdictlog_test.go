package verdictlog_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/styx-inference/styx/pkg/embednats/natstest"
	"github.com/styx-inference/styx/pkg/testwait"
	"github.com/styx-inference/styx/pkg/verdictlog"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// logServerTB starts a JetStream server with the default streams.
func logServerTB(tb testing.TB) (*natstest.Server, jetstream.JetStream) {
	tb.Helper()
	return logServer(tb, verdictlog.DefaultPolicy())
}

// logServer starts a JetStream server with the streams of policy p and
// returns it with a JetStream handle.
func logServer(t testing.TB, p verdictlog.Policy) (*natstest.Server, jetstream.JetStream) {
	t.Helper()
	ns := natstest.Start(t)
	js := connect(t, ns.URL())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := verdictlog.Ensure(ctx, js, p); err != nil {
		t.Fatal(err)
	}
	return ns, js
}

func connect(t testing.TB, url string) jetstream.JetStream {
	t.Helper()
	nc, err := verdictlog.Connect(url, t.Name(), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// run starts fn in a goroutine; the test's cleanup cancels it and waits.
func run(t *testing.T, fn func(ctx context.Context) error) context.CancelFunc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = fn(ctx) }()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	return stop
}

func verdict(i int, proxy bool) *styxv1.Verdict {
	return &styxv1.Verdict{Address: []byte{198, 51, byte(i >> 8), byte(i)}, Proxy: proxy, InferredUnixNano: int64(i + 1)}
}

// collector is a follower's Apply that keeps every message in memory.
type collector struct {
	mu      sync.Mutex
	msgs    map[string][]verdictlog.Message
	block   chan struct{} // when set, Apply waits on it
	applied int
}

func newCollector() *collector { return &collector{msgs: map[string][]verdictlog.Message{}} }

func (c *collector) apply(stream string, msgs []verdictlog.Message) error {
	if c.block != nil {
		<-c.block
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.msgs[stream] = append(c.msgs[stream], msgs...)
	c.applied += len(msgs)
	return nil
}

func (c *collector) count() (verdicts, attacks int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ms := range c.msgs {
		for _, m := range ms {
			verdicts += len(m.Batch.GetVerdicts())
			attacks += len(m.Batch.GetAttacks())
		}
	}
	return verdicts, attacks
}

func follower(t *testing.T, js jetstream.JetStream, c *collector, cursor map[string]uint64, log zerolog.Logger, mod func(*verdictlog.FollowerConfig)) *verdictlog.Follower {
	t.Helper()
	cfg := verdictlog.FollowerConfig{
		JS:         js,
		Cursor:     func(s string) (uint64, error) { return cursor[s], nil },
		Apply:      c.apply,
		CheckEvery: 50 * time.Millisecond,
	}
	if mod != nil {
		mod(&cfg)
	}
	f, err := verdictlog.NewFollower(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// Verdicts go to the stream of their class, attack reports to the proxy
// stream; a follower gets every one, in batches, with sequences that
// count up from 1 per stream.
func TestPublishAndFollow(t *testing.T) {
	_, js := logServer(t, verdictlog.DefaultPolicy())
	p := verdictlog.NewPublisher(js, verdictlog.PublisherConfig{}, zerolog.Nop())
	run(t, p.Run)
	var stored atomic.Int64 // Verdicts calls whose verdicts are all in the log
	for i := range 100 {
		p.Verdicts(7, []*styxv1.Verdict{verdict(2*i, false), verdict(2*i+1, true), {Address: []byte{1, 2, 3, 4}, Error: "poison"}}, func() { stored.Add(1) })
	}
	p.Attacks(7, []*styxv1.AttackReport{{Address: []byte{203, 0, 113, 1}, UnixNano: 1, Kind: "login", Reporter: "n"}})
	c := newCollector()
	f := follower(t, js, c, nil, zerolog.Nop(), nil)
	run(t, f.Run)
	testwait.For(t, 10*time.Second, "every verdict and report", func() bool { v, a := c.count(); return v == 200 && a == 1 })
	c.mu.Lock()
	for stream, ms := range c.msgs {
		for i, m := range ms {
			if m.Seq != uint64(i+1) || m.Batch.GetTerm() != 7 {
				t.Fatalf("%s message %d: seq %d term %d", stream, i, m.Seq, m.Batch.GetTerm())
			}
			for _, v := range m.Batch.GetVerdicts() {
				if v.GetProxy() != (stream == verdictlog.StreamProxy) || v.GetError() != "" {
					t.Fatalf("%s holds %v", stream, v)
				}
			}
		}
	}
	if len(c.msgs[verdictlog.StreamClean]) != 100 || len(c.msgs[verdictlog.StreamProxy]) != 101 {
		t.Fatalf("messages per stream: clean %d proxy %d", len(c.msgs[verdictlog.StreamClean]), len(c.msgs[verdictlog.StreamProxy]))
	}
	c.mu.Unlock()
	// The follower can see a message before its publisher has the ack.
	testwait.For(t, 10*time.Second, "acknowledged", func() bool { return p.Stats().Queued == 0 && stored.Load() == 100 })
	st := p.Stats()
	if st.Messages != 201 || st.Verdicts != 200 || st.Attacks != 1 || st.Dropped != 0 || st.Queued != 0 {
		t.Fatalf("publisher stats %+v", st)
	}
	testwait.For(t, 10*time.Second, "no lag", func() bool {
		m, _ := f.Status().Lag()
		return m == 0 && f.Status().Streams[0].Head > 0
	})
}

// A message id is stored once: a batch published again after a lost
// acknowledgement does not reach the followers twice.
func TestSameMessageIDStoredOnce(t *testing.T) {
	_, js := logServer(t, verdictlog.DefaultPolicy())
	ctx := context.Background()
	for range 3 {
		if _, err := js.Publish(ctx, verdictlog.SubjectClean, []byte{}, jetstream.WithMsgID("9.1")); err != nil {
			t.Fatal(err)
		}
	}
	s, err := js.Stream(ctx, verdictlog.StreamClean)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil || info.State.Msgs != 1 {
		t.Fatalf("stream holds %d messages (%v), want 1", info.State.Msgs, err)
	}
}

// A follower starts after its cursor: nothing at or below it is applied
// again.
func TestFollowerResumesAfterCursor(t *testing.T) {
	_, js := logServer(t, verdictlog.DefaultPolicy())
	p := verdictlog.NewPublisher(js, verdictlog.PublisherConfig{}, zerolog.Nop())
	run(t, p.Run)
	for i := range 10 {
		p.Verdicts(1, []*styxv1.Verdict{verdict(i, true)}, nil)
	}
	testwait.For(t, 10*time.Second, "published", func() bool { return p.Stats().Messages == 10 })
	c := newCollector()
	f := follower(t, js, c, map[string]uint64{verdictlog.StreamProxy: 6}, zerolog.Nop(), nil)
	run(t, f.Run)
	testwait.For(t, 10*time.Second, "the rest", func() bool { v, _ := c.count(); return v == 4 })
	c.mu.Lock()
	defer c.mu.Unlock()
	if first := c.msgs[verdictlog.StreamProxy][0].Seq; first != 7 {
		t.Fatalf("first message applied %d, want 7", first)
	}
}

// A follower that is connected and behind but applies nothing is stalled:
// it says so in its status, its metrics and an error in the log, and
// recovers when it moves again.
func TestStalledFollowerIsLoud(t *testing.T) {
	_, js := logServer(t, verdictlog.DefaultPolicy())
	p := verdictlog.NewPublisher(js, verdictlog.PublisherConfig{}, zerolog.Nop())
	run(t, p.Run)
	c := newCollector()
	c.block = make(chan struct{})
	var logs syncBuffer
	f := follower(t, js, c, nil, zerolog.New(&logs), func(cfg *verdictlog.FollowerConfig) { cfg.StallAfter = 300 * time.Millisecond })
	reg := prometheus.NewRegistry()
	if err := f.Register(reg, "styx_test"); err != nil {
		t.Fatal(err)
	}
	run(t, f.Run)
	for i := range 5 {
		p.Verdicts(1, []*styxv1.Verdict{verdict(i, false)}, nil)
	}
	testwait.For(t, 10*time.Second, "stalled", func() bool { return f.Status().Stalled })
	m, sec := f.Status().Lag()
	if m < 4 || sec <= 0 {
		t.Fatalf("lag %d messages %.3f s while stalled", m, sec)
	}
	if got := testutil.ToFloat64(collectorFor(t, reg, "styx_test_log_stalled")); got != 1 {
		t.Fatalf("styx_test_log_stalled %v", got)
	}
	if !strings.Contains(logs.String(), "follower stalled") || !strings.Contains(logs.String(), `"level":"error"`) {
		t.Fatalf("no error logged: %s", logs.String())
	}
	close(c.block)
	testwait.For(t, 10*time.Second, "moving again", func() bool {
		m, _ := f.Status().Lag()
		return !f.Status().Stalled && m == 0
	})
	if f.Status().Stalls != 1 {
		t.Fatalf("stalls %d, want 1", f.Status().Stalls)
	}
}

// The JetStream server restarts half-way: the publisher keeps what it
// could not publish and the follower carries on; nothing is lost and
// nothing is applied twice.
func TestServerRestartLosesNothing(t *testing.T) {
	ns, js := logServer(t, verdictlog.DefaultPolicy())
	p := verdictlog.NewPublisher(js, verdictlog.PublisherConfig{AckWait: time.Second}, zerolog.Nop())
	run(t, p.Run)
	c := newCollector()
	f := follower(t, js, c, nil, zerolog.Nop(), nil)
	run(t, f.Run)
	const n = 400
	for i := range n / 2 {
		p.Verdicts(1, []*styxv1.Verdict{verdict(i, i%3 == 0)}, nil)
	}
	testwait.For(t, 10*time.Second, "first half", func() bool { v, _ := c.count(); return v == n/2 })
	ns.Stop()
	for i := n / 2; i < n; i++ {
		p.Verdicts(1, []*styxv1.Verdict{verdict(i, i%3 == 0)}, nil)
	}
	ns.Restart()
	testwait.For(t, 30*time.Second, "second half", func() bool { v, _ := c.count(); return v >= n })
	// Let any duplicate arrive before counting.
	testwait.For(t, 10*time.Second, "no lag", func() bool { m, _ := f.Status().Lag(); return m == 0 && p.Stats().Queued == 0 })
	seen := map[string]int{}
	c.mu.Lock()
	for _, ms := range c.msgs {
		for _, m := range ms {
			for _, v := range m.Batch.GetVerdicts() {
				seen[fmt.Sprint(v.GetAddress())]++
			}
		}
	}
	c.mu.Unlock()
	if len(seen) != n {
		t.Fatalf("%d distinct verdicts, want %d", len(seen), n)
	}
	for a, k := range seen {
		if k != 1 {
			t.Fatalf("verdict %s applied %d times", a, k)
		}
	}
}

// Retention: clean verdicts leave their stream after --clean-retention;
// proxies stay.
func TestRetentionByClass(t *testing.T) {
	pol := verdictlog.DefaultPolicy()
	pol.CleanRetention = time.Second
	_, js := logServer(t, pol)
	p := verdictlog.NewPublisher(js, verdictlog.PublisherConfig{}, zerolog.Nop())
	run(t, p.Run)
	p.Verdicts(1, []*styxv1.Verdict{verdict(1, false), verdict(2, true)}, nil)
	testwait.For(t, 10*time.Second, "published", func() bool { return p.Stats().Messages == 2 })
	msgs := func(stream string) uint64 {
		s, err := js.Stream(context.Background(), stream)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs
	}
	testwait.For(t, 10*time.Second, "clean verdict expired", func() bool { return msgs(verdictlog.StreamClean) == 0 })
	if got := msgs(verdictlog.StreamProxy); got != 1 {
		t.Fatalf("proxy stream holds %d messages, want 1", got)
	}
}

// A full publish queue drops the batch and counts it: the log is down,
// and that is loud.
func TestPublisherQueueFull(t *testing.T) {
	ns, js := logServer(t, verdictlog.DefaultPolicy())
	ns.Stop()
	testwait.For(t, 10*time.Second, "disconnected", func() bool { return js.Conn().Status() != nats.CONNECTED })
	var logs syncBuffer
	p := verdictlog.NewPublisher(js, verdictlog.PublisherConfig{Queue: 3, AckWait: 100 * time.Millisecond}, zerolog.New(&logs))
	var dropped atomic.Int64
	for i := range 5 {
		p.Verdicts(1, []*styxv1.Verdict{verdict(i, false)}, func() { dropped.Add(1) })
	}
	// A dropped batch's done is called all the same (the outcomes go).
	testwait.For(t, 10*time.Second, "done for the dropped", func() bool { return dropped.Load() == 2 })
	if st := p.Stats(); st.Dropped != 2 || st.Queued != 3 {
		t.Fatalf("stats %+v, want 2 dropped 3 queued", st)
	}
	if !strings.Contains(logs.String(), "publish queue full") {
		t.Fatalf("not logged: %s", logs.String())
	}
}

func TestPolicyValidate(t *testing.T) {
	for _, tc := range []struct {
		mod  func(*verdictlog.Policy)
		want string
	}{
		{func(p *verdictlog.Policy) { p.CleanRetention = 0 }, "clean retention"},
		{func(p *verdictlog.Policy) { p.ProxyRetention = time.Minute }, "shorter"},
		{func(p *verdictlog.Policy) { p.Replicas = 0 }, "replicas"},
		{func(p *verdictlog.Policy) { p.Duplicates = -1 }, "duplicate"},
	} {
		p := verdictlog.DefaultPolicy()
		tc.mod(&p)
		if err := p.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", p, err, tc.want)
		}
	}
	if err := verdictlog.DefaultPolicy().Validate(); err != nil {
		t.Fatal(err)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// collectorFor returns the registry's metric name as a collector for
// testutil.ToFloat64.
func collectorFor(t *testing.T, reg *prometheus.Registry, name string) prometheus.Collector {
	t.Helper()
	return gathered{reg: reg, name: name}
}

type gathered struct {
	reg  *prometheus.Registry
	name string
}

func (g gathered) Describe(chan<- *prometheus.Desc) {}
func (g gathered) Collect(ch chan<- prometheus.Metric) {
	// Re-collect from the registry's collectors, keeping only name.
	mfs, _ := g.reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != g.name {
			continue
		}
		for _, m := range mf.GetMetric() {
			ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(g.name, "", nil, nil), prometheus.GaugeValue, m.GetGauge().GetValue())
		}
	}
}
