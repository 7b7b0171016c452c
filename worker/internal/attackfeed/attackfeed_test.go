package attackfeed

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/styx-inference/styx/pkg/attacks"
	"github.com/styx-inference/styx/pkg/embednats/natstest"
	"github.com/styx-inference/styx/pkg/history"
	"github.com/styx-inference/styx/pkg/testwait"
	"github.com/styx-inference/styx/pkg/verdictlog"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const term = 7

var t0 = time.Unix(1_700_000_000, 0)

// asnOf gives every /16 its own AS.
func asnOf(a netip.Addr) uint32 {
	b := a.As16()
	return 64500 + uint32(b[13])
}

// testLog is a JetStream server with the streams, and a publisher on it
// (the leader's side).
type testLog struct {
	js  jetstream.JetStream
	pub *verdictlog.Publisher
	// sent counts the batches handed to pub.
	sent uint64
}

func startLog(tb testing.TB) *testLog {
	tb.Helper()
	srv := natstest.Start(tb)
	js := connect(tb, srv.URL())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := verdictlog.Ensure(ctx, js, verdictlog.DefaultPolicy()); err != nil {
		tb.Fatal(err)
	}
	l := &testLog{js: js, pub: verdictlog.NewPublisher(js, verdictlog.PublisherConfig{}, zerolog.Nop())}
	pctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = l.pub.Run(pctx) }()
	tb.Cleanup(func() { stop(); <-done })
	return l
}

// connect opens a NATS connection closed when the test ends (after the
// cleanups registered later, such as a follower's).
func connect(tb testing.TB, url string) jetstream.JetStream {
	tb.Helper()
	nc, err := verdictlog.Connect(url, "test", zerolog.Nop())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	return js
}

// verdicts publishes the verdicts of one result (split by the publisher
// into a proxy and a clean batch).
func (l *testLog) verdicts(vs ...*styxv1.Verdict) {
	var proxy, clean bool
	for _, v := range vs {
		proxy, clean = proxy || v.GetProxy(), clean || !v.GetProxy()
	}
	for _, b := range []bool{proxy, clean} {
		if b {
			l.sent++
		}
	}
	l.pub.Verdicts(term, vs, nil)
}

func (l *testLog) attacks(rs ...*styxv1.AttackReport) {
	l.sent++
	l.pub.Attacks(term, rs)
}

// stored waits until the log holds every batch handed to the publisher
// and returns the heads of the streams.
func (l *testLog) stored(tb testing.TB) map[string]uint64 {
	tb.Helper()
	testwait.For(tb, testwait.Timeout, "the batches stored", func() bool {
		st := l.pub.Stats()
		return st.Messages == l.sent && st.Queued == 0
	})
	heads := map[string]uint64{}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, name := range verdictlog.Streams {
		s, err := l.js.Stream(ctx, name)
		if err != nil {
			tb.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			tb.Fatal(err)
		}
		heads[name] = info.State.LastSeq
	}
	return heads
}

func verdict(a string, proxy bool, sec int64) *styxv1.Verdict {
	return &styxv1.Verdict{Address: netip.MustParseAddr(a).AsSlice(), Proxy: proxy, InferredUnixNano: t0.Add(time.Duration(sec) * time.Second).UnixNano()}
}

func report(a string, sec int64, k attacks.Kind) *styxv1.AttackReport {
	return attacks.Report{Addr: netip.MustParseAddr(a), Time: t0.Add(time.Duration(sec) * time.Second), Kind: k, Reporter: "node-1"}.Proto()
}

// startFollower runs a Follower of cfg on js until the test ends.
func startFollower(tb testing.TB, js jetstream.JetStream, cfg Config) *Follower {
	tb.Helper()
	cfg.JS = js
	if cfg.CheckEvery == 0 {
		cfg.CheckEvery = 200 * time.Millisecond
	}
	fl, err := New(cfg, zerolog.Nop())
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fl.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Error(err)
		}
	})
	return fl
}

