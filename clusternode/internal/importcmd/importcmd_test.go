package importcmd

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/styx-inference/styx/clusternode/internal/api"
	"github.com/styx-inference/styx/clusternode/internal/store"
	"github.com/styx-inference/styx/pkg/attacks"
	"github.com/styx-inference/styx/pkg/locdb"
	"github.com/styx-inference/styx/pkg/raven"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const token = "import-test-token-0123"

type noNetworks struct{}

func (noNetworks) Lookup(netip.Addr) (locdb.Network, bool) { return locdb.Network{}, false }

// node serves a real query API over a real store on 127.0.0.1; wrap, when
// set, sees every request first.
func node(t *testing.T, wrap func(http.Handler) http.Handler, mods ...func(*api.Config)) (*httptest.Server, *store.Store) {
	t.Helper()
	st, err := store.Open(store.Config{Path: filepath.Join(t.TempDir(), "node.db")}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cfg := api.Config{
		NodeID: "node-1", Store: st, Locator: noNetworks{}, Engine: raven.Nop{},
		MaxAddresses: 10, MaxBody: 1024, AttackToken: token, Attacks: st, AttackMaxReports: 5,
	}
	for _, m := range mods {
		m(&cfg)
	}
	h, err := api.New(cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	var handler http.Handler = h
	if wrap != nil {
		handler = wrap(h)
	}
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	return srv, st
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func run(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Run(context.Background(), args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

func TestImportGoodAndBadLines(t *testing.T) {
	srv, st := node(t, nil)
	csv := writeFile(t, "honeypot.csv", "address,time,kind\n"+
		"203.0.113.7,2025-01-01T00:00:00Z,login\n"+
		"203.0.113.7,2025-01-01T00:00:01Z,login\n"+
		"not-an-ip,2025-01-01T00:00:00Z,login\n"+
		"203.0.113.7,2025-01-01T00:00:02Z,scan\n"+
		"198.51.100.4,1735689600,hug\n"+
		"198.51.100.4,1735689600,ddos\n"+
		"198.51.100.4,someday,ddos\n"+
		"198.51.100.4,1735689601,ddos\n")
	stdin := `{"address":"2001:db8::4","time":1735689600,"kind":"form"}` + "\n" +
		`{"address":"2001:db8::4","kind":"form"}` + "\n"
	code, out, errs := run(t, stdin, "--node", srv.URL, "--token", token, "--chunk", "2", "--progress", "1ns", csv, "-")
	if code != exitFailed {
		t.Fatalf("exit %d, want %d (bad lines); stderr:\n%s", code, exitFailed, errs)
	}
	for _, want := range []string{
		csv + `:4: address "not-an-ip": not a valid IP address`,
		csv + `:6: kind "hug" unknown`,
		csv + `:8: time "someday": want RFC 3339`,
		`<stdin>:2: JSON report without "time"`,
		"lines read",
	} {
		if !strings.Contains(errs, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errs)
		}
	}
	if want := "imported 6 reports from 2 files: 6 new, 0 duplicates, 0 too old; 4 lines rejected\n"; out != want {
		t.Errorf("stdout %q, want %q", out, want)
	}
	for addr, want := range map[string]uint64{"203.0.113.7": 3, "198.51.100.4": 2, "2001:db8::4": 1} {
		if h, _ := st.Attacks(netip.MustParseAddr(addr)); h.Total() != want {
			t.Errorf("%s: %d reports stored, want %d", addr, h.Total(), want)
		}
	}
	if h, _ := st.Attacks(netip.MustParseAddr("203.0.113.7")); h.Counts[attacks.KindProbe] != 1 {
		t.Errorf("scan not stored as probe: %+v", h)
	}

	// The same file again: every report is a duplicate, no line is bad.
	good := writeFile(t, "good.csv", "203.0.113.7,2025-01-01T00:00:00Z,login\n203.0.113.7,2025-01-01T00:00:01Z,login\n")
	code, out, errs = run(t, "", "--node", srv.URL, "--token", token, good)
	if code != exitOK || out != "imported 2 reports from 1 files: 0 new, 2 duplicates, 0 too old; 0 lines rejected\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errs)
	}
}

func TestImportRetriesAndFailures(t *testing.T) {
	var calls atomic.Int32
	srv, st := node(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if calls.Add(1) == 1 {
				http.Error(w, `{"status":"error","message":"busy"}`, http.StatusServiceUnavailable)
				return
			}
			h.ServeHTTP(w, r)
		})
	})
	file := writeFile(t, "a.csv", "203.0.113.7,2025-01-01T00:00:00Z,login\n")
	code, out, errs := run(t, "", file, "--node", srv.URL, "--token", token) // flags after the file
	if code != exitOK || !strings.Contains(errs, "retrying") || !strings.Contains(out, "1 new") {
		t.Fatalf("exit %d\nstdout %s\nstderr %s", code, out, errs)
	}
	if h, _ := st.Attacks(netip.MustParseAddr("203.0.113.7")); h.Total() != 1 {
		t.Fatal("report not stored after the retry")
	}

	code, _, errs = run(t, "", "--node", srv.URL, "--token", "wrong-token-wrong-token", file)
	if code != exitFailed || !strings.Contains(errs, "node answered 401: missing or wrong token") {
		t.Fatalf("wrong token: exit %d, stderr %s", code, errs)
	}
}

// Lines the node refuses (here: its clock is behind, so it finds the
// reports in the future) are reported with their file and line.
func TestImportNodeRejects(t *testing.T) {
	srv, _ := node(t, nil, func(c *api.Config) {
		c.Now = func() time.Time { return time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC) }
	})
	file := writeFile(t, "a.csv", "# clocks\n203.0.113.7,2025-01-01T00:00:00Z,login\n203.0.113.7,2025-03-01T00:00:00Z,login\n")
	code, out, errs := run(t, "", "--node", srv.URL, "--token", token, file)
	if code != exitFailed || !strings.Contains(errs, file+":3: rejected by the node: time 2025-03-01T00:00:00Z is more than 1h0m0s in the future") ||
		out != "imported 1 reports from 1 files: 1 new, 0 duplicates, 0 too old; 1 lines rejected\n" {
		t.Fatalf("exit %d\nstdout %q\nstderr %s", code, out, errs)
	}
}

func TestImportUsage(t *testing.T) {
	t.Setenv(EnvToken, "")
	file := writeFile(t, "a.csv", "")
	for name, args := range map[string][]string{
		"no file":      {"--token", token},
		"no token":     {file},
		"missing file": {"--token", token, filepath.Join(t.TempDir(), "nope.csv")},
		"bad url":      {"--token", token, "--node", "127.0.0.1:8080", file},
		"stdin twice":  {"--token", token, "-", "-"},
		"bad flag":     {"--frobnicate", file},
	} {
		if code, _, errs := run(t, "", args...); code != exitUsage || errs == "" {
			t.Errorf("%s: exit %d, stderr %q", name, code, errs)
		}
	}
	if code, _, errs := run(t, "", "-h"); code != exitOK || !strings.Contains(errs, "Usage: styx-node import-attacks") {
		t.Errorf("-h: exit %d, %q", code, errs)
	}
	// The token may come from the node's own variable.
	srv, _ := node(t, nil)
	t.Setenv(EnvToken, token)
	if code, out, errs := run(t, "", "--node", srv.URL, file); code != exitOK || !strings.Contains(out, "imported 0 reports") {
		t.Errorf("token from %s: exit %d, %q %q", EnvToken, code, out, errs)
	}
}
