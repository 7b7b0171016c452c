package clusternode

import (
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/styx-inference/styx/clusternode/internal/store"
	"github.com/styx-inference/styx/pkg/testwait"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

// A node enforces the retention policy on its store from its start: clean
// verdicts past --clean-retention and proxies past --proxy-retention are
// swept, and a query for them is answered by the engine again.
func TestNodeRetention(t *testing.T) {
	etcdClient(t)
	dataDir, dbPath := t.TempDir(), fixtureDBPath(t)
	cfg := testConfig(t, dataDir, dbPath)
	cfg.CleanRetention, cfg.ProxyRetention = time.Hour, 720*time.Hour

	now := time.Now()
	verdict := func(proxy bool, age time.Duration) *styxv1.Verdict {
		v := &styxv1.Verdict{Proxy: proxy, Risk: 10, ModelVersion: "m1", InferredUnixNano: now.Add(-age).UnixNano()}
		if proxy {
			v.Type, v.Risk = "VPN", 90
		}
		return v
	}
	var (
		cleanOld   = netip.MustParseAddr("88.198.1.1")
		cleanYoung = netip.MustParseAddr("88.198.1.2")
		proxyOld   = netip.MustParseAddr("88.198.1.3")
		proxyYoung = netip.MustParseAddr("88.198.1.4")
	)
	st, err := store.Open(store.Config{Path: filepath.Join(dataDir, StoreFile)}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Put([]store.Item{
		{Addr: cleanOld, Verdict: verdict(false, 2*time.Hour)},
		{Addr: cleanYoung, Verdict: verdict(false, 10*time.Minute)},
		{Addr: proxyOld, Verdict: verdict(true, 721*time.Hour)},
		{Addr: proxyYoung, Verdict: verdict(true, 2*time.Hour)},
	}); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	r := startNode(t, cfg)
	testwait.For(t, testwait.Timeout, "the start sweep", func() bool {
		body := metrics(t, r.node)
		return metricValue(t, body, `styx_node_store_expired_total{kind="clean"}`) == 1 &&
			metricValue(t, body, `styx_node_store_expired_total{kind="proxy"}`) == 1
	})
	if v := metricValue(t, metrics(t, r.node), "styx_node_store_bytes"); v <= 0 {
		t.Fatalf("styx_node_store_bytes %v", v)
	}
	for addr, want := range map[netip.Addr]bool{cleanOld: false, cleanYoung: true, proxyOld: false, proxyYoung: true} {
		if _, ok, err := r.node.store.LookupVerdict(addr); err != nil || ok != want {
			t.Errorf("%s: stored verdict %v (%v), want %v", addr, ok, err, want)
		}
	}
	// The swept proxy is answered by the engine (a hosting network), the
	// kept one from the store.
	_, m, _ := get(t, r.node, "/v2/88.198.1.3?risk=1")
	if ans := m["88.198.1.3"].(map[string]any); ans["type"] != "Hosting" {
		t.Errorf("swept proxy answered %v, want the engine's answer", ans)
	}
	_, m, _ = get(t, r.node, "/v2/88.198.1.4?risk=1")
	if ans := m["88.198.1.4"].(map[string]any); ans["type"] != "VPN" {
		t.Errorf("kept proxy answered %v, want the stored verdict", ans)
	}
}