// caughtUp waits until fl has applied every stream it reads up to heads.
func caughtUp(tb testing.TB, fl *Follower, heads map[string]uint64) {
	tb.Helper()
	defer func() {
		if tb.Failed() {
			tb.Logf("follower status %+v, stream heads %v", fl.Status(), heads)
		}
	}()
	testwait.For(tb, testwait.Timeout, "the follower caught up", func() bool {
		for _, s := range fl.Status().Streams {
			if s.Applied < heads[s.Stream] {
				return false
			}
		}
		return true
	})
}

// With --history=false the worker reads the proxy stream alone and keeps
// its attack reports: duplicates and invalid reports are not counted, the
// verdicts are not wanted.
func TestAttacksOnly(t *testing.T) {
	l := startLog(t)
	l.verdicts(verdict("203.0.113.7", true, 1), verdict("203.0.113.8", false, 1))
	l.attacks(report("203.0.113.7", 1, attacks.KindLogin), report("203.0.113.7", 2, attacks.KindProbe))
	l.attacks(report("203.0.113.7", 2, attacks.KindProbe), &styxv1.AttackReport{Address: []byte{1}}) // a re-sent report, an invalid one
	l.attacks(report("2001:db8::1", 3, attacks.KindDDoS))
	heads := l.stored(t)

	table := attacks.NewTable(1000)
	fl := startFollower(t, l.js, Config{Table: table})
	caughtUp(t, fl, heads)
	st := fl.Status()
	if len(st.Streams) != 1 || st.Streams[0].Stream != verdictlog.StreamProxy {
		t.Fatalf("streams %+v, want the proxy stream alone", st.Streams)
	}
	if s := fl.Stats(); s != (Stats{Reports: 3, Invalid: 1}) {
		t.Fatalf("stats %+v", s)
	}
	n, last := table.Attacks(netip.MustParseAddr("203.0.113.7"))
	if n != 2 || !last.Equal(t0.Add(2*time.Second)) {
		t.Fatalf("203.0.113.7: %d, %v", n, last)
	}
	if c, ok := table.Counts(netip.MustParseAddr("2001:db8::1")); !ok || c.ByKind[attacks.KindDDoS] != 1 {
		t.Fatalf("2001:db8::1: %+v", c)
	}
	if table.Len() != 2 {
		t.Fatalf("%d addresses in the attack table, want the two attacked ones", table.Len())
	}

	// Reports published later arrive too.
	l.attacks(report("203.0.113.9", 4, attacks.KindForm))
	testwait.For(t, testwait.Timeout, "the new report", func() bool { return fl.Stats().Reports == 4 })
}

// With a history table the follower reads both streams and folds every
// message; the reports reach the attack table through it.
func TestFollowIntoHistory(t *testing.T) {
	l := startLog(t)
	table := attacks.NewTable(100)
	hist := history.New(history.Config{Locate: asnOf, Attacks: table})
	fl := startFollower(t, l.js, Config{Table: table, History: hist})

	l.verdicts(verdict("203.0.113.1", true, 1), verdict("203.0.113.2", false, 2))
	l.attacks(report("203.0.113.2", 1, attacks.KindLogin))
	l.attacks(report("203.0.113.2", 1, attacks.KindLogin)) // re-sent: a duplicate
	l.verdicts(verdict("203.0.113.1", false, 0))           // older than the proxy verdict held
	caughtUp(t, fl, l.stored(t))

	// The streams are read side by side: the older clean verdict may come
	// first (and be replaced) or second (and change nothing).
	if st := fl.Stats(); st.Verdicts+st.Stale != 3 || st.Verdicts < 2 || st.Reports != 1 || st.Invalid != 0 {
		t.Fatalf("stats %+v", st)
	}
	if e, _ := hist.Entry(netip.MustParseAddr("203.0.113.1")); !e.Proxy || e.VerdictAt != t0.Add(time.Second).UnixNano() {
		t.Fatalf("203.0.113.1: %+v, want the newer proxy verdict", e)
	}
	if c := hist.Bucket(history.BucketKey(netip.MustParseAddr("203.0.113.9"))); c != (history.Counts{Verdicts: 2, Proxies: 1, Attacks: 1}) {
		t.Fatalf("bucket %+v", c)
	}
	if n, _ := table.Attacks(netip.MustParseAddr("203.0.113.2")); n != 1 {
		t.Fatalf("attack table: %d", n)
	}
	if st := fl.Status(); len(st.Streams) != 2 {
		t.Fatalf("streams %+v, want both", st.Streams)
	}
}

