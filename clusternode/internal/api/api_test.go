package api

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/styx-inference/styx/clusternode/internal/store"
	"github.com/styx-inference/styx/pkg/attacks"
	"github.com/styx-inference/styx/pkg/locdb"
	"github.com/styx-inference/styx/pkg/locdb/locdbtest"
	"github.com/styx-inference/styx/pkg/raven"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// now is the fixed clock of every test.
var now = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

func fixtureDB(tb testing.TB) *locdb.DB {
	tb.Helper()
	path := locdbtest.WriteTemp(tb, &locdbtest.Database{
		Vendor: "Test", Description: "api fixture", License: "CC BY-SA 4.0",
		Countries: []locdbtest.Country{
			{Code: "BR", Continent: "SA", Name: "Brazil"},
			{Code: "DE", Continent: "EU", Name: "Germany"},
			{Code: "NL", Continent: "EU", Name: "Netherlands"},
			{Code: "US", Continent: "NA", Name: "United States"},
		},
		ASes: []locdbtest.AS{
			{Number: 3320, Name: "Deutsche Telekom AG"},
			{Number: 15169, Name: "GOOGLE"},
			{Number: 24940, Name: "Hetzner Online GmbH"},
			{Number: 64512, Name: `Evil <script>alert("x")</script> & Co`},
		},
		Networks: []locdbtest.Network{
			{Prefix: netip.MustParsePrefix("8.8.8.0/24"), Country: "US", ASN: 15169, Flags: locdb.FlagAnycast},
			{Prefix: netip.MustParsePrefix("2001:4860::/32"), Country: "US", ASN: 15169},
			{Prefix: netip.MustParsePrefix("88.198.0.0/16"), Country: "DE", ASN: 24940},
			{Prefix: netip.MustParsePrefix("80.128.0.0/11"), Country: "DE", ASN: 3320},
			{Prefix: netip.MustParsePrefix("2.57.171.0/24"), Country: "BR", ASN: 262287, Flags: locdb.FlagAnonymousProxy},
			{Prefix: netip.MustParsePrefix("185.100.0.0/16"), Country: "DE", ASN: 3320, Flags: locdb.FlagDrop},
			{Prefix: netip.MustParsePrefix("45.66.0.0/16"), Country: "NL", ASN: 64512},
		},
	})
	db, err := locdb.Open(locdb.Config{Path: path, SkipVerify: true})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	return db
}

type fixture struct {
	api   *API
	store *store.Store
	reg   *prometheus.Registry

	mu      sync.Mutex
	sighted []netip.Addr
}

func newFixture(tb testing.TB, mod func(*Config)) *fixture {
	tb.Helper()
	db := fixtureDB(tb)
	st, err := store.Open(store.Config{Path: filepath.Join(tb.TempDir(), "node.db")}, zerolog.Nop())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	f := &fixture{store: st, reg: prometheus.NewRegistry()}
	cfg := Config{
		NodeID: "node-test", Store: st, Locator: db, Engine: raven.NewRule(db),
		Sighted: func(a netip.Addr, _ time.Time) {
			f.mu.Lock()
			f.sighted = append(f.sighted, a)
			f.mu.Unlock()
		},
		MaxAddresses: 4, MaxBody: 256,
		Registerer: f.reg, Gatherer: f.reg,
		Now: func() time.Time { return now },
	}
	if mod != nil {
		mod(&cfg)
	}
	f.api, err = New(cfg, zerolog.Nop())
	if err != nil {
		tb.Fatal(err)
	}
	return f
}

func (f *fixture) do(method, target, ctype, body string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	if ctype != "" {
		r.Header.Set("Content-Type", ctype)
	}
	w := httptest.NewRecorder()
	f.api.ServeHTTP(w, r)
	return w
}

const form = "application/x-www-form-urlencoded"

