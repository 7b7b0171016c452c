package api

import (
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/styx-inference/styx/clusternode/internal/store"
	"github.com/styx-inference/styx/pkg/attacks"
	"github.com/styx-inference/styx/pkg/raven"
)

const token = "s3cret-token-0123456789"

func withAttacks(cfg *Config) {
	cfg.AttackToken = token
	cfg.Attacks = cfg.Store.(*store.Store)
	cfg.AttackMaxBody = 4096
	cfg.AttackMaxReports = 20
}

func (f *fixture) post(auth, body string) *httptest.ResponseRecorder {
	r := httptest.NewRequest("POST", AttacksPath, strings.NewReader(body))
	if auth != "" {
		r.Header.Set("Authorization", auth)
	}
	w := httptest.NewRecorder()
	f.api.ServeHTTP(w, r)
	return w
}

type attackAnswer struct {
	Status, Message                             string
	Accepted, New, Duplicates, TooOld, Rejected int
	Errors                                      []struct {
		Line  int
		Error string
	}
}

func decode(t *testing.T, w *httptest.ResponseRecorder) attackAnswer {
	t.Helper()
	var a attackAnswer
	if err := json.Unmarshal(w.Body.Bytes(), &a); err != nil {
		t.Fatalf("answer not JSON: %v: %s", err, w.Body)
	}
	a.TooOld = -1
	var raw map[string]any
	_ = json.Unmarshal(w.Body.Bytes(), &raw)
	if v, ok := raw["too_old"].(float64); ok {
		a.TooOld = int(v)
	}
	return a
}

func TestAttackAuth(t *testing.T) {
	good := "203.0.113.9,2025-06-01T11:00:00Z,login\n"
	cases := []struct {
		name   string
		mod    func(*Config)
		method string
		auth   string
		code   int
		msg    string
	}{
		{"disabled", nil, "POST", "Bearer " + token, 403, "attack reports are disabled on this node: start it with --attack-token"},
		{"no header", withAttacks, "POST", "", 401, "missing or wrong token"},
		{"wrong token", withAttacks, "POST", "Bearer nope-nope-nope-nope", 401, "missing or wrong token"},
		{"token prefix", withAttacks, "POST", "Bearer " + token[:10], 401, "missing or wrong token"},
		{"basic scheme", withAttacks, "POST", "Basic " + token, 401, "missing or wrong token"},
		{"get", withAttacks, "GET", "Bearer " + token, 405, "POST attack reports"},
		{"good token", withAttacks, "POST", "Bearer " + token, 200, ""},
		{"good token, scheme in lower case", withAttacks, "POST", "bearer " + token, 200, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t, c.mod)
			r := httptest.NewRequest(c.method, AttacksPath, strings.NewReader(good))
			if c.auth != "" {
				r.Header.Set("Authorization", c.auth)
			}
			w := httptest.NewRecorder()
			f.api.ServeHTTP(w, r)
			if w.Code != c.code {
				t.Fatalf("code %d, want %d: %s", w.Code, c.code, w.Body)
			}
			a := decode(t, w)
			if c.code != 200 {
				if a.Status != "error" || !strings.Contains(a.Message, c.msg) {
					t.Fatalf("answer %+v, want an error containing %q", a, c.msg)
				}
				if c.code == 401 && w.Header().Get("WWW-Authenticate") == "" {
					t.Fatal("401 without WWW-Authenticate")
				}
				if h, _ := f.store.Attacks(netip.MustParseAddr("203.0.113.9")); h.Total() != 0 {
					t.Fatal("a refused request stored a report")
				}
				return
			}
			if a.Status != "ok" || a.Accepted != 1 || a.New != 1 {
				t.Fatalf("answer %+v", a)
			}
			if h, _ := f.store.Attacks(netip.MustParseAddr("203.0.113.9")); h.Counts[attacks.KindLogin] != 1 {
				t.Fatalf("history %+v", h)
			}
		})
	}
}

func TestAttackBadInput(t *testing.T) {
	f := newFixture(t, withAttacks)
	cases := []struct {
		name, body string
		code       int
		msg        string
		lines      []int    // lines reported bad
		errs       []string // their messages contain these
	}{
		{"empty", "", 400, "no report in the body", nil, nil},
		{"only comments", "# nothing\n\n", 400, "no report in the body", nil, nil},
		{"all bad", "nope,2025-06-01T11:00:00Z,login\n203.0.113.9,2025-06-01T11:00:00Z,hug\n", 400, "no valid report: 2 lines rejected",
			[]int{1, 2}, []string{`address "nope": not a valid IP address`, `kind "hug" unknown`}},
		{"oversized body", strings.Repeat(`{"address":"203.0.113.9","time":1748775600,"kind":"login","pad":"`+strings.Repeat("x", 900)+"\"}\n", 5), 413, "body larger than 4096 bytes", nil, nil},
		{"too many reports", strings.Repeat("203.0.113.9,2025-06-01T11:00:00Z,login\n", 21), 413, "more than 20 reports", nil, nil},
		{"too many lines, some bad", strings.Repeat("x\n", 21), 413, "more than 20 reports", nil, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := f.post("Bearer "+token, c.body)
			if w.Code != c.code {
				t.Fatalf("code %d, want %d: %s", w.Code, c.code, w.Body)
			}
			a := decode(t, w)
			if a.Status != "error" || !strings.Contains(a.Message, c.msg) {
				t.Fatalf("answer %+v, want an error containing %q", a, c.msg)
			}
			if len(a.Errors) != len(c.lines) {
				t.Fatalf("errors %+v, want lines %v", a.Errors, c.lines)
			}
			for i, e := range a.Errors {
				if e.Line != c.lines[i] || !strings.Contains(e.Error, c.errs[i]) {
					t.Fatalf("error %d: %+v, want line %d containing %q", i, e, c.lines[i], c.errs[i])
				}
			}
		})
	}
	if h, _ := f.store.Attacks(netip.MustParseAddr("203.0.113.9")); h.Total() != 0 {
		t.Fatalf("refused requests stored reports: %+v", h)
	}
}

