package lookupcmd

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/styx-inference/styx/pkg/locdb"
	"github.com/styx-inference/styx/pkg/locdb/locdbtest"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fixture is a small database with every kind of answer.
func fixture() *locdbtest.Database {
	p := netip.MustParsePrefix
	return &locdbtest.Database{
		CreatedAt: time.Date(2022, 10, 29, 0, 0, 0, 0, time.UTC),
		Vendor:    "STYX test", License: "CC BY-SA 4.0",
		Countries: []locdbtest.Country{
			{Code: "US", Continent: "NA", Name: "United States of America"},
			{Code: "BR", Continent: "SA", Name: "Brazil"},
			{Code: "DE", Continent: "EU", Name: "Germany"},
		},
		ASes: []locdbtest.AS{{Number: 15169, Name: "GOOGLE"}, {Number: 64500, Name: `Quote "and" <tag>`}},
		Networks: []locdbtest.Network{
			{Prefix: p("8.8.8.0/24"), Country: "US", ASN: 15169, Flags: locdb.FlagAnycast},
			{Prefix: p("2.57.171.0/24"), Country: "BR", ASN: 262287, Flags: locdb.FlagAnonymousProxy},
			{Prefix: p("10.0.0.0/8")},
			{Prefix: p("100.64.0.0/10"), Country: "XK", Flags: locdb.FlagSatelliteProvider | locdb.FlagDrop},
			{Prefix: p("192.0.2.0/24"), Country: "DE", ASN: 64500, Flags: 0xF},
			{Prefix: p("2001:db8::/32"), Country: "DE", ASN: 64500},
		},
	}
}

func writeFixture(t *testing.T) string {
	t.Helper()
	return locdbtest.WriteTemp(t, fixture())
}

// run calls Run and returns its exit status and outputs.
func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := Run(context.Background(), args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

var goldenAddrs = []string{
	"8.8.8.8", "::ffff:8.8.8.8", "2.57.171.5", "10.1.2.3", "100.64.0.1", "192.0.2.1",
	"2001:db8::1", "2001:db8::1%eth0", "9.9.9.9", "2001::1", "not-an-ip", "1.2.3", "",
}

func TestGolden(t *testing.T) {
	db := writeFixture(t)
	for _, tt := range []struct {
		name  string
		flags []string
	}{
		{"plain", nil},
		{"json", []string{"--json"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"--db", db, "--skip-verify"}, tt.flags...)
			code, stdout, stderr := run(t, append(args, goldenAddrs...)...)
			if code != 1 {
				t.Errorf("exit status %d, want 1 (some arguments are not addresses); stderr: %s", code, stderr)
			}
			if stderr != "" {
				t.Errorf("stderr: %q", stderr)
			}
			if got := strings.Count(stdout, "\n"); got != len(goldenAddrs) {
				t.Errorf("%d lines for %d addresses", got, len(goldenAddrs))
			}
			golden := filepath.Join("testdata", tt.name+".golden")
			if *update {
				if err := os.WriteFile(golden, []byte(stdout), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if stdout != string(want) {
				t.Errorf("output differs from %s:\n--- got\n%s--- want\n%s", golden, stdout, want)
			}
		})
	}
}

// TestJSONKeys checks every JSON line has exactly the documented keys.
func TestJSONKeys(t *testing.T) {
	db := writeFixture(t)
	_, stdout, _ := run(t, append([]string{"--json", "--skip-verify", "--db", db}, goldenAddrs...)...)
	found := []string{"address", "network", "country", "country_name", "continent", "asn", "as_name",
		"anonymous_proxy", "satellite", "anycast", "drop"}
	failed := []string{"address", "error"}
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	for i, line := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("line %d %q: %v", i, line, err)
		}
		want := found
		if _, ok := m["error"]; ok {
			want = failed
		}
		if len(m) != len(want) {
			t.Errorf("line %q has %d keys, want %v", line, len(m), want)
		}
		for _, k := range want {
			if _, ok := m[k]; !ok {
				t.Errorf("line %q lacks key %q", line, k)
			}
		}
		if m["address"] != goldenAddrs[i] {
			t.Errorf("line %d address %v, want %q", i, m["address"], goldenAddrs[i])
		}
	}
}

