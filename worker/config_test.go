package worker

import (
	"flag"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/styx-inference/styx/pkg/envflag"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		errHas string // "" = valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"pinned", func(c *Config) { c.NUMANode = "1" }, ""},
		{"all nodes", func(c *Config) { c.NUMANode = AllNodes }, ""},
		{"nop engine needs no database", func(c *Config) { c.EngineName = EngineNop; c.DBPath = "" }, ""},
		{"no etcd", func(c *Config) { c.EtcdEndpoints = nil }, "etcd"},
		{"bad listen address", func(c *Config) { c.ListenAddr = "localhost" }, "listen address"},
		{"bad advertise address", func(c *Config) { c.AdvertiseAddr = "x" }, "advertise address"},
		{"bad metrics address", func(c *Config) { c.MetricsAddr = "x" }, "metrics address"},
		{"bad id", func(c *Config) { c.ID = "a/b" }, "worker id"},
		{"bad numa node", func(c *Config) { c.NUMANode = "first" }, "numa node"},
		{"negative numa node", func(c *Config) { c.NUMANode = "-1" }, "numa node"},
		{"pinned without sysfs", func(c *Config) { c.NUMANode = "0"; c.Sysfs = "" }, "sysfs"},
		{"negative capacity", func(c *Config) { c.Capacity = -1 }, "capacity"},
		{"negative max batch", func(c *Config) { c.MaxBatch = -1 }, "max batch"},
		{"short lease", func(c *Config) { c.LeaseTTL = 500 * time.Millisecond }, "lease ttl"},
		{"unknown engine", func(c *Config) { c.EngineName = "magic" }, "engine"},
		{"rule without database", func(c *Config) { c.DBPath = "" }, "location database"},
		{"negative delay", func(c *Config) { c.BatchDelay = -time.Second }, "batch delay"},
		{"no drain timeout", func(c *Config) { c.DrainTimeout = 0 }, "drain timeout"},
		{"attack feed without nats", func(c *Config) { c.NATSURL = " " }, "nats-url"},
		{"no attack feed needs no nats", func(c *Config) { c.AttackFeed = false; c.NATSURL = "" }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.mutate(&c)
			err := c.Validate()
			switch {
			case tt.errHas == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tt.errHas != "" && (err == nil || !strings.Contains(err.Error(), tt.errHas)):
				t.Errorf("Validate() = %v, want an error about %q", err, tt.errHas)
			}
		})
	}
}

func TestNewRefusesAllNodes(t *testing.T) {
	c := DefaultConfig()
	c.NUMANode = AllNodes
	if _, err := New(c, zerolog.Nop()); err == nil {
		t.Error("New accepted --numa-node=all")
	}
}

func TestFlagsAndEnvironment(t *testing.T) {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	c := DefaultConfig()
	c.RegisterFlags(fs)
	env := map[string]string{
		"STYX_ETCD_ENDPOINTS": "10.0.0.1:2379, 10.0.0.2:2379",
		"STYX_CAPACITY":       "7",
		"STYX_LISTEN_ADDR":    "127.0.0.1:9999", // the command line wins
		"STYX_NATS_URL":       "nats://10.0.0.3:4222",
	}
	if err := fs.Parse([]string{"--listen-addr=127.0.0.1:7000", "--numa-node=1", "--drain-timeout=3s"}); err != nil {
		t.Fatal(err)
	}
	if err := envflag.Apply(fs, "STYX", func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.EtcdEndpoints, []string{"10.0.0.1:2379", "10.0.0.2:2379"}) {
		t.Errorf("EtcdEndpoints = %q", c.EtcdEndpoints)
	}
	if c.Capacity != 7 || c.ListenAddr != "127.0.0.1:7000" || c.NUMANode != "1" || c.DrainTimeout != 3*time.Second || c.NATSURL != "nats://10.0.0.3:4222" {
		t.Errorf("config %+v", c)
	}
	// Flags set either way are forwarded to children, except the per-child ones.
	got := ForwardArgs(fs)
	want := []string{"--capacity=7", "--drain-timeout=3s", "--etcd-endpoints=10.0.0.1:2379,10.0.0.2:2379", "--listen-addr=127.0.0.1:7000", "--nats-url=nats://10.0.0.3:4222"}
	if !slices.Equal(got, want) {
		t.Errorf("ForwardArgs = %q, want %q", got, want)
	}
}

func TestDefaultID(t *testing.T) {
	tests := []struct {
		host  string
		node  int
		bound string
		want  string
	}{
		{"web1", 0, "127.0.0.1:4000", "web1-numa0"},
		{"web1", 3, "[::1]:4000", "web1-numa3"},
		{"web1", -1, "127.0.0.1:4000", "web1-4000"},
		{"web1", -1, "[::1]:4001", "web1-4001"},
	}
	for _, tt := range tests {
		if got := defaultID(tt.host, tt.node, tt.bound); got != tt.want {
			t.Errorf("defaultID(%q, %d, %q) = %q, want %q", tt.host, tt.node, tt.bound, got, tt.want)
		}
	}
}

func TestChildArgs(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		index  int
		node   int
		want   []string
	}{
		{"defaults", func(*Config) {}, 0, 0, []string{"--base", "--numa-node=0", "--listen-addr=127.0.0.1:0"}},
		{"id and fixed ports", func(c *Config) {
			c.ID = "w"
			c.ListenAddr = "0.0.0.0:7000"
			c.AdvertiseAddr = "web1:7000"
			c.MetricsAddr = "127.0.0.1:9100"
		}, 1, 2, []string{"--base", "--numa-node=2", "--id=w-numa2", "--listen-addr=0.0.0.0:7001",
			"--advertise-addr=web1:7001", "--metrics-addr=127.0.0.1:9101"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.mutate(&c)
			got, err := childArgs(SupervisorConfig{Worker: c, Args: []string{"--base"}}, tt.index, tt.node)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("childArgs = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestOffsetPort(t *testing.T) {
	tests := []struct {
		addr    string
		n       int
		want    string
		wantErr bool
	}{
		{"127.0.0.1:0", 3, "127.0.0.1:0", false},
		{"127.0.0.1:7000", 0, "127.0.0.1:7000", false},
		{"[::1]:7000", 2, "[::1]:7002", false},
		{"127.0.0.1:65535", 1, "", true},
		{"127.0.0.1:http", 1, "", true},
		{"nohost", 1, "", true},
	}
	for _, tt := range tests {
		got, err := offsetPort(tt.addr, tt.n)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("offsetPort(%q, %d) = %q, %v; want %q, error %v", tt.addr, tt.n, got, err, tt.want, tt.wantErr)
		}
	}
}