// A body with good and bad lines: the good ones are taken, the bad ones
// listed with their line numbers (golden answer); sending it again finds
// duplicates only.
func TestAttackPartial(t *testing.T) {
	f := newFixture(t, withAttacks)
	body := "address,time,kind\n" +
		"203.0.113.9,2025-06-01T11:00:00Z,login\n" +
		"203.0.113.9,1748775600,scan\n" +
		"10.0.0.1,2025-06-01T11:00:00Z,login\n" +
		"203.0.113.9,last tuesday,login\n" +
		`{"address":"2001:db8::9","time":"2025-06-01T11:30:00Z","kind":"ddos"}` + "\n" +
		"203.0.113.9,2025-06-01T11:00:00Z,hug\n" +
		"203.0.113.9,2030-01-01T00:00:00Z,login\n" +
		"203.0.113.9,2025-06-01T11:00:00Z,login\n" // line 2 again
	w := f.post("Bearer "+token, body)
	got := fmt.Sprintf("%d %s\n%s", w.Code, w.Header().Get("Content-Type"), w.Body)
	golden := filepath.Join("testdata", "attacks_partial.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	} else if want, err := os.ReadFile(golden); err != nil || got != string(want) {
		t.Fatalf("got:\n%s\nwant:\n%s (%v; run with -update to rewrite)", got, want, err)
	}
	a := decode(t, w)
	if a.Status != "warning" || a.Accepted != 4 || a.New != 3 || a.Duplicates != 1 || a.Rejected != 4 || a.TooOld != 0 {
		t.Fatalf("answer %+v", a)
	}
	h, _ := f.store.Attacks(netip.MustParseAddr("203.0.113.9"))
	if h.Counts[attacks.KindLogin] != 1 || h.Counts[attacks.KindProbe] != 1 || h.Total() != 2 {
		t.Fatalf("history %+v", h)
	}
	if n := f.store.OutboxLen(); n != 3 {
		t.Fatalf("outbox %d, want the 3 new reports", n)
	}
	again := decode(t, f.post("Bearer "+token, body))
	if again.New != 0 || again.Duplicates != 4 || f.store.OutboxLen() != 3 {
		t.Fatalf("again: %+v, outbox %d", again, f.store.OutboxLen())
	}
	// The history shows with risk=2 only.
	q := f.do("GET", "/v2/203.0.113.9?risk=2&p=0", "", "")
	if !strings.Contains(q.Body.String(), `"attack history":{"Total":2,"Vulnerability Probing":1,"Login Attempt":1}`) {
		t.Fatalf("risk=2: %s", q.Body)
	}
	if q := f.do("GET", "/v2/203.0.113.9?risk=1&p=0", "", ""); strings.Contains(q.Body.String(), "attack history") {
		t.Fatalf("risk=1: %s", q.Body)
	}
}

func TestAttackOutboxFull(t *testing.T) {
	st, err := store.Open(store.Config{Path: filepath.Join(t.TempDir(), "node.db"), OutboxMax: 1}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	f := newFixture(t, func(c *Config) {
		c.Store = st
		withAttacks(c)
	})
	body := "203.0.113.9,2025-06-01T11:00:00Z,login\n203.0.113.9,2025-06-01T11:01:00Z,login\n"
	w := f.post("Bearer "+token, body)
	if w.Code != 503 || w.Header().Get("Retry-After") == "" || !strings.Contains(w.Body.String(), "retry later") {
		t.Fatalf("%d %v %s", w.Code, w.Header(), w.Body)
	}
}

func TestAttackConfig(t *testing.T) {
	db := fixtureDB(t)
	st, err := store.Open(store.Config{Path: filepath.Join(t.TempDir(), "node.db")}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for name, mod := range map[string]func(*Config){
		"token without sink": func(c *Config) { c.AttackToken = token },
		"short token":        func(c *Config) { withAttacks(c); c.AttackToken = "short" },
	} {
		cfg := Config{NodeID: "n", Store: st, Locator: db, Engine: raven.NewRule(db), MaxAddresses: 1, MaxBody: 1}
		mod(&cfg)
		if _, err := New(cfg, zerolog.Nop()); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