// seed stores a VPN verdict for 203.0.113.5 inferred two days ago, and a
// query of it 90 minutes ago.
func (f *fixture) seed(t *testing.T) {
	t.Helper()
	a := netip.MustParseAddr("203.0.113.5")
	_, err := f.store.Put([]store.Item{{Addr: a, Verdict: &styxv1.Verdict{
		Proxy: true, Type: "VPN", Risk: 80, Port: 1080, ModelVersion: "m1",
		InferredUnixNano: now.Add(-48 * time.Hour).UnixNano(),
	}}})
	if err != nil {
		t.Fatal(err)
	}
	f.store.Touch(a, now.Add(-90*time.Minute))
	// Three reports: two login attempts and a probe.
	_, err = f.store.AddAttacks([]attacks.Report{
		{Addr: a, Time: now.Add(-time.Hour), Kind: attacks.KindLogin, Reporter: "n1"},
		{Addr: a, Time: now.Add(-2 * time.Hour), Kind: attacks.KindLogin, Reporter: "n1"},
		{Addr: a, Time: now.Add(-time.Hour), Kind: attacks.KindProbe, Reporter: "n2"},
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestGolden(t *testing.T) {
	cases := []struct {
		name, method, target, body string
	}{
		{"get_v4_default", "GET", "/v2/8.8.8.8", ""},
		{"get_v4_asn_risk", "GET", "/v2/8.8.8.8?asn=1&risk=1", ""},
		{"get_v6_asn", "GET", "/v2/2001:4860:4860::8888?asn=1", ""},
		{"hosting_plain", "GET", "/v2/88.198.1.1?risk=1&asn=1", ""},
		{"hosting_vpn", "GET", "/v2/88.198.1.1?risk=1&vpn=1", ""},
		{"anonymous_proxy_no_as_name", "GET", "/v2/2.57.171.5?asn=1&risk=1", ""},
		{"hostile", "GET", "/v2/185.100.3.4?risk=1", ""},
		{"unknown_network", "GET", "/v2/198.18.0.1?asn=1&risk=1", ""},
		{"stored_verdict_seen", "GET", "/v2/203.0.113.5?risk=1&seen=1&asn=1", ""},
		{"stored_verdict_outside_days", "GET", "/v2/203.0.113.5?risk=1&seen=1&days=1", ""},
		{"attack_history", "GET", "/v2/203.0.113.5?risk=2&seen=1&asn=1", ""},
		{"attack_history_short", "GET", "/v2/203.0.113.5?risk=2&short=1&p=0", ""},
		{"risk2_no_history", "GET", "/v2/8.8.8.8?asn=1&risk=2", ""},
		{"short_node_compact", "GET", "/v2/8.8.8.8?short=1&node=1&p=0&tag=shop", ""},
		{"mapped_v4", "GET", "/v2/::ffff:8.8.8.8", ""},
		{"post_multi_warning", "POST", "/v2/?vpn=1&node=1", "ips=8.8.8.8,+88.198.1.1,nonsense,8.8.8.8"},
		{"post_path_and_form", "POST", "/v2/2.57.171.5?p=0", "ips=80.130.0.1"},
		{"post_short_ignored_for_many", "POST", "/v2/?short=1&p=0", "ips=8.8.8.8,80.130.0.1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t, nil)
			f.seed(t)
			ctype := ""
			if c.method == "POST" {
				ctype = form
			}
			w := f.do(c.method, c.target, ctype, c.body)
			if got := w.Header().Get(LicenceHeader); got != locdb.Attribution {
				t.Errorf("%s = %q", LicenceHeader, got)
			}
			if !json.Valid(w.Body.Bytes()) {
				t.Fatalf("invalid JSON: %s", w.Body)
			}
			got := fmt.Sprintf("%d %s\n%s", w.Code, w.Header().Get("Content-Type"), w.Body)
			golden := filepath.Join("testdata", c.name+".golden")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create)", err)
			}
			if got != string(want) {
				t.Errorf("%s %s:\ngot:\n%s\nwant:\n%s", c.method, c.target, got, want)
			}
		})
	}
}

func TestBadInput(t *testing.T) {
	long := "ips=" + strings.Repeat("1.2.3.4,", 40)
	cases := []struct {
		name, method, target, ctype, body string
		code                              int
		msg                               string
	}{
		{"no address", "GET", "/v2/", "", "", 400, "no address"},
		{"no address bare", "GET", "/v2", "", "", 400, "no address"},
		{"not an address", "GET", "/v2/not-an-ip", "", "", 400, "not a valid IP address"},
		{"cidr", "GET", "/v2/8.8.8.0%2F24", "", "", 400, "not a valid IP address"},
		{"trailing path", "GET", "/v2/8.8.8.8/extra", "", "", 400, "not a valid IP address"},
		{"zone", "GET", "/v2/fe80::1%25eth0", "", "", 400, "zone"},
		{"bad flag", "GET", "/v2/8.8.8.8?vpn=x", "", "", 400, "flag vpn"},
		{"flag out of range", "GET", "/v2/8.8.8.8?p=2", "", "", 400, "flag p"},
		{"negative days", "GET", "/v2/8.8.8.8?days=-1", "", "", 400, "flag days"},
		{"long tag", "GET", "/v2/8.8.8.8?tag=" + strings.Repeat("x", 300), "", "", 400, "tag"},
		{"malformed query", "GET", "/v2/8.8.8.8?asn=%zz", "", "", 400, "malformed query"},
		{"too many", "POST", "/v2/", form, "ips=1.1.1.1,1.1.1.2,1.1.1.3,1.1.1.4,1.1.1.5", 400, "too many addresses"},
		{"too many with path", "POST", "/v2/1.1.1.9", form, "ips=1.1.1.1,1.1.1.2,1.1.1.3,1.1.1.4", 400, "too many addresses"},
		{"oversized body", "POST", "/v2/", form, long, 413, "larger than 256"},
		{"json body", "POST", "/v2/", "application/json", `{"ips":["1.1.1.1"]}`, 415, "ips field"},
		{"malformed form", "POST", "/v2/", form, "ips=%zz", 400, "malformed form"},
		{"empty post", "POST", "/v2/", form, "", 400, "no address"},
		{"post only commas", "POST", "/v2/", form, "ips=,,", 400, "no address"},
		{"post all invalid", "POST", "/v2/", form, "ips=a,b", 400, "no valid IP address"},
		{"put", "PUT", "/v2/8.8.8.8", "", "", 405, "not allowed"},
		{"delete", "DELETE", "/v2/8.8.8.8", "", "", 405, "not allowed"},
		{"unknown path", "GET", "/v1/8.8.8.8", "", "", 404, "not found"},
	}
	f := newFixture(t, nil)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := f.do(c.method, c.target, c.ctype, c.body)
			if w.Code != c.code {
				t.Errorf("code %d, want %d; body %s", w.Code, c.code, w.Body)
			}
			var got struct{ Status, Message string }
			if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
				t.Fatalf("body not JSON: %v: %s", err, w.Body)
			}
			if got.Status != "error" || !strings.Contains(got.Message, c.msg) {
				t.Errorf("got %+v, want status error and a message containing %q", got, c.msg)
			}
			if c.code == 405 && w.Header().Get("Allow") == "" {
				t.Error("405 without Allow")
			}
		})
	}
}

