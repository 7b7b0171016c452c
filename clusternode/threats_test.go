package clusternode

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/styx-inference/styx/clusternode/internal/fakesched"
	"github.com/styx-inference/styx/pkg/browsertest"
	"github.com/styx-inference/styx/pkg/columns"
	"github.com/styx-inference/styx/pkg/locdb"
	"github.com/styx-inference/styx/pkg/locdb/locdbtest"
	"github.com/styx-inference/styx/pkg/testwait"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

// evilASName is data that looks like markup: the page must show it as text.
const evilASName = `Evil <script>window.pwned=1</script><img src=x onerror="window.pwned=2"> & Co`

func threatsDBPath(t *testing.T) string {
	t.Helper()
	return locdbtest.WriteTemp(t, &locdbtest.Database{
		Countries: []locdbtest.Country{
			{Code: "BR", Continent: "SA", Name: "Brazil"},
			{Code: "DE", Continent: "EU", Name: "Germany"},
			{Code: "FR", Continent: "EU", Name: "France"},
			{Code: "NL", Continent: "EU", Name: "Netherlands"},
			{Code: "RO", Continent: "EU", Name: "Romania"},
			{Code: "US", Continent: "NA", Name: "United States of America"},
		},
		ASes: []locdbtest.AS{
			{Number: 9009, Name: "M247 Europe SRL"},
			{Number: 14061, Name: "DIGITALOCEAN-ASN"},
			{Number: 16276, Name: "OVH SAS"},
			{Number: 24940, Name: "Hetzner Online GmbH"},
			{Number: 64512, Name: evilASName},
		},
		Networks: []locdbtest.Network{
			{Prefix: netip.MustParsePrefix("2.57.171.0/24"), Country: "BR", ASN: 262287, Flags: locdb.FlagAnonymousProxy},
			{Prefix: netip.MustParsePrefix("5.39.0.0/17"), Country: "FR", ASN: 16276},
			{Prefix: netip.MustParsePrefix("45.66.0.0/16"), Country: "NL", ASN: 64512},
			{Prefix: netip.MustParsePrefix("88.198.0.0/16"), Country: "DE", ASN: 24940},
			{Prefix: netip.MustParsePrefix("89.46.0.0/16"), Country: "RO", ASN: 9009},
			{Prefix: netip.MustParsePrefix("159.89.0.0/16"), Country: "US", ASN: 14061},
			{Prefix: netip.MustParsePrefix("2a03:b0c0::/32"), Country: "US", ASN: 14061},
		},
	})
}

type logVerdictOf struct {
	addr  string
	proxy bool
	typ   string
	port  uint32
	ago   time.Duration
}

