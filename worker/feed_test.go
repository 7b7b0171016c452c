package worker

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/styx-inference/styx/pkg/attacks"
	"github.com/styx-inference/styx/pkg/embednats/natstest"
	"github.com/styx-inference/styx/pkg/history"
	"github.com/styx-inference/styx/pkg/locdb/locdbtest"
	"github.com/styx-inference/styx/pkg/testwait"
	"github.com/styx-inference/styx/pkg/verdictlog"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

// catchUpTimeout bounds a wait that spans a NATS restart: the follower
// retries with a backoff of up to 5 s, after a request that may wait as
// long for the server.
const catchUpTimeout = 30 * time.Second

// logPublisher is the leader's side of the verdict log in these tests.
type logPublisher struct {
	js   jetstream.JetStream
	pub  *verdictlog.Publisher
	sent uint64
}

func startPublisher(t *testing.T, url string) *logPublisher {
	t.Helper()
	nc, err := verdictlog.Connect(url, "test-leader", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := verdictlog.Ensure(ctx, js, verdictlog.DefaultPolicy()); err != nil {
		t.Fatal(err)
	}
	p := &logPublisher{js: js, pub: verdictlog.NewPublisher(js, verdictlog.PublisherConfig{}, zerolog.Nop())}
	pctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.pub.Run(pctx) }()
	t.Cleanup(func() { stop(); <-done })
	return p
}

// publish sends n results of verdicts on addresses of 88.198.0.0/16 (the
// fixture database's network), a third of them proxies (two thirds with
// flip), made at times from base on, and an attack report every fifth
// result. Every call names the same addresses, so that an address gets
// verdicts in both streams.
func (p *logPublisher) publish(n int, base int64, flip bool) []netip.Addr {
	var addrs []netip.Addr
	for i := range n {
		a := netip.AddrFrom4([4]byte{88, 198, byte(i % 7), byte(1 + (i*37)%200)})
		at := time.Unix(1_700_000_000+base+int64(i), 0)
		proxy := (i%3 == 0) != flip
		vs := []*styxv1.Verdict{
			{Address: a.AsSlice(), Proxy: proxy, InferredUnixNano: at.UnixNano()},
			{Address: a.Next().AsSlice(), Proxy: !proxy, InferredUnixNano: at.UnixNano()},
		}
		p.pub.Verdicts(1, vs, nil)
		p.sent += 2
		addrs = append(addrs, a, a.Next())
		if i%5 == 0 {
			p.pub.Attacks(1, []*styxv1.AttackReport{attacks.Report{Addr: a, Time: at, Kind: attacks.KindLogin, Reporter: "node-1"}.Proto()})
			p.sent++
		}
	}
	return addrs
}

// heads waits until every batch is stored and returns the streams' last
// sequences.
func (p *logPublisher) heads(t *testing.T) map[string]uint64 {
	t.Helper()
	testwait.For(t, testwait.Timeout, "the batches stored", func() bool {
		st := p.pub.Stats()
		return st.Messages == p.sent && st.Queued == 0
	})
	out := map[string]uint64{}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, name := range verdictlog.Streams {
		s, err := p.js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		out[name] = info.State.LastSeq
	}
	return out
}

// historyConfig is a worker with the rule engine over a fixture database,
// so that it keeps a history table, following the log at url.
func historyConfig(t *testing.T, url string) Config {
	t.Helper()
	_, cli := startEtcd(t)
	cfg := testConfig(cli)
	cfg.EngineName = EngineRule
	cfg.DBPath = locdbtest.WriteTemp(t, &locdbtest.Database{
		Countries: []locdbtest.Country{{Code: "DE", Continent: "EU", Name: "Germany"}},
		ASes:      []locdbtest.AS{{Number: 24940, Name: "Hetzner Online GmbH"}},
		Networks:  []locdbtest.Network{{Prefix: netip.MustParsePrefix("88.198.0.0/16"), Country: "DE", ASN: 24940}},
	})
	cfg.SkipVerify = true
	cfg.FollowModels = false
	cfg.NATSURL = url
	cfg.MetricsAddr = "127.0.0.1:0"
	return cfg
}

// caughtUp waits until the worker's follower has applied every stream it
// reads up to heads.
func caughtUp(t *testing.T, w *Worker, heads map[string]uint64) {
	t.Helper()
	testwait.For(t, catchUpTimeout, "the worker caught up with the log", func() bool {
		st, ok := w.LogStatus()
		if !ok || !st.Connected {
			return false
		}
		for _, s := range st.Streams {
			if s.Applied < heads[s.Stream] {
				return false
			}
		}
		return true
	})
}

func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// sortedEntries returns a history table's entries in address order.
func sortedEntries(h *history.Table) []history.Entry {
	var out []history.Entry
	h.Each(func(e history.Entry) bool { out = append(out, e); return true })
	slices.SortFunc(out, func(x, y history.Entry) int { return x.Addr.Compare(y.Addr) })
	return out
}

