package api

import (
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/styx-inference/styx/clusternode/internal/store"
	"github.com/styx-inference/styx/clusternode/internal/threats"
	"github.com/styx-inference/styx/pkg/locdb"
	"github.com/styx-inference/styx/pkg/locdb/locdbtest"
	"github.com/styx-inference/styx/pkg/raven"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

// threatsFixture is an API whose threats window follows its store, as the
// node wires them.
type threatsFixture struct {
	api   *API
	store *store.Store
	win   *threats.Recent
}

func newThreatsFixture(t testing.TB, capacity int, loc raven.Locator) *threatsFixture {
	t.Helper()
	win, err := threats.New(capacity)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(store.Config{Path: filepath.Join(t.TempDir(), "node.db"), OnVerdicts: win.Landed}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if loc == nil {
		loc = fixtureDB(t)
	}
	a, err := New(Config{
		NodeID: "node-test", Store: st, Locator: loc, Engine: raven.NewRule(loc),
		MaxAddresses: 4, MaxBody: 256, Threats: win,
		Now: func() time.Time { return now },
	}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	return &threatsFixture{api: a, store: st, win: win}
}

func (f *threatsFixture) put(t *testing.T, addr string, proxy bool, typ string, port uint32, ago time.Duration) {
	t.Helper()
	_, err := f.store.Put([]store.Item{{Addr: netip.MustParseAddr(addr), Verdict: &styxv1.Verdict{
		Proxy: proxy, Type: typ, Risk: 90, Port: port, ModelVersion: "m1",
		InferredUnixNano: now.Add(-ago).UnixNano(),
	}}})
	if err != nil {
		t.Fatal(err)
	}
}

// seed stores four proxy verdicts and two that are not proxies.
func (f *threatsFixture) seed(t *testing.T) {
	f.put(t, "2.57.171.5", true, "Anonymizer", 0, 12*time.Minute)
	f.put(t, "45.66.1.2", true, "SOCKS5", 1080, 3*time.Hour)
	f.put(t, "88.198.1.1", true, "VPN", 0, 30*time.Second)
	f.put(t, "2001:db8::7", true, "Hostile", 0, 50*time.Hour) // no network in the fixture
	f.put(t, "8.8.8.8", false, "", 0, time.Minute)
	f.put(t, "80.130.0.1", true, "VPN", 0, 2*time.Hour)
	f.put(t, "80.130.0.1", false, "", 0, time.Hour) // no longer a proxy
}

type threatsAnswer struct {
	Status   string           `json:"status"`
	Message  string           `json:"message"`
	Node     string           `json:"node"`
	TimeUnix int64            `json:"time_unix"`
	Held     int              `json:"held"`
	Capacity int              `json:"capacity"`
	Count    int              `json:"count"`
	Licence  string           `json:"licence"`
	Threats  []map[string]any `json:"threats"`
}

func (f *threatsFixture) get(t *testing.T, target string) (int, threatsAnswer, string) {
	t.Helper()
	w := httptestDo(f.api, "GET", target)
	var a threatsAnswer
	if err := json.Unmarshal(w.Body.Bytes(), &a); err != nil {
		t.Fatalf("GET %s: %v: %s", target, err, w.Body)
	}
	if got := w.Header().Get(LicenceHeader); got != locdb.Attribution {
		t.Errorf("GET %s: %s = %q", target, LicenceHeader, got)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/json; charset=utf-8" {
		t.Errorf("GET %s: Content-Type %q", target, ct)
	}
	return w.Code, a, w.Body.String()
}

// The JSON behind the page, byte for byte (n above the number held: the
// whole window, newest first, so the answer is deterministic).
func TestThreatsJSONGolden(t *testing.T) {
	f := newThreatsFixture(t, 500, nil)
	f.seed(t)
	w := httptestDo(f.api, "GET", "/threats.json?n=500")
	got := fmt.Sprintf("%d %s\n%s", w.Code, w.Header().Get("Content-Type"), w.Body)
	golden := filepath.Join("testdata", "threats_json.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestThreatsJSONShape(t *testing.T) {
	f := newThreatsFixture(t, 500, nil)
	f.seed(t)
	code, a, body := f.get(t, "/threats.json")
	if code != 200 || a.Status != "ok" || a.Node != "node-test" || a.TimeUnix != now.Unix() ||
		a.Held != 4 || a.Capacity != 500 || a.Count != 4 || len(a.Threats) != 4 || a.Licence != locdb.Attribution {
		t.Fatalf("%d %s", code, body)
	}
	// Markup in an AS name stays data: escaped in the JSON text, intact
	// once decoded.
	if strings.Contains(body, "<script>") || !strings.Contains(body, `\u003cscript\u003e`) {
		t.Fatalf("AS name not escaped: %s", body)
	}
	var evil map[string]any
	for _, th := range a.Threats {
		if th["address"] == "45.66.1.2" {
			evil = th
		}
		if th["address"] == "8.8.8.8" || th["address"] == "80.130.0.1" {
			t.Fatalf("not a proxy, listed: %v", th)
		}
	}
	if evil["provider"] != `Evil <script>alert("x")</script> & Co` || evil["asn"] != "AS64512" ||
		evil["country"] != "Netherlands" || evil["isocode"] != "NL" || evil["type"] != "SOCKS5" ||
		evil["port"] != 1080.0 || evil["last_seen_unix"] != float64(now.Add(-3*time.Hour).Unix()) {
		t.Fatalf("entry %v", evil)
	}

	// A smaller n: a sample of that size, without duplicates, newest first.
	for range 50 {
		_, a, body = f.get(t, "/threats.json?n=2")
		if a.Count != 2 || len(a.Threats) != 2 || a.Held != 4 {
			t.Fatalf("n=2: %s", body)
		}
		if a.Threats[0]["address"] == a.Threats[1]["address"] ||
			a.Threats[0]["last_seen_unix"].(float64) < a.Threats[1]["last_seen_unix"].(float64) {
			t.Fatalf("n=2: %s", body)
		}
	}
	// The default sample is DefaultThreatsSample, at most the capacity.
	// (Of the newest three proxies, 80.130.0.1 evicted 45.66.1.2, then
	// stopped being a proxy: two are left until new ones land.)
	small := newThreatsFixture(t, 3, nil)
	small.seed(t)
	if _, a, body := small.get(t, "/threats.json"); a.Count != 2 || a.Capacity != 3 || a.Held != 2 {
		t.Fatalf("capacity 3: %s", body)
	}
	// An empty window is not an error.
	empty := newThreatsFixture(t, 10, nil)
	if code, a, body := empty.get(t, "/threats.json"); code != 200 || a.Count != 0 || a.Threats == nil {
		t.Fatalf("empty: %s", body)
	}
}

// A verdict without an inference time is listed as last seen at 0, not at
// the zero time's seconds.
func TestThreatsUnknownTime(t *testing.T) {
	f := newThreatsFixture(t, 10, nil)
	_, err := f.store.Put([]store.Item{{Addr: netip.MustParseAddr("45.66.1.2"), Verdict: &styxv1.Verdict{Proxy: true, Type: "VPN", Risk: 90}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, a, body := f.get(t, "/threats.json"); a.Count != 1 || a.Threats[0]["last_seen_unix"] != 0.0 {
		t.Fatalf("%s", body)
	}
}

func TestThreatsBadRequests(t *testing.T) {
	f := newThreatsFixture(t, 500, nil)
	f.seed(t)
	for _, c := range []struct{ query, msg string }{
		{"n=0", "n must be an integer from 1 to 500, not 0"},
		{"n=501", "n must be an integer from 1 to 500, not 501"},
		{"n=-1", `n must be an integer from 1 to 500, not "-1"`},
		{"n=%2B5", `n must be an integer from 1 to 500, not "+5"`},
		{"n=abc", `n must be an integer from 1 to 500, not "abc"`},
		{"n=", `n must be an integer from 1 to 500, not ""`},
		{"n=1.5", `n must be an integer from 1 to 500, not "1.5"`},
		{"n=99999999999", `n must be an integer from 1 to 500, not 99999999999`},
		{"n=999999999999999999999", `n must be an integer from 1 to 500, not "999999999999999999999"`},
		{"n=1&n=2", "n must be an integer from 1 to 500, given once"},
	} {
		code, a, body := f.get(t, "/threats.json?"+c.query)
		if code != 400 || a.Status != "error" || a.Message != c.msg {
			t.Errorf("%s: %d %s", c.query, code, body)
		}
		// The page refuses the same values.
		w := httptestDo(f.api, "GET", "/threats?"+c.query)
		if w.Code != 400 || !strings.Contains(w.Body.String(), c.msg) {
			t.Errorf("page %s: %d %s", c.query, w.Code, w.Body)
		}
	}
	for _, path := range []string{"/threats", "/threats.json", "/threats.js", "/threats.css"} {
		w := httptestDo(f.api, "POST", path)
		if w.Code != 405 || w.Header().Get("Allow") != "GET, HEAD" {
			t.Errorf("POST %s: %d %q", path, w.Code, w.Header().Get("Allow"))
		}
	}
	if w := httptestDo(f.api, "POST", "/threats.json"); !json.Valid(w.Body.Bytes()) {
		t.Errorf("405 from the JSON endpoint is not JSON: %s", w.Body)
	}
}

// The page and its assets: embedded, with a policy that allows nothing
// but the node itself, and the data licence credit.
func TestThreatsPage(t *testing.T) {
	f := newThreatsFixture(t, 500, nil)
	w := httptestDo(f.api, "GET", "/threats?n=7")
	body := w.Body.String()
	h := w.Header()
	if w.Code != 200 || h.Get("Content-Type") != "text/html; charset=utf-8" || h.Get(LicenceHeader) != locdb.Attribution ||
		!strings.Contains(h.Get("Content-Security-Policy"), "default-src 'none'") {
		t.Fatalf("%d %v", w.Code, h)
	}
	for _, want := range []string{locdb.Attribution, `data-sample="7"`, `src="threats.js"`, `href="threats.css"`, "<code>node-test</code>"} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	rest := strings.ReplaceAll(body, locdb.Attribution, "")
	for _, bad := range []string{"http://", "https://", "<style", "<script>", "style="} {
		if strings.Contains(rest, bad) {
			t.Errorf("page holds %q (external asset or inline code)", bad)
		}
	}
	if m := regexp.MustCompile(`\son[a-z]+=`).FindString(rest); m != "" {
		t.Errorf("page holds an inline handler %q", m)
	}
	for path, ctype := range map[string]string{"/threats.js": "text/javascript; charset=utf-8", "/threats.css": "text/css; charset=utf-8"} {
		w := httptestDo(f.api, "GET", path)
		if w.Code != 200 || w.Header().Get("Content-Type") != ctype || w.Body.Len() == 0 {
			t.Errorf("%s: %d %q", path, w.Code, w.Header().Get("Content-Type"))
		}
		if strings.Contains(w.Body.String(), "innerHTML") || strings.Contains(w.Body.String(), "http") {
			t.Errorf("%s uses innerHTML or names another origin", path)
		}
	}
	if w := httptestDo(f.api, "HEAD", "/threats"); w.Code != 200 || w.Body.Len() != 0 {
		t.Errorf("HEAD: %d %d bytes", w.Code, w.Body.Len())
	}
}

// Without a window the page does not exist.
func TestThreatsOff(t *testing.T) {
	f := newFixture(t, nil)
	for _, path := range []string{"/threats", "/threats.json"} {
		if w := f.do("GET", path, "", ""); w.Code != 404 {
			t.Errorf("%s: %d", path, w.Code)
		}
	}
}

// With the real location database, entries carry its country and AS.
func TestThreatsRealDatabase(t *testing.T) {
	db := locdbtest.OpenInstalled(t)
	f := newThreatsFixture(t, 10, db)
	f.put(t, "8.8.8.8", true, "VPN", 0, time.Minute)
	_, a, body := f.get(t, "/threats.json")
	if a.Count != 1 || a.Threats[0]["asn"] != "AS15169" || a.Threats[0]["isocode"] != "US" || a.Threats[0]["provider"] == nil {
		t.Fatalf("%s", body)
	}
}

func httptestDo(a *API, method, target string) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	a.ServeHTTP(w, httptest.NewRequest(method, target, nil))
	return w
}