// A worker's tables live in memory, so a restarted worker rebuilds them by
// replaying what the log holds. Follower "live" runs while the verdicts
// and reports are published; follower "restarted" starts afterwards, with
// empty tables, and reads both streams side by side from their start, so
// it folds the messages in another interleaving than "live" did. Its
// history table must equal the live one: every entry, every bucket and AS
// sum, every lookup, and the attack counts.
func TestRestartRebuildsHistory(t *testing.T) {
	l := startLog(t)
	newTables := func() (*attacks.Table, *history.Table) {
		at := attacks.NewTable(10000)
		return at, history.New(history.Config{MaxAddrs: 10000, Locate: asnOf, Attacks: at})
	}
	liveAttacks, liveHist := newTables()
	live := startFollower(t, l.js, Config{Table: liveAttacks, History: liveHist})

	rng := rand.New(rand.NewPCG(1, 2))
	addr := func() string {
		return netip.AddrFrom4([4]byte{198, 51, byte(rng.IntN(4)), byte(1 + rng.IntN(60))}).String()
	}
	var probe []netip.Addr
	for i := range 600 {
		vs := make([]*styxv1.Verdict, 1+rng.IntN(12))
		for j := range vs {
			// Verdicts on the same addresses, made at times that collide,
			// land in both streams.
			a := addr()
			vs[j] = verdict(a, rng.IntN(3) == 0, int64(rng.IntN(40)))
			probe = append(probe, netip.MustParseAddr(a))
		}
		l.verdicts(vs...)
		if i%5 == 0 {
			rs := []*styxv1.AttackReport{report(addr(), int64(i), attacks.Kind(1+rng.IntN(int(attacks.NumKinds)-1)))}
			if i%15 == 0 {
				rs = append(rs, rs[0]) // a report sent twice
			}
			l.attacks(rs...)
		}
	}
	heads := l.stored(t)
	caughtUp(t, live, heads)
	if heads[verdictlog.StreamProxy] < 100 || heads[verdictlog.StreamClean] < 100 {
		t.Fatalf("heads %v: the test wants many messages in both streams", heads)
	}

	restartedAttacks, restartedHist := newTables()
	restarted := startFollower(t, l.js, Config{Table: restartedAttacks, History: restartedHist})
	caughtUp(t, restarted, heads)

	if d := diffTables(liveHist, restartedHist, probe); d != "" {
		t.Fatalf("the rebuilt history differs from the live one: %s", d)
	}
	for _, a := range probe {
		n, last := liveAttacks.Attacks(a)
		if n2, last2 := restartedAttacks.Attacks(a); n != n2 || !last.Equal(last2) {
			t.Fatalf("%s: attacks %d %v live, %d %v rebuilt", a, n, last, n2, last2)
		}
	}
	ls, rs := live.Stats(), restarted.Stats()
	if ls.Reports != rs.Reports || ls.Verdicts+ls.Stale != rs.Verdicts+rs.Stale || ls.Reports == 0 || ls.Stale == 0 {
		t.Fatalf("stats live %+v, rebuilt %+v", ls, rs)
	}
	if z := liveHist.Sizes(); z.Evicted != 0 || z.Addrs < 200 {
		t.Fatalf("sizes %+v: the test wants a table that is not full", z)
	}
}

