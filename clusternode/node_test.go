package clusternode

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/styx-inference/styx/clusternode/internal/fakesched"
	"github.com/styx-inference/styx/pkg/embedetcd"
	"github.com/styx-inference/styx/pkg/keyspace"
	"github.com/styx-inference/styx/pkg/locdb"
	"github.com/styx-inference/styx/pkg/locdb/locdbtest"
	"github.com/styx-inference/styx/pkg/testwait"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

var etcd *embedetcd.Server

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "clusternode-etcd-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	etcd, err = embedetcd.Start(embedetcd.Config{Dir: dir, ClientAddr: "127.0.0.1:0"})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	etcd.Close()
	_ = os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func fixtureDBPath(t testing.TB) string {
	t.Helper()
	return locdbtest.WriteTemp(t, &locdbtest.Database{
		Countries: []locdbtest.Country{{Code: "DE", Continent: "EU", Name: "Germany"}},
		ASes:      []locdbtest.AS{{Number: 24940, Name: "Hetzner Online GmbH"}},
		Networks: []locdbtest.Network{
			{Prefix: netip.MustParsePrefix("88.198.0.0/16"), Country: "DE", ASN: 24940},
		},
	})
}

func etcdClient(t testing.TB) *clientv3.Client {
	t.Helper()
	cli, err := etcd.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	if _, err := cli.Delete(context.Background(), keyspace.Root, clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	return cli
}

func testConfig(t testing.TB, dataDir, dbPath string) Config {
	cfg := DefaultConfig()
	cfg.EtcdEndpoints = []string{etcd.Endpoint()}
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.ID = "node-1"
	cfg.DataDir = dataDir
	cfg.DBPath = dbPath
	cfg.SkipVerify = true
	cfg.LeaseTTL = 2 * time.Second
	cfg.BatchInterval = 5 * time.Millisecond
	cfg.ReconnectMin, cfg.ReconnectMax = 10*time.Millisecond, 100*time.Millisecond
	cfg.ShutdownTimeout = 2 * time.Second
	cfg.NATSURL = "" // a test that needs the verdict log starts one (startLog)
	// The tests' events have fixed times (histT0), which the default
	// retention would sweep from the store of a restarted node.
	cfg.CleanRetention, cfg.ProxyRetention = 100*365*24*time.Hour, 100*365*24*time.Hour
	return cfg
}

type running struct {
	node   *Node
	cancel context.CancelFunc
	done   chan error
}

func startNode(t testing.TB, cfg Config) *running {
	t.Helper()
	return startNodeWith(t, cfg, zerolog.Nop(), nil)
}

// startNodeWith starts a node logging to log; prep, when set, sees the
// node between New and Run.
func startNodeWith(t testing.TB, cfg Config, log zerolog.Logger, prep func(*Node)) *running {
	t.Helper()
	n, err := New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if prep != nil {
		prep(n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{node: n, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- n.Run(ctx) }()
	select {
	case <-n.Ready():
	case err := <-r.done:
		t.Fatalf("Run: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("node not ready")
	}
	t.Cleanup(func() { r.stop(t) })
	return r
}

func (r *running) stop(t testing.TB) {
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("node did not stop")
	}
}

func get(t *testing.T, n *Node, path string) (int, map[string]any, http.Header) {
	t.Helper()
	resp, err := http.Get("http://" + n.HTTPAddr() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("GET %s: %v: %s", path, err, b)
	}
	return resp.StatusCode, m, resp.Header
}

// A query is answered at once by the engine, streamed to the leader, and
// answered from the store once the verdict is back; registration comes and
// goes with the node; verdicts survive a restart.
func TestNodeEndToEnd(t *testing.T) {
	cli := etcdClient(t)
	f, err := fakesched.Start(fakesched.Config{ID: "styx-1", Answer: fakesched.VerdictFor})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Stop()
	if err := f.Register(context.Background(), cli, "x"); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	outcomes := map[uint64]int{}
	dataDir, dbPath := t.TempDir(), fixtureDBPath(t)
	cfg := testConfig(t, dataDir, dbPath)
	cfg.OnOutcome = func(id uint64, _ netip.Addr, kind styxv1.OutcomeKind) {
		mu.Lock()
		outcomes[id]++
		mu.Unlock()
	}
	r := startNode(t, cfg)
	n := r.node

	// Registered under /styx/nodes/<id> with the real HTTP address.
	testwait.For(t, testwait.Timeout, "registration", func() bool {
		resp, err := cli.Get(context.Background(), keyspace.NodeKey("node-1"))
		if err != nil || len(resp.Kvs) != 1 {
			return false
		}
		var reg keyspace.NodeRegistration
		return keyspace.Decode(resp.Kvs[0].Value, &reg) == nil && reg.HTTPAddr == n.HTTPAddr() && reg.ID == "node-1"
	})

	// First answer: the engine (a hosting network), at once.
	code, m, h := get(t, n, "/v2/88.198.1.1?asn=1&risk=1")
	if code != 200 || h.Get("X-Data-Licence") != locdb.Attribution {
		t.Fatalf("code %d header %q", code, h.Get("X-Data-Licence"))
	}
	ans := m["88.198.1.1"].(map[string]any)
	if ans["proxy"] != "no" || ans["type"] != "Hosting" || ans["provider"] != "Hetzner Online GmbH" || ans["isocode"] != "DE" {
		t.Fatalf("engine answer %v", ans)
	}
	// The sighting reaches the leader; its verdict comes back and is stored.
	testwait.For(t, testwait.Timeout, "verdict", func() bool { return n.Stats().Verdicts == 1 })
	_, m, _ = get(t, n, "/v2/88.198.1.1?risk=1&seen=1")
	ans = m["88.198.1.1"].(map[string]any)
	if ans["proxy"] != "yes" || ans["type"] != "VPN" || ans["risk"] != 80.0 || ans["last seen unix"] == nil {
		t.Fatalf("stored answer %v", ans)
	}
	// Queried again within the window: not streamed again.
	if s := n.Stats(); s.Submitted != 1 || s.Deduplicated != 1 {
		t.Fatalf("stats %+v", s)
	}
	// Submit injects without HTTP.
	if got := n.Submit(netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("198.51.100.2"), netip.MustParseAddr("198.51.100.1")); got != 2 {
		t.Fatalf("Submit took %d, want 2", got)
	}
	testwait.For(t, testwait.Timeout, "three verdicts", func() bool { return n.Stats().Verdicts == 3 })
	mu.Lock()
	if len(outcomes) != 3 {
		t.Fatalf("OnOutcome for %d sightings, want 3", len(outcomes))
	}
	for id, c := range outcomes {
		if c != 1 {
			t.Fatalf("OnOutcome for %d called %d times", id, c)
		}
	}
	mu.Unlock()

	// /metrics and /healthz.
	code, m, _ = get(t, n, "/healthz")
	if code != 200 || m["uplink_connected"] != true {
		t.Fatalf("healthz %d %v", code, m)
	}
	resp, err := http.Get("http://" + n.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		"styx_node_sightings_submitted_total 3", "styx_node_sightings_not_submitted_total 0",
		`styx_node_outcomes_total{kind="verdict"} 3`, "styx_node_sightings_pending 0",
		`styx_node_request_duration_seconds_count{route="query"}`, `styx_node_queries_total{code="200"} 2`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}

	// Stop: the lease is revoked at once, not after its TTL.
	r.stop(t)
	gone, err := cli.Get(context.Background(), keyspace.NodeKey("node-1"))
	if err != nil || len(gone.Kvs) != 0 {
		t.Fatalf("registration after stop: %v %v", gone, err)
	}

	// Restart on the same data: the stored verdict answers at once, even
	// with no leader at all.
	if _, err := cli.Delete(context.Background(), keyspace.LeaderPrefix, clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	r2 := startNode(t, testConfig(t, dataDir, dbPath))
	_, m, _ = get(t, r2.node, "/v2/88.198.1.1")
	if ans := m["88.198.1.1"].(map[string]any); ans["proxy"] != "yes" || ans["type"] != "VPN" {
		t.Fatalf("after restart %v", ans)
	}
}

// Without etcd or STYX the node still answers, and POST works over real
// HTTP.
func TestNodeAnswersWithoutEtcd(t *testing.T) {
	cfg := testConfig(t, t.TempDir(), fixtureDBPath(t))
	cfg.EtcdEndpoints = []string{"127.0.0.1:1"}
	cfg.LeaseTTL = time.Second
	r := startNode(t, cfg)
	start := time.Now()
	resp, err := http.PostForm("http://"+r.node.HTTPAddr()+"/v2/?vpn=1&p=0", url.Values{"ips": {"88.198.7.7,2001:db8::1,bad"}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if time.Since(start) > 2*time.Second {
		t.Fatalf("answer took %s", time.Since(start))
	}
	want := `{"status":"warning","message":"1 of 3 addresses could not be checked","88.198.7.7":{"proxy":"yes","type":"Hosting"},"2001:db8::1":{"proxy":"no"},"bad":{"error":"not a valid IP address"}}` + "\n"
	if resp.StatusCode != 200 || string(b) != want {
		t.Fatalf("%d %s\nwant %s", resp.StatusCode, b, want)
	}
	if s := r.node.Stats(); s.Submitted != 2 || s.Pending != 2 || s.Connected {
		t.Fatalf("stats %+v", s)
	}
}

func TestConfigValidate(t *testing.T) {
	ok := DefaultConfig()
	if err := ok.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, c := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"no endpoints", func(c *Config) { c.EtcdEndpoints = nil }, "no etcd endpoints"},
		{"bad http addr", func(c *Config) { c.HTTPAddr = "8080" }, "http address"},
		{"bad id", func(c *Config) { c.ID = "a/b" }, "node id"},
		{"no data dir", func(c *Config) { c.DataDir = "" }, "data dir"},
		{"no db", func(c *Config) { c.DBPath = "" }, "location database"},
		{"short ttl", func(c *Config) { c.LeaseTTL = time.Millisecond }, "lease ttl"},
		{"zero pending", func(c *Config) { c.MaxPending = 0 }, "max pending"},
		{"zero batch", func(c *Config) { c.BatchSize = 0 }, "batch size"},
		{"zero interval", func(c *Config) { c.BatchInterval = 0 }, "batch interval"},
		{"zero addresses", func(c *Config) { c.MaxAddresses = 0 }, "max addresses"},
		{"zero body", func(c *Config) { c.MaxBody = 0 }, "max body"},
		{"negative threats", func(c *Config) { c.ThreatsRecent = -1 }, "threats recent"},
		{"huge threats", func(c *Config) { c.ThreatsRecent = 100_001 }, "threats recent"},
		{"zero clean retention", func(c *Config) { c.CleanRetention = 0 }, "clean retention"},
		{"proxy retention below clean", func(c *Config) { c.ProxyRetention = c.CleanRetention - time.Second }, "proxy retention"},
	} {
		cfg := DefaultConfig()
		c.mod(&cfg)
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error containing %q", c.name, err, c.want)
		}
	}
	if id := DefaultID("127.0.0.1:8080"); !strings.HasSuffix(id, "-8080") || keyspace.ValidID(id) != nil {
		t.Errorf("DefaultID = %q", id)
	}
}