// A worker starts while NATS is down, says so in its metrics, and fills
// its tables from the log once NATS is up. A worker started later (as a
// restarted one would be) replays the log into a history table equal to
// the first one's, which followed the last messages live.
func TestHistoryFromLog(t *testing.T) {
	nats := natstest.Start(t)
	p := startPublisher(t, nats.URL())
	addrs := p.publish(40, 0, false)
	p.heads(t)
	nats.Stop()

	first := startWorker(t, historyConfig(t, nats.URL()))
	if st, ok := first.w.LogStatus(); !ok || st.Connected {
		t.Fatalf("log status %+v (ok %v) with NATS down", st, ok)
	}
	if m := scrape(t, first.w.MetricsAddr()); !strings.Contains(m, "\nstyx_worker_log_connected 0\n") {
		t.Fatalf("/metrics with NATS down lacks styx_worker_log_connected 0:\n%s", grepLines(m, "styx_worker_log_"))
	}

	nats.Restart()
	caughtUp(t, first.w, p.heads(t))
	// More while it follows live: newer verdicts that say the opposite,
	// then older ones, which change nothing.
	p.publish(40, 20, true)
	p.publish(40, -1000, false)
	heads := p.heads(t)
	caughtUp(t, first.w, heads)

	hist := first.w.History()
	if hist == nil {
		t.Fatal("no history table")
	}
	a := netip.MustParseAddr("88.198.0.1")
	if e, _ := hist.Entry(a); e.Proxy || e.VerdictAt != time.Unix(1_700_000_020, 0).UnixNano() {
		t.Fatalf("%s: %+v, want the newest verdict (clean, made at +20 s)", a, e)
	}
	if c := hist.AS(24940); c.Verdicts != 80 || c.Proxies != 40 || c.Attacks != 24 {
		t.Fatalf("AS 24940: %+v", c)
	}
	if n, _ := first.w.AttackTable().Attacks(a); n == 0 {
		t.Fatalf("no attack on %s in the attack table", a)
	}
	m := scrape(t, first.w.MetricsAddr())
	for _, want := range []string{
		"\nstyx_worker_log_connected 1\n",
		fmt.Sprintf("\nstyx_worker_log_applied_sequence{stream=%q} %d\n", verdictlog.StreamClean, heads[verdictlog.StreamClean]),
		fmt.Sprintf("\nstyx_worker_log_applied_sequence{stream=%q} %d\n", verdictlog.StreamProxy, heads[verdictlog.StreamProxy]),
		"\nstyx_worker_attack_reports_total 24\n",
	} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %q:\n%s", strings.TrimSpace(want), grepLines(m, "styx_worker_log_", "styx_worker_attack", "styx_worker_history"))
		}
	}

	// The restart: a new worker on the same log rebuilds the same table.
	second := startWorker(t, historyConfig(t, nats.URL()))
	caughtUp(t, second.w, heads)
	want, got := sortedEntries(hist), sortedEntries(second.w.History())
	if !slices.Equal(want, got) || len(want) < 80 {
		t.Fatalf("the restarted worker's history (%d entries) differs from the live one's (%d)", len(got), len(want))
	}
	for _, a := range addrs {
		if l, r := hist.Lookup(a, 24940), second.w.History().Lookup(a, 24940); l != r {
			t.Fatalf("%s: %+v live, %+v replayed", a, l, r)
		}
	}
}

// With --history=false the worker reads the proxy stream alone and keeps
// only the attack reports.
func TestAttacksOnlyFromLog(t *testing.T) {
	nats := natstest.Start(t)
	p := startPublisher(t, nats.URL())
	p.publish(20, 0, false)
	heads := p.heads(t)

	cfg := historyConfig(t, nats.URL())
	cfg.History = false
	r := startWorker(t, cfg)
	caughtUp(t, r.w, heads)
	if r.w.History() != nil {
		t.Fatal("a history table with --history=false")
	}
	st, _ := r.w.LogStatus()
	if len(st.Streams) != 1 || st.Streams[0].Stream != verdictlog.StreamProxy {
		t.Fatalf("streams %+v, want the proxy stream alone", st.Streams)
	}
	if n := r.w.AttackTable().Len(); n != 4 {
		t.Fatalf("%d addresses in the attack table, want the 4 attacked", n)
	}
	if m := scrape(t, r.w.MetricsAddr()); !strings.Contains(m, "\nstyx_worker_history_verdicts_total 0\n") || strings.Contains(m, "styx_worker_history_addresses") {
		t.Fatalf("/metrics:\n%s", grepLines(m, "styx_worker_history"))
	}
}

// grepLines returns the lines of s that start with one of prefixes.
func grepLines(s string, prefixes ...string) string {
	var out []string
	for l := range strings.SplitSeq(s, "\n") {
		for _, p := range prefixes {
			if strings.HasPrefix(l, p) {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}