// A node gets proxy verdicts through its real paths (the verdict log and
// outcomes of its own sightings); the threats page, in a real browser,
// lists exactly the proxies, with type, country, provider and a relative
// time, shows markup in an AS name as text, and refreshes by itself.
func TestThreatsPageInBrowser(t *testing.T) {
	ctx := browsertest.New(t) // skips (or fails) first when there is no browser

	cli := etcdClient(t)
	own := map[string]bool{"88.198.1.1": true, "159.89.20.7": true}
	f, err := fakesched.Start(fakesched.Config{ID: "styx-1", Answer: func(sg columns.Sighting) *columns.Outcome {
		if !own[sg.Addr.String()] {
			return nil // no verdict yet: the address stays pending
		}
		return fakesched.VerdictFor(sg)
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Stop()
	if err := f.Register(context.Background(), cli, "x"); err != nil {
		t.Fatal(err)
	}
	l := startLog(t)
	r := startNode(t, l.config(testConfig(t, t.TempDir(), threatsDBPath(t))))
	n := r.node
	testwait.For(t, testwait.Timeout, "submit stream", f.Connected)

	now := time.Now()
	publish := func(vs ...logVerdictOf) {
		t.Helper()
		var out []*styxv1.Verdict
		for _, v := range vs {
			out = append(out, &styxv1.Verdict{
				Address: netip.MustParseAddr(v.addr).AsSlice(), Proxy: v.proxy, Type: v.typ, Port: v.port, Risk: 90,
				ModelVersion: "fake-v1", InferredUnixNano: now.Add(-v.ago).UnixNano(),
			})
		}
		l.verdicts(t, out...)
	}
	logged := []logVerdictOf{
		{"2.57.171.5", true, "Anonymizer", 0, 12 * time.Minute},
		{"45.66.1.2", true, "SOCKS5", 1080, 3 * time.Hour},
		{"5.39.10.20", true, "HTTP", 3128, 25 * time.Minute},
		{"89.46.100.3", true, "VPN", 0, 40 * time.Second},
		{"89.46.100.4", true, "VPN", 0, 7 * time.Minute},
		{"2a03:b0c0:2:d0::1f:6001", true, "Hosting", 0, 5 * time.Hour},
		{"159.89.33.1", true, "SOCKS4", 1080, 2 * 24 * time.Hour},
		{"2.57.171.77", true, "Anonymizer", 0, 90 * time.Minute},
		// Not proxies: never listed.
		{"88.198.3.3", false, "", 0, time.Minute},
		{"5.39.0.9", true, "VPN", 0, time.Hour},
		{"5.39.0.9", false, "", 0, 30 * time.Second}, // cleared by a newer verdict
	}
	publish(logged...)
	testwait.For(t, testwait.Timeout, "log applied", func() bool { return n.Stats().LogVerdicts == uint64(len(logged)) })
	// Own sightings: their outcomes land through store.Put.
	if got := n.Submit(netip.MustParseAddr("88.198.1.1"), netip.MustParseAddr("159.89.20.7")); got != 2 {
		t.Fatalf("Submit took %d", got)
	}
	testwait.For(t, testwait.Timeout, "own verdicts", func() bool { return n.Stats().Verdicts == 2 })
	// A local real-time answer naming a proxy is not a post-processing
	// verdict: it must not be listed.
	if code, m, _ := get(t, n, "/v2/2.57.171.99"); code != 200 || m["2.57.171.99"].(map[string]any)["proxy"] != "yes" {
		t.Fatalf("real-time answer %d %v", code, m)
	}

	want := []string{"2.57.171.5", "45.66.1.2", "5.39.10.20", "89.46.100.3", "89.46.100.4",
		"2a03:b0c0:2:d0::1f:6001", "159.89.33.1", "2.57.171.77", "88.198.1.1", "159.89.20.7"}
	rowsJS := `Array.from(document.querySelectorAll("#list tbody tr")).map(r => Array.from(r.cells).map(c => c.textContent))`
	countIs := func(k int) string {
		return fmt.Sprintf(`document.querySelectorAll("#list tbody tr").length === %d`, k)
	}
	url := "http://" + n.HTTPAddr() + "/threats?n=50"
	var rows [][]string
	var status, footer string
	var scripts int
	var pwned bool
	browsertest.Run(t, ctx, 30*time.Second,
		chromedp.Navigate(url),
		chromedp.Poll(countIs(len(want)), nil, chromedp.WithPollingTimeout(20*time.Second)),
		chromedp.Evaluate(rowsJS, &rows),
		chromedp.Text("#status", &status, chromedp.ByQuery),
		chromedp.Text("footer", &footer, chromedp.ByQuery),
		chromedp.Evaluate(`document.querySelectorAll("script").length`, &scripts),
		chromedp.Evaluate(`window.pwned !== undefined || document.querySelectorAll("#list img").length > 0`, &pwned),
	)
	byAddr := map[string][]string{}
	var got []string
	for _, row := range rows {
		if len(row) != 5 {
			t.Fatalf("row %q", row)
		}
		byAddr[row[0]] = row
		got = append(got, row[0])
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("listed %v\nwant %v", got, want)
	}
	// The page computes the times itself, and they tick on while the test
	// runs: allow for a slow machine.
	for _, c := range []struct {
		addr                   string
		typ, country, provider string
		seen                   string // a regular expression
	}{
		{"2.57.171.5", "Anonymizer", "Brazil (BR)", "AS262287", `^1[23] minutes ago$`},
		{"45.66.1.2", "SOCKS5 port 1080", "Netherlands (NL)", evilASName + " AS64512", `^3 hours ago$`},
		{"5.39.10.20", "HTTP port 3128", "France (FR)", "OVH SAS AS16276", `^2[56] minutes ago$`},
		{"89.46.100.3", "VPN", "Romania (RO)", "M247 Europe SRL AS9009", `^([4-9]\d seconds|1 minute) ago$`},
		{"2a03:b0c0:2:d0::1f:6001", "Hosting", "United States of America (US)", "DIGITALOCEAN-ASN AS14061", `^5 hours ago$`},
		{"159.89.33.1", "SOCKS4 port 1080", "United States of America (US)", "DIGITALOCEAN-ASN AS14061", `^2 days ago$`},
		{"88.198.1.1", "VPN", "Germany (DE)", "Hetzner Online GmbH AS24940", `^(just now|\d+ seconds ago)$`},
	} {
		row := byAddr[c.addr]
		if row[1] != c.typ || row[2] != c.country || row[3] != c.provider || !regexp.MustCompile(c.seen).MatchString(row[4]) {
			t.Errorf("%s: %q\nwant type %q, country %q, provider %q, seen %s", c.addr, row, c.typ, c.country, c.provider, c.seen)
		}
	}
	if scripts != 1 || pwned {
		t.Fatalf("markup in an AS name became markup: %d scripts, pwned %v", scripts, pwned)
	}
	if !strings.HasPrefix(status, "Showing 10 of the 10 most recent proxies") {
		t.Errorf("status %q", status)
	}
	if !strings.Contains(footer, locdb.Attribution) {
		t.Errorf("footer lacks the data licence credit: %q", footer)
	}
	browsertest.Screenshot(t, ctx, "threats")

	// The page refreshes by itself: a verdict that lands now shows up
	// without a reload.
	publish(logVerdictOf{"45.66.200.1", true, "SOCKS5", 9050, 0})
	var fresh []string
	browsertest.Run(t, ctx, 40*time.Second,
		chromedp.Poll(countIs(len(want)+1), nil, chromedp.WithPollingTimeout(30*time.Second)),
		chromedp.Evaluate(`Array.from(document.querySelectorAll("#list tbody tr")).map(r => r.cells[0].textContent + " " + r.cells[4].textContent).filter(s => s.startsWith("45.66.200.1 "))`, &fresh),
	)
	if len(fresh) != 1 || !(strings.HasSuffix(fresh[0], "just now") || strings.HasSuffix(fresh[0], "seconds ago")) {
		t.Fatalf("after the new verdict: %q", fresh)
	}
}

// The threats window is rebuilt from the store: after a restart, with no
// leader at all, the page lists what it listed before. With
// ThreatsRecent 0 the page is off.
func TestThreatsSurviveRestart(t *testing.T) {
	etcdClient(t)
	l := startLog(t)
	dataDir, dbPath := t.TempDir(), threatsDBPath(t)
	r := startNode(t, l.config(testConfig(t, dataDir, dbPath)))
	inferred := time.Now().Add(-time.Hour)
	var vs []*styxv1.Verdict
	for _, a := range []string{"2.57.171.5", "45.66.1.2", "88.198.3.3"} {
		vs = append(vs, &styxv1.Verdict{
			Address: netip.MustParseAddr(a).AsSlice(), Proxy: a != "88.198.3.3", Type: "VPN", Risk: 80,
			InferredUnixNano: inferred.UnixNano(),
		})
	}
	l.verdicts(t, vs...)
	testwait.For(t, testwait.Timeout, "log applied", func() bool { return r.node.Stats().LogVerdicts == 3 })
	listed := func(n *Node) []string {
		code, m, _ := get(t, n, "/threats.json?n=10")
		if code != 200 {
			t.Fatalf("threats.json: %d %v", code, m)
		}
		var out []string
		for _, th := range m["threats"].([]any) {
			e := th.(map[string]any)
			if e["last_seen_unix"] != float64(inferred.Unix()) {
				t.Errorf("entry %v", e)
			}
			out = append(out, e["address"].(string))
		}
		slices.Sort(out)
		return out
	}
	want := []string{"2.57.171.5", "45.66.1.2"}
	if got := listed(r.node); !slices.Equal(got, want) {
		t.Fatalf("before restart %v", got)
	}
	r.stop(t)

	// Restarted without the log.
	r2 := startNode(t, testConfig(t, dataDir, dbPath))
	if got := listed(r2.node); !slices.Equal(got, want) {
		t.Fatalf("after restart %v, want %v", got, want)
	}
	r2.stop(t)

	cfg := testConfig(t, dataDir, dbPath)
	cfg.ThreatsRecent = 0
	r3 := startNode(t, cfg)
	if code, _, _ := get(t, r3.node, "/threats.json"); code != 404 {
		t.Fatalf("page off: %d", code)
	}
}