func TestSightingsAndLastSeen(t *testing.T) {
	f := newFixture(t, nil)
	for _, target := range []string{"/v2/8.8.8.8", "/v2/10.1.2.3", "/v2/127.0.0.1", "/v2/::1", "/v2/2001:4860::1", "/v2/::ffff:88.198.1.1"} {
		if w := f.do("GET", target, "", ""); w.Code != 200 {
			t.Fatalf("%s: %d %s", target, w.Code, w.Body)
		}
	}
	want := []string{"8.8.8.8", "2001:4860::1", "88.198.1.1"}
	if len(f.sighted) != len(want) {
		t.Fatalf("sighted %v, want %v", f.sighted, want)
	}
	for i, a := range f.sighted {
		if a.String() != want[i] {
			t.Fatalf("sighted %v, want %v", f.sighted, want)
		}
	}
	// Every answered address, private or not, has its last-seen time.
	for _, s := range []string{"8.8.8.8", "10.1.2.3"} {
		if e, _ := f.store.Lookup(netip.MustParseAddr(s)); !e.LastSeen.Equal(now) {
			t.Errorf("last seen of %s = %v", s, e.LastSeen)
		}
	}
}

func TestQueryTimeHealthAndMetrics(t *testing.T) {
	f := newFixture(t, func(c *Config) {
		c.Health = func() map[string]any { return map[string]any{"uplink": "connected"} }
	})
	w := f.do("GET", "/v2/8.8.8.8?time=1", "", "")
	var got map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if qt, _ := got["query time"].(string); !strings.HasSuffix(qt, "s") || !strings.HasPrefix(qt, "0.") {
		t.Fatalf("query time %q", got["query time"])
	}
	w = f.do("GET", "/healthz", "", "")
	if w.Code != 200 || !strings.Contains(w.Body.String(), `"uplink": "connected"`) {
		t.Fatalf("healthz %d %s", w.Code, w.Body)
	}
	w = f.do("GET", "/metrics", "", "")
	body, _ := io.ReadAll(w.Body)
	for _, m := range []string{`styx_node_queries_total{code="200"} 1`, `styx_node_query_addresses_total{source="engine"} 1`, `styx_node_request_duration_seconds_bucket{route="query",le="0.0001"}`} {
		if !strings.Contains(string(body), m) {
			t.Errorf("metrics lack %q", m)
		}
	}
}

func TestHumanAgo(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0 seconds ago"},
		{time.Second, "1 second ago"},
		{6*time.Hour + 8*time.Minute + 3*time.Second, "6 hours, 8 minutes, 3 seconds ago"},
		{49*time.Hour + 5*time.Second, "2 days, 1 hour, 5 seconds ago"},
		{26*time.Hour + 61*time.Minute + 10*time.Second, "1 day, 3 hours, 1 minute ago"},
	} {
		if got := HumanAgo(c.d); got != c.want {
			t.Errorf("HumanAgo(%s) = %q, want %q", c.d, got, c.want)
		}
	}
}

// The real database, when installed, answers as the docs say.
func TestRealDatabase(t *testing.T) {
	db := locdbtest.OpenInstalled(t)
	f := newFixture(t, func(c *Config) { c.Locator, c.Engine = db, raven.NewRule(db) })
	w := f.do("GET", "/v2/8.8.8.8?asn=1&short=1&p=0", "", "")
	var got map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got["asn"] != "AS15169" || got["range"] != "8.8.8.0/24" || got["isocode"] != "US" || got["continentcode"] != "NA" {
		t.Fatalf("8.8.8.8: %s", w.Body)
	}
}
