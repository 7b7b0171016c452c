package clusternode

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/styx-inference/styx/clusternode/internal/store"
	"github.com/styx-inference/styx/pkg/attacks"
	"github.com/styx-inference/styx/pkg/embednats/natstest"
	"github.com/styx-inference/styx/pkg/history"
	"github.com/styx-inference/styx/pkg/locdb"
	"github.com/styx-inference/styx/pkg/testwait"
	"github.com/styx-inference/styx/pkg/verdictlog"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

// testLog is the verdict log for a test: an embedded JetStream server with
// both streams, and the leader's publisher writing to it.
type testLog struct {
	srv *natstest.Server
	js  jetstream.JetStream
	pub *verdictlog.Publisher
}

func startLog(t testing.TB) *testLog {
	t.Helper()
	srv := natstest.Start(t)
	nc, err := verdictlog.Connect(srv.URL(), "test-leader", zerolog.Nop())
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
	l := &testLog{srv: srv, js: js, pub: verdictlog.NewPublisher(js, verdictlog.PublisherConfig{}, zerolog.Nop())}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = l.pub.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return l
}

// config is cfg following this log, its heads read often.
func (l *testLog) config(cfg Config) Config {
	cfg.NATSURL = l.srv.URL()
	cfg.LogCheckEvery = 50 * time.Millisecond
	return cfg
}

// verdicts publishes vs (proxies and the others to their streams) and
// waits until the log holds them.
func (l *testLog) verdicts(t testing.TB, vs ...*styxv1.Verdict) {
	t.Helper()
	stored := make(chan struct{})
	before := l.pub.Stats()
	l.pub.Verdicts(1, vs, func() { close(stored) })
	select {
	case <-stored:
	case <-time.After(testwait.Timeout):
		t.Fatal("verdicts not published")
	}
	if s := l.pub.Stats(); s.Dropped != before.Dropped {
		t.Fatalf("verdicts dropped by the publisher: %+v", s)
	}
}

// attacks publishes rs and waits until the log holds them.
func (l *testLog) attacks(t *testing.T, rs ...attacks.Report) {
	t.Helper()
	ps := make([]*styxv1.AttackReport, len(rs))
	for i, r := range rs {
		ps[i] = r.Proto()
	}
	before := l.pub.Stats()
	l.pub.Attacks(1, ps)
	testwait.For(t, testwait.Timeout, "attack reports published", func() bool {
		return l.pub.Stats().Attacks == before.Attacks+uint64(len(rs))
	})
}

// heads returns each stream's last sequence.
func (l *testLog) heads(t testing.TB) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	for _, name := range verdictlog.Streams {
		s, err := l.js.Stream(t.Context(), name)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		out[name] = info.State.LastSeq
	}
	return out
}

// caughtUp waits until n has applied every stream up to heads.
func caughtUp(t testing.TB, n *Node, heads map[string]uint64) {
	t.Helper()
	testwait.For(t, testwait.Timeout, "the node caught up with the log", func() bool {
		st := n.Stats().Log
		if len(st.Streams) != len(heads) {
			return false
		}
		for _, s := range st.Streams {
			if s.Applied != heads[s.Stream] {
				return false
			}
		}
		return true
	})
}

func logVerdict(addr string, proxy bool, typ string, sec int) *styxv1.Verdict {
	return &styxv1.Verdict{
		Address: netip.MustParseAddr(addr).AsSlice(), Proxy: proxy, Type: typ, Risk: 90, ModelVersion: "rule-v1",
		InferredUnixNano: histT0.Add(time.Duration(sec) * time.Second).UnixNano(),
	}
}

// metrics returns the node's /metrics body.
func metrics(t *testing.T, n *Node) string {
	t.Helper()
	resp, err := http.Get("http://" + n.HTTPAddr() + "/metrics")
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

// metricValue returns the value of the sample named series (name and
// labels as exposed) in body.
func metricValue(t *testing.T, body, series string) float64 {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", series, err)
			}
			return f
		}
	}
	t.Fatalf("metrics lack %s", series)
	return 0
}