func TestExitStatus(t *testing.T) {
	db := writeFixture(t)
	key, keyPath := locdbtest.GenerateKey(t)
	signedSpec := fixture()
	signedSpec.Signers[0] = key
	signed := locdbtest.WriteTemp(t, signedSpec)
	tests := []struct {
		name       string
		args       []string
		code       int
		stdoutHas  string
		stderrHas  string
		stdoutNone bool
	}{
		{"found", []string{"--db", db, "--skip-verify", "8.8.8.8"}, 0, "network=8.8.8.0/24", "", false},
		{"not found is not a failure", []string{"--db", db, "--skip-verify", "9.9.9.9"}, 0, `9.9.9.9 error="not found"`, "", false},
		{"invalid address", []string{"--db", db, "--skip-verify", "8.8.8.8", "bogus"}, 1, `bogus error="invalid IP address"`, "", false},
		{"flags after addresses", []string{"8.8.8.8", "--db", db, "--json", "--skip-verify"}, 0, `"address":"8.8.8.8"`, "", false},
		{"double dash", []string{"--db", db, "--skip-verify", "--", "-1"}, 1, `-1 error="invalid IP address"`, "", false},
		{"help", []string{"--help"}, 0, "CC BY-SA 4.0", "", false},
		{"short help", []string{"-h"}, 0, "https://location.ipfire.org/", "", false},
		{"no address", []string{"--db", db, "--skip-verify"}, 2, "", "no address given", true},
		{"unknown flag", []string{"--bogus", "8.8.8.8"}, 2, "", "flag provided but not defined", true},
		{"missing flag value", []string{"8.8.8.8", "--db"}, 2, "", "flag needs an argument", true},
		{"empty db", []string{"--db", "", "8.8.8.8"}, 2, "", "--db must not be empty", true},
		{"missing database", []string{"--db", filepath.Join(t.TempDir(), "none.db"), "8.8.8.8"}, 2, "", "no such file", true},
		{"unsigned database verified", []string{"--db", db, "--key", keyPath, "8.8.8.8"}, 2, "", "signature", true},
		{"signed database verified", []string{"--db", signed, "--key", keyPath, "8.8.8.8"}, 0, "GOOGLE", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(EnvDB, "")
			code, stdout, stderr := run(t, tt.args...)
			if code != tt.code {
				t.Errorf("exit status %d, want %d; stderr: %s", code, tt.code, stderr)
			}
			if !strings.Contains(stdout, tt.stdoutHas) {
				t.Errorf("stdout %q lacks %q", stdout, tt.stdoutHas)
			}
			if !strings.Contains(stderr, tt.stderrHas) {
				t.Errorf("stderr %q lacks %q", stderr, tt.stderrHas)
			}
			if tt.stdoutNone && stdout != "" {
				t.Errorf("stdout %q, want none", stdout)
			}
		})
	}
}

func TestEnvDB(t *testing.T) {
	db := writeFixture(t)
	t.Setenv(EnvDB, db)
	if code, stdout, stderr := run(t, "--skip-verify", "8.8.8.8"); code != 0 || !strings.Contains(stdout, "GOOGLE") {
		t.Errorf("STYX_DB not used: %d %q %q", code, stdout, stderr)
	}
	// --db on the command line wins over STYX_DB.
	missing := filepath.Join(t.TempDir(), "none.db")
	if code, _, stderr := run(t, "--skip-verify", "--db", missing, "8.8.8.8"); code != 2 || !strings.Contains(stderr, "none.db") {
		t.Errorf("--db did not override STYX_DB: %d %q", code, stderr)
	}
	// An explicit --db equal to the default still counts as given.
	if code, _, stderr := run(t, "--skip-verify", "--db", locdb.DefaultPath, "8.8.8.8"); strings.Contains(stderr, db) {
		t.Errorf("STYX_DB used although --db was given: %d %q", code, stderr)
	}
}

func TestCancelled(t *testing.T) {
	db := writeFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var stdout, stderr bytes.Buffer
	if code := Run(ctx, []string{"--db", db, "--skip-verify", "8.8.8.8"}, &stdout, &stderr); code != 1 {
		t.Errorf("exit status %d, want 1", code)
	}
	if !strings.Contains(stderr.String(), "cancelled") {
		t.Errorf("stderr %q", stderr.String())
	}
}

func TestHelpMentionsEverything(t *testing.T) {
	_, stdout, _ := run(t, "--help")
	for _, s := range []string{"--json", "--db", "--key", "--skip-verify", "STYX_DB", "Exit status",
		"IPFire Location database, https://location.ipfire.org/, CC BY-SA 4.0",
		"anonymous_proxy", "satellite", "anycast", "drop", "country_name", "as_name"} {
		if !strings.Contains(stdout, s) {
			t.Errorf("help lacks %q", s)
		}
	}
}

// TestRealDatabase runs the command on the installed database with its
// signature check, as a user would.
func TestRealDatabase(t *testing.T) {
	if _, err := os.Stat(locdb.DefaultPath); err != nil {
		t.Skipf("database not installed: %v", err)
	}
	if _, err := os.Stat(locdb.DefaultKeyPath); err != nil {
		t.Skipf("signing key not installed: %v", err)
	}
	t.Setenv(EnvDB, "")
	code, stdout, stderr := run(t, "8.8.8.8", "2.57.171.5")
	want := `8.8.8.8 network=8.8.8.0/24 country=US (United States of America) continent=NA asn=15169 as_name="GOOGLE" flags=anycast
2.57.171.5 network=2.57.171.0/24 country=BR (Brazil) continent=SA asn=262287 as_name="" flags=anonymous_proxy
`
	if code != 0 || stdout != want {
		t.Errorf("exit %d, stdout:\n%s\nwant:\n%s\nstderr: %s", code, stdout, want, stderr)
	}
}
