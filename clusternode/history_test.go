package clusternode

import (
	"bytes"
	"io"
	"net/http/httptest"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/styx-inference/styx/clusternode/internal/store"
	"github.com/styx-inference/styx/pkg/attacks"
	"github.com/styx-inference/styx/pkg/features"
	"github.com/styx-inference/styx/pkg/history"
	"github.com/styx-inference/styx/pkg/locdb"
	"github.com/styx-inference/styx/pkg/model"
	"github.com/styx-inference/styx/pkg/raven"
	"github.com/styx-inference/styx/pkg/testwait"
	"github.com/styx-inference/styx/pkg/verdictlog"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

// realDBPath is the installed location database the history tests locate
// addresses with (their ASes come from it).
const realDBPath = "/var/lib/location/database.db"

func historyConfig(t *testing.T, dataDir string) Config {
	t.Helper()
	if _, err := os.Stat(realDBPath); err != nil {
		t.Skipf("real location database not installed: %v", err)
	}
	cfg := testConfig(t, dataDir, realDBPath)
	cfg.AttackToken = "history-test-token-0123"
	cfg.ThreatsRecent = 10 // the threats window shares the verdict hook
	return cfg
}

// histT0 is recent: a running node's store sweeps verdicts older than
// its retention (clean verdicts 1 h).
var histT0 = time.Now().Add(-20 * time.Minute).Truncate(time.Second)

// histEvents are what the node receives, each through its real path, and
// the same events as a worker's log would carry them.
type histEvents struct {
	outcomes []store.Item     // Store.Put: verdicts of the node's own sightings
	logV     []store.Item     // Store.ApplyLog: verdicts from the log
	logA     []attacks.Report // Store.ApplyLog: attack reports from the log
	posted   string           // POST /v2/attacks: reports taken here
}

func verdictItem(addr string, proxy bool, sec int) store.Item {
	a := netip.MustParseAddr(addr)
	return store.Item{Addr: a, Verdict: &styxv1.Verdict{
		Address: a.AsSlice(), Proxy: proxy, Type: "VPN", Risk: 90, ModelVersion: "rule-v1",
		InferredUnixNano: histT0.Add(time.Duration(sec) * time.Second).UnixNano(),
	}}
}

func report(addr string, sec int, k attacks.Kind, reporter string) attacks.Report {
	return attacks.Report{Addr: netip.MustParseAddr(addr), Time: histT0.Add(time.Duration(sec) * time.Second), Kind: k, Reporter: reporter}
}

// bucketEvents: five addresses of 88.198.10.0/24 (and one elsewhere in
// its AS) get verdicts from sightings and from the log, and attack
// reports from the log and from this node's endpoint (one line twice).
func bucketEvents() histEvents {
	at := func(sec int) string { return histT0.Add(time.Duration(sec) * time.Second).Format(time.RFC3339) }
	return histEvents{
		outcomes: []store.Item{verdictItem("88.198.10.1", true, 1), verdictItem("88.198.10.2", false, 2)},
		logV: []store.Item{
			verdictItem("88.198.10.3", true, 3), verdictItem("88.198.10.4", true, 4),
			verdictItem("88.198.10.5", false, 5), verdictItem("88.198.20.5", true, 6),
		},
		logA: []attacks.Report{
			report("88.198.10.2", 10, attacks.KindProbe, "node-2"),
			report("88.198.20.5", 11, attacks.KindDDoS, "node-2"),
		},
		posted: "88.198.10.4," + at(20) + ",login\n88.198.10.4," + at(20) + ",login\n88.198.10.1," + at(21) + ",probe\n88.198.10.4," + at(22) + ",ddos\n",
	}
}

// deliver sends ev to n through the store's Put and ApplyLog and the
// attack endpoint.
func deliver(t *testing.T, n *Node, cfg Config, ev histEvents) {
	t.Helper()
	if _, err := n.store.Put(ev.outcomes); err != nil {
		t.Fatal(err)
	}
	if _, _, err := n.store.ApplyLog(verdictlog.StreamProxy, 7, ev.logV, ev.logA); err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest("POST", "/v2/attacks", strings.NewReader(ev.posted))
	r.Header.Set("Authorization", "Bearer "+cfg.AttackToken)
	w := httptest.NewRecorder()
	n.Handler().ServeHTTP(w, r)
	if w.Code != 200 {
		t.Fatalf("POST /v2/attacks: %d %s", w.Code, w.Body)
	}
}

// workerTable folds ev as a worker folds the log: the verdicts in one
// batch, the attack reports in another, through its attack table.
func workerTable(t *testing.T, db *locdb.DB, cfg Config, ev histEvents) *history.Table {
	t.Helper()
	h := history.New(history.Config{MaxAddrs: cfg.HistoryMax, Locate: locdb.ASNOf(db.Lookup), Attacks: attacks.NewTable(1000)})
	var vs []*styxv1.Verdict
	for _, it := range append(append([]store.Item{}, ev.outcomes...), ev.logV...) {
		vs = append(vs, it.Verdict)
	}
	rs := append([]attacks.Report{}, ev.logA...)
	sc := attacks.NewScanner(strings.NewReader(ev.posted), time.Now(), cfg.ID)
	for {
		r, err := sc.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, r)
	}
	var ps []*styxv1.AttackReport
	for _, r := range rs {
		ps = append(ps, r.Proto())
	}
	for _, b := range []*styxv1.LogBatch{{Verdicts: vs}, {Attacks: ps}} {
		if _, err := h.ApplyBatch(b); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

// schema2Artifact is a schema 2 model without trees: enough to load, and
// to read the features its engine extracts.
func schema2Artifact(t *testing.T) []byte {
	t.Helper()
	m := &model.Model{Version: "raven-node-history", SchemaVersion: features.SchemaHistory,
		Features: features.NamesOf(features.SchemaHistory), Params: model.DefaultParams()}
	for _, name := range []string{model.HeadAnonymiser, model.HeadHostile} {
		m.Heads = append(m.Heads, model.Head{Name: name, Threshold: 0.5})
	}
	if err := m.Compile(); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := m.Encode(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// A node's history, folded from verdicts and attack reports as they land
// in its store (sightings, log, attack endpoint), is what a worker's
// table folding the same log holds; the schema 2 engine of the node's
// real-time client reads it for an address never seen before.
func TestNodeHistoryMatchesWorker(t *testing.T) {
	cfg := historyConfig(t, t.TempDir())
	n, err := New(cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if n.history == nil {
		t.Fatal("no history table with --history and --follow-models")
	}
	ev := bucketEvents()
	deliver(t, n, cfg, ev)
	w := workerTable(t, n.db, cfg, ev)

	fresh := netip.MustParseAddr("88.198.10.77")
	asn := locdb.ASNOf(n.db.Lookup)(fresh)
	if asn == 0 {
		t.Fatalf("%s has no AS in the location database", fresh)
	}
	for _, a := range []string{"88.198.10.77", "88.198.10.1", "88.198.10.2", "88.198.10.4", "88.198.20.5", "88.198.30.1"} {
		addr := netip.MustParseAddr(a)
		got, want := n.history.Lookup(addr, locdb.ASNOf(n.db.Lookup)(addr)), w.Lookup(addr, locdb.ASNOf(n.db.Lookup)(addr))
		if got != want {
			t.Errorf("%s: node %+v, worker %+v", a, got, want)
		}
	}
	st := n.history.Lookup(fresh, asn)
	// .1 .2 .3 .4 .5 have verdicts, .1 .3 .4 proxies; reports: .2 one,
	// .4 two (the line sent twice counts once), .1 one.
	if st.Bucket != (history.Counts{Verdicts: 5, Proxies: 3, Attacks: 4}) || st.AS.Verdicts != 6 || st.AS.Attacks != 5 {
		t.Fatalf("fresh address stats %+v", st)
	}

	// The real-time client: the published model is loaded by the node's
	// loader and installed in its Swap, as the rollout follower does.
	e, err := n.loader().Load(schema2Artifact(t))
	if err != nil {
		t.Fatal(err)
	}
	n.engine.Set(e)
	m, ok := n.engine.Current().(*raven.Model)
	if !ok {
		t.Fatalf("engine %T", n.engine.Current())
	}
	x := make([]float32, features.CountHistory)
	if _, ok := m.Extract(fresh, x); !ok {
		t.Fatalf("%s has no network", fresh)
	}
	want := make([]float32, features.CountHistory)
	features.WriteHistory(w.Lookup(fresh, asn), want)
	nonZero := 0
	for i := features.Count; i < features.CountHistory; i++ {
		if x[i] != want[i] {
			t.Errorf("history feature %d: engine %v, worker %v", i, x[i], want[i])
		}
		if x[i] != 0 {
			nonZero++
		}
	}
	if x[features.HistBucketVerdicts] != 5 || x[features.HistBucketAttacks] != 4 || nonZero < 6 {
		t.Errorf("engine's history block %v", x[features.Count:])
	}
	if v := n.engine.ModelVersion(); v != "raven-node-history" {
		t.Errorf("engine %q", v)
	}
}

// A restarted node refills its table from the store: every address reads
// what it read before the restart.
func TestNodeHistorySurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	cfg := historyConfig(t, dir)
	n, err := New(cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	deliver(t, n, cfg, bucketEvents())
	addrs := []string{"88.198.10.77", "88.198.10.1", "88.198.10.2", "88.198.10.4", "88.198.20.5"}
	before := map[string]history.Stats{}
	for _, a := range addrs {
		addr := netip.MustParseAddr(a)
		before[a] = n.history.Lookup(addr, locdb.ASNOf(n.db.Lookup)(addr))
	}
	sizes := n.history.Sizes()
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}

	n, err = New(cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	for _, a := range addrs {
		addr := netip.MustParseAddr(a)
		if got := n.history.Lookup(addr, locdb.ASNOf(n.db.Lookup)(addr)); got != before[a] {
			t.Errorf("%s after restart %+v, before %+v", a, got, before[a])
		}
	}
	if z := n.history.Sizes(); z.Addrs != sizes.Addrs || z.Buckets != sizes.Buckets || z.ASes != sizes.ASes || !z.Clock.Equal(sizes.Clock) {
		t.Errorf("sizes after restart %+v, before %+v", z, sizes)
	}
}

// --history-max bounds the table at start (the newest stored entries are
// kept) and as verdicts land.
func TestNodeHistoryBound(t *testing.T) {
	dir := t.TempDir()
	cfg := historyConfig(t, dir)
	cfg.HistoryMax = 4
	n, err := New(cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	var items []store.Item
	for i := range 10 {
		items = append(items, verdictItem("88.198."+itoa(i)+".9", i%2 == 0, i))
	}
	if _, err := n.store.Put(items); err != nil {
		t.Fatal(err)
	}
	if _, _, err := n.store.ApplyLog(verdictlog.StreamProxy, 1, nil, []attacks.Report{report("88.198.50.1", 3, attacks.KindLogin, "node-2")}); err != nil {
		t.Fatal(err)
	}
	if z := n.history.Sizes(); z.Addrs != 4 || z.Buckets > 4 || z.ASes > 4 {
		t.Errorf("live: %+v", z)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}

	n, err = New(cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if z := n.history.Sizes(); z.Addrs != 4 || z.Buckets != 4 {
		t.Errorf("after restart: %+v", z)
	}
	// The newest four are the verdicts at 6 to 9 s; the attack at 3 s is
	// older, so it is left out.
	for i := range 10 {
		_, held := n.history.Entry(netip.MustParseAddr("88.198." + itoa(i) + ".9"))
		if held != (i >= 6) {
			t.Errorf("88.198.%d.9 held %v", i, held)
		}
	}
	if _, held := n.history.Entry(netip.MustParseAddr("88.198.50.1")); held {
		t.Error("the oldest attack history held")
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// The log, followed by a running node, reaches the history table as it
// reaches a worker's: the same batches, the same statistics.
func TestNodeHistoryFollowsLog(t *testing.T) {
	etcdClient(t)
	l := startLog(t)
	cfg := l.config(historyConfig(t, t.TempDir()))
	n := startNode(t, cfg).node

	var vs []*styxv1.Verdict
	for _, it := range []store.Item{
		verdictItem("88.198.10.1", true, 1), verdictItem("88.198.10.2", true, 2), verdictItem("88.198.10.3", false, 3),
		verdictItem("88.198.10.1", false, 4), // a later verdict replaces the first
	} {
		vs = append(vs, it.Verdict)
	}
	rs := []attacks.Report{
		report("88.198.10.2", 5, attacks.KindProbe, "node-2"),
		report("88.198.10.3", 6, attacks.KindLogin, "node-2"),
	}
	var ps []*styxv1.AttackReport
	for _, r := range rs {
		ps = append(ps, r.Proto())
	}
	w := history.New(history.Config{MaxAddrs: cfg.HistoryMax, Locate: locdb.ASNOf(n.db.Lookup), Attacks: attacks.NewTable(1000)})
	for _, b := range []*styxv1.LogBatch{{Verdicts: vs}, {Attacks: ps}} {
		if _, err := w.ApplyBatch(b); err != nil {
			t.Fatal(err)
		}
	}
	l.verdicts(t, vs...)
	l.attacks(t, rs...)
	fresh := netip.MustParseAddr("88.198.10.77")
	asn := locdb.ASNOf(n.db.Lookup)(fresh)
	want := w.Lookup(fresh, asn)
	if want.Bucket != (history.Counts{Verdicts: 3, Proxies: 1, Attacks: 2}) {
		t.Fatalf("worker's stats %+v", want)
	}
	testwait.For(t, testwait.Timeout, "the log folded", func() bool { return n.history.Lookup(fresh, asn) == want })
}