// logStream returns the /healthz report of one log stream.
func logStream(t *testing.T, health map[string]any, stream string) map[string]any {
	t.Helper()
	lg, ok := health["log"].(map[string]any)
	if !ok {
		t.Fatalf("healthz without log: %v", health)
	}
	s, ok := lg["streams"].(map[string]any)[stream].(map[string]any)
	if !ok {
		t.Fatalf("healthz without stream %s: %v", stream, lg)
	}
	return s
}

// A node follows the log into its store: verdicts of both streams and
// attack reports, with each stream's cursor, and shows where it is on
// /healthz and in its metrics.
func TestNodeFollowsLog(t *testing.T) {
	etcdClient(t) // no leader: everything comes through the log
	l := startLog(t)
	n := startNode(t, l.config(testConfig(t, t.TempDir(), fixtureDBPath(t)))).node

	l.verdicts(t,
		logVerdict("88.198.1.1", true, "VPN", 1),
		logVerdict("88.198.1.2", false, "", 2),
		logVerdict("2001:db8::5", true, "SOCKS5", 3),
	)
	l.attacks(t, report("88.198.1.1", 4, attacks.KindLogin, "node-2"), report("88.198.1.1", 5, attacks.KindProbe, "node-2"))
	heads := l.heads(t)
	if heads[verdictlog.StreamProxy] != 2 || heads[verdictlog.StreamClean] != 1 {
		t.Fatalf("heads %v", heads)
	}
	caughtUp(t, n, heads)

	code, m, _ := get(t, n, "/v2/88.198.1.1?risk=2")
	ans := m["88.198.1.1"].(map[string]any)
	if code != 200 || ans["proxy"] != "yes" || ans["type"] != "VPN" {
		t.Fatalf("answer %d %v", code, ans)
	}
	if ah, _ := ans["attack history"].(map[string]any); ah["Total"] != 2.0 {
		t.Fatalf("attack history %v", ans["attack history"])
	}
	for a, proxy := range map[string]bool{"88.198.1.2": false, "2001:db8::5": true} {
		if e, err := n.store.Lookup(netip.MustParseAddr(a)); err != nil || !e.HasVerdict || e.Verdict.Proxy != proxy {
			t.Fatalf("%s: %+v %v", a, e, err)
		}
	}
	for stream, want := range heads {
		if seq, err := n.store.Cursor(stream); err != nil || seq != want {
			t.Fatalf("cursor of %s %d, %v; want %d", stream, seq, err, want)
		}
	}
	st := n.Stats()
	if st.LogMessages != 3 || st.LogVerdicts != 3 || st.LogAttacksNew != 2 || !st.Log.Connected || st.Log.Stalled {
		t.Fatalf("stats %+v", st)
	}

	code, h, _ := get(t, n, "/healthz")
	if code != 200 || h["status"] != "ok" || h["log"].(map[string]any)["connected"] != true || h["log"].(map[string]any)["stalled"] != false {
		t.Fatalf("healthz %d %v", code, h)
	}
	for stream, want := range heads {
		s := logStream(t, h, stream)
		if s["applied"] != float64(want) || s["head"] != float64(want) || s["lag_messages"] != 0.0 || s["lag_seconds"] != 0.0 {
			t.Fatalf("healthz %s: %v", stream, s)
		}
	}
	body := metrics(t, n)
	for series, want := range map[string]float64{
		"styx_node_log_connected":                                     1,
		"styx_node_log_stalled":                                       0,
		`styx_node_log_applied_sequence{stream="STYX_PROXY"}`:         2,
		`styx_node_log_applied_sequence{stream="STYX_CLEAN"}`:         1,
		`styx_node_log_lag_messages{stream="STYX_PROXY"}`:             0,
		`styx_node_log_messages_total{stream="STYX_PROXY"}`:           2,
		`styx_node_log_verdicts_total{result="stored"}`:               3,
		`styx_node_log_verdicts_total{result="known"}`:                0,
		`styx_node_attack_reports_log_total{result="new"}`:            2,
		`styx_node_attack_reports_log_total{result="duplicate"}`:      0,
		`styx_node_attack_reports_forwarded_total{result="accepted"}`: 0,
	} {
		if got := metricValue(t, body, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	if strings.Contains(body, "styx_node_feed_") {
		t.Error("feed metrics still exported")
	}
}

// A node restarted on its data dir resumes from its cursors: it applies
// only what the log took while it was away, and its history table and
// attack counts are those of every message applied once. A new node with
// an empty store replays what the streams hold and reaches the same state.
func TestNodeResumesFromCursorAndNewNodeReplays(t *testing.T) {
	etcdClient(t)
	l := startLog(t)
	dbPath := fixtureDBPath(t)
	cfgA := l.config(testConfig(t, t.TempDir(), dbPath))
	a := startNode(t, cfgA)

	// While A runs: four verdicts in 88.198.10.0/24 and two reports.
	l.verdicts(t,
		logVerdict("88.198.10.1", true, "VPN", 1), logVerdict("88.198.10.2", false, "", 2),
		logVerdict("88.198.10.3", true, "VPN", 3), logVerdict("88.198.10.4", false, "", 4),
	)
	l.attacks(t, report("88.198.10.1", 5, attacks.KindLogin, "node-2"), report("88.198.10.1", 6, attacks.KindProbe, "node-2"))
	before := l.heads(t)
	caughtUp(t, a.node, before)
	a.stop(t)

	// While A is away: a new address, a newer verdict for .2, a report.
	l.verdicts(t, logVerdict("88.198.10.5", true, "SOCKS5", 7), logVerdict("88.198.10.2", true, "HTTP", 8))
	l.attacks(t, report("88.198.10.3", 9, attacks.KindDDoS, "node-2"))
	heads := l.heads(t)

	a = startNode(t, cfgA)
	caughtUp(t, a.node, heads)
	st := a.node.Stats()
	for _, s := range st.Log.Streams {
		if want := heads[s.Stream] - before[s.Stream]; s.Messages != want {
			t.Errorf("%s: %d messages applied after the restart, want %d (only those after the cursor)", s.Stream, s.Messages, want)
		}
	}
	if st.LogVerdicts != 2 || st.LogAttacksNew != 1 {
		t.Errorf("after the restart: %d verdicts, %d new reports applied; want 2 and 1", st.LogVerdicts, st.LogAttacksNew)
	}

	// A new node, empty store: everything the log holds.
	cfgB := l.config(testConfig(t, t.TempDir(), dbPath))
	cfgB.ID = "node-2"
	b := startNode(t, cfgB)
	caughtUp(t, b.node, heads)
	for _, s := range b.node.Stats().Log.Streams {
		if s.Messages != heads[s.Stream] {
			t.Errorf("new node: %d messages of %s applied, want %d", s.Messages, s.Stream, heads[s.Stream])
		}
	}

	fresh := netip.MustParseAddr("88.198.10.77")
	for _, n := range []*Node{a.node, b.node} {
		// Five addresses with verdicts, four proxies (.2's newer verdict
		// replaced its first), three reports: each counted once.
		asn := locdb.ASNOf(n.db.Lookup)(fresh)
		if got := n.history.Lookup(fresh, asn).Bucket; got != (history.Counts{Verdicts: 5, Proxies: 4, Attacks: 3}) {
			t.Errorf("%s: history of %s's bucket %+v", n.ID(), fresh, got)
		}
		for addr, want := range map[string]uint64{"88.198.10.1": 2, "88.198.10.3": 1} {
			if total, _, _, err := n.Attacks(netip.MustParseAddr(addr)); err != nil || total != want {
				t.Errorf("%s: %d attacks on %s, %v; want %d", n.ID(), total, addr, err, want)
			}
		}
		for i := 1; i <= 5; i++ {
			addr := netip.MustParseAddr("88.198.10." + strconv.Itoa(i))
			ea, _ := a.node.store.Lookup(addr)
			en, err := n.store.Lookup(addr)
			if err != nil || !en.HasVerdict || !equalVerdicts(ea, en) {
				t.Errorf("%s: %s %+v, node-1 %+v (%v)", n.ID(), addr, en.Verdict, ea.Verdict, err)
			}
		}
	}
	if e, _ := b.node.store.Lookup(netip.MustParseAddr("88.198.10.2")); !e.Verdict.Proxy || e.Verdict.Type != "HTTP" {
		t.Errorf("88.198.10.2 on the new node: %+v, want the newer verdict", e.Verdict)
	}
}

func equalVerdicts(a, b store.Entry) bool {
	return a.HasVerdict == b.HasVerdict && a.Verdict.Proxy == b.Verdict.Proxy && a.Verdict.Type == b.Verdict.Type &&
		a.Verdict.Risk == b.Verdict.Risk && a.Verdict.Inferred.Equal(b.Verdict.Inferred)
}

// syncBuffer is a log destination safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// lines returns the JSON log lines with message msg.
func (s *syncBuffer) lines(msg string) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, line := range bytes.Split(s.b.Bytes(), []byte("\n")) {
		var m map[string]any
		if json.Unmarshal(line, &m) == nil && m["message"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// A follower that is connected and behind but applies nothing is stalled:
// it says so on /healthz (a 503, with the lag), in the metrics, and in an
// error log line; once it applies again, all three clear.
func TestNodeStalledFollowerIsLoud(t *testing.T) {
	etcdClient(t)
	l := startLog(t)
	var logs syncBuffer
	release := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	// Two messages wait on the proxy stream when the node starts.
	l.verdicts(t, logVerdict("88.198.2.1", true, "VPN", 1))
	l.verdicts(t, logVerdict("88.198.2.2", true, "VPN", 2))
	cfg := l.config(testConfig(t, t.TempDir(), fixtureDBPath(t)))
	cfg.LogStallAfter = 300 * time.Millisecond
	n := startNodeWith(t, cfg, zerolog.New(&logs), func(n *Node) {
		n.testBeforeApply = func(string) { <-release } // applies nothing until released
	}).node
	t.Cleanup(unblock) // before the node stops

	testwait.For(t, testwait.Timeout, "the follower stalled", func() bool { return n.Stats().Log.Stalled })

	code, h, _ := get(t, n, "/healthz")
	if code != http.StatusServiceUnavailable || h["status"] != "unhealthy" || !strings.Contains(h["reason"].(string), "stalled") {
		t.Fatalf("healthz of a stalled node %d %v", code, h)
	}
	lg := h["log"].(map[string]any)
	if s := logStream(t, h, verdictlog.StreamProxy); lg["stalled"] != true || lg["connected"] != true || s["lag_messages"] != 2.0 || s["lag_seconds"].(float64) <= 0 {
		t.Fatalf("healthz log %v", lg)
	}
	body := metrics(t, n)
	if lag := metricValue(t, body, `styx_node_log_lag_messages{stream="STYX_PROXY"}`); lag != 2 {
		t.Errorf("lag metric %v, want 2", lag)
	}
	if metricValue(t, body, "styx_node_log_stalled") != 1 || metricValue(t, body, "styx_node_log_stalls_total") != 1 {
		t.Errorf("stall metrics:\n%s", body)
	}
	stalled := logs.lines("verdict log: follower stalled: connected and behind, but applying nothing")
	if len(stalled) != 1 || stalled[0]["level"] != "error" || stalled[0]["lag_messages"] != 2.0 {
		t.Fatalf("stall log lines %v", stalled)
	}

	unblock()
	testwait.For(t, testwait.Timeout, "the follower moving again", func() bool { return !n.Stats().Log.Stalled })
	caughtUp(t, n, l.heads(t))
	if code, h, _ := get(t, n, "/healthz"); code != 200 || h["status"] != "ok" {
		t.Fatalf("healthz after the stall %d %v", code, h)
	}
	if e, err := n.store.Lookup(netip.MustParseAddr("88.198.2.2")); err != nil || !e.HasVerdict {
		t.Fatalf("verdict after the stall %+v %v", e, err)
	}
}

// A node without a log URL follows none, and /healthz says nothing of one.
func TestNodeWithoutLog(t *testing.T) {
	etcdClient(t)
	n := startNode(t, testConfig(t, t.TempDir(), fixtureDBPath(t))).node
	code, h, _ := get(t, n, "/healthz")
	if _, ok := h["log"]; code != 200 || ok {
		t.Fatalf("healthz %d %v", code, h)
	}
	if st := n.Stats().Log; st.Connected || len(st.Streams) != 0 {
		t.Fatalf("log status %+v", st)
	}
}
