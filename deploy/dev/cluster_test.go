package dev

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/styx-inference/styx/pkg/testwait"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestNodes(t *testing.T) {
	for _, tc := range []struct {
		name  string
		addr  string
		nodes int
		want  []devNode // dataDir relative to the data dir
		err   string
	}{
		{name: "one node keeps the single node's names", addr: "127.0.0.1:8080", nodes: 1,
			want: []devNode{{id: "dev-node", name: "node", http: "127.0.0.1:8080", dataDir: "node"}}},
		{name: "three count up", addr: "127.0.0.1:8080", nodes: 3, want: []devNode{
			{id: "dev-node", name: "node", http: "127.0.0.1:8080", dataDir: "node"},
			{id: "dev-node-2", name: "node-2", http: "127.0.0.1:8081", dataDir: "node-2"},
			{id: "dev-node-3", name: "node-3", http: "127.0.0.1:8082", dataDir: "node-3"},
		}},
		{name: "IPv6", addr: "[::1]:9000", nodes: 2, want: []devNode{
			{id: "dev-node", name: "node", http: "[::1]:9000", dataDir: "node"},
			{id: "dev-node-2", name: "node-2", http: "[::1]:9001", dataDir: "node-2"},
		}},
		{name: "port 0", addr: "127.0.0.1:0", nodes: 1, err: "fixed port"},
		{name: "past the last port", addr: "127.0.0.1:65535", nodes: 2, err: "fixed port"},
		{name: "last port, one node", addr: "127.0.0.1:65535", nodes: 1,
			want: []devNode{{id: "dev-node", name: "node", http: "127.0.0.1:65535", dataDir: "node"}}},
		{name: "no port", addr: "127.0.0.1", nodes: 1, err: "node http address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.DataDir, cfg.NodeHTTP, cfg.Nodes = "/data", tc.addr, tc.nodes
			got, err := cfg.nodes()
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("%d nodes, want %d: %+v", len(got), len(tc.want), got)
			}
			for i, w := range tc.want {
				w.dataDir = filepath.Join("/data", w.dataDir)
				if got[i] != w {
					t.Errorf("node %d: %+v, want %+v", i, got[i], w)
				}
			}
		})
	}
}

func TestValidate(t *testing.T) {
	bin := t.TempDir()
	for _, b := range []string{"styx-scheduler", "styx-worker", "styx-node"} {
		if err := os.WriteFile(filepath.Join(bin, b), nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name   string
		change func(*Config)
		err    string
	}{
		{name: "defaults", change: func(*Config) {}},
		{name: "no nodes", change: func(c *Config) { c.Nodes = 0 }, err: "nodes must be at least 1"},
		{name: "no nats address", change: func(c *Config) { c.NATSAddr = "" }, err: "nats address"},
		{name: "external nats", change: func(c *Config) { c.NATSAddr, c.NATSURL, c.Insecure = "", "nats://127.0.0.1:4222", true }},
		{name: "external nats needs insecure", change: func(c *Config) { c.NATSAddr, c.NATSURL = "", "nats://127.0.0.1:4222" }, err: "--insecure"},
		{name: "node port 0", change: func(c *Config) { c.NodeHTTP = "127.0.0.1:0" }, err: "fixed port"},
		{name: "no workers", change: func(c *Config) { c.Workers = 0 }, err: "workers"},
		{name: "missing binary", change: func(c *Config) { c.BinDir = t.TempDir() }, err: "run make build"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.BinDir, cfg.DataDir = bin, t.TempDir()
			tc.change(&cfg)
			err := cfg.Validate()
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Errorf("Validate: %v, want %q", err, tc.err)
			}
		})
	}
}

func TestParseLogLag(t *testing.T) {
	for _, tc := range []struct {
		name    string
		text    string
		lag     float64
		stalled bool
		ok      bool
	}{
		{name: "summed over streams", text: `# HELP styx_node_log_lag_messages Messages between the last one applied and the stream's head.
# TYPE styx_node_log_lag_messages gauge
styx_node_log_lag_messages{stream="STYX_CLEAN"} 12
styx_node_log_lag_messages{stream="STYX_PROXY"} 3
styx_node_log_lag_seconds{stream="STYX_CLEAN"} 1.5
styx_node_log_stalled 0
`, lag: 15, ok: true},
		{name: "stalled", text: "styx_node_log_stalled 1\nstyx_node_log_lag_messages{stream=\"STYX_CLEAN\"} 7\n", lag: 7, stalled: true, ok: true},
		{name: "no log metrics", text: "styx_node_queries_total{code=\"200\"} 5\n", ok: false},
		{name: "not a number", text: "styx_node_log_lag_messages{stream=\"STYX_CLEAN\"} x\n", ok: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lag, stalled, ok := parseLogLag(strings.NewReader(tc.text))
			if lag != tc.lag || stalled != tc.stalled || ok != tc.ok {
				t.Errorf("got lag %v stalled %v ok %v, want %v %v %v", lag, stalled, ok, tc.lag, tc.stalled, tc.ok)
			}
		})
	}
}

func TestLogLags(t *testing.T) {
	serve := func(body string) *httptest.Server {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/metrics" {
				http.NotFound(w, r)
				return
			}
			_, _ = w.Write([]byte(body))
		}))
		t.Cleanup(s.Close)
		return s
	}
	a := serve("styx_node_log_lag_messages{stream=\"STYX_CLEAN\"} 0\nstyx_node_log_lag_messages{stream=\"STYX_PROXY\"} 0\n")
	b := serve("styx_node_log_lag_messages{stream=\"STYX_CLEAN\"} 40\nstyx_node_log_stalled 1\n")
	down := serve("")
	down.Close()
	client := &http.Client{Timeout: time.Second}
	defer client.CloseIdleConnections()
	if got := logLags(t.Context(), client, []string{a.URL, b.URL, down.URL}); got != "0/40!/?" {
		t.Errorf("logLags = %q, want 0/40!/?", got)
	}
}

// TestLoadSpreadsOverNodes runs the load generator against three fake
// nodes and checks that each gets its share of the queries.
func TestLoadSpreadsOverNodes(t *testing.T) {
	const nodes = 3
	var (
		mu   sync.Mutex
		addr = map[int]int{} // node -> addresses asked for
	)
	var total atomic.Int64
	var bases []string
	for i := range nodes {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if err := r.ParseForm(); err != nil || r.URL.Path != "/v2/" {
				http.Error(w, "bad request", http.StatusBadRequest)
				return
			}
			n := len(strings.Split(r.PostForm.Get("ips"), ","))
			mu.Lock()
			addr[i] += n
			mu.Unlock()
			total.Add(int64(n))
			_, _ = w.Write([]byte(`{"status":"ok"}`))
		}))
		t.Cleanup(s.Close)
		bases = append(bases, s.URL)
	}
	ld := &load{bases: bases, nets: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}, rate: 3000}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); ld.run(ctx) }()
	testwait.For(t, testwait.Timeout, "1,500 addresses queried", func() bool { return total.Load() >= 1500 })
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	for i := range nodes {
		// Requests go round-robin, perRequest addresses each: no node may
		// fall more than one request behind another.
		if got, want := addr[i], int(total.Load())/nodes; got < want-perRequest {
			t.Errorf("node %d got %d of %d addresses, want about %d", i, got, total.Load(), want)
		}
	}
	if ld.errors.Load() != 0 {
		t.Errorf("%d failed requests", ld.errors.Load())
	}
}