// diffTables describes the first difference between a and b: their
// entries (in address order: recency depends on the order of folds),
// sizes and clock, and the lookups of probe.
func diffTables(a, b *history.Table, probe []netip.Addr) string {
	entries := func(t *history.Table) []history.Entry {
		var out []history.Entry
		t.Each(func(e history.Entry) bool { out = append(out, e); return true })
		slices.SortFunc(out, func(x, y history.Entry) int { return x.Addr.Compare(y.Addr) })
		return out
	}
	ea, eb := entries(a), entries(b)
	if len(ea) != len(eb) {
		return fmt.Sprintf("%d and %d entries", len(ea), len(eb))
	}
	for i := range ea {
		if ea[i] != eb[i] {
			return fmt.Sprintf("entry %+v and %+v", ea[i], eb[i])
		}
	}
	za, zb := a.Sizes(), b.Sizes()
	if za.Addrs != zb.Addrs || za.Buckets != zb.Buckets || za.ASes != zb.ASes || !za.Clock.Equal(zb.Clock) {
		return fmt.Sprintf("sizes %+v and %+v", za, zb)
	}
	for _, p := range probe {
		if la, lb := a.Lookup(p, asnOf(p)), b.Lookup(p, asnOf(p)); la != lb {
			return fmt.Sprintf("%s: %+v and %+v", p, la, lb)
		}
	}
	return ""
}

// The follower's and the tables' metrics are registered under
// styx_worker_.
func TestRegister(t *testing.T) {
	l := startLog(t)
	table := attacks.NewTable(100)
	hist := history.New(history.Config{Attacks: table})
	fl := startFollower(t, l.js, Config{Table: table, History: hist})
	reg := prometheus.NewRegistry()
	if err := fl.Register(reg); err != nil {
		t.Fatal(err)
	}
	l.attacks(report("203.0.113.5", 1, attacks.KindLogin))
	caughtUp(t, fl, l.stored(t))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			for _, lp := range m.GetLabel() {
				name += "{" + lp.GetName() + "=" + lp.GetValue() + "}"
			}
			got[name] = m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	for name, want := range map[string]float64{
		"styx_worker_attack_reports_total":                                        1,
		"styx_worker_attack_table_addresses":                                      1,
		"styx_worker_history_verdicts_total":                                      0,
		"styx_worker_history_addresses":                                           1,
		"styx_worker_log_connected":                                               1,
		"styx_worker_log_applied_sequence{stream=" + verdictlog.StreamProxy + "}": 1,
		"styx_worker_log_lag_messages{stream=" + verdictlog.StreamClean + "}":     0,
	} {
		if v, ok := got[name]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", name, v, ok, want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	l := startLog(t)
	for _, c := range []Config{
		{Table: attacks.NewTable(1)},
		{JS: l.js},
		{JS: l.js, Table: attacks.NewTable(1), MaxBurst: -1},
	} {
		if _, err := New(c, zerolog.Nop()); err == nil {
			t.Errorf("New(%+v) accepted", c)
		}
	}
}

// BenchmarkReplay measures how fast a starting worker rebuilds its
// history from the log: b.N verdicts published in results of 500 (a tenth
// of them proxies, so both streams fill), then replayed by a new follower.
func BenchmarkReplay(b *testing.B) {
	l := startLog(b)
	rng := rand.New(rand.NewPCG(3, 3))
	const perResult = 500
	for i := 0; i < b.N; i += perResult {
		vs := make([]*styxv1.Verdict, min(perResult, b.N-i))
		for j := range vs {
			a := netip.AddrFrom4([4]byte{byte(1 + rng.IntN(200)), byte(rng.IntN(256)), byte(rng.IntN(256)), byte(rng.IntN(256))})
			vs[j] = &styxv1.Verdict{Address: a.AsSlice(), Proxy: rng.IntN(10) == 0, InferredUnixNano: int64(i + j)}
		}
		l.verdicts(vs...)
	}
	heads := l.stored(b)
	b.ResetTimer()
	start := time.Now()
	table := attacks.NewTable(0)
	hist := history.New(history.Config{Locate: asnOf, Attacks: table})
	fl := startFollower(b, l.js, Config{Table: table, History: hist})
	caughtUp(b, fl, heads)
	b.StopTimer()
	if got := fl.Stats().Verdicts; got != uint64(b.N) {
		b.Fatalf("%d verdicts folded, want %d", got, b.N)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "verdicts/s")
}
